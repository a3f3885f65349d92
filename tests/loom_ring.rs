//! loom models of the ring's orderings. Run with
//! `cargo test --features loom --test loom_ring`.
//!
//! Under loom the ring keeps displaced entries until it drops (see
//! `src/ring/mod.rs`), so these models check the ring's own publication and
//! lap detection, not `crossbeam-epoch`.
#![cfg(feature = "loom")]

use loom::model::Builder;
use loom::sync::Arc;
use loom::thread;
use tickwire::ring::{Read, Ring};

/// The value pushed at `pos`: a wrong value means a wrong or torn entry.
fn value_at(pos: u64) -> u64 {
    pos * 10 + 7
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// Makes `attempts` reads from position 0, checking every answer; returns
/// the final cursor.
fn read_checked(ring: &Ring<u64>, attempts: usize) -> u64 {
    let guard = ring.pin();
    let mut cursor = 0;
    for _ in 0..attempts {
        match ring.read(&guard, cursor) {
            Read::Item(value) => {
                assert_eq!(*value, value_at(cursor), "wrong entry at {cursor}");
                cursor += 1;
            }
            Read::Lapped { next } => {
                assert!(next > cursor, "lapped backwards: {cursor} -> {next}");
                // With 3 pushes into 2 slots, only position 0 can be lost.
                assert_eq!((cursor, next), (0, 1), "wrong lap");
                cursor = next;
            }
            Read::Empty => thread::yield_now(),
        }
    }
    cursor
}

fn writer_and_readers(readers: usize) {
    model(move || {
        let (mut writer, ring) = Ring::with_capacity(2);
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || read_checked(&ring, 3))
            })
            .collect();
        for pos in 0..3 {
            assert_eq!(writer.push(value_at(pos)), pos);
        }
        for handle in handles {
            let cursor = handle.join().expect("reader panicked");
            assert!(cursor <= 3);
        }
        // Once everything is published, the last two are readable in order.
        let guard = ring.pin();
        assert_eq!(ring.read(&guard, 0), Read::Lapped { next: 1 });
        assert_eq!(ring.read(&guard, 1), Read::Item(&value_at(1)));
        assert_eq!(ring.read(&guard, 2), Read::Item(&value_at(2)));
        assert_eq!(ring.read(&guard, 3), Read::Empty);
    });
}

#[test]
fn one_reader_sees_in_order_items_or_correct_laps() {
    writer_and_readers(1);
}

#[test]
fn two_readers_see_in_order_items_or_correct_laps() {
    writer_and_readers(2);
}

#[test]
fn a_published_position_is_never_empty() {
    model(|| {
        let (mut writer, ring) = Ring::with_capacity(2);
        let reader = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let guard = ring.pin();
                let tail = ring.tail();
                for pos in 0..tail {
                    match ring.read(&guard, pos) {
                        Read::Item(value) => assert_eq!(*value, value_at(pos)),
                        Read::Lapped { next } => assert!(next > pos),
                        Read::Empty => panic!("position {pos} < tail {tail} read Empty"),
                    }
                }
            })
        };
        for pos in 0..3 {
            writer.push(value_at(pos));
        }
        reader.join().expect("reader panicked");
    });
}
