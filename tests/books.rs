//! Order books rebuilt from real Binance captures (../shared/feeds-real),
//! checked level by level against an independent reference book built here
//! from the raw file, and against the venue's own best bid and offer.
//!
//! The reference follows Binance's documented sync (buffer diffs, take the
//! REST snapshot, drop what it covers, check the first diff straddles it,
//! then check continuity) with its own parsing (serde_json, decimal strings
//! split by hand) and its own book (a BTreeMap per side). tickwire's side
//! is what its reader emits, applied to `tickwire::book::Book`, the
//! structure the publisher serves from.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tickwire::book::Book;
use tickwire::config::ServeConfig;
use tickwire::feed::{read_all, FeedSpec};
use tickwire::symbols::{Normalizer, SymbolTable};
use tickwire::update::{level_flags, BookSide, SymbolStatus, Update, UpdateKind};

mod common;

use common::*;

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/feeds-real")
        .join(name)
}

/// A decimal string as an exactly ordered key: (whole part, fraction
/// padded to 18 digits).
type Key = (i64, u64);

fn key(s: &str) -> Key {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= 18, "{s}");
    let padded = format!("{frac:0<18}");
    (whole.parse().unwrap(), padded.parse().unwrap())
}

#[derive(Default)]
struct RefBook {
    bids: BTreeMap<Key, Key>,
    asks: BTreeMap<Key, Key>,
}

impl RefBook {
    fn set(&mut self, bids: &Value, asks: &Value) {
        for (side, list) in [(&mut self.bids, bids), (&mut self.asks, asks)] {
            for l in list.as_array().unwrap() {
                let (px, sz) = (key(l[0].as_str().unwrap()), key(l[1].as_str().unwrap()));
                if sz == (0, 0) {
                    side.remove(&px);
                } else {
                    side.insert(px, sz);
                }
            }
        }
    }

    fn best(&self) -> [Key; 4] {
        let (b, bs) = self.bids.iter().next_back().unwrap();
        let (a, asz) = self.asks.iter().next().unwrap();
        [*b, *bs, *a, *asz]
    }
}

/// tickwire's side: the reader's updates, applied to a `Book` per symbol
/// one event at a time.
struct Tickwire {
    updates: std::vec::IntoIter<Update>,
    table: std::sync::Arc<SymbolTable>,
    books: HashMap<u32, Book>,
    /// The symbol of the last event.
    last: u32,
    statuses: Vec<SymbolStatus>,
    events: usize,
}

impl Tickwire {
    fn read(path: &Path) -> Tickwire {
        let table = SymbolTable::new();
        let mut normalizer = Normalizer::new(table.clone());
        let updates = read_all(&FeedSpec::File(path.to_path_buf()), &mut normalizer).unwrap();
        Tickwire {
            updates: updates.into_iter(),
            table,
            books: HashMap::new(),
            last: 0,
            statuses: Vec::new(),
            events: 0,
        }
    }

    /// Applies the next book event; false at the end. Returns the
    /// symbol's decimals.
    fn next_event(&mut self) -> Option<(u8, u8)> {
        for u in self.updates.by_ref() {
            match u.kind {
                UpdateKind::Level {
                    side,
                    px,
                    sz,
                    flags,
                } => {
                    let book = self.books.entry(u.symbol).or_default();
                    if flags & level_flags::RESET != 0 {
                        book.clear();
                    }
                    book.apply(side, px, sz);
                    if flags & level_flags::LAST != 0 {
                        self.events += 1;
                        self.last = u.symbol;
                        let def = self.table.get(u.symbol).unwrap();
                        return Some((def.price_decimals, def.size_decimals));
                    }
                }
                UpdateKind::Status(s) => self.statuses.push(s),
                _ => {}
            }
        }
        None
    }

    /// The name of the last event's symbol.
    fn symbol(&self) -> String {
        self.table.get(self.last).unwrap().name.to_string()
    }

