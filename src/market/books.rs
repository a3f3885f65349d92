//! The books as connections see them: each symbol's [`Book`] under its own
//! mutex, with who watches which channel of it, shared by the publisher
//! (which applies and publishes events) and the connections (which take
//! snapshots).
//!
//! # Encoded once, and only when watched
//!
//! The publisher encodes a book event for a channel only if some connection
//! watches that channel of that symbol, and a `book.N` frame only if the
//! event changed one of the top N levels (or replaced the book). A
//! connection that subscribes, or that catches up after falling behind,
//! takes a snapshot: encoded at most once per book state and channel, kept
//! in a memo, and shared by every connection that asks for the same.
//!
//! # Why a snapshot and the ring agree
//!
//! A connection registers as a watcher and takes its snapshot under the
//! book's mutex; the publisher applies an event, decides which channels to
//! encode, and numbers the ring entries it will push, under the same mutex.
//! So either the event is in the snapshot, or the watcher was counted when
//! the event was encoded and its frame will be in the ring. The snapshot
//! carries [`SharedBook::seq`], which is at least the global sequence of
//! every ring entry of every event it holds and below that of every later
//! one: the connection skips the book's ring entries at or below it (its
//! floor) and applies every later one.

use super::{PerSymbol, Published};
use crate::book::Book;
use crate::metrics::Metrics;
use crate::symbols::SymbolDef;
use crate::update::{BookSide, SymbolId};
use crate::wire::channel::{self, DEPTHS, VARIANTS};
use crate::wire::encode::{book_frames, BookHead, BookLevels, EncodedUpdate, SymbolFormat};

/// One symbol's book and what the connections need of it.
#[derive(Debug, Default)]
pub struct SharedBook {
    pub book: Book,
    /// Book events published; 0 until the first one (the book is not
    /// served before it has one).
    pub book_seq: u64,
    /// The source lost its synchronization and no snapshot has replaced
    /// the book since: it is not served.
    pub stale: bool,
    /// The newest global sequence the publisher had assigned when it
    /// published the last event (see the module docs).
    pub seq: u64,
    pub exchange_ts_ns: u64,
    pub receive_ts_ns: u64,
    pub publish_ts_ns: u64,
    /// Connections watching each channel ([`DEPTHS`]).
    pub watchers: [u32; VARIANTS],
    /// Snapshots encoded at `book_seq`, by channel.
    memo: [Option<EncodedUpdate>; VARIANTS],
}

impl SharedBook {
    /// The head of a frame of this book's current state.
    pub fn head(&self, seq: u64, depth: u16, snapshot: bool) -> BookHead {
        BookHead {
            symbol: 0,
            seq,
            book_seq: self.book_seq,
            exchange_ts_ns: self.exchange_ts_ns,
            receive_ts_ns: self.receive_ts_ns,
            publish_ts_ns: self.publish_ts_ns,
            depth,
            snapshot,
        }
    }

    /// Forgets the memo: the book changed.
    pub fn changed(&mut self) {
        self.memo = Default::default();
    }

    /// Keeps `frames` as the snapshot of channel `v` at the current state.
    pub fn remember(&mut self, v: usize, frames: &EncodedUpdate) {
        self.memo[v] = Some(frames.clone());
    }

    /// The snapshot of channel `v` (the whole book, or its top N), from the
    /// memo or encoded now; `None` while the book has nothing to serve. Its
    /// `seq` is the connection's floor for the channel (see the module
    /// docs).
    fn snapshot(
        &mut self,
        symbol: SymbolId,
        v: usize,
        def: &SymbolDef,
        metrics: &Metrics,
    ) -> Option<Published> {
        if self.book_seq == 0 || self.stale {
            return None;
        }
        let entry = |frames: EncodedUpdate| Published {
            seq: self.seq,
            symbol,
            symbol_seq: self.book_seq,
            is_status: false,
            is_event: v == 0,
            channel: channel::book(v),
            frames,
        };
        if let Some(frames) = &self.memo[v] {
            return Some(entry(frames.clone()));
        }
        let (bids, asks) = top(&self.book, usize::from(DEPTHS[v]));
        let head = BookHead {
            symbol,
            ..self.head(self.seq, DEPTHS[v], true)
        };
        let frames = book_frames(
            &head,
            BookLevels {
                bids: &bids,
                asks: &asks,
            },
            SymbolFormat {
                name: &def.name,
                price_decimals: def.price_decimals,
                size_decimals: def.size_decimals,
            },
        );
        metrics.book_snapshots_encoded_total.inc();
        self.memo[v] = Some(frames.clone());
        Some(entry(frames))
    }
}

/// Levels of one side, best first: (price, size) mantissas.
pub type Levels = Vec<(i64, i64)>;

/// The top `depth` levels of each side (0: all), best first.
pub fn top(book: &Book, depth: usize) -> (Levels, Levels) {
    let take = |side| {
        let n = if depth == 0 {
            book.len(side)
        } else {
            depth.min(book.len(side))
        };
        book.side(side).take(n).collect::<Vec<_>>()
    };
    (take(BookSide::Bid), take(BookSide::Ask))
}

/// Every symbol's [`SharedBook`], by symbol id. The outer lock is written
/// only to add a symbol.
#[derive(Default)]
pub struct BookCache {
    slots: PerSymbol<SharedBook>,
}

impl BookCache {
    /// Runs `f` on the symbol's entry, under its mutex ([`PerSymbol`]).
    pub fn with<R>(&self, symbol: SymbolId, f: impl FnOnce(&mut SharedBook) -> R) -> R {
        self.slots.with(symbol, f)
    }

    /// Counts a connection as watching channel `v` of the symbol's book and
    /// returns its floor for the channel (see the module docs) and its
    /// snapshot, if the book has one to serve. Without one (a stale book, or
    /// none yet) the floor still holds: the channel's ring entries from
    /// before, which the connection may not have read yet, are not its.
    pub fn watch(
        &self,
        symbol: SymbolId,
        v: usize,
        def: &SymbolDef,
        metrics: &Metrics,
    ) -> (u64, Option<Published>) {
        self.with(symbol, |b| {
            b.watchers[v] += 1;
            (b.seq, b.snapshot(symbol, v, def, metrics))
        })
    }

    /// Undoes one [`watch`](Self::watch).
    pub fn unwatch(&self, symbol: SymbolId, v: usize) {
        self.with(symbol, |b| b.watchers[v] = b.watchers[v].saturating_sub(1));
    }

    /// The snapshot of a channel the connection already watches (a catch-up),
    /// if the book changed after `since` (a global sequence).
    pub fn snapshot_since(
        &self,
        symbol: SymbolId,
        v: usize,
        def: &SymbolDef,
        since: u64,
        metrics: &Metrics,
    ) -> Option<Published> {
        self.with(symbol, |b| {
            if b.seq <= since {
                return None;
            }
            b.snapshot(symbol, v, def, metrics)
        })
    }
}
