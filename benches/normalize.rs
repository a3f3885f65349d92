//! Normalization per feed format, and simd-json against serde_json on the
//! same raw Binance structs.
//!
//! `normalize/<file>`: every update of a `tests/data` excerpt through the
//! replay reader (read, decompress, classify, parse, fixed-point), per
//! update. `json/<parser>`: Binance spot `bookTicker` and `trade` payloads
//! into the borrowed structs of `feed::binance`, per message: simd-json
//! as the feed uses it (value tree, then struct), simd-json straight to the
//! struct, and serde_json straight to the struct (the baseline).
//!
//! `cargo bench --bench normalize`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickwire::feed::venue::binance::{BookTicker, Trade};
use tickwire::feed::{read_all, FeedSpec};
use tickwire::symbols::{Normalizer, SymbolTable};

const FILES: [&str; 5] = [
    "binance-spot-BTCUSDT-20230405-head300.jsonl",
    "binance-usdm-BTCUSDT-20240808-head300.jsonl.gz",
    "coinbase-advtrade-BTC-ETH-USD-head300.jsonl.zst",
    "tardis-binance-futures-quotes-BTCUSDT-20200222-head200.csv",
    "tardis-binance-futures-trades-BTCUSDT-20200222-head200.csv",
];

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for file in FILES {
        let spec = FeedSpec::File(data(file));
        let mut normalizer = Normalizer::new(SymbolTable::new());
        let updates = read_all(&spec, &mut normalizer).expect("a readable excerpt");
        group.throughput(Throughput::Elements(updates.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(file), |b| {
            b.iter(|| black_box(read_all(&spec, &mut normalizer).map(|u| u.len())))
        });
    }
    group.finish();
}

/// The bare payloads of the spot excerpt (`<µs> {"stream":..,"data":{..}}`).
fn spot_payloads() -> Vec<String> {
    let text = std::fs::read_to_string(data(FILES[0])).expect("the spot excerpt");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(_, json)| serde_json::from_str::<serde_json::Value>(json).ok())
        .map(|v| v["data"].to_string())
        .collect()
}

fn is_trade(payload: &str) -> bool {
    payload.contains(r#""e":"trade""#)
}

fn json(c: &mut Criterion) {
    let payloads = spot_payloads();
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Elements(payloads.len() as u64));
    let mut scratch = Vec::with_capacity(512);
    // What the feed does: a borrowed value tree first (to classify the
    // message), then the struct from it.
    group.bench_function("simd-json value then struct", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &payloads {
                scratch.clear();
                scratch.extend_from_slice(p.as_bytes());
                let Ok(value) = tickwire::json::parse(&mut scratch) else {
                    continue;
                };
                n += if is_trade(p) {
                    simd_json::serde::from_refborrowed_value::<Trade<'_>>(&value)
                        .map(|t| t.px.len())
                        .unwrap_or(0)
                } else {
                    simd_json::serde::from_refborrowed_value::<BookTicker<'_>>(&value)
                        .map(|q| q.bid_px.len())
                        .unwrap_or(0)
                };
            }
            black_box(n)
        })
    });
    // The same with the parser's buffers kept between messages (the feed
    // does not do this today).
    let mut buffers = simd_json::Buffers::default();
    group.bench_function("simd-json value then struct, reused buffers", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &payloads {
                scratch.clear();
                scratch.extend_from_slice(p.as_bytes());
                let Ok(value) =
                    simd_json::value::borrowed::to_value_with_buffers(&mut scratch, &mut buffers)
                else {
                    continue;
                };
                n += if is_trade(p) {
                    simd_json::serde::from_refborrowed_value::<Trade<'_>>(&value)
                        .map(|t| t.px.len())
                        .unwrap_or(0)
                } else {
                    simd_json::serde::from_refborrowed_value::<BookTicker<'_>>(&value)
                        .map(|q| q.bid_px.len())
                        .unwrap_or(0)
                };
            }
            black_box(n)
        })
    });
    group.bench_function("simd-json struct, reused buffers", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &payloads {
                scratch.clear();
                scratch.extend_from_slice(p.as_bytes());
                n += if is_trade(p) {
                    simd_json::serde::from_slice_with_buffers::<Trade<'_>>(
                        &mut scratch,
                        &mut buffers,
                    )
                    .map(|t| t.px.len())
                    .unwrap_or(0)
                } else {
                    simd_json::serde::from_slice_with_buffers::<BookTicker<'_>>(
                        &mut scratch,
                        &mut buffers,
                    )
                    .map(|q| q.bid_px.len())
                    .unwrap_or(0)
                };
            }
            black_box(n)
        })
    });
    group.bench_function("simd-json struct", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &payloads {
                scratch.clear();
                scratch.extend_from_slice(p.as_bytes());
                n += if is_trade(p) {
                    simd_json::serde::from_slice::<Trade<'_>>(&mut scratch)
                        .map(|t| t.px.len())
                        .unwrap_or(0)
                } else {
                    simd_json::serde::from_slice::<BookTicker<'_>>(&mut scratch)
                        .map(|q| q.bid_px.len())
                        .unwrap_or(0)
                };
            }
            black_box(n)
        })
    });
    group.bench_function("serde_json struct", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &payloads {
                n += if is_trade(p) {
                    serde_json::from_str::<Trade<'_>>(p)
                        .map(|t| t.px.len())
                        .unwrap_or(0)
                } else {
                    serde_json::from_str::<BookTicker<'_>>(p)
                        .map(|q| q.bid_px.len())
                        .unwrap_or(0)
                };
            }
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, normalize, json);
criterion_main!(benches);
