//! Coinbase order books: the Exchange `level2` / `level2_batch` channel
//! (`snapshot`, then `l2update`) and Advanced Trade `l2_data` (an event of
//! type `snapshot`, then `update`s).
//!
//! Each message holds absolute sizes per level (0 removes it), so a book
//! is in sync from its snapshot on; updates of a product that has had no
//! snapshot are skipped. Advanced Trade numbers every message of a
//! connection (`sequence_num`, all channels together): a number skipped
//! means messages were lost, so every book of the feed gets a `book_gap`
//! status and waits for a new snapshot (Coinbase sends one on a new
//! subscription). The Exchange feed has no such number for `l2update`.

use std::collections::HashSet;

use serde::Deserialize;
use simd_json::BorrowedValue;

use crate::feed::normalize::{book_level, BadRecord, Emitter, Outcome};
use crate::symbols::Scale;
use crate::update::{BookSide, SymbolId, SymbolStatus};

/// Exchange `snapshot`:
/// `{"type":"snapshot","product_id":"BTC-USD","bids":[["10101.10","0.45054140"]],"asks":[["10102.55","0.57753524"]]}`
#[derive(Debug, Deserialize)]
struct ExchangeSnapshot<'a> {
    product_id: &'a str,
    #[serde(borrow)]
    bids: Vec<[&'a str; 2]>,
    #[serde(borrow)]
    asks: Vec<[&'a str; 2]>,
}

/// Exchange `l2update`:
/// `{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z","changes":[["buy","10101.80000000","0.162567"]]}`
#[derive(Debug, Deserialize)]
struct ExchangeUpdate<'a> {
    product_id: &'a str,
    #[serde(borrow)]
    time: Option<&'a str>,
    #[serde(borrow)]
    changes: Vec<[&'a str; 3]>,
}

/// Advanced Trade `l2_data`:
/// `{"channel":"l2_data","timestamp":"2026-08-09T21:05:48.505350477Z","sequence_num":14,"events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","event_time":"2026-08-09T21:05:48.210883Z","price_level":"65062.5","new_quantity":"0.00583"}]}]}`
#[derive(Debug, Deserialize)]
struct AdvancedBook<'a> {
    #[serde(borrow)]
    events: Vec<AdvancedBookEvent<'a>>,
}

#[derive(Debug, Deserialize)]
struct AdvancedBookEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    product_id: &'a str,
    #[serde(borrow)]
    updates: Vec<AdvancedLevel<'a>>,
}

#[derive(Debug, Deserialize)]
struct AdvancedLevel<'a> {
    side: &'a str,
    #[serde(borrow)]
    event_time: Option<&'a str>,
    price_level: &'a str,
    new_quantity: &'a str,
}

/// The books of one feed.
#[derive(Debug, Default)]
pub(super) struct Books {
    /// Products whose snapshot has been applied since the last gap.
    synced: HashSet<SymbolId>,
    /// Products told stale by a gap, told live again by their snapshot.
    gapped: HashSet<SymbolId>,
    /// The last Advanced Trade `sequence_num` seen.
    last_seq: Option<u64>,
}

/// Checks an Advanced Trade message's `sequence_num`; on a skip, every book
/// of the feed is stale until its next snapshot.
pub(super) fn sequence(value: &BorrowedValue<'_>, emit: &mut Emitter<'_>) {
    use simd_json::prelude::*;
    let Some(seq) = value.get("sequence_num").and_then(|s| s.as_u64()) else {
        return;
    };
    let books = emit.books.get::<Books>();
    let gap = books.last_seq.is_some_and(|last| seq > last + 1);
    books.last_seq = Some(seq);
    if gap {
        let stale: Vec<SymbolId> = books.synced.drain().collect();
        books.gapped.extend(stale.iter().copied());
        let ts = emit.receive_ts_ns;
        for id in stale {
            emit.status(id, SymbolStatus::StaleBookGap, 0, ts);
        }
    }
}

pub(super) fn exchange_snapshot(
    value: &BorrowedValue<'_>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let s: ExchangeSnapshot<'_> = simd_json::serde::from_refborrowed_value(value)
        .map_err(|e| BadRecord::fields("Coinbase snapshot", e))?;
    let sides = [(BookSide::Bid, &s.bids), (BookSide::Ask, &s.asks)];
    let levels = sides
        .into_iter()
        .flat_map(|(side, list)| list.iter().map(move |[p, q]| (side, *p, *q)));
    snapshot(s.product_id, levels, 0, emit)
}

pub(super) fn exchange_update(
    value: &BorrowedValue<'_>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let u: ExchangeUpdate<'_> = simd_json::serde::from_refborrowed_value(value)
        .map_err(|e| BadRecord::fields("Coinbase l2update", e))?;
    let ts = super::time_ns(u.time)?;
    let mut levels = Vec::with_capacity(u.changes.len());
    for [side, p, q] in &u.changes {
        let side = match *side {
            "buy" => BookSide::Bid,
            "sell" => BookSide::Ask,
            other => {
                return Err(BadRecord::fields(
                    "Coinbase l2update",
                    format!("side {other:?}"),
                ))
            }
        };
        levels.push((side, *p, *q));
    }
    update(u.product_id, levels.into_iter(), ts, emit)
}

