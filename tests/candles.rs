//! Candles served from real Binance captures (../shared/feeds-real),
//! checked bar by bar against an independent computation here: its own
//! parsing (serde_json, decimal strings read by hand into 128-bit integers
//! at a common scale) and its own bars (trades grouped by the UTC interval
//! their trade time falls in).
//!
//! Both captures are whole files: USD-M BTCUSDT (21,000 trades over six
//! minutes) and spot BTCUSDT (3,000 trades across a UTC midnight, so the
//! `1d` bars split there).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tickwire::candle::INTERVALS;
use tickwire::config::ServeConfig;

mod common;

use common::temp::TempDir;
use common::*;

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/feeds-real")
        .join(name)
}

/// Decimal places every reference number is kept at.
const SCALE: u32 = 12;

/// A decimal string as an integer at [`SCALE`].
fn scaled(s: &str) -> i128 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= SCALE as usize, "{s}");
    let frac = format!("{frac:0<width$}", width = SCALE as usize);
    whole.parse::<i128>().unwrap() * 10i128.pow(SCALE) + frac.parse::<i128>().unwrap()
}

/// One reference bar: start (ns), open, high, low, close, volume at
/// [`SCALE`], trades.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefBar {
    start: u64,
    ohlcv: [i128; 5],
    trades: u64,
}

/// Every trade of the capture, in file order: (trade time ns, price, size).
fn trades(path: &Path) -> Vec<(u64, i128, i128)> {
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut out = Vec::new();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap();
        // `<receive ns> <json>`
        let Some((_, json)) = line.split_once(' ') else {
            continue;
        };
        let v: Value = serde_json::from_str(json).unwrap();
        let d = &v["data"];
        if !matches!(d["e"].as_str(), Some("trade" | "aggTrade")) {
            continue;
        }
        let ms = d["T"].as_u64().or(d["E"].as_u64()).unwrap();
        out.push((
            ms * 1_000_000,
            scaled(d["p"].as_str().unwrap()),
            scaled(d["q"].as_str().unwrap()),
        ));
    }
    out
}

/// The bars of interval `i` (seconds) over `trades`, oldest first.
fn reference(trades: &[(u64, i128, i128)], seconds: u64) -> Vec<RefBar> {
    let ns = seconds * 1_000_000_000;
    let mut bars: BTreeMap<u64, RefBar> = BTreeMap::new();
    for &(ts, px, sz) in trades {
        let start = ts / ns * ns;
        let bar = bars.entry(start).or_insert(RefBar {
            start,
            ohlcv: [px, px, px, px, 0],
            trades: 0,
        });
        bar.ohlcv[1] = bar.ohlcv[1].max(px);
        bar.ohlcv[2] = bar.ohlcv[2].min(px);
        bar.ohlcv[3] = px;
        bar.ohlcv[4] += sz;
        bar.trades += 1;
    }
    bars.into_values().collect()
}

/// A served bar as a reference bar.
fn as_ref_bar((start, text, trades, _): &BarText) -> RefBar {
    RefBar {
        start: *start,
        ohlcv: [0, 1, 2, 3, 4].map(|k| scaled(&text[k])),
        trades: *trades,
    }
}

