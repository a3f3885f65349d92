//! The feed node's half of books over NATS ([`crate::nats::book`]): each
//! book event as the publisher published it, and each changed book's
//! whole state at most once a second.

use std::time::Duration;

use async_nats::Subject;

use super::Sender;
use crate::nats::book::BookPayload;
use crate::update::{BookSide, SymbolId};

/// Book events held between the publisher's thread and the NATS task: past
/// this the oldest go (counted as conflated); an edge then finds a gap and
/// waits for the next snapshot.
pub(super) const MAX_BOOK_EVENTS: usize = 4096;

/// How often a changed book's whole state goes to its snapshot subject.
pub(super) const BOOK_SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// One book event as the publisher published it, for NATS.
#[derive(Debug, Clone)]
pub(super) struct BookEvent {
    pub(super) symbol: SymbolId,
    pub(super) book_seq: u64,
    pub(super) reset: bool,
    pub(super) levels: Vec<(BookSide, i64, i64)>,
    pub(super) exchange_ts_ns: u64,
    pub(super) receive_ts_ns: u64,
    pub(super) publish_ts_ns: u64,
}

impl Sender {
    pub(super) async fn send_book(&mut self, e: BookEvent) {
        let Some(route) = self.route(e.symbol) else {
            return;
        };
        let def = route.def.clone();
        let subject = Subject::from(self.target.book_subject(&def.name));
        let payload = BookPayload {
            name: def.name.to_string(),
            price_decimals: def.price_decimals,
            size_decimals: def.size_decimals,
            snapshot: false,
            reset: e.reset,
            book_seq: e.book_seq,
            exchange_ts_ns: e.exchange_ts_ns,
            receive_ts_ns: e.receive_ts_ns,
            publish_ts_ns: e.publish_ts_ns,
            levels: e.levels,
        };
        self.publish(subject, payload.encode()).await;
        self.books.insert(e.symbol);
        self.changed_books.insert(e.symbol);
    }

    /// Sends the whole book of every book that changed since its last
    /// snapshot (`all`: of every book), as it is now: read under the
    /// book's mutex, so at one `book_seq`.
    pub(super) async fn send_snapshots(&mut self, all: bool) {
        let ids: Vec<SymbolId> = if all {
            self.books.iter().copied().collect()
        } else {
            self.changed_books.drain().collect()
        };
        for id in ids {
            let Some(route) = self.route(id) else {
                continue;
            };
            let def = route.def.clone();
            let payload = self.market.books.with(id, |b| {
                (b.book_seq > 0 && !b.stale).then(|| {
                    let (bids, asks) = crate::market::books::top(&b.book, 0);
                    let levels = bids
                        .into_iter()
                        .map(|(p, q)| (BookSide::Bid, p, q))
                        .chain(asks.into_iter().map(|(p, q)| (BookSide::Ask, p, q)))
                        .collect();
                    BookPayload {
                        name: def.name.to_string(),
                        price_decimals: def.price_decimals,
                        size_decimals: def.size_decimals,
                        snapshot: true,
                        reset: false,
                        book_seq: b.book_seq,
                        exchange_ts_ns: b.exchange_ts_ns,
                        receive_ts_ns: b.receive_ts_ns,
                        publish_ts_ns: b.publish_ts_ns,
                        levels,
                    }
                })
            });
            if let Some(payload) = payload {
                let subject = Subject::from(self.target.snapshot_subject(&def.name));
                self.publish(subject, payload.encode()).await;
            }
        }
    }
}
