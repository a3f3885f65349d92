//! A lock-free, fixed-capacity, single-producer many-consumer broadcast ring.
//!
//! # Algorithm
//!
//! An SPMC overwrite ring in the style of the LMAX Disruptor's single-writer
//! sequencing (Thompson et al., "Disruptor: High performance alternative to
//! bounded queues for exchanging data between concurrent threads", 2011), with
//! memory reclaimed by epochs (Fraser, "Practical lock-freedom", 2004, §5.2.3,
//! as implemented by `crossbeam-epoch`).
//!
//! - Every entry gets a position from one global sequence, starting at **0**.
//!   Position `p` lives in slot `p & (capacity - 1)`.
//! - The one writer owns the sequence: it boxes `Entry { pos, value }`, swaps
//!   the box into its slot, hands the box it displaced to the epoch collector,
//!   and only then publishes `tail = pos + 1`. It never looks at a reader.
//! - A reader is nothing but a `u64` cursor (the position it wants next). It
//!   loads `tail`, then the slot's pointer, and compares the entry's `pos`
//!   with its cursor: equal means the entry is the one it asked for, greater
//!   means the writer has lapped it. Since the slot was written before `tail`
//!   was published, `pos` is never smaller.
//! - Entries are never mutated once published. A reader borrows `&T` for as
//!   long as its [`Guard`] is pinned, so it can clone a refcounted value out
//!   while the writer overwrites the slot; the displaced entry is dropped
//!   only after every guard pinned before the swap is gone.
//!
//! # Lagging
//!
//! The writer never waits. A reader that falls more than `capacity` entries
//! behind is *lapped*: [`Ring::read`] returns [`Read::Lapped`] with the oldest
//! position still held, so the reader learns it missed `next - cursor`
//! entries and continues from `next`. A reader exactly `capacity` behind is
//! not lapped: the oldest entry is still there. Lapping can repeat if the
//! reader is still too slow after it jumps.
//!
//! ```
//! use tickwire::ring::{Read, Ring};
//!
//! let (mut writer, ring) = Ring::with_capacity(4);
//! for n in 0..10u64 {
//!     writer.push(n * 100);
//! }
//! let guard = ring.pin();
//!
//! // A reader that never read anything has lost positions 0..6.
//! let mut cursor = 0;
//! let Read::Lapped { next } = ring.read(&guard, cursor) else {
//!     panic!("a reader 10 behind a 4-entry ring is lapped");
//! };
//! assert_eq!((next, next - cursor), (6, 6)); // resume at 6, missed 6
//! cursor = next;
//!
//! // The last `capacity` entries are all still there, in order.
//! while let Read::Item(value) = ring.read(&guard, cursor) {
//!     assert_eq!(*value, cursor * 100);
//!     cursor += 1;
//! }
//! assert_eq!(ring.read(&guard, cursor), Read::Empty);
//! assert_eq!(cursor, ring.tail());
//! ```
//!
//! # Memory
//!
//! The ring holds `capacity` live entries plus the displaced ones that
//! `crossbeam-epoch` has not yet destroyed: a displaced entry is dropped once
//! the global epoch has advanced past every guard that might still see it,
//! so hold a [`Guard`] briefly (or [`Guard::repin`] it) in a reader loop.
//! Entries still in the ring are dropped when the ring drops.
//!
//! # Checking
//!
//! - Unit tests: `cargo test --lib ring`.
//! - loom, with the atomics swapped in by `sync.rs` (in the test profile,
//!   so that debug assertions are on and a broken invariant fails with its
//!   message, not a segfault):
//!   `cargo test --features loom --test loom_ring`.
//!   Under loom, [`Guard`] is a stand-in that keeps every displaced entry
//!   until the ring drops, so loom checks this file's orderings (slot and
//!   tail publication, lap detection, the `pos` check) while the correctness
//!   of `crossbeam-epoch` itself is left to its authors, who check it under
//!   Miri and loom.
//! - Miri, real `crossbeam-epoch` included (the unit tests shrink their
//!   counts under `cfg(miri)`):
//!   `MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-permissive-provenance -Zmiri-ignore-leaks" cargo +nightly miri test --lib ring`.
//!   The flags are the ones `crossbeam-epoch` needs for itself: it breaks
//!   Stacked Borrows (crossbeam-rs/crossbeam#545) and casts integers to
//!   pointers, and the garbage still queued in its global collector when the
//!   process exits shows up as leaks. That every value is dropped exactly
//!   once is checked by `every_value_is_dropped_exactly_once` instead.

