//! Recorded feeds through the real binary: what `serve` serves, counts and
//! logs from files with negative prices and a capture tool's notes, what
//! `convert` writes and says where, and the feed files `serve`, `record`
//! and `convert` refuse before they start.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tickwire() -> Command {
    let mut cmd = binary::tickwire();
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd
}

/// `tickwire serve` on port 0, its log collected as it is written.
struct Served {
    bin: Binary,
    addr: SocketAddr,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        Served::start_logging("info", args)
    }

    /// Started with `RUST_LOG=filter`.
    fn start_logging(filter: &str, args: &[&str]) -> Served {
        let bin = Binary::serve_with(
            tickwire()
                .env("RUST_LOG", filter)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(args),
        );
        let addr = bin.addr();
        Served { bin, addr }
    }

    /// The log so far, once it has a line containing `needle` (the log
    /// is read from a pipe, a moment behind the server; at most 5 s).
    async fn log_with(&self, needle: &str) -> String {
        self.bin.log_with(needle, Duration::from_secs(5)).await
    }

    /// Waits until every feed has finished (at most 10 s).
    async fn until_finished(&self) {
        eventually_async(Duration::from_secs(10), "feeds not finished", || async {
            let (_, text) = http_get(
                self.addr,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
            let health: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let feeds = health["feeds"].as_array().cloned().unwrap_or_default();
            if !feeds.is_empty() && feeds.iter().all(|f| f["state"] == "finished") {
                Ok(())
            } else {
                Err(body.to_owned())
            }
        })
        .await
    }

    /// A feed's counter from `/metrics`.
    async fn feed_metric(&self, name: &str, feed: &Path) -> u64 {
        let text = metrics_text(self.addr).await;
        let prefix = format!("tickwire_feed_{name}_total{{feed=\"{}\"}} ", feed.display());
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} not in /metrics"))
            .parse()
            .unwrap()
    }
}

