//! The publisher's cost of candles: what a trade costs it beside a quote
//! (a quote makes no bar), with the bars computed for every interval and
//! nobody watching, and with a `*` subscriber watching `candles.1s` of
//! every symbol (each change encoded into the ring). 1,000 symbols, trade
//! times advancing 1 ms a trade, so 1 s bars close all along.
//!
//! `cargo bench --bench candles`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickwire::fanout::{FanoutLimits, Outbox, Subscriber};
use tickwire::market::Market;
use tickwire::metrics::Metrics;
use tickwire::publish::Publisher;
use tickwire::symbols::SymbolTable;
use tickwire::update::{Side, Update, UpdateKind};
use tickwire::wire::{parse_request, Format};

const SYMBOLS: u32 = 1_000;
const RING: usize = 1 << 16;

fn market() -> (Arc<Market>, Publisher) {
    let symbols = SymbolTable::new();
    for i in 0..SYMBOLS {
        symbols
            .intern(&format!("SYN{i:04}"), 2, 3)
            .expect("a fresh table takes 1,000 symbols");
    }
    let (market, writer) = Market::new(RING, symbols, Arc::new(Metrics::default()));
    let publisher = Publisher::new(Arc::clone(&market), writer);
    (market, publisher)
}

fn update(n: u64, trade: bool) -> Update {
    let px = 10_000 + (n % 100) as i64;
    Update {
        symbol: (n % u64::from(SYMBOLS)) as u32,
        kind: if trade {
            UpdateKind::Trade {
                px,
                sz: 1_000,
                side: Side::Buy,
            }
        } else {
            UpdateKind::Quote {
                bid_px: px,
                bid_sz: Some(1_000),
                ask_px: px + 1,
                ask_sz: Some(2_000),
            }
        },
        exchange_ts_ns: 1_723_161_240_000_000_000 + n * 1_000_000,
        receive_ts_ns: 1,
        origin_seq: 0,
        origin_publish_ts_ns: 0,
    }
}

fn candles(c: &mut Criterion) {
    let mut group = c.benchmark_group("candles");
    group.throughput(Throughput::Elements(1));
    for (name, trade, watched) in [
        ("publish_quote", false, false),
        ("publish_trade_unwatched", true, false),
        ("publish_trade_watched_1s", true, true),
    ] {
        let (market, mut publisher) = market();
        // Kept alive: its watch is what makes the publisher encode.
        let mut _sub = None;
        if watched {
            let limits = FanoutLimits {
                max_outbox_bytes: 1 << 20,
                max_lag_updates: 1 << 15,
                max_subscriptions: 2_000,
            };
            let mut sub = Subscriber::new(Arc::clone(&market), Format::Binary, limits);
            let mut out = Outbox::default();
            let req = br#"{"op":"subscribe","symbols":["*"],"channels":["candles.1s"]}"#;
            sub.handle(parse_request(req, 4096).unwrap(), &mut out);
            // The `*` subscription takes the symbols as their entries come.
            for n in 0..u64::from(SYMBOLS) {
                publisher.publish(update(n, false));
            }
            sub.fill(&mut out);
            _sub = Some(sub);
        }
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                black_box(publisher.publish(update(n, trade)));
            })
        });
        println!(
            "{name}: {} candle frames encoded",
            market.metrics.candle_frames_encoded_total.get()
        );
    }
    group.finish();
}

criterion_group!(benches, candles);
criterion_main!(benches);
