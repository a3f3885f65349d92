//! A synthetic feed for load tests and demos: a random walk of quotes over
//! `N` symbols `SYN0000`, `SYN0001`, ..., with about one trade in ten, at a
//! steady total rate; with `book=L`, each quote also moves an order book of
//! `L` levels a side (a snapshot first, then the levels the move changed),
//! whose top is the quote.
//!
//! Prices move in ticks of 0.01 from around 100.00, the spread is 1 to 3
//! ticks, and the bid never falls below one tick, so a book is never crossed
//! and never at or below zero.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{FeedError, FeedStats, SpecError};
use crate::symbols::{Normalizer, Scale, MAX_SYMBOLS};
use crate::update::{level_flags, now_ns, BookSide, Side, Update, UpdateKind};

pub const DEFAULT_SEED: u64 = 0x5EED;

/// How often the paced generator wakes to emit what has come due.
const TICK: Duration = Duration::from_millis(1);

/// Price tick and size step, as decimals of the fixed-point sample strings
/// the symbols are interned with.
const PRICE_DECIMALS: u32 = 2;
const SIZE_DECIMALS: u32 = 3;

/// `synthetic:symbols=N,rate=R|max[,seed=S]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub symbols: u32,
    pub rate: Rate,
    pub seed: u64,
    /// Levels a side of each symbol's order book; 0 for none.
    pub book: u32,
}

/// Most levels a side a synthetic book may have.
pub const MAX_BOOK_LEVELS: u32 = 10_000;

/// Updates per second over all symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    PerSecond(u64),
    /// As fast as the channel takes them.
    Max,
}

impl SyntheticSpec {
    /// Parses the `key=value,...` part of `spec` (which is kept for messages).
    pub(crate) fn parse(spec: &str, params: &str) -> Result<Self, SpecError> {
        let err = |reason: String| SpecError::Synthetic {
            spec: spec.to_owned(),
            reason,
        };
        let mut out = SyntheticSpec {
            symbols: 8,
            rate: Rate::PerSecond(1_000),
            seed: DEFAULT_SEED,
            book: 0,
        };
        for pair in params.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| err(format!("`{pair}` is not key=value")))?;
            match key {
                "symbols" => {
                    out.symbols = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_SYMBOLS as u32).contains(n))
                        .ok_or_else(|| {
                            err(format!("symbols `{value}` is not 1 to {MAX_SYMBOLS}"))
                        })?;
                }
                "rate" if value == "max" => out.rate = Rate::Max,
                "rate" => {
                    out.rate = value
                        .parse()
                        .ok()
                        .filter(|r| *r > 0)
                        .map(Rate::PerSecond)
                        .ok_or_else(|| {
                            err(format!("rate `{value}` is not a positive integer or `max`"))
                        })?;
                }
                "book" => {
                    out.book = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_BOOK_LEVELS)
                        .ok_or_else(|| {
                            err(format!(
                                "book `{value}` is not a number of levels from 0 to {MAX_BOOK_LEVELS}"
                            ))
                        })?;
                }
                "seed" => {
                    out.seed = value
                        .parse()
                        .map_err(|_| err(format!("seed `{value}` is not an integer")))?;
                }
                _ => return Err(err(format!("unknown key `{key}`"))),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for SyntheticSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "synthetic:symbols={},rate=", self.symbols)?;
        match self.rate {
            Rate::PerSecond(r) => write!(f, "{r}")?,
            Rate::Max => f.write_str("max")?,
        }
        write!(f, ",seed={}", self.seed)?;
        if self.book > 0 {
            write!(f, ",book={}", self.book)?;
        }
        Ok(())
    }
}

/// The name of synthetic symbol `i`: `SYN0000`, ..., `SYN65535`.
pub fn symbol_name(i: u32) -> String {
    format!("SYN{i:04}")
}

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): tiny, seedable, and good enough for prices.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is far below what a demo notices).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Book {
    scale: Scale,
    /// Best bid in ticks of 0.01.
    bid_ticks: i64,
    /// Multiplies ticks / size steps into mantissas at the symbol's scale.
    px_unit: i64,
    sz_unit: i64,
    /// Best bid and ask (ticks) of the order book sent last, if any.
    depth_at: Option<(i64, i64)>,
}

