//! The wire read back: one server message of `tickwire.v1` (binary) or
//! `tickwire.v1.json` (text) decoded into a [`ServerMessage`].
//!
//! [`encode`](crate::wire::encode) writes the layouts of `docs/PROTOCOL.md`; this
//! module is their one reader, for everything that checks what the server
//! sends: the integration tests' client, the fuzz targets and the examples
//! in the protocol page. It decodes version 1 strictly: a length, a
//! reserved byte, a flag bit, a side, a status or a number format that the
//! page does not define is an error, because a reader whose job is to
//! catch the server out must not let a wrong byte pass. It takes arbitrary
//! bytes without panicking (a fuzz target drives it with them).
//!
//! A binary update's prices and sizes are mantissas whose decimals only the
//! symbol's definition gives, and a definition always arrives before the
//! symbol's first update on a connection: so the [`Decoder`] keeps the
//! definitions it has read, one per connection, and hands out [`Fixed`]
//! values in both subprotocols.
//!
//! `tickwire bench` has a header-only reader of its own (`bench::samples`),
//! on its hot path; it takes its offsets from [`offset`].

mod candle;
mod json;

pub use self::candle::{CandleBar, CandleMessage};

use std::collections::HashMap;

use serde_json::Value;

use crate::decimal::{Fixed, MAX_DECIMALS};
use crate::update::{Side, SymbolStatus};
use crate::wire::encode::{
    book_flags, msg_type, quote_flags, BAR_LEN, BOOK_HEAD_LEN, CANDLE_HEAD_LEN, LEVEL_LEN,
    QUOTE_LEN, STATUS_LEN, TRADE_LEN,
};

/// Byte offsets of the binary layouts (docs/PROTOCOL.md, "Binary layouts").
/// Every binary message starts with its type; updates (quote, trade,
/// status) share the 48-byte header up to [`PUBLISH_TS`](offset::PUBLISH_TS).
pub mod offset {
    /// u8: the message type ([`msg_type`](crate::wire::encode::msg_type)).
    pub const TYPE: usize = 0;
    /// u8: a trade's aggressor side, a status's status; 0 in a quote.
    pub const SIDE_OR_STATUS: usize = 1;
    /// u16: a quote's [`quote_flags`](crate::wire::encode::quote_flags); 0 elsewhere.
    pub const FLAGS: usize = 2;
    /// u32: the symbol id.
    pub const SYMBOL: usize = 4;
    /// u64: the global sequence.
    pub const SEQ: usize = 8;
    /// u64: the symbol's own sequence.
    pub const SYMBOL_SEQ: usize = 16;
    /// u64 timestamps, ns since the epoch.
    pub const EXCHANGE_TS: usize = 24;
    pub const RECEIVE_TS: usize = 32;
    pub const PUBLISH_TS: usize = 40;
    /// i64 mantissas of a quote.
    pub const BID: usize = 48;
    pub const BID_SIZE: usize = 56;
    pub const ASK: usize = 64;
    pub const ASK_SIZE: usize = 72;
    /// i64 mantissas of a trade.
    pub const PRICE: usize = 48;
    pub const SIZE: usize = 56;

    /// A symbol definition: u8 decimals, u8 name length, u32 id, the name.
    pub mod symbol {
        pub const PRICE_DECIMALS: usize = 1;
        pub const SIZE_DECIMALS: usize = 2;
        pub const NAME_LEN: usize = 3;
        pub const ID: usize = 4;
        pub const NAME: usize = 8;
    }
}

/// A symbol definition: what a symbol's mantissas mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolDef {
    pub id: u32,
    pub name: String,
    pub price_decimals: u8,
    pub size_decimals: u8,
}

/// The fields every update (quote, trade, status) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateHeader {
    pub symbol: u32,
    pub seq: u64,
    pub symbol_seq: u64,
    pub exchange_ts_ns: u64,
    pub receive_ts_ns: u64,
    pub publish_ts_ns: u64,
}

/// Best bid and offer. A size is `None` when the server says it is
/// unknown (a flag bit in binary, `null` in JSON), which is not 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub header: UpdateHeader,
    pub bid: Fixed,
    pub bid_size: Option<Fixed>,
    pub ask: Fixed,
    pub ask_size: Option<Fixed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trade {
    pub header: UpdateHeader,
    pub price: Fixed,
    pub size: Fixed,
    pub side: Side,
}

/// A symbol turned stale (with a reason) or live again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub header: UpdateHeader,
    pub status: SymbolStatus,
}

