//! Throttled subscriptions (`throttle_ms`, docs/PROTOCOL.md "Throttle"):
//! per symbol, at most one message of its state per interval, the newest.
//!
//! A throttled symbol's entries are *held* as they are read from the ring,
//! by their ring sequence, not by copy: holding costs a store or two in
//! arrays indexed by symbol, no reference count, no allocation once warm.
//! State (quotes, `book.N`, open candles, statuses) is held as the newest
//! of each kind, so a newer quote replaces the held one; events
//! ([`Published::is_event`]: trades, the full-depth `book`'s changes, which
//! build on each other, and candle closes) are all held. At the end of each interval what
//! every symbol of that interval holds is read back from the ring and sent
//! together, in ring order: the very frames everyone else got, with
//! `symbol_seq` showing what a quote replaced.
//!
//! Intervals end on the clock's grid (a multiple of T ms on [`clock_ms`]),
//! the same instants for every connection: a writer shard writes all its
//! throttled connections in one pass per interval, one system call each,
//! rather than one pass per publish batch. A symbol sent from the cache
//! (a subscribe's snapshot, a catch-up) within the last T ms waits one
//! interval more, so that two messages are never closer than T.
//!
//! Nothing here reads the clock: the caller passes the time, so tests drive
//! it by hand.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::market::Published;
use crate::update::SymbolId;
use crate::wire::channel;

/// A connection holding more events than this has them sent at once,
/// before their intervals end: a throttle bounds what a connection holds,
/// and never drops a trade.
pub const MAX_HELD_EVENTS: usize = 4096;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's first call: the throttle's clock.
pub fn clock_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// The instant of `ms` on [`clock_ms`]'s scale.
pub fn instant_of(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms)
}

/// The first multiple of `ms` after `now`.
fn boundary(now: u64, ms: u16) -> u64 {
    let ms = u64::from(ms);
    (now / ms + 1) * ms
}

/// Channels with a state slot besides quotes: `book.N` (the full `book` is
/// events) and the candle intervals (an open bar is state, a close an
/// event), in channel order from `book.1`.
const STATE_SLOTS: usize = channel::VARIANTS - 1 + crate::candle::COUNT;

/// The symbols of one interval length that hold something.
struct Interval {
    ms: u16,
    /// When it ends next.
    next: u64,
    dirty: Vec<SymbolId>,
}

/// One connection's throttles. Per symbol, a few words in arrays indexed
/// by symbol id (what one held entry touches stays in a few cache lines);
/// the events of every symbol in one list, in ring order.
#[derive(Default)]
pub struct Throttle {
    /// Per symbol: its interval in milliseconds, 0 for none.
    ms: Vec<u16>,
    /// The interval of symbols that join a `*` subscription.
    pub all_ms: u16,
    /// Per symbol: ring sequences of the newest held quote and status
    /// (0: none), and of the newest held `book.N` or open candle by channel
    /// (sized for the symbols that have one).
    quote: Vec<u64>,
    status: Vec<u64>,
    books: Vec<[u64; STATE_SLOTS]>,
    /// Per symbol: it holds something, and is listed under its interval.
    dirty: Vec<bool>,
    /// Per symbol: when it was last sent something (released, or from the
    /// cache).
    sent_at: Vec<u64>,
    /// Held events of every symbol: (ring sequence, symbol), in ring order.
    events: Vec<(u64, SymbolId)>,
    intervals: Vec<Interval>,
    /// Per symbol, scratch for `release`: its interval ended now.
    releasing: Vec<bool>,
}

impl Throttle {
    /// The interval of symbol `s`, 0 for none.
    pub fn ms_of(&self, s: SymbolId) -> u16 {
        self.ms.get(s as usize).copied().unwrap_or(0)
    }

    /// Sets the interval of symbol `s`. If that changes it, the ring
    /// sequences of what the symbol holds are returned, ascending, to be
    /// sent now: they were held under the old one.
    pub fn set(&mut self, s: SymbolId, ms: u16) -> Vec<u64> {
        if self.ms_of(s) == ms {
            return Vec::new();
        }
        let i = s as usize;
        if self.ms.len() <= i {
            let n = i + 1;
            self.ms.resize(n, 0);
            self.quote.resize(n, 0);
            self.status.resize(n, 0);
            self.dirty.resize(n, false);
            self.sent_at.resize(n, 0);
            self.releasing.resize(n, false);
        }
        self.ms[i] = ms;
        let mut held = Vec::new();
        self.drain_state(i, &mut held);
        self.events.retain(|&(seq, e)| {
            if e == s {
                held.push(seq);
            }
            e != s
        });
        // Still listed under its old interval: found clean there, skipped.
        self.dirty[i] = false;
        held.sort_unstable();
        held
    }

