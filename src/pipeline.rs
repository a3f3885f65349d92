//! The data path, assembled once: feeds → the bounded channel → the
//! publisher thread (and its sinks) → the market every connection reads.
//! `tickwire serve` ([`crate::server`]) and `tickwire record`
//! ([`crate::record`]) build theirs here, so that a recording holds exactly
//! what a server would have published.
//!
//! A [`Pipeline`] is the market and the channel before the publisher runs:
//! what a sink needs to be made (a feed node's NATS outbox takes the market
//! and a sender of its own, for the values it restores). [`Pipeline::start`]
//! spawns the publisher and returns the [`Feeds`], which start feed tasks;
//! the publisher ends when the last sender, the [`Feeds`]' and every feed's,
//! is dropped.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::feed::{self, FeedError, FeedSpec, FeedStats, ReplayOptions};
use crate::market::Market;
use crate::metrics::Metrics;
use crate::publish::{CandleSettings, PublishSink, Publisher};
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::Update;

/// Updates the feeds may have in flight to the publisher.
pub const FEED_CHANNEL: usize = 4096;

/// The market and the feeds' channel, before the publisher runs.
pub struct Pipeline {
    pub market: Arc<Market>,
    publisher: Publisher,
    tx: mpsc::Sender<Update>,
    rx: mpsc::Receiver<Update>,
}

/// A running publisher's input: starts feeds that normalize into the
/// market's symbol table and send to the publisher.
pub struct Feeds {
    symbols: Arc<SymbolTable>,
    tx: mpsc::Sender<Update>,
}

impl Pipeline {
    /// A market with a ring of `ring_capacity` updates and a fresh symbol
    /// table.
    pub fn new(ring_capacity: usize, metrics: Arc<Metrics>) -> Self {
        let (market, writer) = Market::new(ring_capacity, SymbolTable::new(), metrics);
        let (tx, rx) = mpsc::channel(FEED_CHANNEL);
        Pipeline {
            publisher: Publisher::new(Arc::clone(&market), writer),
            market,
            tx,
            rx,
        }
    }

    /// A sender into the publisher, for a sink that feeds values back (a
    /// feed node's restore from NATS).
    pub fn sender(&self) -> mpsc::Sender<Update> {
        self.tx.clone()
    }

    /// Keeps candles with `settings`.
    pub fn with_candles(mut self, settings: CandleSettings) -> Self {
        self.publisher = self.publisher.with_candles(settings);
        self
    }

    /// Also hands every published update to `sink`.
    pub fn with_sink(mut self, sink: Box<dyn PublishSink>) -> Self {
        self.publisher = self.publisher.with_sink(sink);
        self
    }

    /// Spawns the publisher's thread. Fails only if the thread cannot be
    /// started.
    pub fn start(self) -> std::io::Result<Feeds> {
        self.publisher.spawn(self.rx)?;
        Ok(Feeds {
            symbols: Arc::clone(&self.market.symbols),
            tx: self.tx,
        })
    }
}

impl Feeds {
    /// The feed `spec`, ready to be spawned: it runs until its source ends
    /// (or fails), counting into `stats`.
    pub fn run(
        &self,
        spec: FeedSpec,
        opts: ReplayOptions,
        stats: Arc<FeedStats>,
    ) -> impl Future<Output = Result<(), FeedError>> + Send + 'static {
        let normalizer = Normalizer::new(Arc::clone(&self.symbols));
        feed::run(spec, opts, normalizer, self.tx.clone(), stats)
    }
}
