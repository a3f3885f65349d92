//! The publisher's half of the candles: every published trade goes into
//! its symbol's bars at each interval; each change is encoded for the
//! intervals some connection watches (`market::candles`), and bars whose
//! interval has ended close on the trade clock ([`crate::candle`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::candle::{interval_ns, Applied, Bar, COUNT};
use crate::market::{CandleCache, Published, SharedCandles, Stamps};
use crate::metrics::Metrics;
use crate::symbols::SymbolDef;
use crate::update::{SymbolId, Update, UpdateKind};
use crate::wire::channel;
use crate::wire::encode::{candles_frames, FrameEncoder, SymbolFormat};

/// The candles' settings (`candle_history`, `candle_close_grace_ms`).
#[derive(Debug, Clone, Copy)]
pub struct CandleSettings {
    /// Closed bars kept per symbol and interval, for snapshots.
    pub history: usize,
    /// How far the trade clock passes an interval's end before its open
    /// bars close.
    pub grace_ns: u64,
}

impl Default for CandleSettings {
    fn default() -> Self {
        CandleSettings {
            history: crate::candle::DEFAULT_HISTORY,
            grace_ns: 1_000_000_000,
        }
    }
}

/// The publisher's candle state besides the bars: the trade clock and the
/// open bars by when they are due to close.
#[derive(Default)]
pub struct CandleEvents {
    pub settings: CandleSettings,
    /// The newest trade time seen, of any symbol.
    clock: u64,
    /// Open bars: (end of interval, symbol, interval), soonest first. An
    /// entry whose bar has closed since (a later trade closed it) is
    /// skipped when it comes up.
    due: BinaryHeap<Reverse<(u64, SymbolId, u8)>>,
}

/// What the publisher lends the candles for one trade.
pub struct Publishing<'a> {
    pub candles: &'a CandleCache,
    pub encoder: &'a mut FrameEncoder,
    pub metrics: &'a Metrics,
    /// The next global sequence; advanced past every entry made.
    pub next_seq: &'a mut u64,
    pub stamps: Stamps,
    /// Symbol definitions by id (the bars' formats).
    pub defs: &'a [Option<SymbolDef>],
}

/// A trade's time on the bars' clock: the venue's, else when it arrived.
pub fn trade_ts(update: &Update) -> u64 {
    match update.exchange_ts_ns {
        0 => update.receive_ts_ns,
        ts => ts,
    }
}

impl CandleEvents {
    /// Puts a published trade into its symbol's bars, then closes every
    /// bar it shows is due; appends the ring entries to `out`.
    pub fn trade(&mut self, update: &Update, p: &mut Publishing<'_>, out: &mut Vec<Published>) {
        let UpdateKind::Trade { px, sz, .. } = update.kind else {
            return;
        };
        let ts = trade_ts(update);
        let symbol = update.symbol;
        let grace = self.settings.grace_ns;
        let Some(Some(def)) = p.defs.get(symbol as usize) else {
            return;
        };
        let history = self.settings.history;
        let mut late = false;
        let due = &mut self.due;
        // The symbol's own bars first, then the others' that its time
        // makes due: the ring entries of different symbols are not ordered
        // with each other, and one lock of this symbol is enough.
        let went_back = p.candles.with(symbol, |c| {
            // The symbol's trade time went back past the grace: not a late
            // trade but a clock that started over (a looped replay's next
            // pass). Its bars start over, and so does the trade clock.
            let went_back = c.last_trade_ts_ns > ts.saturating_add(grace);
            c.last_trade_ts_ns = if went_back {
                ts
            } else {
                c.last_trade_ts_ns.max(ts)
            };
            if went_back {
                p.metrics.candle_resets_total.inc();
                for i in 0..COUNT {
                    c.series[i].reset();
                    c.series[i].trade(i, ts, px, sz, history);
                    let bar = c.series[i].current.expect("a trade opens a bar");
                    let end = bar.start_ts_ns + interval_ns(i);
                    due.push(Reverse((end, symbol, i as u8)));
                    publish_reset(c, (symbol, i, def), &bar, p, out);
                }
                return true;
            }
            for i in 0..COUNT {
                match c.series[i].trade(i, ts, px, sz, history) {
                    Applied::Late => late = true,
                    Applied::Skipped => {}
                    Applied::Bar { closed } => {
                        if let Some(bar) = closed {
                            publish(c, (symbol, i, def), &bar, true, p, out);
                            let seq = c.seq[i];
                            c.series[i].close_seq(seq);
                        }
                        let Some(bar) = c.series[i].current else {
                            continue;
                        };
                        if bar.trades == 1 {
                            let end = bar.start_ts_ns + interval_ns(i);
                            due.push(Reverse((end, symbol, i as u8)));
                        }
                        publish(c, (symbol, i, def), &bar, false, p, out);
                    }
                }
            }
            false
        });
        if late {
            p.metrics.candle_late_trades_total.inc();
        }
        self.clock = if went_back { ts } else { self.clock.max(ts) };
        self.close_due(p, out);
    }

