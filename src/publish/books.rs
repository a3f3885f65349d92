//! The publisher's half of the books: it gathers each event's levels,
//! applies them to the symbol's book in one step, and encodes the frames
//! of the channels that are watched.

use std::sync::Arc;

use crate::market::books::top;
use crate::market::{BookCache, Market, Published, SharedBook};
use crate::metrics::Metrics;
use crate::update::{level_flags, BookSide, SymbolId, Update, UpdateKind};
use crate::wire::channel::{self, DEPTHS};
use crate::wire::encode::{BookHead, BookLevels, FrameEncoder, SymbolFormat};

/// The levels of one event not yet complete.
#[derive(Debug, Default)]
struct Pending {
    levels: Vec<(BookSide, i64, i64)>,
    reset: bool,
}

/// Levels on their way into books, and scratch space for encoding them.
#[derive(Default)]
pub struct BookEvents {
    /// By symbol id.
    pending: Vec<Pending>,
    bids: Vec<(i64, i64)>,
    asks: Vec<(i64, i64)>,
}

/// What the publisher lends [`BookEvents::level`].
pub struct Publishing<'a> {
    pub books: &'a BookCache,
    pub encoder: &'a mut FrameEncoder,
    pub metrics: &'a Arc<Metrics>,
    /// The next global sequence; advanced past every entry made.
    pub next_seq: &'a mut u64,
    pub publish_ts_ns: u64,
    pub format: SymbolFormat<'a>,
}

impl BookEvents {
    /// Takes one level. At the last level of an event, applies the event to
    /// the book and appends the ring entries to publish to `out`; returns
    /// the event if it was published (it changed the book, which had a
    /// snapshot), for the publisher's sinks.
    pub fn level(
        &mut self,
        update: &Update,
        p: Publishing<'_>,
        out: &mut Vec<Published>,
    ) -> Option<Applied> {
        let UpdateKind::Level {
            side,
            px,
            sz,
            flags,
        } = update.kind
        else {
            return None;
        };
        p.metrics.book_levels_in_total.inc();
        let id = update.symbol as usize;
        if self.pending.len() <= id {
            self.pending.resize_with(id + 1, Pending::default);
        }
        let pending = &mut self.pending[id];
        if flags & level_flags::RESET != 0 {
            // A snapshot starts: whatever came before it is replaced.
            pending.levels.clear();
            pending.reset = true;
        }
        pending.levels.push((side, px, sz));
        if flags & level_flags::LAST == 0 {
            return None;
        }
        let pending = std::mem::take(pending);
        let (bids, asks) = (&mut self.bids, &mut self.asks);
        let applied = p.books.with(update.symbol, |shared| {
            apply(shared, update, &pending, p, bids, asks, out)
        });
        applied.map(|(book_seq, seq)| Applied {
            levels: pending.levels,
            reset: pending.reset,
            book_seq,
            seq,
        })
    }

    /// The symbol went stale: its unfinished event is dropped and its book
    /// is not served until a snapshot replaces it.
    pub fn stale(&mut self, symbol: SymbolId, market: &Market) {
        if let Some(p) = self.pending.get_mut(symbol as usize) {
            *p = Pending::default();
        }
        market.books.with(symbol, |b| {
            b.stale = true;
            b.changed();
        });
    }
}

/// A book event as the publisher published it.
pub struct Applied {
    pub levels: Vec<(BookSide, i64, i64)>,
    /// The event replaced the book (a snapshot).
    pub reset: bool,
    pub book_seq: u64,
    /// The newest global sequence assigned when it was published.
    pub seq: u64,
}