    /// Forgets symbol `s` (unsubscribed): its interval, and what it holds.
    pub fn forget(&mut self, s: SymbolId) {
        self.set(s, 0);
    }

    /// Moves the held state of symbol `i` into `out`.
    fn drain_state(&mut self, i: usize, out: &mut Vec<u64>) {
        for seq in [
            std::mem::take(&mut self.quote[i]),
            std::mem::take(&mut self.status[i]),
        ] {
            if seq != 0 {
                out.push(seq);
            }
        }
        if let Some(books) = self.books.get_mut(i) {
            out.extend(books.iter().copied().filter(|&s| s != 0));
            *books = [0; STATE_SLOTS];
        }
    }

    /// Takes what every symbol holds (the connection is about to catch up
    /// from the cache), ascending.
    pub fn take_all(&mut self) -> Vec<u64> {
        let mut all: Vec<u64> = self.events.drain(..).map(|(seq, _)| seq).collect();
        for i in 0..self.ms.len() {
            self.drain_state(i, &mut all);
        }
        self.dirty.fill(false);
        for i in &mut self.intervals {
            i.dirty.clear();
        }
        all.sort_unstable();
        all
    }

    /// Whether `p`, read from the ring at `now`, is held for its symbol's
    /// interval (else it goes out now: its symbol is not throttled). Past
    /// [`MAX_HELD_EVENTS`] held events, they are all moved into `early`
    /// (ascending), to be sent now.
    pub fn hold(&mut self, p: &Published, now: u64, early: &mut Vec<u64>) -> bool {
        let ms = self.ms_of(p.symbol);
        if ms == 0 {
            return false;
        }
        let i = p.symbol as usize;
        if p.is_status {
            self.status[i] = p.seq;
        } else if p.channel == channel::QUOTES {
            self.quote[i] = p.seq;
        } else if p.is_event {
            self.events.push((p.seq, p.symbol));
            if self.events.len() > MAX_HELD_EVENTS {
                early.extend(self.events.drain(..).map(|(seq, _)| seq));
            }
        } else {
            // A `book.N` or an open candle: the newest of its channel.
            if self.books.len() <= i {
                self.books.resize(i + 1, [0; STATE_SLOTS]);
            }
            self.books[i][usize::from(p.channel - channel::book(1))] = p.seq;
        }
        if !self.dirty[i] {
            self.dirty[i] = true;
            self.list(p.symbol, ms, now);
        }
        true
    }

    /// Lists symbol `s` under its interval `ms`.
    fn list(&mut self, s: SymbolId, ms: u16, now: u64) {
        let at = match self.intervals.iter().position(|x| x.ms == ms) {
            Some(at) => at,
            None => {
                self.intervals.push(Interval {
                    ms,
                    next: boundary(now, ms),
                    dirty: Vec::new(),
                });
                self.intervals.len() - 1
            }
        };
        let interval = &mut self.intervals[at];
        if interval.dirty.is_empty() {
            interval.next = boundary(now, ms);
        }
        interval.dirty.push(s);
    }

    /// Symbol `s` was sent a value from the cache at `now`.
    pub fn sent(&mut self, s: SymbolId, now: u64) {
        if let Some(at) = self.sent_at.get_mut(s as usize) {
            *at = now;
        }
    }

    /// Moves into `out` the ring sequences of what the symbols whose
    /// interval has ended by `now` hold, ascending.
    pub fn release(&mut self, now: u64, out: &mut Vec<u64>) {
        let start = out.len();
        let mut released = Vec::new();
        for k in 0..self.intervals.len() {
            let (ms, next) = (self.intervals[k].ms, self.intervals[k].next);
            if self.intervals[k].dirty.is_empty() || next > now {
                continue;
            }
            let dirty = std::mem::take(&mut self.intervals[k].dirty);
            let mut later = Vec::new();
            for s in dirty {
                let i = s as usize;
                // Released early, or moved to another interval, since.
                if !self.dirty[i] || self.ms[i] != ms {
                    continue;
                }
                if self.sent_at[i] + u64::from(ms) > now {
                    // Sent from the cache within the interval: one more.
                    later.push(s);
                    continue;
                }
                self.drain_state(i, out);
                self.dirty[i] = false;
                // The grid point, not `now`: a pass that comes late must not
                // push the symbol's next release a whole interval back.
                self.sent_at[i] = next;
                self.releasing[i] = true;
                released.push(i);
            }
            self.intervals[k].dirty = later;
            self.intervals[k].next = boundary(now, ms);
        }
        if released.is_empty() {
            return;
        }
        let releasing = &self.releasing;
        self.events.retain(|&(seq, s)| {
            let go = releasing[s as usize];
            if go {
                out.push(seq);
            }
            !go
        });
        for i in released {
            self.releasing[i] = false;
        }
        out[start..].sort_unstable();
    }

