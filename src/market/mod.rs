//! What the publisher shares with every connection: the ring of encoded
//! updates, the last-value cache, the symbol table and the wake-up signal.

use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::Notify;

pub mod books;
pub mod candles;

pub use self::books::{BookCache, SharedBook};
pub use self::candles::{CandleCache, SharedCandles, Stamps};

use crate::metrics::Metrics;
use crate::ring::{Ring, RingWriter};
use crate::symbols::SymbolTable;
use crate::update::SymbolId;
use crate::wake::BatchWake;
use crate::wire::encode::EncodedUpdate;
use crate::wire::{channel, Format};

/// One update as it sits in the ring and the last-value cache: sequenced,
/// stamped, and encoded once in both wire formats.
#[derive(Debug, Clone)]
pub struct Published {
    /// Global sequence; also the entry's position in the ring plus one.
    pub seq: u64,
    pub symbol: SymbolId,
    /// For a status: the `symbol_seq` of the symbol's last update.
    pub symbol_seq: u64,
    /// A status entry: the symbol turned stale or live. The cache keeps the
    /// newest of each kind.
    pub is_status: bool,
    /// An event, not a state: a trade, a full-book change, a candle's
    /// close. A throttle holds every event, and only the newest state.
    pub is_event: bool,
    /// What it is, for a connection's channels ([`crate::wire::channel`]):
    /// quotes, trades, or a book channel; a status goes to every channel of
    /// its symbol.
    pub channel: u8,
    pub frames: EncodedUpdate,
}

impl Published {
    pub fn frame(&self, format: Format) -> &Bytes {
        match format {
            Format::Binary => &self.frames.binary,
            Format::Json => &self.frames.json,
        }
    }

    /// The id of the arena chunk holding [`frame`](Self::frame).
    pub fn chunk(&self, format: Format) -> u64 {
        match format {
            Format::Binary => self.frames.chunks[0],
            Format::Json => self.frames.chunks[1],
        }
    }
}

/// What the cache holds for one symbol: its newest update and, once an
/// upstream feed has reported on it, its newest status. Kept together under
/// one lock so that a reader gets a pair as the publisher left it, never a
/// status from before an update and the update from after it.
#[derive(Debug, Clone, Default)]
pub struct LastValues {
    /// The newest quote or trade.
    pub update: Option<Published>,
    pub status: Option<Published>,
    /// The newest quote, when `update` is a trade (when `update` is a
    /// quote, it is the newest quote): for a connection that takes quotes
    /// and not trades.
    pub quote: Option<Published>,
}

impl LastValues {
    /// The entries, oldest first (the order they were published in), for a
    /// connection that takes quotes and trades (both: the newest of
    /// either; one: the newest of that one).
    pub fn in_order(self, quotes: bool, trades: bool) -> impl Iterator<Item = Published> {
        let update = match (quotes, trades) {
            (true, true) => self.update,
            (true, false) => self
                .update
                .filter(|u| u.channel == channel::QUOTES)
                .or(self.quote),
            (false, true) => self.update.filter(|u| u.channel == channel::TRADES),
            (false, false) => None,
        };
        let (a, b) = match (update, self.status) {
            (Some(u), Some(s)) if s.seq < u.seq => (Some(s), Some(u)),
            (u, s) => (u, s),
        };
        a.into_iter().chain(b)
    }
}

/// The newest update (and status) of every symbol, for snapshots and for
/// slow clients that catch up.
///
/// Each symbol has its own mutex, held only for the clone of a few `Bytes`
/// (refcount increments): the publisher can be delayed by a reader only
/// for that long, and only on the one symbol the reader is copying. The
/// outer `RwLock` is write-locked only to add a symbol.
#[derive(Default)]
pub struct LastValueCache {
    slots: RwLock<Vec<Mutex<LastValues>>>,
}

