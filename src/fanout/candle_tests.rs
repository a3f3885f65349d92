//! Candle channels through the publisher and a subscriber: the snapshot,
//! live changes and closes, a catch-up after falling behind, a throttle,
//! and a replay that starts over; frames read back as JSON.

use std::sync::Arc;

use serde_json::Value;

use super::{FanoutLimits, Outbox, Subscriber};
use crate::market::{Market, Published};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::ring::RingWriter;
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::{Side, Update, UpdateKind};
use crate::wire::{self, Format};

const S: u64 = 1_000_000_000;

struct Fixture {
    market: Arc<Market>,
    publisher: Publisher,
    id: u32,
}

fn fixture(ring: usize) -> Fixture {
    let symbols = SymbolTable::new();
    let (market, writer): (_, RingWriter<Published>) =
        Market::new(ring, Arc::clone(&symbols), Arc::new(Metrics::default()));
    let id = Normalizer::new(symbols).scale("A", b"1", b"1").unwrap().id;
    Fixture {
        publisher: Publisher::new(Arc::clone(&market), writer),
        market,
        id,
    }
}

impl Fixture {
    /// A trade of `px` (whole units) and size 1 at `ts` ns.
    fn trade(&mut self, ts: u64, px: i64) {
        self.publisher.publish(Update {
            symbol: self.id,
            kind: UpdateKind::Trade {
                px: px * 100_000_000,
                sz: 100_000_000,
                side: Side::Buy,
            },
            exchange_ts_ns: ts,
            receive_ts_ns: ts,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        });
    }

    fn subscriber(&self, max_lag_updates: u64, request: &str, out: &mut Outbox) -> Subscriber {
        let limits = FanoutLimits {
            max_outbox_bytes: 1 << 20,
            max_lag_updates,
            max_subscriptions: 10,
        };
        let mut sub = Subscriber::new(Arc::clone(&self.market), Format::Json, limits);
        sub.handle(wire::parse_request(request.as_bytes(), 10).unwrap(), out);
        sub
    }
}

/// The candle messages in the outbox as (type, candle_seq, [(start s,
/// close, trades, closed)]).
type Candle = (String, u64, Vec<(u64, i64, u64, bool)>);

fn candles(out: &mut Outbox) -> Vec<Candle> {
    let bytes = out.concat();
    out.advance(bytes.len());
    let mut got = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let h = crate::wire::frame::parse(rest).expect("a whole header");
        let (start, len) = (h.header_len, h.payload_len as usize);
        let m: Value = serde_json::from_slice(&rest[start..start + len]).unwrap();
        rest = &rest[start + len..];
        let kind = m["type"].as_str().unwrap_or("");
        if kind != "candle" && kind != "candles" {
            continue;
        }
        let bar = |b: &Value| {
            let close = b["close"].as_str().unwrap().split('.').next().unwrap();
            (
                b["start_ts"].as_u64().unwrap() / S,
                close.parse().unwrap(),
                b["trades"].as_u64().unwrap(),
                b["closed"].as_bool().unwrap(),
            )
        };
        let bars = match m["bars"].as_array() {
            Some(bars) => bars.iter().map(bar).collect(),
            None => vec![bar(&m)],
        };
        got.push((kind.to_owned(), m["candle_seq"].as_u64().unwrap(), bars));
    }
    got
}

fn c(kind: &str, seq: u64, bars: &[(u64, i64, u64, bool)]) -> Candle {
    (kind.into(), seq, bars.to_vec())
}

#[test]
fn a_subscriber_gets_the_kept_bars_then_each_change_and_close() {
    let mut f = fixture(64);
    f.trade(10 * S, 1);
    f.trade(10 * S + 1, 2);
    f.trade(11 * S, 3);
    let mut out = Outbox::default();
    let req = r#"{"op":"subscribe","symbols":["A"],"channels":["candles.1s"]}"#;
    let mut sub = f.subscriber(32, req, &mut out);
    // TC0: the snapshot: the closed bar, then the open one.
    assert_eq!(
        candles(&mut out),
        [c("candles", 4, &[(10, 2, 2, true), (11, 3, 1, false)])]
    );
    // TC1: a change of the open bar; a trade of a later second closes it
    // first. Trades of a second nobody watched were not encoded.
    f.trade(11 * S + 5, 4);
    f.trade(12 * S, 5);
    sub.fill(&mut out);
    assert_eq!(
        candles(&mut out),
        [
            c("candle", 5, &[(11, 4, 2, false)]),
            c("candle", 6, &[(11, 4, 2, true)]),
            c("candle", 7, &[(12, 5, 1, false)]),
        ]
    );
    // TC2: a trade older than a closed bar is late: no message, counted.
    f.trade(11 * S + 9, 9);
    sub.fill(&mut out);
    assert!(candles(&mut out).is_empty());
    assert_eq!(f.market.metrics.candle_late_trades_total.get(), 1);
    // TC3: another symbol's trade moving the trade clock past the end by
    // the grace (1 s) closes the open bar of a quiet symbol.
    let other = Normalizer::new(Arc::clone(&f.market.symbols))
        .scale("B", b"1", b"1")
        .unwrap()
        .id;
    f.trade_of(other, 14 * S);
    sub.fill(&mut out);
    assert_eq!(candles(&mut out), [c("candle", 8, &[(12, 5, 1, true)])]);
}

