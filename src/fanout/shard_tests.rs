//! A writer shard visits only the links that what was published concerns
//! (`slots.rs`): what each link receives is what a pass over every link
//! would have sent it.

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fanout::shard::{Link, Pipe, Retire, Shards, Socket};
use crate::fanout::{FanoutLimits, Subscriber};
use crate::market::{Market, Published};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::ring::RingWriter;
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::{Update, UpdateKind};
use crate::wire::{self, Format};

/// A socket that takes everything.
#[derive(Default)]
struct Sink(Mutex<Vec<u8>>);

impl Socket for Sink {
    fn try_writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut all = self.0.lock().unwrap();
        for b in bufs {
            all.extend_from_slice(b);
        }
        Ok(bufs.iter().map(|b| b.len()).sum())
    }
}

/// A socket that takes everything, or nothing (would block) while
/// `blocked`.
#[derive(Default)]
struct Valve {
    sink: Sink,
    blocked: AtomicBool,
}

impl Socket for Valve {
    fn try_writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.blocked.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.sink.try_writev(bufs)
    }
}

struct Fixture {
    market: Arc<Market>,
    publisher: Publisher,
    normalizer: Normalizer,
    shards: Shards,
}

/// A market of `symbols` symbols named S0, S1, … (ids in that order),
/// each with a quote, and one writer shard.
fn fixture(symbols: usize) -> Fixture {
    let table = SymbolTable::new();
    let (market, writer): (_, RingWriter<Published>) =
        Market::new(1024, Arc::clone(&table), Arc::new(Metrics::default()));
    let shards = Shards::start(Arc::clone(&market), 1, 0).unwrap();
    let mut f = Fixture {
        publisher: Publisher::new(Arc::clone(&market), writer),
        normalizer: Normalizer::new(table),
        market,
        shards,
    };
    for i in 0..symbols {
        f.quote(i, 1);
    }
    f
}

impl Fixture {
    /// Publishes a quote of symbol `Si`, and waits for the shard's pass
    /// over it: one entry per pass.
    fn quote(&mut self, i: usize, bid: i64) {
        let scale = self.normalizer.scale(&format!("S{i}"), b"1", b"1").unwrap();
        assert_eq!(scale.id as usize, i, "ids in order of the names");
        let m = 10i64.pow(u32::from(scale.price_decimals));
        self.publisher.publish(Update {
            symbol: scale.id,
            kind: UpdateKind::Quote {
                bid_px: bid * m,
                bid_sz: Some(m),
                ask_px: (bid + 1) * m,
                ask_sz: Some(m),
            },
            exchange_ts_ns: 0,
            receive_ts_ns: 1,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        });
        self.market.wakeup.notify();
        self.shards.settle();
    }

    /// A connection subscribed to `symbols`, handed to the shard.
    fn link(&self, symbols: &[usize]) -> (Arc<Link>, Arc<Sink>) {
        let sink = Arc::new(Sink::default());
        let link = self.link_to(symbols, Arc::clone(&sink) as Arc<dyn Socket>);
        (link, sink)
    }

    /// A connection subscribed to `symbols` writing to `socket`.
    fn link_to(&self, symbols: &[usize], socket: Arc<dyn Socket>) -> Arc<Link> {
        let limits = FanoutLimits {
            max_outbox_bytes: 1 << 20,
            // Far less than what the tests publish between a link's
            // symbols: reading past them one by one would conflate.
            max_lag_updates: 8,
            max_subscriptions: 1000,
        };
        let sub = Subscriber::new(Arc::clone(&self.market), Format::Json, limits);
        let link = Link::new(Pipe::new(sub), Some(socket));
        subscribe(&link, symbols);
        self.shards.add(&link);
        link
    }
}

/// Subscribes `link` to `symbols` as its task would: under the pipe's
/// lock, then a nudge.
fn subscribe(link: &Arc<Link>, symbols: &[usize]) {
    subscribe_only(link, symbols);
    link.nudge();
}