    /// Compares the last event's book, level by level, with the
    /// reference's; returns the number of levels compared.
    fn compare(&self, (pd, sd): (u8, u8), r: &RefBook, what: &str) -> usize {
        let book = &self.books[&self.last];
        // The scales once per call, not per level: in a debug build `pow`
        // was a seventh of this test's time.
        let scale = |d: u8| (10i64.pow(u32::from(d)), 10u64.pow(18 - u32::from(d)));
        let (ps, ss) = (scale(pd), scale(sd));
        let k = |m: i64, (p, f): (i64, u64)| (m / p, (m % p) as u64 * f);
        let mut n = 0;
        for (side, want) in [
            (BookSide::Bid, r.bids.iter().rev().collect::<Vec<_>>()),
            (BookSide::Ask, r.asks.iter().collect::<Vec<_>>()),
        ] {
            assert_eq!(book.len(side), want.len(), "{what}: {side:?} levels");
            for (i, ((px, sz), (wp, ws))) in book.side(side).zip(want).enumerate() {
                assert_eq!(
                    (k(px, ps), k(sz, ss)),
                    (*wp, *ws),
                    "{what}: {side:?} level {i}"
                );
                n += 1;
            }
        }
        n
    }
}

/// Counts from one file.
#[derive(Debug, Default)]
struct Counts {
    events: usize,
    levels: usize,
    tickers_matched: usize,
}

/// Reads the raw capture with the reference sync, and at each book state
/// it reaches, checks tickwire's next event against it.
fn check_file(path: &Path) -> (Counts, Vec<SymbolStatus>) {
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut tw = Tickwire::read(path);
    let mut counts = Counts::default();
    let mut book = RefBook::default();
    let mut buffered: Vec<Value> = Vec::new();
    // (previous u, whether the next diff is the first after the snapshot)
    let mut synced: Option<(u64, bool)> = None;
    // Book states by u, and bookTickers by u, matched at the end.
    let mut bests: HashMap<u64, [Key; 4]> = HashMap::new();
    let mut tickers: HashMap<u64, [Key; 4]> = HashMap::new();
    let mut step = |u: u64, book: &RefBook, tw: &mut Tickwire, counts: &mut Counts| {
        let what = format!("{}: the book at u={u}", path.display());
        let decimals = tw
            .next_event()
            .unwrap_or_else(|| panic!("{what}: tickwire has no event"));
        counts.levels += tw.compare(decimals, book, &what);
        counts.events += 1;
        if !book.bids.is_empty() && !book.asks.is_empty() {
            bests.insert(u, book.best());
        }
    };
    let apply = |d: &Value, synced: &mut Option<(u64, bool)>, book: &mut RefBook| -> Option<u64> {
        let (last, first) = (*synced)?;
        let (first_id, u) = (d["U"].as_u64().unwrap(), d["u"].as_u64().unwrap());
        let pu = d.get("pu").and_then(Value::as_u64);
        let ok = match (first, pu) {
            (true, Some(_)) if u < last => return None,
            (true, None) if u <= last => return None,
            (true, Some(_)) => first_id <= last && last <= u,
            (true, None) => first_id <= last + 1 && last < u,
            (false, Some(pu)) => pu == last,
            (false, None) => first_id == last + 1,
        };
        assert!(
            ok,
            "a gap at u={u} in the reference; these captures have none"
        );
        *synced = Some((u, false));
        book.set(&d["b"], &d["a"]);
        // A diff with no levels is no book event.
        let empty = d["b"].as_array().unwrap().is_empty() && d["a"].as_array().unwrap().is_empty();
        (!empty).then_some(u)
    };
    for line in reader.lines() {
        let line = line.unwrap();
        let json = &line[line.find('{').unwrap()..];
        let v: Value = serde_json::from_str(json).unwrap();
        let data = v.get("data").unwrap_or(&v);
        if data.get("lastUpdateId").is_some() {
            book = RefBook::default();
            book.set(&data["bids"], &data["asks"]);
            let l = data["lastUpdateId"].as_u64().unwrap();
            synced = Some((l, true));
            step(l, &book, &mut tw, &mut counts);
            for d in std::mem::take(&mut buffered) {
                if let Some(u) = apply(&d, &mut synced, &mut book) {
                    step(u, &book, &mut tw, &mut counts);
                }
            }
        } else if data["e"] == "depthUpdate" {
            if synced.is_none() {
                buffered.push(data.clone());
            } else if let Some(u) = apply(data, &mut synced, &mut book) {
                step(u, &book, &mut tw, &mut counts);
            }
        } else if data.get("A").is_some() && data.get("u").is_some() {
            let k = |f: &str| key(data[f].as_str().unwrap());
            tickers.insert(
                data["u"].as_u64().unwrap(),
                [k("b"), k("B"), k("a"), k("A")],
            );
        }
    }
    assert!(
        tw.next_event().is_none(),
        "{}: tickwire has more events",
        path.display()
    );
    for (u, best) in &bests {
        if let Some(t) = tickers.get(u) {
            assert_eq!(best, t, "{}: bookTicker u={u}", path.display());
            counts.tickers_matched += 1;
        }
    }
    (counts, tw.statuses)
}