/// Every quote and trade a `*` subscriber gets, as text, until nothing
/// more comes for 500 ms.
async fn everything(client: &mut Client) -> Vec<(String, Vec<String>)> {
    let mut seen = Vec::new();
    while let Some(msg) = client.next_within(Duration::from_millis(500)).await {
        match msg {
            Msg::Quote {
                id,
                bid,
                bid_size,
                ask,
                ask_size,
                ..
            } => seen.push((
                client.name(id).to_owned(),
                vec![
                    bid,
                    bid_size.unwrap_or_default(),
                    ask,
                    ask_size.unwrap_or_default(),
                ],
            )),
            Msg::Trade {
                id, price, size, ..
            } => seen.push((client.name(id).to_owned(), vec![price, size])),
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    seen
}

const BINANCE: &str = r#"{"u":1,"s":"AAAUSDT","b":"0.02667300","B":"2","a":"0.02667400","A":"3"}
{"u":2,"s":"AAAUSDT","b":"-0.02667200","B":"2","a":"0.02667400","A":"3"}
{"u":3,"s":"BBBUSDT","b":"1.5","B":"2","a":"1.6","A":"-3"}
{"u":4,"s":"BBBUSDT","b":"1.5","B":"2","a":"1.6","A":"3"}
{"e":"trade","E":1,"s":"AAAUSDT","t":1,"p":"-0.0266","q":"1","T":1,"m":true}
{"u":5,"s":"AAAUSDT","b":"0.02667300","B":"0","a":"0.02667400","A":"0.00000000"}
"#;

const TARDIS: &str = "\
exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount
binance-futures,CCCUSDT,1582329601096000,1582329603502092,0.84,9682,9681.92,0.67
binance-futures,CCCUSDT,1582329601097000,1582329603503092,0.84,9682,9681.92,-0.67
binance-futures,CCCUSDT,1582329601098000,1582329603504092,0.84,9682,9681.93,0.67
";

const COINBASE: &str = r#"{"type":"ticker","product_id":"DDD-USD","best_bid":"1285.04","best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040","time":"2022-10-19T23:28:22.061769Z"}
{"type":"match","product_id":"DDD-USD","price":"1285.27","size":"-5.2","side":"sell","time":"2022-10-19T23:28:23.061769Z"}
{"channel":"market_trades","timestamp":"2026-08-09T21:05:48.228568804Z","events":[{"type":"update","trades":[{"product_id":"EEE-USD","trade_id":"1","price":"-65083.67","size":"0.002186","time":"2026-08-09T21:05:42.514318Z","side":"SELL"}]}]}
{"type":"match","product_id":"DDD-USD","price":"1285.27","size":"5.2","side":"sell","time":"2022-10-19T23:28:24.061769Z"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_prices_and_sizes_are_rejected_counted_and_logged_with_their_line() {
    let dir = TempDir::new("feeds-negative");
    let binance = dir.write("binance.jsonl", BINANCE);
    let tardis = dir.write("tardis.csv", TARDIS);
    let coinbase = dir.write("coinbase.jsonl", COINBASE);
    let served = Served::start(&[
        "--feed",
        s(&binance),
        "--feed",
        s(&tardis),
        "--feed",
        s(&coinbase),
        "--speed",
        "max",
        "--min-subscribers",
        "1",
    ]);
    let mut client = Client::connect(served.addr, "tickwire.v1").await;
    client.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    served.until_finished().await;
    let seen = everything(&mut client).await;

    // TC0: nothing negative is served, whether the bad value was a
    // symbol's first update (BBBUSDT, EEE-USD) or a later one; every good
    // update is, empty sides (size 0) included.
    let negative: Vec<_> = seen
        .iter()
        .filter(|(_, v)| v.iter().any(|x| x.starts_with('-')))
        .collect();
    assert!(negative.is_empty(), "served: {negative:?}");
    let count = |name: &str| seen.iter().filter(|(n, _)| n == name).count();
    assert_eq!(
        ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDD-USD", "EEE-USD"].map(count),
        [2, 1, 2, 2, 0],
        "{seen:?}"
    );
    assert!(seen.contains(&(
        "AAAUSDT".into(),
        ["0.02667300", "0.00000000", "0.02667400", "0.00000000"]
            .map(String::from)
            .to_vec()
    )));

    // TC1: each is counted as rejected, per feed.
    for (feed, rejected) in [(&binance, 3), (&tardis, 1), (&coinbase, 2)] {
        assert_eq!(
            served.feed_metric("rejected", feed).await,
            rejected,
            "{}",
            feed.display()
        );
    }

    // TC2: each is logged with its file and line, and every file's pass
    // ends with a summary by reason.
    let last = format!("{}: end of file", coinbase.display());
    let log = served.log_with(&last).await;
    for (feed, line, what) in [
        (&binance, 2, "negative bid price \"-0.02667200\""),
        (&binance, 3, "negative ask size \"-3\""),
        (&binance, 5, "negative price \"-0.0266\""),
        (&tardis, 3, "negative bid size \"-0.67\""),
        (&coinbase, 2, "negative size \"-5.2\""),
        (&coinbase, 3, "negative price \"-65083.67\""),
    ] {
        let want = format!("{}:{line}: rejected record (negative #", feed.display());
        assert!(
            log.lines().any(|l| l.contains(&want) && l.ends_with(what)),
            "{want} … {what} not in:\n{log}"
        );
    }
    for summary in [
        format!(
            "{}: end of file at line 6: 6 records, 3 updates, 0 skipped, 3 rejected: \
             negative 3 (first at line 2)",
            binance.display()
        ),
        format!(
            "{}: end of file at line 4: 4 records, 2 updates, 1 skipped, 1 rejected: \
             negative 1 (first at line 3)",
            tardis.display()
        ),
        format!(
            "{}: end of file at line 4: 4 records, 2 updates, 0 skipped, 2 rejected: \
             negative 2 (first at line 2)",
            coinbase.display()
        ),
    ] {
        assert!(log.contains(&summary), "{summary} not in:\n{log}");
    }
}

/// A cryptofeed raw capture (`AsyncFileCallback`): its configuration line,
/// a connection, a subscribe it sent, a REST depth snapshot, then data.
const CRYPTOFEED: &str = r#"configuration: {'exchange': 'BINANCE', 'symbols': ['BTC-USDT'], 'channels': ['bookTicker']}
wss://stream.binance.com:9443/stream <-> 1723161254.001
wss://stream.binance.com:9443/stream <- 1723161254.002: {"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":1}
https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000 -> 1723161254.003: {"lastUpdateId":1,"bids":[["61837.63","3.8"]],"asks":[["61837.64","1.5"]]}
1723161254.087891268: {"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}
1723161254.1: {"stream":"btcusdt@bookTicker","data":{"u":2,"s":"BTCUSDT","b":"61837.62000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}
wss://stream.binance.com:9443/stream <-> 1723161300.5
wss://stream.binance.com:9443/stream <- 1723161300.6: {"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":2}
1723161300.7: {"stream":"btcusdt@bookTicker","data":{"u":3,"s":"BTCUSDT","b":"61837.61000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_tools_notes_are_skipped_not_rejected_nor_warned_about() {
    let dir = TempDir::new("feeds-notes");
    let capture = dir.write("capture.txt", CRYPTOFEED);
    let served = Served::start_logging(
        "info,tickwire::feed=debug",
        &["--feed", s(&capture), "--speed", "max"],
    );
    served.until_finished().await;
    // TC0: six notes skipped, nothing rejected, the three quotes served.
    assert_eq!(served.feed_metric("records", &capture).await, 9);
    assert_eq!(served.feed_metric("skipped", &capture).await, 6);
    assert_eq!(served.feed_metric("rejected", &capture).await, 0);
    assert_eq!(served.feed_metric("updates", &capture).await, 3);
    // TC1: no warning about them, each at debug only; the summary says it
    // at info.
    let summary = format!(
        "INFO tickwire::feed::recording::replay: {}: end of file at line 9: 9 records, 3 updates, \
         6 skipped, 0 rejected",
        capture.display()
    );
    let log = served.log_with(&summary).await;
    assert!(log.contains(&summary), "{summary} not in:\n{log}");
    let name = capture.display().to_string();
    let about: Vec<&str> = log.lines().filter(|l| l.contains(&name)).collect();
    assert!(about.iter().all(|l| !l.contains("WARN")), "{log}");
    for (line, kind) in [
        (1, "capture configuration"),
        (2, "connection note"),
        (3, "sent message"),
        (4, "REST response"),
    ] {
        let note =
            format!("DEBUG tickwire::feed::recording::replay: {name}:{line}: skipped {kind}");
        assert!(about.iter().any(|l| l.contains(&note)), "{note}:\n{log}");
    }
}

#[test]
fn convert_warns_on_stderr_and_sums_up_on_stdout() {
    let dir = TempDir::new("feeds-convert");
    // A quote, a capture's notes, 30 lines of an unknown shape and 20 of
    // broken JSON (more than any one reason's log budget), a negative price
    // on line 54, and a last quote.
    let quote = r#"1723161254.1: {"u":1,"s":"BTCUSDT","b":"1.5","B":"2","a":"1.6","A":"3"}"#;
    let text = format!(
        "configuration: {{}}\n{quote}\nwss://x <-> 1723161254.2\n{}{}{}\n{quote}\n",
        "?? 1\n".repeat(30),
        "1723161254.3: {\"u\":\n".repeat(20),
        quote.replace("\"b\":\"1.5\"", "\"b\":\"-1.5\"")
    );
    let input = dir.write("in.txt", &text);
    let out = dir.path("out.twlog");
    let done = binary::run(tickwire().args(["convert", s(&input), s(&out)]));
    let stdout = String::from_utf8_lossy(&done.stdout);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    // TC0: stdout is the one summary line: read, written, skipped, rejected.
    assert_eq!(
        stdout,
        format!(
            "{}: 55 read, 2 written to {}, 2 skipped, 51 rejected\n",
            input.display(),
            out.display()
        )
    );
    // TC1: the warnings are on stderr, ten per reason, and the negative
    // price after them is logged with its line.
    let warned = |reason: &str| {
        stderr
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(&format!("({reason} #")))
            .count()
    };
    assert_eq!(
        (warned("unrecognized"), warned("json")),
        (10, 10),
        "{stderr}"
    );
    let negative = format!(
        "{}:54: rejected record (negative #1): negative bid price \"-1.5\"",
        input.display()
    );
    assert!(stderr.contains(&negative), "{negative} not in:\n{stderr}");
    // TC2: with the reader's summary of the file by reason.
    let summary = format!(
        "{}: end of file at line 55: 55 records, 2 updates, 2 skipped, 51 rejected: \
         unrecognized 30 (first at line 4), json 20 (first at line 34), \
         negative 1 (first at line 54)",
        input.display()
    );
    assert!(stderr.contains(&summary), "{summary} not in:\n{stderr}");
}

#[test]
fn feed_files_that_cannot_be_replayed_are_refused_at_start() {
    let dir = TempDir::new("feeds-refused");
    let bad: Vec<(PathBuf, &str)> = vec![
        // TC0: empty and blank files.
        (dir.write("empty.txt", ""), "empty: no records"),
        (dir.write("blank.txt", "\n  \n"), "empty: no records"),
        // TC1: a file in no format tickwire knows.
        (
            dir.write("words.txt", "hello\nworld\n"),
            "words.txt:1: not a recognized record",
        ),
        // TC2: a capture tool's notes and no data.
        (
            dir.write("notes.txt", "wss://x <-> 1723161254.2\n"),
            "only a capture tool's notes",
        ),
        // TC3: a Tardis type that is not supported.
        (
            dir.write(
                "ticker.csv",
                "exchange,symbol,timestamp,local_timestamp,funding_rate,mark_price\n",
            ),
            "columns `funding_rate,mark_price`",
        ),
        // TC4: a directory cannot be read as a file.
        (dir.path(""), "cannot open"),
    ];
    for (feed, why) in &bad {
        let name = feed.display().to_string();
        let name = name.trim_end_matches('/');
        // TC5: `serve` exits non-zero at once, naming the file and the
        // reason, with or without --loop.
        for looped in [false, true] {
            let mut cmd = tickwire();
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--feed", s(feed)]);
            if looped {
                cmd.arg("--loop");
            }
            let done = binary::run(&mut cmd);
            let stderr = String::from_utf8_lossy(&done.stderr);
            assert!(!done.status.success(), "{name}: {stderr}");
            assert!(done.stdout.is_empty(), "{name}: started");
            assert!(
                stderr.contains(&format!("feed \"{}", feed.display())) && stderr.contains(why),
                "{name} (loop {looped}): {stderr}"
            );
        }
        // TC6: `record` and `convert` too, before creating their output.
        let out = dir.path("out.twlog");
        for args in [
            vec!["record", "--feed", s(feed), "--out", s(&out)],
            vec!["convert", s(feed), s(&out)],
        ] {
            let done = binary::run(tickwire().args(&args));
            let stderr = String::from_utf8_lossy(&done.stderr);
            assert!(!done.status.success(), "{args:?}: {stderr}");
            assert!(
                stderr.contains(name) && stderr.contains(why),
                "{args:?}: {stderr}"
            );
            assert!(!out.exists(), "{args:?} created {}", out.display());
        }
    }
}

#[test]
fn convert_rejects_a_logs_negative_updates() {
    use tickwire::feed::recording::log::{LogSymbol, LogWriter};
    use tickwire::update::{Sequenced, Side, Update, UpdateKind};
    let dir = TempDir::new("feeds-convert-log");
    let sym = LogSymbol {
        id: 0,
        name: "BTCUSDT".into(),
        price_decimals: 2,
        size_decimals: 3,
    };
    let update = |i: u64, kind| Sequenced {
        update: Update {
            symbol: 0,
            kind,
            exchange_ts_ns: 1_000 * i,
            receive_ts_ns: 1_000 * i,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq: i,
        symbol_seq: i,
        publish_ts_ns: 1_000 * i,
    };
    // A log only a damaged file or a hand-made one could hold: a good
    // quote, a quote with a negative bid, a trade with a negative size.
    let mut log = LogWriter::new(Vec::new(), 1).unwrap();
    for u in [
        update(
            1,
            UpdateKind::Quote {
                bid_px: 100,
                bid_sz: Some(5),
                ask_px: 101,
                ask_sz: Some(0),
            },
        ),
        update(
            2,
            UpdateKind::Quote {
                bid_px: -100,
                bid_sz: Some(5),
                ask_px: 101,
                ask_sz: Some(5),
            },
        ),
        update(
            3,
            UpdateKind::Trade {
                px: 101,
                sz: -1,
                side: Side::Buy,
            },
        ),
    ] {
        log.push(&sym, &u).unwrap();
    }
    let input = dir.write("in.twlog", "");
    std::fs::write(&input, log.finish().unwrap()).unwrap();
    let out = dir.path("out.csv");
    let done = binary::run(tickwire().args(["convert", s(&input), s(&out), "--exchange", "x"]));
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    // TC0: both counted as rejected, neither written; the empty side is.
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        format!(
            "{}: 3 read, 1 written to {}, 0 skipped, 2 rejected\n",
            input.display(),
            out.display()
        )
    );
    let csv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(!csv.contains('-'), "{csv}");
    // TC1: each warned about on stderr, naming the block.
    let warned = stderr
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(": block 1: rejected update (negative #"))
        .count();
    assert_eq!(warned, 2, "{stderr}");
}
