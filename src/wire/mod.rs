//! The client-facing protocol: what clients may send, and the control
//! replies, error codes and close codes they get back. `docs/PROTOCOL.md` is
//! the specification; this file is its implementation.
//!
//! Control messages (client requests and the server's acks, errors and
//! notices) are small JSON text frames in both subprotocols. Market data
//! (symbol definitions, quotes, trades) is binary in `tickwire.v1` and JSON
//! text in `tickwire.v1.json`, and is encoded by [`crate::wire::encode`].

pub mod channel;
mod control;
pub mod decode;
pub mod deflate;
pub mod encode;
pub mod frame;

use bytes::Bytes;
use simd_json::prelude::*;

pub use self::channel::Channels;
pub use self::control::{control_ack, ReplayControl};
use self::encode::{write_json_str, write_u64, OPCODE_TEXT};

/// The binary subprotocol.
pub const SUBPROTOCOL_BINARY: &str = "tickwire.v1";
/// The JSON subprotocol.
pub const SUBPROTOCOL_JSON: &str = "tickwire.v1.json";

/// Which encoding a connection receives market data in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Binary,
    Json,
}

impl Format {
    /// Picks the first subprotocol the client offers that we speak. A client
    /// that offers none gets binary; one that offers only others is refused
    /// by the caller (see docs/PROTOCOL.md, "Handshake").
    pub fn negotiate(offered: Option<&str>) -> Result<Option<Format>, NoCommonSubprotocol> {
        let Some(offered) = offered else {
            return Ok(None);
        };
        for p in offered.split(',').map(str::trim) {
            match p {
                SUBPROTOCOL_BINARY => return Ok(Some(Format::Binary)),
                SUBPROTOCOL_JSON => return Ok(Some(Format::Json)),
                _ => {}
            }
        }
        Err(NoCommonSubprotocol)
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Format::Binary => SUBPROTOCOL_BINARY,
            Format::Json => SUBPROTOCOL_JSON,
        }
    }
}

/// The client offered subprotocols, none of them ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no supported subprotocol offered: use {SUBPROTOCOL_BINARY} or {SUBPROTOCOL_JSON}")]
pub struct NoCommonSubprotocol;

/// Error codes carried by `{"type":"error"}` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not JSON, not an object, missing or mistyped fields.
    MalformedMessage = 4000,
    /// `op` is not one we know.
    UnknownOp = 4001,
    /// A symbol in the request has never been seen by this server.
    UnknownSymbol = 4002,
    /// The request would take the connection past its subscription limit.
    TooManySymbols = 4003,
    /// A binary frame arrived; requests are JSON text.
    BinaryNotAccepted = 4004,
    /// The client sends messages faster than its inbound rate; this and
    /// further messages are dropped until it slows down.
    RateLimited = 4005,
    /// The connection's access token does not allow a requested symbol.
    Forbidden = 4006,
    UnknownChannel = 4007,
    /// A subscription option out of its documented range (`throttle_ms`).
    InvalidOption = 4008,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::MalformedMessage,
        ErrorCode::UnknownOp,
        ErrorCode::UnknownSymbol,
        ErrorCode::TooManySymbols,
        ErrorCode::BinaryNotAccepted,
        ErrorCode::RateLimited,
        ErrorCode::Forbidden,
        ErrorCode::UnknownChannel,
        ErrorCode::InvalidOption,
    ];

    /// Position in [`ErrorCode::ALL`] (the codes are not contiguous).
    pub fn index(self) -> usize {
        ErrorCode::ALL
            .iter()
            .position(|&c| c == self)
            .unwrap_or_default()
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::TooManySymbols => "too_many_symbols",
            ErrorCode::BinaryNotAccepted => "binary_not_accepted",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::InvalidOption => "invalid_option",
        }
    }
}

/// WebSocket close codes the server sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// The server is shutting down, or the client stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket framing rules.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client stopped reading for longer than the stall timeout, went on
    /// past its inbound rate, or sent a message in too many fragments.
    /// The client stopped reading for longer than the stall timeout, or
    /// its access token expired.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message (its frames together) was larger than the inbound limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// A parsed client request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the reply, so that clients can match replies to requests.
    pub id: Option<u64>,
    pub op: Op,
    /// The `channels` of a subscribe or unsubscribe, if it named any.
    pub channels: Option<Channels>,
    /// The `throttle_ms` of a subscribe, if it gave one: 0, or
    /// [`MIN_THROTTLE_MS`]..=[`MAX_THROTTLE_MS`].
    pub throttle_ms: Option<u16>,
}

