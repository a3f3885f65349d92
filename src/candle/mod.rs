//! Candles: OHLCV bars of each symbol's trades, at fixed intervals aligned
//! to UTC (`docs/PROTOCOL.md`, "Candles").
//!
//! A bar covers `[start, start + interval)` of trade time: the venue's
//! exchange time, or the receive time where the venue gives none. Prices
//! and sizes are the trades' own mantissas, so a bar is exact: open, high,
//! low and close are trade prices, volume the sum of trade sizes (kept in
//! 128 bits: no sum of `i64` sizes overflows it), `trades` the count. An
//! interval with no trade has no bar.
//!
//! A bar closes when a trade of its symbol falls in a later interval, or
//! when the publisher's trade clock (the newest trade time of any symbol)
//! passes its end by the grace (`candle_close_grace_ms`): venues send each
//! symbol's trades in order, but not the trades of two symbols. A trade
//! older than a bar already closed is *late*: in no bar, and counted.
//!
//! This module is the bars and their arithmetic, with no locks and no
//! encoding: `market::candles` shares them with connections and
//! `publish::candles` feeds them trades.

use std::collections::VecDeque;

/// The intervals served, as channel suffixes and lengths in seconds.
pub const INTERVALS: [(&str, u64); 6] = [
    ("1s", 1),
    ("1m", 60),
    ("5m", 300),
    ("15m", 900),
    ("1h", 3_600),
    ("1d", 86_400),
];

/// Number of intervals (and of candle channels).
pub const COUNT: usize = INTERVALS.len();

/// Closed bars a series keeps for snapshots unless configured otherwise.
pub const DEFAULT_HISTORY: usize = 500;

/// Most closed bars a series may be configured to keep.
pub const MAX_HISTORY: usize = 100_000;

/// The length of interval `i` in nanoseconds.
pub fn interval_ns(i: usize) -> u64 {
    INTERVALS[i].1 * 1_000_000_000
}

/// The start of the interval `i` holding `ts_ns`.
pub fn start_of(ts_ns: u64, i: usize) -> u64 {
    ts_ns - ts_ns % interval_ns(i)
}

/// One bar: mantissas at the symbol's scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// The interval's start, ns since the epoch (UTC).
    pub start_ts_ns: u64,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    pub volume: i128,
    pub trades: u64,
}

impl Bar {
    fn first(start_ts_ns: u64, px: i64, sz: i64) -> Bar {
        Bar {
            start_ts_ns,
            open: px,
            high: px,
            low: px,
            close: px,
            volume: i128::from(sz),
            trades: 1,
        }
    }

    fn add(&mut self, px: i64, sz: i64) {
        self.high = self.high.max(px);
        self.low = self.low.min(px);
        self.close = px;
        self.volume += i128::from(sz);
        self.trades += 1;
    }
}

/// What one trade did to a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The trade is in the open bar; `closed` is the bar it closed first,
    /// if it was the first trade of a later interval.
    Bar { closed: Option<Bar> },
    /// The trade is older than a bar already closed: in no bar.
    Late,
    /// The series is waiting for the next interval after a gap (see
    /// [`Series::gap`]): the trade is in no bar served.
    Skipped,
}

/// The bars of one symbol at one interval.
#[derive(Debug, Default)]
pub struct Series {
    /// The open bar.
    pub current: Option<Bar>,
    /// Closed bars, oldest first, each with the value of `seq` when it
    /// closed ([`crate::market::candles`]); at most the configured history.
    pub closed: VecDeque<(Bar, u64)>,
    /// Changes published (a trade into the open bar, a close): a client
    /// that sees this jump by more than one missed some.
    pub candle_seq: u64,
    /// The end of the last closed bar: a trade before it is late.
    closed_until: u64,
    /// The end of the interval a gap fell in: no bar starts before it.
    skip_until: u64,
}

impl Series {
    /// Applies a trade at `ts_ns` to the series of interval `i`, keeping at
    /// most `history` closed bars. A closed bar's close sequence is left 0
    /// for the caller to set ([`close_seq`](Self::close_seq)).
    pub fn trade(&mut self, i: usize, ts_ns: u64, px: i64, sz: i64, history: usize) -> Applied {
        if ts_ns < self.closed_until {
            return Applied::Late;
        }
        if ts_ns < self.skip_until {
            return Applied::Skipped;
        }
        let start = start_of(ts_ns, i);
        match &mut self.current {
            Some(bar) if bar.start_ts_ns == start => {
                bar.add(px, sz);
                Applied::Bar { closed: None }
            }
            Some(bar) if start < bar.start_ts_ns => Applied::Late,
            _ => {
                let closed = self.close(i, history);
                self.current = Some(Bar::first(start, px, sz));
                Applied::Bar { closed }
            }
        }
    }

    /// Closes the open bar if it started at `start` (an interval end came
    /// due); returns it.
    pub fn close_at(&mut self, i: usize, start: u64, history: usize) -> Option<Bar> {
        match self.current {
            Some(bar) if bar.start_ts_ns == start => self.close(i, history),
            _ => None,
        }
    }

    fn close(&mut self, i: usize, history: usize) -> Option<Bar> {
        let bar = self.current.take()?;
        self.closed_until = bar.start_ts_ns + interval_ns(i);
        if history > 0 {
            if self.closed.len() >= history {
                self.closed.pop_front();
            }
            self.closed.push_back((bar, 0));
        }
        Some(bar)
    }

