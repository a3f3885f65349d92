//! `tickwire.v1.json` read back: control messages and market data as JSON
//! text, with prices and sizes kept as the exact decimals they were sent
//! as.

use serde_json::Value;

use super::{
    fixed, DecodeError, Decoder, Quote, ServerMessage, Status, SymbolDef, Trade, UpdateHeader,
};
use crate::decimal::Fixed;
use crate::update::{Side, SymbolStatus};

impl Decoder {
    /// A text message: JSON in both subprotocols.
    pub fn decode_json(&mut self, text: &[u8]) -> Result<ServerMessage, DecodeError> {
        let v: Value = serde_json::from_slice(text)?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or(DecodeError::NoType)?;
        match kind {
            "symbol" => {
                let def = SymbolDef {
                    id: json_int(&v, "id")?,
                    name: json_str(&v, "symbol")?.to_owned(),
                    price_decimals: json_int(&v, "price_decimals")?,
                    size_decimals: json_int(&v, "size_decimals")?,
                };
                self.symbol_message(def)
            }
            "quote" | "trade" | "status" => self.json_update(&v, kind),
            "book" => self.json_book(&v),
            "candle" | "candles" => self.json_candle(&v, kind == "candles"),
            _ => Ok(ServerMessage::Control(v)),
        }
    }

    /// An update's header (its own sequence under `seq_key`) and its
    /// symbol's definition, which the name must match.
    pub(super) fn header(
        &self,
        v: &Value,
        seq_key: &'static str,
    ) -> Result<(UpdateHeader, &SymbolDef), DecodeError> {
        let header = UpdateHeader {
            symbol: json_int(v, "id")?,
            seq: json_int(v, "seq")?,
            symbol_seq: json_int(v, seq_key)?,
            exchange_ts_ns: json_int(v, "exchange_ts")?,
            receive_ts_ns: json_int(v, "receive_ts")?,
            publish_ts_ns: json_int(v, "publish_ts")?,
        };
        let def = self
            .symbols
            .get(&header.symbol)
            .ok_or(DecodeError::Undefined(header.symbol))?;
        let name = json_str(v, "symbol")?;
        if name != def.name {
            return Err(DecodeError::NameMismatch {
                id: def.id,
                got: name.to_owned(),
                defined: def.name.clone(),
            });
        }
        Ok((header, def))
    }

    fn json_update(&self, v: &Value, kind: &str) -> Result<ServerMessage, DecodeError> {
        let (header, def) = self.header(v, "symbol_seq")?;
        let (pd, sd) = (def.price_decimals, def.size_decimals);
        match kind {
            "quote" => Ok(ServerMessage::Quote(Quote {
                header,
                bid: json_fixed(v, "bid", pd)?,
                bid_size: json_size(v, "bid_size", sd)?,
                ask: json_fixed(v, "ask", pd)?,
                ask_size: json_size(v, "ask_size", sd)?,
            })),
            "trade" => Ok(ServerMessage::Trade(Trade {
                header,
                price: json_fixed(v, "price", pd)?,
                size: json_fixed(v, "size", sd)?,
                side: match json_str(v, "side")? {
                    "unknown" => Side::Unknown,
                    "buy" => Side::Buy,
                    "sell" => Side::Sell,
                    _ => return Err(DecodeError::Field { key: "side" }),
                },
            })),
            _ => Ok(ServerMessage::Status(Status {
                header,
                status: json_status(v)?,
            })),
        }
    }
}