/// The shortest interval a subscription may ask for, in milliseconds
/// (besides 0, no throttle).
pub const MIN_THROTTLE_MS: u16 = 10;
/// The longest.
pub const MAX_THROTTLE_MS: u16 = 60_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Subscribe(Symbols),
    Unsubscribe(Symbols),
    Ping,
    /// A replay session's control (`/replay`); refused on `/ws`.
    Replay(ReplayControl),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symbols {
    All,
    Names(Vec<String>),
}

/// A request the server refuses, with the code and reason it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub reason: String,
}

impl Refusal {
    pub fn new(id: Option<u64>, code: ErrorCode, reason: impl Into<String>) -> Self {
        Refusal {
            id,
            code,
            reason: reason.into(),
        }
    }
}

/// Parses one client text message.
pub fn parse_request(text: &[u8], max_symbols: usize) -> Result<Request, Refusal> {
    let malformed = |id, why: &str| Refusal::new(id, ErrorCode::MalformedMessage, why);
    let mut buf = text.to_vec();
    let value = crate::json::parse(&mut buf).map_err(|e| malformed(None, &e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| malformed(None, "a request must be a JSON object"))?;
    let id = match obj.get("id") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| malformed(None, "\"id\" must be a non-negative integer"))?,
        ),
    };
    let op = obj
        .get("op")
        .ok_or_else(|| malformed(id, "missing \"op\""))?
        .as_str()
        .ok_or_else(|| malformed(id, "\"op\" must be a string"))?;
    let symbols = || -> Result<Symbols, Refusal> {
        let list = obj
            .get("symbols")
            .ok_or_else(|| malformed(id, "missing \"symbols\""))?
            .as_array()
            .ok_or_else(|| malformed(id, "\"symbols\" must be an array of strings"))?;
        if list.len() > max_symbols {
            return Err(too_many_in_request(id, list.len(), max_symbols));
        }
        let mut names = Vec::with_capacity(list.len());
        for s in list {
            let s = s
                .as_str()
                .ok_or_else(|| malformed(id, "\"symbols\" must be an array of strings"))?;
            if s == "*" {
                return Ok(Symbols::All);
            }
            names.push(s.to_owned());
        }
        if names.is_empty() {
            return Err(malformed(id, "\"symbols\" is empty"));
        }
        Ok(Symbols::Names(names))
    };
    let channels = parse_channels(obj.get("channels"), id)?;
    let throttle_ms = parse_throttle(obj.get("throttle_ms"), id)?;
    if throttle_ms.is_some() && op != "subscribe" {
        return Err(malformed(id, "\"throttle_ms\" is an option of subscribe"));
    }
    let op = match op {
        "subscribe" => Op::Subscribe(symbols()?),
        "unsubscribe" => Op::Unsubscribe(symbols()?),
        "ping" => Op::Ping,
        "pause" => Op::Replay(ReplayControl::Pause),
        "resume" => Op::Replay(ReplayControl::Resume),
        "speed" => Op::Replay(ReplayControl::Speed(control::parse_speed(
            obj.get("speed"),
            id,
        )?)),
        "seek" => Op::Replay(ReplayControl::Seek(control::parse_seek(obj.get("to"), id)?)),
        other => {
            return Err(Refusal::new(
                id,
                ErrorCode::UnknownOp,
                format!("unknown op {other:?}; expected subscribe, unsubscribe or ping"),
            ))
        }
    };
    Ok(Request {
        id,
        op,
        channels,
        throttle_ms,
    })
}

/// The `throttle_ms` of a request: absent, 0 (no throttle), or an integer
/// from [`MIN_THROTTLE_MS`] to [`MAX_THROTTLE_MS`].
fn parse_throttle(
    value: Option<&simd_json::BorrowedValue<'_>>,
    id: Option<u64>,
) -> Result<Option<u16>, Refusal> {
    let Some(value) = value else {
        return Ok(None);
    };
    let ms = value.as_u64().ok_or_else(|| {
        Refusal::new(
            id,
            ErrorCode::MalformedMessage,
            "\"throttle_ms\" must be a non-negative integer",
        )
    })?;
    check_throttle(ms, id).map(Some)
}

/// `ms` as a throttle, if it is 0 or within the documented range: the
/// same check for `/ws` requests and `/sse` queries.
pub fn check_throttle(ms: u64, id: Option<u64>) -> Result<u16, Refusal> {
    match u16::try_from(ms) {
        Ok(ms) if ms == 0 || (MIN_THROTTLE_MS..=MAX_THROTTLE_MS).contains(&ms) => Ok(ms),
        _ => Err(Refusal::new(
            id,
            ErrorCode::InvalidOption,
            format!(
                "throttle_ms {ms} is out of range: 0 (none) or {MIN_THROTTLE_MS} to {MAX_THROTTLE_MS}"
            ),
        )),
    }
}

