//! The one writer: sequences updates, encodes each once, and publishes it to
//! the last-value cache and the ring.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::encode::{FrameEncoder, SymbolFormat};
use crate::market::{Market, Published};
use crate::ring::RingWriter;
use crate::symbols::SymbolDef;
use crate::update::{now_ns, Sequenced, Update};

/// Most updates taken from the feeds before connections are woken. Bounds
/// the latency a burst adds to its first update.
const MAX_BATCH: usize = 256;

pub struct Publisher {
    market: Arc<Market>,
    writer: RingWriter<Published>,
    encoder: FrameEncoder,
    /// Last per-symbol sequence, by symbol id.
    symbol_seqs: Vec<u64>,
    /// The definitions of symbols already published, by id.
    defs: Vec<Option<SymbolDef>>,
    next_seq: u64,
    /// Gets what each batch published (`tickwire record`).
    recorder: Option<std::sync::mpsc::Sender<Vec<Sequenced>>>,
}

impl Publisher {
    pub fn new(market: Arc<Market>, writer: RingWriter<Published>) -> Self {
        Publisher {
            market,
            writer,
            encoder: FrameEncoder::new(),
            symbol_seqs: Vec::new(),
            defs: Vec::new(),
            next_seq: 1,
            recorder: None,
        }
    }

    /// Also hands every published update, one batch at a time, to `tx`. The
    /// channel is unbounded so that the publisher never waits for the disk;
    /// a recorder that hangs up is dropped and publishing goes on.
    pub fn record_to(mut self, tx: std::sync::mpsc::Sender<Vec<Sequenced>>) -> Self {
        self.recorder = Some(tx);
        self
    }

    /// Sequences, encodes and publishes one update. Returns what was
    /// published, or `None` for an update naming a symbol the table does not
    /// know (a feed bug) or carrying an upstream sequence that is not newer
    /// than the symbol's last (a redelivery or a late, older value).
    pub fn publish(&mut self, update: Update) -> Option<Sequenced> {
        let id = update.symbol as usize;
        if self.defs.len() <= id {
            self.defs.resize(id + 1, None);
            self.symbol_seqs.resize(id + 1, 0);
        }
        if self.defs[id].is_none() {
            match self.market.symbols.get(update.symbol) {
                Some(def) => self.defs[id] = Some(def),
                None => {
                    // Feeds intern before they send, so this is a bug.
                    debug_assert!(false, "update for unknown symbol {}", update.symbol);
                    tracing::error!(
                        symbol = update.symbol,
                        "update for an unknown symbol dropped"
                    );
                    return None;
                }
            }
        }
        let def = self.defs[id].as_ref()?;
        if update.origin_seq == 0 {
            self.symbol_seqs[id] += 1;
        } else if update.origin_seq > self.symbol_seqs[id] {
            self.symbol_seqs[id] = update.origin_seq;
        } else {
            // Never publish older after newer: a client that saw symbol_seq n
            // must not be shown n or less again.
            self.market
                .metrics
                .updates_out_of_order_total
                .fetch_add(1, Relaxed);
            return None;
        }
        let sequenced = Sequenced {
            update,
            seq: self.next_seq,
            symbol_seq: self.symbol_seqs[id],
            publish_ts_ns: now_ns(),
        };
        self.next_seq += 1;
        let frames = self.encoder.encode(
            &sequenced,
            SymbolFormat {
                name: &def.name,
                price_decimals: def.price_decimals,
                size_decimals: def.size_decimals,
            },
        );
        let metrics = &self.market.metrics;
        metrics.updates_in_total.fetch_add(1, Relaxed);
        metrics.frames_encoded_total.fetch_add(1, Relaxed);
        let published = Published {
            seq: sequenced.seq,
            symbol: update.symbol,
            symbol_seq: sequenced.symbol_seq,
            frames,
        };
        // The cache first: a connection that finds an entry in the ring and
        // then reads the cache must never see the cache older than the ring.
        self.market.lvc.store(&published);
        let pos = self.writer.push(published);
        debug_assert_eq!(pos + 1, sequenced.seq);
        Some(sequenced)
    }

    /// Publishes everything the feeds send until they all hang up. Takes
    /// whatever is queued in one go and wakes connections once per batch.
    ///
    /// Blocking: it runs on a thread of its own ([`Publisher::spawn`]). As
    /// one task among thousands of connection tasks, the one writer got one
    /// turn in thousands and the whole server published at its pace.
    pub fn run(mut self, mut rx: mpsc::Receiver<Update>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
            let mut published = Vec::new();
            for update in batch.drain(..) {
                let sequenced = self.publish(update);
                if let (Some(s), Some(_)) = (sequenced, &self.recorder) {
                    published.push(s);
                }
            }
            self.market.wakeup.notify_waiters();
            if let Some(tx) = &self.recorder {
                if tx.send(published).is_err() {
                    tracing::error!("the recorder stopped; publishing goes on unrecorded");
                    self.recorder = None;
                }
            }
        }
    }

    /// Runs the publisher on a dedicated thread until every feed's sender
    /// is dropped.
    pub fn spawn(self, rx: mpsc::Receiver<Update>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("tickwire-publisher".into())
            .spawn(move || self.run(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::symbols::{Normalizer, SymbolTable};
    use crate::update::UpdateKind;

    fn trade(symbol: u32, px: i64, origin_seq: u64) -> Update {
        Update {
            symbol,
            kind: UpdateKind::Trade {
                px,
                sz: 1,
                side: crate::update::Side::Buy,
            },
            exchange_ts_ns: 0,
            receive_ts_ns: 1,
            origin_seq,
        }
    }

    #[test]
    fn upstream_symbol_sequences_are_kept_and_never_go_back() {
        let symbols = SymbolTable::new();
        let metrics = Arc::new(Metrics::default());
        let (market, writer) = Market::new(64, Arc::clone(&symbols), Arc::clone(&metrics));
        let mut normalizer = Normalizer::new(symbols);
        let id = normalizer.scale("BTCUSDT", b"1.0", b"1.0").unwrap().id;
        let mut publisher = Publisher::new(Arc::clone(&market), writer);

        // TC0: numbered here, from 1.
        assert_eq!(publisher.publish(trade(id, 10, 0)).unwrap().symbol_seq, 1);
        // TC1: an upstream number is kept, gaps and all.
        let s = publisher.publish(trade(id, 11, 7)).unwrap();
        assert_eq!((s.seq, s.symbol_seq), (2, 7));
        // TC2: a redelivery and an older value are dropped and counted; the
        // cache keeps the newest.
        assert!(publisher.publish(trade(id, 12, 7)).is_none());
        assert!(publisher.publish(trade(id, 13, 3)).is_none());
        assert_eq!(metrics.updates_out_of_order_total.load(Relaxed), 2);
        assert_eq!(market.lvc.get(id).unwrap().symbol_seq, 7);
        // TC3: the global sequence stays gapless across the drops.
        assert_eq!(publisher.publish(trade(id, 14, 9)).unwrap().seq, 3);
    }
}
