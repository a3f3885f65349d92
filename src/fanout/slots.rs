//! What a writer shard knows of its links between passes, so that a pass
//! visits only the links that something published concerns.
//!
//! A connection subscribed to a few symbols of many is concerned by few
//! publish batches, yet a pass that visited every link cost each of them a
//! lock and a fill per batch: with 16,000 connections on one symbol each of
//! 1,000, a pass took milliseconds and found nothing for all but a few
//! dozen. Now a pass reads what was published since the last one once,
//! folded onto 1,024 bits (symbol id mod 1,024), and visits a link only if its
//! [`Subscriber::interest`](crate::fanout::Subscriber::interest) meets
//! that (or it takes every entry, or was nudged, or has work left). A link
//! passed over has nothing to read in that batch, so the next visit moves
//! the link's cursor past that batch without reading the entries one by
//! one ([`Seen::clear`], [`Seen::clear_for`]).
//!
//! A pass does not look at every slot to find those links: the slots are
//! indexed by the bits of their interest ([`Slots::visits`]), so that a
//! pass costs the links it visits and a word per 64 slots per bit
//! published, not a look at each of 16,000 slots (2.7 MB) per batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::subscriptions::{BitSet, Ones};
use crate::market::Published;
use crate::ring::{Read, Ring};
use crate::update::SymbolId;

/// Words of a [`Folded`] set: 1,024 bits, so that up to 1,024 symbols
/// each have a bit of their own.
const FOLDED_WORDS: usize = 16;

/// A set of symbol ids folded onto 1,024 bits (bit `id % 1024`): whether
/// two sets may meet, with no false "no".
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Folded([u64; FOLDED_WORDS]);

impl Folded {
    /// Every bit: meets any non-empty set.
    pub const ALL: Folded = Folded([u64::MAX; FOLDED_WORDS]);

    pub fn insert(&mut self, id: SymbolId) {
        let bit = id as usize % (64 * FOLDED_WORDS);
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    /// Adds the 64 symbols of one word of a bit set: word `j` holds ids
    /// `64 j ..`, whose bits are word `j % 16`'s.
    pub fn add_word(&mut self, j: usize, word: u64) {
        self.0[j % FOLDED_WORDS] |= word;
    }

    /// Whether a symbol may be in both.
    pub fn meets(&self, other: &Folded) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }

    /// Whether every bit of `self` is in `other`.
    pub fn within(&self, other: &Folded) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }

    /// The bits set, in order.
    fn bits(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(j, &w)| Ones(w).map(move |b| j * 64 + b))
    }
}

/// A set of slot positions (as small integers: a shard holds far fewer
/// than `SymbolId::MAX` links).
type Positions = BitSet;

/// Slot `i` as a member of a [`Positions`].
fn pos(i: usize) -> SymbolId {
    i as SymbolId
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
    /// Where the pass that last visited the link stopped looking (its
    /// `to`): every pass since began there or later, and none concerned
    /// the link, or it would have been visited.
    pub(super) visited_to: u64,
}

/// A link in its shard.
pub(super) struct Slot<L> {
    link: Arc<L>,
    seen: Seen,
    /// Visit at the next pass, whatever was published: the link is new,
    /// was nudged, or its last visit left work.
    due: bool,
}

/// The links of one shard, held by whichever thread makes a pass.
///
/// Indexed so that a pass finds the slots it must visit without looking
/// at the others: `always` holds the slots visited whatever was published
/// (due, or with no interest recorded), `by_bit[b]` those whose recorded
/// interest has bit `b`. Every change to a slot's `due` or
/// `seen.interest`, and every move, goes through the methods here, which
/// keep the index in step.
pub(super) struct Slots<L> {
    slots: Vec<Slot<L>>,
    /// The ring position up to which the passes have looked at what was
    /// published.
    pub(super) scanned: u64,
    always: Positions,
    by_bit: Vec<Positions>,
    /// How many slots have an interest recorded (are in `by_bit`).
    interested: usize,
    /// Scratch for [`Slots::visits`].
    words: Vec<u64>,
    visit: Vec<usize>,
}

impl<L> Default for Slots<L> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            scanned: 0,
            always: Positions::default(),
            by_bit: (0..64 * FOLDED_WORDS)
                .map(|_| Positions::default())
                .collect(),
            interested: 0,
            words: Vec::new(),
            visit: Vec::new(),
        }
    }
}

