//! Waking a thread once per publish batch: no wake-up is lost, and a thread
//! that is already awake costs the waker one atomic swap, not a system call.
//!
//! The writer shards ([`crate::fanout::shard`]) wait here; the publisher
//! wakes them through [`crate::market::Wakeup`]. The atomics and the thread
//! handle come from loom under the `loom` feature, so that
//! `tests/loom_wake.rs` can check every interleaving.

#[cfg(feature = "loom")]
use loom::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
};
#[cfg(not(feature = "loom"))]
use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

/// What the publisher calls after each batch: a writer shard, which wakes
/// its thread through a [`ThreadWake`] or lets the publisher make its pass
/// (`fanout::shard`).
pub trait BatchWake: Send + Sync {
    /// How many connections its last pass visited (or would have, had it
    /// stopped over its budget): a hint.
    fn links(&self) -> usize;

    /// A batch was published: every update in it must reach a pass that
    /// starts after this call. With `inline`, the caller's thread may
    /// make that pass itself if it visits at most that many connections.
    /// Returns how many the caller's thread visited.
    fn batch(&self, inline: Option<usize>) -> usize;
}

/// One thread's wake-up: a flag saying a pass is owed, and the thread to
/// unpark when the flag goes up.
pub struct ThreadWake {
    pending: AtomicBool,
    thread: thread::Thread,
}

impl ThreadWake {
    /// A wake-up for the calling thread, the only one that may
    /// [`wait`](Self::wait) on it.
    pub fn for_current_thread() -> Self {
        ThreadWake {
            pending: AtomicBool::new(false),
            thread: thread::current(),
        }
    }

    /// Owes the thread one more pass. Everything the caller wrote before
    /// this call is visible to that pass.
    pub fn wake(&self) {
        // AcqRel pairs with the swap in `wait`: the Release half publishes
        // the caller's writes to the pass that takes the flag down. Only
        // the waker that raises the flag unparks; a thread that has not yet
        // taken it down will see the flag (a swap reads the newest value),
        // and a parked one has its unpark token.
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.thread.unpark();
        }
    }

    /// After a batch: if `inline` and no pass is owed already, tries the
    /// pass on the caller's thread (`try_pass` returns `None` if the
    /// thread holds the state or the pass is not the caller's to make,
    /// else whether the thread must still be woken); wakes the thread
    /// otherwise. Every write before this call is
    /// seen by a pass that starts after it: the caller's, or (the thread
    /// being mid-pass, or owed one) the thread's next.
    pub fn after_batch(&self, inline: bool, try_pass: impl FnOnce() -> Option<bool>) {
        if inline && !self.is_pending() && try_pass() == Some(false) {
            return;
        }
        self.wake();
    }

    /// Whether a wake-up has come since the last [`wait`](Self::wait)
    /// returned: a hint, for the waiting thread's own pacing.
    pub fn is_pending(&self) -> bool {
        // Relaxed: a hint; `wait` takes the flag down with the ordering
        // that matters.
        self.pending.load(Ordering::Relaxed)
    }

    /// [`wait`](Self::wait), but returns at `deadline` if no wake-up has
    /// come by then (a throttled connection's held frames are due).
    #[cfg(not(feature = "loom"))]
    pub fn wait_until(&self, deadline: Option<std::time::Instant>) {
        let Some(deadline) = deadline else {
            return self.wait();
        };
        // AcqRel pairs with the swap in `wake`, as in `wait`.
        while !self.pending.swap(false, Ordering::AcqRel) {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            thread::park_timeout(deadline - now);
        }
    }

    /// Under loom, which has no clock: the deadline may already have
    /// passed, so one look at the flag and back. Every interleaving of the
    /// real timed wait is one of these (a timeout firing before any wake)
    /// or one of [`wait`](Self::wait)'s, so the models cover both.
    #[cfg(feature = "loom")]
    pub fn wait_until(&self, deadline: Option<std::time::Instant>) {
        if deadline.is_none() {
            return self.wait();
        }
        // AcqRel pairs with the swap in `wake`, as in `wait`.
        self.pending.swap(false, Ordering::AcqRel);
    }

    /// Returns once a [`wake`](Self::wake) has come since the last return,
    /// taking the flag down. Spurious unparks are waited out.
    pub fn wait(&self) {
        // AcqRel pairs with the swap in `wake` (see there).
        while !self.pending.swap(false, Ordering::AcqRel) {
            thread::park();
        }
    }
}