#[test]
fn books_from_real_binance_captures_match_an_independent_reference_at_every_step() {
    // (file, whether its bookTicker shares the depth stream's `u`)
    let files = [
        ("binance-spot-BTCUSDT-20240808-hftbacktest.jsonl.gz", false),
        ("binance-spot-ETHUSDT-20240808-hftbacktest.jsonl.gz", false),
        ("binance-usdm-BTCUSDT-20240808-hftbacktest.jsonl.gz", true),
        (
            "binance-coinm-BTCUSD_PERP-20240808-hftbacktest.jsonl.gz",
            true,
        ),
    ];
    // One thread per file: the check is CPU-bound and the files apart.
    std::thread::scope(|scope| {
        for (name, shared_ids) in files {
            scope.spawn(move || {
                // TC0: every book state equal level by level, no gaps,
                // nothing more or less on either side.
                let (counts, statuses) = check_file(&real(name));
                assert!(statuses.is_empty(), "{name}: {statuses:?}");
                assert!(counts.events > 1000, "{name}: {counts:?}");
                // TC1: after the diff with u = X, the best bid and ask are
                // the bookTicker's with u = X (futures number both streams
                // alike).
                if shared_ids {
                    assert!(counts.tickers_matched > 100, "{name}: {counts:?}");
                }
                eprintln!(
                    "{name}: {} book states, {} levels compared, 0 mismatches, {} bookTickers matched",
                    counts.events, counts.levels, counts.tickers_matched
                );
            });
        }
    });
}

#[test]
fn coinbase_advanced_trade_books_match_an_independent_reference_at_every_step() {
    let path = real("coinbase-advtrade-ws-BTC-ETH-USD-cryptofeed.jsonl.zst");
    let text = zstd::decode_all(std::fs::File::open(&path).unwrap()).unwrap();
    let mut tw = Tickwire::read(&path);
    let mut books: HashMap<String, RefBook> = HashMap::new();
    let (mut events, mut levels, mut last_seq) = (0, 0, None);
    for line in std::str::from_utf8(&text).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        if record["t"] != "recv" {
            continue;
        }
        let msg: Value = serde_json::from_str(record["data"].as_str().unwrap()).unwrap();
        // The capture has no gap in the connection's numbering.
        let seq = msg["sequence_num"].as_u64().unwrap();
        assert!(last_seq.is_none_or(|l: u64| seq == l + 1), "a gap at {seq}");
        last_seq = Some(seq);
        if msg["channel"] != "l2_data" {
            continue;
        }
        for event in msg["events"].as_array().unwrap() {
            let product = event["product_id"].as_str().unwrap().to_owned();
            let updates = event["updates"].as_array().unwrap();
            let snapshot = event["type"] == "snapshot";
            if !snapshot && (updates.is_empty() || !books.contains_key(&product)) {
                continue;
            }
            let book = books.entry(product.clone()).or_default();
            if snapshot {
                *book = RefBook::default();
            }
            for u in updates {
                let side = match u["side"].as_str().unwrap() {
                    "bid" => &mut book.bids,
                    "offer" => &mut book.asks,
                    other => panic!("side {other}"),
                };
                let (px, sz) = (
                    key(u["price_level"].as_str().unwrap()),
                    key(u["new_quantity"].as_str().unwrap()),
                );
                if sz == (0, 0) {
                    side.remove(&px);
                } else {
                    side.insert(px, sz);
                }
            }
            let decimals = tw.next_event().expect("tickwire has the event");
            assert_eq!(tw.symbol(), product);
            levels += tw.compare(decimals, book, &format!("{product} at {seq}"));
            events += 1;
        }
    }
    assert!(tw.next_event().is_none(), "tickwire has more events");
    assert!(tw.statuses.is_empty(), "{:?}", tw.statuses);
    assert!(events > 700, "{events} events");
    eprintln!("coinbase l2_data: {events} book events, {levels} levels compared, 0 mismatches");
}

