//! `/sse` against the real server: the same JSON payloads as the WebSocket,
//! event ids, resume with `Last-Event-ID`, and the refusals.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{connect, http_get, start};
use futures_util::StreamExt;
use tickwire::config::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SYMBOLS: u32 = 3;

async fn synthetic_server() -> tickwire::server::Running {
    let server = start(ServeConfig {
        feeds: vec![format!("synthetic:symbols={SYMBOLS},rate=2000")],
        ..ServeConfig::default()
    })
    .await;
    common::eventually(Duration::from_secs(10), "every symbol has a value", || {
        (0..SYMBOLS).all(|s| server.market.lvc.get(s).is_some())
    })
    .await;
    server
}

/// One event: its id, if any, and its data.
#[derive(Debug)]
struct Event {
    id: Option<u64>,
    data: String,
}

/// An open `/sse` response, read as HTTP/1.0 so the body is the raw event
/// stream (no chunked framing), until `n` events have arrived.
async fn events(
    addr: std::net::SocketAddr,
    query: &str,
    last_id: Option<u64>,
    n: usize,
) -> (String, Vec<Event>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    s.write_all(format!("GET /sse?{query} HTTP/1.0\r\n{resume}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let parsed = parse(body);
            if parsed.len() >= n {
                return (head.to_owned(), parsed);
            }
        }
        let mut chunk = [0u8; 65536];
        let read = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("events within 10 s")
            .unwrap();
        assert!(read > 0, "stream ended early: {text}");
        buf.extend_from_slice(&chunk[..read]);
    }
}

/// Complete events (ended by a blank line); `retry:` and comments are not events.
fn parse(body: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let complete = &body[..body.rfind("\n\n").map_or(0, |i| i + 2)];
    for block in complete.split("\n\n").filter(|b| !b.is_empty()) {
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("data: ") {
                assert!(data.is_none(), "one data line per event");
                data = Some(v.to_owned());
            }
        }
        if let Some(data) = data {
            out.push(Event { id, data });
        }
    }
    out
}

