use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Read, Ring};

/// Reads everything from `cursor` to the tail, asserting no lap.
fn drain<T: Send + Sync + Clone>(ring: &Ring<T>, mut cursor: u64) -> Vec<T> {
    let guard = ring.pin();
    let mut out = Vec::new();
    loop {
        match ring.read(&guard, cursor) {
            Read::Item(value) => out.push(value.clone()),
            Read::Empty => return out,
            Read::Lapped { next } => panic!("lapped at {cursor}, next {next}"),
        }
        cursor += 1;
    }
}

#[test]
fn empty_ring_reads_empty() {
    let (_writer, ring) = Ring::<u64>::with_capacity(8);
    let guard = ring.pin();
    assert_eq!(ring.tail(), 0);
    assert_eq!(ring.capacity(), 8);
    assert_eq!(ring.read(&guard, 0), Read::Empty);
    // A cursor past the tail waits for the writer to get there.
    assert_eq!(ring.read(&guard, 5), Read::Empty);
}

#[test]
fn push_returns_positions_and_reads_in_order() {
    let (mut writer, ring) = Ring::with_capacity(8);
    for n in 0..5u64 {
        assert_eq!(writer.push(n * 10), n);
    }
    assert_eq!(ring.tail(), 5);
    assert_eq!(drain(&ring, 0), [0, 10, 20, 30, 40]);
    assert_eq!(drain(&ring, 3), [30, 40]);
}

#[test]
fn wraps_around_many_times() {
    let (mut writer, ring) = Ring::with_capacity(4);
    let guard = ring.pin();
    for n in 0..100u64 {
        writer.push(n);
        assert_eq!(ring.read(&guard, n), Read::Item(&n));
        assert_eq!(ring.read(&guard, n + 1), Read::Empty);
    }
    assert_eq!(drain(&ring, 96), [96, 97, 98, 99]);
}

#[test]
fn lapped_reader_learns_next_and_missed_count() {
    // TC: (capacity, pushes, cursor, expected next)
    let cases = [
        (4, 5, 0, 1),
        (4, 10, 0, 6),
        (4, 10, 5, 6),
        (8, 100, 3, 92),
        (1, 3, 1, 2),
    ];
    for (capacity, pushes, cursor, expected) in cases {
        let (mut writer, ring) = Ring::with_capacity(capacity);
        for n in 0..pushes {
            writer.push(n);
        }
        let guard = ring.pin();
        let Read::Lapped { next } = ring.read(&guard, cursor) else {
            panic!("capacity {capacity}, pushes {pushes}, cursor {cursor}: not lapped");
        };
        assert_eq!(next, expected, "capacity {capacity}, cursor {cursor}");
        assert_eq!(next - cursor, expected - cursor, "missed count");
        assert_eq!(ring.read(&guard, next), Read::Item(&next));
        assert_eq!(drain(&ring, next).len(), capacity);
    }
}

#[test]
fn reader_exactly_capacity_behind_is_not_lapped() {
    let (mut writer, ring) = Ring::with_capacity(4);
    for n in 0..4u64 {
        writer.push(n);
    }
    let guard = ring.pin();
    assert_eq!(ring.read(&guard, 0), Read::Item(&0));
    writer.push(4);
    assert_eq!(ring.read(&guard, 0), Read::Lapped { next: 1 });
    assert_eq!(ring.read(&guard, 1), Read::Item(&1));
}

#[test]
fn capacity_one_holds_the_latest() {
    let (mut writer, ring) = Ring::with_capacity(1);
    let guard = ring.pin();
    assert_eq!(ring.read(&guard, 0), Read::Empty);
    writer.push('a');
    assert_eq!(ring.read(&guard, 0), Read::Item(&'a'));
    writer.push('b');
    assert_eq!(ring.read(&guard, 0), Read::Lapped { next: 1 });
    assert_eq!(ring.read(&guard, 1), Read::Item(&'b'));
    assert_eq!(ring.read(&guard, 2), Read::Empty);
}

#[test]
fn capacity_two_keeps_two() {
    let (mut writer, ring) = Ring::with_capacity(2);
    for c in ['a', 'b', 'c'] {
        writer.push(c);
    }
    let guard = ring.pin();
    assert_eq!(ring.read(&guard, 0), Read::Lapped { next: 1 });
    assert_eq!(drain(&ring, 1), ['b', 'c']);
}