/// A request that names more symbols than a connection may subscribe to,
/// duplicates included: the same refusal on `/ws` and `/sse`.
/// The `channels` of a request: absent, or a non-empty array of known
/// channel names.
fn parse_channels(
    value: Option<&simd_json::BorrowedValue<'_>>,
    id: Option<u64>,
) -> Result<Option<Channels>, Refusal> {
    let malformed = |why: &str| Refusal::new(id, ErrorCode::MalformedMessage, why);
    let Some(list) = value else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| malformed("\"channels\" must be an array of strings"))?;
    let mut mask = Channels(0);
    for c in list {
        let name = c
            .as_str()
            .ok_or_else(|| malformed("\"channels\" must be an array of strings"))?;
        let named = Channels::named(name).ok_or_else(|| {
            let mut shown = name.chars().take(40).collect::<String>();
            if shown.len() < name.len() {
                shown.push('…');
            }
            Refusal::new(
                id,
                ErrorCode::UnknownChannel,
                format!(
                    "unknown channel {shown:?}; expected {}",
                    crate::wire::channel::EXPECTED
                ),
            )
        })?;
        mask.0 |= named.0;
    }
    if mask.is_empty() {
        return Err(malformed("\"channels\" is empty"));
    }
    Ok(Some(mask))
}

pub fn too_many_in_request(id: Option<u64>, named: usize, max_symbols: usize) -> Refusal {
    Refusal::new(
        id,
        ErrorCode::TooManySymbols,
        format!("{named} symbols in one request; the limit is {max_symbols}"),
    )
}

/// A text frame of `payload` as it is.
pub fn text_frame_of(payload: &[u8]) -> Bytes {
    text_frame(|p| p.extend_from_slice(payload))
}

fn text_frame(body: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut p = Vec::with_capacity(128);
    body(&mut p);
    encode::frame(OPCODE_TEXT, &p)
}

fn put_id(p: &mut Vec<u8>, id: Option<u64>) {
    if let Some(id) = id {
        p.extend_from_slice(b",\"id\":");
        write_u64(p, id);
    }
}

/// `{"type":"error","code":4002,"reason":"...","id":7}`
pub fn error_reply(r: &Refusal) -> Bytes {
    text_frame(|p| {
        p.extend_from_slice(b"{\"type\":\"error\",\"code\":");
        write_u64(p, r.code as u64);
        p.extend_from_slice(b",\"reason\":");
        write_json_str(p, &r.reason);
        put_id(p, r.id);
        p.push(b'}');
    })
}

/// `{"type":"ack","op":"subscribe","id":1,"symbols":["BTCUSDT"],"snapshot":1}`:
/// `snapshot` frames (with any symbol definitions they need before them)
/// follow the ack at once.
pub fn ack_reply(
    op: &str,
    id: Option<u64>,
    symbols: &Symbols,
    channels: Option<Channels>,
    throttle_ms: Option<u16>,
    snapshot: usize,
) -> Bytes {
    text_frame(|p| {
        p.extend_from_slice(b"{\"type\":\"ack\",\"op\":");
        write_json_str(p, op);
        put_id(p, id);
        p.extend_from_slice(b",\"symbols\":[");
        match symbols {
            Symbols::All => p.extend_from_slice(b"\"*\""),
            Symbols::Names(names) => {
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        p.push(b',');
                    }
                    write_json_str(p, n);
                }
            }
        }
        p.push(b']');
        if let Some(channels) = channels {
            p.extend_from_slice(b",\"channels\":[");
            for (i, n) in channels.names().iter().enumerate() {
                if i > 0 {
                    p.push(b',');
                }
                write_json_str(p, n);
            }
            p.push(b']');
        }
        if let Some(ms) = throttle_ms {
            p.extend_from_slice(b",\"throttle_ms\":");
            write_u64(p, u64::from(ms));
        }
        p.extend_from_slice(b",\"snapshot\":");
        write_u64(p, snapshot as u64);
        p.push(b'}');
    })
}

/// `{"type":"pong","id":3,"time":1723161253937085768}`
pub fn pong_reply(id: Option<u64>, now_ns: u64) -> Bytes {
    text_frame(|p| {
        p.extend_from_slice(b"{\"type\":\"pong\"");
        put_id(p, id);
        p.extend_from_slice(b",\"time\":");
        write_u64(p, now_ns);
        p.push(b'}');
    })
}

