//! The wire: every update encoded once into complete WebSocket frames.
//!
//! Server frames are never masked (RFC 6455 §5.1), so the header and payload
//! of a frame are the same bytes for every subscriber: the publisher builds
//! each frame once, here, and connections only ever hand out clones of the
//! resulting [`Bytes`]. The layouts are specified in `docs/PROTOCOL.md`; the
//! tests at the bottom pin them to that page.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

mod arena;
mod book;
mod candle;

use self::arena::{carve, own_frames, Arena, NEXT_CHUNK};
pub use self::book::{book_flags, book_frames, BookHead, BookLevels, BOOK_HEAD_LEN, LEVEL_LEN};
pub use self::candle::{candle_flags, candles_frames, CandleHead, BAR_LEN, CANDLE_HEAD_LEN};

use crate::decimal::write_fixed;
use crate::update::{Sequenced, Side, SymbolStatus, UpdateKind};
use crate::wire::deflate;

/// Message type, the first payload byte of every binary message.
pub mod msg_type {
    pub const QUOTE: u8 = 1;
    pub const TRADE: u8 = 2;
    pub const SYMBOL: u8 = 3;
    pub const STATUS: u8 = 4;
    pub const BOOK: u8 = 5;
    /// One candle bar as it changes or closes.
    pub const CANDLE: u8 = 6;
    /// A run of candle bars: a snapshot, or a catch-up.
    pub const CANDLES: u8 = 7;
}

/// Bits of the u16 at offset 2 of a binary quote, which is 0 in every
/// other message. A flagged size's mantissa is written as 0, so that a
/// client that predates the flags reads what it always read (see "Unknown
/// sizes" in `docs/PROTOCOL.md` for why a flag and not a sentinel value).
pub mod quote_flags {
    /// The bid size is unknown: the venue did not send one.
    pub const BID_SIZE_UNKNOWN: u16 = 1 << 0;
    /// The ask size is unknown.
    pub const ASK_SIZE_UNKNOWN: u16 = 1 << 1;

    /// The flags of a quote with these sizes.
    pub fn of(bid_sz: Option<i64>, ask_sz: Option<i64>) -> u16 {
        let mut flags = 0;
        if bid_sz.is_none() {
            flags |= BID_SIZE_UNKNOWN;
        }
        if ask_sz.is_none() {
            flags |= ASK_SIZE_UNKNOWN;
        }
        flags
    }
}

pub const QUOTE_LEN: usize = 80;
pub const TRADE_LEN: usize = 64;
/// A status is the 48-byte header every update starts with, and no more.
pub const STATUS_LEN: usize = 48;

pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// The server's heartbeat: a ping with no payload, a whole frame.
pub const PING_FRAME: [u8; 2] = [0x80 | OPCODE_PING, 0];

/// Longest WebSocket header of an unmasked server frame.
pub const MAX_HEADER_LEN: usize = 10;