mod sync;

#[cfg(all(test, not(feature = "loom")))]
mod tests;

use std::cmp::Ordering as Cmp;
use std::fmt;
use std::marker::PhantomData;

use crossbeam_utils::CachePadded;

pub use self::sync::Arc;
use self::sync::{AtomicPtr, AtomicU64, Ordering};

/// A fixed-capacity broadcast ring; see the [module docs](self).
///
/// `T: Send` because a displaced entry may be dropped by whichever thread
/// collects the epoch garbage, `T: Sync` because readers on many threads
/// borrow `&T` at once, and `T: 'static` because that drop may happen after
/// the ring itself is gone.
pub struct Ring<T: Send + Sync + 'static> {
    /// The position the next push will take; every position below it has
    /// been written. Padded because every reader loads it on every read
    /// while the writer stores it on every push.
    tail: CachePadded<AtomicU64>,
    /// `capacity` pointers to boxed entries; null until first written.
    slots: Box<[AtomicPtr<Entry<T>>]>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: u64,
    /// Displaced entries under loom, freed when the ring drops.
    #[cfg(feature = "loom")]
    retired: std::sync::Mutex<Vec<Retired<T>>>,
    /// The ring owns the boxed entries its slots point to.
    _owns: PhantomData<Box<Entry<T>>>,
}

/// The only handle that can push, so the ring has exactly one producer.
pub struct RingWriter<T: Send + Sync + 'static> {
    ring: Arc<Ring<T>>,
    /// The writer's own copy of the next position, so a push never reads the
    /// cache line that readers are polling. Padded so that whatever the
    /// writer is embedded in does not share a line with it.
    next: CachePadded<u64>,
}

/// What a reader finds at its cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'g, T> {
    /// The entry at the cursor; advance the cursor by one.
    Item(&'g T),
    /// The cursor is at the tail: nothing new yet.
    Empty,
    /// The entry at the cursor was overwritten. `next` is the oldest position
    /// still held; the reader missed `next - cursor` entries.
    Lapped {
        /// Where to continue reading.
        next: u64,
    },
}

// Not derived: a derive would demand `T: Clone`, but only `&T` is copied.
impl<T> Clone for Read<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Read<'_, T> {}

/// One published value and the position it was published at.
struct Entry<T> {
    pos: u64,
    value: T,
}

/// Proof that the current thread is pinned: references returned by
/// [`Ring::read`] stay valid until the guard drops. Any ring's guard works
/// with every ring. Not `Send`: a pin belongs to its thread.
///
/// A newtype rather than a bare `crossbeam_epoch::Guard`, because a guard
/// from a private `crossbeam_epoch::Collector` (or `unprotected()`) would not
/// keep the ring's entries alive, and `read` is a safe function.
#[cfg(not(feature = "loom"))]
pub struct Guard {
    inner: crossbeam_epoch::Guard,
}

/// Under loom, entries are only freed when the ring drops, so the guard has
/// nothing to protect; it only keeps the API and the `!Send` of the real one.
#[cfg(feature = "loom")]
pub struct Guard {
    _not_send: PhantomData<*mut ()>,
}