#[test]
#[should_panic(expected = "power of two")]
fn rejects_capacity_that_is_not_a_power_of_two() {
    let _ = Ring::<u8>::with_capacity(6);
}

#[test]
#[should_panic(expected = "power of two")]
fn rejects_zero_capacity() {
    let _ = Ring::<u8>::with_capacity(0);
}

/// Records, per id, how many times a value was dropped.
struct DropTally {
    drops: Vec<AtomicU32>,
}

struct Tracked {
    id: usize,
    tally: Arc<DropTally>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tally.drops[self.id].fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn every_value_is_dropped_exactly_once() {
    let count = 50;
    let tally = Arc::new(DropTally {
        drops: (0..count).map(|_| AtomicU32::new(0)).collect(),
    });
    let (mut writer, ring) = Ring::with_capacity(8);
    for id in 0..count {
        let tally = Arc::clone(&tally);
        writer.push(Tracked { id, tally });
    }
    drop(writer);
    drop(ring);
    // The last 8 went with the ring; the displaced ones go when the epoch
    // advances, which flushing from a pinned thread drives.
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = || {
        tally
            .drops
            .iter()
            .filter(|d| d.load(Ordering::Relaxed) > 0)
            .count()
    };
    while dropped() < count && Instant::now() < deadline {
        crossbeam_epoch::pin().flush();
        thread::yield_now();
    }
    for (id, drops) in tally.drops.iter().enumerate() {
        assert_eq!(drops.load(Ordering::Relaxed), 1, "value {id}");
    }
}

/// A value that is wrong in a detectable way if read torn, freed, or from
/// the wrong position.
#[derive(Clone)]
struct Tick {
    pos: u64,
    triple: u64,
    shared: Arc<u64>,
}

#[test]
fn one_writer_four_readers_see_intact_entries_in_order() {
    let pushes: u64 = if cfg!(miri) { 300 } else { 1_000_000 };
    let capacity = if cfg!(miri) { 8 } else { 1024 };
    let (mut writer, ring) = Ring::with_capacity(capacity);
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let ring = Arc::clone(&ring);
            thread::spawn(move || read_all(&ring, pushes))
        })
        .collect();
    for pos in 0..pushes {
        let tick = Tick {
            pos,
            triple: pos * 3,
            shared: Arc::new(pos * 3),
        };
        assert_eq!(writer.push(tick), pos);
    }
    for reader in readers {
        let (items, missed) = reader.join().expect("reader panicked");
        assert_eq!(items + missed, pushes);
    }
}

/// Reads until the cursor reaches the last position; returns (items read,
/// entries missed to laps).
fn read_all(ring: &Ring<Tick>, pushes: u64) -> (u64, u64) {
    let (mut cursor, mut items, mut missed) = (0, 0, 0);
    let mut guard = ring.pin();
    let mut held = Vec::new();
    while cursor < pushes {
        match ring.read(&guard, cursor) {
            Read::Item(tick) => {
                assert_eq!(tick.pos, cursor);
                assert_eq!(tick.triple, cursor * 3);
                assert_eq!(*tick.shared, cursor * 3);
                // Clone the refcounted part out, as a real reader would.
                held.push(tick.clone());
                cursor += 1;
                items += 1;
            }
            Read::Lapped { next } => {
                assert!(next > cursor, "lapped backwards: {cursor} -> {next}");
                missed += next - cursor;
                cursor = next;
            }
            Read::Empty => thread::yield_now(),
        }
        if held.len() >= 256 {
            held.clear();
            guard.repin();
        }
    }
    assert!(held.iter().all(|t| *t.shared == t.triple));
    (items, missed)
}

#[test]
fn clones_survive_the_entry_they_came_from() {
    let (mut writer, ring) = Ring::with_capacity(2);
    writer.push(Arc::new(String::from("first")));
    let cloned = {
        let guard = ring.pin();
        let Read::Item(value) = ring.read(&guard, 0) else {
            panic!("position 0 is there");
        };
        Arc::clone(value)
    };
    for _ in 0..10 {
        writer.push(Arc::new(String::from("later")));
    }
    drop(ring);
    drop(writer);
    assert_eq!(*cloned, "first");
}