/// Writes the header of a final, unmasked frame with a `len`-byte payload.
pub fn put_header(out: &mut BytesMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(len16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// The payload of a complete unmasked frame built here: the frame minus its
/// header, as [`crate::wire::frame::parse`] reads it. A slice of the same
/// allocation, not a copy.
pub fn frame_payload(frame: &Bytes) -> Bytes {
    match crate::wire::frame::parse(frame) {
        Some(h) => frame.slice(h.header_len..),
        None => Bytes::new(),
    }
}

/// One complete frame, header and payload, in one allocation. For cold-path
/// frames (control replies, close frames); updates go through
/// [`FrameEncoder`].
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with a status code and a reason (truncated to fit the
/// 125-byte control-frame limit).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OPCODE_CLOSE, &payload)
}

/// The two frames of one update, in the two subprotocols, and the arena
/// chunks they were carved from.
#[derive(Debug, Clone)]
pub struct EncodedUpdate {
    pub binary: Bytes,
    pub json: Bytes,
    /// Ids of the chunks holding `binary` and `json`: frames with equal ids
    /// share one allocation, which lives as long as any `Bytes` of it
    /// (the outbox keeps one per chunk, not one per frame).
    pub chunks: [u64; 2],
    /// For a frame large enough to compress ([`deflate::min_bytes`]): its
    /// permessage-deflate form, made once, by the first connection that
    /// wants it, and shared by every clone of this update (the ring's, the
    /// caches').
    pub deflated: Option<Arc<Deflated>>,
}

/// The compressed forms of an update's two frames, each made at most once.
#[derive(Debug, Default)]
pub struct Deflated {
    frames: [OnceLock<Option<(Bytes, u64)>>; 2],
}

impl EncodedUpdate {
    /// A compressed form for a frame with a payload of at least
    /// [`deflate::min_bytes`], if compression is on.
    fn with_deflated(mut self) -> Self {
        let min = deflate::min_bytes();
        if min > 0 && self.binary.len().max(self.json.len()) >= min + MAX_HEADER_LEN {
            self.deflated = Some(Arc::default());
        }
        self
    }

    /// The frame of subprotocol `i` (0 binary, 1 JSON) compressed with
    /// permessage-deflate (RSV1 set) and its chunk id, if its payload is at
    /// least `min` bytes and compressing it pays; made once.
    pub fn deflated(&self, i: usize, min: usize) -> Option<(&Bytes, u64)> {
        let d = self.deflated.as_ref()?;
        let frame = if i == 0 { &self.binary } else { &self.json };
        let payload = frame_payload(frame);
        if payload.len() < min {
            return None;
        }
        d.frames[i]
            .get_or_init(|| {
                let packed = deflate::compress(&payload);
                (packed.len() + MAX_HEADER_LEN < frame.len()).then(|| {
                    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + packed.len());
                    put_header(&mut out, frame[0] & 0x0f, packed.len());
                    out[0] |= RSV1;
                    out.put_slice(&packed);
                    // Relaxed: only uniqueness matters (see `Arena::new`).
                    (out.freeze(), NEXT_CHUNK.fetch_add(1, Ordering::Relaxed))
                })
            })
            .as_ref()
            .map(|(b, id)| (b, *id))
    }
}

/// The RSV1 bit of a frame's first byte: permessage-deflate's "compressed".
pub const RSV1: u8 = 0x40;

/// A data frame whose payload is `packed`, a permessage-deflate message
/// (RSV1 set).
pub fn deflated_frame(opcode: u8, packed: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(MAX_HEADER_LEN + packed.len());
    put_header(&mut out, opcode, packed.len());
    out[0] |= RSV1;
    out.put_slice(packed);
    out.freeze()
}

/// What the encoder needs to know about a symbol for its JSON form.
#[derive(Debug, Clone, Copy)]
pub struct SymbolFormat<'a> {
    pub name: &'a str,
    pub price_decimals: u8,
    pub size_decimals: u8,
}

/// Encodes updates into frames carved out of a shared arena, so that a
/// frame costs no allocation of its own: the arena is one `BytesMut` that
/// frames are split off, and a chunk is freed when the last frame in it is.
pub struct FrameEncoder {
    /// Binary frames only: consecutive updates' frames lie end to end, so
    /// that a connection taking them all writes them as one buffer.
    arena: Arena,
    /// JSON frames only, likewise.
    json_arena: Arena,
    json: Vec<u8>,
}