#[test]
fn tardis_books_are_the_rows_they_come_from() {
    // TC0: book_snapshot_25: each row is the whole top 25, read from its
    // own columns here.
    let path = real("tardis-binance-futures-book_snapshot_25-BTCUSDT-20200901-tiny.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut tw = Tickwire::read(&path);
    let mut rows = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let mut book = RefBook::default();
        for i in 0..25 {
            for (side, s) in [(&mut book.bids, "bids"), (&mut book.asks, "asks")] {
                let px = f[col(&format!("{s}[{i}].price"))];
                let sz = f[col(&format!("{s}[{i}].amount"))];
                side.insert(key(px), key(sz));
            }
        }
        let decimals = tw.next_event().unwrap();
        assert_eq!(tw.compare(decimals, &book, &format!("row {rows}")), 50);
        rows += 1;
    }
    assert_eq!(rows, 10);
    assert!(tw.next_event().is_none());
    // TC1: incremental_book_L2: the 15 snapshot rows of one instant are
    // one book event of 15 asks.
    let path = real("tardis-deribit-incremental_book_L2-BTC-PERPETUAL-20200401-tiny.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut book = RefBook::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!((f[4], f[5]), ("true", "ask"));
        book.asks.insert(key(f[6]), key(f[7]));
    }
    let mut tw = Tickwire::read(&path);
    let decimals = tw.next_event().unwrap();
    assert_eq!(tw.compare(decimals, &book, "deribit"), 15);
    assert!(tw.next_event().is_none());
}

#[test]
fn a_capture_without_a_snapshot_serves_no_book() {
    // TC0: file 5 has diffs and no REST snapshot: nothing to build on.
    let mut tw = Tickwire::read(&real("binance-spot-BTCUSDT-20230405-hftbacktest.jsonl"));
    assert!(tw.next_event().is_none());
    assert!(tw.statuses.is_empty());
}

type State = [Vec<(String, String)>; 2];

/// The reference's book states in order, each as its top `depth` levels
/// per side (a state the same as the one before left out), and the whole
/// final book; levels as decimal strings without trailing zeros.
fn reference_tops(path: &Path, depth: usize) -> (Vec<State>, State) {
    fn text((whole, frac): Key) -> String {
        let frac = format!("{frac:018}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{frac}")
        }
    }
    let mut tops = Vec::new();
    let mut book = RefBook::default();
    let mut synced: Option<u64> = None;
    let mut buffered: Vec<Value> = Vec::new();
    let text_file = {
        let file = std::fs::File::open(path).unwrap();
        BufReader::new(flate2::read::MultiGzDecoder::new(file))
    };
    let side = |it: &mut dyn Iterator<Item = (&Key, &Key)>, depth: usize| {
        it.take(depth)
            .map(|(p, s)| (text(*p), text(*s)))
            .collect::<Vec<_>>()
    };
    let mut top = |book: &RefBook| {
        let state = [
            side(&mut book.bids.iter().rev(), depth),
            side(&mut book.asks.iter(), depth),
        ];
        if tops.last() != Some(&state) {
            tops.push(state);
        }
    };
    // USD-M only: futures rules, and the capture has no gap.
    let apply = |d: &Value, last: &mut u64, first: &mut bool, book: &mut RefBook| {
        let u = d["u"].as_u64().unwrap();
        if *first && u < *last {
            return false;
        }
        *first = false;
        *last = u;
        book.set(&d["b"], &d["a"]);
        true
    };
    let mut first = true;
    let mut last = 0;
    for line in text_file.lines() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
        let data = v.get("data").unwrap_or(&v);
        if data.get("lastUpdateId").is_some() {
            book.set(&data["bids"], &data["asks"]);
            last = data["lastUpdateId"].as_u64().unwrap();
            synced = Some(last);
            top(&book);
            for d in std::mem::take(&mut buffered) {
                if apply(&d, &mut last, &mut first, &mut book) {
                    top(&book);
                }
            }
        } else if data["e"] == "depthUpdate" {
            if synced.is_none() {
                buffered.push(data.clone());
            } else if apply(data, &mut last, &mut first, &mut book) {
                top(&book);
            }
        }
    }
    let whole = [
        side(&mut book.bids.iter().rev(), usize::MAX),
        side(&mut book.asks.iter(), usize::MAX),
    ];
    (tops, whole)
}

