//! Live venue feeds against a fake exchange: a small WebSocket server in
//! the test that speaks the venue's protocol (Binance combined streams,
//! `SUBSCRIBE` and pings; Coinbase Exchange `subscribe`, `subscriptions`,
//! `error`, heartbeats) and replays a real recording from `tests/data`. In
//! separate tests it drops the connection, stalls, skips a sequence number,
//! sends garbage, refuses the subscription. tickwire (the real server, its
//! real WebSocket client) must ride through all of it: exact prices to its
//! own clients, stale / live statuses at the right places, and the counters
//! at `/healthz`.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tickwire::config::ServeConfig;
use tickwire::decimal::Fixed;
use tickwire::feed::{read_all, FeedSpec};
use tickwire::symbols::{Normalizer, SymbolTable};
use tickwire::update::{Side, UpdateKind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const BINANCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/binance-spot-BTCUSDT-20230405-head300.jsonl"
);
const COINBASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/coinbase-advtrade-BTC-ETH-USD-head300.jsonl.zst"
);

// ---- what clients should see ----

/// One thing a client of tickwire saw, by symbol name, prices as text.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// Bid, bid size, ask, ask size; a size is `None` when unknown.
    Quote(String, [Option<String>; 4]),
    Trade(String, String, String, String),
    Stale(String, String),
    Live(String),
}

impl Seen {
    fn is_data(&self) -> bool {
        matches!(self, Seen::Quote(..) | Seen::Trade(..))
    }
}

/// What tickwire's replay path makes of `messages` (one venue message per
/// line): the oracle the live path must match exactly.
fn expected(messages: &[String]) -> Vec<Seen> {
    let dir = TempDir::new("upstream");
    let path = dir.write("venue.jsonl", messages.join("\n"));
    let table = SymbolTable::new();
    let mut normalizer = Normalizer::new(table.clone());
    let updates = read_all(&FeedSpec::File(path), &mut normalizer).expect("readable");
    updates
        .iter()
        // The quotes and trades: books are served on their own channels.
        .filter(|u| !matches!(u.kind, UpdateKind::Level { .. }))
        .map(|u| {
            let def = table.get(u.symbol).unwrap();
            let (pd, sd) = (def.price_decimals, def.size_decimals);
            let f = |mantissa, decimals| Fixed { mantissa, decimals }.to_string();
            let opt = |m: Option<i64>, d| m.map(|m| f(m, d));
            let name = def.name.to_string();
            match u.kind {
                UpdateKind::Quote {
                    bid_px,
                    bid_sz,
                    ask_px,
                    ask_sz,
                } => Seen::Quote(
                    name,
                    [
                        Some(f(bid_px, pd)),
                        opt(bid_sz, sd),
                        Some(f(ask_px, pd)),
                        opt(ask_sz, sd),
                    ],
                ),
                UpdateKind::Trade { px, sz, side } => {
                    let side = match side {
                        Side::Buy => "buy",
                        Side::Sell => "sell",
                        Side::Unknown => "unknown",
                    };
                    Seen::Trade(name, f(px, pd), f(sz, sd), side.into())
                }
                other => panic!("a recording yielded {other:?}"),
            }
        })
        .collect()
}

/// Reads from a tickwire client until `data` updates have arrived, then
/// `linger` more for statuses that follow them.
async fn collect(client: &mut Client, data: usize, linger: Duration) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut n = 0;
    loop {
        let limit = if n < data {
            Duration::from_secs(15)
        } else {
            linger
        };
        let Some(m) = client.next_within(limit).await else {
            assert!(n >= data, "only {n} of {data} updates arrived: {seen:#?}");
            return seen;
        };
        let s = match m {
            Msg::Quote {
                id,
                bid,
                bid_size,
                ask,
                ask_size,
                ..
            } => Seen::Quote(
                client.name(id).into(),
                [Some(bid), bid_size, Some(ask), ask_size],
            ),
            Msg::Trade {
                id,
                price,
                size,
                side,
                ..
            } => Seen::Trade(client.name(id).into(), price, size, side),
            Msg::Status {
                id,
                stale: true,
                reason,
                ..
            } => Seen::Stale(client.name(id).into(), reason.unwrap()),
            Msg::Status { id, .. } => Seen::Live(client.name(id).into()),
            Msg::Closed(c) => panic!("tickwire closed the client: {c:?}"),
            Msg::Control(v) => {
                assert_ne!(v["type"], "conflated", "unexpected conflation");
                continue;
            }
            Msg::Symbol { .. } | Msg::Book { .. } | Msg::Candle { .. } => continue,
        };
        n += usize::from(s.is_data());
        seen.push(s);
    }
}

/// The data in `seen`, and each status with the number of updates before it.
fn split(seen: &[Seen]) -> (Vec<Seen>, Vec<(usize, Seen)>) {
    let mut data = Vec::new();
    let mut statuses = Vec::new();
    for s in seen {
        if s.is_data() {
            data.push(s.clone());
        } else {
            statuses.push((data.len(), s.clone()));
        }
    }
    (data, statuses)
}

// ---- the fake exchange ----

/// One step of a fake venue connection.
#[derive(Debug, Clone)]
enum Act {
    Send(String),
    Binary(Vec<u8>),
    /// Read the client's next text message and report it.
    ExpectText,
    /// Ping with this payload; report the pong's payload.
    Ping(Vec<u8>),
    /// A close frame (Binance's 24 h disconnect), then the end.
    Close,
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Neither read nor write (so no pong either) for a long time.
    Stall,
    /// Send nothing, but read (which answers pings) for this long.
    Quiet(Duration),
    /// One text message of spaces in `frames` fragments of `bytes` each.
    Fragmented {
        frames: usize,
        bytes: usize,
    },
}

