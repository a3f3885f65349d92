//! `/poll` through the real server: the first answer is the snapshot; an
//! answer `since` a sequence holds every trade after it and the newest
//! quote, exactly what a WebSocket client got over the same stretch; a
//! poll with nothing new waits, and is answered empty at its timeout; a
//! `since` the ring no longer holds is answered with a `conflated` notice
//! and the newest values; bad requests get a status and a reason.

use std::time::{Duration, Instant};

use serde_json::Value;
use tickwire::config::ServeConfig;

mod common;

use common::*;

/// GET `/poll?{query}`: the status, the answer as `{"next":N,
/// "messages":[...]}` (Value::Null if it is not NDJSON), and the raw text.
async fn poll(addr: std::net::SocketAddr, query: &str) -> (u16, Value, String) {
    let (status, text) = http_get(addr, &format!("GET /poll?{query} HTTP/1.0\r\n\r\n")).await;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut lines = body.lines().map(serde_json::from_str::<Value>);
    let json = match lines.next() {
        Some(Ok(head)) if head["type"] == "poll" => {
            let messages: Vec<Value> = lines.map(Result::unwrap).collect();
            serde_json::json!({"next": head["next"], "messages": messages})
        }
        _ => Value::Null,
    };
    (status, json, text)
}

fn messages(v: &Value) -> &Vec<Value> {
    v["messages"].as_array().expect("messages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answers_every_trade_and_the_newest_quote_since_its_sequence() {
    let server = start(ServeConfig {
        feeds: vec!["synthetic:symbols=4,rate=2000".into()],
        ..ServeConfig::default()
    })
    .await;
    common::eventually(Duration::from_secs(10), "every symbol has a value", || {
        (0..4).all(|s| server.market.lvc.get(s).is_some())
    })
    .await;
    let mut ws = Client::connect(server.addr, "tickwire.v1.json").await;
    ws.send(r#"{"op":"subscribe","symbols":["SYN0000"]}"#).await;
    ws.next_control().await;
    // TC0: the first poll: the ack, the definition, the newest quote.
    let (status, first, text) = poll(server.addr, "symbols=SYN0000").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("content-type: application/x-ndjson"),
        "{text}"
    );
    let m = messages(&first);
    assert_eq!(m[0]["type"], "ack");
    assert_eq!(m[1]["type"], "symbol");
    assert!(m[2..].iter().all(|m| m["symbol"] == "SYN0000"));
    let since = first["next"].as_u64().unwrap();
    // TC1: since then: every trade, the newest quote, in order, once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, second, text) = poll(server.addr, &format!("symbols=SYN0000&since={since}")).await;
    assert_eq!(status, 200, "{text}");
    let next = second["next"].as_u64().unwrap();
    let got = messages(&second);
    assert_eq!(got[0]["type"], "symbol");
    let seqs: Vec<u64> = got[1..]
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(
        seqs.iter().all(|&s| s > since && s <= next),
        "{seqs:?} not in ({since}, {next}]"
    );
    // The WebSocket client's view of the same stretch.
    let mut trades = Vec::new();
    let mut newest_quote = None;
    loop {
        let m = ws.next().await;
        let Some(seq) = m.seq() else { continue };
        if seq > next {
            break;
        }
        if seq <= since {
            continue;
        }
        match m {
            Msg::Trade { seq, .. } => trades.push(seq),
            Msg::Quote { seq, .. } => newest_quote = Some(seq),
            _ => {}
        }
    }
    let polled_trades: Vec<u64> = got[1..]
        .iter()
        .filter(|m| m["type"] == "trade")
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    let polled_quotes: Vec<u64> = got[1..]
        .iter()
        .filter(|m| m["type"] == "quote")
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(trades.len() > 3, "{} trades in 300 ms", trades.len());
    assert_eq!(polled_trades, trades);
    assert_eq!(polled_quotes, newest_quote.into_iter().collect::<Vec<_>>());
    // TC2: bad requests.
    for (query, status, reason) in [
        ("since=1", 400, "symbols="),
        ("symbols=SYN0000&since=x", 400, "since="),
        ("symbols=NOPE", 400, "NOPE"),
        ("symbols=*&channels=book.7", 400, "book.7"),
    ] {
        let (got, _, text) = poll(server.addr, query).await;
        assert_eq!(got, status, "{query}: {text}");
        assert!(text.contains(reason), "{query}: {text}");
    }
    let (got, text) = http_get(
        server.addr,
        "POST /poll?symbols=* HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(got, 405, "{text}");
    let (_, metrics) = http_get(server.addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(metric(&metrics, "tickwire_poll_requests_total"), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_waits_for_a_change_or_its_timeout_and_a_lost_since_is_conflated() {
    // A small ring, a recording that ends: then nothing changes.
    let server = start(ServeConfig {
        feeds: vec![bundled_path()],
        speed: "max".into(),
        ring_capacity: 1024,
        max_lag_updates: 512,
        ..ServeConfig::default()
    })
    .await;
    let (_, first, _) = poll(server.addr, "symbols=*").await;
    let mut next = first["next"].as_u64().unwrap();
    // Wait for the replay to end (the tail stops moving).
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tail = server.market.ring.tail();
        if tail == next {
            break;
        }
        next = tail;
    }
    assert!(next > 2048, "the recording outgrows the ring");
    // TC0: nothing after `next`: answered empty at the timeout.
    let started = Instant::now();
    let (status, empty, _) = poll(
        server.addr,
        &format!("symbols=*&since={next}&timeout_ms=400"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(messages(&empty).len(), 0);
    assert_eq!(empty["next"].as_u64(), Some(next));
    // TC1: a sequence the ring no longer holds: a conflated notice, then
    // the newest of each symbol, from the cache.
    let (_, lost, _) = poll(server.addr, "symbols=*&since=1").await;
    let m = messages(&lost);
    assert_eq!(m[0]["type"], "conflated");
    assert_eq!(m[0]["dropped"].as_u64(), Some(next - 1));
    let names: Vec<&str> = m
        .iter()
        .filter(|m| m["type"] == "symbol")
        .map(|m| m["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), server.market.symbols.len());
    for s in 0..server.market.symbols.len() as u32 {
        let newest = server
            .market
            .lvc
            .values(s)
            .in_order(true, true)
            .last()
            .unwrap();
        assert!(
            m.iter().any(|m| m["seq"].as_u64() == Some(newest.seq)),
            "symbol {s}"
        );
    }
    assert_eq!(lost["next"].as_u64(), Some(next));
    // TC2: a waiting poll ends when the server shuts down, not at its
    // timeout.
    let addr = server.addr;
    let waiting = tokio::spawn(async move { poll(addr, &format!("symbols=*&since={next}")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.stop().await;
    let (status, answer, _) = waiting.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(status, 200);
    assert_eq!(messages(&answer).len(), 0);
}
