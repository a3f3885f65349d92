//! HTTPS and wss on the server's port, with a certificate made at run time,
//! and certificate reload without dropping connections.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::tls::*;
use common::*;
use futures_util::SinkExt;
use tickwire::config::ServeConfig;
use tickwire::decimal::same_number;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const RECORDING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/binance-spot-BTCUSDT-20230405-head300.jsonl"
);

/// (symbol, kind, price fields...) of every quote and trade in the
/// recording, read with serde_json, independently of the server's parser.
fn expected() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(RECORDING).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let (_, json) = line.split_once(' ').unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let d = &v["data"];
        let s = |k: &str| d[k].as_str().unwrap().to_owned();
        match v["stream"].as_str().unwrap().split_once('@').unwrap().1 {
            "bookTicker" => out.push((s("s"), vec![s("b"), s("B"), s("a"), s("A")])),
            "trade" | "aggTrade" => out.push((s("s"), vec![s("p"), s("q")])),
            _ => {}
        }
    }
    out
}

async fn wss(addr: SocketAddr, trust: &TestCert, subprotocol: &str) -> Client {
    let mut req = format!("wss://localhost:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    let (ws, resp) = wss_connect(addr, client_config(&trust.der), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    Client::new(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_carries_the_exact_recording_and_every_route_works_over_https() {
    let dir = TempDir::new("tls");
    let cert = self_signed();
    let (cert_path, key_path) = write_pair(&dir.0, &cert);
    let server = start(ServeConfig {
        feeds: vec![RECORDING.into()],
        speed: "max".into(),
        min_subscribers: 1,
        echo: true,
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        ..ServeConfig::default()
    })
    .await;
    let addr = server.addr;
    let trust = client_config(&cert.der);

    let mut c = wss(addr, &cert, "tickwire.v1").await;
    c.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    assert_eq!(c.next_control().await["type"], "ack");
    let want = expected();
    assert!(want.len() > 200, "{}", want.len());
    let got = c.data(want.len()).await;
    for (i, (m, (symbol, fields))) in got.iter().zip(&want).enumerate() {
        let (id, values) = match m {
            Msg::Quote {
                id,
                bid,
                bid_size,
                ask,
                ask_size,
                ..
            } => (
                id,
                vec![
                    Some(bid.as_str()),
                    bid_size.as_deref(),
                    Some(ask.as_str()),
                    ask_size.as_deref(),
                ],
            ),
            Msg::Trade {
                id, price, size, ..
            } => (id, vec![Some(price.as_str()), Some(size.as_str())]),
            _ => unreachable!(),
        };
        assert_eq!(c.name(*id), symbol, "update {i}");
        assert_eq!(values.len(), fields.len(), "update {i}: {m:?}");
        for (g, w) in values.iter().zip(fields) {
            let shown = g.unwrap_or("unknown");
            assert!(same_number(shown, w), "update {i}: {shown} != {w}");
        }
    }

    // TC0: every HTTP route over TLS.
    let (status, body) = https_get(addr, Arc::clone(&trust), "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (status, body) = https_get(addr, Arc::clone(&trust), "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>tickwire</title>"));
    let (status, metrics) = https_get(addr, Arc::clone(&trust), "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "tickwire_tls_handshake_failures_total"), 0);
    // Over TLS too, the writer hands down batches of frames per write.
    let (writes, frames) = writes_and_frames(&server.market.metrics, want.len()).await;
    assert!(writes * 2 < frames, "{writes} writes for {frames} frames");
    // TC1: /sse streams over TLS.
    let mut s = tls_connect(addr, Arc::clone(&trust)).await.unwrap();
    s.write_all(b"GET /sse?symbols=BTCUSDT HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !String::from_utf8_lossy(&head).contains("\"type\":\"symbol\"") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("SSE data within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "SSE stream ended: {}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    drop(s);
    // TC2: /echo, the same connection code over TLS.
    let req = format!("wss://localhost:{}/echo", addr.port())
        .into_client_request()
        .unwrap();
    let (ws, _) = wss_connect(addr, Arc::clone(&trust), req).await.unwrap();
    let mut echo = Client::new(ws);
    echo.ws.send(Message::text("over tls")).await.unwrap();
    let back = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut echo.ws),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(back, Message::text("over tls"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_clients_are_refused_and_counted_without_disturbing_others() {
    let dir = TempDir::new("tls");
    let cert = self_signed();
    let (cert_path, key_path) = write_pair(&dir.0, &cert);
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=3,rate=500".into()],
        tls_cert: Some(cert_path),
        tls_key: Some(key_path),
        tls_handshake_timeout_ms: 300,
        ..ServeConfig::default()
    })
    .await;
    let addr = server.addr;
    let mut good = wss(addr, &cert, "tickwire.v1.json").await;
    good.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    good.data(5).await;

    // TC0: plain HTTP on the TLS port: a plain-text 400 that says why.
    let (status, body) = http_get(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("this port speaks TLS"), "{body}");
    // TC1: a plain ws:// client fails its handshake cleanly.
    let plain = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await;
    assert!(plain.is_err());
    // TC2: a TLS record header followed by garbage.
    let mut junk = TcpStream::connect(addr).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut buf)).await;
    // TC3: a client that never says hello is cut off at the timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut [0u8; 16]))
        .await
        .expect("the server closes a silent TLS client")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // TC4: a client that does not trust the certificate.
    let stranger = self_signed();
    assert!(tls_connect(addr, client_config(&stranger.der))
        .await
        .is_err());

    // The subscribed client never noticed.
    good.data(20).await;
    let (_, metrics) = https_get(addr, client_config(&cert.der), "/metrics").await;
    assert!(
        metric(&metrics, "tickwire_tls_handshake_failures_total") >= 5,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "tickwire_connections"), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_the_new_certificate_and_keeps_the_old_one_when_the_new_is_bad() {
    let dir = TempDir::new("tls");
    let first = self_signed();
    let (cert_path, key_path) = write_pair(&dir.0, &first);
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=3,rate=500".into()],
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path.clone()),
        ..ServeConfig::default()
    })
    .await;
    let addr = server.addr;
    let mut open = wss(addr, &first, "tickwire.v1").await;
    open.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    open.data(5).await;

    // TC0: a good new pair.
    let second = self_signed();
    write_pair(&dir.0, &second);
    server.reload_tls().unwrap();
    let seen = presented_cert(addr, client_config(&second.der))
        .await
        .unwrap();
    assert_eq!(seen, second.der);
    assert!(presented_cert(addr, client_config(&first.der))
        .await
        .is_err());
    // TC1: a certificate that is not PEM, then a key of another pair: the
    // second certificate stays in service.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    assert!(server.reload_tls().is_err());
    write_pair(&dir.0, &second);
    std::fs::write(&key_path, &first.key_pem).unwrap();
    let err = server.reload_tls().unwrap_err();
    assert!(err.to_string().contains("do not go together"), "{err}");
    let seen = presented_cert(addr, client_config(&second.der))
        .await
        .unwrap();
    assert_eq!(seen, second.der);

    // The connection opened under the first certificate still streams.
    open.data(20).await;
    let (_, metrics) = https_get(addr, client_config(&second.der), "/metrics").await;
    assert_eq!(metric(&metrics, "tickwire_tls_reloads_total"), 1);
    assert_eq!(metric(&metrics, "tickwire_tls_reload_failures_total"), 2);
    server.stop().await;
}

