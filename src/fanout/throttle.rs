//! Throttled subscriptions (`throttle_ms`, docs/PROTOCOL.md "Throttle"):
//! per symbol, at most one message of its state per interval, the newest.
//!
//! A connection's throttled symbols each have a *gate*. An entry that finds
//! its gate open goes out at once and closes the gate for the interval; one
//! that finds it closed is held. When the gate reopens, what it holds goes
//! out together, in ring order:
//! - state (quotes, `book.N`, statuses) is held as the newest of each kind:
//!   a newer quote replaces the held one, so the client gets the newest, the
//!   same pre-encoded frame, with `symbol_seq` showing what it skipped;
//! - events (trades, and the changes of the full-depth `book`, which build
//!   on each other) are all held and all sent: a throttle never drops them.
//!
//! Nothing here reads the clock: the caller passes the time, in
//! milliseconds of [`clock_ms`], so tests drive it by hand. Gates reopen on
//! a grid of [`TICK_MS`], so that the connections of one writer shard whose
//! gates reopen close together are written in one pass.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::market::Published;
use crate::update::SymbolId;
use crate::wire::channel;

/// Gates reopen at multiples of this (rounded up: never early).
pub const TICK_MS: u64 = 5;

/// A symbol holding more events than this sends them at once, before its
/// gate reopens: a throttle bounds a connection's memory, and never drops a
/// trade.
pub const MAX_HELD_EVENTS: usize = 1024;

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

#[derive(Default)]
struct Gate {
    /// When the symbol may send again ([`clock_ms`]).
    open_at: u64,
    /// What came while the gate was closed, in ring order.
    held: Vec<Published>,
    /// Events among `held`.
    events: usize,
    /// The gate has an entry in [`Throttle::due`].
    queued: bool,
}

/// One connection's throttles and gates.
#[derive(Default)]
pub struct Throttle {
    /// Per symbol id: its interval in milliseconds, 0 for none.
    ms: Vec<u16>,
    /// The interval of symbols that join a `*` subscription.
    pub all_ms: u16,
    gates: HashMap<SymbolId, Gate>,
    /// Gates that hold something, by the tick they reopen at.
    due: BinaryHeap<Reverse<(u64, SymbolId)>>,
}

/// The kind of state `p` is, or `None` for an event.
fn state_kind(p: &Published) -> Option<u8> {
    if p.is_status {
        Some(u8::MAX)
    } else if p.channel == channel::TRADES || p.channel == channel::book(0) {
        None
    } else {
        Some(p.channel)
    }
}

fn tick_of(ms: u64) -> u64 {
    ms.div_ceil(TICK_MS) * TICK_MS
}

impl Throttle {
    /// The interval of symbol `s`, 0 for none.
    pub fn ms_of(&self, s: SymbolId) -> u16 {
        self.ms.get(s as usize).copied().unwrap_or(0)
    }

    /// Sets the interval of symbol `s`. If that changes it, what the symbol
    /// holds is returned, to be sent now: it was held under the old one.
    pub fn set(&mut self, s: SymbolId, ms: u16) -> Vec<Published> {
        if self.ms_of(s) == ms {
            return Vec::new();
        }
        let i = s as usize;
        if self.ms.len() <= i {
            if ms == 0 {
                return Vec::new();
            }
            self.ms.resize(i + 1, 0);
        }
        self.ms[i] = ms;
        self.take(s)
    }

    /// Forgets symbol `s` (unsubscribed): its interval, and what it holds.
    pub fn forget(&mut self, s: SymbolId) {
        if let Some(m) = self.ms.get_mut(s as usize) {
            *m = 0;
        }
        self.gates.remove(&s);
    }

    /// Takes what symbol `s` holds, leaving its gate as it is.
    fn take(&mut self, s: SymbolId) -> Vec<Published> {
        match self.gates.get_mut(&s) {
            Some(g) => {
                g.events = 0;
                std::mem::take(&mut g.held)
            }
            None => Vec::new(),
        }
    }

    /// Takes what every symbol holds (the connection is about to catch up
    /// from the cache), in ring order.
    pub fn take_all(&mut self) -> Vec<Published> {
        let mut all = Vec::new();
        for g in self.gates.values_mut() {
            g.events = 0;
            all.append(&mut g.held);
        }
        all.sort_unstable_by_key(|p| p.seq);
        all
    }

    /// Whether `p` must wait for its symbol's gate (then it is held);
    /// false if it goes out now, which closes the gate for the interval.
    /// Events past [`MAX_HELD_EVENTS`] release what the symbol holds into
    /// `early`, `p` last.
    pub fn hold(&mut self, p: &Published, now: u64, early: &mut Vec<Published>) -> bool {
        let ms = self.ms_of(p.symbol);
        if ms == 0 {
            return false;
        }
        let g = self.gates.entry(p.symbol).or_default();
        if g.held.is_empty() && now >= g.open_at {
            g.open_at = now + u64::from(ms);
            return false;
        }
        match state_kind(p) {
            Some(kind) => g.held.retain(|h| state_kind(h) != Some(kind)),
            None => g.events += 1,
        }
        g.held.push(p.clone());
        if g.events > MAX_HELD_EVENTS {
            g.events = 0;
            g.open_at = now + u64::from(ms);
            early.append(&mut g.held);
            return true;
        }
        if !g.queued {
            g.queued = true;
            self.due.push(Reverse((tick_of(g.open_at), p.symbol)));
        }
        true
    }

