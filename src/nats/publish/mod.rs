//! The feed node's side of NATS (`--publish nats://HOST:PORT[/PREFIX]`):
//! every update the publisher publishes goes on to NATS, without the
//! publisher ever waiting for NATS.
//!
//! The publisher's thread hands each update to an [`Backlog`] (a mutex held
//! for one push); a tokio task drains it and publishes each update on its
//! symbol's subject ([`crate::nats`] has the subjects and the payload).
//! When NATS is down or slower than the feed, the backlog stops growing at
//! `publish_buffer_updates` (16,384): it is conflated to the newest update of each symbol
//! (latest value wins), so its memory is bounded by the number of symbols
//! and edges skip what they missed instead of lagging further.
//!
//! Before the feeds start, the task reads the stream's last value of every
//! symbol and publishes it here as it was ([`restore`]): a restarted feed
//! node continues each symbol's numbering where its last run stopped, so
//! edges that outlived it do not drop its updates as old.
//!
//! After every reconnect the task publishes the last update it sent of every
//! symbol again: what the server took just before it died may not have
//! reached the stream or the edges, and edges drop what they already have.
//! On every connect it makes sure the JetStream stream exists.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, Event, Subject};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::market::Market;
use crate::metrics::Metrics;
use crate::nats::book::BookPayload;
use crate::nats::{
    backoff, connect_options, decode_payload, encode_payload, read_last_values, PublishTarget,
};
use crate::publish::PublishSink;
use crate::symbols::{SymbolDef, SymbolTable};
use crate::update::{level_flags, BookSide, Sequenced, SymbolId, Update, UpdateKind};

/// Longest the feeds are held at start for [`restore`].
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(5);

mod books;

use self::books::{BookEvent, BOOK_SNAPSHOT_EVERY, MAX_BOOK_EVENTS};

/// Updates between the publisher's thread and the NATS task.
pub struct Backlog {
    inner: Mutex<BacklogInner>,
    books: Mutex<VecDeque<BookEvent>>,
    ready: Notify,
    metrics: Arc<Metrics>,
}

struct BacklogInner {
    queue: VecDeque<Sequenced>,
    /// Updates held before conflating. With more symbols than half this,
    /// up to twice the number of symbols are held.
    capacity: usize,
    /// Length at which the queue is conflated.
    limit: usize,
    /// Scratch for [`conflate`]: by symbol id, the index of its newest update.
    newest: Vec<usize>,
}

impl Backlog {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Arc<Backlog> {
        let capacity = capacity.max(1);
        Arc::new(Backlog {
            inner: Mutex::new(BacklogInner {
                queue: VecDeque::with_capacity(capacity.min(1024)),
                capacity,
                limit: capacity,
                newest: Vec::new(),
            }),
            books: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            metrics,
        })
    }

    fn push_book(&self, event: BookEvent) {
        let mut books = self.books.lock().unwrap_or_else(|e| e.into_inner());
        if books.len() == MAX_BOOK_EVENTS {
            books.pop_front();
            self.metrics.nats_publish_conflated_total.inc();
        }
        books.push_back(event);
    }

    fn take_books(&self, out: &mut VecDeque<BookEvent>) {
        let mut books = self.books.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *books, out);
    }

    fn push(&self, update: &Sequenced) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.queue.push_back(*update);
        if inner.queue.len() >= inner.limit {
            let BacklogInner { queue, newest, .. } = &mut *inner;
            let dropped = conflate(queue, newest);
            self.metrics
                .nats_publish_conflated_total
                .add(dropped as u64);
            // One update per symbol is the floor; leave room above it so
            // that a feed of many symbols is not conflated on every push.
            inner.limit = inner.capacity.max(2 * inner.queue.len());
        }
    }

    /// Moves everything queued into `out` (empty), oldest first.
    fn take(&self, out: &mut VecDeque<Sequenced>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut inner.queue, out);
    }

    /// Updates waiting for the NATS task.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue
            .len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps only the newest update of each symbol, in their order. Returns how
/// many were dropped.
fn conflate(queue: &mut VecDeque<Sequenced>, newest: &mut Vec<usize>) -> usize {
    for (i, s) in queue.iter().enumerate() {
        let id = s.update.symbol as usize;
        if newest.len() <= id {
            newest.resize(id + 1, usize::MAX);
        }
        newest[id] = i;
    }
    let before = queue.len();
    let mut i = 0;
    queue.retain(|s| {
        let keep = newest[s.update.symbol as usize] == i;
        i += 1;
        keep
    });
    before - queue.len()
}

