//! The real server on port 0, driven by real WebSocket clients.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::*;
use tickwire::config::ServeConfig;
use tickwire::decimal::same_number;

/// What the recording says, read independently of the server's parsers.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Quote {
        symbol: String,
        receive_ts: u64,
        bid: String,
        bid_size: String,
        ask: String,
        ask_size: String,
    },
    Trade {
        symbol: String,
        receive_ts: u64,
        price: String,
        size: String,
        side: String,
    },
}

/// Parses an hftbacktest capture (`<ns> {"stream":..,"data":..}` lines,
/// gzip) with serde_json: quotes from bookTicker, trades from trade and
/// aggTrade, everything else skipped.
fn expected_updates(path: &str) -> Vec<Expected> {
    let file = std::fs::File::open(path).unwrap();
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.unwrap();
        let (ts, json) = line.split_once(' ').unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let Some(stream) = v["stream"].as_str() else {
            continue;
        };
        let d = &v["data"];
        let s = |k: &str| d[k].as_str().unwrap().to_owned();
        let receive_ts = ts.parse().unwrap();
        match stream.split_once('@').unwrap().1 {
            "bookTicker" => out.push(Expected::Quote {
                symbol: s("s"),
                receive_ts,
                bid: s("b"),
                bid_size: s("B"),
                ask: s("a"),
                ask_size: s("A"),
            }),
            "trade" | "aggTrade" => out.push(Expected::Trade {
                symbol: s("s"),
                receive_ts,
                price: s("p"),
                size: s("q"),
                // Buyer is maker: the aggressor sold.
                side: if d["m"].as_bool().unwrap() {
                    "sell"
                } else {
                    "buy"
                }
                .into(),
            }),
            _ => {}
        }
    }
    out
}

fn matches(client: &Client, got: &Msg, want: &Expected) -> bool {
    match (got, want) {
        (
            Msg::Quote {
                id,
                receive_ts,
                bid,
                bid_size,
                ask,
                ask_size,
                ..
            },
            Expected::Quote {
                symbol,
                receive_ts: rt,
                bid: b,
                bid_size: bs,
                ask: a,
                ask_size: az,
            },
        ) => {
            client.name(*id) == symbol
                && receive_ts == rt
                && same_number(bid, b)
                && bid_size.as_deref().is_some_and(|g| same_number(g, bs))
                && same_number(ask, a)
                && ask_size.as_deref().is_some_and(|g| same_number(g, az))
        }
        (
            Msg::Trade {
                id,
                receive_ts,
                price,
                size,
                side,
                ..
            },
            Expected::Trade {
                symbol,
                receive_ts: rt,
                price: p,
                size: s,
                side: sd,
            },
        ) => {
            client.name(*id) == symbol
                && receive_ts == rt
                && same_number(price, p)
                && same_number(size, s)
                && side == sd
        }
        _ => false,
    }
}

/// A replay of `path` (`updates` long) with a ring larger than the whole
/// recording and a lag bound to match: no client can be conflated.
fn unconflated_replay(path: String, updates: usize) -> ServeConfig {
    let ring = (updates + 1).next_power_of_two();
    ServeConfig {
        feeds: vec![path],
        ring_capacity: ring,
        max_lag_updates: ring as u64 - 1,
        ..ServeConfig::default()
    }
}

/// Collects `n` data messages, checking the protocol's ordering promises on
/// the way: a symbol is defined before its first update, and global
/// sequences only go up.
async fn collect_data(client: &mut Client, n: usize) -> Vec<Msg> {
    let mut data = Vec::with_capacity(n);
    while data.len() < n {
        let m = client
            .next_within(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("stalled after {} of {n} updates", data.len()));
        match m {
            Msg::Quote { .. } | Msg::Trade { .. } => data.push(m),
            Msg::Closed(c) => panic!("closed after {} updates: {c:?}", data.len()),
            Msg::Control(v) => assert_ne!(v["type"], "conflated", "unexpected conflation"),
            Msg::Symbol { .. } => {}
            Msg::Status { .. } => panic!("a status from a recording"),
            Msg::Book { .. } => panic!("a book without a book channel"),
            Msg::Candle { .. } => panic!("a candle without a candle channel"),
        }
    }
    data
}