#[derive(Debug)]
enum Event {
    Connected {
        path: String,
    },
    Text(String),
    Pong(Vec<u8>),
    /// A TLS handshake (a venue over TLS only): done, or why it failed.
    Tls(Result<(), String>),
}

/// Serves connection `i` with `scripts[i]` (the last script for any after
/// them); after its script a connection keeps reading (which answers
/// pings) until the client leaves.
async fn fake_venue(scripts: Vec<Vec<Act>>) -> (SocketAddr, mpsc::UnboundedReceiver<Event>) {
    fake_venue_on(scripts, None).await
}

/// [`fake_venue`], over TLS with `tls` when given: every TLS handshake's
/// outcome is reported too.
async fn fake_venue_on(
    scripts: Vec<Vec<Act>>,
    tls: Option<TlsAcceptor>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Event>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for i in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let script = scripts[i.min(scripts.len() - 1)].clone();
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_script(tcp, script, tx).await,
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => {
                            let _ = tx.send(Event::Tls(Ok(())));
                            serve_script(stream, script, tx).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Event::Tls(Err(e.to_string())));
                        }
                    },
                }
            });
        }
    });
    (addr, rx)
}

/// One fake venue connection: the WebSocket handshake, then `script`.
async fn serve_script<S>(stream: S, script: Vec<Act>, tx: mpsc::UnboundedSender<Event>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut path = String::new();
    // The callback's type, large error and all, is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
        path = req.uri().to_string();
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let _ = tx.send(Event::Connected { path });
    for act in script {
        match act {
            Act::Send(text) => {
                if ws.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            Act::Binary(b) => {
                if ws.send(Message::binary(b)).await.is_err() {
                    return;
                }
            }
            Act::ExpectText => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let _ = tx.send(Event::Text(t.to_string()));
                        break;
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            },
            Act::Ping(payload) => {
                if ws.send(Message::Ping(payload.into())).await.is_err() {
                    return;
                }
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Pong(p))) => {
                            let _ = tx.send(Event::Pong(p.to_vec()));
                            break;
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
            }
            Act::Close => {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "24 hours".into(),
                    }))
                    .await;
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
            Act::Drop => return,
            Act::Stall => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            Act::Quiet(d) => {
                let read = async { while let Some(Ok(_)) = ws.next().await {} };
                let _ = tokio::time::timeout(d, read).await;
            }
            Act::Fragmented { frames, bytes } => {
                use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
                use tokio_tungstenite::tungstenite::protocol::frame::Frame;
                for i in 0..frames {
                    let opcode = if i == 0 { Data::Text } else { Data::Continue };
                    let f =
                        Frame::message(vec![b' '; bytes], OpCode::Data(opcode), i + 1 == frames);
                    if ws.send(Message::Frame(f)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    while let Some(Ok(_)) = ws.next().await {}
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(15), events.recv())
        .await
        .expect("an event from the fake venue within 15 s")
        .expect("the fake venue is running")
}

// ---- tickwire ----

/// tickwire with one live feed, held until a client subscribes, with
/// short timeouts: the venue is down after `silence_ms` of nothing.
async fn tickwire(feed: String, silence_ms: u64) -> (tickwire::server::Running, Client) {
    tickwire_ca(feed, silence_ms, None).await
}

/// [`tickwire`], trusting the CA certificates in `upstream_ca_file` too.
async fn tickwire_ca(
    feed: String,
    silence_ms: u64,
    upstream_ca_file: Option<PathBuf>,
) -> (tickwire::server::Running, Client) {
    let server = start(ServeConfig {
        feeds: vec![feed],
        upstream_ca_file,
        min_subscribers: 1,
        upstream_silence_timeout_ms: silence_ms,
        upstream_backoff_initial_ms: 20,
        upstream_backoff_max_ms: 100,
        ..ServeConfig::default()
    })
    .await;
    let mut client = Client::connect(server.addr, "tickwire.v1").await;
    client.send(r#"{"op":"subscribe","symbols":["*"]}"#).await;
    (server, client)
}

async fn healthz(addr: SocketAddr) -> serde_json::Value {
    let (status, text) = http_get(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str::<serde_json::Value>(body).unwrap()["feeds"][0].clone()
}

/// The recorded Binance messages, exactly as the venue sent them (the
/// capture's timestamp prefix removed).
fn binance_messages() -> Vec<String> {
    std::fs::read_to_string(BINANCE)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.to_owned())
        .collect()
}

fn sends(messages: &[String]) -> Vec<Act> {
    messages.iter().cloned().map(Act::Send).collect()
}

const BINANCE_URL_FEED: &str =
    "/stream?streams=btcusdt@bookTicker/btcusdt@trade/btcusdt@depth@100ms";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_combined_streams_serve_exact_prices_and_answer_pings() {
    let messages = binance_messages();
    let mut script = vec![Act::Ping(b"binance-ping-1".to_vec())];
    script.extend(sends(&messages));
    let (venue, mut events) = fake_venue(vec![script]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 5_000).await;

    // TC0: subscribed by URL, the venue's parameters untouched.
    let Event::Connected { path } = next_event(&mut events).await else {
        panic!("expected a connection");
    };
    assert_eq!(path, BINANCE_URL_FEED);
    // TC1: the ping is answered with its own payload.
    let Event::Pong(p) = next_event(&mut events).await else {
        panic!("expected a pong");
    };
    assert_eq!(p, b"binance-ping-1");
    // TC2: every quote and trade of the recording, in order, exact.
    let want = expected(&messages);
    assert_eq!(
        want.len(),
        129 + 104,
        "bookTickers and trades of the excerpt"
    );
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    assert_eq!(seen, want, "no statuses, nothing else");
    // The recording's first trade and quote, by hand.
    assert_eq!(
        seen[0],
        Seen::Trade(
            "BTCUSDT".into(),
            "28165.47000000".into(),
            "0.00056000".into(),
            "sell".into()
        )
    );
    assert_eq!(
        seen[1],
        Seen::Quote(
            "BTCUSDT".into(),
            [
                Some("28165.47000000".into()),
                Some("7.98680000".into()),
                Some("28165.48000000".into()),
                Some("3.26888000".into())
            ]
        )
    );
    // TC3: /healthz reports the feed up, with no reconnects or gaps.
    let h = healthz(server.addr).await;
    assert_eq!(h["connected"], true, "{h}");
    assert_eq!(
        (h["reconnects"].as_u64(), h["gaps"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(h["last_message_age_ms"].as_u64().is_some(), "{h}");
    assert_eq!(h["updates"].as_u64(), Some(want.len() as u64));
    let m = metrics_text(server.addr).await;
    assert!(m.contains("tickwire_feed_skipped_total{feed="), "{m}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_subscribe_message_and_bare_payloads() {
    // The `/ws` endpoint sends bare payloads, after a SUBSCRIBE.
    let bare: Vec<String> = binance_messages()
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            v["data"].to_string()
        })
        .collect();
    let mut script = vec![
        Act::ExpectText,
        Act::Send(r#"{"result":null,"id":1}"#.into()),
    ];
    script.extend(sends(&bare[..100]));
    let (venue, mut events) = fake_venue(vec![script]).await;
    let (server, mut client) = tickwire(
        format!("binance:ws://{venue}/ws?subscribe=btcusdt@bookTicker/btcusdt@trade"),
        5_000,
    )
    .await;
    let Event::Connected { path } = next_event(&mut events).await else {
        panic!("expected a connection");
    };
    assert_eq!(path, "/ws", "our own parameter stays out of the URL");
    let Event::Text(sub) = next_event(&mut events).await else {
        panic!("expected the SUBSCRIBE");
    };
    let sub: serde_json::Value = serde_json::from_str(&sub).unwrap();
    assert_eq!(sub["method"], "SUBSCRIBE");
    assert_eq!(
        sub["params"],
        serde_json::json!(["btcusdt@bookTicker", "btcusdt@trade"])
    );
    let want = expected(&bare[..100]);
    let seen = collect(&mut client, want.len(), Duration::from_millis(100)).await;
    assert_eq!(seen, want);
    server.stop().await;
}

/// Asserts `seen` is `want` with exactly `statuses` among the updates, at
/// those positions (updates before each).
fn assert_stream(seen: &[Seen], want: &[Seen], statuses: &[(usize, Seen)]) {
    let (data, got) = split(seen);
    assert_eq!(data.len(), want.len(), "update count");
    assert_eq!(data, want, "the updates, exactly and in order");
    assert_eq!(got, statuses, "the statuses and where they came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_and_a_24h_close_are_reconnected_and_resends_filtered() {
    let messages = binance_messages();
    // Connection 1 drops after 100 messages; connection 2 resends from the
    // start (what a venue's replay looks like) and closes after 200 as
    // Binance does after 24 h; connection 3 resends from 150 to the end.
    let mut first = sends(&messages[..100]);
    first.push(Act::Drop);
    let mut second = sends(&messages[..200]);
    second.push(Act::Close);
    let third = sends(&messages[150..]);
    let (venue, mut events) = fake_venue(vec![first, second, third]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 5_000).await;
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    let at_100 = expected(&messages[..100]).len();
    let at_200 = expected(&messages[..200]).len();
    let b = || "BTCUSDT".to_string();
    assert_stream(
        &seen,
        &want,
        &[
            (at_100, Seen::Stale(b(), "disconnected".into())),
            (at_100, Seen::Live(b())),
            (at_200, Seen::Stale(b(), "disconnected".into())),
            (at_200, Seen::Live(b())),
        ],
    );
    for _ in 0..3 {
        assert!(matches!(
            next_event(&mut events).await,
            Event::Connected { .. }
        ));
    }
    let h = healthz(server.addr).await;
    assert_eq!(h["reconnects"].as_u64(), Some(2), "{h}");
    assert_eq!(h["gaps"].as_u64(), Some(0), "{h}");
    assert_eq!(h["connected"], true, "{h}");
    let m = metrics_text(server.addr).await;
    let outdated = labelled_metric(&m, "tickwire_feed_outdated_total");
    // Resent quotes and trades: 100 messages of connection 2 and 50 of 3,
    // less their depth updates (skipped, not numbered).
    assert_eq!(
        outdated as usize,
        at_100 + (at_200 - expected(&messages[..150]).len())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_venue_is_down_after_the_timeout() {
    let messages = binance_messages();
    let mut first = sends(&messages[..120]);
    first.push(Act::Stall);
    let second = sends(&messages[120..]);
    let (venue, _events) = fake_venue(vec![first, second]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 600).await;
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    let at = expected(&messages[..120]).len();
    assert_stream(
        &seen,
        &want,
        &[
            (at, Seen::Stale("BTCUSDT".into(), "silent".into())),
            (at, Seen::Live("BTCUSDT".into())),
        ],
    );
    let h = healthz(server.addr).await;
    assert_eq!(h["reconnects"].as_u64(), Some(1), "{h}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_venue_that_answers_pings_stays_connected() {
    let messages = binance_messages();
    // Quiet for two and a half silence timeouts, but answering tickwire's
    // pings.
    let mut script = sends(&messages[..120]);
    script.push(Act::Quiet(Duration::from_millis(2500)));
    script.extend(sends(&messages[120..]));
    let (venue, _events) = fake_venue(vec![script]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 1_000).await;
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    assert_eq!(seen, want, "no status, nothing lost");
    let h = healthz(server.addr).await;
    assert_eq!(h["reconnects"].as_u64(), Some(0), "{h}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_id_gap_marks_the_symbol_stale_until_the_next_update() {
    let mut messages = binance_messages();
    // Remove the 20th trade: the 21st reveals the gap.
    let trades: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i].contains("@trade"))
        .collect();
    messages.remove(trades[19]);
    let (venue, _events) = fake_venue(vec![sends(&messages)]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 5_000).await;
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    // The revealing trade is update number `at`: stale just before it, live
    // just before the one after it.
    let at = expected(&messages[..trades[20] - 1]).len();
    assert!(matches!(want[at], Seen::Trade(..)));
    assert_stream(
        &seen,
        &want,
        &[
            (at, Seen::Stale("BTCUSDT".into(), "gap".into())),
            (at + 1, Seen::Live("BTCUSDT".into())),
        ],
    );
    let h = healthz(server.addr).await;
    assert_eq!(h["gaps"].as_u64(), Some(1), "{h}");
    assert_eq!(h["reconnects"].as_u64(), Some(0), "{h}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_counted_and_change_nothing() {
    let messages = binance_messages();
    let garbage = [
        Act::Send("{not json".into()),
        Act::Send("[1,2,3]".into()),
        // A trade with a price that is not a decimal.
        Act::Send(
            r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","p":"12x","q":"1","T":1,"m":true}}"#
                .into(),
        ),
        // A quote with a field missing.
        Act::Send(r#"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1.0"}}"#.into()),
        Act::Binary(vec![0xde, 0xad]),
    ];
    let mut script = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if i % 50 == 25 {
            script.extend(garbage.iter().cloned());
        }
        script.push(Act::Send(m.clone()));
    }
    let (venue, _events) = fake_venue(vec![script]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 5_000).await;
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    assert_eq!(seen, want, "every update exact, no status");
    let h = healthz(server.addr).await;
    assert_eq!(h["reconnects"].as_u64(), Some(0), "{h}");
    let m = metrics_text(server.addr).await;
    let rejected = labelled_metric(&m, "tickwire_feed_rejected_total");
    // Six insertions of five; the stale quote (u=1) is old rather than
    // malformed after the first quote, so it is counted as outdated instead.
    let insertions = (0..messages.len()).filter(|i| i % 50 == 25).count() as u64;
    assert!(rejected >= insertions * 4, "{rejected} of {insertions} x 5");
    server.stop().await;
}

/// `message` with one of its prices or sizes made negative (the `k`th
/// field of the kind, in turn), or None if it carries none.
fn negated(message: &str, k: usize) -> Option<String> {
    let fields: &[&str] = if message.contains("@bookTicker") {
        &["b", "B", "a", "A"]
    } else if message.contains("@trade") {
        &["p", "q"]
    } else {
        return None;
    };
    let key = format!("\"{}\":\"", fields[k % fields.len()]);
    message
        .contains(&key)
        .then(|| message.replacen(&key, &format!("{key}-"), 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_prices_and_sizes_from_the_venue_are_rejected() {
    let messages = binance_messages();
    // Before some real messages, the very first among them (the symbol's
    // first update), a copy with one number negative and the same update
    // or trade id: only the check on the value can keep it out.
    let mut script = Vec::new();
    let mut inserted = 0;
    for (i, m) in messages.iter().enumerate() {
        if i == 0 || i % 20 == 3 {
            if let Some(bad) = negated(m, inserted) {
                script.push(Act::Send(bad));
                inserted += 1;
            }
        }
        script.push(Act::Send(m.clone()));
    }
    assert!(inserted >= 8, "{inserted}");
    let (venue, _events) = fake_venue(vec![script]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 5_000).await;
    // TC0: exactly the real updates, none of the negated ones.
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    assert_eq!(seen, want, "every update exact, no negative one");
    // TC1: each negated copy is counted as rejected, and nothing else.
    let m = metrics_text(server.addr).await;
    let rejected = labelled_metric(&m, "tickwire_feed_rejected_total");
    assert_eq!(rejected, inserted as u64);
    server.stop().await;
}

// ---- Coinbase Exchange ----

/// Coinbase Exchange ws-feed messages with the prices, sizes, sides, times
/// and trade ids of the Coinbase recording (captured from Advanced Trade;
/// no Exchange capture exists here): its tickers become `ticker`s, its
/// newest snapshot trade a `last_match`, its live trades `match`es (oldest
/// first, each trade id once, as the Exchange sends them). The Exchange's
/// per-product `sequence` is not in the capture and is numbered here.
fn coinbase_messages() -> Vec<String> {
    use std::collections::HashMap;
    use std::io::BufRead;
    let raw = zstd::stream::read::Decoder::new(std::fs::File::open(COINBASE).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut sequence: HashMap<String, u64> = HashMap::new();
    let mut last_trade: HashMap<String, u64> = HashMap::new();
    let mut next_seq = |product: &str| {
        let s = sequence.entry(product.to_owned()).or_insert(50_000_000_000);
        *s += 7;
        *s
    };
    for line in std::io::BufReader::new(raw).lines() {
        let rec: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if rec["t"] != "recv" {
            continue;
        }
        let msg: serde_json::Value = serde_json::from_str(rec["data"].as_str().unwrap()).unwrap();
        match msg["channel"].as_str() {
            Some("ticker") => {
                for t in msg["events"][0]["tickers"].as_array().unwrap() {
                    let p = t["product_id"].as_str().unwrap();
                    out.push(
                        serde_json::json!({
                            "type": "ticker", "sequence": next_seq(p), "product_id": p,
                            "price": t["price"], "best_bid": t["best_bid"],
                            "best_bid_size": t["best_bid_quantity"], "best_ask": t["best_ask"],
                            "best_ask_size": t["best_ask_quantity"], "time": msg["timestamp"],
                        })
                        .to_string(),
                    );
                }
            }
            Some("market_trades") => {
                for e in msg["events"].as_array().unwrap() {
                    let mut trades = e["trades"].as_array().unwrap().clone();
                    let kind = if e["type"] == "snapshot" {
                        trades.truncate(1);
                        "last_match"
                    } else {
                        "match"
                    };
                    for t in trades.iter().rev() {
                        let p = t["product_id"].as_str().unwrap();
                        let id: u64 = t["trade_id"].as_str().unwrap().parse().unwrap();
                        let last = last_trade.entry(p.to_owned()).or_insert(0);
                        if id <= *last {
                            continue;
                        }
                        *last = id;
                        out.push(
                            serde_json::json!({
                                "type": kind, "trade_id": id, "sequence": next_seq(p),
                                "maker_order_id": "m", "taker_order_id": "t",
                                "time": t["time"], "product_id": p, "size": t["size"],
                                "price": t["price"], "side": t["side"].as_str().unwrap().to_lowercase(),
                            })
                            .to_string(),
                        );
                    }
                }
            }
            Some("heartbeats") => {
                for (p, id) in &last_trade {
                    out.push(
                        serde_json::json!({
                            "type": "heartbeat", "sequence": next_seq(p), "last_trade_id": id,
                            "product_id": p, "time": msg["timestamp"],
                        })
                        .to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    out
}

const SUBSCRIPTIONS: &str = r#"{"type":"subscriptions","channels":[{"name":"ticker","product_ids":["BTC-USD","ETH-USD"]},{"name":"matches","product_ids":["BTC-USD","ETH-USD"]},{"name":"heartbeat","product_ids":["BTC-USD","ETH-USD"]}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbase_refused_then_subscribed_serves_exact_prices() {
    let messages = coinbase_messages();
    let refused = vec![
        Act::ExpectText,
        Act::Send(
            r#"{"type":"error","message":"Failed to subscribe","reason":"BTC-USD is delisted"}"#
                .into(),
        ),
    ];
    let mut accepted = vec![Act::ExpectText, Act::Send(SUBSCRIPTIONS.into())];
    accepted.extend(sends(&messages));
    let (venue, mut events) = fake_venue(vec![refused, accepted]).await;
    let (server, mut client) = tickwire(
        format!(
            "coinbase:ws://{venue}/?products=BTC-USD,ETH-USD&channels=ticker,matches,heartbeat"
        ),
        5_000,
    )
    .await;
    for _ in 0..2 {
        let Event::Connected { path } = next_event(&mut events).await else {
            panic!("expected a connection");
        };
        assert_eq!(path, "/");
        let Event::Text(sub) = next_event(&mut events).await else {
            panic!("expected the subscribe");
        };
        let sub: serde_json::Value = serde_json::from_str(&sub).unwrap();
        assert_eq!(
            sub,
            serde_json::json!({"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],
                "channels":["ticker","matches","heartbeat"]})
        );
    }
    let want = expected(&messages);
    assert!(want.len() > 60, "{}", want.len());
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    assert_eq!(seen, want);
    assert!(seen.contains(&Seen::Quote(
        "BTC-USD".into(),
        [
            Some("65083.66000000".into()),
            Some("0.20371215".into()),
            Some("65083.67000000".into()),
            Some("0.24290402".into())
        ]
    )));
    let h = healthz(server.addr).await;
    assert_eq!(h["reconnects"].as_u64(), Some(1), "{h}");
    assert_eq!(h["gaps"].as_u64(), Some(0), "{h}");
    let m = metrics_text(server.addr).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("tickwire_feed_refusals_total{") && l.ends_with(" 1")),
        "{m}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbase_gaps_in_trade_ids_and_heartbeats() {
    let mut messages = coinbase_messages();
    // TC0: a match missing: the next match of the product reveals it.
    let matches: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i].contains(r#""type":"match""#) && messages[i].contains("BTC-USD"))
        .collect();
    messages.remove(matches[3]);
    let revealing = expected(&messages[..matches[4] - 1]).len();
    // TC1: a heartbeat that says a later ETH-USD trade happened, at the end.
    let last_eth = messages
        .iter()
        .rev()
        .find_map(|m| {
            let v: serde_json::Value = serde_json::from_str(m).unwrap();
            (v["type"] == "match" && v["product_id"] == "ETH-USD")
                .then(|| v["trade_id"].as_u64().unwrap())
        })
        .unwrap();
    messages.push(format!(
        r#"{{"type":"heartbeat","sequence":1,"last_trade_id":{},"product_id":"ETH-USD","time":"2026-08-09T21:06:00Z"}}"#,
        last_eth + 2
    ));
    let mut script = vec![Act::ExpectText, Act::Send(SUBSCRIPTIONS.into())];
    script.extend(sends(&messages));
    let (venue, _events) = fake_venue(vec![script]).await;
    let (server, mut client) = tickwire(
        format!("coinbase:ws://{venue}?products=BTC-USD,ETH-USD"),
        5_000,
    )
    .await;
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(500)).await;
    let (data, statuses) = split(&seen);
    assert_eq!(data, want);
    // The BTC-USD update after the revealing match turns it live again.
    let next_btc = (revealing + 1..want.len())
        .find(|&i| matches!(&want[i], Seen::Quote(s, _) | Seen::Trade(s, ..) if s == "BTC-USD"))
        .unwrap();
    assert_eq!(
        statuses,
        [
            (revealing, Seen::Stale("BTC-USD".into(), "gap".into())),
            (next_btc, Seen::Live("BTC-USD".into())),
            (want.len(), Seen::Stale("ETH-USD".into(), "gap".into())),
        ]
    );
    let h = healthz(server.addr).await;
    assert_eq!(h["gaps"].as_u64(), Some(2), "{h}");
    // TC2: a client that subscribes now learns ETH-USD is stale, from the
    // cache, after its last update.
    let mut late = Client::connect(server.addr, "tickwire.v1.json").await;
    late.send(r#"{"op":"subscribe","symbols":["ETH-USD"]}"#)
        .await;
    let ack = late.next_control().await;
    assert_eq!(ack["snapshot"], 2, "{ack}");
    let snapshot = collect(&mut late, 1, Duration::from_millis(100)).await;
    assert!(snapshot[0].is_data());
    assert_eq!(snapshot[1], Seen::Stale("ETH-USD".into(), "gap".into()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_to_a_server_without_tls_is_retried_with_backoff() {
    // A venue that accepts TCP and says nothing TLS: every handshake fails,
    // and the feed keeps trying (with backoff) without failing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let venue = listener.local_addr().unwrap();
    let (tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tx.send(());
            drop(tcp);
        }
    });
    let (server, _client) =
        tickwire(format!("binance:wss://{venue}/ws?subscribe=a@trade"), 5_000).await;
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(15), accepted.recv())
            .await
            .expect("another attempt within 15 s");
    }
    let h = healthz(server.addr).await;
    assert_eq!(h["state"], "running", "{h}");
    assert_eq!(h["connected"], false, "{h}");
    assert_eq!(h["reconnects"].as_u64(), Some(0), "never connected: {h}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_over_wss_trusting_an_added_ca_serves_exact_prices() {
    // A fake Binance over TLS with a certificate for localhost that no
    // public root signed; tickwire is told to trust it by upstream_ca_file.
    let cert = tls::self_signed();
    let dir = TempDir::new("upstream-ca");
    let (ca_file, _key) = tls::write_pair(&dir.0, &cert);
    let messages = binance_messages();
    let (venue, mut events) =
        fake_venue_on(vec![sends(&messages)], Some(tls::acceptor(&cert))).await;
    let feed = format!("binance:wss://localhost:{}{BINANCE_URL_FEED}", venue.port());
    let (server, mut client) = tickwire_ca(feed, 5_000, Some(ca_file)).await;
    // TC0: the TLS handshake succeeds, then the WebSocket one, on the URL's
    // path.
    let tls = next_event(&mut events).await;
    assert!(matches!(tls, Event::Tls(Ok(()))), "{tls:?}");
    let Event::Connected { path } = next_event(&mut events).await else {
        panic!("expected a connection");
    };
    assert_eq!(path, BINANCE_URL_FEED);
    // TC1: every quote and trade of the recording, in order, exact, as
    // over ws://.
    let want = expected(&messages);
    assert_eq!(want.len(), 129 + 104);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    assert_eq!(seen, want, "no statuses, nothing else");
    // TC2: /healthz: connected once, nothing lost.
    let h = healthz(server.addr).await;
    assert_eq!(h["connected"], true, "{h}");
    assert_eq!(h["reconnects"].as_u64(), Some(0), "{h}");
    assert_eq!(h["updates"].as_u64(), Some(want.len() as u64));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_to_an_untrusted_certificate_is_refused_and_retried() {
    // The same TLS venue, with no CA option, and with a CA file holding
    // another certificate: every handshake fails on the certificate, the
    // feed keeps trying, and the server serves on.
    let cert = tls::self_signed();
    let other = tls::self_signed();
    let dir = TempDir::new("upstream-other-ca");
    let (other_ca, _key) = tls::write_pair(&dir.0, &other);
    // The alert tickwire sends: no root has the certificate's issuer
    // (UnknownCA); or the other certificate has the same issuer name (rcgen's
    // default) but its key did not sign this one (DecryptError, rustls's
    // alert for a bad signature).
    for (ca, alert) in [(None, "UnknownCA"), (Some(other_ca), "DecryptError")] {
        let (venue, mut events) =
            fake_venue_on(vec![sends(&binance_messages())], Some(tls::acceptor(&cert))).await;
        let feed = format!("binance:wss://localhost:{}{BINANCE_URL_FEED}", venue.port());
        let (server, mut client) = tickwire_ca(feed, 5_000, ca.clone()).await;
        // TC0: three attempts in a row, each refused by tickwire on the
        // certificate; no WebSocket handshake ever.
        for _ in 0..3 {
            match next_event(&mut events).await {
                Event::Tls(Err(e)) => assert!(e.contains(alert), "{ca:?}: {e}"),
                other => panic!("{ca:?}: expected a refused handshake, got {other:?}"),
            }
        }
        // TC1: the feed is down and retrying, the server healthy.
        let h = healthz(server.addr).await;
        assert_eq!(h["state"], "running", "{h}");
        assert_eq!(h["connected"], false, "{h}");
        assert_eq!(h["reconnects"].as_u64(), Some(0), "never connected: {h}");
        assert_eq!(h["updates"].as_u64(), Some(0), "{h}");
        // TC2: its client is still served: a ping is answered, and nothing
        // else came.
        client.send(r#"{"op":"ping","id":7}"#).await;
        loop {
            match client.next_within(Duration::from_secs(5)).await {
                Some(Msg::Control(v)) if v["type"] == "pong" => {
                    assert_eq!(v["id"], 7, "{v}");
                    break;
                }
                // The subscription's ack.
                Some(Msg::Control(v)) if v["type"] == "ack" => {}
                other => panic!("{ca:?}: expected the pong, got {other:?}"),
            }
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_venue_messages_are_rejected_and_change_nothing() {
    let messages = binance_messages();
    let deep = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
    let garbage = [
        // TC0: nesting far past a worker's stack, bare and in the envelope.
        Act::Send(deep(200_000)),
        Act::Send(format!(
            r#"{{"stream":"btcusdt@trade","data":{}}}"#,
            deep(100_000)
        )),
        // TC1: objects, and just past the limit.
        Act::Send(format!(
            "{}{{}}{}",
            "{\"a\":".repeat(100_000),
            "}".repeat(100_000)
        )),
        Act::Send(deep(65)),
    ];
    let mut script = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if i == messages.len() / 2 {
            script.extend(garbage.iter().cloned());
        }
        script.push(Act::Send(m.clone()));
    }
    let (venue, _events) = fake_venue(vec![script]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 5_000).await;
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    assert_eq!(seen, want, "every update exact, no status");
    let h = healthz(server.addr).await;
    assert_eq!(h["reconnects"].as_u64(), Some(0), "{h}");
    let m = metrics_text(server.addr).await;
    let rejected = labelled_metric(&m, "tickwire_feed_rejected_total");
    assert_eq!(rejected, garbage.len() as u64);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_venue_message_over_16_mib_fails_the_connection_and_it_is_made_again() {
    let messages = binance_messages();
    // Connection 1: 100 messages, then one 17 MiB frame; connection 2: a
    // message of 20 fragments of 1 MiB; connection 3: the rest.
    let mut first = sends(&messages[..100]);
    first.push(Act::Send(" ".repeat(17 << 20)));
    let second = vec![Act::Fragmented {
        frames: 20,
        bytes: 1 << 20,
    }];
    let third = sends(&messages[100..]);
    let (venue, _events) = fake_venue(vec![first, second, third]).await;
    let (server, mut client) =
        tickwire(format!("binance:ws://{venue}{BINANCE_URL_FEED}"), 5_000).await;
    let want = expected(&messages);
    let seen = collect(&mut client, want.len(), Duration::from_millis(200)).await;
    let (data, _) = split(&seen);
    assert_eq!(data, want, "every update exact around the two failures");
    let h = healthz(server.addr).await;
    assert_eq!(h["reconnects"].as_u64(), Some(2), "{h}");
    server.stop().await;
}

// ---- order books from a live venue ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_coinbase_level2_book_is_served_from_its_snapshot_and_updates() {
    let mut script = vec![Act::ExpectText, Act::Send(SUBSCRIPTIONS.into())];
    script.extend(
        [
            // TC0: an update before the snapshot changes nothing.
            r#"{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z","changes":[["buy","10101.00","9.0"]]}"#,
            r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["10101.10","0.45054140"],["10100.00","1.0"]],"asks":[["10102.55","0.57753524"]]}"#,
            // TC1: then a new best bid and a removed ask level.
            r#"{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z","changes":[["buy","10101.80","0.162567"],["sell","10102.55","0"],["sell","10103.00","2.5"]]}"#,
        ]
        .map(|m| Act::Send(m.to_owned())),
    );
    let (venue, mut events) = fake_venue(vec![script]).await;
    let server = start(ServeConfig {
        feeds: vec![format!(
            "coinbase:ws://{venue}/?products=BTC-USD&channels=level2_batch,heartbeat"
        )],
        min_subscribers: 1,
        ..ServeConfig::default()
    })
    .await;
    let mut client = Client::connect(server.addr, "tickwire.v1").await;
    client
        .send(r#"{"op":"subscribe","symbols":["*"],"channels":["book"]}"#)
        .await;
    let _connected = next_event(&mut events).await;
    let Event::Text(sub) = next_event(&mut events).await else {
        panic!("expected the subscribe");
    };
    let sub: serde_json::Value = serde_json::from_str(&sub).unwrap();
    assert_eq!(
        sub["channels"],
        serde_json::json!(["level2_batch", "heartbeat"])
    );
    // The subscriber may take the symbol before or after the update: a
    // snapshot then the change, or one snapshot of both. Either way the
    // book it keeps ends the same, at book_seq 2.
    let mut bids: BTreeMap<String, String> = BTreeMap::new();
    let mut asks: BTreeMap<String, String> = BTreeMap::new();
    let mut book_seq = 0;
    while book_seq < 2 {
        match client.next().await {
            Msg::Book {
                snapshot,
                bids: b,
                asks: a,
                book_seq: n,
                ..
            } => {
                if snapshot {
                    bids.clear();
                    asks.clear();
                } else {
                    assert_eq!(n, book_seq + 1, "a change out of sequence");
                }
                book_seq = n;
                for (side, levels) in [(&mut bids, b), (&mut asks, a)] {
                    for (p, q) in levels {
                        if q.trim_end_matches('0').trim_end_matches('.') == "0" {
                            side.remove(&p);
                        } else {
                            side.insert(p, q);
                        }
                    }
                }
            }
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    let level = |p: &str, q: &str| (p.to_owned(), q.to_owned());
    assert_eq!(
        bids.into_iter().rev().collect::<Vec<_>>(),
        [
            level("10101.80000000", "0.16256700"),
            level("10101.10000000", "0.45054140"),
            level("10100.00000000", "1.00000000")
        ]
    );
    assert_eq!(
        asks.into_iter().collect::<Vec<_>>(),
        [level("10103.00000000", "2.50000000")]
    );
    server.stop().await;
}

/// A fake REST endpoint: answers the `n`th GET with `bodies[n]` (the last
/// one again after them), and reports each request line's target.
async fn fake_rest(bodies: Vec<String>) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for i in 0.. {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let body = bodies[i.min(bodies.len() - 1)].clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send(line.split(' ').nth(1).unwrap_or("").to_owned());
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
            });
        }
    });
    (addr, rx)
}

fn depth(first: u64, last: u64, bids: &str, asks: &str) -> Act {
    Act::Send(format!(
        r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1723161255308,"s":"BTCUSDT","U":{first},"u":{last},"b":{bids},"a":{asks}}}}}"#
    ))
}

/// A book message's (bids, asks) as (price, size) strings.
type Levels = (Vec<(String, String)>, Vec<(String, String)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_binance_book_syncs_to_the_rest_snapshot_and_resyncs_after_a_gap() {
    // The venue's diffs around two REST snapshots (lastUpdateId 8, then
    // 16): 1..5 is covered by the first, 6..10 straddles it, 14..15 skips
    // 13 (a gap: the book goes stale and is fetched again), 16..17 follows
    // the second. Whatever the order the fetches and the diffs meet in, the
    // books are the same.
    let (rest, mut requests) = fake_rest(vec![
        r#"{"lastUpdateId":8,"bids":[["100.00","1.0"],["99.00","1.0"]],"asks":[["101.00","1.0"],["102.00","1.0"]]}"#.into(),
        r#"{"lastUpdateId":16,"bids":[["98.00","7.0"]],"asks":[["103.00","7.0"]]}"#.into(),
    ])
    .await;
    let script = vec![
        depth(1, 5, r#"[["100.00","5.0"]]"#, "[]"),
        depth(6, 10, r#"[["100.00","2.0"]]"#, "[]"),
        Act::Quiet(Duration::from_millis(500)),
        depth(11, 12, "[]", r#"[["101.00","3.0"]]"#),
        Act::Quiet(Duration::from_millis(300)),
        depth(14, 15, r#"[["97.00","1.0"]]"#, "[]"),
        Act::Quiet(Duration::from_millis(500)),
        depth(16, 17, r#"[["98.00","8.0"]]"#, "[]"),
    ];
    let (venue, _events) = fake_venue(vec![script]).await;
    let server = start(ServeConfig {
        feeds: vec![format!(
            "binance:ws://{venue}/stream?streams=btcusdt@depth@100ms"
        )],
        upstream_rest_url: Some(format!("http://{rest}/api/v3/depth")),
        min_subscribers: 1,
        ..ServeConfig::default()
    })
    .await;
    let mut client = Client::connect(server.addr, "tickwire.v1.json").await;
    client
        .send(r#"{"op":"subscribe","symbols":["*"],"channels":["book.5"]}"#)
        .await;
    let s = |p: &str, q: &str| (p.to_owned(), q.to_owned());
    let synced: Levels = (
        vec![
            s("100.00000000", "2.00000000"),
            s("99.00000000", "1.00000000"),
        ],
        vec![
            s("101.00000000", "3.00000000"),
            s("102.00000000", "1.00000000"),
        ],
    );
    let resynced: Levels = (
        vec![s("98.00000000", "8.00000000")],
        vec![s("103.00000000", "7.00000000")],
    );
    // TC0: the book after the first snapshot and the diffs that follow
    // it; then stale for the gap; then the second snapshot's book, live.
    let mut seen = Vec::new();
    loop {
        match client.next().await {
            Msg::Book {
                depth: 5,
                bids,
                asks,
                ..
            } => {
                let done = (bids.clone(), asks.clone()) == resynced;
                seen.push(format!("book {bids:?} {asks:?}"));
                if done {
                    break;
                }
            }
            Msg::Status { stale, reason, .. } => seen.push(format!("status {stale} {reason:?}")),
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    let at = |want: &str| seen.iter().position(|x| x == want);
    let a =
        at(&format!("book {:?} {:?}", synced.0, synced.1)).unwrap_or_else(|| panic!("{seen:#?}"));
    let gap = at(r#"status true Some("book_gap")"#).unwrap_or_else(|| panic!("{seen:#?}"));
    let live = at("status false None").unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(a < gap && gap < live && live < seen.len() - 1, "{seen:#?}");
    // TC1: nothing from the stale book between the gap and the new
    // snapshot.
    assert!(
        seen[gap + 1..live].iter().all(|x| !x.starts_with("book")),
        "{seen:#?}"
    );
    // TC2: two REST requests, each for the symbol, at the given URL.
    for _ in 0..2 {
        let target = tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(target, "/api/v3/depth?symbol=BTCUSDT&limit=1000");
    }
    let m = metrics_text(server.addr).await;
    assert_eq!(metric(&m, "tickwire_book_resyncs_total"), 1);
    server.stop().await;
}