/// Produces the random walk; no clock inside, so tests can drive it.
pub struct Generator {
    rng: SplitMix64,
    books: Vec<Book>,
    /// Levels a side of the order books; 0 for none.
    depth: i64,
    /// The book event of the last quote, for [`Generator::take_levels`].
    levels: Vec<Update>,
}

impl Generator {
    pub fn new(spec: &SyntheticSpec, normalizer: &mut Normalizer) -> Result<Self, FeedError> {
        let mut rng = SplitMix64(spec.seed);
        let mut books = Vec::with_capacity(spec.symbols as usize);
        for i in 0..spec.symbols {
            let name = symbol_name(i);
            let scale = normalizer
                .scale(&name, b"100.00", b"1.000")
                .map_err(|source| FeedError::Symbol {
                    name: spec.to_string(),
                    source,
                })?;
            let unit = |decimals: u8, own: u32| 10i64.pow(u32::from(decimals).saturating_sub(own));
            books.push(Book {
                px_unit: unit(scale.price_decimals, PRICE_DECIMALS),
                sz_unit: unit(scale.size_decimals, SIZE_DECIMALS),
                scale,
                // 95.00 to 105.00.
                bid_ticks: 9_500 + rng.below(1_001) as i64,
                depth_at: None,
            });
        }
        Ok(Generator {
            rng,
            books,
            depth: i64::from(spec.book),
            levels: Vec::new(),
        })
    }

    /// The order-book levels the last quote moved (empty without `book=`):
    /// the symbol's first is a snapshot of every level.
    pub fn take_levels(&mut self) -> std::vec::Drain<'_, Update> {
        self.levels.drain(..)
    }

    /// The book event of a quote at `bid` / `ask` (ticks) with these
    /// sizes: bids at `bid`, `bid - 1`, ... and asks at `ask`, `ask + 1`,
    /// ..., `depth` of each; the levels the move left get size 0, the ones
    /// it reached a random size, and the top the quote's.
    fn book_event(
        &mut self,
        i: usize,
        (bid, ask): (i64, i64),
        (bid_sz, ask_sz): (i64, i64),
        now: u64,
    ) {
        let depth = self.depth;
        let book = &self.books[i];
        let (px_unit, sz_unit, id) = (book.px_unit, book.sz_unit, book.scale.id);
        let before = book.depth_at;
        let mut levels: Vec<(BookSide, i64, i64)> = Vec::new();
        for (side, top, sz, dir) in [
            (BookSide::Bid, bid, bid_sz, -1),
            (BookSide::Ask, ask, ask_sz, 1),
        ] {
            let range = |t: i64| (t.min(t + dir * (depth - 1)), t.max(t + dir * (depth - 1)));
            let (lo, hi) = range(top);
            let old = before.map(|(b, a)| range(if side == BookSide::Bid { b } else { a }));
            if let Some((olo, ohi)) = old {
                for t in olo..=ohi {
                    if t < lo || t > hi {
                        levels.push((side, t, 0));
                    }
                }
            }
            for t in lo..=hi {
                let new = old.is_none_or(|(olo, ohi)| t < olo || t > ohi);
                if t == top {
                    levels.push((side, t, sz));
                } else if new {
                    levels.push((side, t, (1 + self.rng.below(10_000) as i64) * sz_unit));
                }
            }
        }
        self.books[i].depth_at = Some((bid, ask));
        let n = levels.len();
        for (k, (side, ticks, sz)) in levels.into_iter().enumerate() {
            let mut flags = 0;
            if before.is_none() && k == 0 {
                flags |= level_flags::RESET;
            }
            if k + 1 == n {
                flags |= level_flags::LAST;
            }
            self.levels.push(Update {
                symbol: id,
                kind: UpdateKind::Level {
                    side,
                    px: ticks.max(1) * px_unit,
                    sz,
                    flags,
                },
                exchange_ts_ns: now,
                receive_ts_ns: now,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            });
        }
    }

    /// The next update, stamped with the wall clock.
    pub fn next_update(&mut self) -> Update {
        let i = self.rng.below(self.books.len() as u64) as usize;
        let step = self.rng.below(5) as i64 - 2;
        let spread = 1 + self.rng.below(3) as i64;
        let trade = self.rng.below(10) == 0;
        let sizes = [1 + self.rng.below(10_000), 1 + self.rng.below(10_000)];
        let book = &mut self.books[i];
        book.bid_ticks = (book.bid_ticks + step).max(1);
        let bid_px = book.bid_ticks * book.px_unit;
        let ask_px = (book.bid_ticks + spread) * book.px_unit;
        let [a, b] = sizes.map(|s| s as i64 * book.sz_unit);
        let ticks = (book.bid_ticks, book.bid_ticks + spread);
        let symbol = book.scale.id;
        let now = now_ns();
        if !trade && self.depth > 0 {
            self.book_event(i, ticks, (a, b), now);
        }
        let kind = if trade {
            // A buyer lifts the offer or a seller hits the bid.
            let buy = a % 2 == 0;
            UpdateKind::Trade {
                px: if buy { ask_px } else { bid_px },
                sz: b,
                side: if buy { Side::Buy } else { Side::Sell },
            }
        } else {
            UpdateKind::Quote {
                bid_px,
                bid_sz: Some(a),
                ask_px,
                ask_sz: Some(b),
            }
        };
        Update {
            symbol,
            kind,
            exchange_ts_ns: now,
            receive_ts_ns: now,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        }
    }
}

