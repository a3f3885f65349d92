//! Binance diff depth (`<symbol>@depth`, `@depth@100ms`, futures
//! `@depth@0ms`) kept in sync with a depth snapshot, as Binance documents
//! it ("How to manage a local order book correctly", spot and USD-M):
//!
//! 1. Buffer the diffs until a snapshot (`{"lastUpdateId":L,"bids":..,
//!    "asks":..}`) arrives.
//! 2. Drop the diffs the snapshot covers: spot `u <= L`, futures `u < L`.
//! 3. The first diff applied must straddle the snapshot: spot
//!    `U <= L + 1 <= u`, futures `U <= L <= u`.
//! 4. Each later diff must follow the one before: spot `U == previous u + 1`,
//!    futures `pu == previous u`.
//!
//! A futures diff is one with `pu`. A diff that breaks 3 or 4 is a gap: the
//! symbol gets a `book_gap` status (its book is not served) and its diffs
//! are buffered again until the next snapshot. In a recording, the snapshot
//! is the REST response line the capture holds; it names no symbol (except
//! COIN-M's), so it belongs to the one book waiting for a snapshot.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use simd_json::prelude::*;
use simd_json::BorrowedValue;

use crate::feed::normalize::{book_level, BadRecord, BookSync, Emitter, Outcome};
use crate::symbols::Scale;
use crate::update::{BookSide, SymbolId, SymbolStatus};

/// Diffs kept per book while it waits for a snapshot: at `@depth@0ms`
/// about a minute of them. Older ones go first; a snapshot older than what
/// is kept is then a gap, and the book waits for the next.
const MAX_BUFFERED: usize = 4096;

