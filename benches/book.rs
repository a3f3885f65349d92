//! Order books: one diff applied to a 1,000-level book and the top N
//! re-encoded (N = 10, 100) in both frames, as the publisher does per book
//! event and watched `book.N` channel; and the memory one such book holds.
//!
//! `cargo bench --bench book`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tickwire::book::Book;
use tickwire::update::BookSide;
use tickwire::wire::encode::{BookHead, BookLevels, FrameEncoder, SymbolFormat};

const SYMBOL: SymbolFormat<'static> = SymbolFormat {
    name: "BTCUSDT",
    price_decimals: 8,
    size_decimals: 8,
};

const LEVELS: i64 = 1_000;
const TICK: i64 = 1_000_000; // 0.01 at 8 decimals
const MID: i64 = 6_183_763_000_000;

/// A book of `LEVELS` levels a side around `MID`, one tick apart.
fn book() -> Book {
    let mut b = Book::default();
    for k in 0..LEVELS {
        b.apply(BookSide::Bid, MID - (k + 1) * TICK, 100_000 + k);
        b.apply(BookSide::Ask, MID + k * TICK, 100_000 + k);
    }
    b
}

fn head(depth: u16) -> BookHead {
    BookHead {
        symbol: 7,
        seq: 42,
        book_seq: 5,
        exchange_ts_ns: 1_723_161_256_298_000_000,
        receive_ts_ns: 1_723_161_255_030_314_667,
        publish_ts_ns: 1_900_000_000_000_000_000,
        depth,
        snapshot: true,
    }
}

fn apply_and_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("book");
    let mut b = book();
    eprintln!(
        "a {LEVELS}-level-a-side book holds {} bytes of levels ({} per level)",
        b.heap_bytes(),
        b.heap_bytes() / (2 * LEVELS as usize)
    );
    // A diff as Binance sends one: a few levels near the top, sizes that
    // change back and forth so that the book stays the same size.
    let mut n = 0i64;
    let mut diff = |b: &mut Book| {
        n += 1;
        for k in 0..4 {
            let side = if k % 2 == 0 {
                BookSide::Bid
            } else {
                BookSide::Ask
            };
            let px = if side == BookSide::Bid {
                MID - (k + 1) * TICK
            } else {
                MID + k * TICK
            };
            b.apply(side, px, 200_000 + (n & 1));
        }
    };
    group.bench_function("apply a 4-level diff (1,000-level book)", |bench| {
        bench.iter(|| diff(black_box(&mut b)))
    });
    let mut encoder = FrameEncoder::new();
    for depth in [10u16, 100] {
        let (mut bids, mut asks) = (Vec::new(), Vec::new());
        group.bench_function(
            format!("apply a diff and encode book.{depth} (both frames)"),
            |bench| {
                bench.iter(|| {
                    diff(&mut b);
                    bids.clear();
                    asks.clear();
                    bids.extend(b.side(BookSide::Bid).take(usize::from(depth)));
                    asks.extend(b.side(BookSide::Ask).take(usize::from(depth)));
                    black_box(encoder.encode_book(
                        &head(depth),
                        BookLevels {
                            bids: &bids,
                            asks: &asks,
                        },
                        SYMBOL,
                    ))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, apply_and_encode);
criterion_main!(benches);