const ARENA_CHUNK: usize = 64 * 1024;

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    pub fn new() -> Self {
        FrameEncoder {
            arena: Arena::new(ARENA_CHUNK),
            json_arena: Arena::new(ARENA_CHUNK),
            json: Vec::with_capacity(512),
        }
    }

    fn carve(&mut self, opcode: u8, payload_len: usize) -> &mut BytesMut {
        carve(&mut self.arena, opcode, payload_len)
    }

    pub fn encode(&mut self, s: &Sequenced, sym: SymbolFormat<'_>) -> EncodedUpdate {
        let binary = self.encode_binary(s);
        let binary_chunk = self.arena.id;
        self.json.clear();
        write_json(&mut self.json, s, sym);
        carve(&mut self.json_arena, OPCODE_TEXT, self.json.len()).put_slice(&self.json);
        let json = self.json_arena.bytes.split().freeze();
        EncodedUpdate {
            binary,
            json,
            chunks: [binary_chunk, self.json_arena.id],
            deflated: None,
        }
        .with_deflated()
    }

    fn encode_binary(&mut self, s: &Sequenced) -> Bytes {
        let u = &s.update;
        let (kind, side, flags, len) = match u.kind {
            UpdateKind::Quote { bid_sz, ask_sz, .. } => (
                msg_type::QUOTE,
                0,
                quote_flags::of(bid_sz, ask_sz),
                QUOTE_LEN,
            ),
            UpdateKind::Trade { side, .. } => (msg_type::TRADE, side as u8, 0, TRADE_LEN),
            UpdateKind::Status(status) => (msg_type::STATUS, status as u8, 0, STATUS_LEN),
            // Never encoded alone: the publisher applies levels to the
            // symbol's book and encodes the book ([`FrameEncoder::encode_book`]).
            // A header keeps this total.
            UpdateKind::Level { .. } => (msg_type::BOOK, 0, 0, STATUS_LEN),
        };
        let out = self.carve(OPCODE_BINARY, len);
        out.put_u8(kind);
        out.put_u8(side);
        out.put_u16_le(flags);
        out.put_u32_le(u.symbol);
        out.put_u64_le(s.seq);
        out.put_u64_le(s.symbol_seq);
        out.put_u64_le(u.exchange_ts_ns);
        out.put_u64_le(u.receive_ts_ns);
        out.put_u64_le(s.publish_ts_ns);
        match u.kind {
            UpdateKind::Quote {
                bid_px,
                bid_sz,
                ask_px,
                ask_sz,
            } => {
                out.put_i64_le(bid_px);
                out.put_i64_le(bid_sz.unwrap_or(0));
                out.put_i64_le(ask_px);
                out.put_i64_le(ask_sz.unwrap_or(0));
            }
            UpdateKind::Trade { px, sz, .. } => {
                out.put_i64_le(px);
                out.put_i64_le(sz);
            }
            UpdateKind::Status(_) | UpdateKind::Level { .. } => {}
        }
        self.arena.bytes.split().freeze()
    }
}