/// `{"e":"depthUpdate","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","U":5123107832006,"u":5123107837557,"pu":5123107831937,"b":[["58710.20","0.014"]],"a":[["61800.30","0.005"]]}`
/// (spot has no `T` and no `pu`).
#[derive(Debug, Deserialize)]
struct DepthUpdate<'a> {
    #[serde(rename = "s")]
    symbol: &'a str,
    #[serde(rename = "U")]
    first_id: u64,
    #[serde(rename = "u")]
    last_id: u64,
    #[serde(rename = "pu")]
    prev_id: Option<u64>,
    #[serde(rename = "E")]
    event_ms: Option<u64>,
    #[serde(rename = "T")]
    transaction_ms: Option<u64>,
    #[serde(rename = "b", borrow)]
    bids: Vec<[&'a str; 2]>,
    #[serde(rename = "a", borrow)]
    asks: Vec<[&'a str; 2]>,
}

/// `{"lastUpdateId":5123107852948,"E":1723161256501,"T":1723161256493,"bids":[["61800.20","2.909"]],"asks":[["61800.30","0.005"]]}`
/// (spot has neither `E` nor `T`; COIN-M adds `symbol` and `pair`).
#[derive(Debug, Deserialize)]
struct DepthSnapshot<'a> {
    #[serde(rename = "lastUpdateId")]
    last_update_id: u64,
    symbol: Option<&'a str>,
    #[serde(rename = "T")]
    transaction_ms: Option<u64>,
    #[serde(rename = "E")]
    event_ms: Option<u64>,
    #[serde(borrow)]
    bids: Vec<[&'a str; 2]>,
    #[serde(borrow)]
    asks: Vec<[&'a str; 2]>,
}

/// One diff, its levels parsed.
#[derive(Debug, Clone)]
struct Diff {
    first_id: u64,
    last_id: u64,
    prev_id: Option<u64>,
    levels: Vec<(BookSide, i64, i64)>,
    exchange_ts_ns: u64,
    receive_ts_ns: Option<u64>,
}

#[derive(Debug)]
enum State {
    /// No snapshot yet, or a gap since the last one (`after_gap`: the
    /// symbol was told stale, and is told live again with the snapshot).
    Waiting {
        buffered: VecDeque<Diff>,
        after_gap: bool,
    },
    /// In sync at diff `last_id` (the snapshot's `lastUpdateId` while
    /// `first` is true: no diff applied since it).
    Synced { last_id: u64, first: bool },
}

#[derive(Debug)]
struct Sync {
    scale: Scale,
    state: State,
}

/// The diff-depth books of one feed (a recording, a live session).
#[derive(Debug, Default)]
pub(super) struct DepthBooks {
    books: HashMap<SymbolId, Sync>,
}

/// Takes one `depthUpdate`.
pub(super) fn diff(
    value: &BorrowedValue<'_>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let d: DepthUpdate<'_> = simd_json::serde::from_refborrowed_value(value)
        .map_err(|e| BadRecord::fields("Binance depthUpdate", e))?;
    let sample = d.bids.first().or(d.asks.first()).copied();
    let [px, sz] = sample.unwrap_or(["0", "0"]);
    let scale = emit.scale_of(d.symbol, px, sz)?;
    let diff = Diff {
        first_id: d.first_id,
        last_id: d.last_id,
        prev_id: d.prev_id,
        levels: levels(&scale, &d.bids, &d.asks)?,
        exchange_ts_ns: super::ms_to_ns(d.transaction_ms.or(d.event_ms)),
        receive_ts_ns: emit.receive_ts_ns,
    };
    let sync = emit
        .books
        .get::<DepthBooks>()
        .books
        .entry(scale.id)
        .or_insert(Sync {
            scale,
            state: State::Waiting {
                buffered: VecDeque::new(),
                after_gap: false,
            },
        });
    match &mut sync.state {
        State::Waiting { buffered, .. } => {
            if buffered.len() == MAX_BUFFERED {
                buffered.pop_front();
            }
            buffered.push_back(diff);
            Ok(Outcome::Skipped)
        }
        State::Synced { .. } => {
            let before = emit.out.len();
            apply(scale.id, diff, emit);
            Ok(if emit.out.len() > before {
                Outcome::Emitted
            } else {
                Outcome::Skipped
            })
        }
    }
}

/// The books of this feed that wait for a snapshot (none yet, or a gap
/// since the last).
pub(crate) fn waiting(sync: &mut BookSync) -> Vec<SymbolId> {
    sync.get::<DepthBooks>()
        .books
        .iter()
        .filter(|(_, b)| matches!(b.state, State::Waiting { .. }))
        .map(|(id, _)| *id)
        .collect()
}

/// Takes one REST depth snapshot; `symbol` is the one it was fetched for,
/// when the caller knows (a live feed's fetch), which the snapshot's own
/// `symbol` field (COIN-M's) would otherwise say.
pub(crate) fn snapshot(
    value: &BorrowedValue<'_>,
    symbol: Option<&str>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, BadRecord> {
    let s: DepthSnapshot<'_> = simd_json::serde::from_refborrowed_value(value)
        .map_err(|e| BadRecord::fields("Binance depth snapshot", e))?;
    let books = &emit.books.get::<DepthBooks>().books;
    let id = match symbol.or(s.symbol) {
        Some(name) => emit.normalizer.table().get_by_name(name).map(|d| d.id),
        None => owner(books, s.last_update_id),
    };
    let Some(sync) = id.and_then(|id| books.get(&id)) else {
        return Err(BadRecord::fields(
            "Binance depth snapshot",
            "no book waits for it (a snapshot that names no symbol belongs to the book whose \
             waiting diffs are numbered nearest its lastUpdateId)",
        ));
    };
    let scale = sync.scale;
    let mut snapshot_levels = levels(&scale, &s.bids, &s.asks)?;
    if snapshot_levels.is_empty() {
        // An empty book is still a book: a level of size 0 clears nothing.
        snapshot_levels.push((BookSide::Bid, 0, 0));
    }
    let ts = super::ms_to_ns(s.transaction_ms.or(s.event_ms));
    let receive_ts_ns = emit.receive_ts_ns;
    let Some(sync) = emit.books.get::<DepthBooks>().books.get_mut(&scale.id) else {
        return Ok(Outcome::Skipped);
    };
    let before = std::mem::replace(
        &mut sync.state,
        State::Synced {
            last_id: s.last_update_id,
            first: true,
        },
    );
    let (mut buffered, after_gap) = match before {
        State::Waiting {
            buffered,
            after_gap,
        } => (buffered, after_gap),
        State::Synced { .. } => (VecDeque::new(), false),
    };
    // The diffs the snapshot covers go; the first one left must connect to
    // it, or the snapshot is older than what was kept: no book from it (and
    // no live-again notice), wait for the next.
    buffered.retain(|d| !covered(d, s.last_update_id));
    if let Some(first) = buffered.front() {
        if !straddles(first, s.last_update_id) {
            sync.state = State::Waiting {
                buffered,
                after_gap,
            };
            return Ok(Outcome::Skipped);
        }
    }
    if after_gap {
        // Live again, just before the book that makes it so (as a live
        // venue's symbols are, docs/PROTOCOL.md "Symbol status").
        emit.status(scale.id, SymbolStatus::Live, ts, receive_ts_ns);
    }
    emit.levels(scale.id, &snapshot_levels, true, ts, receive_ts_ns);
    for diff in buffered {
        apply(scale.id, diff, emit);
    }
    Ok(Outcome::Emitted)
}

/// The book a snapshot that names no symbol belongs to: of the books whose
/// diffs wait for a snapshot, the one whose diffs are numbered nearest
/// `last_update_id` (each symbol has its own numbering, far from any
/// other's: in a capture of several symbols, several books wait at once).
/// `None` if no book waits, or two are as near.
fn owner(books: &HashMap<SymbolId, Sync>, last_update_id: u64) -> Option<SymbolId> {
    let mut best: Option<(u64, SymbolId)> = None;
    let mut tied = false;
    for (&id, sync) in books {
        let State::Waiting { buffered, .. } = &sync.state else {
            continue;
        };
        let (Some(first), Some(last)) = (buffered.front(), buffered.back()) else {
            continue;
        };
        let (lo, hi) = (first.first_id, last.last_id.saturating_add(1));
        let distance = if last_update_id < lo {
            lo - last_update_id
        } else {
            last_update_id.saturating_sub(hi)
        };
        match best {
            Some((d, _)) if d < distance => {}
            Some((d, _)) if d == distance => tied = true,
            _ => {
                best = Some((distance, id));
                tied = false;
            }
        }
    }
    if tied {
        return None;
    }
    best.map(|(_, id)| id)
}

/// Applies one diff to a book in sync, or finds the gap it shows.
fn apply(id: SymbolId, diff: Diff, emit: &mut Emitter<'_>) {
    let Some(sync) = emit.books.get::<DepthBooks>().books.get_mut(&id) else {
        return;
    };
    let State::Synced { last_id, first } = sync.state else {
        if let State::Waiting { buffered, .. } = &mut sync.state {
            buffered.push_back(diff);
        }
        return;
    };
    let follows = if first {
        if covered(&diff, last_id) {
            return;
        }
        straddles(&diff, last_id)
    } else if diff.last_id <= last_id {
        // Seen already (a redelivery): nothing new in it.
        return;
    } else if let Some(prev) = diff.prev_id {
        prev == last_id
    } else {
        diff.first_id == last_id + 1
    };
    if !follows {
        sync.state = State::Waiting {
            buffered: VecDeque::from([diff]),
            after_gap: true,
        };
        let ts = emit.receive_ts_ns;
        emit.status(id, SymbolStatus::StaleBookGap, 0, ts);
        return;
    }
    sync.state = State::Synced {
        last_id: diff.last_id,
        first: false,
    };
    if !diff.levels.is_empty() {
        emit.levels(
            id,
            &diff.levels,
            false,
            diff.exchange_ts_ns,
            diff.receive_ts_ns,
        );
    }
}

/// Whether a snapshot at `last_update_id` already holds the diff: spot
/// `u <= L`, futures (with `pu`) `u < L`.
fn covered(diff: &Diff, last_update_id: u64) -> bool {
    match diff.prev_id {
        Some(_) => diff.last_id < last_update_id,
        None => diff.last_id <= last_update_id,
    }
}

/// Whether the first diff after a snapshot at `L` continues it: spot
/// `U <= L + 1 <= u`, futures `U <= L <= u`.
fn straddles(diff: &Diff, last_update_id: u64) -> bool {
    let l = match diff.prev_id {
        Some(_) => last_update_id,
        None => last_update_id + 1,
    };
    diff.first_id <= l && l <= diff.last_id
}

/// The levels of both sides as mantissas at the symbol's scales.
fn levels(
    scale: &Scale,
    bids: &[[&str; 2]],
    asks: &[[&str; 2]],
) -> Result<Vec<(BookSide, i64, i64)>, BadRecord> {
    let mut out = Vec::with_capacity(bids.len() + asks.len());
    for (side, list) in [(BookSide::Bid, bids), (BookSide::Ask, asks)] {
        for [px, sz] in list {
            out.push(book_level(scale, side, px, sz)?);
        }
    }
    Ok(out)
}

/// Whether `value` is a REST depth snapshot.
pub(super) fn is_snapshot(value: &BorrowedValue<'_>) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key("lastUpdateId") && o.contains_key("bids"))
}

#[cfg(test)]
mod tests {
    /// What each line became (see [`crate::feed::venue::book_trace`]).
    fn feed(lines: &[&str]) -> Vec<String> {
        crate::feed::venue::book_trace(lines, super::super::parse)
    }

    fn spot(first: u64, last: u64) -> String {
        format!(
            r#"{{"e":"depthUpdate","E":1,"s":"X","U":{first},"u":{last},"b":[["1.0","2"]],"a":[]}}"#
        )
    }

    fn futures(first: u64, last: u64, prev: u64) -> String {
        format!(
            r#"{{"e":"depthUpdate","E":1,"T":1,"s":"X","U":{first},"u":{last},"pu":{prev},"b":[],"a":[["2.0","1"]]}}"#
        )
    }

    const SNAPSHOT: &str =
        r#"{"lastUpdateId":10,"bids":[["1.0","1"],["0.9","1"]],"asks":[["2.0","1"]]}"#;

    #[test]
    fn spot_diffs_sync_to_the_snapshot_and_a_gap_waits_for_the_next() {
        let lines = [
            spot(1, 5),
            spot(6, 10),
            spot(11, 12),
            SNAPSHOT.to_owned(),
            spot(13, 15),
            spot(17, 18),
            spot(19, 20),
            SNAPSHOT.replace(":10", ":14"),
            SNAPSHOT.replace(":10", ":18"),
            spot(19, 20),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(
            feed(&lines),
            [
                // TC0: buffered until the snapshot...
                "-", "-", "-",
                // TC1: ...which drops what it covers (u <= 10) and applies
                // the straddling one (11 <= 11 <= 12).
                "RL3L1", // TC2: in sequence.
                "L1",
                // TC3: U = 17 after u = 15: a gap, the book goes stale, and
                // diffs wait again; a snapshot at 14 is older than they are
                // (17 does not follow 14): no book, no live notice.
                "S", "-", "-",
                // TC4: the book is live again with a new snapshot at 18,
                // which drops 17..18 and applies 19..20.
                "VRL3L1", // TC5: 19..20 again: a redelivery, skipped.
                "-",
            ]
        );
    }

    #[test]
    fn a_snapshot_without_a_symbol_goes_to_the_book_numbered_nearest() {
        let eth = |first: u64, last: u64| spot(first, last).replace("\"X\"", "\"ETH\"");
        let lines = [
            spot(50_000, 50_010),
            eth(35_000, 35_005),
            // TC0: two books wait; 35_006 is within ETH's numbering.
            SNAPSHOT.replace(":10", ":35006"),
            eth(35_007, 35_008),
            // TC1: then only X waits.
            SNAPSHOT.replace(":10", ":50009"),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(feed(&lines), ["-", "-", "RL3", "L1", "RL3L1"]);
    }

    #[test]
    fn futures_follow_pu_and_the_first_diff_straddles_last_update_id() {
        let lines = [
            futures(5, 9, 4),
            futures(10, 12, 9),
            SNAPSHOT.to_owned(),
            futures(13, 14, 12),
            futures(13, 14, 12),
            futures(15, 16, 13),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(
            feed(&lines),
            // TC0: u = 9 < 10 dropped; 10 <= 10 <= 12 applied; pu = 12
            // follows; the same diff again is skipped; pu = 13 after
            // u = 14 is a gap.
            ["-", "-", "RL3L1", "L1", "-", "S"]
        );
    }

    #[test]
    fn a_snapshot_nobody_waits_for_and_bad_levels_are_rejected() {
        // TC0: a snapshot with no book waiting for it.
        assert_eq!(feed(&[SNAPSHOT]), ["E:fields"]);
        // TC1: a negative size, a price finer than the symbol's scale.
        let bad = [
            spot(1, 2),
            r#"{"e":"depthUpdate","E":1,"s":"X","U":3,"u":4,"b":[["1.0","-2"]],"a":[]}"#.to_owned(),
            r#"{"e":"depthUpdate","E":1,"s":"X","U":3,"u":4,"b":[["1.0000000001","2"]],"a":[]}"#
                .to_owned(),
        ];
        let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
        assert_eq!(feed(&bad), ["-", "E:negative", "E:decimal"]);
    }
}