impl LastValueCache {
    pub fn store(&self, p: &Published) {
        let index = p.symbol as usize;
        let put = |slot: &Mutex<LastValues>| {
            let mut values = slot.lock().unwrap_or_else(|e| e.into_inner());
            if p.is_status {
                values.status = Some(p.clone());
            } else {
                // The quote a trade replaces moves aside: no extra clone.
                let before = values.update.replace(p.clone());
                if p.channel == channel::QUOTES {
                    values.quote = None;
                } else if let Some(q) = before.filter(|b| b.channel == channel::QUOTES) {
                    values.quote = Some(q);
                }
            }
        };
        {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slots.get(index) {
                put(slot);
                return;
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if slots.len() <= index {
            slots.resize_with(index + 1, Mutex::default);
        }
        put(&slots[index]);
    }

    /// The symbol's newest update.
    pub fn get(&self, symbol: SymbolId) -> Option<Published> {
        self.values(symbol).update
    }

    /// The symbol's newest update and newest status, read together.
    pub fn values(&self, symbol: SymbolId) -> LastValues {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.get(symbol as usize) else {
            return LastValues::default();
        };
        let values = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        values
    }

    /// Number of symbol slots (the highest symbol id seen, plus one).
    pub fn len(&self) -> usize {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One `T` per symbol id, each under its own mutex (a symbol's book, its
/// candles): a reader delays the publisher only on the one symbol it reads.
/// The outer lock is written only to add a symbol.
pub struct PerSymbol<T> {
    slots: RwLock<Vec<Mutex<T>>>,
}

impl<T> Default for PerSymbol<T> {
    fn default() -> Self {
        PerSymbol {
            slots: RwLock::new(Vec::new()),
        }
    }
}

impl<T: Default> PerSymbol<T> {
    /// Runs `f` on the symbol's `T`, under its mutex, creating it (default)
    /// if the symbol has none yet.
    pub fn with<R>(&self, symbol: SymbolId, f: impl FnOnce(&mut T) -> R) -> R {
        let lock = |m: &Mutex<T>| -> R { f(&mut m.lock().unwrap_or_else(|e| e.into_inner())) };
        let index = symbol as usize;
        {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = slots.get(index) {
                return lock(slot);
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if slots.len() <= index {
            slots.resize_with(index + 1, Mutex::default);
        }
        lock(&slots[index])
    }
}

/// The shared half of the data path.
pub struct Market {
    // The ring's own `Arc`: loom's under the `loom` feature.
    pub ring: crate::ring::Arc<Ring<Published>>,
    pub lvc: LastValueCache,
    /// Every symbol's order book ([`crate::book`]).
    pub books: BookCache,
    /// Every symbol's candles ([`crate::candle`]).
    pub candles: CandleCache,
    pub symbols: Arc<SymbolTable>,
    /// Signalled once per batch the publisher appends.
    pub wakeup: Wakeup,
    pub metrics: Arc<Metrics>,
}

impl Market {
    /// An empty market with a ring of `ring_capacity` entries (a power of
    /// two), and the ring's one writer, for the [`Publisher`](crate::publish::Publisher).
    pub fn new(
        ring_capacity: usize,
        symbols: Arc<SymbolTable>,
        metrics: Arc<Metrics>,
    ) -> (Arc<Market>, RingWriter<Published>) {
        let (writer, ring) = Ring::with_capacity(ring_capacity);
        let market = Arc::new(Market {
            ring,
            lvc: LastValueCache::default(),
            books: BookCache::default(),
            candles: CandleCache::default(),
            symbols,
            wakeup: Wakeup::default(),
            metrics,
        });
        (market, writer)
    }
}

/// The publisher makes passes that visit at most this many links,
/// together, itself after a batch, when their writers are idle (chosen by
/// the links each shard's last pass visited, and a pass that would visit
/// more than what is left stops before writing and wakes its writer):
/// waking a parked thread
/// costs about 40 µs on a virtual machine, more than a pass over a few
/// connections (10 subscribers x 1,000 updates/s, p50: 90 µs woken, 50 µs
/// with the writer spinning), and a woken writer costs CPU of its own
/// (100 x 10,000: 30 % less server CPU with the passes inline, p50 10 %
/// lower; 8-second runs, three with the passes inline and two without).
/// Bounded, so that the publisher is held up by at most this many sends,
/// and by a pass's look at what it would visit when it stops (once per
/// change from small passes to large: its writer then takes the next).
const INLINE_MAX_LINKS: usize = 128;

/// Shards the publisher makes passes for, at most, after one batch.
const INLINE_MAX_SHARDS: usize = 8;

/// The publisher's once-per-batch signal. Two kinds of waiter: the writer
/// shards (every plain-TCP WebSocket connection is written by one), whose
/// threads are woken with an atomic swap and at most one unpark each, or
/// whose pass the publisher makes itself when it is small; and tokio tasks
/// (SSE streams, TLS connections), which wait on `tasks`. A task or shard
/// that is busy writing is not woken at all: it finds the new entries when
/// it next drains the ring.
#[derive(Default)]
pub struct Wakeup {
    pub tasks: Notify,
    shards: RwLock<Vec<Arc<dyn BatchWake>>>,
}

impl Wakeup {
    /// Wakes every waiter: called by the publisher after each batch. The
    /// publisher makes the passes of the shards whose last passes visited
    /// at most [`INLINE_MAX_LINKS`] links together (taken in order)
    /// itself, after waking the others, so that those start at once (a
    /// pass that stops over its budget wakes its writer then).
    pub fn notify(&self) {
        self.tasks.notify_waiters();
        let shards = self.shards.read().unwrap_or_else(|e| e.into_inner());
        // Chosen by their hints; then each pass spends what it visited.
        let mut expected = INLINE_MAX_LINKS;
        let mut inline = [0usize; INLINE_MAX_SHARDS];
        let mut n = 0;
        for (i, shard) in shards.iter().enumerate() {
            let links = shard.links();
            if links <= expected && n < INLINE_MAX_SHARDS {
                expected -= links;
                inline[n] = i;
                n += 1;
            } else {
                shard.batch(None);
            }
        }
        let mut budget = INLINE_MAX_LINKS;
        for &i in &inline[..n] {
            budget -= shards[i].batch(Some(budget));
        }
    }

    /// Adds a shard to tell after every batch.
    pub fn add(&self, shard: Arc<dyn BatchWake>) {
        self.shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(shard);
    }

    /// Stops telling one added with [`add`](Self::add).
    pub fn remove(&self, shard: &dyn BatchWake) {
        self.shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !std::ptr::addr_eq(Arc::as_ptr(s), shard));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Each call a shard got: its id, and the budget it was given.
    type Calls = Arc<Mutex<Vec<(usize, Option<usize>)>>>;

    /// A shard that records the calls it gets: its last pass visited
    /// `hint` links, its next visits `visits`.
    struct Recorder {
        id: usize,
        hint: usize,
        visits: usize,
        calls: Calls,
    }

    impl BatchWake for Recorder {
        fn links(&self) -> usize {
            self.hint
        }

        fn batch(&self, inline: Option<usize>) -> usize {
            self.calls.lock().unwrap().push((self.id, inline));
            // Like `Shard::batch`: a pass over its budget wakes the writer.
            match inline {
                Some(most) if self.visits <= most => self.visits,
                _ => 0,
            }
        }
    }

    #[test]
    fn the_publisher_writes_the_shards_that_fit_its_budget_after_waking_the_rest() {
        let wakeup = Wakeup::default();
        let calls = Arc::new(Mutex::new(Vec::new()));
        // (hint, visits): shard 1 visits more than its hint said.
        let shards = [
            (100, 90),
            (20, 200),
            (50, 50),
            (5, 5),
            (INLINE_MAX_LINKS + 1, 0),
            (2, 2),
        ];
        for (id, &(hint, visits)) in shards.iter().enumerate() {
            let calls = Arc::clone(&calls);
            wakeup.add(Arc::new(Recorder {
                id,
                hint,
                visits,
                calls,
            }));
        }
        wakeup.notify();
        // TC0: each shard told once; by their hints 100 + 20 + 5 + 2 fit
        // in 128, taken in order; 50 would not after the first two, nor
        // the one over 128 alone.
        // TC1: the woken first, so that their writers start at once.
        // TC2: each pass made inline gets what the ones before it left:
        // 128 - 90; shard 1 (200 > 38) stops and spends nothing.
        assert_eq!(
            *calls.lock().unwrap(),
            [
                (2, None),
                (4, None),
                (0, Some(128)),
                (1, Some(38)),
                (3, Some(38)),
                (5, Some(33)),
            ]
        );
    }
}
