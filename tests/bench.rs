//! `tickwire bench` against the real server: a known replay must reach
//! every client exactly once, the reports must be well-formed, and bad
//! targets must fail fast with a clear error.

mod common;

use std::time::Duration;

use common::{binary, metric, metrics_text, start, TempDir};
use tickwire::bench::{self, BenchConfig, BenchError, BenchResult, Protocol};
use tickwire::config::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RECORDING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/binance-spot-BTCUSDT-20230405-head300.jsonl"
);

/// A server that replays the 300-line recording once, as fast as it can,
/// once `clients` have subscribed; the ring holds all of it, so no client
/// can be conflated.
async fn replay_server(clients: usize) -> tickwire::server::Running {
    start(ServeConfig {
        feeds: vec![RECORDING.into()],
        speed: "max".into(),
        ring_capacity: 1024,
        max_lag_updates: 1023,
        min_subscribers: clients,
        ..ServeConfig::default()
    })
    .await
}

fn config(url: String, protocol: Protocol, clients: usize) -> BenchConfig {
    let mut c = BenchConfig::new(
        url.parse().expect("a valid URL"),
        protocol,
        clients,
        Duration::from_millis(1500),
    );
    c.warmup = Duration::ZERO;
    c.threads = 2;
    c.first_data_timeout = Duration::from_secs(5);
    c
}

/// How long a run may take: its own limits end it well before, so a run
/// still going then is a bug (a hang), not a slow machine.
const RUN_LIMIT: Duration = Duration::from_secs(60);

async fn run(c: BenchConfig) -> Result<BenchResult, BenchError> {
    let run = tokio::task::spawn_blocking(move || bench::run(c));
    tokio::time::timeout(RUN_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("the run did not end within {RUN_LIMIT:?}"))
        .expect("the bench thread")
}