/// Until the feeds have finished and the publisher has taken everything
/// they sent (the count of updates in stops moving).
async fn replayed(addr: std::net::SocketAddr) {
    feeds_finished(addr).await;
    let mut last = u64::MAX;
    loop {
        let n = metric(&metrics_text(addr).await, "tickwire_updates_in_total");
        if n == last {
            return;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Subscribes `client` to every candle channel of `*` and returns the
/// snapshot of each interval, by interval name.
async fn snapshots(client: &mut Client) -> BTreeMap<String, Vec<BarText>> {
    let channels: Vec<String> = INTERVALS
        .iter()
        .map(|(n, _)| format!("\"candles.{n}\""))
        .collect();
    client
        .send(&format!(
            r#"{{"op":"subscribe","symbols":["*"],"channels":[{}],"id":1}}"#,
            channels.join(",")
        ))
        .await;
    let mut got = BTreeMap::new();
    while got.len() < INTERVALS.len() {
        match client.next().await {
            Msg::Candle {
                interval,
                list: true,
                snapshot: true,
                bars,
                ..
            } => {
                assert!(got.insert(interval, bars).is_none(), "two snapshots");
            }
            Msg::Candle { .. } => panic!("a candle before the snapshots"),
            Msg::Closed(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_snapshots_of_real_captures_equal_an_independent_computation() {
    // The USD-M capture recorded to a tickwire log: its replay must give
    // the same bars as the capture's.
    let dir = TempDir::new("candles-record");
    let usdm = real("binance-usdm-BTCUSDT-20240808-hftbacktest.jsonl.gz");
    let log = dir.path("usdm.twlog");
    binary::record_max(&usdm, &log);
    for (path, from) in [
        (usdm.clone(), usdm.clone()),
        (
            real("binance-spot-BTCUSDT-20230405-hftbacktest.jsonl"),
            real("binance-spot-BTCUSDT-20230405-hftbacktest.jsonl"),
        ),
        (log, usdm),
    ] {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let trades = trades(&from);
        assert!(trades.len() > 3000, "{name}: {} trades", trades.len());
        let server = start(ServeConfig {
            feeds: vec![path.to_string_lossy().into_owned()],
            speed: "max".into(),
            candle_history: 10_000,
            ..ServeConfig::default()
        })
        .await;
        replayed(server.addr).await;
        let text = metrics_text(server.addr).await;
        assert_eq!(metric(&text, "tickwire_candle_late_trades_total"), 0);
        // Nobody watched: no candle was encoded.
        assert_eq!(metric(&text, "tickwire_candle_frames_encoded_total"), 0);
        for subprotocol in ["tickwire.v1", "tickwire.v1.json"] {
            let mut client = Client::connect(server.addr, subprotocol).await;
            let got = snapshots(&mut client).await;
            for &(interval, seconds) in &INTERVALS {
                let want = reference(&trades, seconds);
                let bars = &got[interval];
                let served: Vec<RefBar> = bars.iter().map(as_ref_bar).collect();
                assert_eq!(served.len(), want.len(), "{name} {interval} {subprotocol}");
                for (k, (s, w)) in served.iter().zip(&want).enumerate() {
                    assert_eq!(s, w, "{name} {interval} bar {k} {subprotocol}");
                }
                // Every bar closed but the last: no later trade closed it.
                let closed: Vec<bool> = bars.iter().map(|b| b.3).collect();
                assert!(closed[..closed.len() - 1].iter().all(|&c| c));
                assert!(!closed[closed.len() - 1], "{name} {interval}");
            }
            if name.contains("20230405") {
                assert_eq!(got["1d"].len(), 2, "the spot capture crosses midnight");
            }
        }
        eprintln!(
            "{name}: {} trades, {} 1s bars, {} 1m bars",
            trades.len(),
            got_len(&trades, 1),
            got_len(&trades, 60)
        );
        server.stop().await;
    }
}

fn got_len(trades: &[(u64, i128, i128)], seconds: u64) -> usize {
    reference(trades, seconds).len()
}

/// Applies one candle message to a local series (start → bar); returns
/// whether it followed the one before (`candle_seq` one more).
fn apply(series: &mut BTreeMap<u64, BarText>, last_seq: &mut u64, m: &Msg) -> bool {
    let Msg::Candle {
        candle_seq,
        list,
        snapshot,
        bars,
        ..
    } = m
    else {
        return true;
    };
    if *list && *snapshot {
        series.clear();
    }
    for b in bars {
        series.insert(b.0, b.clone());
    }
    let follows = *list || *candle_seq == *last_seq + 1;
    *last_seq = *candle_seq;
    follows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_candles_of_a_real_capture_arrive_in_sequence_and_end_at_the_reference() {
    let path = real("binance-usdm-BTCUSDT-20240808-hftbacktest.jsonl.gz");
    let trades = trades(&path);
    // A ring that holds the whole replay: nothing is conflated.
    let ring = 1 << 20;
    let server = start(ServeConfig {
        feeds: vec![path.to_string_lossy().into_owned()],
        speed: "max".into(),
        min_subscribers: 2,
        ring_capacity: ring,
        max_lag_updates: ring as u64 - 1,
        ..ServeConfig::default()
    })
    .await;
    // Two binary clients take 1s candles, a JSON one 1m candles and
    // trades; all before the replay starts.
    let mut clients = Vec::new();
    for (subprotocol, channels) in [
        ("tickwire.v1", r#"["candles.1s"]"#),
        ("tickwire.v1", r#"["candles.1s"]"#),
        ("tickwire.v1.json", r#"["candles.1m","trades"]"#),
    ] {
        let mut c = Client::connect(server.addr, subprotocol).await;
        c.send(&format!(
            r#"{{"op":"subscribe","symbols":["*"],"channels":{channels},"id":1}}"#
        ))
        .await;
        let ack = c.next_control().await;
        assert_eq!(ack["type"], "ack", "{ack}");
        clients.push(c);
    }
    replayed(server.addr).await;

    let mut updates = Vec::new();
    for (client, seconds) in clients.iter_mut().zip([1, 1, 60]) {
        let want = reference(&trades, seconds);
        let (mut series, mut last_seq, mut changes) = (BTreeMap::new(), 0, 0);
        let mut trades_seen = 0;
        // Until the last bar holds every trade of its interval.
        let done = |s: &BTreeMap<u64, BarText>| {
            s.len() == want.len() && s.values().map(as_ref_bar).eq(want.iter().cloned())
        };
        while !done(&series) {
            let m = tokio::time::timeout(Duration::from_secs(20), client.next())
                .await
                .unwrap_or_else(|_| panic!("{seconds}s: {} of {} bars", series.len(), want.len()));
            match &m {
                Msg::Candle { list, .. } => {
                    // The symbol joined `*` with a snapshot (trades may
                    // have come before), then every change in sequence.
                    assert!(
                        apply(&mut series, &mut last_seq, &m),
                        "a candle_seq gap: {m:?}"
                    );
                    changes += usize::from(!list);
                }
                Msg::Trade { .. } => trades_seen += 1,
                Msg::Control(c) if c["type"] == "conflated" => panic!("conflated: {c}"),
                Msg::Closed(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
        // One change per trade and one close per bar but the last.
        assert_eq!(
            last_seq as usize,
            trades.len() + want.len() - 1,
            "{seconds}s"
        );
        let closed: Vec<bool> = series.values().map(|b| b.3).collect();
        assert!(closed[..closed.len() - 1].iter().all(|&c| c), "{seconds}s");
        assert!(!closed[closed.len() - 1], "{seconds}s");
        if seconds == 60 {
            assert_eq!(trades_seen, trades.len(), "every trade beside the candles");
        }
        updates.push(changes);
    }
    // Encoded once per change of a watched interval, whatever the number
    // of watchers: from when the first of the two 1s clients joined.
    let text = metrics_text(server.addr).await;
    assert_eq!(
        metric(&text, "tickwire_candle_frames_encoded_total") as usize,
        updates[0].max(updates[1]) + updates[2]
    );
    server.stop().await;
}