/// When a paced run next wakes, in ns from its start: at the first point
/// of the [`TICK`] grid after `now` at which the next update (due at
/// `next`) is due. On the grid, not a tick after `now`, so that one late
/// wake-up does not push every later one back.
fn wake_at(next: u128, now: u128) -> u64 {
    let tick = TICK.as_nanos();
    let at = next.max(now + 1).div_ceil(tick) * tick;
    u64::try_from(at).unwrap_or(u64::MAX)
}

/// Generates on a thread of its own until the receiver is dropped or this
/// future is (a server stopping aborts its feeds' tasks): the thread then
/// stops at its next wake-up, or after the send it is blocked in, if the
/// channel was full (the publisher drains it until every sender is gone).
/// It is not joined; this future ends when the thread does, with an error
/// if the thread panicked.
///
/// A thread, not a task on tokio's timer: the timer keeps whole
/// milliseconds, rounding a deadline up to its next one, and the poller
/// rounds its wait up again, so a task meant to wake every [`TICK`] woke
/// every 1 to 2 ms by where its start fell between the timer's ticks (600
/// wake-ups a second at 10,000 updates/s, by `perf stat`), emitting bigger
/// and fewer batches than the rate says. A thread's timed park is late by
/// the kernel's timer slack (50 µs by default), not a millisecond. At
/// `rate=max` it also keeps the generator off the runtime's workers, which
/// accept and answer connections.
pub(crate) async fn run(
    spec: SyntheticSpec,
    mut normalizer: Normalizer,
    tx: mpsc::Sender<Update>,
    stats: Arc<FeedStats>,
) -> Result<(), FeedError> {
    let generator = Generator::new(&spec, &mut normalizer)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Sent when the generator returns; dropped unsent if it panics.
    let (ended, thread_ended) = tokio::sync::oneshot::channel::<()>();
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("tickwire-synthetic".into())
            .spawn(move || {
                let mut clock = SystemClock {
                    start: std::time::Instant::now(),
                    stop: &stop,
                };
                // Relaxed: see `StopOnDrop`.
                let send = |u| !stop.load(Ordering::Relaxed) && tx.blocking_send(u).is_ok();
                generate(spec.rate, generator, &mut clock, send, &stats);
                let _ = ended.send(());
            })
            .map_err(|e| FeedError::Thread {
                name: spec.to_string(),
                reason: format!("cannot start it: {e}"),
            })?
    };
    let _stop = StopOnDrop {
        stop,
        thread: thread.thread().clone(),
    };
    thread_ended.await.map_err(|_| FeedError::Thread {
        name: spec.to_string(),
        reason: "it panicked".into(),
    })
}

/// Tells the generator's thread to stop, and wakes it from its sleep.
struct StopOnDrop {
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // Relaxed: the flag carries no data of its own. A parked thread
        // sees it because `unpark` happens-after this store and its
        // `park_timeout` returns happens-after the `unpark` (std's
        // park/unpark order memory that way); a running one sees it at
        // its next send or sleep.
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

/// Where a paced run reads the time and sleeps: the OS in a server, a
/// counter in tests.
trait Clock {
    /// Nanoseconds since the run started.
    fn now_ns(&self) -> u128;
    /// Sleeps until `at_ns` after the start; `false` if told to stop
    /// instead.
    fn sleep_until(&mut self, at_ns: u64) -> bool;
}

struct SystemClock<'a> {
    start: std::time::Instant,
    stop: &'a AtomicBool,
}