/// The publisher's handle on the backlog.
/// The publisher's handle on the backlog, with the levels of each book
/// event in progress and the books whose event in progress is a snapshot.
struct BacklogSink(
    Arc<Backlog>,
    HashMap<SymbolId, Vec<(BookSide, i64, i64)>>,
    HashSet<SymbolId>,
);

impl PublishSink for BacklogSink {
    fn send(&mut self, update: &Sequenced) {
        match update.update.kind {
            // A live venue's stale / live status stays with the feed node's
            // own clients: in the last-value stream it would take the place
            // of the symbol's price, and an edge's snapshot would lose it.
            // Edges see a venue's trouble as silence, then a jump in
            // `symbol_seq`.
            UpdateKind::Status(_) => {}
            // A book event's levels, gathered to one message: its changes
            // are not a last value, so they go apart from the backlog's
            // conflation ([`crate::nats::book`]).
            UpdateKind::Level {
                side,
                px,
                sz,
                flags,
            } => {
                let u = &update.update;
                let pending = self.1.entry(u.symbol).or_default();
                pending.push((side, px, sz));
                if flags & level_flags::LAST != 0 {
                    let levels = std::mem::take(pending);
                    // RESET is on an event's first level: this one, or one
                    // taken before.
                    let first = self.2.remove(&u.symbol);
                    self.0.push_book(BookEvent {
                        symbol: u.symbol,
                        book_seq: update.symbol_seq,
                        reset: first || flags & level_flags::RESET != 0,
                        levels,
                        exchange_ts_ns: u.exchange_ts_ns,
                        receive_ts_ns: u.receive_ts_ns,
                        publish_ts_ns: update.publish_ts_ns,
                    });
                } else if flags & level_flags::RESET != 0 {
                    self.2.insert(u.symbol);
                }
            }
            _ => self.0.push(update),
        }
    }

    fn flush(&mut self) {
        self.0.ready.notify_one();
    }
}

/// A feed node's link to NATS, from [`start`].
pub struct Publishing {
    /// For the [`Publisher`](crate::publish::Publisher).
    pub sink: Box<dyn PublishSink>,
    /// Connects, restores, and drains the sink until aborted.
    pub task: JoinHandle<()>,
    /// True (or closed) once the restore is done: the feeds wait for it.
    pub restored: watch::Receiver<bool>,
}

/// Starts publishing to `target`, holding up to `buffer_updates` while NATS
/// is down or slow. `tx` is the publisher's input, for the restored values.
pub fn start(
    target: PublishTarget,
    buffer_updates: usize,
    market: Arc<Market>,
    tx: mpsc::Sender<Update>,
) -> Publishing {
    let backlog = Backlog::new(buffer_updates, Arc::clone(&market.metrics));
    let (restored_tx, restored) = watch::channel(false);
    let task = tokio::spawn(drain(target, market, Arc::clone(&backlog), tx, restored_tx));
    Publishing {
        sink: Box::new(BacklogSink(backlog, HashMap::new(), HashSet::new())),
        task,
        restored,
    }
}

/// Publishes here, before any feed, the stream's last update of every
/// symbol under `target`, keeping its `symbol_seq` (and its decimals):
/// this process's clients get the last known values, and each symbol's
/// numbering continues from there. Returns how many.
pub async fn restore(
    client: &Client,
    target: &PublishTarget,
    symbols: &SymbolTable,
    tx: &mpsc::Sender<Update>,
) -> Result<u64, async_nats::Error> {
    let filter = format!("{}.>", target.prefix);
    read_last_values(client, &filter, |payload| {
        // A book is rebuilt by this node's own feeds, not restored.
        let book = BookPayload::decode(&payload).is_some();
        let update = match decode_payload(&payload) {
            _ if book => None,
            Ok(d) => match symbols.intern(d.name, d.price_decimals, d.size_decimals) {
                Ok(def) => Some(Update {
                    symbol: def.id,
                    ..d.update
                }),
                Err(e) => {
                    tracing::warn!("not restoring {:?}: {e}", d.name);
                    None
                }
            },
            Err(e) => {
                tracing::warn!("not restoring an undecodable message: {e}");
                None
            }
        };
        let tx = tx.clone();
        async move {
            if let Some(update) = update {
                tx.send(update).await.map_err(|_| "the publisher stopped")?;
            }
            Ok(())
        }
    })
    .await
}

/// A symbol's subject and what its payloads need.
struct Route {
    subject: Subject,
    def: SymbolDef,
}