impl Guard {
    /// Unpins and pins again, letting the epoch advance past this thread, so
    /// a long-lived reader does not hold back reclamation.
    pub fn repin(&mut self) {
        #[cfg(not(feature = "loom"))]
        self.inner.repin();
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// A displaced entry waiting for the ring to drop (loom only).
#[cfg(feature = "loom")]
struct Retired<T>(*mut Entry<T>);

// SAFETY: a `Retired` is an owned `Box<Entry<T>>` in raw form, which is
// `Send` when `T` is; it is only turned back into a box when the ring drops.
#[cfg(feature = "loom")]
unsafe impl<T: Send> Send for Retired<T> {}

impl<T: Send + Sync + 'static> Ring<T> {
    /// Creates a ring of `capacity` entries and its one writer.
    ///
    /// # Panics
    ///
    /// If `capacity` is not a power of two (in particular, if it is 0).
    pub fn with_capacity(capacity: usize) -> (RingWriter<T>, Arc<Ring<T>>) {
        assert!(
            capacity.is_power_of_two(),
            "ring capacity must be a power of two, got {capacity}"
        );
        let slots = (0..capacity)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect();
        let ring = Arc::new(Ring {
            tail: CachePadded::new(AtomicU64::new(0)),
            slots,
            mask: capacity as u64 - 1,
            #[cfg(feature = "loom")]
            retired: std::sync::Mutex::new(Vec::new()),
            _owns: PhantomData,
        });
        let writer = RingWriter {
            ring: Arc::clone(&ring),
            next: CachePadded::new(0),
        };
        (writer, ring)
    }

    /// The number of entries the ring holds.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The position the next push will take. A new reader that wants only
    /// what comes after now starts its cursor here.
    pub fn tail(&self) -> u64 {
        // Acquire: pairs with the Release store in `push`, so that a caller
        // that then reads any position below this tail finds it written.
        self.tail.load(Ordering::Acquire)
    }

    /// Pins the current thread; see [`Guard`].
    pub fn pin(&self) -> Guard {
        Guard {
            #[cfg(not(feature = "loom"))]
            inner: crossbeam_epoch::pin(),
            #[cfg(feature = "loom")]
            _not_send: PhantomData,
        }
    }

    /// Reads the entry at `cursor`; see [`Read`] and the module's
    /// [Lagging](self#lagging) section. A cursor past the tail reads
    /// [`Read::Empty`] until the writer gets there.
    pub fn read<'g>(&'g self, guard: &'g Guard, cursor: u64) -> Read<'g, T> {
        // `guard` is only proof that this thread is pinned.
        let _ = guard;
        // Acquire: pairs with the Release store of `tail` in `push`, so that
        // the slot of every position below `tail` is seen written (by this
        // position's entry or a later one).
        let tail = self.tail.load(Ordering::Acquire);
        if cursor >= tail {
            return Read::Empty;
        }
        let capacity = self.mask + 1;
        if tail - cursor > capacity {
            return Read::Lapped {
                next: tail - capacity,
            };
        }
        // Acquire: pairs with the Release swap in `push`, so that the fields
        // of the entry behind the pointer are seen fully written.
        let ptr = self.slot(cursor).load(Ordering::Acquire);
        debug_assert!(
            !ptr.is_null(),
            "slot of position {cursor} < tail {tail} unwritten"
        );
        // SAFETY: the pointer is non-null because position `cursor < tail`
        // was stored into this slot before `tail` was published, and a slot
        // is never reset to null. It came from `Box::into_raw` and is only
        // freed (a) through the epoch once displaced, which waits for
        // `guard`, pinned before this load and borrowed for 'g, or (b) when
        // the ring drops, which `&'g self` rules out. Entries are never
        // written after publication, so a shared borrow is sound.
        let entry = unsafe { &*ptr };
        debug_assert!(
            entry.pos >= cursor,
            "slot holds position {} older than cursor {cursor} < tail {tail}",
            entry.pos
        );
        match entry.pos.cmp(&cursor) {
            Cmp::Equal => Read::Item(&entry.value),
            // The writer reached `entry.pos` (>= cursor + capacity) after we
            // loaded `tail`; at that moment it held `pos - mask ..= pos`.
            Cmp::Greater => Read::Lapped {
                next: entry.pos - self.mask,
            },
            // Ruled out by the pairing on `tail` (asserted above); asking
            // again is the harmless answer if it were ever broken.
            Cmp::Less => Read::Empty,
        }
    }

    fn slot(&self, pos: u64) -> &AtomicPtr<Entry<T>> {
        let index = (pos & self.mask) as usize;
        debug_assert!(index < self.slots.len());
        // SAFETY: `mask` is `slots.len() - 1` with a power-of-two length, so
        // `pos & mask` is always in bounds.
        unsafe { self.slots.get_unchecked(index) }
    }

    /// Hands a displaced entry to the epoch collector.
    ///
    /// # Safety
    ///
    /// `old` came from `Box::into_raw`, has just been unlinked from its slot
    /// while `guard` was pinned, and is retired exactly once.
    #[cfg(not(feature = "loom"))]
    unsafe fn retire(&self, guard: &Guard, old: *mut Entry<T>) {
        // SAFETY: by this function's contract no new reader can reach `old`,
        // and crossbeam runs the closure only once every guard pinned before
        // the unlink is gone. Dropping `T` on another thread, possibly after
        // the ring, is allowed by `T: Send + 'static`.
        unsafe {
            guard
                .inner
                .defer_unchecked(move || drop(Box::from_raw(old)))
        }
    }

    /// Keeps a displaced entry until the ring drops (loom has no epochs).
    ///
    /// # Safety
    ///
    /// As for the non-loom version.
    #[cfg(feature = "loom")]
    unsafe fn retire(&self, _guard: &Guard, old: *mut Entry<T>) {
        self.retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Retired(old));
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity())
            .field("tail", &self.tail())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Drop for Ring<T> {
    fn drop(&mut self) {
        for slot in self.slots.iter() {
            // Relaxed: `&mut self` means every other handle is gone, and the
            // last `Arc` drop synchronized with all of them.
            let ptr = slot.load(Ordering::Relaxed);
            if !ptr.is_null() {
                // SAFETY: the slot owns its entry (from `Box::into_raw`), and
                // no reader borrow outlives `&self`.
                drop(unsafe { Box::from_raw(ptr) });
            }
        }
        #[cfg(feature = "loom")]
        for Retired(ptr) in self
            .retired
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            // SAFETY: displaced entries are only kept here, once each, and no
            // reader borrow outlives `&self`.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

impl<T: Send + Sync + 'static> RingWriter<T> {
    /// Publishes `value` and returns its position. Never waits and never
    /// fails: when the ring is full, the oldest entry is overwritten.
    pub fn push(&mut self, value: T) -> u64 {
        let ring = &*self.ring;
        let pos = *self.next;
        let entry = Box::into_raw(Box::new(Entry { pos, value }));
        // Pinned before the swap, so the displaced entry's retirement waits
        // for every reader that might have loaded it.
        let guard = ring.pin();
        // Release: pairs with the Acquire slot load in `read`, so that a
        // reader that sees this pointer sees the entry's `pos` and `value`.
        // No Acquire needed: the displaced entry was written by this thread.
        let old = ring.slot(pos).swap(entry, Ordering::Release);
        if !old.is_null() {
            // SAFETY: `old` was boxed by an earlier push and just unlinked by
            // the swap above while `guard` was pinned; only this push sees it.
            unsafe { ring.retire(&guard, old) };
        }
        // Release: pairs with the Acquire loads of `tail` in `read` and
        // `tail`, so that a reader that sees `tail > pos` also sees the slot
        // store above.
        ring.tail.store(pos + 1, Ordering::Release);
        *self.next = pos + 1;
        pos
    }

    /// The ring this writer pushes into.
    pub fn ring(&self) -> &Arc<Ring<T>> {
        &self.ring
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for RingWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingWriter")
            .field("next", &*self.next)
            .finish_non_exhaustive()
    }
}
