//! The edge node's feed: `--feed nats://HOST:PORT[/FILTER]` takes a feed
//! node's updates from NATS into this process's publisher, like any feed.
//!
//! On every (re)connection to NATS: the subscription to `FILTER` (core NATS)
//! is in place first, then the *snapshot* (the last message of every
//! matching subject, from the feed node's JetStream stream) is read, and
//! both go through one per-symbol check: an update whose feed-node
//! `symbol_seq` is not above the last one this edge passed on is dropped (a
//! duplicate from the snapshot, or the feed node republishing after a
//! reconnect), and one more than one above it is a gap (counted). The
//! update keeps the feed node's `symbol_seq` and `publish_ts`, so that
//! every edge serves the same update under the same numbers.
//!
//! `/healthz` reports the feed `connected` once the subscription is live
//! and the snapshot loaded; `reconnects` and `gaps` as they happen.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_nats::{Client, Event};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{FeedError, FeedStats};
use crate::nats::book::{BookPayload, EdgeBooks};
use crate::nats::{backoff, connect_options, decode_payload, read_last_values, NatsSource};
use crate::symbols::Normalizer;
use crate::update::{now_ns, SymbolId, Update};

/// Snapshot messages in flight from the loader to the feed loop.
const SNAPSHOT_CHANNEL: usize = 1024;

/// Decode errors logged before only counting them.
const LOGGED_REJECTS: u64 = 10;

/// What the snapshot loader sends the feed loop, tagged with the connection
/// it was loaded for (a newer connection makes an older load moot).
#[derive(Debug)]
enum Snapshot {
    Message(u64, Bytes),
    Done(u64, u64),
}