/// `{"type":"conflated","dropped":1234}`: the connection fell behind, skipped
/// `dropped` ring entries, and the latest value of each subscribed symbol
/// that changed follows.
pub fn conflated_notice(dropped: u64, latest: usize) -> Bytes {
    text_frame(|p| {
        p.extend_from_slice(b"{\"type\":\"conflated\",\"dropped\":");
        write_u64(p, dropped);
        p.extend_from_slice(b",\"latest\":");
        write_u64(p, latest as u64);
        p.push(b'}');
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, Refusal> {
        parse_request(s.as_bytes(), 4)
    }

    #[test]
    fn requests() {
        // TC0: subscribe to a list, with an id.
        assert_eq!(
            parse(r#"{"op":"subscribe","symbols":["BTCUSDT","ETHUSDT"],"id":7}"#),
            Ok(Request {
                id: Some(7),
                op: Op::Subscribe(Symbols::Names(vec!["BTCUSDT".into(), "ETHUSDT".into()])),
                channels: None,
                throttle_ms: None,
            })
        );
        // TC1: `*` anywhere in the list means all.
        assert_eq!(
            parse(r#"{"op":"unsubscribe","symbols":["X","*"]}"#)
                .unwrap()
                .op,
            Op::Unsubscribe(Symbols::All)
        );
        // TC2: ping.
        assert_eq!(parse(r#"{"op":"ping"}"#).unwrap().op, Op::Ping);
    }

    #[test]
    fn refusals() {
        let code = |s: &str| parse(s).unwrap_err().code;
        // TC0: not JSON, not an object, wrong field types.
        for s in [
            "{",
            "[]",
            "\"subscribe\"",
            r#"{"symbols":["A"]}"#,
            r#"{"op":1}"#,
            r#"{"op":"subscribe"}"#,
            r#"{"op":"subscribe","symbols":"A"}"#,
            r#"{"op":"subscribe","symbols":[1]}"#,
            r#"{"op":"subscribe","symbols":[]}"#,
            r#"{"op":"ping","id":-1}"#,
        ] {
            assert_eq!(code(s), ErrorCode::MalformedMessage, "{s}");
        }
        // TC1: unknown op, with the id echoed.
        let r = parse(r#"{"op":"subscrib","id":9}"#).unwrap_err();
        assert_eq!((r.code, r.id), (ErrorCode::UnknownOp, Some(9)));
        // TC1b: throttle_ms: a subscribe option, 0 or within its range.
        let sub = |t: &str| format!(r#"{{"op":"subscribe","symbols":["A"],"throttle_ms":{t}}}"#);
        assert_eq!(parse(&sub("0")).unwrap().throttle_ms, Some(0));
        assert_eq!(parse(&sub("10")).unwrap().throttle_ms, Some(10));
        assert_eq!(parse(&sub("60000")).unwrap().throttle_ms, Some(60_000));
        for bad in ["9", "1", "60001", "65536", "18446744073709551615"] {
            assert_eq!(code(&sub(bad)), ErrorCode::InvalidOption, "{bad}");
        }
        for bad in ["-1", "1.5", "\"100\"", "null"] {
            assert_eq!(code(&sub(bad)), ErrorCode::MalformedMessage, "{bad}");
        }
        assert_eq!(
            code(r#"{"op":"unsubscribe","symbols":["A"],"throttle_ms":100}"#),
            ErrorCode::MalformedMessage
        );
        // TC2: too many symbols in one request.
        assert_eq!(
            code(r#"{"op":"subscribe","symbols":["a","b","c","d","e"]}"#),
            ErrorCode::TooManySymbols
        );
    }

    #[test]
    fn replies_are_json() {
        let strip = |b: Bytes| -> serde_json::Value { serde_json::from_slice(&b[2..]).unwrap() };
        let e = strip(error_reply(&Refusal::new(
            Some(1),
            ErrorCode::UnknownSymbol,
            "unknown symbol \"X\"",
        )));
        assert_eq!(e["code"], 4002);
        assert_eq!(e["reason"], "unknown symbol \"X\"");
        let a = strip(ack_reply(
            "subscribe",
            None,
            &Symbols::Names(vec!["A".into()]),
            None,
            Some(100),
            1,
        ));
        assert_eq!(a["symbols"][0], "A");
        assert_eq!(a["snapshot"], 1);
        assert_eq!(a["throttle_ms"], 100);
        assert_eq!(strip(pong_reply(Some(3), 5))["time"], 5);
        assert_eq!(strip(conflated_notice(10, 2))["dropped"], 10);
    }

    #[test]
    fn negotiation() {
        assert_eq!(Format::negotiate(None), Ok(None));
        assert_eq!(
            Format::negotiate(Some("foo, tickwire.v1.json")),
            Ok(Some(Format::Json))
        );
        assert_eq!(
            Format::negotiate(Some("tickwire.v1")),
            Ok(Some(Format::Binary))
        );
        assert_eq!(Format::negotiate(Some("mqtt")), Err(NoCommonSubprotocol));
    }
}
