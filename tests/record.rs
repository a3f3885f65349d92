//! Recording and replay of what was served: `tickwire record` on real
//! samples, the log replayed through the real server to a real WebSocket
//! client, torn and corrupt logs, and `tickwire convert` round trips.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    binary, connect, eventually_async, eventually_blocking, http_get, metrics_text, send, start,
    Binary, TempDir,
};
use futures_util::StreamExt;
use tickwire::config::ServeConfig;
use tickwire::decimal::Fixed;
use tickwire::feed::recording::log::{self, Entry, LogSymbol, LogWriter};
use tickwire::feed::{read_all, FeedSpec};
use tickwire::symbols::{Normalizer, SymbolTable};
use tickwire::update::{Sequenced, UpdateKind};
use tickwire::wire::decode::{Decoder, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// Real samples: Binance USD-M (ns capture times, quotes and trades) and
/// Coinbase Advanced Trade (two symbols).
const SAMPLES: [&str; 3] = [
    "binance-usdm-BTCUSDT-20240808-head300.jsonl.gz",
    "coinbase-advtrade-BTC-ETH-USD-head300.jsonl.zst",
    // Quotes whose sizes are unknown, which the log and CSV must keep so.
    "coinbase-sizes-unknown.jsonl",
];

fn tickwire(args: &[&str]) -> String {
    let out = binary::run_within(
        Duration::from_secs(60),
        binary::tickwire().args(args).env("RUST_LOG", "warn"),
    );
    assert!(
        out.status.success(),
        "tickwire {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Records the samples with the real binary, as fast as they go.
fn record_samples(dir: &TempDir) -> PathBuf {
    let out = dir.path("session.twlog");
    let feeds: Vec<String> = SAMPLES.iter().map(|f| format!("{DATA}/{f}")).collect();
    let mut args = vec!["record"];
    for feed in &feeds {
        args.extend(["--feed", feed]);
    }
    args.extend(["--speed", "max", "--out", s(&out)]);
    let said = tickwire(&args);
    assert!(said.contains("updates of 6 symbols"), "{said}");
    out
}

/// One update with its symbol resolved, as both sides are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    name: String,
    decimals: (u8, u8),
    seq: u64,
    symbol_seq: u64,
    exchange_ts: u64,
    receive_ts: u64,
    publish_ts: u64,
    /// Type byte, side byte, then the mantissas (`None`: a size flagged
    /// unknown).
    kind: (u8, u8, Vec<Option<i64>>),
}

fn seen_from_log(entries: &[Entry]) -> Vec<Seen> {
    let mut symbols: HashMap<u32, LogSymbol> = HashMap::new();
    let mut out = Vec::new();
    for e in entries {
        match e {
            Entry::Symbol(sym) => {
                symbols.insert(sym.id, sym.clone());
            }
            // Books are checked in tests/books.rs; the WebSocket clients
            // here take quotes and trades.
            Entry::Update(u) if matches!(u.update.kind, UpdateKind::Level { .. }) => {}
            Entry::Update(u) => {
                let sym = &symbols[&u.update.symbol];
                let kind = match u.update.kind {
                    UpdateKind::Quote {
                        bid_px,
                        bid_sz,
                        ask_px,
                        ask_sz,
                    } => (1, 0, vec![Some(bid_px), bid_sz, Some(ask_px), ask_sz]),
                    UpdateKind::Trade { px, sz, side } => (2, side as u8, vec![Some(px), Some(sz)]),
                    UpdateKind::Status(status) => (4, status as u8, vec![]),
                    UpdateKind::Level { .. } => unreachable!("levels are left out above"),
                };
                out.push(Seen {
                    name: sym.name.clone(),
                    decimals: (sym.price_decimals, sym.size_decimals),
                    seq: u.seq,
                    symbol_seq: u.symbol_seq,
                    exchange_ts: u.update.exchange_ts_ns,
                    receive_ts: u.update.receive_ts_ns,
                    publish_ts: u.publish_ts_ns,
                    kind,
                });
            }
        }
    }
    out
}

fn read_log(path: &Path) -> (Vec<Entry>, log::ReadStats) {
    log::read_entries(&std::fs::read(path).unwrap()).unwrap()
}

/// Subscribes to everything over `tickwire.v1` and decodes `n` updates
/// with the library's decoder (`tickwire::wire::decode`).
async fn collect(addr: std::net::SocketAddr, n: usize) -> Vec<Seen> {
    let mut ws = connect(addr, "tickwire.v1").await;
    send(&mut ws, r#"{"op":"subscribe","symbols":["*"]}"#).await;
    read_updates(&mut ws, n).await
}

/// The next `n` updates on a subscribed connection, decoded.
async fn read_updates(ws: &mut common::Ws, n: usize) -> Vec<Seen> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("an update within 20 s")
            .expect("open")
            .expect("readable");
        let Message::Binary(p) = msg else { continue };
        let decoded = decoder.decode_binary(&p).expect("a tickwire.v1 message");
        let m = |f: Fixed| f.mantissa;
        let kind = match &decoded {
            ServerMessage::Quote(q) => (
                1,
                0,
                vec![
                    Some(m(q.bid)),
                    q.bid_size.map(m),
                    Some(m(q.ask)),
                    q.ask_size.map(m),
                ],
            ),
            ServerMessage::Trade(t) => (2, t.side as u8, vec![Some(m(t.price)), Some(m(t.size))]),
            ServerMessage::Status(s) => (4, s.status as u8, vec![]),
            _ => continue,
        };
        let Some(h) = decoded.update_header() else {
            continue;
        };
        let def = decoder
            .symbol(h.symbol)
            .expect("defined before its updates");
        out.push(Seen {
            name: def.name.clone(),
            decimals: (def.price_decimals, def.size_decimals),
            seq: h.seq,
            symbol_seq: h.symbol_seq,
            exchange_ts: h.exchange_ts_ns,
            receive_ts: h.receive_ts_ns,
            publish_ts: h.publish_ts_ns,
            kind,
        });
    }
    out
}

async fn serve_log(path: &Path, looped: bool) -> tickwire::server::Running {
    start(ServeConfig {
        feeds: vec![s(path).to_owned()],
        speed: "max".into(),
        r#loop: looped,
        ring_capacity: 1 << 16,
        max_lag_updates: (1 << 16) - 1,
        min_subscribers: 1,
        ..ServeConfig::default()
    })
    .await
}

/// Waits until the server's only feed has finished; returns /healthz.
async fn until_finished(addr: std::net::SocketAddr) -> String {
    eventually_async(
        Duration::from_secs(30),
        "the feed did not finish",
        || async {
            let (_, body) = http_get(
                addr,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            if body.contains("\"state\":\"finished\"") {
                Ok(body)
            } else {
                Err(body)
            }
        },
    )
    .await
}

fn feed_metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

/// A source update's side byte, mantissas, exchange and receive times.
type Fields = (u8, Vec<Option<i64>>, u64, u64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_session_replays_identically_to_a_websocket_client() {
    let dir = TempDir::new("replay");
    let path = record_samples(&dir);
    let (entries, stats) = read_log(&path);
    let recorded = seen_from_log(&entries);
    assert_eq!((stats.corrupt, stats.torn_tail_bytes), (0, 0));
    assert!(
        recorded.iter().any(|r| r.kind.2.contains(&None)),
        "the recording has unknown sizes"
    );

    // The recording is what the feeds held: per symbol, the same updates in
    // the same order, numbered 1.. with no gap; globally numbered 1.. too.
    let mut from_sources: HashMap<String, Vec<Fields>> = HashMap::new();
    for sample in SAMPLES {
        let table = SymbolTable::new();
        let mut normalizer = Normalizer::new(table.clone());
        let spec = FeedSpec::File(format!("{DATA}/{sample}").into());
        let updates = read_all(&spec, &mut normalizer).unwrap();
        // Books are checked in tests/books.rs.
        for u in updates
            .into_iter()
            .filter(|u| !matches!(u.kind, UpdateKind::Level { .. }))
        {
            let def = table.get(u.symbol).unwrap();
            let seen = seen_from_log(&[
                Entry::Symbol(LogSymbol {
                    id: def.id,
                    name: def.name.to_string(),
                    price_decimals: def.price_decimals,
                    size_decimals: def.size_decimals,
                }),
                Entry::Update(Sequenced {
                    update: u,
                    seq: 0,
                    symbol_seq: 0,
                    publish_ts_ns: 0,
                }),
            ])
            .remove(0);
            from_sources.entry(seen.name.clone()).or_default().push((
                seen.kind.1,
                seen.kind.2,
                seen.exchange_ts,
                seen.receive_ts,
            ));
        }
    }
    let total: usize = from_sources.values().map(Vec::len).sum();
    assert_eq!(recorded.len(), total);
    assert!(total > 300, "{total}");
    for (name, want) in &from_sources {
        let got: Vec<_> = recorded
            .iter()
            .filter(|r| &r.name == name)
            .map(|r| (r.kind.1, r.kind.2.clone(), r.exchange_ts, r.receive_ts))
            .collect();
        assert_eq!(&got, want, "{name}");
        let seqs: Vec<u64> = recorded
            .iter()
            .filter(|r| &r.name == name)
            .map(|r| r.symbol_seq)
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{name}");
    }
    for (i, r) in recorded.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert!(r.publish_ts > 0, "served, so stamped");
    }

    // Replayed through the real server: every update as recorded, down to
    // the symbol_seq; publish_ts is the replaying server's own.
    let server = serve_log(&path, false).await;
    let got = collect(server.addr, recorded.len()).await;
    for (i, (g, r)) in got.iter().zip(&recorded).enumerate() {
        let same = Seen {
            publish_ts: r.publish_ts,
            ..g.clone()
        };
        assert_eq!(&same, r, "update {i}");
        assert!(g.publish_ts > r.publish_ts, "a new publish time");
    }
    let health = until_finished(server.addr).await;
    assert!(
        health.contains(&format!("\"updates\":{}", recorded.len())),
        "{health}"
    );
    let m = metrics_text(server.addr).await;
    assert_eq!(common::metric(&m, "tickwire_updates_out_of_order_total"), 0);
    assert_eq!(feed_metric(&m, "tickwire_feed_rejected_total"), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looped_log_replay_keeps_symbol_sequences_rising_and_gapless() {
    let dir = TempDir::new("loop");
    let path = record_samples(&dir);
    let recorded = seen_from_log(&read_log(&path).0);
    let n = recorded.len();
    let server = serve_log(&path, true).await;
    let got = collect(server.addr, 2 * n + n / 2).await;
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut per_symbol: HashMap<&str, u64> = HashMap::new();
    for r in &recorded {
        *per_symbol.entry(&r.name).or_default() += 1;
    }
    for (i, g) in got.iter().enumerate() {
        let r = &recorded[i % n];
        let pass = (i / n) as u64;
        assert_eq!(
            (&g.name, &g.kind, g.receive_ts),
            (&r.name, &r.kind, r.receive_ts)
        );
        // Pass k serves the recorded number plus k times the symbol's count.
        assert_eq!(
            g.symbol_seq,
            r.symbol_seq + pass * per_symbol[r.name.as_str()]
        );
        let prev = last.insert(&g.name, g.symbol_seq).unwrap_or(0);
        assert_eq!(g.symbol_seq, prev + 1, "update {i}: gapless, never back");
        assert_eq!(g.seq, i as u64 + 1);
    }
    let m = metrics_text(server.addr).await;
    assert_eq!(common::metric(&m, "tickwire_updates_out_of_order_total"), 0);
    server.stop().await;
}

/// The recorded session rewritten in blocks of `per_block` updates, with the
/// offset where each block ends.
fn reblock(path: &Path, per_block: u32, out: &Path) -> (Vec<Seen>, Vec<usize>) {
    let (entries, _) = read_log(path);
    let mut symbols = HashMap::new();
    let mut w = LogWriter::new(Vec::new(), 1)
        .unwrap()
        .with_block_updates(per_block);
    for e in &entries {
        match e {
            Entry::Symbol(sym) => {
                symbols.insert(sym.id, sym.clone());
            }
            // Quotes and trades only: these tests count updates per block.
            Entry::Update(u) if matches!(u.update.kind, UpdateKind::Level { .. }) => {}
            Entry::Update(u) => w.push(&symbols[&u.update.symbol], u).unwrap(),
        }
    }
    let bytes = w.finish().unwrap();
    std::fs::write(out, &bytes).unwrap();
    // Where each block ends, from the block headers.
    let mut block_ends = Vec::new();
    let mut at = log::HEADER_LEN;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += log::BLOCK_HEADER_LEN + len;
        block_ends.push(at);
    }
    assert_eq!(at, bytes.len());
    (seen_from_log(&read_log(out).0), block_ends)
}

/// A deterministic generator (SplitMix64) for offsets.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn feed_updates(path: &Path) -> Vec<(u64, u64)> {
    let mut normalizer = Normalizer::new(SymbolTable::new());
    read_all(&FeedSpec::File(path.to_owned()), &mut normalizer)
        .unwrap()
        .iter()
        .map(|u| (u.origin_seq, u.receive_ts_ns))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_replays_exactly_its_whole_blocks() {
    let dir = TempDir::new("torn");
    let session = record_samples(&dir);
    let full = dir.path("blocks.twlog");
    let (recorded, ends) = reblock(&session, 16, &full);
    assert!(ends.len() > 20, "{} blocks", ends.len());
    let bytes = std::fs::read(&full).unwrap();
    let want_all: Vec<(u64, u64)> = recorded
        .iter()
        .map(|r| (r.symbol_seq, r.receive_ts))
        .collect();
    // Many cuts at random offsets, through the feed reader the server uses.
    let mut rng = 0x7e57_u64;
    let torn = dir.path("torn.twlog");
    let mut last_cut = 0;
    for _ in 0..300 {
        let cut = log::HEADER_LEN + (splitmix(&mut rng) as usize) % (bytes.len() - log::HEADER_LEN);
        std::fs::write(&torn, &bytes[..cut]).unwrap();
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let want = &want_all[..(whole * 16).min(want_all.len())];
        assert_eq!(feed_updates(&torn), want, "cut at {cut}");
        last_cut = cut;
    }
    // And one through the real server to a real client.
    let whole = ends.iter().filter(|&&e| e <= last_cut).count();
    let n = (whole * 16).min(recorded.len());
    std::fs::write(&torn, &bytes[..last_cut]).unwrap();
    let server = serve_log(&torn, false).await;
    // The client stays subscribed until the feed has finished: when the cut
    // falls before the first whole block it wants no update, and leaving at
    // once could pass unseen by the server's min_subscribers gate, which
    // would then hold the feed forever.
    let mut ws = connect(server.addr, "tickwire.v1").await;
    send(&mut ws, r#"{"op":"subscribe","symbols":["*"]}"#).await;
    let got = read_updates(&mut ws, n).await;
    for (g, r) in got.iter().zip(&recorded) {
        assert_eq!((g.symbol_seq, &g.kind), (r.symbol_seq, &r.kind));
    }
    let health = until_finished(server.addr).await;
    drop(ws);
    assert!(health.contains(&format!("\"updates\":{n},")), "{health}");
    let m = metrics_text(server.addr).await;
    assert_eq!(feed_metric(&m, "tickwire_feed_rejected_total"), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_block_is_skipped_and_counted() {
    let dir = TempDir::new("corrupt");
    let session = record_samples(&dir);
    let full = dir.path("blocks.twlog");
    let (recorded, ends) = reblock(&session, 16, &full);
    let mut bytes = std::fs::read(&full).unwrap();
    // A byte in the middle of the file, inside block `b`.
    let at = bytes.len() / 2;
    let b = ends.iter().position(|&e| e > at).unwrap();
    bytes[at] ^= 0x40;
    let bad = dir.path("bad.twlog");
    std::fs::write(&bad, &bytes).unwrap();
    let mut want: Vec<(u64, u64)> = recorded
        .iter()
        .map(|r| (r.symbol_seq, r.receive_ts))
        .collect();
    want.drain(b * 16..(b + 1) * 16);
    assert_eq!(feed_updates(&bad), want);
    let (_, stats) = log::read_entries(&bytes).unwrap();
    assert_eq!(stats.corrupt, 1);
    assert_eq!(stats.torn_tail_bytes, 0);

    let server = serve_log(&bad, false).await;
    let got = collect(server.addr, want.len()).await;
    let got: Vec<(u64, u64)> = got.iter().map(|g| (g.symbol_seq, g.receive_ts)).collect();
    assert_eq!(got, want);
    until_finished(server.addr).await;
    let m = metrics_text(server.addr).await;
    assert_eq!(feed_metric(&m, "tickwire_feed_rejected_total"), 1);
    server.stop().await;
}

#[test]
fn convert_round_trips_log_csv_log() {
    let dir = TempDir::new("convert");
    // TC0: Tardis quotes and trades → log → CSV → log: the two logs are
    // byte for byte the same, and the CSV reads back as the original.
    for (i, tardis) in [
        "tardis-binance-futures-quotes-BTCUSDT-20200222-head200.csv",
        "tardis-binance-futures-trades-BTCUSDT-20200222-head200.csv",
    ]
    .iter()
    .enumerate()
    {
        let src = format!("{DATA}/{tardis}");
        let a = dir.path(&format!("a{i}.twlog"));
        let csv = dir.path(&format!("a{i}.csv"));
        let b = dir.path(&format!("b{i}.twlog"));
        tickwire(&["convert", &src, s(&a)]);
        tickwire(&["convert", s(&a), s(&csv), "--exchange", "binance-futures"]);
        tickwire(&["convert", s(&csv), s(&b)]);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let header = std::fs::read_to_string(&src).unwrap();
        let written = std::fs::read_to_string(&csv).unwrap();
        assert_eq!(header.lines().next(), written.lines().next(), "{tardis}");
        let mut n = Normalizer::new(SymbolTable::new());
        let original = read_all(&FeedSpec::File(src.into()), &mut n).unwrap();
        let mut n = Normalizer::new(SymbolTable::new());
        let again = read_all(&FeedSpec::File(csv.clone()), &mut n).unwrap();
        assert_eq!(original, again, "{tardis}");
        assert!(written
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("binance-futures,BTCUSDT,"));
    }

    // TC1: a recorded session (ns capture times, quotes and trades) → CSV
    // (two files) → logs: every field but the server's own (seq,
    // symbol_seq, publish_ts) comes back, ns included.
    let session = record_samples(&dir);
    let said = tickwire(&["convert", s(&session), s(&dir.path("s.csv"))]);
    assert!(
        said.contains("s.quotes.csv") && said.contains("s.trades.csv"),
        "{said}"
    );
    let recorded = seen_from_log(&read_log(&session).0);
    let strip = |v: &[Seen]| -> Vec<Seen> {
        v.iter()
            .map(|x| Seen {
                seq: 0,
                symbol_seq: 0,
                publish_ts: 0,
                ..x.clone()
            })
            .collect()
    };
    // An unknown size is an empty field (never 0), and a real 0 is 0:
    // ask_amount, ask_price, bid_price, bid_amount.
    let quotes = std::fs::read_to_string(dir.path("s.quotes.csv")).unwrap();
    let row = |symbol: &str| -> Vec<String> {
        quotes
            .lines()
            .filter(|l| l.split(',').nth(1) == Some(symbol))
            .map(|l| l.split(',').skip(4).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(row("LTC-USD"), [",61.85000000,61.83000000,"]);
    assert_eq!(
        row("SOL-USD"),
        [
            ",31.23000000,31.21000000,4.20000000",
            "12.50000000,31.23000000,31.21000000,0.00000000"
        ]
    );
    assert_eq!(row("DOGE-USD"), ["1500.50000000,0.12350000,0.12330000,"]);
    for (kind, type_byte) in [("quotes", 1), ("trades", 2)] {
        let part = dir.path(&format!("s.{kind}.csv"));
        let back = dir.path(&format!("s.{kind}.twlog"));
        tickwire(&["convert", s(&part), s(&back)]);
        let want: Vec<Seen> = recorded
            .iter()
            .filter(|r| r.kind.0 == type_byte)
            .cloned()
            .collect();
        assert!(!want.is_empty());
        let got = seen_from_log(&read_log(&back).0);
        assert_eq!(strip(&got), strip(&want), "{kind}");
        // Converted logs are numbered as a publisher would and never served.
        assert!(got.iter().enumerate().all(|(i, g)| g.seq == i as u64 + 1));
        assert!(got.iter().all(|g| g.publish_ts == 0));
    }
    assert!(
        recorded.iter().any(|r| r.receive_ts % 1000 != 0),
        "ns times"
    );

    // TC2: log → log keeps every field.
    let copy = dir.path("copy.twlog");
    tickwire(&["convert", s(&session), s(&copy)]);
    assert_eq!(seen_from_log(&read_log(&copy).0), recorded);
}

/// SIGTERM during a live recording: the blocks flushed by time are on disk
/// while it runs, and the last block is written whole on the way out.
#[test]
fn record_stops_cleanly_on_sigterm() {
    let dir = TempDir::new("sigterm");
    let out = dir.path("live.twlog");
    let feed = format!("{DATA}/{}", SAMPLES[0]);
    let mut child = Binary::start(
        binary::tickwire()
            .args([
                "record",
                "--feed",
                &feed,
                "--speed",
                "20",
                "--loop",
                "--flush-ms",
                "100",
                "--out",
            ])
            .arg(&out),
    );
    // Wait (generously) for a block written by the timer, not by size,
    // read whole: a reader may catch the recorder in the middle of writing
    // a block (a torn tail, which the reader is made to survive), and then
    // looks again.
    let mut early = 0;
    let flushed = eventually_blocking(Duration::from_secs(30), || {
        let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        if len <= log::HEADER_LEN as u64 {
            return false;
        }
        let (entries, stats) = read_log(&out);
        assert_eq!(stats.corrupt, 0);
        early = seen_from_log(&entries).len();
        stats.torn_tail_bytes == 0 && early > 0
    });
    assert!(flushed, "no whole block flushed by time");
    assert!(early > 0 && early < log::BLOCK_UPDATES as usize);
    child.stop();
    let said = child.stdout();
    let (entries, stats) = read_log(&out);
    assert_eq!((stats.corrupt, stats.torn_tail_bytes), (0, 0));
    let all = seen_from_log(&entries);
    assert!(all.len() >= early);
    // The summary counts every record, a book's levels too.
    let records = entries
        .iter()
        .filter(|e| matches!(e, Entry::Update(_)))
        .count();
    assert!(said.contains(&format!("{records} updates")), "{said}");
}
