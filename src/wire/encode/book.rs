//! Book frames (`docs/PROTOCOL.md`, "Books"): a top-N or full-depth
//! snapshot, or one event's changed levels, in both subprotocols.
//!
//! Binary (`tickwire.v1`, type 5): the 48-byte header every update starts
//! with (its `symbol_seq` slot holds the `book_seq`, its u16 flags
//! [`book_flags`]), then `u16 depth` (0: the full book), `u16 bids`,
//! `u16 asks`, `u16` reserved, then the bids and the asks as
//! `(i64 price, i64 size)` pairs, best first.

use bytes::{BufMut, BytesMut};

use super::{
    msg_type, own_frames, write_json_str, write_u64, write_u64_fields, EncodedUpdate, FrameEncoder,
    SymbolFormat,
};
use crate::decimal::write_fixed;
use crate::update::SymbolId;

/// Bits of the u16 at offset 2 of a binary book message.
pub mod book_flags {
    /// The message is the whole book (at its depth), not changes.
    pub const SNAPSHOT: u16 = 1 << 0;
}

/// Bytes before the first level of a binary book message.
pub const BOOK_HEAD_LEN: usize = 56;
/// Bytes per level.
pub const LEVEL_LEN: usize = 16;

/// What a book frame says besides its levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookHead {
    pub symbol: SymbolId,
    pub seq: u64,
    pub book_seq: u64,
    pub exchange_ts_ns: u64,
    pub receive_ts_ns: u64,
    pub publish_ts_ns: u64,
    /// 0 for the full book (`book`), else N of `book.N`.
    pub depth: u16,
    pub snapshot: bool,
}

/// The levels of one frame, each side best first. Each side holds at most
/// `u16::MAX` levels (the binary counts are u16; a book keeps far fewer).
#[derive(Debug, Clone, Copy)]
pub struct BookLevels<'a> {
    pub bids: &'a [(i64, i64)],
    pub asks: &'a [(i64, i64)],
}

impl BookLevels<'_> {
    fn binary_len(&self) -> usize {
        BOOK_HEAD_LEN + LEVEL_LEN * (self.bids.len() + self.asks.len())
    }
}

impl FrameEncoder {
    /// Encodes one book frame in both subprotocols, carved from the
    /// encoder's arenas like every update.
    pub fn encode_book(
        &mut self,
        head: &BookHead,
        levels: BookLevels<'_>,
        sym: SymbolFormat<'_>,
    ) -> EncodedUpdate {
        self.encode_with(
            levels.binary_len(),
            |out| put_binary(out, head, levels),
            |json| write_json(json, head, levels, sym),
        )
    }
}

/// [`FrameEncoder::encode_book`] in allocations of their own, for a
/// snapshot a connection asks for (a subscribe, a catch-up): off the
/// publisher's thread, and rare.
pub fn book_frames(
    head: &BookHead,
    levels: BookLevels<'_>,
    sym: SymbolFormat<'_>,
) -> EncodedUpdate {
    own_frames(
        levels.binary_len(),
        |out| put_binary(out, head, levels),
        |json| write_json(json, head, levels, sym),
    )
}

fn put_binary(out: &mut BytesMut, head: &BookHead, levels: BookLevels<'_>) {
    let flags = if head.snapshot {
        book_flags::SNAPSHOT
    } else {
        0
    };
    out.put_u8(msg_type::BOOK);
    out.put_u8(0);
    out.put_u16_le(flags);
    out.put_u32_le(head.symbol);
    out.put_u64_le(head.seq);
    out.put_u64_le(head.book_seq);
    out.put_u64_le(head.exchange_ts_ns);
    out.put_u64_le(head.receive_ts_ns);
    out.put_u64_le(head.publish_ts_ns);
    out.put_u16_le(head.depth);
    // Callers keep each side within u16 (see `BookLevels`).
    out.put_u16_le(levels.bids.len() as u16);
    out.put_u16_le(levels.asks.len() as u16);
    out.put_u16_le(0);
    for &(px, sz) in levels.bids.iter().chain(levels.asks) {
        out.put_i64_le(px);
        out.put_i64_le(sz);
    }
}