struct Sender {
    client: Client,
    target: PublishTarget,
    market: Arc<Market>,
    routes: Vec<Option<Route>>,
    /// The last update sent of each symbol, by id, for republishing.
    last_sent: Vec<Option<Sequenced>>,
    /// Symbols with a book, and those whose book changed since its last
    /// snapshot went out.
    books: HashSet<SymbolId>,
    changed_books: HashSet<SymbolId>,
}

impl Sender {
    async fn send(&mut self, s: Sequenced) {
        let id = s.update.symbol as usize;
        // The publisher published it, so the table has it.
        let Some(route) = self.route(s.update.symbol) else {
            return;
        };
        let payload = encode_payload(
            &s,
            &route.def.name,
            route.def.price_decimals,
            route.def.size_decimals,
        );
        let subject = route.subject.clone();
        self.publish(subject, payload).await;
        self.last_sent[id] = Some(s);
    }

    /// The route of a symbol the publisher published.
    fn route(&mut self, symbol: SymbolId) -> Option<&Route> {
        let id = symbol as usize;
        if self.routes.len() <= id {
            self.routes.resize_with(id + 1, || None);
            self.last_sent.resize(id + 1, None);
        }
        if self.routes[id].is_none() {
            let def = self.market.symbols.get(symbol)?;
            let subject = Subject::from(self.target.subject(&def.name));
            self.routes[id] = Some(Route { subject, def });
        }
        self.routes[id].as_ref()
    }

    async fn publish(&mut self, subject: Subject, payload: bytes::Bytes) {
        let metrics = &self.market.metrics;
        match self.client.publish(subject.clone(), payload).await {
            Ok(()) => metrics.nats_published_total.inc(),
            Err(e) => {
                tracing::warn!(%subject, "NATS publish failed: {e}");
                metrics.nats_publish_errors_total.inc()
            }
        };
    }

    /// A (re)connection: the stream made sure of, and after a reconnect
    /// what NATS may have lost sent again.
    async fn connected(&mut self, connects: u64, stream_task: &mut Option<JoinHandle<()>>) {
        let metrics = &self.market.metrics;
        metrics.nats_publish_connected.set(1);
        tracing::info!(server = %self.target.server, "publishing to NATS");
        if let Some(t) = stream_task.take() {
            t.abort();
        }
        *stream_task = Some(tokio::spawn(ensure_stream(
            self.client.clone(),
            self.target.clone(),
        )));
        if connects > 1 {
            metrics.nats_publish_reconnects_total.inc();
            self.republish().await;
            self.send_snapshots(true).await;
        }
    }

    async fn republish(&mut self) {
        let last: Vec<Sequenced> = self.last_sent.iter().flatten().copied().collect();
        let n = last.len() as u64;
        for s in last {
            self.send(s).await;
        }
        self.market.metrics.nats_republished_total.add(n);
    }
}

/// Connects (retrying with backoff, for ever), and publishes what the
/// backlog gets while connected.
async fn drain(
    target: PublishTarget,
    market: Arc<Market>,
    backlog: Arc<Backlog>,
    tx: mpsc::Sender<Update>,
    restored: watch::Sender<bool>,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let client = match connect_options("tickwire feed node", events_tx)
        .skip_subject_validation(true)
        .connect(target.server.as_str())
        .await
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(server = %target.server, "NATS publishing disabled: {e}");
            return;
        }
    };
    let restore = restore(&client, &target, &market.symbols, &tx);
    match tokio::time::timeout(RESTORE_TIMEOUT, restore).await {
        Ok(Ok(n)) => tracing::info!(symbols = n, "restored the last values from NATS"),
        Ok(Err(e)) => tracing::error!("cannot restore the last values from NATS: {e}; symbol sequences start again from 1, and edge nodes that saw a previous run drop updates until they restart"),
        Err(_) => tracing::error!("NATS did not answer in {RESTORE_TIMEOUT:?}: not restoring the last values; symbol sequences start again from 1, and edge nodes that saw a previous run drop updates until they restart"),
    }
    drop(tx);
    let _ = restored.send(true);
    let metrics = Arc::clone(&market.metrics);
    let mut sender = Sender {
        client,
        target,
        market,
        routes: Vec::new(),
        last_sent: Vec::new(),
        books: HashSet::new(),
        changed_books: HashSet::new(),
    };
    let mut book_batch = VecDeque::new();
    let mut snapshots = tokio::time::interval(BOOK_SNAPSHOT_EVERY);
    snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connected = false;
    let mut connects = 0u64;
    let mut stream_task: Option<JoinHandle<()>> = None;
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => return,
                Some(Event::Connected) => {
                    connected = true;
                    connects += 1;
                    sender.connected(connects, &mut stream_task).await;
                }
                Some(Event::Disconnected) => {
                    connected = false;
                    metrics.nats_publish_connected.set(0);
                    tracing::warn!(server = %sender.target.server, "NATS disconnected; conflating until it is back");
                }
                Some(other) => tracing::debug!("NATS: {other}"),
            },
            // While disconnected the backlog conflates; async-nats's own
            // buffer is not filled with values that will be stale.
            () = backlog.ready.notified(), if connected => {
                backlog.take(&mut batch);
                for s in batch.drain(..) {
                    sender.send(s).await;
                }
                backlog.take_books(&mut book_batch);
                for e in book_batch.drain(..) {
                    sender.send_book(e).await;
                }
            }
            _ = snapshots.tick(), if connected => sender.send_snapshots(false).await,
        }
    }
}