    /// When the first interval that holds something ends.
    pub fn next_due(&self) -> Option<u64> {
        self.intervals
            .iter()
            .filter(|i| !i.dirty.is_empty())
            .map(|i| i.next)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode::EncodedUpdate;
    use bytes::Bytes;

    fn entry(seq: u64, symbol: SymbolId, channel: u8) -> Published {
        Published {
            seq,
            symbol,
            symbol_seq: seq,
            is_status: false,
            is_event: channel == channel::TRADES || channel == channel::book(0),
            channel,
            frames: EncodedUpdate {
                binary: Bytes::new(),
                json: Bytes::new(),
                chunks: [0; 2],
                deflated: None,
            },
        }
    }

    #[test]
    fn state_is_the_newest_at_each_interval_and_events_all_arrive() {
        let mut t = Throttle::default();
        assert!(t.set(0, 100).is_empty());
        let mut early = Vec::new();
        // TC0: held until the interval ends on the grid.
        assert!(t.hold(&entry(1, 0, channel::QUOTES), 1010, &mut early));
        assert!(t.hold(&entry(2, 0, channel::TRADES), 1020, &mut early));
        assert!(t.hold(&entry(3, 0, channel::QUOTES), 1030, &mut early));
        assert!(t.hold(&entry(4, 0, channel::TRADES), 1040, &mut early));
        assert!(t.hold(&entry(5, 0, channel::QUOTES), 1050, &mut early));
        assert_eq!(t.next_due(), Some(1100));
        let mut out = Vec::new();
        t.release(1099, &mut out);
        assert!(out.is_empty());
        // TC1: both trades and the newest quote, in ring order.
        t.release(1100, &mut out);
        assert_eq!(out, [2, 4, 5]);
        assert_eq!(t.next_due(), None);
        assert!(early.is_empty());
        // TC2: the next interval, the next grid point.
        assert!(t.hold(&entry(6, 0, channel::QUOTES), 1150, &mut early));
        assert_eq!(t.next_due(), Some(1200));
        out.clear();
        t.release(1234, &mut out);
        assert_eq!(out, [6]);
    }

    #[test]
    fn unthrottled_symbols_pass_and_changing_the_interval_releases() {
        let mut t = Throttle::default();
        t.set(1, 50);
        let mut early = Vec::new();
        assert!(!t.hold(&entry(1, 0, channel::QUOTES), 0, &mut early));
        assert!(t.hold(&entry(3, 1, channel::QUOTES), 0, &mut early));
        assert!(t.hold(&entry(4, 1, channel::book(3)), 1, &mut early));
        assert!(t.hold(&entry(5, 1, channel::book(3)), 2, &mut early));
        assert!(t.hold(&entry(6, 1, channel::book(1)), 2, &mut early));
        // The quote and the newest book.10 and book.1, released by the
        // change of interval.
        assert_eq!(t.set(1, 0), [3, 5, 6]);
        assert!(!t.hold(&entry(7, 1, channel::QUOTES), 3, &mut early));
        // What the interval listed is gone with it.
        let mut out = Vec::new();
        t.release(1_000, &mut out);
        assert!(out.is_empty());
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn too_many_events_go_out_early_and_none_is_lost() {
        let mut t = Throttle::default();
        t.set(0, 1_000);
        t.set(1, 1_000);
        let mut early = Vec::new();
        let n = MAX_HELD_EVENTS as u64 + 1;
        assert!(t.hold(&entry(1, 1, channel::QUOTES), 1, &mut early));
        for i in 0..n {
            assert!(t.hold(
                &entry(2 + i, (i % 2) as u32, channel::TRADES),
                1,
                &mut early
            ));
        }
        assert_eq!(early, (2..2 + n).collect::<Vec<_>>());
        // The state stays held for its interval.
        let mut out = Vec::new();
        t.release(1_000, &mut out);
        assert_eq!(out, [1]);
    }

    #[test]
    fn a_symbol_sent_from_the_cache_waits_a_whole_interval() {
        let mut t = Throttle::default();
        t.set(0, 100);
        t.set(1, 100);
        t.sent(0, 90);
        let mut early = Vec::new();
        assert!(t.hold(&entry(1, 0, channel::QUOTES), 95, &mut early));
        assert!(t.hold(&entry(2, 1, channel::QUOTES), 95, &mut early));
        let mut out = Vec::new();
        // Symbol 1 at the grid point; symbol 0, sent at 90, one later.
        t.release(100, &mut out);
        assert_eq!(out, [2]);
        assert_eq!(t.next_due(), Some(200));
        out.clear();
        t.release(200, &mut out);
        assert_eq!(out, [1]);
        assert!(t.take_all().is_empty());
    }
}