pub(super) fn advanced(
    value: &BorrowedValue<'_>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let msg: AdvancedBook<'_> = simd_json::serde::from_refborrowed_value(value)
        .map_err(|e| BadRecord::fields("Coinbase Advanced Trade l2_data", e))?;
    let mut outcome = Outcome::Skipped;
    for event in &msg.events {
        let mut levels = Vec::with_capacity(event.updates.len());
        let mut ts = 0;
        for l in &event.updates {
            let side = match l.side {
                "bid" => BookSide::Bid,
                "offer" | "ask" => BookSide::Ask,
                other => {
                    return Err(BadRecord::fields(
                        "Coinbase Advanced Trade l2_data",
                        format!("side {other:?}"),
                    ))
                }
            };
            ts = ts.max(super::time_ns(l.event_time)?);
            levels.push((side, l.price_level, l.new_quantity));
        }
        let done = match event.kind {
            "snapshot" => snapshot(event.product_id, levels.into_iter(), ts, emit)?,
            "update" => update(event.product_id, levels.into_iter(), ts, emit)?,
            other => {
                return Err(BadRecord::fields(
                    "Coinbase Advanced Trade l2_data",
                    format!("event type {other:?}"),
                ))
            }
        };
        if done == Outcome::Emitted {
            outcome = Outcome::Emitted;
        }
    }
    Ok(outcome)
}

/// A product's whole book: it is in sync from here on.
fn snapshot<'a>(
    product: &str,
    levels: impl Iterator<Item = (BookSide, &'a str, &'a str)>,
    ts: u64,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let levels: Vec<_> = levels.collect();
    let scale = scale_of(product, &levels, emit)?;
    let mut parsed = parse_levels(&scale, &levels)?;
    if parsed.is_empty() {
        // An empty book is still a book: a level of size 0 clears nothing.
        parsed.push((BookSide::Bid, 0, 0));
    }
    let receive_ts_ns = emit.receive_ts_ns;
    let books = emit.books.get::<Books>();
    books.synced.insert(scale.id);
    if books.gapped.remove(&scale.id) {
        // Live again, just before the book that makes it so.
        emit.status(scale.id, SymbolStatus::Live, ts, receive_ts_ns);
    }
    emit.levels(scale.id, &parsed, true, ts, receive_ts_ns);
    Ok(Outcome::Emitted)
}

/// Changes to a product's book, applied if it is in sync.
fn update<'a>(
    product: &str,
    levels: impl Iterator<Item = (BookSide, &'a str, &'a str)>,
    ts: u64,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let levels: Vec<_> = levels.collect();
    let scale = scale_of(product, &levels, emit)?;
    let parsed = parse_levels(&scale, &levels)?;
    if parsed.is_empty() || !emit.books.get::<Books>().synced.contains(&scale.id) {
        return Ok(Outcome::Skipped);
    }
    let receive_ts_ns = emit.receive_ts_ns;
    emit.levels(scale.id, &parsed, false, ts, receive_ts_ns);
    Ok(Outcome::Emitted)
}

fn scale_of(
    product: &str,
    levels: &[(BookSide, &str, &str)],
    emit: &mut Emitter<'_>,
) -> Result<Scale, BadRecord> {
    let (px, sz) = levels.first().map_or(("0", "0"), |&(_, p, q)| (p, q));
    emit.scale_of(product, px, sz)
}

fn parse_levels(
    scale: &Scale,
    levels: &[(BookSide, &str, &str)],
) -> Result<Vec<(BookSide, i64, i64)>, BadRecord> {
    levels
        .iter()
        .map(|&(side, px, sz)| book_level(scale, side, px, sz))
        .collect()
}

#[cfg(test)]
mod tests {
    /// What each line became (see [`crate::feed::venue::book_trace`]).
    fn feed(lines: &[&str]) -> Vec<String> {
        crate::feed::venue::book_trace(lines, super::super::parse)
    }

    #[test]
    fn exchange_level2_is_in_sync_from_its_snapshot() {
        let update = r#"{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z","changes":[["buy","10101.80000000","0.162567"],["sell","10102.55","0"]]}"#;
        let lines = [
            // TC0: an update before the snapshot is skipped.
            update,
            r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["10101.10","0.45054140"]],"asks":[["10102.55","0.57753524"]]}"#,
            update,
            // TC1: a side that is not buy or sell is refused.
            r#"{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z","changes":[["up","1","1"]]}"#,
        ];
        assert_eq!(feed(&lines), ["-", "RL2", "L2", "E:fields"]);
    }

    #[test]
    fn advanced_trade_books_go_stale_when_the_connection_skips_a_number() {
        let l2 = |seq: u64, kind: &str| {
            format!(
                r#"{{"channel":"l2_data","timestamp":"2026-08-09T21:05:48.5Z","sequence_num":{seq},"events":[{{"type":"{kind}","product_id":"BTC-USD","updates":[{{"side":"offer","event_time":"2026-08-09T21:05:48.2Z","price_level":"65062.5","new_quantity":"0.00583"}}]}}]}}"#
            )
        };
        let heartbeat = r#"{"channel":"heartbeats","timestamp":"2026-08-09T21:05:48.5Z","sequence_num":3,"events":[]}"#;
        let lines = [
            l2(1, "snapshot"),
            l2(2, "update"),
            heartbeat.to_owned(),
            // TC0: 5 after 3: messages were lost; the book is stale, and
            // this update is not applied.
            l2(5, "update"),
            // TC1: a new snapshot brings it back, live.
            l2(6, "snapshot"),
            l2(7, "update"),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(feed(&lines), ["RL1", "L1", "-", "S", "VRL1", "L1"]);
    }
}
