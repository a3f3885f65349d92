//! Test helpers: start the real server on port 0, connect real WebSocket
//! clients, and decode what they receive with the library's one decoder
//! (`tickwire::wire::decode`, pinned to docs/PROTOCOL.md by its unit tests).
#![allow(dead_code)]

pub mod binary;
pub mod raw;
pub mod temp;
pub mod tls;

// Not every test binary uses each.
#[allow(unused_imports)]
pub use binary::Binary;
#[allow(unused_imports)]
pub use temp::TempDir;

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickwire::config::ServeConfig;
use tickwire::server::{self, Running};
use tickwire::wire::decode::{Decoder, ServerMessage};
use tickwire::wire::encode::side_name;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn start(config: ServeConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    server::start(listener, config.validate().expect("valid test config")).unwrap()
}

/// The recording bundled in the repo (and in the binary).
pub fn bundled_path() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/feeds");
    let file = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .expect("a .jsonl.gz recording in feeds/");
    file.to_string_lossy().into_owned()
}

pub async fn connect(addr: std::net::SocketAddr, subprotocol: &str) -> Ws {
    connect_at(addr, "/ws", subprotocol).await
}

/// [`connect`] to `path` (with its query).
pub async fn connect_at(addr: std::net::SocketAddr, path: &str, subprotocol: &str) -> Ws {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("a WebSocket handshake within 10 s")
    .unwrap();
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        subprotocol
    );
    ws
}

pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// A decoded server message.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Symbol {
        id: u32,
        name: String,
        price_decimals: u8,
        size_decimals: u8,
    },
    /// Prices and sizes as decimal strings; a size is `None` when the server
    /// says it is unknown.
    Quote {
        id: u32,
        seq: u64,
        symbol_seq: u64,
        publish_ts: u64,
        receive_ts: u64,
        bid: String,
        bid_size: Option<String>,
        ask: String,
        ask_size: Option<String>,
    },
    Trade {
        id: u32,
        seq: u64,
        symbol_seq: u64,
        publish_ts: u64,
        receive_ts: u64,
        price: String,
        size: String,
        side: String,
    },
    /// A symbol turned stale (`reason`: gap, disconnected, silent) or live.
    Status {
        id: u32,
        seq: u64,
        symbol_seq: u64,
        stale: bool,
        reason: Option<String>,
    },
    /// A book snapshot or change; levels as decimal strings, best first.
    Book {
        id: u32,
        seq: u64,
        book_seq: u64,
        depth: u16,
        snapshot: bool,
        bids: Vec<(String, String)>,
        asks: Vec<(String, String)>,
    },
    /// A candle (one bar) or candles (several) message; bars as
    /// [`BarText`].
    Candle {
        id: u32,
        seq: u64,
        candle_seq: u64,
        interval: String,
        list: bool,
        snapshot: bool,
        bars: Vec<BarText>,
    },
    Control(serde_json::Value),
    Closed(Option<(u16, String)>),
}

/// A candle bar: start, open, high, low, close, volume as decimal text,
/// trades, closed.
pub type BarText = (u64, [String; 5], u64, bool);

impl Msg {
    pub fn symbol_seq(&self) -> Option<(u32, u64)> {
        match self {
            Msg::Quote { id, symbol_seq, .. } | Msg::Trade { id, symbol_seq, .. } => {
                Some((*id, *symbol_seq))
            }
            _ => None,
        }
    }