/// What a client keeps of one symbol's book.
#[derive(Default)]
struct LocalBook {
    bids: BTreeMap<Key, String>,
    asks: BTreeMap<Key, String>,
    book_seq: u64,
    /// The `book_seq` of the first snapshot.
    first: u64,
    snapshots: usize,
    changes: usize,
}

impl LocalBook {
    /// Applies a `book` channel message: a snapshot replaces, a change
    /// must be the next `book_seq`.
    fn apply(
        &mut self,
        book_seq: u64,
        snapshot: bool,
        bids: &[(String, String)],
        asks: &[(String, String)],
    ) {
        if snapshot {
            assert!(book_seq >= self.book_seq, "an older book after a newer one");
            self.bids.clear();
            self.asks.clear();
            if self.snapshots == 0 {
                self.first = book_seq;
            }
            self.snapshots += 1;
        } else {
            assert_eq!(book_seq, self.book_seq + 1, "a change out of sequence");
            self.changes += 1;
        }
        self.book_seq = book_seq;
        for (side, levels) in [(&mut self.bids, bids), (&mut self.asks, asks)] {
            for (p, z) in levels {
                if key(z) == (0, 0) {
                    side.remove(&key(p));
                } else {
                    side.insert(key(p), z.clone());
                }
            }
        }
    }

    fn top(&self, depth: usize) -> [Vec<(Key, Key)>; 2] {
        [
            self.bids
                .iter()
                .rev()
                .take(depth)
                .map(|(p, z)| (*p, key(z)))
                .collect(),
            self.asks
                .iter()
                .take(depth)
                .map(|(p, z)| (*p, key(z)))
                .collect(),
        ]
    }
}

