//! Candle frames (`docs/PROTOCOL.md`, "Candles"): one bar as it changes or
//! closes (`candle`), or a run of bars (`candles`: a subscribe's snapshot,
//! a catch-up's bars), in both subprotocols.
//!
//! Binary (`tickwire.v1`): the 48-byte header every update starts with
//! (byte 1 the interval's index, the `symbol_seq` slot the `candle_seq`),
//! then `u32` interval in seconds and a `u32` (reserved 0 in `candle`, the
//! number of bars in `candles`), then each bar in 64 bytes: `u64 start_ts`,
//! `i64` open, high, low, close, `i128` volume, `u64` trades.

use bytes::{BufMut, BytesMut};

use super::{
    msg_type, own_frames, write_json_str, write_u64, write_u64_fields, EncodedUpdate, FrameEncoder,
    SymbolFormat,
};
use crate::candle::{Bar, INTERVALS};
use crate::decimal::{write_fixed, write_fixed_wide};
use crate::update::SymbolId;

/// Bits of the u16 at offset 2 of a binary candle message.
pub mod candle_flags {
    /// `candle`: the bar is closed; it will not change again.
    pub const CLOSED: u16 = 1 << 0;
    /// `candles`: a snapshot, every bar kept (else the bars that changed
    /// since the client fell behind).
    pub const SNAPSHOT: u16 = 1 << 1;
    /// `candles`: the last bar is the open one (every other is closed).
    pub const LAST_OPEN: u16 = 1 << 2;
}

/// Bytes before the first bar.
pub const CANDLE_HEAD_LEN: usize = 56;
/// Bytes per bar.
pub const BAR_LEN: usize = 64;

/// What a candle frame says besides its bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandleHead {
    pub symbol: SymbolId,
    /// Index into [`INTERVALS`].
    pub interval: usize,
    pub seq: u64,
    pub candle_seq: u64,
    pub exchange_ts_ns: u64,
    pub receive_ts_ns: u64,
    pub publish_ts_ns: u64,
}

impl FrameEncoder {
    /// Encodes one `candle` frame in both subprotocols, carved from the
    /// encoder's arenas like every update.
    pub fn encode_candle(
        &mut self,
        head: &CandleHead,
        bar: &Bar,
        closed: bool,
        sym: SymbolFormat<'_>,
    ) -> EncodedUpdate {
        let flags = if closed { candle_flags::CLOSED } else { 0 };
        self.encode_with(
            CANDLE_HEAD_LEN + BAR_LEN,
            |out| {
                put_head(out, msg_type::CANDLE, head, flags, 0);
                put_bar(out, bar);
            },
            |json| {
                write_json_head(json, "candle", head, sym);
                write_bar(json, bar, closed, sym);
                json.push(b'}');
            },
        )
    }
}

/// A `candles` frame of `bars` (oldest first, each with whether it is
/// closed; only the last may be open), in allocations of its own: for a
/// snapshot or a catch-up, off the publisher's thread.
pub fn candles_frames(
    head: &CandleHead,
    bars: &[(Bar, bool)],
    snapshot: bool,
    sym: SymbolFormat<'_>,
) -> EncodedUpdate {
    let mut flags = if snapshot { candle_flags::SNAPSHOT } else { 0 };
    if bars.last().is_some_and(|&(_, closed)| !closed) {
        flags |= candle_flags::LAST_OPEN;
    }
    let binary = |out: &mut BytesMut| {
        // At most `MAX_HISTORY` + 1 bars: the count fits.
        put_head(out, msg_type::CANDLES, head, flags, bars.len() as u32);
        for (bar, _) in bars {
            put_bar(out, bar);
        }
    };
    let json = |out: &mut Vec<u8>| {
        write_json_head(out, "candles", head, sym);
        out.extend_from_slice(if snapshot {
            b",\"snapshot\":true,\"bars\":["
        } else {
            b",\"snapshot\":false,\"bars\":["
        });
        for (k, (bar, closed)) in bars.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.push(b'{');
            write_bar(out, bar, *closed, sym);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    };
    own_frames(CANDLE_HEAD_LEN + BAR_LEN * bars.len(), binary, json)
}