impl Decoder {
    fn json_book(&self, v: &Value) -> Result<ServerMessage, DecodeError> {
        let (header, def) = self.header(v, "book_seq")?;
        let depth = match json_str(v, "channel")? {
            "book" => 0,
            c => c
                .strip_prefix("book.")
                .and_then(|n| n.parse::<u16>().ok())
                .filter(|&n| n != 0)
                .ok_or(DecodeError::Field { key: "channel" })?,
        };
        let snapshot = v
            .get("snapshot")
            .and_then(Value::as_bool)
            .ok_or(DecodeError::Field { key: "snapshot" })?;
        let side = |key: &'static str| -> Result<Vec<(Fixed, Fixed)>, DecodeError> {
            let list = v
                .get(key)
                .and_then(Value::as_array)
                .ok_or(DecodeError::Field { key })?;
            list.iter()
                .map(|l| {
                    let pair = l.as_array().filter(|a| a.len() == 2);
                    let pair = pair.ok_or(DecodeError::Field { key })?;
                    let text = |x: &Value, d| {
                        let t = x.as_str().ok_or(DecodeError::Field { key })?;
                        parse_exact(t, d).ok_or_else(|| DecodeError::Decimal {
                            key,
                            text: t.to_owned(),
                            decimals: d,
                        })
                    };
                    Ok((
                        text(&pair[0], def.price_decimals)?,
                        text(&pair[1], def.size_decimals)?,
                    ))
                })
                .collect()
        };
        Ok(ServerMessage::Book(super::BookMessage {
            header,
            depth,
            snapshot,
            bids: side("bids")?,
            asks: side("asks")?,
        }))
    }
}

pub(super) fn json_str<'a>(v: &'a Value, key: &'static str) -> Result<&'a str, DecodeError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or(DecodeError::Field { key })
}

/// A non-negative JSON integer that fits `T`.
pub(super) fn json_int<T: TryFrom<u64>>(v: &Value, key: &'static str) -> Result<T, DecodeError> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| T::try_from(n).ok())
        .ok_or(DecodeError::Field { key })
}

/// A size: a decimal string, or `null` when unknown; never absent.
fn json_size(v: &Value, key: &'static str, decimals: u8) -> Result<Option<Fixed>, DecodeError> {
    match v.get(key) {
        Some(Value::Null) => Ok(None),
        _ => json_fixed(v, key, decimals).map(Some),
    }
}

pub(super) fn json_fixed(v: &Value, key: &'static str, decimals: u8) -> Result<Fixed, DecodeError> {
    let text = json_str(v, key)?;
    parse_exact(text, decimals).ok_or_else(|| DecodeError::Decimal {
        key,
        text: text.to_owned(),
        decimals,
    })
}

/// `text` as the encoder writes `mantissa × 10^-decimals`: an optional
/// `-`, integer digits with no superfluous leading zero, and exactly
/// `decimals` fraction digits (no point when there are none); no `-0`.
/// Anything else is refused, so that a decoded value displays as the very
/// text that was sent.
pub(super) fn parse_exact(text: &str, decimals: u8) -> Option<Fixed> {
    let mantissa = i64::try_from(parse_exact_wide(text, decimals)?).ok()?;
    Some(fixed(mantissa, decimals))
}

/// [`parse_exact`] of a 128-bit mantissa (a candle's volume).
pub(super) fn parse_exact_wide(text: &str, decimals: u8) -> Option<i128> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) if decimals > 0 && f.len() == usize::from(decimals) => (i, f),
        None if decimals == 0 => (body, ""),
        _ => return None,
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (decimals > 0 && !digits(frac)) || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    // Accumulated negative, so that the minimum is reachable.
    let mut acc: i128 = 0;
    for d in int.bytes().chain(frac.bytes()) {
        acc = acc.checked_mul(10)?.checked_sub(i128::from(d - b'0'))?;
    }
    if negative && acc == 0 {
        return None;
    }
    if negative {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

/// `"state":"live"` with no reason, or `"state":"stale"` with a named one.
fn json_status(v: &Value) -> Result<SymbolStatus, DecodeError> {
    let state = json_str(v, "state")?;
    let reason = v.get("reason");
    let status = match (state, reason.map(|r| r.as_str())) {
        ("live", None) => Some(SymbolStatus::Live),
        ("stale", Some(Some("gap"))) => Some(SymbolStatus::StaleGap),
        ("stale", Some(Some("disconnected"))) => Some(SymbolStatus::StaleDisconnected),
        ("stale", Some(Some("silent"))) => Some(SymbolStatus::StaleSilent),
        ("stale", Some(Some("book_gap"))) => Some(SymbolStatus::StaleBookGap),
        _ => None,
    };
    status.ok_or_else(|| DecodeError::BadStatus {
        state: state.to_owned(),
        reason: reason.map(Value::to_string),
    })
}