    /// Marks symbol `s` as sent to now (from the cache, bypassing
    /// [`hold`](Self::hold)): its gate closes for the interval.
    pub fn sent(&mut self, s: SymbolId, now: u64) {
        let ms = self.ms_of(s);
        if ms > 0 {
            self.gates.entry(s).or_default().open_at = now + u64::from(ms);
        }
    }

    /// Moves into `out` what the gates that have reopened by `now` hold,
    /// gate by gate in the order they reopened, and closes each again for
    /// its interval.
    pub fn release(&mut self, now: u64, out: &mut Vec<Published>) {
        while let Some(&Reverse((tick, s))) = self.due.peek() {
            if tick > now {
                break;
            }
            self.due.pop();
            let ms = self.ms_of(s);
            let Some(g) = self.gates.get_mut(&s) else {
                continue;
            };
            g.queued = false;
            if g.held.is_empty() {
                continue;
            }
            if g.open_at > now {
                // Sent from the cache since it was queued: later.
                g.queued = true;
                self.due.push(Reverse((tick_of(g.open_at), s)));
                continue;
            }
            g.open_at = now + u64::from(ms);
            g.events = 0;
            out.append(&mut g.held);
        }
    }

    /// When the first held gate reopens, if one does.
    pub fn next_due(&self) -> Option<u64> {
        self.due.peek().map(|Reverse((tick, _))| *tick)
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
            channel,
            frames: EncodedUpdate {
                binary: Bytes::new(),
                json: Bytes::new(),
                chunks: [0; 2],
            },
        }
    }

    fn seqs(v: &[Published]) -> Vec<u64> {
        v.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn state_is_the_newest_at_each_interval_and_events_all_arrive() {
        let mut t = Throttle::default();
        assert!(t.set(0, 100).is_empty());
        let mut early = Vec::new();
        // TC0: the first goes out at once and closes the gate.
        assert!(!t.hold(&entry(1, 0, channel::QUOTES), 1000, &mut early));
        // TC1: within the interval: quotes replace each other, trades queue.
        assert!(t.hold(&entry(2, 0, channel::QUOTES), 1010, &mut early));
        assert!(t.hold(&entry(3, 0, channel::TRADES), 1020, &mut early));
        assert!(t.hold(&entry(4, 0, channel::QUOTES), 1030, &mut early));
        assert!(t.hold(&entry(5, 0, channel::TRADES), 1040, &mut early));
        assert_eq!(t.next_due(), Some(1100));
        let mut out = Vec::new();
        t.release(1099, &mut out);
        assert!(out.is_empty());
        // TC2: at the interval: both trades and the newest quote, in order.
        t.release(1100, &mut out);
        assert_eq!(seqs(&out), [3, 4, 5]);
        assert!(early.is_empty());
        // TC3: the gate closed again for an interval from the release.
        assert!(t.hold(&entry(6, 0, channel::QUOTES), 1150, &mut early));
        assert_eq!(t.next_due(), Some(1200));
        // TC4: a quiet interval later, the next one goes straight out.
        out.clear();
        t.release(1200, &mut out);
        assert_eq!(seqs(&out), [6]);
        assert!(!t.hold(&entry(7, 0, channel::QUOTES), 1400, &mut early));
    }

    #[test]
    fn unthrottled_symbols_pass_and_changing_the_interval_releases() {
        let mut t = Throttle::default();
        t.set(1, 50);
        let mut early = Vec::new();
        assert!(!t.hold(&entry(1, 0, channel::QUOTES), 0, &mut early));
        assert!(!t.hold(&entry(2, 0, channel::QUOTES), 0, &mut early));
        assert!(!t.hold(&entry(3, 1, channel::QUOTES), 0, &mut early));
        assert!(t.hold(&entry(4, 1, channel::book(3)), 1, &mut early));
        assert!(t.hold(&entry(5, 1, channel::book(3)), 2, &mut early));
        // The newest book.10, released by the change of interval.
        assert_eq!(seqs(&t.set(1, 0)), [5]);
        assert!(!t.hold(&entry(6, 1, channel::QUOTES), 3, &mut early));
        // The stale queue entry releases nothing.
        let mut out = Vec::new();
        t.release(1_000, &mut out);
        assert!(out.is_empty());
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn too_many_events_go_out_early_and_none_is_lost() {
        let mut t = Throttle::default();
        t.set(0, 1_000);
        let mut early = Vec::new();
        assert!(!t.hold(&entry(1, 0, channel::TRADES), 0, &mut early));
        let n = MAX_HELD_EVENTS as u64 + 1;
        for i in 0..n {
            assert!(t.hold(&entry(2 + i, 0, channel::TRADES), 1, &mut early));
        }
        assert_eq!(seqs(&early), (2..2 + n).collect::<Vec<_>>());
        let mut out = Vec::new();
        t.release(1_005, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_gate_sent_from_the_cache_waits_its_interval() {
        let mut t = Throttle::default();
        t.set(0, 100);
        let mut early = Vec::new();
        assert!(!t.hold(&entry(1, 0, channel::QUOTES), 0, &mut early));
        assert!(t.hold(&entry(2, 0, channel::QUOTES), 10, &mut early));
        t.sent(0, 90);
        let mut out = Vec::new();
        t.release(100, &mut out);
        assert!(out.is_empty());
        assert_eq!(t.next_due(), Some(190));
        t.release(190, &mut out);
        assert_eq!(seqs(&out), [2]);
        assert!(t.take_all().is_empty());
    }
}
