//! Candle messages read back (`candle`, `candles`), binary and JSON, as
//! strictly as every other message: a length, a flag or a reserved byte
//! the page does not define is an error.

use serde_json::Value;

use super::json::{json_int, json_str, parse_exact, parse_exact_wide};
use super::{fixed, i64_at, u32_at, u64_at, DecodeError, Decoder, ServerMessage, UpdateHeader};
use crate::candle::INTERVALS;
use crate::decimal::{Fixed, WideFixed};
use crate::wire::encode::{candle_flags, msg_type, BAR_LEN, CANDLE_HEAD_LEN};

/// One bar; the volume, a sum of sizes, in 128 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandleBar {
    pub start_ts_ns: u64,
    pub open: Fixed,
    pub high: Fixed,
    pub low: Fixed,
    pub close: Fixed,
    pub volume: WideFixed,
    pub trades: u64,
    pub closed: bool,
}

/// A `candle` (one bar as it changes or closes) or a `candles` message (a
/// snapshot, or what changed while the client was behind), oldest first.
/// `header.symbol_seq` is the interval's `candle_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandleMessage {
    pub header: UpdateHeader,
    /// Index into [`INTERVALS`].
    pub interval: usize,
    /// A `candles` message.
    pub list: bool,
    /// A `candles` snapshot: every bar kept.
    pub snapshot: bool,
    pub bars: Vec<CandleBar>,
}

/// The interval and flags of a binary candle message whose length has been
/// checked, if its interval, counts and flags are ones the page defines.
fn check_head(p: &[u8], list: bool, count: usize) -> Result<(usize, u16), DecodeError> {
    let kind = p[0];
    let interval = usize::from(p[1]);
    let Some(&(_, seconds)) = INTERVALS.get(interval) else {
        return Err(DecodeError::Field { key: "interval" });
    };
    if u64::from(u32_at(p, 48)) != seconds {
        return Err(DecodeError::Field { key: "interval" });
    }
    if !list && count != 0 {
        return Err(DecodeError::Reserved {
            kind,
            offset: 52,
            value: count.min(0xffff) as u16,
        });
    }
    let flags = u16::from_le_bytes([p[2], p[3]]);
    let defined = if list {
        candle_flags::SNAPSHOT | candle_flags::LAST_OPEN
    } else {
        candle_flags::CLOSED
    };
    if flags & !defined != 0 || (list && count == 0) {
        return Err(DecodeError::UnknownFlags(flags));
    }
    Ok((interval, flags))
}

impl Decoder {
    pub(super) fn binary_candle(&self, p: &[u8]) -> Result<ServerMessage, DecodeError> {
        let kind = p[0];
        let list = kind == msg_type::CANDLES;
        let length = |want| DecodeError::Length {
            kind,
            len: p.len(),
            want,
        };
        if p.len() < CANDLE_HEAD_LEN {
            return Err(length(CANDLE_HEAD_LEN + BAR_LEN));
        }
        let count = u32_at(p, 52) as usize;
        let want = CANDLE_HEAD_LEN + BAR_LEN * if list { count } else { 1 };
        if p.len() != want {
            return Err(length(want));
        }
        let (interval, flags) = check_head(p, list, count)?;
        let header = UpdateHeader {
            symbol: u32_at(p, 4),
            seq: u64_at(p, 8),
            symbol_seq: u64_at(p, 16),
            exchange_ts_ns: u64_at(p, 24),
            receive_ts_ns: u64_at(p, 32),
            publish_ts_ns: u64_at(p, 40),
        };
        let def = self
            .symbols
            .get(&header.symbol)
            .ok_or(DecodeError::Undefined(header.symbol))?;
        let n = if list { count } else { 1 };
        let bar = |k: usize| {
            let at = CANDLE_HEAD_LEN + BAR_LEN * k;
            let px = |o: usize| fixed(i64_at(p, at + o), def.price_decimals);
            let mut volume = [0u8; 16];
            volume.copy_from_slice(&p[at + 40..at + 56]);
            CandleBar {
                start_ts_ns: u64_at(p, at),
                open: px(8),
                high: px(16),
                low: px(24),
                close: px(32),
                volume: WideFixed {
                    mantissa: i128::from_le_bytes(volume),
                    decimals: def.size_decimals,
                },
                trades: u64_at(p, at + 56),
                closed: if list {
                    k + 1 < n || flags & candle_flags::LAST_OPEN == 0
                } else {
                    flags & candle_flags::CLOSED != 0
                },
            }
        };
        Ok(ServerMessage::Candle(CandleMessage {
            header,
            interval,
            list,
            snapshot: flags & candle_flags::SNAPSHOT != 0,
            bars: (0..n).map(bar).collect(),
        }))
    }

