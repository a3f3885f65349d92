//! Frame encoding per update: one quote and one trade into both frames
//! (binary and JSON), as the publisher does once per update.
//!
//! `cargo bench --bench encode`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickwire::update::{Sequenced, Side, Update, UpdateKind};
use tickwire::wire::encode::{FrameEncoder, SymbolFormat};

const SYMBOL: SymbolFormat<'static> = SymbolFormat {
    name: "BTCUSDT",
    price_decimals: 8,
    size_decimals: 8,
};

fn sequenced(kind: UpdateKind) -> Sequenced {
    Sequenced {
        update: Update {
            symbol: 7,
            kind,
            exchange_ts_ns: 1_723_161_255_210_000_000,
            receive_ts_ns: 1_723_161_253_937_000_000,
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        },
        seq: 42,
        symbol_seq: 5,
        publish_ts_ns: 1_900_000_000_000_000_000,
    }
}

fn encode(c: &mut Criterion) {
    let quote = sequenced(UpdateKind::Quote {
        bid_px: 6_183_763_000_000,
        bid_sz: Some(378_826_000),
        ask_px: 6_183_764_000_000,
        ask_sz: Some(154_698_000),
    });
    let trade = sequenced(UpdateKind::Trade {
        px: 6_183_764_000_000,
        sz: 100_000,
        side: Side::Buy,
    });
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    let mut encoder = FrameEncoder::new();
    for (name, update) in [("quote", quote), ("trade", trade)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(encoder.encode(black_box(&update), SYMBOL)))
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