    pub fn seq(&self) -> Option<u64> {
        match self {
            Msg::Quote { seq, .. } | Msg::Trade { seq, .. } | Msg::Status { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// The library's decoded message in the shape the tests compare: numbers
/// as the decimal text the JSON subprotocol carries (the decoder takes
/// only that exact text, so JSON reads back as sent).
impl From<ServerMessage> for Msg {
    fn from(m: ServerMessage) -> Msg {
        match m {
            ServerMessage::Symbol(d) => Msg::Symbol {
                id: d.id,
                name: d.name,
                price_decimals: d.price_decimals,
                size_decimals: d.size_decimals,
            },
            ServerMessage::Quote(q) => Msg::Quote {
                id: q.header.symbol,
                seq: q.header.seq,
                symbol_seq: q.header.symbol_seq,
                publish_ts: q.header.publish_ts_ns,
                receive_ts: q.header.receive_ts_ns,
                bid: q.bid.to_string(),
                bid_size: q.bid_size.map(|s| s.to_string()),
                ask: q.ask.to_string(),
                ask_size: q.ask_size.map(|s| s.to_string()),
            },
            ServerMessage::Trade(t) => Msg::Trade {
                id: t.header.symbol,
                seq: t.header.seq,
                symbol_seq: t.header.symbol_seq,
                publish_ts: t.header.publish_ts_ns,
                receive_ts: t.header.receive_ts_ns,
                price: t.price.to_string(),
                size: t.size.to_string(),
                side: side_name(t.side).to_owned(),
            },
            ServerMessage::Status(s) => Msg::Status {
                id: s.header.symbol,
                seq: s.header.seq,
                symbol_seq: s.header.symbol_seq,
                stale: s.status.is_stale(),
                reason: s.status.is_stale().then(|| s.status.reason().to_owned()),
            },
            ServerMessage::Book(b) => {
                let text = |l: &[(tickwire::decimal::Fixed, tickwire::decimal::Fixed)]| {
                    l.iter()
                        .map(|(p, s)| (p.to_string(), s.to_string()))
                        .collect()
                };
                Msg::Book {
                    id: b.header.symbol,
                    seq: b.header.seq,
                    book_seq: b.header.symbol_seq,
                    depth: b.depth,
                    snapshot: b.snapshot,
                    bids: text(&b.bids),
                    asks: text(&b.asks),
                }
            }
            ServerMessage::Candle(c) => Msg::Candle {
                id: c.header.symbol,
                seq: c.header.seq,
                candle_seq: c.header.symbol_seq,
                interval: tickwire::candle::INTERVALS[c.interval].0.to_owned(),
                list: c.list,
                snapshot: c.snapshot,
                bars: c
                    .bars
                    .iter()
                    .map(|b| {
                        let text = [b.open, b.high, b.low, b.close].map(|p| p.to_string());
                        let [o, h, l, cl] = text;
                        (
                            b.start_ts_ns,
                            [o, h, l, cl, b.volume.to_string()],
                            b.trades,
                            b.closed,
                        )
                    })
                    .collect(),
            },
            ServerMessage::Control(v) => Msg::Control(v),
        }
    }
}

/// A client that decodes both subprotocols into [`Msg`], with the
/// library's decoder ([`tickwire::wire::decode`]): a message it refuses fails the
/// test.
pub struct Client {
    pub ws: Ws,
    /// Remembers the symbol definitions received.
    pub decoder: Decoder,
    /// The rest of a WebSocket message that carried several (a batch).
    pending: std::collections::VecDeque<Msg>,
    /// WebSocket data messages received, batches counted once.
    pub ws_messages: usize,
}

impl Client {
    /// A client over an already open WebSocket (wss, extra headers).
    pub fn new(ws: Ws) -> Client {
        Client {
            ws,
            decoder: Decoder::new(),
            pending: std::collections::VecDeque::new(),
            ws_messages: 0,
        }
    }

    pub async fn connect(addr: std::net::SocketAddr, subprotocol: &str) -> Client {
        Client::new(connect(addr, subprotocol).await)
    }

    pub async fn send(&mut self, text: &str) {
        send(&mut self.ws, text).await;
    }

    /// The next message, or None on timeout.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Msg> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        loop {
            let msg = match tokio::time::timeout(limit, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Msg::Closed(None)),
                Ok(Some(Err(e))) => {
                    eprintln!("client read error: {e}");
                    return Some(Msg::Closed(None));
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Binary(b) => return Some(self.decode_batch(true, &b)),
                Message::Text(t) => return Some(self.decode_batch(false, t.as_bytes())),
                Message::Close(c) => {
                    return Some(Msg::Closed(
                        c.map(|c| (u16::from(c.code), c.reason.to_string())),
                    ))
                }
                _ => continue,
            }
        }
    }

    pub async fn next(&mut self) -> Msg {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    /// The next `n` quotes and trades, skipping other messages; fails if
    /// the connection closes first (each message within [`Client::next`]'s
    /// 10 s).
    pub async fn data(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next().await {
                m @ (Msg::Quote { .. } | Msg::Trade { .. }) => out.push(m),
                Msg::Closed(close) => {
                    panic!("closed after {} of {n} updates: {close:?}", out.len())
                }
                _ => {}
            }
        }
        out
    }

    /// Reads on, skipping whatever comes first, until the connection
    /// closes: the close code and reason, if the server sent a close frame.
    /// Fails once `limit` has passed: data may keep coming all the while,
    /// and a server that never closes must fail the test, not hang it.
    pub async fn until_closed(&mut self, limit: Duration) -> Option<(u16, String)> {
        let closed = async {
            loop {
                if let Msg::Closed(c) = self.next().await {
                    return c;
                }
            }
        };
        tokio::time::timeout(limit, closed)
            .await
            .unwrap_or_else(|_| panic!("not closed within {limit:?}"))
    }

    /// The next control (JSON, non-market-data) message, skipping data;
    /// fails unless one comes within 10 s (data may keep coming all the
    /// while: a reply that never comes must fail the test, not hang it).
    pub async fn next_control(&mut self) -> serde_json::Value {
        let control = async {
            loop {
                match self.next().await {
                    Msg::Control(v) => return v,
                    Msg::Closed(c) => panic!("closed while waiting for a control message: {c:?}"),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), control)
            .await
            .expect("a control message within 10 s")
    }

    /// One message through the library's decoder; anything it refuses
    /// fails the test.
    /// One WebSocket message: one tickwire message, or several end to end
    /// (binary, each as long as its type says) or one per line (JSON), as
    /// `/ws?batch=1` sends them. The first is returned, the rest kept.
    fn decode_batch(&mut self, binary: bool, payload: &[u8]) -> Msg {
        self.ws_messages += 1;
        let mut parts = Vec::new();
        if binary {
            let mut at = 0;
            while let Some(len) = tickwire::wire::decode::binary_len(&payload[at..]) {
                let Some(part) = payload.get(at..at + len) else {
                    break;
                };
                parts.push(part);
                at += len;
                if at == payload.len() {
                    break;
                }
            }
            if at != payload.len() {
                // Not a batch of whole messages: decoded whole, the decoder says why.
                parts = vec![payload];
            }
        } else {
            parts.extend(payload.split(|&b| b == b'\n'));
        }
        let mut msgs = parts.into_iter().map(|p| self.decode(binary, p));
        let first = msgs.next().expect("a message has a part");
        let rest: Vec<Msg> = msgs.collect();
        self.pending.extend(rest);
        first
    }

    fn decode(&mut self, binary: bool, payload: &[u8]) -> Msg {
        match self.decoder.decode_message(binary, payload) {
            Ok(m) => Msg::from(m),
            Err(e) => panic!(
                "not a tickwire.v1 message ({e}): {:?}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            ),
        }
    }

    pub fn name(&self, id: u32) -> &str {
        &self
            .decoder
            .symbol(id)
            .unwrap_or_else(|| panic!("symbol {id} was never defined"))
            .name
    }
}

pub fn close_code(code: CloseCode) -> u16 {
    u16::from(code)
}

/// Reads a metric's value from `/metrics` text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .parse()
        .unwrap()
}

/// The value of the first sample of a labelled metric (`name{...} N`),
/// such as a feed's counters.
pub fn labelled_metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

/// GET over a raw socket, returning (status, headers+body text).
pub async fn http_get(addr: std::net::SocketAddr, raw_request: &str) -> (u16, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    exchange(s, raw_request).await
}

/// Writes `raw_request` on `s` and reads the answer until the server closes
/// (at most 5 s): (status, headers+body text).
pub async fn exchange<S>(mut s: S, raw_request: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(raw_request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

pub async fn metrics_text(addr: std::net::SocketAddr) -> String {
    http_get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .1
}

/// Raises the soft open-files limit to the hard limit, for tests with
/// thousands of sockets.
pub fn raise_fd_limit() {
    // The library's, which the server and the bench client use.
    let _ = tickwire::raise_open_files_limit();
}

/// Waits until `done` holds, looking every 10 ms, for at most `limit`;
/// returns whether it held (for a caller that asserts with what it saw).
pub async fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `done` holds, looking every 10 ms; fails with `what` once
/// `limit` has passed, so that a bug fails the test instead of hanging it.
pub async fn eventually(limit: Duration, what: &str, done: impl FnMut() -> bool) {
    assert!(within(limit, done).await, "not within {limit:?}: {what}");
}

/// Waits until `probe` gives `Ok`, looking every 20 ms; fails with `what`
/// and the last `Err` it gave once `limit` has passed (a bug fails the test
/// instead of hanging it).
pub async fn eventually_async<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "not within {limit:?}: {what}: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocks the thread until `done` holds, looking every 10 ms, for at most
/// `limit`; returns whether it held (the caller asserts, with what it saw).
pub fn eventually_blocking(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Until every feed of the server at `addr` reports `finished` (its
/// source is read to the end; the publisher may still be taking the last
/// updates).
pub async fn feeds_finished(addr: std::net::SocketAddr) {
    eventually_async(Duration::from_secs(60), "the feed to finish", || async {
        let (_, text) = http_get(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let feeds = health["feeds"].as_array().cloned().unwrap_or_default();
        if !feeds.is_empty() && feeds.iter().all(|f| f["state"] == "finished") {
            Ok(())
        } else {
            Err(body)
        }
    })
    .await;
}