impl Fixture {
    /// A trade of another symbol at `ts` (it moves the trade clock).
    fn trade_of(&mut self, symbol: u32, ts: u64) {
        self.publisher.publish(Update {
            symbol,
            kind: UpdateKind::Trade {
                px: 100_000_000,
                sz: 100_000_000,
                side: Side::Sell,
            },
            exchange_ts_ns: ts,
            receive_ts_ns: ts,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        });
    }
}

#[test]
fn a_lagging_subscriber_gets_the_bars_closed_since_and_the_open_one() {
    let mut f = fixture(64);
    let mut out = Outbox::default();
    let req = r#"{"op":"subscribe","symbols":["A"],"channels":["candles.1s"]}"#;
    let mut sub = f.subscriber(8, req, &mut out);
    f.trade(10 * S, 1);
    sub.fill(&mut out);
    assert_eq!(candles(&mut out), [c("candle", 1, &[(10, 1, 1, false)])]);
    // Falls 8+ entries behind: three bars close, a fourth is open.
    for k in 0..12 {
        f.trade((11 + k / 3) * S, 2 + k as i64);
    }
    sub.fill(&mut out);
    let got = candles(&mut out);
    assert_eq!(
        got,
        [c(
            "candles",
            17,
            &[
                (10, 1, 1, true),
                (11, 4, 3, true),
                (12, 7, 3, true),
                (13, 10, 3, true),
                (14, 13, 3, false)
            ]
        )]
    );
    assert_eq!(f.market.metrics.lapped_readers_total.get(), 1);
    // Then live again, in sequence.
    f.trade(14 * S + 1, 20);
    sub.fill(&mut out);
    assert_eq!(candles(&mut out), [c("candle", 18, &[(14, 20, 4, false)])]);
}

#[test]
fn a_throttle_keeps_the_newest_open_bar_and_every_close() {
    let mut f = fixture(64);
    let mut out = Outbox::default();
    let req = r#"{"op":"subscribe","symbols":["A"],"channels":["candles.1s"],"throttle_ms":100}"#;
    let mut sub = f.subscriber(32, req, &mut out);
    let t0 = 1_000_000;
    sub.now_ms = t0;
    f.trade(10 * S, 1);
    f.trade(10 * S, 2);
    f.trade(11 * S, 3);
    f.trade(11 * S, 4);
    sub.fill_at(&mut out, t0 + 50);
    assert!(candles(&mut out).is_empty());
    sub.fill_at(&mut out, t0 + 100);
    assert_eq!(
        candles(&mut out),
        [
            c("candle", 3, &[(10, 2, 2, true)]),
            c("candle", 5, &[(11, 4, 2, false)]),
        ]
    );
}

#[test]
fn a_replay_that_starts_over_starts_the_bars_over() {
    let mut f = fixture(64);
    let mut out = Outbox::default();
    let req = r#"{"op":"subscribe","symbols":["A"],"channels":["candles.1s"]}"#;
    let mut sub = f.subscriber(32, req, &mut out);
    f.trade(10 * S, 1);
    f.trade(13 * S, 2);
    sub.fill(&mut out);
    candles(&mut out);
    // The next pass of a looped recording: the same times again (more
    // than the grace before the symbol's last trade).
    f.trade(10 * S, 3);
    sub.fill(&mut out);
    assert_eq!(candles(&mut out), [c("candles", 4, &[(10, 3, 1, false)])]);
    assert_eq!(f.market.metrics.candle_resets_total.get(), 1);
    assert_eq!(f.market.metrics.candle_late_trades_total.get(), 0);
    // A new subscriber's snapshot holds only the new pass.
    let mut out2 = Outbox::default();
    f.subscriber(32, req, &mut out2);
    assert_eq!(candles(&mut out2), [c("candles", 4, &[(10, 3, 1, false)])]);
}