/// Subscribes `link` to `symbols`, with no nudge yet.
fn subscribe_only(link: &Arc<Link>, symbols: &[usize]) {
    let list: Vec<String> = symbols.iter().map(|i| format!("\"S{i}\"")).collect();
    let text = format!(r#"{{"op":"subscribe","symbols":[{}]}}"#, list.join(","));
    let req = wire::parse_request(text.as_bytes(), 1000).unwrap();
    {
        let mut pipe = link.lock();
        let pipe = &mut *pipe;
        pipe.sub.handle(req, &mut pipe.outbox);
    }
}

/// The (type, symbol, bid) of each JSON message written to `sink`, once
/// the last one is `until` (waits for the shard, at most 10 s).
fn received(sink: &Sink, until: (&str, &str, i64)) -> Vec<(String, String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msgs = parse(&sink.0.lock().unwrap());
        let last = msgs.last().map(|(t, s, b)| (t.as_str(), s.as_str(), *b));
        if last == Some(until) || Instant::now() > deadline {
            return msgs;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn parse(mut rest: &[u8]) -> Vec<(String, String, i64)> {
    let mut msgs = Vec::new();
    while !rest.is_empty() {
        let h = wire::frame::parse(rest).expect("whole frames");
        let (start, len) = (h.header_len, h.payload_len as usize);
        let v: serde_json::Value = serde_json::from_slice(&rest[start..start + len]).unwrap();
        let bid = v["bid"]
            .as_str()
            .map_or(0, |s| s.parse::<f64>().unwrap() as i64);
        msgs.push((
            v["type"].as_str().unwrap().to_owned(),
            v["symbol"].as_str().unwrap_or("").to_owned(),
            bid,
        ));
        rest = &rest[start + len..];
    }
    msgs
}

fn quotes(msgs: &[(String, String, i64)]) -> Vec<(&str, i64)> {
    msgs.iter()
        .filter(|(t, _, _)| t == "quote")
        .map(|(_, s, b)| (s.as_str(), *b))
        .collect()
}

/// TC1: a link passed over for many batches of other symbols gets each
/// update of its own, and is not conflated for having been left behind;
/// TC2: a symbol that shares its folded bit (S0, S1024) costs a visit and
/// sends nothing.
#[test]
fn a_link_passed_over_gets_every_update_of_its_symbol_and_nothing_else() {
    let mut f = fixture(1025);
    let (_link, sink) = f.link(&[0]);
    for round in 2..5 {
        for _ in 0..40 {
            f.quote(1, round);
        }
        f.quote(0, round);
        received(&sink, ("quote", "S0", round));
    }
    assert_eq!(f.market.metrics.lapped_readers_total.get(), 0);
    for _ in 0..40 {
        f.quote(1024, 5);
    }
    f.quote(0, 5);
    let msgs = received(&sink, ("quote", "S0", 5));
    assert_eq!(
        quotes(&msgs),
        [("S0", 1), ("S0", 2), ("S0", 3), ("S0", 4), ("S0", 5)],
        "the snapshot, then each update: {msgs:?}"
    );
    assert_eq!(f.market.metrics.lapped_readers_total.get(), 0);
}

/// TC3: a link that subscribes to more is visited for its new symbol's
/// updates; TC4: after a link leaves, the one that takes its place in the
/// shard is still found when nudged; TC5: updates of a new symbol that
/// passes made before the nudge came (with what the shard knew of the
/// link) are not skipped at the next visit.
#[test]
fn a_new_subscription_and_a_moved_link_are_followed() {
    let mut f = fixture(4);
    let (gone, _) = f.link(&[0]);
    let (_keep, keep_sink) = f.link(&[0]);
    let (moved, moved_sink) = f.link(&[0]);
    f.quote(0, 2);
    received(&moved_sink, ("quote", "S0", 2));
    // The first link leaves; the last one takes its place.
    drop(Retire(gone));
    f.quote(0, 3);
    received(&moved_sink, ("quote", "S0", 3));
    // Updates of S1 pass the links over, then `moved` takes S1 too.
    f.quote(1, 2);
    subscribe(&moved, &[1]);
    f.quote(1, 3);
    let msgs = received(&moved_sink, ("quote", "S1", 3));
    assert_eq!(
        quotes(&msgs),
        [("S0", 1), ("S0", 2), ("S0", 3), ("S1", 2), ("S1", 3)],
        "S1's snapshot, then its update: {msgs:?}"
    );
    f.quote(0, 4);
    let msgs = received(&keep_sink, ("quote", "S0", 4));
    assert_eq!(quotes(&msgs), [("S0", 1), ("S0", 2), ("S0", 3), ("S0", 4)]);
    subscribe_only(&moved, &[2]);
    f.quote(2, 2);
    f.quote(0, 5);
    moved.nudge();
    f.quote(1, 4);
    let msgs = received(&moved_sink, ("quote", "S1", 4));
    assert_eq!(
        quotes(&msgs)[5..],
        [("S0", 4), ("S2", 1), ("S2", 2), ("S0", 5), ("S1", 4)],
        "S2's snapshot and update among the others: {msgs:?}"
    );
}

/// TC6: a link held back to its task (its socket would block) is visited
/// for an update of its symbol that it cannot take while held; passes over
/// other symbols follow; once its task releases it, it still gets that
/// update: the visit while held left its cursor short of that pass, so the
/// next visit does not move it past the passes in between.
#[test]
fn a_link_released_after_a_hold_gets_what_came_while_it_was_held() {
    let mut f = fixture(4);
    let valve = Arc::new(Valve::default());
    let link = f.link_to(&[0], Arc::clone(&valve) as Arc<dyn Socket>);
    f.quote(0, 2);
    received(&valve.sink, ("quote", "S0", 2));
    valve.blocked.store(true, Ordering::SeqCst);
    f.quote(0, 3);
    assert!(link.lock().held, "the write would block: held back");
    f.quote(0, 4);
    for _ in 0..3 {
        f.quote(1, 5);
    }
    // The task's part: write what is queued, release, nudge.
    valve.blocked.store(false, Ordering::SeqCst);
    {
        let mut pipe = link.lock();
        let queued = pipe.outbox.concat();
        valve.sink.0.lock().unwrap().extend_from_slice(&queued);
        pipe.discard();
        pipe.held = false;
    }
    link.nudge();
    f.quote(0, 6);
    let msgs = received(&valve.sink, ("quote", "S0", 6));
    assert_eq!(
        quotes(&msgs),
        [("S0", 1), ("S0", 2), ("S0", 3), ("S0", 4), ("S0", 6)],
        "S0 4 came while it was held: {msgs:?}"
    );
}

/// A socket that takes everything and records which thread wrote.
#[derive(Default)]
struct Witness {
    sink: Sink,
    writers: Mutex<Vec<std::thread::ThreadId>>,
}

impl Socket for Witness {
    fn try_writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writers
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        self.sink.try_writev(bufs)
    }
}

/// TC7: the publisher makes a pass that visits few links itself
/// (`Wakeup::notify` calls from this test's thread); TC8: a pass that
/// would visit more than its budget, after passes that visited 5, is
/// left to the writer, whole: every link gets the update, none of it
/// written by the publisher.
#[test]
fn the_publisher_makes_small_passes_and_leaves_large_ones_to_the_writer() {
    let mut f = fixture(2);
    let many: Vec<_> = (0..200)
        .map(|_| {
            let w = Arc::new(Witness::default());
            f.link_to(&[0], Arc::clone(&w) as Arc<dyn Socket>);
            w
        })
        .collect();
    let few: Vec<_> = (0..5)
        .map(|_| {
            let w = Arc::new(Witness::default());
            f.link_to(&[1], Arc::clone(&w) as Arc<dyn Socket>);
            w
        })
        .collect();
    let me = std::thread::current().id();
    for bid in 2..22 {
        f.quote(1, bid);
    }
    for w in &few {
        received(&w.sink, ("quote", "S1", 21));
    }
    let inline = few[0]
        .writers
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t == me)
        .count();
    assert!(inline > 0, "some of 20 passes over 5 links made inline");
    for w in &many {
        received(&w.sink, ("quote", "S0", 1));
        w.writers.lock().unwrap().clear();
    }
    // The last pass visited the 5: the publisher will try the next.
    assert_eq!(f.shards.hints(), [5]);
    f.quote(0, 2);
    for w in &many {
        let msgs = received(&w.sink, ("quote", "S0", 2));
        assert_eq!(quotes(&msgs), [("S0", 1), ("S0", 2)]);
        let writers = w.writers.lock().unwrap();
        assert!(
            writers.iter().all(|t| *t != me),
            "by the writer: {writers:?}"
        );
    }
}