/// Creates the stream that keeps the last value of each symbol if it does
/// not exist, retrying until JetStream answers (it takes a moment after a
/// server restart).
async fn ensure_stream(client: Client, target: PublishTarget) {
    let js = async_nats::jetstream::new(client);
    let config = target.stream_config();
    for attempt in 2.. {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => {
                tracing::info!(stream = %config.name, "JetStream last-value stream ready");
                return;
            }
            Err(e) => {
                tracing::warn!(stream = %config.name, "cannot create the JetStream stream (snapshots for new edges): {e}");
                tokio::time::sleep(backoff(attempt).max(Duration::from_millis(100))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::{Update, UpdateKind};

    fn seq(symbol: u32, symbol_seq: u64) -> Sequenced {
        Sequenced {
            update: Update {
                symbol,
                kind: UpdateKind::Trade {
                    px: symbol_seq as i64,
                    sz: 1,
                    side: crate::update::Side::Buy,
                },
                exchange_ts_ns: 0,
                receive_ts_ns: 0,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            },
            seq: 0,
            symbol_seq,
            publish_ts_ns: 0,
        }
    }

    const BACKLOG_UPDATES: usize = 16_384;

    #[test]
    fn conflation_keeps_the_newest_of_each_symbol_in_order() {
        let mut q: VecDeque<_> = [(0, 1), (1, 1), (0, 2), (2, 1), (1, 2), (0, 3)]
            .into_iter()
            .map(|(s, n)| seq(s, n))
            .collect();
        let mut scratch = Vec::new();
        assert_eq!(conflate(&mut q, &mut scratch), 3);
        let kept: Vec<_> = q.iter().map(|s| (s.update.symbol, s.symbol_seq)).collect();
        assert_eq!(kept, [(2, 1), (1, 2), (0, 3)]);
        // Nothing to drop the second time.
        assert_eq!(conflate(&mut q, &mut scratch), 0);
    }

    #[test]
    fn the_backlog_is_bounded_and_latest_value_wins() {
        let metrics = Arc::new(Metrics::default());
        let backlog = Backlog::new(BACKLOG_UPDATES, Arc::clone(&metrics));
        // TC0: far more updates of 3 symbols than the bound, nobody draining.
        let n = 3 * BACKLOG_UPDATES as u64;
        for i in 1..=n {
            backlog.push(&seq((i % 3) as u32, i));
        }
        assert!(backlog.len() < BACKLOG_UPDATES, "{}", backlog.len());
        let mut out = VecDeque::new();
        backlog.take(&mut out);
        let dropped = metrics.nats_publish_conflated_total.get();
        assert_eq!(dropped + out.len() as u64, n);
        // The newest of each symbol is there, and nothing older follows newer.
        let newest: Vec<_> = out.iter().rev().take(3).map(|s| s.symbol_seq).collect();
        assert_eq!(newest, [n, n - 1, n - 2]);
        for w in out.iter().collect::<Vec<_>>().windows(2) {
            assert!(w[0].symbol_seq < w[1].symbol_seq);
        }
        assert!(backlog.is_empty());
        // TC1: more symbols than the bound: one each is kept, the bound grows
        // to twice the symbols, and pushes do not conflate every time.
        let symbols = BACKLOG_UPDATES as u32 + 10;
        for i in 0..2 * symbols {
            backlog.push(&seq(i % symbols, u64::from(i) + 1));
        }
        let len = backlog.len();
        assert!(
            len >= symbols as usize && len <= 2 * symbols as usize,
            "{len}"
        );
    }
}