    pub(super) fn json_candle(&self, v: &Value, list: bool) -> Result<ServerMessage, DecodeError> {
        let (header, def) = self.header(v, "candle_seq")?;
        let name = json_str(v, "interval")?;
        let interval = INTERVALS
            .iter()
            .position(|&(n, _)| n == name)
            .ok_or(DecodeError::Field { key: "interval" })?;
        if json_str(v, "channel")? != format!("candles.{name}") {
            return Err(DecodeError::Field { key: "channel" });
        }
        let (pd, sd) = (def.price_decimals, def.size_decimals);
        let bar = |b: &Value| -> Result<CandleBar, DecodeError> {
            let px = |key: &'static str| {
                let text = json_str(b, key)?;
                parse_exact(text, pd).ok_or_else(|| DecodeError::Decimal {
                    key,
                    text: text.to_owned(),
                    decimals: pd,
                })
            };
            let volume = json_str(b, "volume")?;
            Ok(CandleBar {
                start_ts_ns: json_int(b, "start_ts")?,
                open: px("open")?,
                high: px("high")?,
                low: px("low")?,
                close: px("close")?,
                volume: WideFixed {
                    mantissa: parse_exact_wide(volume, sd).ok_or_else(|| DecodeError::Decimal {
                        key: "volume",
                        text: volume.to_owned(),
                        decimals: sd,
                    })?,
                    decimals: sd,
                },
                trades: json_int(b, "trades")?,
                closed: b
                    .get("closed")
                    .and_then(Value::as_bool)
                    .ok_or(DecodeError::Field { key: "closed" })?,
            })
        };
        let (snapshot, bars) = if list {
            let snapshot = v
                .get("snapshot")
                .and_then(Value::as_bool)
                .ok_or(DecodeError::Field { key: "snapshot" })?;
            let bars = v
                .get("bars")
                .and_then(Value::as_array)
                .filter(|b| !b.is_empty())
                .ok_or(DecodeError::Field { key: "bars" })?;
            (snapshot, bars.iter().map(bar).collect::<Result<_, _>>()?)
        } else {
            (false, vec![bar(v)?])
        };
        Ok(ServerMessage::Candle(CandleMessage {
            header,
            interval,
            list,
            snapshot,
            bars,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candle::Bar;
    use crate::wire::encode::{
        candles_frames, frame_payload, CandleHead, FrameEncoder, SymbolFormat,
    };

    fn decoder() -> Decoder {
        let mut d = Decoder::new();
        d.define(crate::wire::decode::SymbolDef {
            id: 3,
            name: "ETHUSDT".into(),
            price_decimals: 2,
            size_decimals: 4,
        })
        .unwrap();
        d
    }

    const FMT: SymbolFormat<'static> = SymbolFormat {
        name: "ETHUSDT",
        price_decimals: 2,
        size_decimals: 4,
    };

    fn head() -> CandleHead {
        CandleHead {
            symbol: 3,
            interval: 2,
            seq: 9,
            candle_seq: 4,
            exchange_ts_ns: 1,
            receive_ts_ns: 2,
            publish_ts_ns: 3,
        }
    }

    fn bar(start: u64, volume: i128) -> Bar {
        Bar {
            start_ts_ns: start,
            open: 250_001,
            high: 250_100,
            low: -5,
            close: 250_000,
            volume,
            trades: 3,
        }
    }

    /// Both subprotocols decode to the same message, with the values given.
    fn both(frames: &crate::wire::encode::EncodedUpdate) -> CandleMessage {
        let b = decoder()
            .decode_binary(&frame_payload(&frames.binary))
            .unwrap();
        let j = decoder().decode_json(&frame_payload(&frames.json)).unwrap();
        assert_eq!(b, j);
        match b {
            ServerMessage::Candle(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn candles_decode_alike_in_both_subprotocols() {
        let wide = i128::from(i64::MAX) * 3;
        let f = FrameEncoder::new().encode_candle(&head(), &bar(300, wide), true, FMT);
        let c = both(&f);
        assert_eq!((c.interval, c.list, c.header.symbol_seq), (2, false, 4));
        assert_eq!(c.bars[0].volume.mantissa, wide);
        assert_eq!(c.bars[0].low.to_string(), "-0.05");
        assert!(c.bars[0].closed);
        let bars = [(bar(0, 1), true), (bar(300, 2), true), (bar(600, 3), false)];
        let c = both(&candles_frames(&head(), &bars, false, FMT));
        assert!(c.list && !c.snapshot);
        let closed: Vec<bool> = c.bars.iter().map(|b| b.closed).collect();
        assert_eq!(closed, [true, true, false]);
        assert_eq!(c.bars[2].start_ts_ns, 600);
    }

    #[test]
    fn malformed_candles_are_refused() {
        let f = FrameEncoder::new().encode_candle(&head(), &bar(0, 1), false, FMT);
        let good = frame_payload(&f.binary).to_vec();
        let refused = |p: &[u8]| decoder().decode_binary(p).is_err();
        assert!(!refused(&good));
        assert!(refused(&good[..good.len() - 1]));
        let mut longer = good.clone();
        longer.push(0);
        assert!(refused(&longer));
        for (at, value) in [(1, 6u8), (2, 0x80), (48, 61), (52, 1)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert!(refused(&bad), "byte {at} = {value}");
        }
        // A list of no bars, and a count that disagrees with the length.
        let f = candles_frames(&head(), &[(bar(0, 1), false)], true, FMT);
        let list = frame_payload(&f.binary).to_vec();
        for count in [0u8, 2] {
            let mut bad = list.clone();
            bad[52] = count;
            assert!(refused(&bad), "count {count}");
        }
        let json = String::from_utf8(frame_payload(&f.json).to_vec()).unwrap();
        for (from, to) in [
            ("\"interval\":\"5m\"", "\"interval\":\"2m\""),
            ("\"channel\":\"candles.5m\"", "\"channel\":\"candles.1m\""),
            ("\"volume\":\"0.0001\"", "\"volume\":\"0.001\""),
            ("\"bars\":[{", "\"bars\":[],\"x\":[{"),
        ] {
            assert!(json.contains(from), "{from}");
            let bad = json.replace(from, to);
            assert!(decoder().decode_json(bad.as_bytes()).is_err(), "{to}");
        }
    }
}