fn keyed(state: &[Vec<(String, String)>; 2]) -> [Vec<(Key, Key)>; 2] {
    let side = |l: &Vec<(String, String)>| l.iter().map(|(p, z)| (key(p), key(z))).collect();
    [side(&state[0]), side(&state[1])]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_channels_serve_a_real_capture_exactly_to_binary_and_json_clients() {
    let path = real("binance-usdm-BTCUSDT-20240808-hftbacktest.jsonl.gz");
    let (tops10, last) = reference_tops(&path, 10);
    // A ring that holds the whole replay and a lag bound to match: no
    // client is conflated, so every change must arrive.
    let ring = 1 << 18;
    let server = start(ServeConfig {
        feeds: vec![path.to_string_lossy().into_owned()],
        speed: "max".into(),
        min_subscribers: 2,
        ring_capacity: ring,
        max_lag_updates: ring as u64 - 1,
        ..ServeConfig::default()
    })
    .await;
    // TC0: JSON, the whole book; binary, the top 10 and the quotes.
    let mut whole = Client::connect(server.addr, "tickwire.v1.json").await;
    whole
        .send(r#"{"op":"subscribe","symbols":["*"],"channels":["book"],"id":1}"#)
        .await;
    // An unknown channel: refused with its code, the connection kept.
    let mut top = Client::connect(server.addr, "tickwire.v1").await;
    top.send(r#"{"op":"subscribe","symbols":["*"],"channels":["book.11"],"id":2}"#)
        .await;
    let refused = top.next_control().await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_u64()),
        (Some("error"), Some(4007))
    );
    top.send(r#"{"op":"subscribe","symbols":["*"],"channels":["book.10","quotes"],"id":3}"#)
        .await;
    let ack = whole.next_control().await;
    assert_eq!(ack["channels"], serde_json::json!(["book"]), "{ack}");
    let ack = top.next_control().await;
    assert_eq!(
        ack["channels"],
        serde_json::json!(["quotes", "book.10"]),
        "{ack}"
    );
    feeds_finished(server.addr).await;

    // TC1: the whole book: every change in sequence (or a newer snapshot
    // where the client fell behind), ending equal to the reference's (read
    // until it is: the feed reports finished before the publisher has
    // published its last events).
    let mut local = LocalBook::default();
    let final_book = keyed(&last);
    let size = final_book[0].len() + final_book[1].len();
    // The sizes first: the whole compare only when they agree.
    while local.bids.len() + local.asks.len() != size || local.top(usize::MAX) != final_book {
        match whole.next().await {
            Msg::Book {
                depth: 0,
                book_seq,
                snapshot,
                bids,
                asks,
                ..
            } => {
                local.apply(book_seq, snapshot, &bids, &asks);
            }
            Msg::Book { .. } | Msg::Quote { .. } | Msg::Trade { .. } => {
                panic!("a message of a channel not subscribed")
            }
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    let events = metric(
        &metrics_text(server.addr).await,
        "tickwire_book_updates_total",
    );
    assert!(events > 6000, "{events} book events");
    assert_eq!(local.book_seq, events, "the last event");
    // One snapshot (of the book as it was when `*` took the symbol: the
    // feed may have published a few events by then), then every change.
    assert_eq!(
        (local.snapshots, local.changes as u64),
        (1, events - local.first)
    );
    eprintln!(
        "book: {} snapshots, {} changes, final {} bids {} asks",
        local.snapshots,
        local.changes,
        last[0].len(),
        last[1].len()
    );

    // TC2: the top 10: each message is a state of the reference book, in
    // the reference's order (never an older one), the last one the final.
    let mut at = 0;
    let (mut tops, mut quotes, mut book_seq) = (0, 0, 0);
    // Until the final top 10: the last events may not change it.
    while tops == 0 || at + 1 < tops10.len() {
        match top.next().await {
            Msg::Book {
                depth,
                book_seq: n,
                snapshot,
                bids,
                asks,
                ..
            } => {
                assert_eq!((depth, snapshot), (10, true));
                assert!(n > book_seq, "book_seq went from {book_seq} to {n}");
                book_seq = n;
                let got = keyed(&[bids, asks]);
                let before = at;
                while at < tops10.len() && keyed(&tops10[at]) != got {
                    at += 1;
                }
                assert!(
                    at < tops10.len(),
                    "book.10 #{tops}: not a later state of the reference"
                );
                // The first is the book as `*` took the symbol; each one
                // after it the next state of the top 10, none skipped or
                // repeated (nothing is conflated here).
                if tops > 0 {
                    assert_eq!(
                        at,
                        before + 1,
                        "book.10 #{tops}: skipped or repeated a state"
                    );
                }
                tops += 1;
            }
            Msg::Quote { .. } => quotes += 1,
            Msg::Trade { .. } => panic!("a trade without the trades channel"),
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    assert_eq!(at, tops10.len() - 1, "the last book.10 is the final top 10");
    assert!(quotes > 0 && tops > 100, "{quotes} quotes, {tops} book.10");
    eprintln!("book.10: {tops} messages, {quotes} quotes between them");
    // TC3: encoded once per event and watched channel, not per client.
    let m = metrics_text(server.addr).await;
    assert!(metric(&m, "tickwire_book_frames_encoded_total") <= 2 * events);
}

/// The states a file's books pass through: per event, a hash of the
/// symbol's whole book (consecutive equal states once: a recorder keeps
/// only events that changed the book), and the final books by name.
/// Each symbol's final book: bids then asks, best first.
type Finals = BTreeMap<String, Vec<(i64, i64)>>;

fn book_states(path: &Path) -> (Vec<u64>, Finals) {
    use std::hash::{Hash, Hasher};
    let mut tw = Tickwire::read(path);
    let mut hashes: Vec<u64> = Vec::new();
    while tw.next_event().is_some() {
        let book = &tw.books[&tw.last];
        let mut h = std::collections::hash_map::DefaultHasher::new();
        tw.symbol().hash(&mut h);
        for side in [BookSide::Bid, BookSide::Ask] {
            book.side(side).collect::<Vec<_>>().hash(&mut h);
        }
        let h = h.finish();
        if hashes.last() != Some(&h) {
            hashes.push(h);
        }
    }
    let finals = tw
        .books
        .iter()
        .map(|(id, b)| {
            let name = tw.table.get(*id).unwrap().name.to_string();
            let mut levels: Vec<(i64, i64)> = b.side(BookSide::Bid).collect();
            levels.extend(b.side(BookSide::Ask));
            (name, levels)
        })
        .collect();
    (hashes, finals)
}

#[test]
fn books_survive_a_tickwire_log_and_tardis_csv_both_ways() {
    let dir = TempDir::new("books-convert");
    let capture = real("binance-spot-ETHUSDT-20240808-hftbacktest.jsonl.gz");
    let (states, finals) = book_states(&capture);
    assert!(states.len() > 3000);
    // TC0: capture -> log: every book state, in order.
    let log = dir.path("eth.twlog");
    tickwire::convert::convert(&capture, &log, "binance").unwrap();
    assert_eq!(book_states(&log), (states.clone(), finals.clone()));
    // TC1: log -> Tardis incremental_book_L2 CSV (beside quotes and
    // trades) -> log: the same final book (rows of one microsecond are one
    // message in Tardis CSV, so states may merge on the way).
    let csv = dir.path("eth.csv");
    let out = tickwire::convert::convert(&log, &csv, "binance").unwrap();
    let book_csv = dir.path("eth.incremental_book_L2.csv");
    assert!(out.outputs.contains(&book_csv), "{:?}", out.outputs);
    let head = std::fs::read_to_string(&book_csv).unwrap();
    assert!(head.starts_with(
        "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\nbinance,ETHUSDT,"
    ));
    let (csv_states, csv_finals) = book_states(&book_csv);
    assert_eq!(csv_finals, finals);
    assert!(csv_states.len() > 3000 && csv_states.len() <= states.len());
    let back = dir.path("back.twlog");
    tickwire::convert::convert(&book_csv, &back, "binance").unwrap();
    assert_eq!(book_states(&back).1, finals);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickwire_record_keeps_the_books_it_publishes_and_a_log_replay_serves_them() {
    // The binary: `record` runs the publisher, whose book events go to the
    // log; read back, the log's books pass through the capture's states.
    let dir = TempDir::new("books-record");
    let capture = real("binance-spot-ETHUSDT-20240808-hftbacktest.jsonl.gz");
    let log = dir.path("eth.twlog");
    binary::record_max(&capture, &log);
    let (states, finals) = book_states(&capture);
    assert_eq!(book_states(&log), (states, finals.clone()));
    // TC1: the log replayed through the server: a client of the full book
    // ends with the capture's final book, every change in sequence.
    let ring = 1 << 18;
    let server = start(ServeConfig {
        feeds: vec![log.to_string_lossy().into_owned()],
        speed: "max".into(),
        min_subscribers: 1,
        ring_capacity: ring,
        max_lag_updates: ring as u64 - 1,
        ..ServeConfig::default()
    })
    .await;
    let mut client = Client::connect(server.addr, "tickwire.v1").await;
    client
        .send(r#"{"op":"subscribe","symbols":["*"],"channels":["book"]}"#)
        .await;
    let k = |m: i64, d: u8| {
        let p = 10i64.pow(u32::from(d));
        (m / p, (m % p) as u64 * 10u64.pow(18 - u32::from(d)))
    };
    // Until the client's book is the capture's final one (the feed reports
    // finished before the publisher has published its last events), every
    // change in sequence on the way.
    let mut local = LocalBook::default();
    let mut want: Option<Vec<(Key, Key)>> = None;
    loop {
        if let Some(want) = &want {
            if local.bids.len() + local.asks.len() == want.len() {
                let [bids, asks] = local.top(usize::MAX);
                if bids.into_iter().chain(asks).eq(want.iter().copied()) {
                    break;
                }
            }
        }
        match client.next().await {
            Msg::Symbol {
                price_decimals,
                size_decimals,
                ..
            } => {
                let (pd, sd) = (price_decimals, size_decimals);
                want = Some(
                    finals["ETHUSDT"]
                        .iter()
                        .map(|&(p, q)| (k(p, pd), k(q, sd)))
                        .collect(),
                );
            }
            Msg::Book {
                book_seq,
                snapshot,
                bids,
                asks,
                ..
            } => local.apply(book_seq, snapshot, &bids, &asks),
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    assert_eq!(local.snapshots, 1);
    server.stop().await;
}
