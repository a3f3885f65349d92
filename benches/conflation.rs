//! Conflation catch-up: a `*` subscriber of a market with 1,000 symbols is
//! lapped by the ring, and its next `fill` must skip to the head, queue the
//! `conflated` notice and the newest frame of every symbol that changed
//! from the last-value cache, then go on live. Measured: that one `fill`,
//! per catch-up and per frame queued.
//!
//! `cargo bench --bench conflation`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickwire::fanout::{FanoutLimits, Outbox, Subscriber};
use tickwire::market::{LastValueCache, Market};
use tickwire::metrics::Metrics;
use tickwire::publish::Publisher;
use tickwire::ring::Ring;
use tickwire::symbols::SymbolTable;
use tickwire::update::{Update, UpdateKind};
use tickwire::wire::{Format, Op, Request, Symbols};

const SYMBOLS: u32 = 1_000;
const RING: usize = 16_384;
/// Updates published between catch-ups: more than the ring holds, so the
/// subscriber is lapped every time.
const LAP: u32 = 20_000;

fn market() -> (Arc<Market>, Publisher) {
    let symbols = SymbolTable::new();
    for i in 0..SYMBOLS {
        symbols
            .intern(&format!("SYN{i:04}"), 2, 3)
            .expect("a fresh table takes 1,000 symbols");
    }
    let (writer, ring) = Ring::with_capacity(RING);
    let market = Arc::new(Market {
        ring,
        lvc: LastValueCache::default(),
        books: Default::default(),
        candles: Default::default(),
        symbols,
        wakeup: tickwire::market::Wakeup::default(),
        metrics: Arc::new(Metrics::default()),
    });
    let publisher = Publisher::new(Arc::clone(&market), writer);
    (market, publisher)
}

fn quote(symbol: u32, i: u32) -> Update {
    let px = 10_000 + i64::from(i % 100);
    Update {
        symbol,
        kind: UpdateKind::Quote {
            bid_px: px,
            bid_sz: Some(1_000),
            ask_px: px + 1,
            ask_sz: Some(2_000),
        },
        exchange_ts_ns: 0,
        receive_ts_ns: 1,
        origin_seq: 0,
        origin_publish_ts_ns: 0,
    }
}

fn catch_up(c: &mut Criterion) {
    let (market, mut publisher) = market();
    let limits = FanoutLimits {
        // Room for the whole catch-up in one fill.
        max_outbox_bytes: 64 * 1024 * 1024,
        max_lag_updates: 4096,
        max_subscriptions: 1024,
    };
    let mut sub = Subscriber::new(Arc::clone(&market), Format::Binary, limits);
    let mut out = Outbox::default();
    sub.handle(
        Request {
            id: None,
            op: Op::Subscribe(Symbols::All),
            channels: None,
            throttle_ms: None,
        },
        &mut out,
    );
    let mut n = 0u32;
    let mut frames = 0usize;
    let mut lap = |publisher: &mut Publisher| {
        for _ in 0..LAP {
            publisher.publish(quote(n % SYMBOLS, n));
            n = n.wrapping_add(1);
        }
    };
    // One catch-up first, to learn how many frames one queues.
    lap(&mut publisher);
    sub.fill(&mut out);
    out.advance(out.len_bytes());
    lap(&mut publisher);
    sub.fill(&mut out);
    let per_catch_up = out.frame_count();
    out.advance(out.len_bytes());
    assert!(per_catch_up > SYMBOLS as usize, "notice + 1,000 frames");

    let mut group = c.benchmark_group("conflation");
    group.throughput(Throughput::Elements(1));
    group.bench_function("catch_up_1000_symbols", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                lap(&mut publisher);
                let t = Instant::now();
                black_box(sub.fill(&mut out));
                total += t.elapsed();
                frames = out.frame_count();
                out.advance(out.len_bytes());
            }
            total
        })
    });
    group.finish();
    println!(
        "conflation: {frames} frames queued per catch-up (notice, 1,000 cached frames, live tail)"
    );
}

criterion_group!(benches, catch_up);
criterion_main!(benches);