#[test]
fn a_missing_or_half_tls_configuration_is_refused_at_start() {
    let out = binary::run(binary::tickwire().args(["serve", "--tls-cert", "/no/such/cert.pem"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_cert and tls_key go together"), "{err}");
    let out = binary::run(binary::tickwire().args([
        "serve",
        "--tls-cert",
        "/no/such/cert.pem",
        "--tls-key",
        "/no/such/key.pem",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/cert.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = TempDir::new("tls-bin");
    let first = self_signed();
    let (cert_path, key_path) = write_pair(&dir.0, &first);
    let mut bin = Binary::serve_with(
        binary::tickwire()
            .args(["serve", "--listen", "127.0.0.1:0", "--feed"])
            .arg("synthetic:symbols=3,rate=500")
            .arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .env("RUST_LOG", "warn"),
    );
    let addr = bin.addr();
    assert!(bin.banner().contains("https://"), "{}", bin.banner());
    assert!(bin.banner().contains("wss://"), "{}", bin.banner());

    let mut open = wss(addr, &first, "tickwire.v1").await;
    open.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    open.data(5).await;

    let second = self_signed();
    write_pair(&dir.0, &second);
    bin.signal(libc::SIGHUP);
    // The signal is handled asynchronously: poll until new handshakes see
    // the new certificate.
    let seen = eventually_async(
        Duration::from_secs(10),
        "the new certificate never came",
        || async {
            presented_cert(addr, client_config(&second.der))
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    assert_eq!(seen, second.der);
    // The open connection keeps streaming, and its sequence goes on.
    let before = open.data(1).await[0].seq().unwrap();
    let after = open.data(20).await;
    assert!(after.iter().all(|m| m.seq().unwrap() > before));

    // A broken file on the next SIGHUP: logged, counted, old pair kept.
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    bin.signal(libc::SIGHUP);
    let trust = client_config(&second.der);
    let metrics = eventually_async(
        Duration::from_secs(10),
        "the failed reload was not counted",
        || async {
            let (_, metrics) = https_get(addr, Arc::clone(&trust), "/metrics").await;
            match metric(&metrics, "tickwire_tls_reload_failures_total") {
                1 => Ok(metrics),
                n => Err(format!("{n} failures counted")),
            }
        },
    )
    .await;
    assert_eq!(metric(&metrics, "tickwire_tls_reloads_total"), 1);
    assert_eq!(
        presented_cert(addr, Arc::clone(&trust)).await.unwrap(),
        second.der
    );
    open.data(5).await;

    bin.terminate();
    let close = open.until_closed(Duration::from_secs(10)).await;
    assert_eq!(close.map(|c| c.0), Some(1001));
    bin.wait_success(binary::STOP_LIMIT);
}

/// The writer's write calls and frames written, once its frames count
/// holds the `read` frames a client has read. A pass counts what it wrote
/// once it has written it all, so the client can have read every frame an
/// instant before (CI saw 1 of them counted).
async fn writes_and_frames(m: &tickwire::metrics::Metrics, read: usize) -> (u64, u64) {
    eventually(Duration::from_secs(10), "the frames counted", || {
        m.frames_out_total.get() >= read as u64
    })
    .await;
    (m.writev_calls_total.get(), m.frames_out_total.get())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_still_batches_frames_into_vectored_writes() {
    // The connection code now runs over any stream; on plain TCP it must
    // still hand the kernel many frames per writev.
    let server = start(ServeConfig {
        feeds: vec![RECORDING.into()],
        speed: "max".into(),
        min_subscribers: 1,
        ..ServeConfig::default()
    })
    .await;
    let mut c = Client::connect(server.addr, "tickwire.v1").await;
    c.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    assert_eq!(c.next_control().await["type"], "ack");
    let want = expected().len();
    c.data(want).await;
    let (writes, frames) = writes_and_frames(&server.market.metrics, want).await;
    assert!(
        frames > 200 && writes * 2 < frames,
        "{writes} writes for {frames} frames"
    );
    server.stop().await;
}