/// A book message: a snapshot of the top `depth` levels (0: the whole
/// book), or, on the `book` channel, one event's changed levels (a size of
/// 0 removes the level). `header.symbol_seq` is the book's `book_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookMessage {
    pub header: UpdateHeader,
    pub depth: u16,
    pub snapshot: bool,
    /// Best first: bids by price descending, asks ascending.
    pub bids: Vec<(Fixed, Fixed)>,
    pub asks: Vec<(Fixed, Fixed)>,
}

/// One message from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Symbol(SymbolDef),
    Quote(Quote),
    Trade(Trade),
    Status(Status),
    Book(BookMessage),
    Candle(CandleMessage),
    /// A reply or notice (`ack`, `pong`, `error`, `conflated`, and any type
    /// this version does not name): a JSON object with a string `type`.
    Control(Value),
}

impl ServerMessage {
    /// The header of a quote, trade or status.
    pub fn update_header(&self) -> Option<&UpdateHeader> {
        match self {
            ServerMessage::Quote(q) => Some(&q.header),
            ServerMessage::Trade(t) => Some(&t.header),
            ServerMessage::Status(s) => Some(&s.header),
            ServerMessage::Book(b) => Some(&b.header),
            ServerMessage::Candle(c) => Some(&c.header),
            ServerMessage::Symbol(_) | ServerMessage::Control(_) => None,
        }
    }
}

/// Why a payload is not a tickwire v1 server message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("an empty binary message")]
    Empty,
    #[error("unknown binary message type {0}")]
    UnknownType(u8),
    #[error("a binary message of type {kind} has {len} bytes, not {want}")]
    Length { kind: u8, len: usize, want: usize },
    #[error("byte {offset} of a message of type {kind} is {value:#x}, not 0")]
    Reserved { kind: u8, offset: usize, value: u16 },
    #[error("quote flags {0:#06x} set bits this version does not define")]
    UnknownFlags(u16),
    #[error("an unknown size (flag bit {bit:#x}) with mantissa {mantissa}")]
    UnknownSizeWithMantissa { bit: u16, mantissa: i64 },
    #[error("trade side {0}")]
    UnknownSide(u8),
    #[error("symbol status {0}")]
    UnknownStatus(u8),
    #[error("a symbol name that is not UTF-8")]
    NameNotUtf8,
    #[error("{0} decimals, more than the {MAX_DECIMALS} a symbol may have")]
    TooManyDecimals(u8),
    #[error("an update of symbol {0} before its definition")]
    Undefined(u32),
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a JSON message that is not an object with a string \"type\"")]
    NoType,
    #[error("{key}: missing or of the wrong type")]
    Field { key: &'static str },
    #[error("{key}: {text:?} is not a decimal with exactly {decimals} decimals")]
    Decimal {
        key: &'static str,
        text: String,
        decimals: u8,
    },
    #[error("symbol {id} is named {got:?} here but was defined as {defined:?}")]
    NameMismatch {
        id: u32,
        got: String,
        defined: String,
    },
    #[error("status state {state:?} with reason {reason:?}")]
    BadStatus {
        state: String,
        reason: Option<String>,
    },
}

/// Decodes one connection's server messages, remembering its symbol
/// definitions (binary updates need them for their decimals; JSON updates
/// are checked against them).
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    symbols: HashMap<u32, SymbolDef>,
}

