//! The writer shards: one thread per core, each owning a share of the
//! subscribed plain-TCP connections, woken once per publish batch, writing
//! what is new to every connection of its share with one non-blocking
//! `writev` each.
//!
//! A tokio task per connection woken per batch cost more than the writes:
//! the wake-up list, the scheduler, the `select!`, all per connection per
//! batch (docs/ARCHITECTURE.md, "The fan-out engine"). Here a batch costs a
//! shard one wake-up, and a connection one `try_lock` and one system call.
//!
//! A connection's state, its [`Pipe`] (subscriber and outbox), is shared
//! with its own task under a mutex that neither holds for more than one
//! fill and one write. The task keeps everything that waits: requests,
//! heartbeats, the stall timer, closing. The shard never waits on a socket:
//! when one takes less than it was offered, the shard *holds* the pipe back
//! to the task ([`Pipe::held`]), which waits for the socket to drain (or
//! stalls it out) and releases it. A held pipe costs the shard nothing, so
//! a slow client slows no one else; what it misses meanwhile is conflated
//! from the last-value cache when it fills again.

use std::io::{self, IoSlice};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use crate::fanout::pipe::{Pipe, Tally};
use crate::fanout::slots::{published, Folded, Indexed, Seen, Slots};

use crate::market::{Market, Published};
use crate::metrics::Metrics;
use crate::ring::Ring;
use crate::wake::{BatchWake, ThreadWake};