fn write_json(out: &mut Vec<u8>, head: &BookHead, levels: BookLevels<'_>, sym: SymbolFormat<'_>) {
    out.extend_from_slice(b"{\"type\":\"book\",\"symbol\":");
    write_json_str(out, sym.name);
    out.extend_from_slice(b",\"channel\":\"book");
    if head.depth != 0 {
        out.push(b'.');
        write_u64(out, u64::from(head.depth));
    }
    out.push(b'"');
    write_u64_fields(
        out,
        [
            ("id", u64::from(head.symbol)),
            ("seq", head.seq),
            ("book_seq", head.book_seq),
            ("exchange_ts", head.exchange_ts_ns),
            ("receive_ts", head.receive_ts_ns),
            ("publish_ts", head.publish_ts_ns),
        ],
    );
    out.extend_from_slice(if head.snapshot {
        b",\"snapshot\":true"
    } else {
        b",\"snapshot\":false"
    });
    for (key, side) in [("bids", levels.bids), ("asks", levels.asks)] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":[");
        for (i, &(px, sz)) in side.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"[\"");
            write_fixed(out, px, sym.price_decimals);
            out.extend_from_slice(b"\",\"");
            write_fixed(out, sz, sym.size_decimals);
            out.extend_from_slice(b"\"]");
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// A frame's payload, for tests: `Bytes` past the header.
#[cfg(test)]
fn payload(frame: &bytes::Bytes) -> &[u8] {
    let h = crate::wire::frame::parse(frame).unwrap();
    &frame[h.header_len..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FMT: SymbolFormat<'static> = SymbolFormat {
        name: "BTCUSDT",
        price_decimals: 2,
        size_decimals: 3,
    };

    fn head() -> BookHead {
        BookHead {
            symbol: 7,
            seq: 42,
            book_seq: 5,
            exchange_ts_ns: 1,
            receive_ts_ns: 2,
            publish_ts_ns: 3,
            depth: 10,
            snapshot: true,
        }
    }

    #[test]
    fn the_protocol_page_example_is_byte_for_byte() {
        let fmt = SymbolFormat {
            name: "BTCUSDT",
            price_decimals: 8,
            size_decimals: 8,
        };
        let head = BookHead {
            symbol: 7,
            seq: 42,
            book_seq: 5,
            exchange_ts_ns: 1_723_161_256_298_000_000,
            receive_ts_ns: 1_723_161_255_030_314_667,
            publish_ts_ns: 1_900_000_000_000_000_000,
            depth: 1,
            snapshot: true,
        };
        let levels = BookLevels {
            bids: &[(6_180_020_000_000, 290_900_000)],
            asks: &[(6_180_030_000_000, 500_000)],
        };
        let e = book_frames(&head, levels, fmt);
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let start = doc.find("82 58\n").unwrap();
        let hex: String = doc[start..]
            .lines()
            .take(7)
            .map(|l| l.split("   ").next().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let bytes: Vec<u8> = hex
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        assert_eq!(bytes, &e.binary[..]);
        let json = std::str::from_utf8(payload(&e.json)).unwrap();
        assert!(doc.contains(json), "{json}");
    }

    #[test]
    fn json_and_binary_layouts() {
        let levels = BookLevels {
            bids: &[(6_183_001, 1_500), (6_183_000, 20)],
            asks: &[(6_183_002, 0)],
        };
        let mut encoder = FrameEncoder::new();
        let a = encoder.encode_book(&head(), levels, FMT);
        let b = book_frames(&head(), levels, FMT);
        // TC0: the arena and the one-off encodings are the same bytes.
        assert_eq!(a.binary, b.binary);
        assert_eq!(a.json, b.json);
        assert_eq!(
            std::str::from_utf8(payload(&a.json)).unwrap(),
            r#"{"type":"book","symbol":"BTCUSDT","channel":"book.10","id":7,"seq":42,"book_seq":5,"exchange_ts":1,"receive_ts":2,"publish_ts":3,"snapshot":true,"bids":[["61830.01","1.500"],["61830.00","0.020"]],"asks":[["61830.02","0.000"]]}"#
        );
        // TC1: the binary layout, field by field.
        let p = payload(&a.binary);
        assert_eq!(p.len(), BOOK_HEAD_LEN + 3 * LEVEL_LEN);
        assert_eq!(p[0], msg_type::BOOK);
        assert_eq!(u16::from_le_bytes([p[2], p[3]]), book_flags::SNAPSHOT);
        assert_eq!(u32::from_le_bytes(p[4..8].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(p[16..24].try_into().unwrap()), 5);
        assert_eq!(&p[48..56], &[10, 0, 2, 0, 1, 0, 0, 0]);
        assert_eq!(i64::from_le_bytes(p[56..64].try_into().unwrap()), 6_183_001);
        assert_eq!(i64::from_le_bytes(p[88..96].try_into().unwrap()), 6_183_002);
        // TC2: the full book and changes.
        let full = book_frames(
            &BookHead {
                depth: 0,
                snapshot: false,
                ..head()
            },
            BookLevels {
                bids: &[],
                asks: &[],
            },
            FMT,
        );
        let text = std::str::from_utf8(payload(&full.json)).unwrap();
        assert!(text.contains(r#""channel":"book","#), "{text}");
        assert!(
            text.ends_with(r#""snapshot":false,"bids":[],"asks":[]}"#),
            "{text}"
        );
    }
}
