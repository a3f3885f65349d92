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
use tickwire::feed::{read_all, FeedSpec};
use tickwire::symbols::{Normalizer, SymbolTable};
use tickwire::update::{level_flags, BookSide, SymbolStatus, Update, UpdateKind};

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

/// tickwire's side: the reader's updates, applied to `Book` one event at a
/// time.
struct Tickwire {
    updates: std::vec::IntoIter<Update>,
    table: std::sync::Arc<SymbolTable>,
    book: Book,
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
            book: Book::default(),
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
                    if flags & level_flags::RESET != 0 {
                        self.book.clear();
                    }
                    self.book.apply(side, px, sz);
                    if flags & level_flags::LAST != 0 {
                        self.events += 1;
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

    /// Compares the whole book, level by level, with the reference's;
    /// returns the number of levels compared.
    fn compare(&self, (pd, sd): (u8, u8), r: &RefBook, what: &str) -> usize {
        let k = |m: i64, d: u8| {
            let p = 10i64.pow(u32::from(d));
            (m / p, (m % p) as u64 * 10u64.pow(18 - u32::from(d)))
        };
        let mut n = 0;
        for (side, want) in [
            (BookSide::Bid, r.bids.iter().rev().collect::<Vec<_>>()),
            (BookSide::Ask, r.asks.iter().collect::<Vec<_>>()),
        ] {
            assert_eq!(self.book.len(side), want.len(), "{what}: {side:?} levels");
            for (i, ((px, sz), (wp, ws))) in self.book.side(side).zip(want).enumerate() {
                assert_eq!(
                    (k(px, pd), k(sz, sd)),
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
fn a_capture_without_a_snapshot_serves_no_book() {
    // TC0: file 5 has diffs and no REST snapshot: nothing to build on.
    let mut tw = Tickwire::read(&real("binance-spot-BTCUSDT-20230405-hftbacktest.jsonl"));
    assert!(tw.next_event().is_none());
    assert!(tw.statuses.is_empty());
}