fn put_head(out: &mut BytesMut, kind: u8, head: &CandleHead, flags: u16, count: u32) {
    out.put_u8(kind);
    out.put_u8(head.interval as u8);
    out.put_u16_le(flags);
    out.put_u32_le(head.symbol);
    out.put_u64_le(head.seq);
    out.put_u64_le(head.candle_seq);
    out.put_u64_le(head.exchange_ts_ns);
    out.put_u64_le(head.receive_ts_ns);
    out.put_u64_le(head.publish_ts_ns);
    out.put_u32_le(INTERVALS[head.interval].1 as u32);
    out.put_u32_le(count);
}

fn put_bar(out: &mut BytesMut, bar: &Bar) {
    out.put_u64_le(bar.start_ts_ns);
    out.put_i64_le(bar.open);
    out.put_i64_le(bar.high);
    out.put_i64_le(bar.low);
    out.put_i64_le(bar.close);
    out.put_i128_le(bar.volume);
    out.put_u64_le(bar.trades);
}

/// `{"type":…` up to the timestamps, without the closing brace.
fn write_json_head(out: &mut Vec<u8>, kind: &str, head: &CandleHead, sym: SymbolFormat<'_>) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"symbol\":");
    write_json_str(out, sym.name);
    let interval = INTERVALS[head.interval].0.as_bytes();
    out.extend_from_slice(b",\"channel\":\"candles.");
    out.extend_from_slice(interval);
    out.extend_from_slice(b"\",\"interval\":\"");
    out.extend_from_slice(interval);
    out.push(b'"');
    write_u64_fields(
        out,
        [
            ("id", u64::from(head.symbol)),
            ("seq", head.seq),
            ("candle_seq", head.candle_seq),
            ("exchange_ts", head.exchange_ts_ns),
            ("receive_ts", head.receive_ts_ns),
            ("publish_ts", head.publish_ts_ns),
        ],
    );
}

