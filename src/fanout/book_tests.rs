//! Book channels through the publisher and a subscriber: snapshots, changes,
//! conflation and staleness, with the frames read back as JSON.

use std::sync::Arc;

use serde_json::Value;

use super::{FanoutLimits, Outbox, Subscriber};
use crate::market::{Market, Published};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::ring::RingWriter;
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::{level_flags, BookSide, SymbolStatus, Update, UpdateKind};
use crate::wire::{self, ErrorCode, Format};

struct Fixture {
    market: Arc<Market>,
    publisher: Publisher,
    id: u32,
}

fn fixture(ring: usize) -> Fixture {
    let symbols = SymbolTable::new();
    let (market, writer): (_, RingWriter<Published>) =
        Market::new(ring, Arc::clone(&symbols), Arc::new(Metrics::default()));
    let mut normalizer = Normalizer::new(symbols);
    // Whole units: no decimals beyond the default, so 100 is "100.00000000".
    let id = normalizer.scale("A", b"1", b"1").unwrap().id;
    Fixture {
        publisher: Publisher::new(Arc::clone(&market), writer),
        market,
        id,
    }
}

const D: i64 = 100_000_000;

impl Fixture {
    /// Publishes one book event: `levels` as (side, price, size) in whole
    /// units, a snapshot if `reset`.
    fn event(&mut self, reset: bool, levels: &[(BookSide, i64, i64)]) {
        for (i, &(side, px, sz)) in levels.iter().enumerate() {
            let mut flags = 0;
            if reset && i == 0 {
                flags |= level_flags::RESET;
            }
            if i + 1 == levels.len() {
                flags |= level_flags::LAST;
            }
            self.publisher.publish(Update {
                symbol: self.id,
                kind: UpdateKind::Level {
                    side,
                    px: px * D,
                    sz: sz * D,
                    flags,
                },
                exchange_ts_ns: 5,
                receive_ts_ns: 6,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            });
        }
    }

    fn status(&mut self, status: SymbolStatus) {
        self.publisher.publish(Update {
            symbol: self.id,
            kind: UpdateKind::Status(status),
            exchange_ts_ns: 0,
            receive_ts_ns: 1,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        });
    }

    fn subscriber(&self, max_lag_updates: u64) -> Subscriber {
        let limits = FanoutLimits {
            max_outbox_bytes: 1 << 20,
            max_lag_updates,
            max_subscriptions: 10,
        };
        Subscriber::new(Arc::clone(&self.market), Format::Json, limits)
    }
}

fn subscribe(sub: &mut Subscriber, channels: &str, out: &mut Outbox) {
    let text = format!(r#"{{"op":"subscribe","symbols":["A"],"channels":[{channels}]}}"#);
    sub.handle(wire::parse_request(text.as_bytes(), 10).unwrap(), out);
}

/// The JSON messages in the outbox.
fn drain(out: &mut Outbox) -> Vec<Value> {
    let bytes = out.concat();
    out.advance(bytes.len());
    let mut msgs = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let h = crate::wire::frame::parse(rest).expect("a whole header");
        let (start, len) = (h.header_len, h.payload_len as usize);
        msgs.push(serde_json::from_slice(&rest[start..start + len]).unwrap());
        rest = &rest[start + len..];
    }
    msgs
}

/// A book message as (channel, book_seq, snapshot, bids, asks), levels as
/// whole-unit (price, size).
type Book = (String, u64, bool, Vec<(i64, i64)>, Vec<(i64, i64)>);

fn books(msgs: &[Value]) -> Vec<Book> {
    let side = |v: &Value| -> Vec<(i64, i64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let n = |x: &Value| x.as_str().unwrap().parse::<f64>().unwrap() as i64;
                (n(&l[0]), n(&l[1]))
            })
            .collect()
    };
    msgs.iter()
        .filter(|m| m["type"] == "book")
        .map(|m| {
            (
                m["channel"].as_str().unwrap().to_owned(),
                m["book_seq"].as_u64().unwrap(),
                m["snapshot"].as_bool().unwrap(),
                side(&m["bids"]),
                side(&m["asks"]),
            )
        })
        .collect()
}

