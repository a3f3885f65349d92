//! What a writer shard knows of its links between passes, so that a pass
//! visits only the links that something published concerns.
//!
//! A connection subscribed to a few symbols of many is concerned by few
//! publish batches, yet a pass that visited every link cost each of them a
//! lock and a fill per batch: with 16,000 connections on one symbol each of
//! 1,000, a pass took milliseconds and found nothing for all but a few
//! dozen. Now a pass reads what was published since the last one once,
//! folded onto 256 bits (symbol id mod 256), and visits a link only if its
//! [`Subscriber::interest`](crate::fanout::Subscriber::interest) meets
//! that (or it takes every entry, or was nudged, or has work left). A link
//! passed over has nothing to read in that batch, so its shard extends
//! [`Seen::clear`] over it, and the next visit moves the link's cursor
//! there without reading the entries one by one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::market::Published;
use crate::ring::{Read, Ring};
use crate::update::SymbolId;

/// A set of symbol ids folded onto 256 bits (bit `id % 256`): whether two
/// sets may meet, with no false "no".
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Folded([u64; 4]);

impl Folded {
    /// Every bit: meets any non-empty set.
    pub const ALL: Folded = Folded([u64::MAX; 4]);

    pub fn insert(&mut self, id: SymbolId) {
        let bit = (id % 256) as usize;
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    /// Adds the 64 symbols of one word of a bit set: word `j` holds ids
    /// `64 j ..`, whose bits are word `j % 4`'s.
    pub fn add_word(&mut self, j: usize, word: u64) {
        self.0[j % 4] |= word;
    }

    /// Whether a symbol may be in both.
    pub fn meets(&self, other: &Folded) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }

    /// Whether every bit of `self` is in `other`.
    pub fn within(&self, other: &Folded) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// A batch of more entries than this is taken to touch every symbol bit:
/// reading them all would cost more than the visits it could save.
const MAX_SCANNED: u64 = 1024;

/// A link that keeps its index in its shard's [`Slots`]. Relaxed loads
/// and stores: only whoever holds the shard's `slots` lock reads or writes
/// it, and the lock orders them.
pub(super) trait Indexed {
    fn index(&self) -> &AtomicUsize;
}

/// What a shard knows of one link between its visits.
#[derive(Clone, Copy)]
pub(super) struct Seen {
    /// The link's [`Subscriber::interest`] at the last visit; None: the
    /// link is visited at every pass.
    pub(super) interest: Option<Folded>,
    /// Every ring entry below this position is one the link has read, or
    /// has a symbol outside `interest`.
    pub(super) clear: u64,
}

/// A link in its shard.
pub(super) struct Slot<L> {
    pub(super) link: Arc<L>,
    pub(super) seen: Seen,
    /// Visit at the next pass, whatever was published: the link is new,
    /// was nudged, or its last visit left work.
    pub(super) due: bool,
}

/// The links of one shard, held by whichever thread makes a pass.
pub(super) struct Slots<L> {
    pub(super) slots: Vec<Slot<L>>,
    /// The ring position up to which the passes have looked at what was
    /// published.
    pub(super) scanned: u64,
}

impl<L> Default for Slots<L> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            scanned: 0,
        }
    }
}

impl<L: Indexed> Slots<L> {
    pub(super) fn push(&mut self, link: Arc<L>) {
        link.index().store(self.slots.len(), Ordering::Relaxed); // under the `slots` lock
        self.slots.push(Slot {
            link,
            seen: Seen {
                interest: None,
                clear: 0,
            },
            due: true,
        });
    }

    /// Marks `link` to be visited at this pass, if it is still here.
    pub(super) fn mark(&mut self, link: &Arc<L>) {
        let i = link.index().load(Ordering::Relaxed); // under the `slots` lock
        if let Some(slot) = self.slots.get_mut(i) {
            if Arc::ptr_eq(&slot.link, link) {
                slot.due = true;
            }
        }
    }

    /// Drops slot `i`; the last slot takes its place.
    pub(super) fn remove(&mut self, i: usize) {
        self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            moved.link.index().store(i, Ordering::Relaxed); // under the `slots` lock
        }
    }
}

/// The symbols of the ring entries in `from..to`, folded; every bit if
/// they are too many to read, or no longer held.
pub(super) fn published(ring: &Ring<Published>, from: u64, to: u64) -> Folded {
    if to - from > MAX_SCANNED {
        return Folded::ALL;
    }
    let guard = ring.pin();
    let mut bits = Folded::default();
    for pos in from..to {
        match ring.read(&guard, pos) {
            Read::Item(p) => bits.insert(p.symbol),
            Read::Empty | Read::Lapped { .. } => return Folded::ALL,
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bit set's words fold onto the same bits as its ids one by one;
    /// `meets` and `within` answer as for the folded sets.
    #[test]
    fn folding_words_is_folding_ids() {
        let ids: [SymbolId; 5] = [0, 63, 64, 300, 1000];
        let mut by_id = Folded::default();
        let mut words = [0u64; 16];
        for id in ids {
            by_id.insert(id);
            words[id as usize / 64] |= 1 << (id % 64);
        }
        let mut by_word = Folded::default();
        for (j, w) in words.iter().enumerate() {
            by_word.add_word(j, *w);
        }
        assert_eq!(by_id, by_word);
        let mut one = Folded::default();
        one.insert(256); // shares its bit with 0
        assert!(one.meets(&by_id) && one.within(&by_id));
        let mut other = Folded::default();
        other.insert(1);
        assert!(!other.meets(&by_id) && !other.within(&by_id));
        assert!(by_id.within(&Folded::ALL) && !Folded::ALL.within(&by_id));
        assert!(!Folded::default().meets(&Folded::ALL));
    }
}