fn json(e: &Event) -> serde_json::Value {
    serde_json::from_str(&e.data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sends_the_websocket_json_payloads_with_ids() {
    let server = synthetic_server().await;
    let mut ws = connect(server.addr, "tickwire.v1.json").await;
    common::send(&mut ws, r#"{"op":"subscribe","symbols":["*"]}"#).await;
    let (head, got) = events(server.addr, "symbols=%2A", None, 400).await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );

    // ack (snapshot: N), the definitions, N cached updates oldest first, live.
    let ack = json(&got[0]);
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["snapshot"], SYMBOLS);
    for e in &got[1..=SYMBOLS as usize] {
        assert_eq!(json(e)["type"], "symbol");
        assert_eq!(e.id, None);
    }
    let data = &got[1 + SYMBOLS as usize..];
    let mut last = 0;
    for e in data {
        let v = json(e);
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(e.id, Some(seq), "the event id is the global sequence");
        assert!(seq > last, "ids only grow");
        last = seq;
    }

    // Byte for byte what the WebSocket client got for the same updates.
    let mut by_seq = HashMap::new();
    while by_seq.len() < 2000 {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next());
        let Some(Ok(Message::Text(t))) = next.await.expect("a message within 10 s") else {
            panic!("ws ended")
        };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        if let Some(seq) = v["seq"].as_u64() {
            by_seq.insert(seq, t.as_str().to_owned());
        }
        if by_seq.contains_key(&last) {
            break;
        }
    }
    let mut compared = 0;
    for e in data {
        if let Some(text) = by_seq.get(&e.id.unwrap()) {
            assert_eq!(&e.data, text);
            compared += 1;
        }
    }
    assert!(compared > 100, "only {compared} updates in common");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_with_what_changed_since() {
    let server = synthetic_server().await;
    let (_, got) = events(server.addr, "symbols=SYN0000,SYN0002", None, 50).await;
    let seen = got.iter().filter_map(|e| e.id).max().unwrap();
    // Both symbols change after what was seen.
    let market = &server.market;
    common::eventually(Duration::from_secs(10), "newer values", || {
        ["SYN0000", "SYN0002"].iter().all(|name| {
            let id = market.symbols.get_by_name(name).unwrap().id;
            market.lvc.get(id).is_some_and(|p| p.seq > seen)
        })
    })
    .await;

    // TC0: resume from the last id seen: only newer values, of our symbols.
    let (_, resumed) = events(server.addr, "symbols=SYN0000,SYN0002", Some(seen), 4).await;
    let ack = json(&resumed[0]);
    let n = ack["snapshot"].as_u64().unwrap() as usize;
    assert!((1..=2).contains(&n), "{ack}");
    let cached: Vec<&Event> = resumed.iter().filter(|e| e.id.is_some()).take(n).collect();
    for e in &cached {
        assert!(e.id.unwrap() > seen);
        assert_ne!(json(e)["symbol"], "SYN0001");
    }

    // TC1: an id from the future (an earlier run of the server, whose
    // sequences were higher) gets the whole snapshot.
    let (_, fresh) = events(server.addr, "symbols=*", Some(u64::MAX - 1), 1).await;
    assert_eq!(json(&fresh[0])["snapshot"], SYMBOLS);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_refusals() {
    let server = synthetic_server().await;
    for (request, status, reason) in [
        // TC0: no symbols.
        ("GET /sse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "symbols="),
        // TC1: an unknown symbol, named.
        ("GET /sse?symbols=SYN0000,NOPE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "NOPE"),
        // TC2: an unknown channel, named.
        ("GET /sse?symbols=*&channels=book.7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "book.7"),
        // TC2b: a throttle out of its range.
        ("GET /sse?symbols=*&throttle_ms=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "throttle_ms 5"),
        // TC3: not a GET.
        ("POST /sse?symbols=* HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405, "GET"),
    ] {
        let (got, text) = http_get(server.addr, request).await;
        assert_eq!(got, status, "{text}");
        assert!(text.contains(reason), "{text}");
    }
    // An open stream ends when the server shuts down, and stop() does not
    // wait the shutdown timeout out for it.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /sse?symbols=* HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut first));
    assert!(read.await.expect("the stream's head").unwrap() > 0);
    tokio::time::timeout(Duration::from_secs(3), server.stop())
        .await
        .expect("shutdown with an open event stream");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("the stream ends")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_closes_its_connection() {
    let server = start(ServeConfig {
        feeds: vec![format!("synthetic:symbols={SYMBOLS},rate=20000")],
        stall_timeout_ms: 300,
        // Far longer than the wait below: an idle keep-alive connection is
        // not what ends this one.
        handshake_timeout_ms: 120_000,
        ..ServeConfig::default()
    })
    .await;
    let m = &server.market.metrics;
    // The default receive buffer: a small fixed one can leave the window,
    // after the stall, smaller than the server's segment size, and reading
    // what was queued then crawls at one segment per persist timeout (see
    // the WebSocket stall test in `limits.rs`).
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /sse?symbols=* HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Not a byte read: the stream stalls, and its connection must go with
    // it rather than wait, kept alive, behind bytes never read.
    common::eventually(Duration::from_secs(10), "the stall", || {
        m.slow_client_closes_total.get() == 1
    })
    .await;
    common::eventually(Duration::from_secs(10), "the connection closed", || {
        m.tcp_connections.get() == 0
    })
    .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the socket ends");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_serves_book_channels() {
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=3,rate=2000,book=20".into()],
        ..ServeConfig::default()
    })
    .await;
    common::eventually(Duration::from_secs(10), "every book has a state", || {
        (0..SYMBOLS).all(|s| server.market.books.with(s, |b| b.book_seq > 0))
    })
    .await;
    let (head, events) = events(server.addr, "symbols=*&channels=book.5", None, 60).await;
    assert!(head.contains("text/event-stream"), "{head}");
    let msgs: Vec<serde_json::Value> = events.iter().map(json).collect();
    // TC0: the ack names the channel; then only book.5 messages (and the
    // definitions): no quote, no trade.
    assert_eq!(msgs[0]["type"], "ack");
    assert_eq!(msgs[0]["channels"], serde_json::json!(["book.5"]));
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut books = 0;
    for (e, m) in events.iter().zip(&msgs).skip(1) {
        match m["type"].as_str().unwrap() {
            "symbol" => continue,
            "book" => {}
            other => panic!("{other} on a book channel: {m}"),
        }
        books += 1;
        // TC1: each a whole top 5, uncrossed, with an event id, newer per
        // symbol than the one before.
        assert_eq!(
            (m["channel"].as_str(), m["snapshot"].as_bool()),
            (Some("book.5"), Some(true))
        );
        let (bids, asks) = (m["bids"].as_array().unwrap(), m["asks"].as_array().unwrap());
        assert_eq!((bids.len(), asks.len()), (5, 5), "{m}");
        let px = |l: &serde_json::Value| l[0].as_str().unwrap().parse::<f64>().unwrap();
        assert!(px(&bids[0]) < px(&asks[0]), "{m}");
        assert!(bids.windows(2).all(|w| px(&w[0]) > px(&w[1])), "{m}");
        assert!(asks.windows(2).all(|w| px(&w[0]) < px(&w[1])), "{m}");
        assert_eq!(e.id, m["seq"].as_u64());
        let seq = m["book_seq"].as_u64().unwrap();
        let symbol = m["symbol"].as_str().unwrap().to_owned();
        assert!(last.get(&symbol).is_none_or(|&l| seq > l), "{m}");
        last.insert(symbol, seq);
    }
    assert!(books > 40, "{books} book messages");
    server.stop().await;
}

/// `&throttle_ms=` on a stream: the ack echoes it, and at 2,000 updates a
/// second over 4 symbols (about 500 a second of SYN0000) a 200 ms throttle
/// lets through about five quotes a second, never going back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_throttles_a_stream() {
    let server = synthetic_server().await;
    let started = tokio::time::Instant::now();
    let (_, evs) = events(server.addr, "symbols=SYN0000&throttle_ms=200", None, 30).await;
    let elapsed = started.elapsed();
    let ack = json(&evs[0]);
    assert_eq!(
        (ack["type"].as_str(), ack["throttle_ms"].as_u64()),
        (Some("ack"), Some(200))
    );
    let quotes: Vec<u64> = evs
        .iter()
        .map(json)
        .filter(|m| m["type"] == "quote")
        .map(|m| m["symbol_seq"].as_u64().unwrap())
        .collect();
    assert!(quotes.windows(2).all(|w| w[0] < w[1]), "{quotes:?}");
    // Quotes come at most one per 200 ms (the snapshot's counts as one),
    // trades besides them.
    let most = 2 + (elapsed.as_millis() / 200) as usize;
    assert!(
        quotes.len() <= most,
        "{} quotes in {elapsed:?}",
        quotes.len()
    );
    server.stop().await;
}
