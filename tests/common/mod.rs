//! Test helpers: start the real server on port 0, connect real WebSocket
//! clients, and decode what they receive exactly as docs/PROTOCOL.md says.
#![allow(dead_code)]

pub mod raw;
pub mod tls;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickwire::config::ServeConfig;
use tickwire::decimal::Fixed;
use tickwire::server::{self, Running};
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
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
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
    Control(serde_json::Value),
    Closed(Option<(u16, String)>),
}

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

/// A client that decodes both subprotocols into [`Msg`].
pub struct Client {
    pub ws: Ws,
    /// Symbol definitions received: id -> (name, price decimals, size decimals).
    pub symbols: HashMap<u32, (String, u8, u8)>,
}

fn u64_at(p: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(p[o..o + 8].try_into().unwrap())
}

fn i64_at(p: &[u8], o: usize) -> i64 {
    i64::from_le_bytes(p[o..o + 8].try_into().unwrap())
}

impl Client {
    /// A client over an already open WebSocket (wss, extra headers).
    pub fn new(ws: Ws) -> Client {
        Client {
            ws,
            symbols: HashMap::new(),
        }
    }

    pub async fn connect(addr: std::net::SocketAddr, subprotocol: &str) -> Client {
        Client {
            ws: connect(addr, subprotocol).await,
            symbols: HashMap::new(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        send(&mut self.ws, text).await;
    }

    /// The next message, or None on timeout.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Msg> {
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
                Message::Binary(b) => return Some(self.decode_binary(&b)),
                Message::Text(t) => return Some(self.decode_json(t.as_str())),
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

    /// The next control (JSON, non-market-data) message, skipping data.
    pub async fn next_control(&mut self) -> serde_json::Value {
        loop {
            match self.next().await {
                Msg::Control(v) => return v,
                Msg::Closed(c) => panic!("closed while waiting for a control message: {c:?}"),
                _ => {}
            }
        }
    }

    fn fixed(&self, id: u32, v: i64, price: bool) -> String {
        let (_, pd, sd) = self
            .symbols
            .get(&id)
            .unwrap_or_else(|| panic!("data for symbol {id} before its definition"));
        let decimals = if price { *pd } else { *sd };
        Fixed {
            mantissa: v,
            decimals,
        }
        .to_string()
    }

    fn decode_binary(&mut self, p: &[u8]) -> Msg {
        match p[0] {
            3 => {
                let id = u32::from_le_bytes(p[4..8].try_into().unwrap());
                let len = p[3] as usize;
                assert_eq!(p.len(), 8 + len);
                let name = String::from_utf8(p[8..].to_vec()).unwrap();
                self.symbols.insert(id, (name.clone(), p[1], p[2]));
                Msg::Symbol {
                    id,
                    name,
                    price_decimals: p[1],
                    size_decimals: p[2],
                }
            }
            1 => {
                assert_eq!(p.len(), 80);
                let id = u32::from_le_bytes(p[4..8].try_into().unwrap());
                // Flags: bit 0 the bid size is unknown, bit 1 the ask size;
                // an unknown size's mantissa is 0.
                let flags = u16::from_le_bytes([p[2], p[3]]);
                assert_eq!(flags & !0b11, 0, "undefined quote flags {flags:#x}");
                let size = |bit: u16, o: usize| {
                    if flags & bit == 0 {
                        return Some(self.fixed(id, i64_at(p, o), false));
                    }
                    assert_eq!(i64_at(p, o), 0, "unknown size with a mantissa");
                    None
                };
                Msg::Quote {
                    id,
                    seq: u64_at(p, 8),
                    symbol_seq: u64_at(p, 16),
                    receive_ts: u64_at(p, 32),
                    publish_ts: u64_at(p, 40),
                    bid: self.fixed(id, i64_at(p, 48), true),
                    bid_size: size(1, 56),
                    ask: self.fixed(id, i64_at(p, 64), true),
                    ask_size: size(2, 72),
                }
            }
            2 => {
                assert_eq!(p.len(), 64);
                assert_eq!(&p[2..4], &[0, 0], "a trade's flags");
                let id = u32::from_le_bytes(p[4..8].try_into().unwrap());
                Msg::Trade {
                    id,
                    seq: u64_at(p, 8),
                    symbol_seq: u64_at(p, 16),
                    receive_ts: u64_at(p, 32),
                    publish_ts: u64_at(p, 40),
                    price: self.fixed(id, i64_at(p, 48), true),
                    size: self.fixed(id, i64_at(p, 56), false),
                    side: ["unknown", "buy", "sell"][p[1] as usize].to_owned(),
                }
            }
            4 => {
                assert_eq!(p.len(), 48);
                let id = u32::from_le_bytes(p[4..8].try_into().unwrap());
                assert!(self.symbols.contains_key(&id), "status before definition");
                let reason = match p[1] {
                    0 => None,
                    1 => Some("gap"),
                    2 => Some("disconnected"),
                    3 => Some("silent"),
                    r => panic!("unknown status {r}"),
                };
                Msg::Status {
                    id,
                    seq: u64_at(p, 8),
                    symbol_seq: u64_at(p, 16),
                    stale: p[1] != 0,
                    reason: reason.map(str::to_owned),
                }
            }
            t => panic!("unknown binary message type {t}"),
        }
    }

    fn decode_json(&mut self, text: &str) -> Msg {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        // A size is a string, or `null` when unknown; never absent.
        let size = |k: &str| match &v[k] {
            serde_json::Value::Null => {
                assert!(v.get(k).is_some(), "no {k} in {v}");
                None
            }
            x => Some(x.as_str().unwrap().to_owned()),
        };
        let n = |k: &str| v[k].as_u64().unwrap();
        match v["type"].as_str().unwrap() {
            "symbol" => {
                let id = n("id") as u32;
                let (pd, sd) = (n("price_decimals") as u8, n("size_decimals") as u8);
                self.symbols.insert(id, (s("symbol"), pd, sd));
                Msg::Symbol {
                    id,
                    name: s("symbol"),
                    price_decimals: pd,
                    size_decimals: sd,
                }
            }
            "quote" => {
                assert!(self.symbols.contains_key(&(n("id") as u32)));
                Msg::Quote {
                    id: n("id") as u32,
                    seq: n("seq"),
                    symbol_seq: n("symbol_seq"),
                    receive_ts: n("receive_ts"),
                    publish_ts: n("publish_ts"),
                    bid: s("bid"),
                    bid_size: size("bid_size"),
                    ask: s("ask"),
                    ask_size: size("ask_size"),
                }
            }
            "trade" => {
                assert!(self.symbols.contains_key(&(n("id") as u32)));
                Msg::Trade {
                    id: n("id") as u32,
                    seq: n("seq"),
                    symbol_seq: n("symbol_seq"),
                    receive_ts: n("receive_ts"),
                    publish_ts: n("publish_ts"),
                    price: s("price"),
                    size: s("size"),
                    side: s("side"),
                }
            }
            "status" => {
                assert!(self.symbols.contains_key(&(n("id") as u32)));
                let stale = match v["state"].as_str().unwrap() {
                    "stale" => true,
                    "live" => false,
                    other => panic!("unknown state {other}"),
                };
                Msg::Status {
                    id: n("id") as u32,
                    seq: n("seq"),
                    symbol_seq: n("symbol_seq"),
                    stale,
                    reason: v["reason"].as_str().map(str::to_owned),
                }
            }
            _ => Msg::Control(v),
        }
    }

    pub fn name(&self, id: u32) -> &str {
        &self.symbols[&id].0
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
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Waits until `done` holds, looking every 10 ms; fails with `what` once
/// `limit` has passed, so that a bug fails the test instead of hanging it.
pub async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