/// Runs until the publisher hangs up (shutdown). Reconnects to NATS for
/// ever, with backoff.
pub(crate) async fn run(
    source: NatsSource,
    normalizer: Normalizer,
    tx: mpsc::Sender<Update>,
    stats: Arc<FeedStats>,
) -> Result<(), FeedError> {
    // Relaxed on the stats' flags and timestamp: each is read on its own.
    stats.network.store(true, Relaxed);
    let error = |reason: String| FeedError::Nats {
        name: source.url.clone(),
        reason,
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let client = connect_options("tickwire edge node", events_tx)
        .connect(source.server.as_str())
        .await
        .map_err(|e| error(e.to_string()))?;
    let mut subscription = client
        .subscribe(source.filter.clone())
        .await
        .map_err(|e| error(e.to_string()))?;
    let mut edge = Edge {
        normalizer,
        ids: HashMap::new(),
        last_seq: Vec::new(),
        books: EdgeBooks::default(),
        book_out: Vec::new(),
        stats,
        tx,
    };
    let (snapshot_tx, mut snapshots) = mpsc::channel(SNAPSHOT_CHANNEL);
    let mut loader = SnapshotLoader {
        client,
        filter: source.filter.clone(),
        out: snapshot_tx,
        connection: 0,
        task: None,
    };
    loop {
        let more = tokio::select! {
            message = subscription.next() => match message {
                Some(m) => edge.handle(&m.payload).await,
                None => return Err(error("the NATS subscription ended".into())),
            },
            event = events.recv() => match event {
                Some(event) => {
                    on_event(event, &source.url, &edge.stats, &mut loader);
                    true
                }
                None => return Err(error("the NATS client stopped".into())),
            },
            Some(item) = snapshots.recv() => {
                edge.snapshot(item, loader.connection, &source.url).await
            }
        };
        if !more {
            loader.abort();
            return Ok(());
        }
    }
}

/// Follows the NATS client's connection: each (re)connection loads the
/// snapshot afresh, and the feed is not connected again until it is
/// loaded.
fn on_event(event: Event, url: &str, stats: &FeedStats, loader: &mut SnapshotLoader) {
    match event {
        Event::Connected => {
            loader.connection += 1;
            if loader.connection > 1 {
                stats.reconnects.inc();
            }
            tracing::info!(feed = %url, "connected to NATS; loading the snapshot");
            loader.start();
        }
        Event::Disconnected => {
            stats.connected.store(false, Relaxed);
            tracing::warn!(feed = %url, "NATS disconnected; reconnecting");
        }
        Event::SlowConsumer(_) => {
            tracing::warn!(feed = %url, "NATS dropped messages for this slow edge; sequence gaps follow");
        }
        other => tracing::debug!(feed = %url, "NATS: {other}"),
    }
}

/// The snapshot load of the current NATS connection; a newer connection
/// makes an older load moot, so it is aborted when the next one starts.
struct SnapshotLoader {
    client: Client,
    filter: String,
    out: mpsc::Sender<Snapshot>,
    /// Connections so far; the current one's number tags what its load
    /// sends.
    connection: u64,
    task: Option<JoinHandle<()>>,
}

impl SnapshotLoader {
    /// Starts loading the snapshot for the current connection.
    fn start(&mut self) {
        self.abort();
        self.task = Some(tokio::spawn(load_snapshot(
            self.client.clone(),
            self.filter.clone(),
            self.connection,
            self.out.clone(),
        )));
    }

    fn abort(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The per-symbol state between NATS and the publisher.
struct Edge {
    normalizer: Normalizer,
    /// Symbol name to id and (price, size) decimals here.
    ids: HashMap<Box<str>, (SymbolId, (u8, u8))>,
    /// The feed node's `symbol_seq` last passed on, by id here.
    last_seq: Vec<u64>,
    /// The feed node's books as this edge follows them.
    books: EdgeBooks,
    /// Updates a book payload gives.
    book_out: Vec<Update>,
    stats: Arc<FeedStats>,
    tx: mpsc::Sender<Update>,
}

impl Edge {
    /// Passes one payload on if it is new. False when the publisher is gone.
    async fn handle(&mut self, payload: &[u8]) -> bool {
        let stats = &self.stats;
        stats.records.inc();
        stats.last_message_ns.store(now_ns(), Relaxed);
        if let Some(book) = BookPayload::decode(payload) {
            return match book {
                Ok(book) => self.book(book).await,
                Err(e) => self.reject(format_args!("undecodable book payload: {e}")),
            };
        }
        let decoded = match decode_payload(payload) {
            Ok(d) => d,
            Err(e) => return self.reject(format_args!("undecodable payload: {e}")),
        };
        let scales = (decoded.price_decimals, decoded.size_decimals);
        let id = match self.intern(decoded.name, scales) {
            Ok(id) => id,
            Err(e) => return self.reject(format_args!("{e}")),
        };
        let index = id as usize;
        if self.last_seq.len() <= index {
            self.last_seq.resize(index + 1, 0);
        }
        let (last, seq) = (self.last_seq[index], decoded.update.origin_seq);
        if seq <= last {
            // Already passed on: the snapshot overlapping the live stream,
            // or the feed node republishing after a reconnect.
            self.stats.skipped.inc();
            return true;
        }
        if last != 0 && seq > last + 1 {
            self.stats.gaps.inc();
        }
        self.last_seq[index] = seq;
        let update = Update {
            symbol: id,
            ..decoded.update
        };
        if self.tx.send(update).await.is_err() {
            return false;
        }
        self.stats.updates.inc();
        true
    }

    /// The symbol's id here, interned with these decimals the first time;
    /// a message at other decimals than the first is refused (its
    /// mantissas would be served as other prices).
    fn intern(&mut self, name: &str, scales: (u8, u8)) -> Result<SymbolId, String> {
        let (id, known) = match self.ids.get(name) {
            Some(&entry) => entry,
            None => {
                let def = self
                    .normalizer
                    .table()
                    .intern(name, scales.0, scales.1)
                    .map_err(|e| format!("symbol {name:?}: {e}"))?;
                let entry = (def.id, (def.price_decimals, def.size_decimals));
                self.ids.insert(name.into(), entry);
                entry
            }
        };
        if known != scales {
            return Err(format!(
                "symbol {name} has {}/{} decimals here but {}/{} in the message",
                known.0, known.1, scales.0, scales.1
            ));
        }
        Ok(id)
    }

    /// A book payload: its levels once the edge's book follows on from
    /// what it passed on ([`EdgeBooks`]). False when the publisher is gone.
    async fn book(&mut self, book: BookPayload) -> bool {
        let id = match self.intern(&book.name, (book.price_decimals, book.size_decimals)) {
            Ok(id) => id,
            Err(e) => return self.reject(format_args!("{e}")),
        };
        let mut out = std::mem::take(&mut self.book_out);
        self.books.take(id, book, &mut out);
        for update in out.drain(..) {
            if self.tx.send(update).await.is_err() {
                return false;
            }
            self.stats.sent(&update);
        }
        self.book_out = out;
        true
    }

    /// One item of the snapshot loaded for connection `current`; an older
    /// connection's is dropped. False when the publisher is gone.
    async fn snapshot(&mut self, item: Snapshot, current: u64, url: &str) -> bool {
        match item {
            Snapshot::Message(c, payload) if c == current => self.handle(&payload).await,
            Snapshot::Done(c, n) if c == current => {
                tracing::info!(feed = %url, symbols = n, "snapshot loaded; live");
                self.stats.connected.store(true, Relaxed);
                true
            }
            _ => true,
        }
    }

    fn reject(&self, reason: std::fmt::Arguments<'_>) -> bool {
        // The edge is this counter's only writer, so the count just read is
        // this rejection's.
        self.stats.rejected.inc();
        if self.stats.rejected.get() <= LOGGED_REJECTS {
            tracing::warn!("NATS message rejected: {reason}");
        }
        true
    }
}

/// Loads the snapshot for connection `connection`, retrying with backoff
/// until JetStream answers.
async fn load_snapshot(
    client: Client,
    filter: String,
    connection: u64,
    out: mpsc::Sender<Snapshot>,
) {
    for attempt in 2.. {
        let each = |payload| {
            let out = out.clone();
            async move {
                out.send(Snapshot::Message(connection, payload)).await?;
                Ok(())
            }
        };
        match read_last_values(&client, &filter, each).await {
            Ok(n) => {
                let _ = out.send(Snapshot::Done(connection, n)).await;
                return;
            }
            Err(e) => {
                tracing::warn!(%filter, "cannot load the snapshot yet: {e}");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::encode_payload;
    use crate::symbols::SymbolTable;
    use crate::update::{Sequenced, Side, UpdateKind};

    fn payload(name: &str, symbol_seq: u64, px: i64, decimals: u8) -> Bytes {
        let s = Sequenced {
            update: Update {
                symbol: 0,
                kind: UpdateKind::Trade {
                    px,
                    sz: 1,
                    side: Side::Sell,
                },
                exchange_ts_ns: 1,
                receive_ts_ns: 2,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            },
            seq: 99,
            symbol_seq,
            publish_ts_ns: 3,
        };
        encode_payload(&s, name, decimals, 8)
    }

    #[tokio::test]
    async fn edges_pass_on_new_updates_and_count_the_rest() {
        let table = SymbolTable::new();
        let (tx, mut rx) = mpsc::channel(16);
        let stats = Arc::new(FeedStats::default());
        let mut edge = Edge {
            normalizer: Normalizer::new(Arc::clone(&table)),
            ids: HashMap::new(),
            last_seq: Vec::new(),
            books: EdgeBooks::default(),
            book_out: Vec::new(),
            stats: Arc::clone(&stats),
            tx,
        };
        // TC0: the first update of a symbol, at any number, is passed on with
        // the feed node's numbers; the symbol is interned with its decimals.
        assert!(edge.handle(&payload("BTCUSDT", 5, 10, 2)).await);
        let u = rx.try_recv().unwrap();
        assert_eq!((u.origin_seq, u.origin_publish_ts_ns), (5, 3));
        assert_eq!(table.get(u.symbol).unwrap().price_decimals, 2);
        // TC1: the next one; then a duplicate and an older one are dropped.
        assert!(edge.handle(&payload("BTCUSDT", 6, 11, 2)).await);
        assert!(edge.handle(&payload("BTCUSDT", 6, 11, 2)).await);
        assert!(edge.handle(&payload("BTCUSDT", 4, 9, 2)).await);
        assert_eq!(rx.try_recv().unwrap().origin_seq, 6);
        assert!(rx.try_recv().is_err());
        assert_eq!(stats.skipped.get(), 2);
        // TC2: a jump is passed on and counted as a gap.
        assert!(edge.handle(&payload("BTCUSDT", 9, 12, 2)).await);
        assert_eq!(rx.try_recv().unwrap().origin_seq, 9);
        assert_eq!(stats.gaps.get(), 1);
        // TC3: garbage, and decimals that differ from the symbol's, are
        // rejected; the symbol's sequence is untouched.
        assert!(edge.handle(b"\x01\x01garbage").await);
        assert!(edge.handle(&payload("BTCUSDT", 10, 12, 3)).await);
        assert!(rx.try_recv().is_err());
        assert_eq!(stats.rejected.get(), 2);
        assert!(edge.handle(&payload("BTCUSDT", 10, 13, 2)).await);
        assert_eq!(rx.try_recv().unwrap().origin_seq, 10);
        assert_eq!(stats.gaps.get(), 1);
        assert_eq!(stats.records.get(), 8);
        assert_eq!(stats.updates.get(), 4);
        // TC4: the publisher is gone (shutdown): the feed stops.
        drop(rx);
        assert!(!edge.handle(&payload("ETHUSDT", 1, 1, 2)).await);
    }
}
