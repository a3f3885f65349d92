//! Push throughput of the ring with 0, 1, 4 and 16 reader threads reading
//! everything they can (and jumping ahead when lapped).
//!
//! `cargo bench --bench ring`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickwire::ring::{Read, Ring};

const CAPACITY: usize = 4096;
/// Pushes per measured batch.
const BATCH: u64 = 10_000;

/// A frame-like value: refcounted, not `Copy`, cheap to clone.
fn frame() -> Bytes {
    Bytes::from_static(&[0u8; 64])
}

/// Reads from the tail onwards until `stop`, cloning each frame out as the
/// fan-out would; yields when there is nothing new.
fn reader(ring: &Ring<Bytes>, stop: &AtomicBool) {
    let mut guard = ring.pin();
    let mut cursor = ring.tail();
    let mut since_repin = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match ring.read(&guard, cursor) {
            Read::Item(frame) => {
                black_box(frame.clone());
                cursor += 1;
            }
            Read::Lapped { next } => cursor = next,
            Read::Empty => thread::yield_now(),
        }
        since_repin += 1;
        if since_repin == 1024 {
            since_repin = 0;
            guard.repin();
        }
    }
}

fn push(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_push");
    group.throughput(Throughput::Elements(BATCH));
    group.measurement_time(Duration::from_secs(3));
    for readers in [0, 1, 4, 16] {
        group.bench_with_input(BenchmarkId::new("readers", readers), &readers, |b, &n| {
            let (mut writer, ring) = Ring::with_capacity(CAPACITY);
            let stop = Arc::new(AtomicBool::new(false));
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let ring = Arc::clone(&ring);
                    let stop = Arc::clone(&stop);
                    thread::spawn(move || reader(&ring, &stop))
                })
                .collect();
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BATCH {
                        black_box(writer.push(frame()));
                    }
                }
                start.elapsed()
            });
            stop.store(true, Ordering::Relaxed);
            for handle in handles {
                handle.join().expect("reader panicked");
            }
        });
    }
    group.finish();
}

criterion_group!(benches, push);
criterion_main!(benches);
