//! The one writer: sequences updates, encodes each once, and publishes it to
//! the last-value cache and the ring.

use std::sync::Arc;

use tokio::sync::mpsc;

mod books;
mod candles;

use self::books::{BookEvents, Publishing};
pub use self::candles::CandleSettings;
use self::candles::{trade_ts, CandleEvents};
use crate::market::{Market, Published, Stamps};
use crate::ring::RingWriter;
use crate::symbols::SymbolDef;
use crate::update::{level_flags, now_ns, Sequenced, SymbolId, Update, UpdateKind};
use crate::wire::channel;
use crate::wire::encode::{FrameEncoder, SymbolFormat};

/// Most updates taken from the feeds before connections are woken. Bounds
/// the latency a burst adds to its first update.
const MAX_BATCH: usize = 256;

/// Where the publisher hands every update it publishes besides the ring: the
/// NATS outbox of a feed node ([`crate::nats::publish`]), the log writer of
/// `tickwire record` ([`crate::record`]). Both methods run on the
/// publisher's thread and must never block it.
pub trait PublishSink: Send {
    /// One update, after it is sequenced and in the ring.
    fn send(&mut self, update: &Sequenced);
    /// The end of a batch: wake whoever drains the sink.
    fn flush(&mut self);
}

pub struct Publisher {
    market: Arc<Market>,
    writer: RingWriter<Published>,
    encoder: FrameEncoder,
    /// Last per-symbol sequence, by symbol id.
    symbol_seqs: Vec<u64>,
    /// The definitions of symbols already published, by id.
    defs: Vec<Option<SymbolDef>>,
    next_seq: u64,
    sink: Option<Box<dyn PublishSink>>,
    books: BookEvents,
    candles: CandleEvents,
    /// Book or candle entries of the event being published.
    book_entries: Vec<Published>,
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
            sink: None,
            books: BookEvents::default(),
            candles: CandleEvents::default(),
            book_entries: Vec::new(),
        }
    }

    /// Keeps candles with `settings` (else the defaults).
    pub fn with_candles(mut self, settings: CandleSettings) -> Self {
        self.candles.settings = settings;
        self
    }

    /// Also hands every published update to `sink`.
    pub fn with_sink(mut self, sink: Box<dyn PublishSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Sequences, encodes and publishes one update. Returns what was
    /// published, or `None` for an update naming a symbol the table does not
    /// know (a feed bug) or carrying an upstream sequence that is not newer
    /// than the symbol's last (a redelivery or a late, older value).
    pub fn publish(&mut self, update: Update) -> Option<Sequenced> {
        if !self.known(update.symbol) {
            return None;
        }
        let id = update.symbol as usize;
        let is_status = match update.kind {
            UpdateKind::Level { .. } => {
                self.publish_level(&update);
                return None;
            }
            UpdateKind::Status(status) => {
                if status == crate::update::SymbolStatus::StaleBookGap {
                    self.market.metrics.book_resyncs_total.inc();
                }
                // A book gap, or the venue lost (the connector starts its
                // books over): not served until a snapshot replaces it. A
                // gap in trades (`StaleGap`) says nothing of the book.
                if status.is_stale() && status != crate::update::SymbolStatus::StaleGap {
                    self.books.stale(update.symbol, &self.market);
                }
                // A status is not data: it keeps the symbol's sequence (the
                // last update it follows) and is never dropped as old.
                true
            }
            _ => false,
        };
        if !is_status && !self.sequence(&update) {
            return None;
        }
        let sequenced = Sequenced {
            update,
            seq: self.next_seq,
            symbol_seq: self.symbol_seqs[id],
            publish_ts_ns: match update.origin_publish_ts_ns {
                0 => now_ns(),
                origin => origin,
            },
        };
        self.next_seq += 1;
        let def = self.defs[id].as_ref()?;
        let format = SymbolFormat {
            name: &def.name,
            price_decimals: def.price_decimals,
            size_decimals: def.size_decimals,
        };
        let frames = self.encoder.encode(&sequenced, format);
        let metrics = &self.market.metrics;
        metrics.updates_in_total.inc();
        metrics.frames_encoded_total.inc();
        let published = Published {
            seq: sequenced.seq,
            symbol: update.symbol,
            symbol_seq: sequenced.symbol_seq,
            is_status,
            is_event: matches!(update.kind, UpdateKind::Trade { .. }),
            channel: match update.kind {
                UpdateKind::Trade { .. } => channel::TRADES,
                _ => channel::QUOTES,
            },
            frames,
        };
        // The cache first: a connection that finds an entry in the ring and
        // then reads the cache must never see the cache older than the ring.
        self.market.lvc.store(&published);
        let pos = self.writer.push(published);
        debug_assert_eq!(pos + 1, sequenced.seq);
        if let Some(sink) = &mut self.sink {
            sink.send(&sequenced);
        }
        if matches!(update.kind, UpdateKind::Trade { .. }) {
            self.publish_candles(&sequenced);
        }
        Some(sequenced)
    }

    /// Puts a published trade into its symbol's candles and pushes the
    /// changes the watched intervals get.
    fn publish_candles(&mut self, s: &Sequenced) {
        let mut publishing = candles::Publishing {
            candles: &self.market.candles,
            encoder: &mut self.encoder,
            metrics: &self.market.metrics,
            next_seq: &mut self.next_seq,
            stamps: Stamps {
                exchange_ts_ns: s.update.exchange_ts_ns,
                receive_ts_ns: s.update.receive_ts_ns,
                publish_ts_ns: s.publish_ts_ns,
            },
            defs: &self.defs,
        };
        self.candles
            .trade(&s.update, &mut publishing, &mut self.book_entries);
        self.push_book_entries();
    }

    /// Numbers a quote or trade in its symbol's sequence: the next number,
    /// or the upstream one if it is newer. False for an update not newer
    /// than the symbol's last (dropped, counted).
    fn sequence(&mut self, update: &Update) -> bool {
        let id = update.symbol as usize;
        let last = self.symbol_seqs[id];
        if update.origin_seq == 0 {
            self.symbol_seqs[id] += 1;
        } else if update.origin_seq > last {
            if update.origin_seq > last + 1 {
                // Updates numbered upstream were missed (an edge that
                // joined late or lost some): the open bars lack trades.
                let ts = trade_ts(update);
                self.candles.gap(update.symbol, ts, &self.market.candles);
            }
            self.symbol_seqs[id] = update.origin_seq;
        } else {
            // Never publish older after newer: a client that saw symbol_seq n
            // must not be shown n or less again.
            self.market.metrics.updates_out_of_order_total.inc();
            return false;
        }
        true
    }

    /// Whether the symbol is in the table (its definition cached here);
    /// feeds intern before they send, so an unknown one is a bug, logged.
    fn known(&mut self, symbol: SymbolId) -> bool {
        let id = symbol as usize;
        if self.defs.len() <= id {
            self.defs.resize(id + 1, None);
            self.symbol_seqs.resize(id + 1, 0);
        }
        if self.defs[id].is_none() {
            match self.market.symbols.get(symbol) {
                Some(def) => self.defs[id] = Some(def),
                None => {
                    debug_assert!(false, "update for unknown symbol {symbol}");
                    tracing::error!(symbol, "update for an unknown symbol dropped");
                    return false;
                }
            }
        }
        true
    }

    /// Takes one order-book level; publishes the book at the end of its
    /// event ([`books`]).
    fn publish_level(&mut self, update: &Update) {
        let Some(Some(def)) = self.defs.get(update.symbol as usize) else {
            return;
        };
        let publishing = Publishing {
            books: &self.market.books,
            encoder: &mut self.encoder,
            metrics: &self.market.metrics,
            next_seq: &mut self.next_seq,
            publish_ts_ns: match update.origin_publish_ts_ns {
                0 => now_ns(),
                origin => origin,
            },
            format: SymbolFormat {
                name: &def.name,
                price_decimals: def.price_decimals,
                size_decimals: def.size_decimals,
            },
        };
        let publish_ts_ns = publishing.publish_ts_ns;
        let applied = self.books.level(update, publishing, &mut self.book_entries);
        self.push_book_entries();
        if let (Some(event), Some(sink)) = (applied, &mut self.sink) {
            // The event's levels as the source sent them, numbered by the
            // event: a recorded log replays the same book.
            let n = event.levels.len();
            for (i, &(side, px, sz)) in event.levels.iter().enumerate() {
                let mut flags = 0;
                if event.reset && i == 0 {
                    flags |= level_flags::RESET;
                }
                if i + 1 == n {
                    flags |= level_flags::LAST;
                }
                sink.send(&Sequenced {
                    update: Update {
                        kind: UpdateKind::Level {
                            side,
                            px,
                            sz,
                            flags,
                        },
                        origin_seq: 0,
                        origin_publish_ts_ns: 0,
                        ..*update
                    },
                    seq: event.seq,
                    symbol_seq: event.book_seq,
                    publish_ts_ns,
                });
            }
        }
    }

    /// Pushes the ring entries of the book event just published.
    fn push_book_entries(&mut self) {
        for published in self.book_entries.drain(..) {
            let seq = published.seq;
            let pos = self.writer.push(published);
            debug_assert_eq!(pos + 1, seq);
        }
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
            for update in batch.drain(..) {
                self.publish(update);
            }
            self.market.wakeup.notify();
            if let Some(sink) = &mut self.sink {
                sink.flush();
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
            origin_publish_ts_ns: 0,
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
        assert_eq!(metrics.updates_out_of_order_total.get(), 2);
        assert_eq!(market.lvc.get(id).unwrap().symbol_seq, 7);
        // TC3: the global sequence stays gapless across the drops.
        assert_eq!(publisher.publish(trade(id, 14, 9)).unwrap().seq, 3);
        // TC4: a status takes a global sequence, keeps the symbol's, and is
        // cached beside the update, not in its place.
        let mut stale = trade(id, 0, 0);
        stale.kind = UpdateKind::Status(crate::update::SymbolStatus::StaleGap);
        let s = publisher.publish(stale).unwrap();
        assert_eq!((s.seq, s.symbol_seq), (4, 9));
        let values = market.lvc.values(id);
        assert_eq!(values.update.unwrap().seq, 3);
        assert_eq!(values.status.unwrap().seq, 4);
        // TC5: an upstream publish time is kept; without one it is stamped.
        let upstream = Update {
            origin_publish_ts_ns: 1_700_000_000_000_000_000,
            ..trade(id, 15, 10)
        };
        let s = publisher.publish(upstream).unwrap();
        assert_eq!(s.publish_ts_ns, 1_700_000_000_000_000_000);
        let s = publisher.publish(trade(id, 16, 11)).unwrap();
        assert!(s.publish_ts_ns > 1_700_000_000_000_000_000);
    }
}