impl Clock for SystemClock<'_> {
    fn now_ns(&self) -> u128 {
        self.start.elapsed().as_nanos()
    }

    fn sleep_until(&mut self, at_ns: u64) -> bool {
        let at = self.start + Duration::from_nanos(at_ns);
        // A park may end early (an unpark, or spuriously): look again.
        // Relaxed: see `StopOnDrop`.
        while !self.stop.load(Ordering::Relaxed) {
            let now = std::time::Instant::now();
            if now >= at {
                return true;
            }
            std::thread::park_timeout(at - now);
        }
        false
    }
}

/// Emits `rate` updates a second into `send` until it refuses one or the
/// clock is told to stop.
///
/// Paced runs wake on the [`TICK`] grid and emit every update due by then,
/// counting from the start, so the long-run rate has no drift whatever the
/// sleeps' jitter.
fn generate(
    rate: Rate,
    mut generator: Generator,
    clock: &mut impl Clock,
    mut send: impl FnMut(Update) -> bool,
    stats: &FeedStats,
) {
    let mut sent: u64 = 0;
    loop {
        let due = match rate {
            Rate::Max => sent + 1,
            Rate::PerSecond(rate) => {
                u64::try_from(clock.now_ns() * u128::from(rate) / 1_000_000_000).unwrap_or(u64::MAX)
            }
        };
        while sent < due {
            if !send(generator.next_update()) {
                return;
            }
            sent += 1;
            stats.records.inc();
            stats.updates.inc();
            // A book event rides with its quote, outside the rate.
            for level in generator.take_levels() {
                if !send(level) {
                    return;
                }
                stats.book_levels.inc();
            }
        }
        if let Rate::PerSecond(rate) = rate {
            let next_ns = u128::from(sent + 1) * 1_000_000_000 / u128::from(rate);
            if !clock.sleep_until(wake_at(next_ns, clock.now_ns())) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::SymbolTable;

    fn spec(symbols: u32, rate: Rate) -> SyntheticSpec {
        SyntheticSpec {
            symbols,
            rate,
            seed: 42,
            book: 0,
        }
    }

    #[test]
    fn books_never_cross_and_names_are_padded() {
        let table = SymbolTable::new();
        let mut n = Normalizer::new(table.clone());
        let mut g = Generator::new(&spec(12, Rate::Max), &mut n).unwrap();
        let mut trades = 0;
        for _ in 0..100_000 {
            match g.next_update().kind {
                UpdateKind::Quote { bid_px, ask_px, .. } => {
                    assert!(0 < bid_px && bid_px < ask_px, "{bid_px} {ask_px}");
                }
                UpdateKind::Trade { px, sz, .. } => {
                    assert!(px > 0 && sz > 0);
                    trades += 1;
                }
                other => panic!("the generator yielded {other:?}"),
            }
        }
        // About one in ten.
        assert!((8_000..12_000).contains(&trades), "{trades}");
        let names: Vec<String> = table.all().iter().map(|d| d.name.to_string()).collect();
        assert_eq!(names.len(), 12);
        assert_eq!(
            (names[0].as_str(), names[11].as_str()),
            ("SYN0000", "SYN0011")
        );
        assert_eq!(symbol_name(12_345), "SYN12345");
    }

    /// A clock for `generate`: time passes by sleeping (each sleep
    /// `late_ns` past its target, as a loaded machine's would) and by
    /// sending (`send_ns` each, counted by the send in [`paced`]); it says
    /// stop at sleep number `stop_at`. Records each sleep's start and
    /// target.
    #[derive(Default)]
    struct FakeClock {
        now: std::rc::Rc<std::cell::Cell<u128>>,
        late_ns: u128,
        stop_at: Option<usize>,
        sleeps: Vec<(u128, u64)>,
    }

    impl Clock for FakeClock {
        fn now_ns(&self) -> u128 {
            self.now.get()
        }

        fn sleep_until(&mut self, at_ns: u64) -> bool {
            if Some(self.sleeps.len()) == self.stop_at {
                return false;
            }
            self.sleeps.push((self.now.get(), at_ns));
            let woke = u128::from(at_ns) + self.late_ns;
            self.now.set(self.now.get().max(woke));
            true
        }
    }

    /// Runs `rate` on `clock` until `n` updates are out (or the clock
    /// stops it), each send taking `send_ns`; returns the time of each.
    fn paced_on(rate: Rate, n: usize, send_ns: u128, clock: &mut FakeClock) -> Vec<u128> {
        let mut normalizer = Normalizer::new(SymbolTable::new());
        let g = Generator::new(&spec(3, rate), &mut normalizer).unwrap();
        let now = clock.now.clone();
        let mut at = Vec::new();
        let stats = FeedStats::default();
        let send = |_| {
            at.push(now.get());
            now.set(now.get() + send_ns);
            at.len() < n
        };
        generate(rate, g, clock, send, &stats);
        let counted = stats.updates.get() as usize;
        // Every send but a refused last one is counted.
        assert_eq!(counted, if at.len() == n { n - 1 } else { at.len() });
        at
    }

    fn paced(rate: Rate, n: usize) -> (Vec<u128>, FakeClock) {
        let mut clock = FakeClock::default();
        let at = paced_on(rate, n, 0, &mut clock);
        (at, clock)
    }

    #[test]
    fn a_paced_run_keeps_its_rate_and_the_tick_grid() {
        // 200/s: the 1000th update is due 5 s after the start, exactly.
        let (at, clock) = paced(Rate::PerSecond(200), 1_000);
        assert_eq!(at[999], 5_000_000_000);
        // One update every 5 ms from 5 ms, each on the grid; no wake-up in
        // between.
        assert!(
            at.windows(2).all(|w| w[1] - w[0] == 5_000_000),
            "{:?}",
            &at[..4]
        );
        assert_eq!(clock.sleeps.len(), 1_000);
        // 10,000/s: every wake-up, one a tick, emits the tick's 10.
        let (at, clock) = paced(Rate::PerSecond(10_000), 10_000);
        assert_eq!(at[9_999], 1_000_000_000);
        assert!(clock.sleeps.iter().all(|&(_, to)| to % 1_000_000 == 0));
        assert_eq!(clock.sleeps.len(), 1_000);
        for tick in at.chunks(10) {
            assert!(tick.iter().all(|&t| t == tick[0]), "{tick:?}");
        }
    }

    #[test]
    fn late_wake_ups_and_slow_sends_neither_run_ahead_nor_drift() {
        // 7,000/s (no whole number of nanoseconds apart), each wake-up
        // 0.4 ms late; sends free, then 20 µs each.
        let rate = 7_000u128;
        for send_ns in [0, 20_000] {
            let mut clock = FakeClock {
                late_ns: 400_000,
                ..FakeClock::default()
            };
            let at = paced_on(Rate::PerSecond(7_000), 7_000, send_ns, &mut clock);
            for (k, &t) in at.iter().enumerate() {
                // Update k + 1 is due at (k + 1) / rate s: never sent
                // before, and sent with the first wake-up on the grid after
                // it: a tick, the lateness and the sends ahead of it in that
                // wake-up (at most 1.4 ms of updates: 10) later at most. So
                // no drift.
                let due = ((k as u128 + 1) * 1_000_000_000).div_ceil(rate);
                assert!(t >= due, "{send_ns}: {k}: sent at {t}, due at {due}");
                assert!(t <= due + 1_000_000 + 400_000 + 10 * send_ns, "{k}: {t}");
            }
            // Every sleep aims at a grid point ahead of it.
            for &(from, to) in &clock.sleeps {
                assert!(
                    to % 1_000_000 == 0 && u128::from(to) > from,
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn a_clock_that_says_stop_ends_the_run() {
        let mut clock = FakeClock {
            stop_at: Some(5),
            ..FakeClock::default()
        };
        // 10,000/s: five ticks of ten, then the sixth sleep is refused.
        let at = paced_on(Rate::PerSecond(10_000), usize::MAX, 0, &mut clock);
        assert_eq!(at.len(), 50);
        assert_eq!(clock.sleeps.len(), 5);
    }

    #[test]
    fn max_rate_never_sleeps() {
        let (at, clock) = paced(Rate::Max, 10_000);
        assert!(clock.sleeps.is_empty());
        assert_eq!(at[9_999], 0);
    }

    #[tokio::test]
    async fn the_thread_stops_with_its_receiver_or_its_future() {
        // The receiver dropped: the run ends by itself.
        let (tx, mut rx) = mpsc::channel(64);
        let n = Normalizer::new(SymbolTable::new());
        let feed = tokio::spawn(run(spec(2, Rate::Max), n, tx, Arc::default()));
        for _ in 0..1_000 {
            rx.recv().await.unwrap();
        }
        drop(rx);
        // A run that did not stop would fail here, not hang the suite.
        let ended = tokio::time::timeout(Duration::from_secs(5), feed).await;
        ended.expect("the run ends").unwrap().unwrap();
        // The future dropped (a server aborting its feeds), the thread
        // asleep until its first update, due in 1 s: it wakes, stops, and
        // lets go of its sender.
        let (tx, mut rx) = mpsc::channel(64);
        let n = Normalizer::new(SymbolTable::new());
        let feed = tokio::spawn(run(spec(2, Rate::PerSecond(1)), n, tx, Arc::default()));
        // The feed starts its thread, which has nothing to do for 1 s and
        // is asleep well before 100 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        feed.abort();
        // Well before the update was due (a thread that slept on would
        // end only then).
        let ended = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert_eq!(ended.map(|u| u.map(|u| u.symbol)), Ok(None));
    }

    #[test]
    fn a_paced_run_wakes_on_the_tick_grid() {
        // 10,000/s, at 1.3 ms: the next update is due at 1.4 ms; the wake
        // is at the grid point after it, not a tick from now (2.3 ms, which
        // the timer made 3).
        assert_eq!(wake_at(1_400_000, 1_300_000), 2_000_000);
        // Due on a grid point: that point.
        assert_eq!(wake_at(2_000_000, 1_999_999), 2_000_000);
        // 200/s: nothing due for 4 ms; the grid point at or after it.
        assert_eq!(wake_at(5_000_000, 1_000_000), 5_000_000);
        assert_eq!(wake_at(5_000_001, 1_000_000), 6_000_000);
        // Already due (a late timer): the next grid point, never now.
        assert_eq!(wake_at(1_000_000, 3_500_000), 4_000_000);
        assert_eq!(wake_at(1_000_000, 4_000_000), 5_000_000);
    }

    #[test]
    fn a_book_moves_with_its_quote_and_never_crosses() {
        let mut n = Normalizer::new(SymbolTable::new());
        let spec = SyntheticSpec {
            book: 5,
            ..spec(3, Rate::Max)
        };
        let mut g = Generator::new(&spec, &mut n).unwrap();
        let mut books: std::collections::HashMap<u32, crate::book::Book> = Default::default();
        let (mut events, mut resets) = (0, 0);
        for _ in 0..20_000 {
            let u = g.next_update();
            let levels: Vec<Update> = g.take_levels().collect();
            let UpdateKind::Quote {
                bid_px,
                ask_px,
                bid_sz,
                ask_sz,
            } = u.kind
            else {
                assert!(levels.is_empty(), "a trade moves no book");
                continue;
            };
            // TC0: every quote comes with one event: a snapshot first, then
            // changes; its levels are the quote's symbol's.
            assert!(!levels.is_empty());
            let book = books.entry(u.symbol).or_default();
            for (k, l) in levels.iter().enumerate() {
                let UpdateKind::Level {
                    side,
                    px,
                    sz,
                    flags,
                } = l.kind
                else {
                    panic!("{l:?}");
                };
                assert_eq!(l.symbol, u.symbol);
                if flags & level_flags::RESET != 0 {
                    assert_eq!(k, 0);
                    book.clear();
                    resets += 1;
                }
                assert_eq!(flags & level_flags::LAST != 0, k + 1 == levels.len());
                book.apply(side, px, sz);
            }
            events += 1;
            // TC1: the book's top is the quote, 5 levels a side, uncrossed.
            assert_eq!(book.best(BookSide::Bid), Some((bid_px, bid_sz.unwrap())));
            assert_eq!(book.best(BookSide::Ask), Some((ask_px, ask_sz.unwrap())));
            assert_eq!((book.len(BookSide::Bid), book.len(BookSide::Ask)), (5, 5));
            assert!(!book.is_crossed());
        }
        assert_eq!(resets, 3);
        assert!(events > 15_000, "{events}");
        assert_eq!(
            spec.to_string(),
            "synthetic:symbols=3,rate=max,seed=42,book=5"
        );
    }
}