    /// Closes the open bars whose interval ended at least the grace before
    /// the trade clock.
    fn close_due(&mut self, p: &mut Publishing<'_>, out: &mut Vec<Published>) {
        let history = self.settings.history;
        while let Some(&Reverse((end, symbol, i))) = self.due.peek() {
            if end.saturating_add(self.settings.grace_ns) > self.clock {
                break;
            }
            self.due.pop();
            let i = usize::from(i);
            let Some(Some(def)) = p.defs.get(symbol as usize) else {
                continue;
            };
            p.candles.with(symbol, |c| {
                if let Some(bar) = c.series[i].close_at(i, end - interval_ns(i), history) {
                    publish(c, (symbol, i, def), &bar, true, p, out);
                    let seq = c.seq[i];
                    c.series[i].close_seq(seq);
                }
            });
        }
    }

    /// The updates of `symbol` before one at `ts_ns` were not all seen (a
    /// gap in an upstream sequence): its open bars lack trades, and are
    /// dropped ([`Series::gap`](crate::candle::Series::gap)).
    pub fn gap(&mut self, symbol: SymbolId, ts_ns: u64, candles: &CandleCache) {
        candles.with(symbol, |c| {
            for (i, series) in c.series.iter_mut().enumerate() {
                series.gap(i, ts_ns);
            }
        });
    }
}

/// Publishes interval `i` started over with `bar` as a `candles` snapshot
/// (a client replaces what it had), held by a throttle like an event.
fn publish_reset(
    c: &mut SharedCandles,
    (symbol, i, def): (SymbolId, usize, &SymbolDef),
    bar: &Bar,
    p: &mut Publishing<'_>,
    out: &mut Vec<Published>,
) {
    let watched = c.watchers[i] > 0;
    if watched {
        *p.next_seq += 1;
    }
    c.changed(i, *p.next_seq - 1, p.stamps);
    if !watched {
        return;
    }
    let head = c.head(symbol, i, *p.next_seq - 1);
    let frames = candles_frames(&head, &[(*bar, false)], true, format(def));
    p.metrics.candle_frames_encoded_total.inc();
    out.push(Published {
        seq: head.seq,
        symbol,
        symbol_seq: head.candle_seq,
        is_status: false,
        is_event: true,
        channel: channel::candle(i),
        frames,
    });
}

fn format(def: &SymbolDef) -> SymbolFormat<'_> {
    SymbolFormat {
        name: &def.name,
        price_decimals: def.price_decimals,
        size_decimals: def.size_decimals,
    }
}

/// Publishes one change of interval `i` (under the symbol's mutex, see
/// `market::candles`): numbered, and encoded if the interval is watched.
fn publish(
    c: &mut SharedCandles,
    (symbol, i, def): (SymbolId, usize, &SymbolDef),
    bar: &Bar,
    closed: bool,
    p: &mut Publishing<'_>,
    out: &mut Vec<Published>,
) {
    let watched = c.watchers[i] > 0;
    if watched {
        *p.next_seq += 1;
    }
    c.changed(i, *p.next_seq - 1, p.stamps);
    if !watched {
        return;
    }
    let seq = *p.next_seq - 1;
    let head = c.head(symbol, i, seq);
    let frames = p.encoder.encode_candle(&head, bar, closed, format(def));
    p.metrics.candle_frames_encoded_total.inc();
    out.push(Published {
        seq,
        symbol,
        symbol_seq: head.candle_seq,
        is_status: false,
        is_event: closed,
        channel: channel::candle(i),
        frames,
    });
}