impl<L> Slots<L> {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slot `i`'s link, and what its shard knows of it (changed only
    /// through [`Slots::visited`], which keeps the index in step).
    pub(super) fn get(&self, i: usize) -> (&Arc<L>, Seen) {
        let slot = &self.slots[i];
        (&slot.link, slot.seen)
    }

    /// Whether any slot's visit depends on what was published (else the
    /// pass need not read it).
    pub(super) fn any_interested(&self) -> bool {
        self.interested > 0
    }

    /// The slots a pass must visit, in order: those in `always`, and
    /// those whose interest meets `published` (None: every slot). Give the
    /// list back with [`Slots::visited_all`].
    pub(super) fn visits(&mut self, published: Option<&Folded>) -> Vec<usize> {
        let mut out = std::mem::take(&mut self.visit);
        out.clear();
        let n = self.slots.len();
        let Some(published) = published.filter(|p| **p != Folded::ALL) else {
            out.extend(0..n);
            return out;
        };
        let words = &mut self.words;
        words.clear();
        words.resize(n.div_ceil(64), 0);
        self.always.add_to(words);
        for b in published.bits() {
            self.by_bit[b].add_to(words);
        }
        for (j, &w) in words.iter().enumerate() {
            out.extend(Ones(w).map(|b| j * 64 + b).filter(|&i| i < n));
        }
        out
    }

    /// Takes back the list [`Slots::visits`] gave, to reuse it.
    pub(super) fn visited_all(&mut self, list: Vec<usize>) {
        self.visit = list;
    }

    /// Takes slot `i` out of the index.
    fn unindex(&mut self, i: usize) {
        self.always.remove(pos(i));
        if let Some(interest) = self.slots[i].seen.interest {
            for b in interest.bits() {
                self.by_bit[b].remove(pos(i));
            }
            self.interested -= 1;
        }
    }

    /// Puts slot `i` into the index, as its `due` and interest say.
    fn index(&mut self, i: usize) {
        let slot = &self.slots[i];
        match slot.seen.interest {
            Some(interest) => {
                for b in interest.bits() {
                    self.by_bit[b].insert(pos(i));
                }
                self.interested += 1;
                if slot.due {
                    self.always.insert(pos(i));
                }
            }
            None => {
                self.always.insert(pos(i));
            }
        }
    }

    /// Records a visit to slot `i` at a pass that looked up to `to`: what
    /// the visit left in `seen` and whether the slot is `due` again.
    pub(super) fn visited(&mut self, i: usize, seen: Seen, due: bool, to: u64) {
        let seen = Seen {
            visited_to: to,
            ..seen
        };
        let slot = &mut self.slots[i];
        if slot.seen.interest == seen.interest && slot.due == due {
            // The common case: the index has it right.
            slot.seen = seen;
            return;
        }
        self.unindex(i);
        let slot = &mut self.slots[i];
        slot.seen = seen;
        slot.due = due;
        self.index(i);
    }
}

impl<L: Indexed> Slots<L> {
    pub(super) fn push(&mut self, link: Arc<L>) {
        let i = self.slots.len();
        link.index().store(i, Ordering::Relaxed); // under the `slots` lock
        self.slots.push(Slot {
            link,
            seen: Seen {
                interest: None,
                clear: 0,
                visited_to: 0,
            },
            due: true,
        });
        self.index(i);
    }

    /// Marks `link` to be visited at this pass, if it is still here.
    pub(super) fn mark(&mut self, link: &Arc<L>) {
        let i = link.index().load(Ordering::Relaxed); // under the `slots` lock
        if let Some(slot) = self.slots.get_mut(i) {
            if Arc::ptr_eq(&slot.link, link) {
                slot.due = true;
                self.always.insert(pos(i));
            }
        }
    }

    /// Drops slot `i`; the last slot takes its place.
    pub(super) fn remove(&mut self, i: usize) {
        self.unindex(i);
        let last = self.slots.len() - 1;
        if i != last {
            self.unindex(last);
        }
        self.slots.swap_remove(i);
        if i != last {
            self.index(i);
            self.slots[i].link.index().store(i, Ordering::Relaxed); // under the `slots` lock
        }
    }

    /// Drops every slot and forgets what was scanned (the shard is
    /// stopping).
    pub(super) fn clear(&mut self) {
        *self = Slots::default();
    }
}