/// [`collect_data`] of `n` updates on every client at once.
async fn collect_all(clients: Vec<Client>, n: usize) -> Vec<(Client, Vec<Msg>)> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let data = collect_data(&mut c, n).await;
                (c, data)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// `data` is `expected`, update for update, in global sequence from 1.
fn assert_exact(client: &Client, data: &[Msg], expected: &[Expected]) {
    for (i, (got, want)) in data.iter().zip(expected).enumerate() {
        assert_eq!(got.seq(), Some(i as u64 + 1), "global sequence");
        assert!(
            matches(client, got, want),
            "update {i}: got {got:?}, want {want:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reaches_binary_and_json_clients_with_exact_prices() {
    let path = bundled_path();
    let expected = expected_updates(&path);
    assert!(
        expected.len() > 1000,
        "recording too small: {}",
        expected.len()
    );
    // The paced replay gives the clients time anyway.
    let server = start(ServeConfig {
        speed: "20".into(),
        min_subscribers: 2,
        ..unconflated_replay(path, expected.len())
    })
    .await;
    let mut clients = Vec::new();
    for proto in ["tickwire.v1", "tickwire.v1.json"] {
        let mut c = Client::connect(server.addr, proto).await;
        c.send(r#"{"op":"subscribe","symbols":["*"],"id":1}"#).await;
        let ack = c.next_control().await;
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["id"], 1);
        assert_eq!(ack["snapshot"], 0, "the feed is held until both subscribe");
        clients.push(c);
    }
    for (client, data) in collect_all(clients, expected.len()).await {
        assert_exact(&client, &data, &expected);
    }
    let m = metrics_text(server.addr).await;
    assert_eq!(metric(&m, "tickwire_conflated_updates_total"), 0);
    assert_eq!(metric(&m, "tickwire_lapped_readers_total"), 0);
    assert_eq!(
        metric(&m, "tickwire_frames_encoded_total"),
        expected.len() as u64
    );
    server.stop().await;
}

/// `/ws?batch=1`: the same updates in the same order as a client without
/// batches gets, in both subprotocols, several to a WebSocket message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_carry_the_same_updates_in_fewer_messages() {
    let path = bundled_path();
    let expected = expected_updates(&path);
    // Replayed once all four subscribe, fast enough that batches form.
    let server = start(ServeConfig {
        speed: "50".into(),
        min_subscribers: 4,
        ..unconflated_replay(path, expected.len())
    })
    .await;
    let mut clients = Vec::new();
    for (path, proto) in [
        ("/ws", "tickwire.v1"),
        ("/ws?batch=1", "tickwire.v1"),
        ("/ws", "tickwire.v1.json"),
        ("/ws?batch=1", "tickwire.v1.json"),
    ] {
        let mut c = Client::new(connect_at(server.addr, path, proto).await);
        c.send(r#"{"op":"subscribe","symbols":["*"],"id":1}"#).await;
        assert_eq!(c.next_control().await["type"], "ack");
        clients.push(c);
    }
    let got = collect_all(clients, expected.len()).await;
    for (client, data) in &got {
        assert_exact(client, data, &expected);
    }
    let n = expected.len();
    for (k, (client, _)) in got.iter().enumerate() {
        let batched = k % 2 == 1;
        // Unbatched: one message per update, plus the definitions.
        assert_eq!(
            client.ws_messages >= n,
            !batched,
            "client {k}: {} messages for {n} updates",
            client.ws_messages
        );
        if batched {
            assert!(
                client.ws_messages * 2 < n,
                "client {k}: {} messages for {n} updates",
                client.ws_messages
            );
        }
    }
    server.stop().await;
}

/// A burst far larger than a connection's outbox bound, and then nothing:
/// a writer's fill stops at the bound, so it must come back for the rest by
/// itself (no later publish will wake it). Every update arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_outbox_arrives_whole_with_nothing_published_after() {
    let path = bundled_path();
    let expected = expected_updates(&path);
    let server = start(ServeConfig {
        speed: "max".into(),
        // A few dozen frames per fill, against thousands in the burst.
        max_outbox_bytes: 4096,
        min_subscribers: 1,
        ..unconflated_replay(path, expected.len())
    })
    .await;
    let mut c = Client::connect(server.addr, "tickwire.v1").await;
    c.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    assert_eq!(c.next_control().await["type"], "ack");
    // Whole within a minute: stranded frames would come only with the
    // heartbeat's pings, a fill's worth at a time.
    let data = tokio::time::timeout(
        Duration::from_secs(60),
        collect_data(&mut c, expected.len()),
    )
    .await
    .expect("the whole burst within 60 s");
    for (i, got) in data.iter().enumerate() {
        assert_eq!(got.seq(), Some(i as u64 + 1), "global sequence");
    }
    server.stop().await;
}

/// RFC 6455 §5.5.1: after a close frame, nothing. Clients close while a
/// fast feed keeps their writer busy; each gets its close echoed, and then
/// the stream ends: no update may slip in after the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_follows_the_servers_close_frame() {
    use common::raw::{RawWs, CLOSE};
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=10,rate=20000".into()],
        ..ServeConfig::default()
    })
    .await;
    let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
    for _ in 0..20 {
        let mut ws = RawWs::connect(localhost, server.addr).await;
        ws.send_text(r#"{"op":"subscribe","symbols":["*"]}"#).await;
        // Some updates first: the writer is busy with this connection.
        for _ in 0..50 {
            ws.read_frame().await.expect("an update");
        }
        ws.send(true, CLOSE, &1000u16.to_be_bytes()).await;
        loop {
            match ws.read_frame().await {
                Ok((CLOSE, payload)) => {
                    assert_eq!(payload[..2], 1000u16.to_be_bytes(), "the close echoed");
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("the connection ended without a close: {e}"),
            }
        }
        match ws.read_frame().await {
            Err(_) => {}
            Ok((op, _)) => panic!("a frame with opcode {op:#x} after the close"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_get_identical_sequences() {
    raise_fd_limit();
    const CLIENTS: usize = 1000;
    const UPDATES: usize = 300;
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=10,rate=3000".into()],
        min_subscribers: CLIENTS,
        // A thousand debug-build clients on a machine busy with the rest
        // of the suite can fall more than the default 4,096 updates (1.4 s
        // here) behind, and be conflated, which is not what this tests:
        // 21 s of lag are allowed.
        ring_capacity: 1 << 16,
        max_lag_updates: (1 << 16) - 1,
        ..ServeConfig::default()
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let addr = server.addr;
        let proto = if i % 2 == 0 {
            "tickwire.v1"
        } else {
            "tickwire.v1.json"
        };
        let mut c = Client::connect(addr, proto).await;
        c.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
        tasks.push(tokio::spawn(async move {
            let data = collect_data(&mut c, UPDATES).await;
            data.iter()
                .map(|m| (m.seq().unwrap(), m.symbol_seq().unwrap()))
                .collect::<Vec<_>>()
        }));
    }
    let mut first = None;
    for t in tasks {
        let seqs = t.await.unwrap();
        match &first {
            None => first = Some(seqs),
            Some(f) => assert_eq!(&seqs, f),
        }
    }
    let first = first.unwrap();
    assert_eq!(first[0].0, 1);
    assert!(first.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    let m = &server.market.metrics;
    let encoded = m.frames_encoded_total.get();
    assert_eq!(encoded, m.updates_in_total.get());
    assert!(
        m.frames_out_total.get() >= (CLIENTS * UPDATES) as u64,
        "every subscriber was sent the frames the publisher encoded once"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_conflated_then_closed_while_fast_client_gets_everything() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    const MAX_OUTBOX: usize = 16 * 1024;
    /// How long the slow client stops reading in phase 1.
    const PAUSE: Duration = Duration::from_millis(1500);
    let server = start(ServeConfig {
        // The fast client may fall 0.8 s behind (max_lag_updates at the
        // rate) before it would be conflated: a debug-build client on a
        // busy 2-core machine does. The slow one pauses 1.5 s, well past it,
        // and a second under the 2.5 s stall timeout.
        feeds: vec!["synthetic:symbols=20,rate=10000".into()],
        ring_capacity: 32 * 1024,
        max_lag_updates: 8192,
        max_outbox_bytes: MAX_OUTBOX,
        send_buffer_bytes: 16 * 1024,
        stall_timeout_ms: 2500,
        close_timeout_ms: 10_000,
        min_subscribers: 2,
        ..ServeConfig::default()
    })
    .await;
    let addr = server.addr;

    let mut fast = Client::connect(addr, "tickwire.v1").await;
    fast.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    // The default receive buffer fills in a moment at this rate; a small
    // fixed one could leave the window smaller than the server's segment
    // size once the client reads again, and the server then sends one
    // segment per persist timeout (see the stall test in `limits.rs`).
    let mut slow = Client::connect(addr, "tickwire.v1.json").await;
    slow.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    assert_eq!(slow.next_control().await["type"], "ack");

    // The fast client reads everything, checking there is no gap at all,
    // and says how far it has got.
    let fast_seq = Arc::new(AtomicU64::new(0));
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let fast_task = tokio::spawn({
        let fast_seq = Arc::clone(&fast_seq);
        async move {
            let mut last_seq = 0;
            loop {
                tokio::select! {
                    _ = &mut stop_rx => return last_seq,
                    m = fast.next() => match m {
                        Msg::Quote { seq, .. } | Msg::Trade { seq, .. } => {
                            assert_eq!(seq, last_seq + 1, "the fast client missed an update");
                            last_seq = seq;
                            fast_seq.store(seq, Relaxed);
                        }
                        Msg::Control(v) => assert_ne!(v["type"], "conflated"),
                        Msg::Closed(c) => panic!("fast client closed: {c:?}"),
                        Msg::Symbol { .. } => {}
                        Msg::Status { .. } => panic!("a status from a synthetic feed"),
                        Msg::Book { .. } => panic!("a book from a synthetic feed"),
                        Msg::Candle { .. } => panic!("a candle without a candle channel"),
                    },
                }
            }
        }
    });

    // Phase 1: the slow client stops reading for less than the stall
    // timeout. The server's queues stay bounded meanwhile.
    let mut max_queued = 0;
    for _ in 0..PAUSE.as_millis() / 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_queued = max_queued.max(server.market.metrics.queued_bytes.get());
    }
    // Two connections, each at most its outbox bound plus one catch-up
    // (20 symbols' latest frames and a notice).
    assert!(
        max_queued <= 2 * (MAX_OUTBOX as u64 + 16 * 1024),
        "queued {max_queued} bytes"
    );
    // Its socket filled: its writer shard handed it back to its task.
    assert!(server.market.metrics.writer_holds_total.get() >= 1);

    // It reads again: it must be conflated, never see an older value after
    // a newer one, and then go on live.
    let mut last: HashMap<u32, u64> = HashMap::new();
    let (mut conflated, mut jumped, mut live) = (false, false, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(conflated && jumped && live >= 1000) {
        let m = tokio::time::timeout_at(deadline, slow.next())
            .await
            .unwrap_or_else(|_| {
                panic!("conflated: {conflated}, a sequence jump: {jumped}, then {live} updates")
            });
        match m {
            Msg::Control(v) if v["type"] == "conflated" => {
                assert!(v["dropped"].as_u64().unwrap() > 0);
                conflated = true;
            }
            m @ (Msg::Quote { .. } | Msg::Trade { .. }) => {
                let (id, sseq) = m.symbol_seq().unwrap();
                if let Some(&prev) = last.get(&id) {
                    assert!(sseq > prev, "symbol {id}: {sseq} after {prev}");
                    // Conflation shows as a per-symbol sequence jump.
                    jumped |= conflated && sseq > prev + 1;
                }
                last.insert(id, sseq);
                if jumped {
                    live += 1;
                }
            }
            Msg::Closed(c) => panic!("closed too early: {c:?}"),
            _ => {}
        }
    }

    // Phase 2: it stops reading for longer than the stall timeout and is
    // closed with 1008 and a reason.
    let metrics = &server.market.metrics;
    eventually(Duration::from_secs(20), "the slow client's stall", || {
        metrics.slow_client_closes_total.get() == 1
    })
    .await;
    let (code, reason) = slow
        .until_closed(Duration::from_secs(20))
        .await
        .expect("a close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("slow consumer"), "{reason}");
    assert_eq!(metrics.slow_client_closes_total.get(), 1);

    // The fast client got every update published until then, with no gap
    // and no conflation (checked as it read).
    let published = server.market.ring.tail();
    eventually(Duration::from_secs(10), "the fast client caught up", || {
        fast_seq.load(Relaxed) >= published
    })
    .await;
    let _ = stop_tx.send(());
    let fast_last = fast_task.await.unwrap();
    assert!(fast_last >= published, "{fast_last} of {published}");
    server.stop().await;
}

async fn synthetic_server() -> tickwire::server::Running {
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=3,rate=1000".into()],
        max_message_bytes: 64 * 1024,
        ..ServeConfig::default()
    })
    .await;
    eventually(Duration::from_secs(10), "every symbol has a value", || {
        (0..3).all(|s| server.market.lvc.get(s).is_some())
    })
    .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_errors_and_others_are_unaffected() {
    let server = synthetic_server().await;
    let addr = server.addr;
    // A bystander reads throughout and must see no gap.
    let mut bystander = Client::connect(addr, "tickwire.v1").await;
    bystander
        .send(r#"{"op":"subscribe","symbols":["SYN0000"]}"#)
        .await;
    let ack = bystander.next_control().await;
    assert_eq!(ack["snapshot"], 1);
    // It reads until the bad requests are done, then 50 more updates.
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let mut last = None;
        let mut after_done = None;
        while after_done.is_none_or(|n| n < 50) {
            let m = tokio::select! {
                done = &mut done_rx, if after_done.is_none() => {
                    done.unwrap();
                    after_done = Some(0);
                    continue;
                }
                m = bystander.next() => m,
            };
            if let Some((id, s)) = m.symbol_seq() {
                assert_eq!(id, 0);
                if let Some(prev) = last {
                    assert_eq!(s, prev + 1, "bystander missed an update");
                }
                last = Some(s);
                after_done = after_done.map(|n| n + 1);
            }
        }
    });

    let mut c = Client::connect(addr, "tickwire.v1.json").await;
    // TC0..TC4: each request gets its error code, and the connection lives on.
    for (request, code) in [
        ("{not json", 4000),
        (r#"{"op":"subscribe","symbols":"SYN0000"}"#, 4000),
        (r#"{"op":"jump","id":5}"#, 4001),
        (r#"{"op":"subscribe","symbols":["SYN0000","NOPE"]}"#, 4002),
    ] {
        c.send(request).await;
        let e = c.next_control().await;
        assert_eq!(e["type"], "error", "{request}");
        assert_eq!(e["code"], code, "{request}: {e}");
        assert!(!e["reason"].as_str().unwrap().is_empty());
    }
    // Binary where text is expected.
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .await
    .unwrap();
    assert_eq!(c.next_control().await["code"], 4004);
    // Still alive: a ping is answered and a good subscribe works.
    c.send(r#"{"op":"ping","id":9}"#).await;
    let pong = c.next_control().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_u64()),
        (Some("pong"), Some(9))
    );
    c.send(r#"{"op":"subscribe","symbols":["SYN0001"]}"#).await;
    assert_eq!(c.next_control().await["type"], "ack");
    // A 1 MiB message closes the connection with 1009.
    c.send(&format!(
        r#"{{"op":"ping","pad":"{}"}}"#,
        "x".repeat(1 << 20)
    ))
    .await;
    let close = c.until_closed(Duration::from_secs(10)).await;
    assert_eq!(close.map(|c| c.0), Some(1009));
    drop(c);

    done_tx.send(()).unwrap();
    watcher.await.unwrap();
    let m = metrics_text(addr).await;
    for code in [4000, 4001, 4002, 4004] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("tickwire_protocol_errors_total")
                    && l.contains(&format!("code=\"{code}\""))
                    && !l.ends_with(" 0")),
            "code {code} not counted"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_and_refused_upgrades() {
    use tokio::io::AsyncWriteExt;
    let server = synthetic_server().await;
    let addr = server.addr;
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
    };
    let (status, body) = http_get(addr, &get("/healthz", "")).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (status, body) = http_get(addr, &get("/", "")).await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>tickwire</title>"));
    let (status, _) = http_get(addr, &get("/nope", "")).await;
    assert_eq!(status, 404);
    let (status, body) = http_get(addr, &get("/metrics", "")).await;
    assert_eq!(status, 200);
    assert!(body.contains("tickwire_frames_encoded_total"));

    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // TC0: a plain GET on /ws.
    let (status, body) = http_get(addr, &get("/ws", "")).await;
    assert_eq!(status, 426, "{body}");
    assert!(body.contains("WebSocket endpoint"));
    // TC1: wrong version.
    let (status, body) = http_get(
        addr,
        &get("/ws", &format!("{ws}{key}Sec-WebSocket-Version: 12\r\n")),
    )
    .await;
    assert_eq!(status, 426);
    assert!(body
        .to_ascii_lowercase()
        .contains("sec-websocket-version: 13"));
    // TC2: missing key, and a key that is not 16 bytes of base64.
    let (status, _) = http_get(
        addr,
        &get("/ws", &format!("{ws}Sec-WebSocket-Version: 13\r\n")),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http_get(
        addr,
        &get(
            "/ws",
            &format!("{ws}Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n"),
        ),
    )
    .await;
    assert_eq!(status, 400);
    // TC3: only unknown subprotocols.
    let (status, body) = http_get(
        addr,
        &get(
            "/ws",
            &format!("{ws}{key}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n"),
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("tickwire.v1"));
    // TC4: not a GET.
    let (status, _) = http_get(
        addr,
        "POST /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    // TC5: oversized headers are refused by the HTTP layer, before us.
    let (status, _) = http_get(
        addr,
        &get(
            "/ws",
            &format!("{ws}{key}X-Pad: {}\r\n", "a".repeat(512 * 1024)),
        ),
    )
    .await;
    assert!(status == 431 || status == 400, "{status}");
    // TC6: /echo is off unless asked for.
    let (status, _) = http_get(
        addr,
        &get("/echo", &format!("{ws}{key}Sec-WebSocket-Version: 13\r\n")),
    )
    .await;
    assert_eq!(status, 404);
    // TC7: a valid upgrade without a subprotocol gets binary. Only the
    // head is read: the upgraded connection stays open.
    let mut upgraded = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = get("/ws", &format!("{ws}{key}Sec-WebSocket-Version: 13\r\n"));
    upgraded.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = raw::read_head(&mut upgraded).await.unwrap();
    assert_eq!(raw::status(&head), 101, "{head}");
    let m = metrics_text(addr).await;
    assert_eq!(metric(&m, "tickwire_upgrade_rejections_total"), 6);
    server.stop().await;
}

/// A quote as the unknown-size test compares it: symbol, bid, bid size,
/// ask, ask size (`None`: unknown).
type ShownQuote = (String, String, Option<String>, String, Option<String>);

fn shown_quote(client: &Client, m: &Msg) -> ShownQuote {
    let Msg::Quote {
        id,
        bid,
        bid_size,
        ask,
        ask_size,
        ..
    } = m
    else {
        panic!("not a quote: {m:?}");
    };
    let name = client.name(*id).to_owned();
    (
        name,
        bid.clone(),
        bid_size.clone(),
        ask.clone(),
        ask_size.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbase_tickers_without_sizes_are_served_as_unknown_and_zero_stays_zero() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/coinbase-sizes-unknown.jsonl"
    );
    let server = start(ServeConfig {
        feeds: vec![path.into()],
        speed: "max".into(),
        min_subscribers: 2,
        ..ServeConfig::default()
    })
    .await;
    let q = |name: &str, bid, bid_size: Option<&str>, ask, ask_size: Option<&str>| {
        let own = |s: &str| s.to_owned();
        (
            name.into(),
            own(bid),
            bid_size.map(own),
            own(ask),
            ask_size.map(own),
        )
    };
    // TC0: neither size (Exchange); TC1: no ask size; TC2: a real zero
    // bid size; TC3: no bid size (Advanced Trade).
    let want: Vec<ShownQuote> = vec![
        q("LTC-USD", "61.83000000", None, "61.85000000", None),
        q(
            "SOL-USD",
            "31.21000000",
            Some("4.20000000"),
            "31.23000000",
            None,
        ),
        q(
            "SOL-USD",
            "31.21000000",
            Some("0.00000000"),
            "31.23000000",
            Some("12.50000000"),
        ),
        q(
            "DOGE-USD",
            "0.12330000",
            None,
            "0.12350000",
            Some("1500.50000000"),
        ),
    ];
    let mut clients = Vec::new();
    for proto in ["tickwire.v1", "tickwire.v1.json"] {
        let mut c = Client::connect(server.addr, proto).await;
        c.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
        assert_eq!(c.next_control().await["snapshot"], 0, "{proto}");
        clients.push((proto, c));
    }
    // Live: the binary client decodes the flags, the JSON one `null`s
    // (tests/common checks both, and that a flagged mantissa is 0).
    for (proto, c) in &mut clients {
        let data = collect_data(c, want.len()).await;
        let got: Vec<ShownQuote> = data.iter().map(|m| shown_quote(c, m)).collect();
        assert_eq!(got, want, "{proto}");
    }
    // TC4: a client that comes later gets the same from the snapshot: the
    // last quote of each symbol.
    for proto in ["tickwire.v1", "tickwire.v1.json"] {
        let mut c = Client::connect(server.addr, proto).await;
        c.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
        assert_eq!(c.next_control().await["snapshot"], 3, "{proto}");
        let data = collect_data(&mut c, 3).await;
        let got: Vec<ShownQuote> = data.iter().map(|m| shown_quote(&c, m)).collect();
        assert_eq!(
            got,
            [&want[0], &want[2], &want[3]].map(Clone::clone),
            "{proto}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_follows_subscribe_and_shutdown_closes_with_1001() {
    let server = synthetic_server().await;
    let mut c = Client::connect(server.addr, "tickwire.v1").await;
    c.send(r#"{"op":"subscribe","symbols":["SYN0000","SYN0002"],"id":3}"#)
        .await;
    let ack = c.next_control().await;
    assert_eq!(ack["snapshot"], 2);
    // Definitions come first, then the two latest values.
    let mut defs = 0;
    let mut snap = Vec::new();
    while snap.len() < 2 {
        match c.next().await {
            Msg::Symbol { .. } => defs += 1,
            m @ (Msg::Quote { .. } | Msg::Trade { .. }) => snap.push(m),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(defs, 2);
    let mut ids: Vec<u32> = snap.iter().map(|m| m.symbol_seq().unwrap().0).collect();
    ids.sort();
    assert_eq!(ids, [0, 2]);
    // Unsubscribe one; only the other keeps coming.
    c.send(r#"{"op":"unsubscribe","symbols":["SYN0000"]}"#)
        .await;
    assert_eq!(c.next_control().await["op"], "unsubscribe");
    for _ in 0..50 {
        if let Some((id, _)) = c.next().await.symbol_seq() {
            assert_eq!(id, 2);
        }
    }
    let stop = tokio::spawn(server.stop());
    let close = c.until_closed(Duration::from_secs(10)).await;
    assert_eq!(close.map(|c| c.0), Some(1001));
    stop.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_route_uses_the_same_connection_code() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=1,rate=10".into()],
        echo: true,
        ..ServeConfig::default()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/echo", server.addr))
        .await
        .unwrap();
    let big = "x".repeat(300_000);
    ws.send(Message::text(big.clone())).await.unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let limit = Duration::from_secs(10);
    let echoed = tokio::time::timeout(limit, ws.next())
        .await
        .expect("an echo");
    assert_eq!(echoed.unwrap().unwrap(), Message::text(big));
    let echoed = tokio::time::timeout(limit, ws.next())
        .await
        .expect("an echo");
    assert_eq!(echoed.unwrap().unwrap(), Message::binary(vec![1u8, 2, 3]));
    server.stop().await;
}