/// The length of the binary message at the start of `p`, by its type, if
/// its header is here: how a batch (`/ws?batch=1`: messages end to end in
/// one WebSocket message) is cut. `None` for an unknown type or a header
/// cut short; the length may be more than `p` holds.
pub fn binary_len(p: &[u8]) -> Option<usize> {
    let u16_at = |o: usize| {
        Some(usize::from(u16::from_le_bytes(
            p.get(o..o + 2)?.try_into().ok()?,
        )))
    };
    Some(match *p.first()? {
        msg_type::QUOTE => QUOTE_LEN,
        msg_type::TRADE => TRADE_LEN,
        msg_type::STATUS => STATUS_LEN,
        msg_type::SYMBOL => 8 + usize::from(*p.get(3)?),
        msg_type::BOOK => BOOK_HEAD_LEN + LEVEL_LEN * (u16_at(50)? + u16_at(52)?),
        msg_type::CANDLE => CANDLE_HEAD_LEN + BAR_LEN,
        msg_type::CANDLES => {
            let bars = u32::from_le_bytes(p.get(52..56)?.try_into().ok()?);
            CANDLE_HEAD_LEN + BAR_LEN * usize::try_from(bars).ok()?
        }
        _ => return None,
    })
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The definition of symbol `id`, if one was read (or given).
    pub fn symbol(&self, id: u32) -> Option<&SymbolDef> {
        self.symbols.get(&id)
    }

    /// Takes a definition as if it had been read: a later one of the same
    /// id replaces it, as on the wire. Fails on more than [`MAX_DECIMALS`].
    pub fn define(&mut self, def: SymbolDef) -> Result<(), DecodeError> {
        for d in [def.price_decimals, def.size_decimals] {
            if d > MAX_DECIMALS {
                return Err(DecodeError::TooManyDecimals(d));
            }
        }
        self.symbols.insert(def.id, def);
        Ok(())
    }

    /// One message's payload (a WebSocket message without its frame
    /// header), as it arrived in a binary (`binary: true`) or text message.
    /// Text messages are JSON in both subprotocols.
    pub fn decode_message(
        &mut self,
        binary: bool,
        payload: &[u8],
    ) -> Result<ServerMessage, DecodeError> {
        if binary {
            self.decode_binary(payload)
        } else {
            self.decode_json(payload)
        }
    }

    /// A binary message of `tickwire.v1`.
    pub fn decode_binary(&mut self, p: &[u8]) -> Result<ServerMessage, DecodeError> {
        let kind = *p.first().ok_or(DecodeError::Empty)?;
        let want = match kind {
            msg_type::QUOTE => QUOTE_LEN,
            msg_type::TRADE => TRADE_LEN,
            msg_type::STATUS => STATUS_LEN,
            msg_type::SYMBOL => return self.binary_symbol(p),
            msg_type::BOOK => return self.binary_book(p),
            msg_type::CANDLE | msg_type::CANDLES => return self.binary_candle(p),
            other => return Err(DecodeError::UnknownType(other)),
        };
        if p.len() != want {
            return Err(DecodeError::Length {
                kind,
                len: p.len(),
                want,
            });
        }
        let header = UpdateHeader {
            symbol: u32_at(p, offset::SYMBOL),
            seq: u64_at(p, offset::SEQ),
            symbol_seq: u64_at(p, offset::SYMBOL_SEQ),
            exchange_ts_ns: u64_at(p, offset::EXCHANGE_TS),
            receive_ts_ns: u64_at(p, offset::RECEIVE_TS),
            publish_ts_ns: u64_at(p, offset::PUBLISH_TS),
        };
        let byte1 = p[offset::SIDE_OR_STATUS];
        let flags = u16::from_le_bytes([p[offset::FLAGS], p[offset::FLAGS + 1]]);
        if kind != msg_type::QUOTE && flags != 0 {
            return Err(DecodeError::Reserved {
                kind,
                offset: offset::FLAGS,
                value: flags,
            });
        }
        let def = self
            .symbols
            .get(&header.symbol)
            .ok_or(DecodeError::Undefined(header.symbol))?;
        let price = |o| fixed(i64_at(p, o), def.price_decimals);
        let size = |o| fixed(i64_at(p, o), def.size_decimals);
        match kind {
            msg_type::QUOTE => {
                if byte1 != 0 {
                    return Err(DecodeError::Reserved {
                        kind,
                        offset: offset::SIDE_OR_STATUS,
                        value: u16::from(byte1),
                    });
                }
                let defined = quote_flags::BID_SIZE_UNKNOWN | quote_flags::ASK_SIZE_UNKNOWN;
                if flags & !defined != 0 {
                    return Err(DecodeError::UnknownFlags(flags));
                }
                // A flagged size's mantissa is 0 and means nothing.
                let maybe_size = |bit: u16, o| match (flags & bit != 0, i64_at(p, o)) {
                    (false, _) => Ok(Some(size(o))),
                    (true, 0) => Ok(None),
                    (true, mantissa) => Err(DecodeError::UnknownSizeWithMantissa { bit, mantissa }),
                };
                Ok(ServerMessage::Quote(Quote {
                    header,
                    bid: price(offset::BID),
                    bid_size: maybe_size(quote_flags::BID_SIZE_UNKNOWN, offset::BID_SIZE)?,
                    ask: price(offset::ASK),
                    ask_size: maybe_size(quote_flags::ASK_SIZE_UNKNOWN, offset::ASK_SIZE)?,
                }))
            }
            msg_type::TRADE => Ok(ServerMessage::Trade(Trade {
                header,
                price: price(offset::PRICE),
                size: size(offset::SIZE),
                side: side_of(byte1).ok_or(DecodeError::UnknownSide(byte1))?,
            })),
            _ => Ok(ServerMessage::Status(Status {
                header,
                status: status_of(byte1).ok_or(DecodeError::UnknownStatus(byte1))?,
            })),
        }
    }

    fn binary_book(&self, p: &[u8]) -> Result<ServerMessage, DecodeError> {
        let kind = msg_type::BOOK;
        let length = |want| DecodeError::Length {
            kind,
            len: p.len(),
            want,
        };
        if p.len() < BOOK_HEAD_LEN {
            return Err(length(BOOK_HEAD_LEN));
        }
        let u16_at = |at: usize| u16::from_le_bytes([p[at], p[at + 1]]);
        let (bids, asks) = (usize::from(u16_at(50)), usize::from(u16_at(52)));
        let want = BOOK_HEAD_LEN + LEVEL_LEN * (bids + asks);
        if p.len() != want {
            return Err(length(want));
        }
        for (at, value) in [(1, u16::from(p[1])), (54, u16_at(54))] {
            if value != 0 {
                return Err(DecodeError::Reserved {
                    kind,
                    offset: at,
                    value,
                });
            }
        }
        let flags = u16_at(offset::FLAGS);
        if flags & !book_flags::SNAPSHOT != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let header = UpdateHeader {
            symbol: u32_at(p, offset::SYMBOL),
            seq: u64_at(p, offset::SEQ),
            symbol_seq: u64_at(p, offset::SYMBOL_SEQ),
            exchange_ts_ns: u64_at(p, offset::EXCHANGE_TS),
            receive_ts_ns: u64_at(p, offset::RECEIVE_TS),
            publish_ts_ns: u64_at(p, offset::PUBLISH_TS),
        };
        let def = self
            .symbols
            .get(&header.symbol)
            .ok_or(DecodeError::Undefined(header.symbol))?;
        let level = |i: usize| {
            let at = BOOK_HEAD_LEN + LEVEL_LEN * i;
            (
                fixed(i64_at(p, at), def.price_decimals),
                fixed(i64_at(p, at + 8), def.size_decimals),
            )
        };
        Ok(ServerMessage::Book(BookMessage {
            header,
            depth: u16_at(48),
            snapshot: flags & book_flags::SNAPSHOT != 0,
            bids: (0..bids).map(level).collect(),
            asks: (bids..bids + asks).map(level).collect(),
        }))
    }

    fn binary_symbol(&mut self, p: &[u8]) -> Result<ServerMessage, DecodeError> {
        use offset::symbol as at;
        let name_len = p.get(at::NAME_LEN).map_or(0, |&n| usize::from(n));
        let want = at::NAME + name_len;
        if p.len() != want {
            return Err(DecodeError::Length {
                kind: msg_type::SYMBOL,
                len: p.len(),
                want,
            });
        }
        let name = std::str::from_utf8(&p[at::NAME..]).map_err(|_| DecodeError::NameNotUtf8)?;
        self.symbol_message(SymbolDef {
            id: u32_at(p, at::ID),
            name: name.to_owned(),
            price_decimals: p[at::PRICE_DECIMALS],
            size_decimals: p[at::SIZE_DECIMALS],
        })
    }

    fn symbol_message(&mut self, def: SymbolDef) -> Result<ServerMessage, DecodeError> {
        self.define(def.clone())?;
        Ok(ServerMessage::Symbol(def))
    }
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

fn i64_at(p: &[u8], at: usize) -> i64 {
    u64_at(p, at) as i64
}

fn fixed(mantissa: i64, decimals: u8) -> Fixed {
    Fixed { mantissa, decimals }
}

fn side_of(b: u8) -> Option<Side> {
    [Side::Unknown, Side::Buy, Side::Sell]
        .into_iter()
        .find(|s| *s as u8 == b)
}

fn status_of(b: u8) -> Option<SymbolStatus> {
    [
        SymbolStatus::Live,
        SymbolStatus::StaleGap,
        SymbolStatus::StaleDisconnected,
        SymbolStatus::StaleSilent,
        SymbolStatus::StaleBookGap,
    ]
    .into_iter()
    .find(|s| *s as u8 == b)
}

#[cfg(test)]
mod tests {
    use super::json::parse_exact;
    use super::*;
    use crate::update::{Sequenced, Update, UpdateKind};
    use crate::wire::encode::{
        frame_payload, symbol_binary, symbol_json, FrameEncoder, SymbolFormat,
    };

    const FMT: SymbolFormat<'static> = SymbolFormat {
        name: "BTCUSDT",
        price_decimals: 8,
        size_decimals: 8,
    };

    fn btc() -> SymbolDef {
        SymbolDef {
            id: 7,
            name: "BTCUSDT".into(),
            price_decimals: 8,
            size_decimals: 8,
        }
    }

    /// A decoder that has read BTCUSDT's definition.
    fn decoder() -> Decoder {
        let mut d = Decoder::new();
        d.define(btc()).unwrap();
        d
    }

    fn sequenced(kind: UpdateKind) -> Sequenced {
        Sequenced {
            update: Update {
                symbol: 7,
                kind,
                exchange_ts_ns: 11,
                receive_ts_ns: 1_723_161_253_937_000_000,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            },
            seq: 42,
            symbol_seq: 5,
            publish_ts_ns: 1_900_000_000_000_000_000,
        }
    }

    const HEADER: UpdateHeader = UpdateHeader {
        symbol: 7,
        seq: 42,
        symbol_seq: 5,
        exchange_ts_ns: 11,
        receive_ts_ns: 1_723_161_253_937_000_000,
        publish_ts_ns: 1_900_000_000_000_000_000,
    };

    fn f8(mantissa: i64) -> Fixed {
        fixed(mantissa, 8)
    }

    /// Every kind of message, encoded by the server's encoder: (what, the
    /// binary payload, the JSON payload, what both decode to).
    fn cases() -> Vec<(&'static str, Vec<u8>, Vec<u8>, ServerMessage)> {
        let mut enc = FrameEncoder::new();
        let mut update = |kind| {
            let e = enc.encode(&sequenced(kind), FMT);
            (
                frame_payload(&e.binary).to_vec(),
                frame_payload(&e.json).to_vec(),
            )
        };
        let quote = |bid_sz: Option<i64>, ask_sz: Option<i64>| UpdateKind::Quote {
            bid_px: 6_183_763_000_000,
            bid_sz,
            ask_px: 6_183_764_000_000,
            ask_sz,
        };
        let decoded_quote = |bid_size: Option<i64>, ask_size: Option<i64>| {
            ServerMessage::Quote(Quote {
                header: HEADER,
                bid: f8(6_183_763_000_000),
                bid_size: bid_size.map(f8),
                ask: f8(6_183_764_000_000),
                ask_size: ask_size.map(f8),
            })
        };
        let mut out = Vec::new();
        // TC0: a symbol definition.
        out.push((
            "symbol",
            frame_payload(&symbol_binary(7, "BTCUSDT", 8, 8)).to_vec(),
            frame_payload(&symbol_json(7, "BTCUSDT", 8, 8)).to_vec(),
            ServerMessage::Symbol(btc()),
        ));
        // TC1-TC4: quotes with both sizes, either unknown, neither; a real 0.
        for (what, bid, ask) in [
            ("quote", Some(378_826_000), Some(154_698_000)),
            ("quote, bid size unknown", None, Some(154_698_000)),
            ("quote, ask size unknown", Some(0), None),
            ("quote, both sizes unknown", None, None),
        ] {
            let (b, j) = update(quote(bid, ask));
            out.push((what, b, j, decoded_quote(bid, ask)));
        }
        // TC5-TC7: trades of each side; a negative mantissa reads back.
        for side in [Side::Unknown, Side::Buy, Side::Sell] {
            let (b, j) = update(UpdateKind::Trade {
                px: 150,
                sz: -1,
                side,
            });
            let t = Trade {
                header: HEADER,
                price: f8(150),
                size: f8(-1),
                side,
            };
            out.push(("trade", b, j, ServerMessage::Trade(t)));
        }
        // TC8-TC11: every status.
        for status in [
            SymbolStatus::Live,
            SymbolStatus::StaleGap,
            SymbolStatus::StaleDisconnected,
            SymbolStatus::StaleSilent,
        ] {
            let (b, j) = update(UpdateKind::Status(status));
            let s = Status {
                header: HEADER,
                status,
            };
            out.push(("status", b, j, ServerMessage::Status(s)));
        }
        // TC12-TC14: a book.10 snapshot, the full book's changes (a removal
        // among them), an empty snapshot.
        let book = |depth: u16, snapshot: bool, bids: &[(i64, i64)], asks: &[(i64, i64)]| {
            let head = crate::wire::encode::BookHead {
                symbol: 7,
                seq: 42,
                book_seq: 5,
                exchange_ts_ns: 11,
                receive_ts_ns: 1_723_161_253_937_000_000,
                publish_ts_ns: 1_900_000_000_000_000_000,
                depth,
                snapshot,
            };
            let e = FrameEncoder::new().encode_book(
                &head,
                crate::wire::encode::BookLevels { bids, asks },
                FMT,
            );
            let level = |&(p, s): &(i64, i64)| (f8(p), f8(s));
            (
                frame_payload(&e.binary).to_vec(),
                frame_payload(&e.json).to_vec(),
                ServerMessage::Book(BookMessage {
                    header: HEADER,
                    depth,
                    snapshot,
                    bids: bids.iter().map(level).collect(),
                    asks: asks.iter().map(level).collect(),
                }),
            )
        };
        for (what, (b, j, m)) in [
            (
                "book.10",
                book(10, true, &[(200, 3), (100, 1)], &[(300, 2)]),
            ),
            (
                "book changes",
                book(0, false, &[(200, 0)], &[(300, 5), (400, 1)]),
            ),
            ("empty book", book(0, true, &[], &[])),
        ] {
            out.push((what, b, j, m));
        }
        out
    }

    #[test]
    fn every_kind_decodes_in_both_subprotocols() {
        for (what, binary, json, want) in cases() {
            let got = decoder().decode_binary(&binary).unwrap();
            assert_eq!(got, want, "binary {what}");
            let got = decoder().decode_message(false, &json).unwrap();
            assert_eq!(got, want, "json {what}: {}", String::from_utf8_lossy(&json));
        }
    }

    #[test]
    fn the_protocol_page_examples_decode() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        // TC0: the binary quote, from its hex dump (after the frame header).
        let start = doc.find("82 50\n").unwrap();
        let bytes: Vec<u8> = doc[start..]
            .lines()
            .take(6)
            .flat_map(|l| l.split("   ").next().unwrap().split_whitespace())
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .skip(2)
            .collect();
        let mut d = decoder();
        let ServerMessage::Quote(q) = d.decode_binary(&bytes).unwrap() else {
            panic!("not a quote");
        };
        assert_eq!(q.bid.to_string(), "61837.63000000");
        assert_eq!(q.bid_size.unwrap().to_string(), "3.78826000");
        assert_eq!((q.header.seq, q.header.symbol_seq), (42, 5));
        // TC1: every JSON line of the page's examples that is one of ours.
        let mut json = 0;
        for line in doc.lines().filter(|l| l.starts_with("{\"type\":")) {
            let msg = d.decode_json(line.as_bytes());
            assert!(msg.is_ok(), "{line}: {msg:?}");
            json += 1;
        }
        assert!(json >= 10, "{json} JSON examples");
    }

    #[test]
    fn truncated_inputs_are_refused_at_every_cut() {
        for (what, binary, json, _) in cases() {
            for cut in 0..binary.len() {
                let got = decoder().decode_binary(&binary[..cut]);
                assert!(got.is_err(), "binary {what} cut at {cut}: {got:?}");
            }
            for cut in 0..json.len() {
                let got = decoder().decode_json(&json[..cut]);
                assert!(got.is_err(), "json {what} cut at {cut}: {got:?}");
            }
            // One byte too many is refused as well.
            let mut longer = binary.clone();
            longer.push(0);
            assert!(decoder().decode_binary(&longer).is_err(), "{what} + 1");
        }
    }

    #[test]
    fn unknown_type_bytes_are_refused() {
        let (_, mut quote, _, _) = cases().swap_remove(1);
        for t in (0..=255u8).filter(|t| !(1..=7).contains(t)) {
            quote[0] = t;
            let got = decoder().decode_binary(&quote);
            assert!(
                matches!(got, Err(DecodeError::UnknownType(x)) if x == t),
                "{t}: {got:?}"
            );
        }
    }

    #[test]
    fn flag_bits_are_checked() {
        let all = cases();
        let quote = &all[1].1;
        // TC0: every bit this version does not define.
        for bit in 2..16 {
            let mut q = quote.clone();
            q[offset::FLAGS..offset::FLAGS + 2].copy_from_slice(&(1u16 << bit).to_le_bytes());
            let got = decoder().decode_binary(&q);
            assert!(
                matches!(got, Err(DecodeError::UnknownFlags(_))),
                "bit {bit}: {got:?}"
            );
        }
        // TC1: a flagged size must have mantissa 0.
        for (bit, at) in [(1u16, offset::BID_SIZE), (2, offset::ASK_SIZE)] {
            let mut q = quote.clone();
            q[offset::FLAGS] = bit as u8;
            assert!(q[at..at + 8].iter().any(|&b| b != 0));
            let got = decoder().decode_binary(&q);
            assert!(
                matches!(got, Err(DecodeError::UnknownSizeWithMantissa { .. })),
                "{got:?}"
            );
        }
        // TC2: trades and statuses carry no flags.
        for (what, binary, _, _) in &all[5..12] {
            let mut b = binary.clone();
            b[offset::FLAGS] = 1;
            let got = decoder().decode_binary(&b);
            assert!(
                matches!(got, Err(DecodeError::Reserved { .. })),
                "{what}: {got:?}"
            );
        }
        // TC3: a quote's byte 1 is 0.
        let mut q = quote.clone();
        q[offset::SIDE_OR_STATUS] = 1;
        assert!(decoder().decode_binary(&q).is_err());
        // TC4: a book has one flag (snapshot), byte 1 and offset 54 are 0,
        // and its length follows its counts.
        let book = &all[12].1;
        for (at, value) in [(offset::FLAGS, 2u8), (1, 1), (54, 1)] {
            let mut b = book.clone();
            b[at] = value;
            let got = decoder().decode_binary(&b);
            assert!(
                matches!(
                    got,
                    Err(DecodeError::UnknownFlags(_) | DecodeError::Reserved { .. })
                ),
                "{at}: {got:?}"
            );
        }
        let mut b = book.clone();
        b[50] += 1;
        let got = decoder().decode_binary(&b);
        assert!(matches!(got, Err(DecodeError::Length { .. })), "{got:?}");
    }

    #[test]
    fn unknown_sides_and_statuses_are_refused() {
        let all = cases();
        let (trade, status) = (&all[5].1, &all[8].1);
        for b in 3..=255u8 {
            let mut t = trade.clone();
            t[offset::SIDE_OR_STATUS] = b;
            let got = decoder().decode_binary(&t);
            assert!(matches!(got, Err(DecodeError::UnknownSide(x)) if x == b));
            if b >= 5 {
                let mut s = status.clone();
                s[offset::SIDE_OR_STATUS] = b;
                let got = decoder().decode_binary(&s);
                assert!(matches!(got, Err(DecodeError::UnknownStatus(x)) if x == b));
            }
        }
    }

    #[test]
    fn updates_need_their_definition() {
        for (what, binary, json, _) in cases().into_iter().skip(1) {
            let got = Decoder::new().decode_binary(&binary);
            assert!(
                matches!(got, Err(DecodeError::Undefined(7))),
                "{what}: {got:?}"
            );
            let got = Decoder::new().decode_json(&json);
            assert!(
                matches!(got, Err(DecodeError::Undefined(7))),
                "{what}: {got:?}"
            );
        }
        // A definition read from the wire is remembered.
        let mut d = Decoder::new();
        let all = cases();
        d.decode_binary(&all[0].1).unwrap();
        assert_eq!(d.symbol(7), Some(&btc()));
        assert_eq!(d.decode_binary(&all[1].1).unwrap(), all[1].3);
    }

    #[test]
    fn symbol_definitions_are_checked() {
        // TC0: name_len disagrees with the length.
        let mut b = frame_payload(&symbol_binary(7, "BTCUSDT", 8, 8)).to_vec();
        b[offset::symbol::NAME_LEN] = 6;
        assert!(matches!(
            Decoder::new().decode_binary(&b),
            Err(DecodeError::Length { .. })
        ));
        // TC1: a name that is not UTF-8.
        let b = [&[3, 8, 8, 2, 7, 0, 0, 0][..], &[0xff, 0xfe]].concat();
        assert!(matches!(
            Decoder::new().decode_binary(&b),
            Err(DecodeError::NameNotUtf8)
        ));
        // TC2: more decimals than a symbol may have, in both forms.
        let b = frame_payload(&symbol_binary(7, "X", 19, 8)).to_vec();
        assert!(matches!(
            Decoder::new().decode_binary(&b),
            Err(DecodeError::TooManyDecimals(19))
        ));
        let j = br#"{"type":"symbol","id":7,"symbol":"X","price_decimals":8,"size_decimals":256}"#;
        assert!(Decoder::new().decode_json(j).is_err());
        // TC3: an empty name is a name.
        let b = frame_payload(&symbol_binary(1, "", 0, 0)).to_vec();
        assert!(Decoder::new().decode_binary(&b).is_ok());
    }

    #[test]
    fn json_forms_are_checked() {
        let quote = r#"{"type":"quote","symbol":"BTCUSDT","id":7,"seq":42,"symbol_seq":5,"exchange_ts":11,"receive_ts":1,"publish_ts":2,"bid":"BID","bid_size":SIZE,"ask":"1.00000000","ask_size":null}"#;
        let q = |bid: &str, size: &str| quote.replace("BID", bid).replace("SIZE", size);
        // TC0: the canonical form is taken, an unknown size is `null`.
        let ok = decoder().decode_json(q("-0.50000000", "null").as_bytes());
        assert!(ok.is_ok(), "{ok:?}");
        // TC1: any other way of writing a number is refused.
        for bid in [
            "1.5",
            "01.00000000",
            "-0.00000000",
            "1.000000000",
            "+1.00000000",
            "1e3",
            "",
        ] {
            let got = decoder().decode_json(q(bid, "null").as_bytes());
            assert!(
                matches!(got, Err(DecodeError::Decimal { .. })),
                "{bid}: {got:?}"
            );
        }
        // TC2: a size that is a number, or absent, is not unknown.
        assert!(decoder()
            .decode_json(q("1.00000000", "0").as_bytes())
            .is_err());
        let absent = q("1.00000000", "null").replace(r#","bid_size":null"#, "");
        assert!(decoder().decode_json(absent.as_bytes()).is_err());
        // TC3: the name must be the definition's.
        let other = q("1.00000000", "null").replace("BTCUSDT", "ETHUSDT");
        assert!(matches!(
            decoder().decode_json(other.as_bytes()),
            Err(DecodeError::NameMismatch { .. })
        ));
        // TC4: statuses: live has no reason, stale a named one.
        let status = r#"{"type":"status","symbol":"BTCUSDT","id":7,"seq":1,"symbol_seq":1,"exchange_ts":0,"receive_ts":1,"publish_ts":2,"state":"#;
        for (tail, ok) in [
            (r#""live"}"#, true),
            (r#""stale","reason":"silent"}"#, true),
            (r#""live","reason":"gap"}"#, false),
            (r#""stale"}"#, false),
            (r#""stale","reason":"tired"}"#, false),
            (r#""dead"}"#, false),
        ] {
            let got = decoder().decode_json(format!("{status}{tail}").as_bytes());
            assert_eq!(got.is_ok(), ok, "{tail}: {got:?}");
        }
        // TC5: replies and notices are control messages; no type is an error.
        for (text, control) in [
            (
                r#"{"type":"ack","op":"subscribe","symbols":["*"],"snapshot":0}"#,
                true,
            ),
            (r#"{"type":"conflated","dropped":3,"latest":1}"#, true),
            (r#"{"type":"future-thing"}"#, true),
            (r#"{"op":"ack"}"#, false),
            (r#"{"type":7}"#, false),
            (r#"[1,2]"#, false),
            ("not json", false),
        ] {
            let got = decoder().decode_json(text.as_bytes());
            assert_eq!(
                matches!(got, Ok(ServerMessage::Control(_))),
                control,
                "{text}: {got:?}"
            );
        }
        // TC6: integers that do not fit their field.
        let big_id = quote.replace(r#""id":7"#, r#""id":4294967296"#);
        assert!(decoder().decode_json(big_id.as_bytes()).is_err());
        assert!(decoder()
            .decode_json(quote.replace(r#""seq":42"#, r#""seq":-1"#).as_bytes())
            .is_err());
    }

    #[test]
    fn extreme_mantissas_read_back() {
        for m in [i64::MIN, i64::MAX, 0, -1] {
            for decimals in [0, 8, MAX_DECIMALS] {
                let text = fixed(m, decimals).to_string();
                assert_eq!(
                    parse_exact(&text, decimals),
                    Some(fixed(m, decimals)),
                    "{text}"
                );
            }
        }
    }

    /// Arbitrary bytes, and valid messages with bytes changed, never make
    /// it panic (the fuzz target `frame_decode` does this at length).
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: Vec<Vec<u8>> = cases()
            .into_iter()
            .flat_map(|(_, b, j, _)| [b, j])
            .collect();
        for i in 0..20_000 {
            let mut data = if i % 4 == 0 {
                (0..next() % 100).map(|_| next() as u8).collect()
            } else {
                seeds[next() as usize % seeds.len()].clone()
            };
            for _ in 0..1 + next() % 3 {
                if !data.is_empty() {
                    let at = next() as usize % data.len();
                    data[at] = next() as u8;
                }
            }
            let mut d = decoder();
            let _ = d.decode_binary(&data);
            let _ = d.decode_json(&data);
        }
    }
}