    /// Sets the close sequence of the bar closed last.
    pub fn close_seq(&mut self, seq: u64) {
        if let Some(last) = self.closed.back_mut() {
            last.1 = seq;
        }
    }

    /// Updates were lost before one at `ts_ns` (a gap in an edge's feed, or
    /// a replay that starts mid-recording): the open bar lacks some trades,
    /// so it is dropped, and bars start again at the next interval.
    /// Returns whether there was an open bar.
    pub fn gap(&mut self, i: usize, ts_ns: u64) -> bool {
        let dropped = self.current.take().is_some();
        self.skip_until = self.skip_until.max(start_of(ts_ns, i) + interval_ns(i));
        dropped
    }

    /// Forgets every bar (the symbol's trade time went back: a looped
    /// replay started over); `candle_seq` goes on.
    pub fn reset(&mut self) {
        *self = Series {
            candle_seq: self.candle_seq,
            ..Series::default()
        };
    }

    /// The closed bars and the open one, oldest first, with whether each is
    /// closed.
    pub fn bars(&self) -> impl Iterator<Item = (Bar, bool)> + '_ {
        self.closed
            .iter()
            .map(|&(b, _)| (b, true))
            .chain(self.current.map(|b| (b, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const M: usize = 1; // 1m

    #[test]
    fn bars_align_to_utc_and_hold_their_trades_exactly() {
        // 2024-08-08T00:00:59.5Z and the minute after.
        let t0 = 1_723_075_200 * S;
        let mut s = Series::default();
        assert_eq!(
            s.trade(M, t0 + 59 * S + S / 2, 100, 2, 10),
            Applied::Bar { closed: None }
        );
        s.trade(M, t0 + 59 * S + S / 2, 103, 1, 10);
        s.trade(M, t0 + 59 * S + 9 * S / 10, 99, 4, 10);
        let bar = s.current.unwrap();
        assert_eq!(
            bar,
            Bar {
                start_ts_ns: t0,
                open: 100,
                high: 103,
                low: 99,
                close: 99,
                volume: 7,
                trades: 3
            }
        );
        // The next minute's first trade closes it.
        let Applied::Bar { closed } = s.trade(M, t0 + 60 * S, 101, 1, 10) else {
            panic!()
        };
        assert_eq!(closed, Some(bar));
        assert_eq!(s.current.unwrap().start_ts_ns, t0 + 60 * S);
        // A trade of the closed minute is late and changes nothing.
        assert_eq!(s.trade(M, t0 + 59 * S, 1, 1, 10), Applied::Late);
        assert_eq!(s.closed.back().unwrap().0, bar);
        // Minutes without trades have no bar.
        s.trade(M, t0 + 300 * S, 105, 1, 10);
        let starts: Vec<u64> = s.bars().map(|(b, _)| (b.start_ts_ns - t0) / S).collect();
        assert_eq!(starts, [0, 60, 300]);
    }

    #[test]
    fn history_is_bounded_and_volume_does_not_overflow() {
        let mut s = Series::default();
        for k in 0..10u64 {
            s.trade(0, k * S, 1, i64::MAX, 3);
            s.trade(0, k * S, 1, i64::MAX, 3);
        }
        assert_eq!(s.closed.len(), 3);
        assert_eq!(s.closed.front().unwrap().0.start_ts_ns, 6 * S);
        assert_eq!(s.current.unwrap().volume, 2 * i128::from(i64::MAX));
        // No history: closes still close.
        let mut s = Series::default();
        s.trade(0, 0, 1, 1, 0);
        assert!(matches!(
            s.trade(0, S, 1, 1, 0),
            Applied::Bar { closed: Some(_) }
        ));
        assert!(s.closed.is_empty());
    }

    #[test]
    fn a_due_close_closes_only_the_bar_it_was_due_for() {
        let mut s = Series::default();
        s.trade(0, 5 * S, 7, 1, 10);
        assert_eq!(s.close_at(0, 4 * S, 10), None);
        assert_eq!(s.close_at(0, 5 * S, 10).unwrap().open, 7);
        assert_eq!(s.current, None);
        assert_eq!(s.close_at(0, 5 * S, 10), None);
        // After the close, a trade of that second is late.
        assert_eq!(s.trade(0, 5 * S + 1, 7, 1, 10), Applied::Late);
    }

    #[test]
    fn a_gap_drops_the_open_bar_and_starts_at_the_next_interval() {
        let mut s = Series::default();
        // Joined mid-minute: nothing before the next minute is a bar.
        assert!(!s.gap(M, 30 * S));
        assert_eq!(s.trade(M, 31 * S, 1, 1, 10), Applied::Skipped);
        assert_eq!(s.trade(M, 60 * S, 2, 1, 10), Applied::Bar { closed: None });
        assert!(s.gap(M, 70 * S));
        assert_eq!(s.current, None);
        assert_eq!(s.trade(M, 80 * S, 1, 1, 10), Applied::Skipped);
        assert_eq!(s.trade(M, 120 * S, 3, 1, 10), Applied::Bar { closed: None });
        assert!(s.closed.is_empty(), "a dropped bar is never closed");
    }
}
