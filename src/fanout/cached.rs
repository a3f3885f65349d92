//! The channels a connection is served from caches of their own, beside
//! the last-value cache: the book channels (`market::books`) and the
//! candle channels (`market::candles`). Subscribing to one registers the
//! connection as a watcher and takes its snapshot; a catch-up takes what
//! changed since the connection's floor for it.

use std::sync::Arc;

use super::Subscriber;
use crate::market::{Market, Published};
use crate::update::SymbolId;
use crate::wire::{channel, Channels};

impl Subscriber {
    /// Adds `channels` to what the connection takes of symbol `s`; each
    /// book or candle channel new to it is watched, and its snapshot
    /// appended to `snapshot`.
    pub(super) fn add_channels(
        &mut self,
        s: SymbolId,
        channels: Channels,
        snapshot: &mut Vec<Published>,
    ) {
        let i = s as usize;
        if self.channels.len() <= i {
            self.channels.resize(i + 1, 0);
        }
        let added = Channels(channels.0 & !self.channels[i]);
        self.channels[i] |= added.0;
        if !added.has_cached() {
            return;
        }
        let Some(def) = self.market.symbols.get(s) else {
            return;
        };
        let market = Arc::clone(&self.market);
        let metrics = &market.metrics;
        for v in added.book_variants() {
            let (floor, frames) = market.books.watch(s, v, &def, metrics);
            match frames {
                Some(p) => snapshot.push(p),
                None => self.raise_floor(s, channel::book(v), floor),
            }
        }
        for i in added.candle_intervals() {
            let (floor, frames) = market.candles.watch(s, i, &def, metrics);
            match frames {
                Some(p) => snapshot.push(p),
                None => self.raise_floor(s, channel::candle(i), floor),
            }
        }
    }

    /// Drops `channels` from what the connection takes of symbol `s`;
    /// returns whether it takes none left.
    pub(super) fn drop_channels(&mut self, s: SymbolId, channels: Channels) -> bool {
        let Some(mask) = self.channels.get_mut(s as usize) else {
            return true;
        };
        let dropped = Channels(*mask & channels.0);
        *mask &= !channels.0;
        let none_left = *mask == 0;
        unwatch(&self.market, s, dropped);
        none_left
    }

    /// For a catch-up: appends to `latest` what changed after the floor (or
    /// `old`) of each book and candle channel of `channels` of symbol `s`.
    pub(super) fn cached_since(
        &self,
        s: SymbolId,
        channels: Channels,
        old: u64,
        latest: &mut Vec<Published>,
    ) {
        if !channels.has_cached() {
            return;
        }
        let Some(def) = self.market.symbols.get(s) else {
            return;
        };
        let metrics = &self.market.metrics;
        for v in channels.book_variants() {
            let since = old.max(self.floor_of(s, channel::book(v)));
            latest.extend(self.market.books.snapshot_since(s, v, &def, since, metrics));
        }
        for i in channels.candle_intervals() {
            let since = old.max(self.floor_of(s, channel::candle(i)));
            latest.extend(self.market.candles.since(s, i, &def, since, metrics));
        }
    }
}

/// Stops counting a connection as a watcher of the book and candle
/// channels among `channels` of symbol `s`.
pub(super) fn unwatch(market: &Market, s: SymbolId, channels: Channels) {
    for v in channels.book_variants() {
        market.books.unwatch(s, v);
    }
    for i in channels.candle_intervals() {
        market.candles.unwatch(s, i);
    }
}