fn write_json(out: &mut Vec<u8>, s: &Sequenced, sym: SymbolFormat<'_>) {
    let u = &s.update;
    let kind = match u.kind {
        UpdateKind::Quote { .. } => "quote",
        UpdateKind::Trade { .. } => "trade",
        UpdateKind::Status(_) => "status",
        UpdateKind::Level { .. } => "level",
    };
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"symbol\":");
    write_json_str(out, sym.name);
    write_u64_fields(
        out,
        [
            ("id", u64::from(u.symbol)),
            ("seq", s.seq),
            ("symbol_seq", s.symbol_seq),
            ("exchange_ts", u.exchange_ts_ns),
            ("receive_ts", u.receive_ts_ns),
            ("publish_ts", s.publish_ts_ns),
        ],
    );
    // An unknown size is `null`, never a number.
    let decimal = |out: &mut Vec<u8>, key: &str, v: Option<i64>, d: u8| {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        match v {
            Some(v) => {
                out.push(b'"');
                write_fixed(out, v, d);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
    };
    let (pd, sd) = (sym.price_decimals, sym.size_decimals);
    match u.kind {
        UpdateKind::Quote {
            bid_px,
            bid_sz,
            ask_px,
            ask_sz,
        } => {
            decimal(out, "bid", Some(bid_px), pd);
            decimal(out, "bid_size", bid_sz, sd);
            decimal(out, "ask", Some(ask_px), pd);
            decimal(out, "ask_size", ask_sz, sd);
        }
        UpdateKind::Trade { px, sz, side } => {
            decimal(out, "price", Some(px), pd);
            decimal(out, "size", Some(sz), sd);
            out.extend_from_slice(b",\"side\":\"");
            out.extend_from_slice(side_name(side).as_bytes());
            out.push(b'"');
        }
        UpdateKind::Status(status) => write_status(out, status),
        UpdateKind::Level { .. } => {}
    }
    out.push(b'}');
}

fn write_status(out: &mut Vec<u8>, status: SymbolStatus) {
    out.extend_from_slice(b",\"state\":\"");
    out.extend_from_slice(status.state().as_bytes());
    out.push(b'"');
    if status.is_stale() {
        out.extend_from_slice(b",\"reason\":\"");
        out.extend_from_slice(status.reason().as_bytes());
        out.push(b'"');
    }
}

pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Unknown => "unknown",
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// Appends `,"key":value` for each of an update's numbers.
fn write_u64_fields(out: &mut Vec<u8>, fields: [(&str, u64); 6]) {
    for (key, value) in fields {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        write_u64(out, value);
    }
}

pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The binary symbol definition: type, decimals, name length, id, name.
pub fn symbol_binary(id: u32, name: &str, price_decimals: u8, size_decimals: u8) -> Bytes {
    let mut payload = Vec::with_capacity(8 + name.len());
    payload.push(msg_type::SYMBOL);
    payload.push(price_decimals);
    payload.push(size_decimals);
    payload.push(name.len() as u8);
    payload.extend_from_slice(&id.to_le_bytes());
    payload.extend_from_slice(name.as_bytes());
    frame(OPCODE_BINARY, &payload)
}

pub fn symbol_json(id: u32, name: &str, price_decimals: u8, size_decimals: u8) -> Bytes {
    let mut p = Vec::with_capacity(96 + name.len());
    p.extend_from_slice(b"{\"type\":\"symbol\",\"id\":");
    write_u64(&mut p, u64::from(id));
    p.extend_from_slice(b",\"symbol\":");
    write_json_str(&mut p, name);
    p.extend_from_slice(b",\"price_decimals\":");
    write_u64(&mut p, u64::from(price_decimals));
    p.extend_from_slice(b",\"size_decimals\":");
    write_u64(&mut p, u64::from(size_decimals));
    p.push(b'}');
    frame(OPCODE_TEXT, &p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::Update;

    fn quote() -> Sequenced {
        Sequenced {
            update: Update {
                symbol: 7,
                kind: UpdateKind::Quote {
                    bid_px: 6_183_763_000_000,
                    bid_sz: Some(378_826_000),
                    ask_px: 6_183_764_000_000,
                    ask_sz: Some(154_698_000),
                },
                exchange_ts_ns: 0,
                receive_ts_ns: 1_723_161_253_937_000_000,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            },
            seq: 42,
            symbol_seq: 5,
            publish_ts_ns: 1_900_000_000_000_000_000,
        }
    }

    const FMT: SymbolFormat<'static> = SymbolFormat {
        name: "BTCUSDT",
        price_decimals: 8,
        size_decimals: 8,
    };

    #[test]
    fn quote_binary_layout() {
        let e = FrameEncoder::new().encode(&quote(), FMT);
        let f = &e.binary[..];
        assert_eq!(&f[..2], &[0x82, 80]);
        let p = &f[2..];
        assert_eq!(p.len(), QUOTE_LEN);
        assert_eq!(p[0], msg_type::QUOTE);
        let u32_at = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(4), 7);
        assert_eq!(u64_at(8), 42);
        assert_eq!(u64_at(16), 5);
        assert_eq!(u64_at(24), 0);
        assert_eq!(u64_at(32), 1_723_161_253_937_000_000);
        assert_eq!(u64_at(40), 1_900_000_000_000_000_000);
        assert_eq!(u64_at(48), 6_183_763_000_000);
        assert_eq!(u64_at(72), 154_698_000);
        // The example in docs/PROTOCOL.md, byte for byte.
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let start = doc.find("82 50\n").unwrap();
        let hex: String = doc[start..]
            .lines()
            .take(6)
            .map(|l| l.split("   ").next().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        assert_eq!(bytes, f);
    }

    #[test]
    fn quote_json_is_exact_text() {
        let e = FrameEncoder::new().encode(&quote(), FMT);
        assert_eq!(e.json[0], 0x81);
        let text = std::str::from_utf8(&e.json[4..]).unwrap();
        assert_eq!(e.json[1], 126);
        assert_eq!(
            text,
            r#"{"type":"quote","symbol":"BTCUSDT","id":7,"seq":42,"symbol_seq":5,"exchange_ts":0,"receive_ts":1723161253937000000,"publish_ts":1900000000000000000,"bid":"61837.63000000","bid_size":"3.78826000","ask":"61837.64000000","ask_size":"1.54698000"}"#
        );
    }

    #[test]
    fn unknown_sizes_are_flagged_in_binary_and_null_in_json() {
        let u64_at = |p: &[u8], o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap());
        let with_sizes = |bid_sz, ask_sz| {
            let mut s = quote();
            s.update.kind = UpdateKind::Quote {
                bid_px: 6_183_763_000_000,
                bid_sz,
                ask_px: 6_183_764_000_000,
                ask_sz,
            };
            FrameEncoder::new().encode(&s, FMT)
        };
        // TC0: no bid size: flag bit 0, mantissa 0, `null`; the ask intact.
        let e = with_sizes(None, Some(154_698_000));
        let p = &frame_payload(&e.binary);
        assert_eq!(p.len(), QUOTE_LEN);
        assert_eq!(&p[..4], &[msg_type::QUOTE, 0, 1, 0]);
        assert_eq!((u64_at(p, 56), u64_at(p, 72)), (0, 154_698_000));
        let json = frame_payload(&e.json);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(
            text.ends_with(r#""bid":"61837.63000000","bid_size":null,"ask":"61837.64000000","ask_size":"1.54698000"}"#),
            "{text}"
        );
        // TC1: no ask size: bit 1.
        let e = with_sizes(Some(378_826_000), None);
        let p = &frame_payload(&e.binary);
        assert_eq!(&p[2..4], &[2, 0]);
        assert_eq!((u64_at(p, 56), u64_at(p, 72)), (378_826_000, 0));
        assert!(e.json.ends_with(br#""ask_size":null}"#));
        // TC2: neither, as the docs/PROTOCOL.md example shows it.
        let e = with_sizes(None, None);
        let mut want = frame_payload(&FrameEncoder::new().encode(&quote(), FMT).binary).to_vec();
        want[2] = 3;
        want[56..64].fill(0);
        want[72..80].fill(0);
        assert_eq!(&frame_payload(&e.binary)[..], &want[..]);
        let json = frame_payload(&e.json);
        let text = std::str::from_utf8(&json).unwrap();
        let doc = include_str!("../../../docs/PROTOCOL.md");
        assert!(doc.lines().any(|l| l == text), "not in PROTOCOL.md: {text}");
        // TC3: a real zero is a number, unflagged.
        let e = with_sizes(Some(0), Some(0));
        let p = &frame_payload(&e.binary);
        assert_eq!(&p[2..4], &[0, 0]);
        assert!(e.json.ends_with(
            br#""bid_size":"0.00000000","ask":"61837.64000000","ask_size":"0.00000000"}"#
        ));
        // TC4: trades and statuses never carry flags.
        for kind in [
            UpdateKind::Trade {
                px: 1,
                sz: 0,
                side: Side::Buy,
            },
            UpdateKind::Status(SymbolStatus::StaleSilent),
        ] {
            let mut s = quote();
            s.update.kind = kind;
            let e = FrameEncoder::new().encode(&s, FMT);
            assert_eq!(&frame_payload(&e.binary)[2..4], &[0, 0], "{kind:?}");
        }
    }

    #[test]
    fn trade_layout_and_side() {
        let mut s = quote();
        s.update.kind = UpdateKind::Trade {
            px: 150,
            sz: -1,
            side: Side::Sell,
        };
        let fmt = SymbolFormat {
            name: "X\"Y",
            price_decimals: 2,
            size_decimals: 0,
        };
        let e = FrameEncoder::new().encode(&s, fmt);
        assert_eq!(
            &e.binary[..4],
            &[0x82, 64, msg_type::TRADE, Side::Sell as u8]
        );
        assert_eq!(e.json[1], 126);
        let text = std::str::from_utf8(&e.json[4..]).unwrap();
        assert!(
            text.starts_with(r#"{"type":"trade","symbol":"X\"Y","id":7"#),
            "{text}"
        );
        assert!(
            text.ends_with(r#""price":"1.50","size":"-1","side":"sell"}"#),
            "{text}"
        );
    }

    #[test]
    fn status_layout_and_json() {
        let mut s = quote();
        s.update.kind = UpdateKind::Status(SymbolStatus::StaleGap);
        let e = FrameEncoder::new().encode(&s, FMT);
        // TC0: the 48-byte update header, type 4, the status in byte 1.
        assert_eq!(&e.binary[..4], &[0x82, 48, msg_type::STATUS, 1]);
        assert_eq!(e.binary.len(), 2 + STATUS_LEN);
        let q = FrameEncoder::new().encode(&quote(), FMT);
        assert_eq!(&e.binary[4..50], &q.binary[4..50]);
        let json = frame_payload(&e.json);
        let text = std::str::from_utf8(&json).unwrap();
        assert_eq!(
            text,
            r#"{"type":"status","symbol":"BTCUSDT","id":7,"seq":42,"symbol_seq":5,"exchange_ts":0,"receive_ts":1723161253937000000,"publish_ts":1900000000000000000,"state":"stale","reason":"gap"}"#
        );
        // TC1: live has no reason.
        s.update.kind = UpdateKind::Status(SymbolStatus::Live);
        let e = FrameEncoder::new().encode(&s, FMT);
        assert_eq!(e.binary[3], 0);
        assert!(e.json.ends_with(br#""state":"live"}"#));
    }

    #[test]
    fn headers_for_each_length_class() {
        for (len, head) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65_535, vec![0x82, 126, 0xff, 0xff]),
            (65_536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let f = frame(OPCODE_BINARY, &vec![0; len]);
            assert_eq!(&f[..head.len()], &head[..], "len {len}");
            assert_eq!(f.len(), head.len() + len);
        }
    }

    #[test]
    fn payloads_of_each_length_class() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(
                &frame_payload(&frame(OPCODE_TEXT, &payload))[..],
                &payload[..],
                "len {len}"
            );
        }
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let f = close_frame(1008, &"é".repeat(100));
        assert!(f.len() - 2 <= 125);
        assert_eq!(&f[2..4], &1008u16.to_be_bytes());
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }

    #[test]
    fn symbol_frames() {
        let b = symbol_binary(3, "ETHUSDT", 8, 4);
        assert_eq!(
            &b[..],
            &[&[0x82, 15, 3, 8, 4, 7, 3, 0, 0, 0][..], b"ETHUSDT"].concat()[..]
        );
        let j = symbol_json(3, "ETHUSDT", 8, 4);
        assert_eq!(
            &j[2..],
            br#"{"type":"symbol","id":3,"symbol":"ETHUSDT","price_decimals":8,"size_decimals":4}"#
        );
    }

    #[test]
    fn arena_frames_do_not_alias() {
        let mut enc = FrameEncoder::new();
        let a = enc.encode(&quote(), FMT);
        let mut q = quote();
        q.seq = 43;
        let b = enc.encode(&q, FMT);
        assert_eq!(a.binary[2 + 8], 42);
        assert_eq!(b.binary[2 + 8], 43);
        // Many frames across chunk boundaries stay intact.
        let frames: Vec<_> = (0..5000)
            .map(|i| {
                q.seq = i;
                enc.encode(&q, FMT).binary
            })
            .collect();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(u64::from_le_bytes(f[10..18].try_into().unwrap()), i as u64);
        }
    }
}
