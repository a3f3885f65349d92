//! The candles as connections see them: each symbol's bars
//! ([`crate::candle`]) under its own mutex, with who watches which interval,
//! shared by the publisher (which feeds them trades and publishes each
//! change) and the connections (which take snapshots).
//!
//! The same rules as the books (`market::books`): a change is encoded only
//! for an interval some connection watches; a connection registers and
//! takes its snapshot under the symbol's mutex, under which the publisher
//! also numbers the entries of a change, so a change is either in the
//! snapshot or in the ring after the connection's floor (the interval's
//! [`seq`](SharedCandles::seq) when the snapshot was taken).
//!
//! A snapshot is one `candles` message: the closed bars kept (at most
//! `candle_history`) and the open one, encoded once per state and shared by
//! every connection that asks. A connection that catches up after falling
//! behind gets what changed since its floor: the bars closed since, and the
//! open one.

use super::{PerSymbol, Published};
use crate::candle::{Series, COUNT};
use crate::metrics::Metrics;
use crate::symbols::SymbolDef;
use crate::update::SymbolId;
use crate::wire::channel;
use crate::wire::encode::{candles_frames, CandleHead, EncodedUpdate, SymbolFormat};

/// The timestamps of a series' newest change.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stamps {
    pub exchange_ts_ns: u64,
    pub receive_ts_ns: u64,
    pub publish_ts_ns: u64,
}

/// One symbol's bars at every interval, and what connections need of them.
#[derive(Debug, Default)]
pub struct SharedCandles {
    pub series: [Series; COUNT],
    /// Connections watching each interval.
    pub watchers: [u32; COUNT],
    /// Per interval: the newest global sequence the publisher had assigned
    /// at its last change (a snapshot's floor).
    pub seq: [u64; COUNT],
    pub stamps: [Stamps; COUNT],
    /// The newest trade time of the symbol.
    pub last_trade_ts_ns: u64,
    /// Snapshots encoded since the last change, by interval.
    memo: [Option<EncodedUpdate>; COUNT],
}

impl SharedCandles {
    /// The head of a message of interval `i`'s current state.
    pub fn head(&self, symbol: SymbolId, i: usize, seq: u64) -> CandleHead {
        let stamps = self.stamps[i];
        CandleHead {
            symbol,
            interval: i,
            seq,
            candle_seq: self.series[i].candle_seq,
            exchange_ts_ns: stamps.exchange_ts_ns,
            receive_ts_ns: stamps.receive_ts_ns,
            publish_ts_ns: stamps.publish_ts_ns,
        }
    }

    /// Interval `i` changed at global sequence `seq`: its memo is stale.
    pub fn changed(&mut self, i: usize, seq: u64, stamps: Stamps) {
        self.series[i].candle_seq += 1;
        self.seq[i] = seq;
        self.stamps[i] = stamps;
        if self.memo[i].is_some() {
            self.memo[i] = None;
        }
    }

    /// The bars of interval `i` closed after global sequence `since` and
    /// the open one, as one `candles` message (`since` 0: a snapshot of
    /// every bar kept, memoized); `None` if there is no bar to send.
    fn message(
        &mut self,
        symbol: SymbolId,
        i: usize,
        def: &SymbolDef,
        since: u64,
        metrics: &Metrics,
    ) -> Option<Published> {
        let snapshot = since == 0;
        let entry = |frames: EncodedUpdate| Published {
            seq: self.seq[i],
            symbol,
            symbol_seq: self.series[i].candle_seq,
            is_status: false,
            is_event: false,
            channel: channel::candle(i),
            frames,
        };
        if snapshot {
            if let Some(frames) = &self.memo[i] {
                return Some(entry(frames.clone()));
            }
        }
        let series = &self.series[i];
        let closed = series.closed.iter().filter(|&&(_, at)| at > since);
        let bars: Vec<_> = closed
            .map(|&(b, _)| (b, true))
            .chain(series.current.map(|b| (b, false)))
            .collect();
        if bars.is_empty() {
            return None;
        }
        let frames = candles_frames(
            &self.head(symbol, i, self.seq[i]),
            &bars,
            snapshot,
            SymbolFormat {
                name: &def.name,
                price_decimals: def.price_decimals,
                size_decimals: def.size_decimals,
            },
        );
        metrics.candle_snapshots_encoded_total.inc();
        if snapshot {
            self.memo[i] = Some(frames.clone());
        }
        Some(entry(frames))
    }
}

/// Every symbol's [`SharedCandles`], by symbol id. The outer lock is
/// written only to add a symbol.
#[derive(Default)]
pub struct CandleCache {
    slots: PerSymbol<SharedCandles>,
}

impl CandleCache {
    /// Runs `f` on the symbol's entry, under its mutex ([`PerSymbol`]).
    pub fn with<R>(&self, symbol: SymbolId, f: impl FnOnce(&mut SharedCandles) -> R) -> R {
        self.slots.with(symbol, f)
    }

    /// Counts a connection as watching interval `i` of the symbol and
    /// returns its floor for the channel and its snapshot, if the symbol has
    /// a bar. Without one the floor still holds (see `market::books`).
    pub fn watch(
        &self,
        symbol: SymbolId,
        i: usize,
        def: &SymbolDef,
        metrics: &Metrics,
    ) -> (u64, Option<Published>) {
        self.with(symbol, |c| {
            c.watchers[i] += 1;
            (c.seq[i], c.message(symbol, i, def, 0, metrics))
        })
    }

    /// Undoes one [`watch`](Self::watch).
    pub fn unwatch(&self, symbol: SymbolId, i: usize) {
        self.with(symbol, |c| c.watchers[i] = c.watchers[i].saturating_sub(1));
    }

    /// For a connection that catches up with its floor at `since`: what
    /// changed after it (the bars closed since, and the open one), if
    /// anything did.
    pub fn since(
        &self,
        symbol: SymbolId,
        i: usize,
        def: &SymbolDef,
        since: u64,
        metrics: &Metrics,
    ) -> Option<Published> {
        self.with(symbol, |c| {
            if c.seq[i] <= since {
                return None;
            }
            // `since` 0 would read as a snapshot: everything is newer.
            c.message(symbol, i, def, since.max(1), metrics)
        })
    }
}