impl Seen {
    /// Where the link's cursor may go before a visit at a pass that looks
    /// at `from..`: past the passes since its last visit, none of which
    /// concerned it, if its cursor had reached the end of that visit's pass
    /// (otherwise it reads those entries itself).
    pub(super) fn clear_for(&self, from: u64) -> u64 {
        if self.clear >= self.visited_to {
            self.clear.max(from)
        } else {
            self.clear
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

    struct Dummy(AtomicUsize);

    impl Indexed for Dummy {
        fn index(&self) -> &AtomicUsize {
            &self.0
        }
    }

    /// The slots a pass must visit, looked up one by one.
    fn brute(slots: &Slots<Dummy>, published: &Folded) -> Vec<usize> {
        (0..slots.len())
            .filter(|&i| {
                let s = &slots.slots[i];
                s.due || s.seen.interest.is_none_or(|m| m.meets(published))
            })
            .collect()
    }

    /// A link's cursor moves past the passes since its last visit only if
    /// it had reached the end of that visit's pass.
    #[test]
    fn clear_for_skips_only_from_the_end_of_the_last_visit() {
        let seen = |clear, visited_to| Seen {
            interest: Some(Folded::default()),
            clear,
            visited_to,
        };
        assert_eq!(seen(10, 10).clear_for(20), 20);
        assert_eq!(seen(12, 10).clear_for(20), 20);
        assert_eq!(seen(25, 10).clear_for(20), 25);
        // Held, or the lock was taken: it reads those entries itself.
        assert_eq!(seen(5, 10).clear_for(20), 5);
    }

    /// Through pushes, marks, visits that change interests and `due`, and
    /// removals (which move the last slot), the index finds exactly the
    /// slots a look at each would, and each link knows its place.
    #[test]
    fn the_index_finds_what_a_look_at_every_slot_would() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut slots: Slots<Dummy> = Slots::default();
        let mut links: Vec<Arc<Dummy>> = Vec::new();
        for step in 0..20_000 {
            match next(10) {
                0..=2 => {
                    let link = Arc::new(Dummy(AtomicUsize::new(usize::MAX)));
                    links.push(Arc::clone(&link));
                    slots.push(link);
                }
                3 if !links.is_empty() => {
                    let link = &links[next(links.len() as u64) as usize];
                    slots.mark(link);
                }
                4..=7 if slots.len() > 0 => {
                    let i = next(slots.len() as u64) as usize;
                    let interest = (next(5) > 0).then(|| {
                        let mut f = Folded::default();
                        for _ in 0..1 + next(3) {
                            f.insert(next(3000) as SymbolId);
                        }
                        f
                    });
                    let seen = Seen {
                        interest,
                        clear: step,
                        visited_to: 0,
                    };
                    slots.visited(i, seen, next(4) == 0, step);
                }
                8 if slots.len() > 0 => {
                    let i = next(slots.len() as u64) as usize;
                    let gone = Arc::clone(&slots.slots[i].link);
                    slots.remove(i);
                    links.retain(|l| !Arc::ptr_eq(l, &gone));
                }
                _ => {}
            }
            // None, few or many bits.
            let mut published = Folded::default();
            for _ in 0..[0, 1, 3, 40][next(4) as usize] {
                published.insert(next(3000) as SymbolId);
            }
            let found = slots.visits(Some(&published));
            assert_eq!(found, brute(&slots, &published), "step {step}");
            slots.visited_all(found);
            assert_eq!(slots.visits(None), (0..slots.len()).collect::<Vec<_>>());
            for (i, s) in slots.slots.iter().enumerate() {
                assert_eq!(s.link.0.load(Ordering::Relaxed), i);
            }
            let interested = slots.slots.iter().filter(|s| s.seen.interest.is_some());
            assert_eq!(slots.interested, interested.count());
        }
        assert!(slots.len() > 100, "the test grew the shard");
    }

    /// A bit set's words fold onto the same bits as its ids one by one;
    /// `meets` and `within` answer as for the folded sets.
    #[test]
    fn folding_words_is_folding_ids() {
        let ids: [SymbolId; 5] = [0, 63, 64, 300, 1000];
        let mut by_id = Folded::default();
        let mut words = [0u64; 32];
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
        one.insert(1024); // shares its bit with 0
        assert!(one.meets(&by_id) && one.within(&by_id));
        let mut other = Folded::default();
        other.insert(1);
        assert!(!other.meets(&by_id) && !other.within(&by_id));
        assert!(by_id.within(&Folded::ALL) && !Folded::ALL.within(&by_id));
        assert!(!Folded::default().meets(&Folded::ALL));
    }
}