/// The bar's fields, `"start_ts":…,"closed":…`, without braces (a leading
/// comma when they follow other fields).
fn write_bar(out: &mut Vec<u8>, bar: &Bar, closed: bool, sym: SymbolFormat<'_>) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    out.extend_from_slice(b"\"start_ts\":");
    write_u64(out, bar.start_ts_ns);
    for (key, px) in [
        ("open", bar.open),
        ("high", bar.high),
        ("low", bar.low),
        ("close", bar.close),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":\"");
        write_fixed(out, px, sym.price_decimals);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"volume\":\"");
    write_fixed_wide(out, bar.volume, sym.size_decimals);
    out.extend_from_slice(b"\",\"trades\":");
    write_u64(out, bar.trades);
    out.extend_from_slice(if closed {
        b",\"closed\":true"
    } else {
        b",\"closed\":false"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const FMT: SymbolFormat<'static> = SymbolFormat {
        name: "BTCUSDT",
        price_decimals: 2,
        size_decimals: 3,
    };

    fn head() -> CandleHead {
        CandleHead {
            symbol: 7,
            interval: 1,
            seq: 42,
            candle_seq: 5,
            exchange_ts_ns: 1_723_075_260_100_000_000,
            receive_ts_ns: 1_723_075_260_101_000_000,
            publish_ts_ns: 1_723_075_260_102_000_000,
        }
    }

    fn bar() -> Bar {
        Bar {
            start_ts_ns: 1_723_075_260_000_000_000,
            open: 6_183_001,
            high: 6_183_500,
            low: 6_182_950,
            close: 6_183_100,
            volume: 12_345,
            trades: 17,
        }
    }

    fn payload(frame: &bytes::Bytes) -> &[u8] {
        let h = crate::wire::frame::parse(frame).unwrap();
        &frame[h.header_len..]
    }

    /// The page's candle examples are the encoder's bytes.
    #[test]
    fn the_protocol_page_examples_are_the_encoders() {
        let fmt = SymbolFormat {
            name: "BTCUSDT",
            price_decimals: 8,
            size_decimals: 8,
        };
        let head = CandleHead {
            symbol: 7,
            interval: 1,
            seq: 60,
            candle_seq: 12,
            exchange_ts_ns: 1_723_161_300_019_000_000,
            receive_ts_ns: 1_723_161_298_770_000_000,
            publish_ts_ns: 1_900_000_000_000_400_000,
        };
        let bar = Bar {
            start_ts_ns: 1_723_161_240_000_000_000,
            open: 6_180_030_000_000,
            high: 6_181_250_000_000,
            low: 6_179_500_000_000,
            close: 6_180_810_000_000,
            volume: 4_182_600_000,
            trades: 913,
        };
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let e = FrameEncoder::new().encode_candle(&head, &bar, true, fmt);
        let json = std::str::from_utf8(payload(&e.json)).unwrap();
        assert!(doc.contains(json), "{json}");
        let start = doc.find("82 78\n").expect("the binary candle example");
        let bytes: Vec<u8> = doc[start..]
            .lines()
            .take(9)
            .flat_map(|l| l.split("   ").next().unwrap().split_whitespace())
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        assert_eq!(bytes, &e.binary[..]);
        let open = Bar {
            start_ts_ns: 1_723_161_300_000_000_000,
            open: 6_180_810_000_000,
            high: 6_180_810_000_000,
            low: 6_180_800_000_000,
            close: 6_180_800_000_000,
            volume: 20_000_000,
            trades: 2,
        };
        let head = CandleHead {
            seq: 75,
            candle_seq: 14,
            exchange_ts_ns: 1_723_161_300_107_000_000,
            receive_ts_ns: 1_723_161_298_861_000_000,
            publish_ts_ns: 1_900_000_000_000_500_000,
            ..head
        };
        let e = candles_frames(&head, &[(bar, true), (open, false)], true, fmt);
        let json = std::str::from_utf8(payload(&e.json)).unwrap();
        assert!(doc.contains(json), "{json}");
    }

    #[test]
    fn candle_layouts() {
        let f = FrameEncoder::new().encode_candle(&head(), &bar(), true, FMT);
        assert_eq!(
            std::str::from_utf8(payload(&f.json)).unwrap(),
            concat!(
                r#"{"type":"candle","symbol":"BTCUSDT","channel":"candles.1m","interval":"1m","id":7,"seq":42,"candle_seq":5,"#,
                r#""exchange_ts":1723075260100000000,"receive_ts":1723075260101000000,"publish_ts":1723075260102000000,"#,
                r#""start_ts":1723075260000000000,"open":"61830.01","high":"61835.00","low":"61829.50","close":"61831.00","#,
                r#""volume":"12.345","trades":17,"closed":true}"#
            )
        );
        let b = payload(&f.binary);
        assert_eq!(b.len(), CANDLE_HEAD_LEN + BAR_LEN);
        assert_eq!((b[0], b[1]), (msg_type::CANDLE, 1));
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), candle_flags::CLOSED);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 5);
        assert_eq!(u32::from_le_bytes(b[48..52].try_into().unwrap()), 60);
        assert_eq!(i128::from_le_bytes(b[96..112].try_into().unwrap()), 12_345);
        assert_eq!(u64::from_le_bytes(b[112..120].try_into().unwrap()), 17);
    }

    #[test]
    fn candles_layouts() {
        let mut open = bar();
        open.start_ts_ns += 60_000_000_000;
        let f = candles_frames(&head(), &[(bar(), true), (open, false)], true, FMT);
        let b = payload(&f.binary);
        assert_eq!(b.len(), CANDLE_HEAD_LEN + 2 * BAR_LEN);
        assert_eq!(b[0], msg_type::CANDLES);
        assert_eq!(
            u16::from_le_bytes([b[2], b[3]]),
            candle_flags::SNAPSHOT | candle_flags::LAST_OPEN
        );
        assert_eq!(u32::from_le_bytes(b[52..56].try_into().unwrap()), 2);
        let v: serde_json::Value = serde_json::from_slice(payload(&f.json)).unwrap();
        assert_eq!(v["type"], "candles");
        assert_eq!(v["snapshot"], true);
        assert_eq!(v["bars"][0]["closed"], true);
        assert_eq!(v["bars"][1]["closed"], false);
        assert_eq!(v["bars"][1]["open"], "61830.01");
    }
}