async fn every_update_exactly_once(protocol: Protocol, clients: usize) {
    let server = replay_server(clients).await;
    let url = format!("ws://{}/ws", server.addr);
    let result = run(config(url, protocol, clients)).await.expect("a run");
    let published = metric(
        &metrics_text(server.addr).await,
        "tickwire_updates_in_total",
    );
    assert!(published > 200, "the recording yields {published} updates");
    let m = &result.messages;
    assert_eq!(m.per_client_total_min, published, "{}", result.summary());
    assert_eq!(m.per_client_total_max, published, "{}", result.summary());
    assert_eq!(m.total, published * clients as u64);
    assert!(m.measured <= m.total);
    let s = &result.sequence;
    assert_eq!(
        (s.gaps, s.reorders, s.duplicates, s.conflated_notices),
        (0, 0, 0, 0)
    );
    assert_eq!(result.disconnects, 0);
    assert!(result.errors.is_empty(), "{:?}", result.errors);

    let json: serde_json::Value = serde_json::from_str(&result.to_json()).expect("JSON");
    assert_eq!(json["clients"], clients);
    assert_eq!(json["messages"]["total"], published * clients as u64);
    assert_eq!(json["sequence"]["gaps"], 0);
    assert!(json["latency_us"]["publish"].is_object() || m.measured == 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reaches_every_binary_client_exactly_once() {
    every_update_exactly_once(Protocol::TickwireBinary, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reaches_every_json_client_exactly_once() {
    every_update_exactly_once(Protocol::TickwireJson, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_writes_json_hgrm_and_svg() {
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=20,rate=5000".into()],
        ..ServeConfig::default()
    })
    .await;
    let dir = TempDir::new("bench");
    let (json, hgrm, svg) = (dir.path("r.json"), dir.path("r.hgrm"), dir.path("r.svg"));
    let url = format!("ws://{}/ws", server.addr);
    let args: Vec<String> = [
        "bench",
        "--url",
        &url,
        "--clients",
        "20",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--quiet",
        "--symbols",
        "random:5/20",
        "--slow",
        "2",
        "--slow-pattern",
        "300:300",
    ]
    .map(str::to_owned)
    .into();
    let out = tokio::task::spawn_blocking(move || {
        let out = binary::run(
            binary::tickwire()
                .args(args)
                .arg("--json")
                .arg(&json)
                .arg("--hgrm")
                .arg(&hgrm)
                .arg("--svg")
                .arg(&svg),
        );
        (out, json, hgrm, svg)
    })
    .await
    .unwrap();
    let (out, json, hgrm, svg) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("msgs/s") && stdout.contains("p99.9"),
        "{stdout}"
    );

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["clients"], 20);
    assert_eq!(v["slow_clients"], 2);
    assert!(v["messages"]["measured"].as_u64().unwrap() > 0);
    // Binary trades and quotes are 66 and 82 bytes on the wire.
    let per_msg = v["messages"]["bytes_per_sec"].as_f64().unwrap()
        / v["messages"]["per_sec"].as_f64().unwrap();
    assert!(
        (66.0..=82.0).contains(&per_msg),
        "{per_msg} bytes per message"
    );
    assert_eq!(v["sequence"]["reorders"], 0);
    assert_eq!(v["sequence"]["duplicates"], 0);

    let text = std::fs::read_to_string(&hgrm).unwrap();
    let points = bench::report::parse_hgrm(&text);
    assert!(text.starts_with("       Value     Percentile TotalCount"));
    assert!(points.len() > 10, "{text}");
    assert_eq!(points.last().map(|p| p.0), Some(1.0));
    assert!(text.contains("#[Max     ="));

    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains("<polyline"));
    server.stop().await;
}

fn quick(url: String, protocol: Protocol) -> BenchConfig {
    let mut c = config(url, protocol, 3);
    c.connect_timeout = Duration::from_secs(1);
    c.first_data_timeout = Duration::from_secs(1);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_port_fails_fast() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    // Fast means on the refusal itself, not at a timeout: with an hour to
    // connect, only a run that gives up at once ends within RUN_LIMIT.
    let mut c = quick(
        format!("ws://127.0.0.1:{port}/ws"),
        Protocol::TickwireBinary,
    );
    c.connect_timeout = Duration::from_secs(3600);
    let err = run(c).await.unwrap_err();
    assert!(
        matches!(
            err,
            BenchError::Connections {
                failed: 3,
                clients: 3,
                ..
            }
        ),
        "every connection refused, none still waiting: {err}"
    );
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

/// A plain HTTP server: 200 to everything, or silence after the request.
async fn http_server(answer: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if answer {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    format!("ws://{addr}/ws")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_is_a_clear_error() {
    let err = run(quick(http_server(true).await, Protocol::TickwireBinary))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(err.to_string().contains("200 OK"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out() {
    let err = run(quick(http_server(false).await, Protocol::TsPrefix))
        .await
        .unwrap_err();
    // At the configured connect timeout (1 s), during the upgrade: not when
    // the server ends its 30 s silence by closing.
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        err.to_string()
            .contains("timed out after 1s the WebSocket upgrade"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_protocol_is_reported() {
    // tickwire sends nothing to a client that does not subscribe.
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=3,rate=1000".into()],
        ..ServeConfig::default()
    })
    .await;
    let err = run(quick(
        format!("ws://{}/ws", server.addr),
        Protocol::TsPrefix,
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, BenchError::NoData(_)), "{err}");
    server.stop().await;
}

/// A server that admits one connection per client address, loopback
/// included: three clients from one address get two 429s.
async fn one_per_address_server() -> tickwire::server::Running {
    start(ServeConfig {
        feeds: vec!["synthetic:symbols=5,rate=1000".into()],
        max_connections_per_ip: 1,
        limit_loopback: true,
        ..ServeConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_addrs_spread_the_clients_over_local_addresses() {
    let server = one_per_address_server().await;
    let url = format!("ws://{}/ws", server.addr);
    // Without --source-addrs every client comes from 127.0.0.1: the
    // server's per-address limit refuses two of the three.
    let err = run(quick(url.clone(), Protocol::TickwireBinary))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    // From 127.0.0.2, .3 and .4, one each: all are admitted and get data.
    let mut c = quick(url, Protocol::TickwireBinary);
    c.source_addrs = "127.0.0.2-127.0.0.4".parse().unwrap();
    let result = run(c).await.expect("a run from three addresses");
    assert!(
        result.messages.per_client_total_min > 0,
        "{}",
        result.summary()
    );
    assert_eq!(result.disconnects, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_connects_from_the_source_addrs_it_is_given() {
    // A raw-TCP server that records where each connection comes from.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let (peers_tx, mut peers) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let _ = peers_tx.send(peer.ip());
            tokio::spawn(async move {
                let mut frame = vec![0x82, 32];
                frame.extend_from_slice(&[0u8; 32]);
                while s.write_all(&frame).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
    });
    let args = [
        "bench",
        "--url",
        &url,
        "--protocol",
        "raw-tcp",
        "--clients",
        "6",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--quiet",
        "--source-addrs",
        "127.0.0.2,127.0.0.3-127.0.0.4",
    ]
    .map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || binary::run(binary::tickwire().args(args)))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = Vec::new();
    while let Ok(ip) = peers.try_recv() {
        seen.push(ip.to_string());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.4"
        ]
    );

    let bad =
        binary::run(binary::tickwire().args(["bench", "--source-addrs", "127.0.0.9-127.0.0.2"]));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("bad --source-addrs") && stderr.contains("after the last"),
        "{stderr}"
    );
}