fn b(channel: &str, seq: u64, snap: bool, bids: &[(i64, i64)], asks: &[(i64, i64)]) -> Book {
    (channel.into(), seq, snap, bids.to_vec(), asks.to_vec())
}

use BookSide::{Ask, Bid};

#[test]
fn snapshot_on_subscribe_then_changes_and_top_n_only_when_it_changes() {
    let mut f = fixture(64);
    f.event(
        true,
        &[(Bid, 100, 1), (Bid, 99, 2), (Ask, 101, 3), (Ask, 102, 4)],
    );
    let mut sub = f.subscriber(32);
    let mut out = Outbox::default();
    // TC0: the ack echoes the channels and counts both snapshots.
    subscribe(&mut sub, r#""book.1","book""#, &mut out);
    let msgs = drain(&mut out);
    assert_eq!(msgs[0]["type"], "ack");
    assert_eq!(msgs[0]["channels"], serde_json::json!(["book", "book.1"]));
    assert_eq!(msgs[0]["snapshot"], 2);
    assert_eq!(msgs[1]["type"], "symbol");
    assert_eq!(
        books(&msgs),
        [
            b("book", 1, true, &[(100, 1), (99, 2)], &[(101, 3), (102, 4)]),
            b("book.1", 1, true, &[(100, 1)], &[(101, 3)]),
        ]
    );
    // TC1: a change below the top: `book` has it, `book.1` is not sent.
    f.event(false, &[(Bid, 99, 5)]);
    sub.fill(&mut out);
    assert_eq!(
        books(&drain(&mut out)),
        [b("book", 2, false, &[(99, 5)], &[])]
    );
    // TC2: a change at the top, with a removal: both; a price set twice
    // in one event goes out once, with its last size.
    f.event(false, &[(Ask, 101, 0), (Bid, 100, 7), (Bid, 100, 8)]);
    sub.fill(&mut out);
    assert_eq!(
        books(&drain(&mut out)),
        [
            b("book", 3, false, &[(100, 8)], &[(101, 0)]),
            b("book.1", 3, true, &[(100, 8)], &[(102, 4)]),
        ]
    );
    // TC3: an event that changes nothing is not a book update.
    f.event(false, &[(Ask, 150, 0)]);
    sub.fill(&mut out);
    assert!(drain(&mut out).is_empty());
    assert_eq!(f.market.metrics.book_updates_total.get(), 3);
    // TC5: a crossed book is served as the source sent it, and counted.
    assert_eq!(f.market.metrics.books_crossed_total.get(), 0);
    f.event(false, &[(Bid, 103, 1)]);
    sub.fill(&mut out);
    assert_eq!(
        books(&drain(&mut out)),
        [
            b("book", 4, false, &[(103, 1)], &[]),
            b("book.1", 4, true, &[(103, 1)], &[(102, 4)]),
        ]
    );
    assert_eq!(f.market.metrics.books_crossed_total.get(), 1);
}

#[test]
fn book_frames_are_encoded_once_per_watched_channel_whatever_the_watchers() {
    let mut f = fixture(64);
    f.event(true, &[(Bid, 100, 1), (Ask, 101, 1)]);
    let m = Arc::clone(&f.market.metrics);
    // TC0: nobody watches: nothing encoded.
    assert_eq!(m.book_frames_encoded_total.get(), 0);
    let mut subs: Vec<Subscriber> = (0..5).map(|_| f.subscriber(32)).collect();
    let mut out = Outbox::default();
    for sub in &mut subs {
        subscribe(sub, r#""book.10""#, &mut out);
    }
    // TC1: five subscribers share one snapshot, encoded once.
    assert_eq!(m.book_snapshots_encoded_total.get(), 1);
    drain(&mut out);
    f.event(false, &[(Bid, 100, 2)]);
    assert_eq!(m.book_frames_encoded_total.get(), 1);
    for sub in &mut subs {
        sub.fill(&mut out);
    }
    assert_eq!(books(&drain(&mut out)).len(), 5);
    // TC2: once they leave, the book is not encoded any more.
    subs.clear();
    f.event(false, &[(Bid, 100, 3)]);
    assert_eq!(m.book_frames_encoded_total.get(), 1);
}

#[test]
fn a_lagging_book_watcher_gets_the_newest_book_never_an_older_one() {
    let mut f = fixture(16);
    f.event(true, &[(Bid, 100, 1), (Ask, 101, 1)]);
    let mut sub = f.subscriber(4);
    let mut out = Outbox::default();
    subscribe(&mut sub, r#""book""#, &mut out);
    drain(&mut out);
    for i in 2..=12 {
        f.event(false, &[(Bid, 100, i)]);
    }
    sub.fill(&mut out);
    let msgs = drain(&mut out);
    assert_eq!(msgs[0]["type"], "conflated");
    // TC0: one snapshot of the newest book instead of eleven changes.
    assert_eq!(
        books(&msgs),
        [b("book", 12, true, &[(100, 12)], &[(101, 1)])]
    );
    // TC1: then the changes after it, gapless.
    f.event(false, &[(Ask, 101, 9)]);
    sub.fill(&mut out);
    assert_eq!(
        books(&drain(&mut out)),
        [b("book", 13, false, &[], &[(101, 9)])]
    );
}

#[test]
fn a_stale_book_is_not_served_until_a_snapshot_replaces_it() {
    let mut f = fixture(64);
    f.event(true, &[(Bid, 100, 1), (Ask, 101, 1)]);
    f.status(SymbolStatus::StaleBookGap);
    // TC0: changes to a stale book are dropped, not applied.
    f.event(false, &[(Bid, 100, 5)]);
    let mut sub = f.subscriber(32);
    let mut out = Outbox::default();
    subscribe(&mut sub, r#""book.5""#, &mut out);
    let msgs = drain(&mut out);
    // TC1: the status, and no book.
    assert_eq!(msgs[0]["snapshot"], 1);
    assert!(msgs
        .iter()
        .any(|m| m["type"] == "status" && m["reason"] == "book_gap"));
    assert!(books(&msgs).is_empty());
    // TC2: a new snapshot is served whole.
    f.event(true, &[(Bid, 98, 1), (Ask, 103, 2)]);
    f.status(SymbolStatus::Live);
    sub.fill(&mut out);
    let msgs = drain(&mut out);
    assert_eq!(
        books(&msgs),
        [b("book.5", 2, true, &[(98, 1)], &[(103, 2)])]
    );
    assert_eq!(msgs.last().unwrap()["state"], "live");
}

#[test]
fn channels_are_checked_and_can_be_dropped_one_by_one() {
    let mut f = fixture(64);
    f.event(true, &[(Bid, 100, 1), (Ask, 101, 1)]);
    let mut sub = f.subscriber(32);
    let mut out = Outbox::default();
    // TC0: an unknown channel is refused with its code, nothing subscribed.
    let req = wire::parse_request(
        br#"{"op":"subscribe","symbols":["A"],"channels":["book.7"]}"#,
        10,
    );
    assert_eq!(req.unwrap_err().code, ErrorCode::UnknownChannel);
    // TC1: quotes by default, then a book channel added to the same symbol.
    sub.handle(
        wire::parse_request(br#"{"op":"subscribe","symbols":["A"]}"#, 10).unwrap(),
        &mut out,
    );
    subscribe(&mut sub, r#""book.1""#, &mut out);
    assert_eq!(books(&drain(&mut out)).len(), 1);
    assert_eq!(f.market.metrics.subscriptions.get(), 1);
    // TC2: unsubscribing the book channel keeps the symbol, and unwatches.
    sub.handle(
        wire::parse_request(
            br#"{"op":"unsubscribe","symbols":["A"],"channels":["book.1"]}"#,
            10,
        )
        .unwrap(),
        &mut out,
    );
    drain(&mut out);
    f.event(false, &[(Bid, 100, 2)]);
    assert_eq!(f.market.metrics.book_frames_encoded_total.get(), 0);
    assert_eq!(f.market.metrics.subscriptions.get(), 1);
    assert!(!sub.is_idle());
}

#[test]
fn dropping_a_book_channel_under_star_keeps_star() {
    let mut f = fixture(64);
    f.event(true, &[(Bid, 100, 1), (Ask, 101, 1)]);
    let mut sub = f.subscriber(32);
    let mut out = Outbox::default();
    let req = |text: &[u8]| wire::parse_request(text, 10).unwrap();
    sub.handle(req(br#"{"op":"subscribe","symbols":["*"]}"#), &mut out);
    subscribe(&mut sub, r#""book.1""#, &mut out);
    sub.handle(
        req(br#"{"op":"unsubscribe","symbols":["A"],"channels":["book.1"]}"#),
        &mut out,
    );
    drain(&mut out);
    // TC0: a symbol that appears later still joins `*`.
    let mut normalizer = Normalizer::new(Arc::clone(&f.market.symbols));
    let b = normalizer.scale("B", b"1", b"1").unwrap().id;
    f.publisher.publish(Update {
        symbol: b,
        kind: UpdateKind::Trade {
            px: D,
            sz: D,
            side: crate::update::Side::Buy,
        },
        exchange_ts_ns: 0,
        receive_ts_ns: 1,
        origin_seq: 0,
        origin_publish_ts_ns: 0,
    });
    sub.fill(&mut out);
    let msgs = drain(&mut out);
    assert!(
        msgs.iter()
            .any(|m| m["type"] == "trade" && m["symbol"] == "B"),
        "{msgs:?}"
    );
}

#[test]
fn naming_a_symbol_new_to_star_gives_it_the_channels_asked_for() {
    let mut f = fixture(64);
    let mut sub = f.subscriber(32);
    let mut out = Outbox::default();
    let req = |text: &[u8]| wire::parse_request(text, 10).unwrap();
    // TC0: `*` (quotes and trades), then B appears with a book.
    sub.handle(req(br#"{"op":"subscribe","symbols":["*"]}"#), &mut out);
    drain(&mut out);
    let mut normalizer = Normalizer::new(Arc::clone(&f.market.symbols));
    f.id = normalizer.scale("B", b"1", b"1").unwrap().id;
    f.event(true, &[(Bid, 100, 1), (Ask, 101, 1)]);
    // TC1: B, which `*` takes at this request, named with book.1: its book
    // comes, as for a symbol named before.
    let text = br#"{"op":"subscribe","symbols":["B"],"channels":["book.1"]}"#;
    sub.handle(req(text), &mut out);
    assert_eq!(
        books(&drain(&mut out)),
        [b("book.1", 1, true, &[(100, 1)], &[(101, 1)])]
    );
}

#[test]
fn watching_a_stale_book_skips_its_older_changes_still_in_the_ring() {
    let mut f = fixture(64);
    f.event(true, &[(Bid, 100, 1), (Ask, 101, 1)]);
    // Another connection watches `book`, so its changes are in the ring.
    let mut other = f.subscriber(32);
    let mut out = Outbox::default();
    subscribe(&mut other, r#""book""#, &mut out);
    let mut lagging = f.subscriber(32);
    lagging.handle(
        wire::parse_request(br#"{"op":"subscribe","symbols":["A"]}"#, 10).unwrap(),
        &mut out,
    );
    drain(&mut out);
    f.event(false, &[(Bid, 100, 2)]);
    f.status(SymbolStatus::StaleBookGap);
    // TC0: the lagging connection asks for the stale book: nothing now,
    // and the change before the gap is not sent it later.
    subscribe(&mut lagging, r#""book""#, &mut out);
    lagging.fill(&mut out);
    let msgs = drain(&mut out);
    assert!(books(&msgs).is_empty(), "{msgs:?}");
    assert!(msgs.iter().any(|m| m["reason"] == "book_gap"));
}