/// A socket a shard can write to from its own thread without waiting.
pub trait Socket: Send + Sync {
    /// Writes what the kernel takes now of `bufs`; `WouldBlock` if nothing.
    fn try_writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// A connection's pipe as its task and its shard share it.
pub struct Link {
    pipe: Mutex<Pipe>,
    socket: Option<Arc<dyn Socket>>,
    /// Notified when the shard holds the pipe back to the task.
    pub held_back: Notify,
    /// The connection has ended: its shard lets go of it.
    gone: AtomicBool,
    /// A pass over it panicked: its shard let go of it.
    failed: AtomicBool,
    /// The shard that writes it, once it has subscribed to something: set
    /// once, then read without a lock on every loop of the task.
    shard: OnceLock<Arc<Shard>>,
    /// Its index in its shard's slots. Relaxed: only whoever holds the
    /// shard's `slots` lock reads or writes it, and the lock orders them.
    slot: AtomicUsize,
}

impl Indexed for Link {
    fn index(&self) -> &AtomicUsize {
        &self.slot
    }
}

impl Link {
    /// A link whose pipe only its task writes (TLS, in-memory streams), or
    /// that a shard may write to `socket` once it subscribes.
    pub fn new(pipe: Pipe, socket: Option<Arc<dyn Socket>>) -> Arc<Link> {
        Arc::new(Link {
            pipe: Mutex::new(pipe),
            socket,
            held_back: Notify::new(),
            gone: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            shard: OnceLock::new(),
            slot: AtomicUsize::new(usize::MAX),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.pipe.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a shard writes this link's updates (else its task must).
    pub fn is_sharded(&self) -> bool {
        self.shard.get().is_some()
    }

    /// Asks the link's shard to look at this link at its next pass: the
    /// task has released the pipe and frames may be waiting, or changed
    /// what the connection subscribes to, or the connection has ended.
    pub fn nudge(self: &Arc<Self>) {
        if let Some(shard) = self.shard.get() {
            shard
                .touched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::clone(self));
            shard.wake.wake();
        }
    }

    /// Whether the shard gave up on this link (its pass panicked): the
    /// connection should end.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire) // pairs with the Release store in `Shard::run`
    }

    /// The connection has ended: its shard drops the link at its next
    /// pass, which this asks for, so that the socket closes promptly.
    fn retire(self: &Arc<Self>) {
        self.gone.store(true, Ordering::Release); // pairs with the Acquire load in `Shard::run`
        self.nudge();
    }

    /// One shard pass over this link: fill from the ring and write, again
    /// while the ring has more (a fill stops at the outbox bound), until
    /// the ring is drained or the socket takes less than offered; then the
    /// pipe is held back to the task. Returns false if the shard must come
    /// back: the task held the lock, or the ring still had more after
    /// [`MAX_FILLS`] fills (one connection does not hold up a pass).
    /// Lowers `due` to when the link's throttled frames are due, if sooner.
    ///
    /// `seen` is what the shard knows of the link: before the fill, the
    /// cursor skips what it vouches for; after, it records the link's
    /// interest and cursor.
    fn pump(&self, tally: &mut Tally, due: &mut Option<u64>, seen: &mut Seen) -> bool {
        let Some(socket) = &self.socket else {
            return true;
        };
        let mut pipe = match self.pipe.try_lock() {
            Ok(pipe) => pipe,
            Err(TryLockError::WouldBlock) => return false,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        if let (Some(now), Some(then)) = (pipe.sub.interest(), seen.interest) {
            // Every entry below `clear` has a symbol outside `then`, and so
            // outside `now`: the fill would pass over each of them.
            if now.within(&then) {
                pipe.sub.skip_to(seen.clear);
            }
        }
        let done = self.pump_locked(socket.as_ref(), &mut pipe, tally);
        seen.interest = pipe.sub.interest();
        seen.clear = pipe.sub.cursor();
        if let Some(d) = pipe.sub.next_due_ms() {
            *due = Some(due.map_or(d, |x| x.min(d)));
        }
        done
    }

    fn pump_locked(&self, socket: &dyn Socket, pipe: &mut Pipe, tally: &mut Tally) -> bool {
        for _ in 0..MAX_FILLS {
            if pipe.held {
                return true;
            }
            pipe.fill();
            if pipe.outbox.is_empty() {
                pipe.report_queue();
                return true;
            }
            self.write(socket, pipe, tally);
        }
        pipe.report_queue();
        pipe.held
    }

    /// Writes the outbox until it is empty or the socket takes less than
    /// offered, which holds the pipe back to the task.
    fn write(&self, socket: &dyn Socket, pipe: &mut Pipe, tally: &mut Tally) {
        while !pipe.outbox.is_empty() {
            let (result, offered) =
                pipe.with_slices(|iov, offered| (socket.try_writev(iov), offered));
            match result {
                Ok(n) if n > 0 => {
                    pipe.wrote(n, tally);
                    if n < offered {
                        self.hold_back(pipe, tally);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Would block, or failed: the task waits, or finds the error.
                _ => self.hold_back(pipe, tally),
            }
            if pipe.held {
                break;
            }
        }
    }

    fn hold_back(&self, pipe: &mut Pipe, tally: &mut Tally) {
        pipe.held_back(tally);
        self.held_back.notify_one();
    }
}

/// A pass shorter than this never rests (`Shard::rest`).
const MIN_PASS_TO_REST: Duration = Duration::from_micros(200);

/// Ends a link however its connection's task ends (returns, panics, or is
/// dropped): holds the pipe for good, empties its outbox (and so the
/// `queued_bytes` gauge's share), and lets its shard drop it.
pub struct Retire(pub Arc<Link>);

impl Drop for Retire {
    fn drop(&mut self) {
        let mut pipe = self.0.lock();
        pipe.hold_for_close();
        pipe.discard();
        drop(pipe);
        self.0.retire();
    }
}

/// Fills per link per pass at most (`Link::pump`).
const MAX_FILLS: usize = 8;

/// One writer thread's share of the connections.
pub struct Shard {
    wake: Arc<ThreadWake>,
    rest_percent: u32,
    ring: crate::ring::Arc<Ring<Published>>,
    /// Links added since the last pass.
    incoming: Mutex<Vec<Arc<Link>>>,
    /// Links nudged since the last pass ([`Link::nudge`]).
    touched: Mutex<Vec<Arc<Link>>>,
    /// The shard's links, held by whichever thread makes a pass: its
    /// writer, or the publisher making a small one itself
    /// ([`BatchWake::batch`]).
    links: Mutex<Slots<Link>>,
    /// How many links the last pass visited, or would have when it stopped
    /// over its budget: a hint for the publisher, which makes a small pass
    /// itself (the next one may differ: a pass it starts over its budget
    /// stops before writing any).
    size: AtomicUsize,
    stop: AtomicBool,
    metrics: Arc<Metrics>,
}

impl BatchWake for Shard {
    fn links(&self) -> usize {
        // Relaxed: a hint; a stale size only chooses the other path.
        self.size.load(Ordering::Relaxed)
    }

    /// With `inline`, and the writer idle, the pass is made now on the
    /// publisher's thread if it visits at most that many links; otherwise
    /// the writer is woken (`ThreadWake::after_batch`, model-checked by
    /// `tests/loom_wake.rs`). Returns how many links the pass made here
    /// visited.
    fn batch(&self, inline: Option<usize>) -> usize {
        let mut visited = 0;
        self.wake.after_batch(inline.is_some(), || {
            let mut links = self.links.try_lock().ok()?;
            let mut due = None;
            let (again, n) = self.pass(&mut links, &mut due, inline?)?;
            visited = n;
            // The writer owns what waits: a link to fill again, and
            // throttled frames due later (it parks until then).
            Some(again || due.is_some())
        });
        visited
    }
}

impl Shard {
    /// After a pass that took `spent` and found the next batch already
    /// waiting (the writers are the bottleneck), rests `rest_percent` of
    /// `spent`, so that the next pass takes a larger batch with fewer
    /// system calls, rather than the writers taking every core from the
    /// publisher and, on one machine, from the clients. Short passes (a
    /// light load) never rest: they add no latency.
    fn rest(&self, spent: Duration) {
        if self.rest_percent > 0 && spent > MIN_PASS_TO_REST && self.wake.is_pending() {
            std::thread::sleep(spent * self.rest_percent / 100);
        }
    }

    /// One pass: visits the links added or nudged since the last pass,
    /// those a visit left work for, those that take every entry, and those
    /// whose interest meets what was published since the last pass; the
    /// others cost it nothing ([`Slots::visits`]). Returns whether a link
    /// must be filled again; `due` gets the soonest throttled frames' time.
    /// A pass that would visit more than `most` links stops before it
    /// writes or moves on from what was published (`None`): the
    /// publisher's, which must not be held up by a large one. The links
    /// added and nudged are in the slots by then, due, so the writer's next
    /// pass visits them. Else returns that and how many links it visited.
    fn pass(
        &self,
        slots: &mut Slots<Link>,
        due: &mut Option<u64>,
        most: usize,
    ) -> Option<(bool, usize)> {
        for link in self
            .incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            slots.push(link);
        }
        for link in std::mem::take(&mut *self.touched.lock().unwrap_or_else(|e| e.into_inner())) {
            slots.mark(&link);
        }
        let from = slots.scanned;
        let to = self.ring.tail();
        // Read from the ring only if a link's interest asks: not at all
        // when every link takes every symbol.
        let bits: Option<Folded> = slots
            .any_interested()
            .then(|| published(&self.ring, from, to));
        let visit = slots.visits(bits.as_ref());
        // Relaxed: a hint (see `size`).
        self.size.store(visit.len(), Ordering::Relaxed);
        if visit.len() > most {
            // Left for the writer, which looks again from `from`.
            slots.visited_all(visit);
            return None;
        }
        slots.scanned = to;
        let visited = visit.len();
        let mut tally = Tally::default();
        let mut again = false;
        // Slots to drop, in increasing order (as visited).
        let mut dropped = Vec::new();
        for &i in &visit {
            let (link, mut seen) = slots.get(i);
            // Acquire pairs with the Release store in `Link::retire`.
            if link.gone.load(Ordering::Acquire) {
                dropped.push(i);
                continue;
            }
            // Nothing published between its last visit and this pass
            // concerned it, or it would have been visited.
            seen.clear = seen.clear_for(from);
            // A panic is a bug; it costs its one connection (which the
            // task then ends), not the thread and every other one.
            match catch_unwind(AssertUnwindSafe(|| link.pump(&mut tally, due, &mut seen))) {
                Ok(done) => {
                    slots.visited(i, seen, !done, to);
                    again |= !done;
                }
                Err(_) => {
                    tracing::error!("a writer pass panicked; closing its connection");
                    link.failed.store(true, Ordering::Release); // pairs with `Link::failed`
                    link.held_back.notify_one();
                    dropped.push(i);
                }
            }
        }
        slots.visited_all(visit);
        // From the last: a slot dropped takes the last one's place, which
        // is never one still to drop.
        debug_assert!(dropped.windows(2).all(|w| w[0] < w[1]));
        for &i in dropped.iter().rev() {
            slots.remove(i);
        }
        tally.report(&self.metrics);
        Some((again, visited))
    }

    /// Writes its links' updates, one pass per wake-up, until stopped.
    fn run(&self) {
        // When the soonest throttled frames of a link are due: the next
        // pass comes then, if no update comes first.
        let mut due: Option<u64> = None;
        loop {
            self.wake.wait_until(due.map(crate::fanout::instant_of));
            due = None;
            let started = Instant::now();
            if self.stop.load(Ordering::Acquire) {
                // Pairs with the Release store in `Shards::drop`. Links not
                // yet taken would hold this shard (through `Link::shard`).
                self.incoming
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                self.touched
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                self.links.lock().unwrap_or_else(|e| e.into_inner()).clear();
                return;
            }
            let again = {
                let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
                // The writer makes every pass, however large.
                self.pass(&mut links, &mut due, usize::MAX)
                    .is_some_and(|(again, _)| again)
            };
            self.rest(started.elapsed());
            if again {
                // A task held a pipe (briefly: never across a wait); its
                // frames are written on the next pass, after a yield.
                std::thread::yield_now();
                self.wake.wake();
            }
        }
    }
}

/// The writer shards of one server.
pub struct Shards {
    shards: Vec<(Arc<Shard>, Option<JoinHandle<()>>)>,
    next: AtomicUsize,
    market: Arc<Market>,
}

impl Shards {
    /// Starts `threads` writer threads (at least one) woken by `market`'s
    /// publisher, resting `rest_percent` of a pass after a busy one.
    pub fn start(market: Arc<Market>, threads: usize, rest_percent: u32) -> io::Result<Shards> {
        let mut shards = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let metrics = Arc::clone(&market.metrics);
            let ring = market.ring.clone();
            let handle = std::thread::Builder::new()
                .name(format!("tickwire-writer-{i}"))
                .spawn(move || {
                    let shard = Arc::new(Shard {
                        wake: Arc::new(ThreadWake::for_current_thread()),
                        rest_percent,
                        ring,
                        incoming: Mutex::default(),
                        touched: Mutex::default(),
                        links: Mutex::default(),
                        size: AtomicUsize::new(0),
                        stop: AtomicBool::new(false),
                        metrics,
                    });
                    if tx.send(Arc::clone(&shard)).is_ok() {
                        shard.run();
                    }
                })?;
            let shard = rx
                .recv()
                .map_err(|_| io::Error::other("a writer thread died at start"))?;
            market.wakeup.add(Arc::clone(&shard) as Arc<dyn BatchWake>);
            shards.push((shard, Some(handle)));
        }
        Ok(Shards {
            shards,
            next: AtomicUsize::new(0),
            market,
        })
    }

    /// Hands `link` to a shard (round robin), which writes its updates from
    /// its next pass on. A link without a socket stays with its task.
    pub fn add(&self, link: &Arc<Link>) {
        if link.socket.is_none() {
            return;
        }
        link.shard.get_or_init(|| {
            // Relaxed: a counter for spreading links, ordering nothing.
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
            let shard = Arc::clone(&self.shards[i].0);
            shard
                .incoming
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::clone(link));
            shard.wake.wake();
            shard
        });
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for (shard, handle) in &mut self.shards {
            self.market.wakeup.remove(&**shard);
            shard.stop.store(true, Ordering::Release); // pairs with the Acquire load in `Shard::run`
            shard.wake.wake();
            if let Some(handle) = handle.take() {
                let _ = handle.join();
            }
        }
    }
}

/// What the shard tests (`shard_tests.rs`) need to see of the shards.
#[cfg(test)]
mod tests {
    use super::*;

    impl Shards {
        /// Each shard's hint to the publisher: the links its last pass visited.
        pub fn hints(&self) -> Vec<usize> {
            self.shards.iter().map(|(s, _)| s.links()).collect()
        }

        /// Waits until every shard has made a pass over all that was published
        /// (at most 10 s).
        pub fn settle(&self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            for (shard, _) in &self.shards {
                let tail = shard.ring.tail();
                while shard.links.lock().unwrap().scanned < tail && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
