//! `throttle_ms` through the real server with real clients: a throttled
//! subscriber gets, per symbol, at most one quote per interval, the
//! newest, and every trade an unthrottled one gets; a symbol subscribed
//! again without a throttle comes at full rate; a bad throttle gets 4008.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tickwire::config::ServeConfig;

mod common;

use common::*;

const SYMBOLS: u32 = 5;

/// Per symbol: the quotes' symbol_seqs, the trades' seqs.
#[derive(Default, Debug)]
struct Seen {
    quotes: Vec<u64>,
    trades: BTreeSet<u64>,
    last_seq: u64,
}

/// What one client got in a window, and the ring sequence of its first
/// message after its first subscription's snapshot (`snapshot`: its size,
/// if the ack has been read already): from there on it has
/// every trade of the symbols it takes. (A snapshot holds each symbol's
/// newest update, a trade or a quote, so a trade older than the
/// subscription may be in it or not.)
async fn collect(
    client: &mut Client,
    window: Duration,
    may_conflate: bool,
    mut snapshot: Option<u64>,
) -> (HashMap<String, Seen>, Option<u64>) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut first_live = None;
    let mut live = |seq: u64, snapshot: &mut Option<u64>| match snapshot {
        Some(0) => {
            first_live.get_or_insert(seq);
        }
        Some(n) => *n -= 1,
        None => panic!("an update before the first subscription's ack"),
    };
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(m) = tokio::time::timeout_at(deadline, client.next()).await {
        match m {
            Msg::Quote {
                id,
                seq,
                symbol_seq,
                ..
            } => {
                live(seq, &mut snapshot);
                let s = seen.entry(client.name(id).to_owned()).or_default();
                assert!(
                    s.quotes.last().is_none_or(|&q| q < symbol_seq),
                    "{s:?} then {symbol_seq}"
                );
                s.quotes.push(symbol_seq);
                s.last_seq = seq;
            }
            Msg::Trade { id, seq, .. } => {
                live(seq, &mut snapshot);
                let s = seen.entry(client.name(id).to_owned()).or_default();
                s.trades.insert(seq);
                s.last_seq = seq;
            }
            Msg::Control(v) => {
                assert!(may_conflate || v["type"] != "conflated", "{v}");
                if v["type"] == "ack" && snapshot.is_none() {
                    snapshot = v["snapshot"].as_u64();
                }
            }
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    (seen, first_live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_subscriber_gets_the_newest_quote_per_interval_and_every_trade() {
    let server = start(ServeConfig {
        feeds: vec![format!("synthetic:symbols={SYMBOLS},rate=5000")],
        ..ServeConfig::default()
    })
    .await;
    common::eventually(Duration::from_secs(10), "every symbol has a value", || {
        (0..SYMBOLS).all(|s| server.market.lvc.get(s).is_some())
    })
    .await;
    let mut full = Client::connect(server.addr, "tickwire.v1").await;
    full.send(r#"{"op":"subscribe","symbols":["*"],"id":1}"#)
        .await;
    let mut slow = Client::connect(server.addr, "tickwire.v1").await;
    slow.send(r#"{"op":"subscribe","symbols":["*"],"throttle_ms":100,"id":1}"#)
        .await;
    let ack = slow.next_control().await;
    assert_eq!(
        (ack["type"].as_str(), ack["throttle_ms"].as_u64()),
        (Some("ack"), Some(100))
    );
    // SYN0000 again, without a throttle: it comes at full rate.
    slow.send(r#"{"op":"subscribe","symbols":["SYN0000"],"id":2}"#)
        .await;
    let window = Duration::from_millis(1500);
    let snapshot = ack["snapshot"].as_u64();
    let ((full_seen, full_from), (slow_seen, slow_from)) = tokio::join!(
        collect(&mut full, window, false, None),
        collect(&mut slow, window, false, snapshot)
    );
    let lo = full_from
        .zip(slow_from)
        .map(|(a, b)| a.max(b))
        .expect("updates after both snapshots");
    for (name, s) in &slow_seen {
        let f = &full_seen[name];
        if name == "SYN0000" {
            // TC0: unthrottled: about 1,000 quotes a second.
            assert!(s.quotes.len() > 300, "{name}: {} quotes", s.quotes.len());
            continue;
        }
        // TC1: throttled: at most one quote per 100 ms (plus the snapshot
        // and the interval the window cuts), and not nothing.
        assert!(s.quotes.len() <= 18, "{name}: {} quotes", s.quotes.len());
        assert!(s.quotes.len() >= 5, "{name}: {} quotes", s.quotes.len());
        // TC2: every trade the unthrottled client got up to the last the
        // throttled one was sent of this symbol.
        let want: Vec<u64> = f.trades.range(lo..=s.last_seq).copied().collect();
        let got: Vec<u64> = s.trades.range(lo..=s.last_seq).copied().collect();
        assert!(want.len() > 20, "{name}: {} trades", want.len());
        assert_eq!(got, want, "{name}");
        // TC3: far fewer quotes than the unthrottled client.
        assert!(f.quotes.len() > 10 * s.quotes.len(), "{name}");
    }
    assert_eq!(slow_seen.len(), SYMBOLS as usize);
    // TC4: out of range: 4008, counted; the connection stays.
    slow.send(r#"{"op":"subscribe","symbols":["*"],"throttle_ms":70000,"id":3}"#)
        .await;
    let err = loop {
        let v = slow.next_control().await;
        if v["type"] == "error" {
            break v;
        }
    };
    assert_eq!(
        (err["code"].as_u64(), err["id"].as_u64()),
        (Some(4008), Some(3))
    );
    let (_, metrics) = http_get(server.addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert_eq!(
        metric(
            &metrics,
            "tickwire_protocol_errors_total{code=\"4008\",reason=\"invalid_option\"}"
        ),
        1
    );
    server.stop().await;
}

/// The newest, not just any: once the feed has stopped, the last quote a
/// throttled client gets of each symbol is the symbol's last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_quote_after_the_feed_ends_is_the_newest() {
    let server = start(ServeConfig {
        feeds: vec![bundled_path()],
        speed: "max".into(),
        // The replay starts once the client has subscribed.
        min_subscribers: 1,
        ..ServeConfig::default()
    })
    .await;
    let mut slow = Client::connect(server.addr, "tickwire.v1").await;
    slow.send(r#"{"op":"subscribe","symbols":["*"],"throttle_ms":1000}"#)
        .await;
    // Held for a second, then the newest: a conflation (the replay may lap
    // the reader) ends the same way.
    let (seen, _) = collect(&mut slow, Duration::from_millis(3000), true, None).await;
    assert!(!seen.is_empty());
    for (name, s) in &seen {
        let id = server.market.symbols.get_by_name(name).unwrap().id;
        let last = server
            .market
            .lvc
            .values(id)
            .in_order(true, false)
            .filter(|p| !p.is_status)
            .last()
            .unwrap();
        assert_eq!(s.quotes.last(), Some(&last.symbol_seq), "{name}");
    }
    server.stop().await;
}
