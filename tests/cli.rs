//! The `tickwire` binary itself: no flags but a port, the bundled recording,
//! and a graceful SIGTERM.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_the_bundled_recording_and_stops_on_sigterm() {
    let elsewhere = TempDir::new("cli-cwd");
    let mut child = Binary::serve_with(
        binary::tickwire()
            .args(["serve", "--listen", "127.0.0.1:0"])
            // Run from elsewhere: the recording and the page are in the binary.
            .current_dir(&elsewhere.0)
            .env("RUST_LOG", "warn"),
    );
    let addr = child.addr();

    let mut c = Client::connect(addr, "tickwire.v1").await;
    c.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    assert_eq!(c.next_control().await["type"], "ack");
    let mut names = std::collections::BTreeSet::new();
    let mut quotes = 0;
    while quotes < 50 {
        match c.next().await {
            Msg::Quote { id, bid, ask, .. } => {
                assert!(bid.parse::<f64>().unwrap() < ask.parse::<f64>().unwrap());
                names.insert(c.name(id).to_owned());
                quotes += 1;
            }
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    assert!(names.contains("BTCUSDT"), "{names:?}");

    let (status, page) = http_get(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("tickwire"));

    child.terminate();
    let close = c.until_closed(Duration::from_secs(10)).await;
    assert_eq!(close.map(|c| c.0), Some(1001));
    child.wait_success(Duration::from_secs(10));
}

#[test]
fn bad_configuration_lists_every_problem_and_exits_non_zero() {
    let out = binary::run(binary::tickwire().args([
        "serve",
        "--feed",
        "/no/such/recording.csv",
        "--ring-capacity",
        "1000",
        "--stall-timeout-ms",
        "0",
        "--upstream-ca-file",
        "/no/such/ca.pem",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "no such file",
        "ring_capacity",
        "stall_timeout_ms",
        "upstream_ca_file /no/such/ca.pem",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
}

#[test]
fn limits_come_from_flags_environment_and_file_and_are_validated() {
    let dir = TempDir::new("limits");
    let config = dir.write(
        "limits.toml",
        "max_fragments = 0\nheartbeat_interval_ms = 2000\n",
    );
    let out = binary::run(
        binary::tickwire()
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--heartbeat-timeout-ms", "1000", "--max-connections", "0"])
            .env("TICKWIRE_MAX_INBOUND_PER_SEC", "0")
            .env("TICKWIRE_CONNECTION_ATTEMPTS_PER_IP_PER_MIN", "0")
            // A file with no certificate in it (the TOML file itself).
            .env("TICKWIRE_UPSTREAM_CA_FILE", &config),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "max_fragments must be greater than 0",
        "heartbeat_timeout_ms 1000 must be greater than heartbeat_interval_ms 2000",
        "max_connections must be greater than 0",
        "max_inbound_per_sec must be greater than 0",
        "connection_attempts_per_ip_per_min must be greater than 0",
        "no PEM CERTIFICATE in it",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
}

/// The Binance sample with lines nested far past any stack spliced into its
/// middle (after format detection): a 1 MB line of `[`, 400,000 balanced
/// levels of arrays, 150,000 of objects.
fn recording_with_deep_lines(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/binance-spot-BTCUSDT-20230405-head300.jsonl"
    ))
    .unwrap();
    let lines: Vec<&str> = sample.lines().collect();
    let deep = [
        "[".repeat(1 << 20),
        format!(
            "1680652800004107 {}{}",
            "[".repeat(400_000),
            "]".repeat(400_000)
        ),
        format!(
            "{}{{}}{}",
            "{\"data\":".repeat(150_000),
            "}".repeat(150_000)
        ),
    ];
    let mut bad = lines[..100].join("\n");
    for d in &deep {
        bad.push('\n');
        bad.push_str(d);
    }
    bad.push('\n');
    bad.push_str(&lines[100..].join("\n"));
    bad.push('\n');
    let clean = dir.join("clean.jsonl");
    std::fs::write(&clean, lines.join("\n") + "\n").unwrap();
    let path = dir.join("deep.jsonl");
    std::fs::write(&path, bad).unwrap();
    (clean, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_recording_lines_are_rejected_by_serve_and_convert() {
    let tmp = TempDir::new("deep");
    let dir = &tmp.0;
    let (clean, deep) = recording_with_deep_lines(dir);

    // convert: the deep lines are rejected, every other line converted as
    // from the clean file.
    let rows = |input: &std::path::Path, stem: &str| {
        let out = dir.join(format!("{stem}.csv"));
        let run = binary::run(binary::tickwire().args([
            "convert",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
        ]));
        assert!(run.status.success(), "{run:?}");
        ["quotes", "trades"].map(|kind| {
            std::fs::read_to_string(dir.join(format!("{stem}.{kind}.csv")))
                .unwrap()
                .lines()
                .count()
        })
    };
    let clean_rows = rows(&clean, "clean");
    assert_eq!(rows(&deep, "deep"), clean_rows);

    // serve --feed: the process lives, counts three rejected lines, and
    // publishes every other update.
    let mut child = Binary::serve_with(
        binary::tickwire()
            .args(["serve", "--listen", "127.0.0.1:0", "--speed", "max"])
            .args(["--feed", deep.to_str().unwrap()])
            .env("RUST_LOG", "error"),
    );
    let addr = child.addr();
    eventually_async(
        Duration::from_secs(30),
        "the feed did not finish",
        || async {
            let (_, health) = http_get(
                addr,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            if health.contains("\"state\":\"finished\"") {
                Ok(())
            } else {
                Err(health)
            }
        },
    )
    .await;
    let metrics = metrics_text(addr).await;
    assert_eq!(labelled_metric(&metrics, "tickwire_feed_rejected_total"), 3);
    // Every other line: as many updates as CSV rows from the clean file
    // (less the two header rows).
    let updates = clean_rows.iter().sum::<usize>() as u64 - 2;
    assert_eq!(
        labelled_metric(&metrics, "tickwire_feed_updates_total"),
        updates
    );
    assert!(child.is_running(), "the server died");
    child.stop();
}

/// `Error: <message>` once, then each cause once under `Caused by:`: no
/// message repeats its cause's text.
#[test]
fn errors_print_once_with_their_causes() {
    let tmp = TempDir::new("errors");
    let dir = &tmp.0;
    let quote = "{\"u\":1,\"s\":\"BTCUSDT\",\"b\":\"1.5\",\"B\":\"2\",\"a\":\"1.6\",\"A\":\"3\"}\n";
    let good = dir.join("good.jsonl");
    std::fs::write(&good, quote).unwrap();
    let exists = dir.join("exists.twlog");
    std::fs::write(&exists, "").unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "listen = \n").unwrap();
    // A gzip stream cut short after its first lines.
    let cut = dir.join("cut.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, quote.repeat(5000).as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let p = |path: &std::path::Path| path.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, String, &str)> = vec![
        // TC0: convert, an input that is not there.
        (
            vec![
                "convert".into(),
                "/no/such/in.jsonl".into(),
                p(&dir.join("o1")),
            ],
            "/no/such/in.jsonl: cannot open".into(),
            "No such file or directory",
        ),
        // TC1: convert, an output that is already there.
        (
            vec!["convert".into(), p(&good), p(&exists)],
            format!("{}: cannot create", exists.display()),
            "File exists",
        ),
        // TC2: convert, a stream that breaks off (a feed error, whole).
        (
            vec!["convert".into(), p(&cut), p(&dir.join("o2"))],
            "read failed (truncated or corrupt stream?)".into(),
            "incomplete deflate stream",
        ),
        // TC3: record, a log that cannot be created.
        (
            vec![
                "record".into(),
                "--feed".into(),
                p(&good),
                "--out".into(),
                "/no/such/dir/x.twlog".into(),
            ],
            "/no/such/dir/x.twlog: cannot create the log".into(),
            "No such file or directory",
        ),
        // TC4: serve, a configuration file missing or not TOML.
        (
            vec!["serve".into(), "--config".into(), "/no/such.toml".into()],
            "cannot read /no/such.toml".into(),
            "No such file or directory",
        ),
        (
            vec!["serve".into(), "--config".into(), p(&bad_toml)],
            format!("{}: not a valid configuration file", bad_toml.display()),
            "TOML parse error",
        ),
    ];
    for (args, message, cause) in cases {
        let out = binary::run(
            binary::tickwire()
                .args(&args)
                .env_remove("RUST_BACKTRACE")
                .env_remove("RUST_LIB_BACKTRACE")
                .env("RUST_LOG", "off"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with("Error: ") && first.ends_with(&message),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches(cause).count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("Caused by:").count(), 1, "{args:?}: {err}");
    }
}