/// Applies one whole event under the book's mutex and encodes the watched
/// channels (see `market::books` for why under the mutex); returns the
/// event's `book_seq` and the newest global sequence, if it was published.
fn apply(
    shared: &mut SharedBook,
    update: &Update,
    pending: &Pending,
    p: Publishing<'_>,
    bids: &mut Vec<(i64, i64)>,
    asks: &mut Vec<(i64, i64)>,
    out: &mut Vec<Published>,
) -> Option<(u64, u64)> {
    // An event numbered upstream (an edge's, from its feed node) keeps its
    // number, and one not newer than the book is dropped: never an older
    // book after a newer one.
    let book_seq = match update.origin_seq {
        0 => shared.book_seq + 1,
        origin if origin > shared.book_seq => origin,
        _ => {
            p.metrics.updates_out_of_order_total.inc();
            return None;
        }
    };
    if pending.reset {
        shared.book.clear();
        shared.stale = false;
    } else if shared.stale || shared.book_seq == 0 {
        // Changes to a book that has no snapshot: nothing to apply them to.
        return None;
    }
    let mut min_rank = usize::MAX;
    let mut changes: Vec<(BookSide, i64, i64)> = Vec::with_capacity(pending.levels.len());
    for &(side, px, sz) in &pending.levels {
        if let Some(rank) = shared.book.apply(side, px, sz) {
            min_rank = min_rank.min(rank);
            changes.push((side, px, sz));
        }
    }
    if !pending.reset && changes.is_empty() {
        return None;
    }
    shared.book_seq = book_seq;
    shared.exchange_ts_ns = update.exchange_ts_ns;
    shared.receive_ts_ns = update.receive_ts_ns;
    shared.publish_ts_ns = p.publish_ts_ns;
    shared.changed();
    p.metrics.book_updates_total.inc();
    if shared.book.is_crossed() {
        p.metrics.books_crossed_total.inc();
    }
    let event = Event {
        symbol: update.symbol,
        reset: pending.reset,
        min_rank,
        changes,
    };
    encode_watched(shared, event, p, bids, asks, out)
}

/// What one applied event changed, for [`encode_watched`].
struct Event {
    symbol: SymbolId,
    reset: bool,
    /// Lowest rank changed on either side: `book.N` changed if it is < N.
    min_rank: usize,
    changes: Vec<(BookSide, i64, i64)>,
}

/// Encodes the event for each channel that is watched and that it changed;
/// returns its `book_seq` and the newest global sequence.
fn encode_watched(
    shared: &mut SharedBook,
    mut e: Event,
    p: Publishing<'_>,
    bids: &mut Vec<(i64, i64)>,
    asks: &mut Vec<(i64, i64)>,
    out: &mut Vec<Published>,
) -> Option<(u64, u64)> {
    let (pending_reset, min_rank) = (e.reset, e.min_rank);
    for (v, &depth) in DEPTHS.iter().enumerate() {
        let depth = usize::from(depth);
        let touched = pending_reset || (depth == 0) || min_rank < depth;
        if shared.watchers[v] == 0 || !touched {
            continue;
        }
        // `book` carries the changes, unless the event replaced the book
        // or changed more levels than a frame counts.
        let snapshot = pending_reset || depth != 0 || e.changes.len() > usize::from(u16::MAX);
        if snapshot {
            let (b, a) = top(&shared.book, depth);
            *bids = b;
            *asks = a;
        } else {
            delta(&mut e.changes, bids, asks);
        }
        let seq = *p.next_seq;
        *p.next_seq += 1;
        let head = BookHead {
            symbol: e.symbol,
            ..shared.head(seq, DEPTHS[v], snapshot)
        };
        let levels = BookLevels { bids, asks };
        let frames = p.encoder.encode_book(&head, levels, p.format);
        p.metrics.book_frames_encoded_total.inc();
        if snapshot {
            shared.remember(v, &frames);
        }
        out.push(Published {
            seq,
            symbol: e.symbol,
            symbol_seq: shared.book_seq,
            is_status: false,
            is_event: v == 0,
            channel: channel::book(v),
            frames,
        });
    }
    shared.seq = *p.next_seq - 1;
    Some((shared.book_seq, shared.seq))
}

/// One event's changes as each side's levels, best first, each price once
/// with its last size.
fn delta(
    changes: &mut Vec<(BookSide, i64, i64)>,
    bids: &mut Vec<(i64, i64)>,
    asks: &mut Vec<(i64, i64)>,
) {
    bids.clear();
    asks.clear();
    // Newest first, so that the dedup keeps the last size of a price.
    changes.reverse();
    changes.sort_by_key(|&(side, px, _)| (side, px));
    changes.dedup_by_key(|&mut (side, px, _)| (side, px));
    for &(side, px, sz) in changes.iter() {
        match side {
            BookSide::Bid => bids.push((px, sz)),
            BookSide::Ask => asks.push((px, sz)),
        }
    }
    // Sorted ascending: bids are best (highest) first reversed.
    bids.reverse();
}
