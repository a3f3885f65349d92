//! Publishing a live feed's updates with their symbols' status: each
//! symbol the feed has published is live or stale, and a change goes down
//! the publisher's channel just before the update it is about, so clients
//! see it in order with the data (the rules: "Status" in [`super`]).
//!
//! Apart from the connection and message handling in [`super`], which
//! only say when a symbol goes stale or an update is ready.

use super::Connector;
use crate::update::{now_ns, SymbolId, SymbolStatus, Update, UpdateKind};

impl Connector {
    /// Publishes the updates [`normalize`](Self::normalize) left in `out`.
    /// False if the publisher is gone.
    pub(super) async fn publish_normalized(&mut self, gap: bool) -> bool {
        let updates = std::mem::take(&mut self.out);
        for timed in &updates {
            if !self.publish(timed.update, gap).await {
                return false;
            }
        }
        self.out = updates;
        true
    }

    /// Sends one update, with the status change it brings: a gap makes the
    /// symbol stale before it; a stale symbol's first update without a gap
    /// makes it live.
    pub(super) async fn publish(&mut self, update: Update, gap: bool) -> bool {
        let stale = *self.status.entry(update.symbol).or_insert(false);
        if gap && !stale && !self.set_stale(update.symbol, SymbolStatus::StaleGap).await {
            return false;
        }
        if stale && !gap {
            self.status.insert(update.symbol, false);
            if !self.send_status(update.symbol, SymbolStatus::Live).await {
                return false;
            }
        }
        if self.tx.send(update).await.is_err() {
            return false;
        }
        self.stats.sent(&update);
        true
    }

    pub(super) async fn set_stale(&mut self, symbol: SymbolId, why: SymbolStatus) -> bool {
        match self.status.insert(symbol, true) {
            Some(true) => true,
            _ => self.send_status(symbol, why).await,
        }
    }

    /// Marks every live symbol of the feed stale. False if the publisher
    /// is gone.
    pub(super) async fn mark_all_stale(&mut self, why: SymbolStatus) -> bool {
        let mut live: Vec<SymbolId> = self
            .status
            .iter()
            .filter(|(_, stale)| !**stale)
            .map(|(id, _)| *id)
            .collect();
        live.sort_unstable();
        for id in live {
            if !self.set_stale(id, why).await {
                return false;
            }
        }
        true
    }

    pub(super) async fn send_status(&mut self, symbol: SymbolId, status: SymbolStatus) -> bool {
        let update = Update {
            symbol,
            kind: UpdateKind::Status(status),
            exchange_ts_ns: 0,
            receive_ts_ns: now_ns(),
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        };
        self.tx.send(update).await.is_ok()
    }
}
