//! Binance spot, USD-M and COIN-M market streams: `bookTicker` becomes a
//! quote, `trade` and `aggTrade` become trades, diff depth and REST depth
//! snapshots become order-book events ([`depth`]); other events are
//! skipped.
//!
//! Payloads arrive bare or inside the combined-stream wrapper
//! `{"stream":"btcusdt@bookTicker","data":{...}}`; the wrapper is removed
//! before `parse` sees the payload, by the JSON-lines reader for a
//! recording and by the live connector for a venue's WebSocket.

use serde::Deserialize;
use simd_json::prelude::*;
use simd_json::BorrowedValue;

mod depth;

pub(crate) use self::depth::{snapshot as depth_snapshot, waiting as books_waiting};

use crate::feed::normalize::{BadRecord, Emitter, Outcome};
use crate::update::Side;

/// Best bid and offer. Spot has no event type and no times; USD-M adds `e`,
/// `T` and `E`, and COIN-M adds the pair `ps`.
///
/// Spot: `{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}`
///
/// COIN-M: `{"u":1007198632021,"e":"bookTicker","s":"BTCUSD_PERP","ps":"BTCUSD","b":"61804.7","B":"35","a":"61804.8","A":"1645","T":1723161257465,"E":1723161257476}`
#[derive(Debug, Deserialize)]
pub struct BookTicker<'a> {
    #[serde(rename = "s")]
    pub symbol: &'a str,
    #[serde(rename = "b")]
    pub bid_px: &'a str,
    #[serde(rename = "B")]
    pub bid_sz: &'a str,
    #[serde(rename = "a")]
    pub ask_px: &'a str,
    #[serde(rename = "A")]
    pub ask_sz: &'a str,
    /// Transaction time, ms.
    #[serde(rename = "T")]
    pub transaction_ms: Option<u64>,
    /// Event time, ms.
    #[serde(rename = "E")]
    pub event_ms: Option<u64>,
}

/// A trade (`"e":"trade"`) or aggregated trade (`"e":"aggTrade"`).
///
/// `{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}`
#[derive(Debug, Deserialize)]
pub struct Trade<'a> {
    #[serde(rename = "s")]
    pub symbol: &'a str,
    #[serde(rename = "p")]
    pub px: &'a str,
    #[serde(rename = "q")]
    pub sz: &'a str,
    /// Whether the buyer was the resting (maker) order.
    #[serde(rename = "m")]
    pub buyer_is_maker: bool,
    /// Trade time, ms.
    #[serde(rename = "T")]
    pub trade_ms: Option<u64>,
    #[serde(rename = "E")]
    pub event_ms: Option<u64>,
}

impl Trade<'_> {
    /// If the buyer was resting on the book, the seller crossed the spread.
    pub fn aggressor(&self) -> Side {
        if self.buyer_is_maker {
            Side::Sell
        } else {
            Side::Buy
        }
    }
}

/// Normalizes one Binance payload, or says it is not Binance.
pub(crate) fn parse(
    value: &BorrowedValue<'_>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let Some(obj) = value.as_object() else {
        return Ok(Outcome::Foreign);
    };
    // REST depth snapshot: `{"lastUpdateId":N,"bids":[..],"asks":[..]}`.
    if depth::is_snapshot(value) {
        return depth::snapshot(value, None, emit);
    }
    match value.get("e").and_then(|e| e.as_str()) {
        Some("bookTicker") => book_ticker(value, emit),
        Some("depthUpdate") => depth::diff(value, emit),
        Some("trade" | "aggTrade") => {
            let t: Trade<'_> = simd_json::serde::from_refborrowed_value(value)
                .map_err(|e| BadRecord::fields("Binance trade", e))?;
            let ts = ms_to_ns(t.trade_ms.or(t.event_ms));
            emit.trade(t.symbol, t.px, t.sz, t.aggressor(), ts)?;
            Ok(Outcome::Emitted)
        }
        // Every Binance stream event carries its event time `E`; anything
        // else with an `e` (depthUpdate, kline, markPriceUpdate, ...) is a
        // real Binance event that is not a quote or a trade.
        Some(_) if obj.contains_key("E") => Ok(Outcome::Skipped),
        Some(_) => Ok(Outcome::Foreign),
        // Spot bookTicker is the one stream without `e`.
        None if ["u", "s", "b", "B", "a", "A"]
            .iter()
            .all(|k| obj.contains_key(*k)) =>
        {
            book_ticker(value, emit)
        }
        None => Ok(Outcome::Foreign),
    }
}

fn book_ticker(value: &BorrowedValue<'_>, emit: &mut Emitter<'_>) -> Result<Outcome, BadRecord> {
    let q: BookTicker<'_> = simd_json::serde::from_refborrowed_value(value)
        .map_err(|e| BadRecord::fields("Binance bookTicker", e))?;
    let ts = ms_to_ns(q.transaction_ms.or(q.event_ms));
    let bid = (q.bid_px, Some(q.bid_sz));
    let ask = (q.ask_px, Some(q.ask_sz));
    emit.quote(q.symbol, bid, ask, ts)?;
    Ok(Outcome::Emitted)
}

/// Binance times are ms; absent is 0, the crate's "not carried".
fn ms_to_ns(ms: Option<u64>) -> u64 {
    ms.map_or(0, |ms| ms.saturating_mul(1_000_000))
}
