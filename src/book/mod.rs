//! Order books: the price levels of one symbol, rebuilt from the level
//! updates a feed sends ([`UpdateKind::Level`](crate::update::UpdateKind)),
//! and the channels they are served on.
//!
//! A feed turns a venue's book messages into runs of levels (a snapshot
//! starts with [`RESET`](crate::update::level_flags::RESET); every run ends
//! with [`LAST`](crate::update::level_flags::LAST)). The publisher applies a
//! run to the symbol's [`Book`] (`publish::books`) and publishes it as one
//! *book event*, numbered by the symbol's `book_seq`, encoded once per
//! channel that has a watcher (`market::books`):
//!
//! - `book`: the full-depth book, as one snapshot, then each event's changed
//!   levels (size 0: removed); `book_seq` goes up by exactly one per change,
//!   so a client that sees a jump knows it missed one.
//! - `book.N` for N in [`DEPTHS`](crate::wire::channel::DEPTHS): the top N levels of each side, whole, each
//!   time one of them changes: a message is complete on its own.
//!
//! A book is kept as two sorted `Vec`s with the best level last: almost every
//! change is near the top of the book, so an insert or removal moves a few
//! levels, and the top N is the tail of each side.

use crate::update::BookSide;

/// Most levels one side of a book keeps. A source that sends more (a broken
/// one, or a fuzzer) loses the levels furthest from the top, which is what
/// the venues themselves do (Binance snapshots stop at 5,000).
pub const MAX_LEVELS: usize = 50_000;

/// The levels of one order book, as fixed-point mantissas at the symbol's
/// scales.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Book {
    /// Ascending by price: the best (highest) bid last.
    bids: Vec<(i64, i64)>,
    /// Descending by price: the best (lowest) ask last.
    asks: Vec<(i64, i64)>,
}

impl Book {
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    /// Sets the level at `px` to `sz` (0 removes it). Returns its rank
    /// from the top of its side before the change (0 is the best level),
    /// or `None` when nothing changed (a removal of a level that is not
    /// there, or the same size again).
    pub fn apply(&mut self, side: BookSide, px: i64, sz: i64) -> Option<usize> {
        let levels = match side {
            BookSide::Bid => &mut self.bids,
            BookSide::Ask => &mut self.asks,
        };
        // Sorted so that the best is last: bids ascend, asks descend.
        let found = match side {
            BookSide::Bid => levels.binary_search_by(|l| l.0.cmp(&px)),
            BookSide::Ask => levels.binary_search_by(|l| px.cmp(&l.0)),
        };
        match found {
            Ok(i) if sz == 0 => {
                levels.remove(i);
                Some(levels.len() - i)
            }
            Ok(i) if levels[i].1 == sz => None,
            Ok(i) => {
                levels[i].1 = sz;
                Some(levels.len() - 1 - i)
            }
            Err(_) if sz == 0 => None,
            Err(0) if levels.len() >= MAX_LEVELS => {
                // Worse than every level of a full side: not kept, so no
                // change.
                None
            }
            Err(i) => {
                levels.insert(i, (px, sz));
                let rank = levels.len() - 1 - i;
                if levels.len() > MAX_LEVELS {
                    // The worst level is first.
                    levels.remove(0);
                }
                Some(rank)
            }
        }
    }

    /// The levels of one side, best first.
    pub fn side(&self, side: BookSide) -> impl ExactSizeIterator<Item = (i64, i64)> + '_ {
        match side {
            BookSide::Bid => self.bids.iter().rev().copied(),
            BookSide::Ask => self.asks.iter().rev().copied(),
        }
    }

    /// Number of levels on one side.
    pub fn len(&self, side: BookSide) -> usize {
        match side {
            BookSide::Bid => self.bids.len(),
            BookSide::Ask => self.asks.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }

    /// The best level of a side.
    pub fn best(&self, side: BookSide) -> Option<(i64, i64)> {
        match side {
            BookSide::Bid => self.bids.last().copied(),
            BookSide::Ask => self.asks.last().copied(),
        }
    }

    /// Whether the best bid is at or above the best ask (a crossed or
    /// locked book), which a venue's data can show for a moment.
    pub fn is_crossed(&self) -> bool {
        match (self.best(BookSide::Bid), self.best(BookSide::Ask)) {
            (Some((bid, _)), Some((ask, _))) => bid >= ask,
            _ => false,
        }
    }

    /// Bytes held by the levels (for the memory measurement).
    pub fn heap_bytes(&self) -> usize {
        (self.bids.capacity() + self.asks.capacity()) * std::mem::size_of::<(i64, i64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BookSide::{Ask, Bid};

    #[test]
    fn levels_are_kept_best_first_and_ranked() {
        let mut b = Book::default();
        // TC0: inserts in any order; ranks count from the best.
        assert_eq!(b.apply(Bid, 100, 1), Some(0));
        assert_eq!(b.apply(Bid, 102, 2), Some(0));
        assert_eq!(b.apply(Bid, 101, 3), Some(1));
        assert_eq!(b.apply(Ask, 105, 1), Some(0));
        assert_eq!(b.apply(Ask, 103, 1), Some(0));
        assert_eq!(b.apply(Ask, 104, 1), Some(1));
        assert_eq!(
            b.side(Bid).collect::<Vec<_>>(),
            [(102, 2), (101, 3), (100, 1)]
        );
        assert_eq!(
            b.side(Ask).collect::<Vec<_>>(),
            [(103, 1), (104, 1), (105, 1)]
        );
        // TC1: a size change, the same size again, a removal, and the
        // removal of a level that is not there.
        assert_eq!(b.apply(Bid, 101, 5), Some(1));
        assert_eq!(b.apply(Bid, 101, 5), None);
        assert_eq!(b.apply(Ask, 103, 0), Some(0));
        assert_eq!(b.apply(Ask, 99, 0), None);
        assert_eq!(b.best(Ask), Some((104, 1)));
        assert!(!b.is_crossed());
        // TC2: a bid at the best ask locks the book.
        b.apply(Bid, 104, 1);
        assert!(b.is_crossed());
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn a_side_keeps_at_most_max_levels_dropping_the_worst() {
        let mut b = Book::default();
        for px in 0..MAX_LEVELS as i64 + 10 {
            b.apply(Bid, px, 1);
            b.apply(Ask, 1_000_000 - px, 1);
        }
        assert_eq!(b.len(Bid), MAX_LEVELS);
        assert_eq!(b.side(Bid).last(), Some((10, 1)));
        assert_eq!(b.side(Ask).last(), Some((1_000_000 - 10, 1)));
    }
}
