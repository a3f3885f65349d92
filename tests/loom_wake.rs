//! loom model of the writer threads' wake-up (`src/wake.rs`). Run with
//! `cargo test --features loom --test loom_wake`.
#![cfg(feature = "loom")]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use tickwire::wake::ThreadWake;

/// Two publishers each write a value (Relaxed: only the wake-up may order
/// it) and wake the waiter. Whatever the interleaving, the waiter is never
/// left parked with a wake owed, and once it has waited out as many passes
/// as it needs, it sees both values: a wake-up is never lost and never
/// arrives before the write it announces.
#[test]
fn no_wake_up_is_lost_and_each_pass_sees_what_preceded_its_wake() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let values = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        // The model's main thread is the waiter.
        let wake = Arc::new(ThreadWake::for_current_thread());
        for i in 0..2 {
            let (values, wake) = (Arc::clone(&values), Arc::clone(&wake));
            thread::spawn(move || {
                values[i].store(1, Ordering::Relaxed);
                wake.wake();
            });
        }
        // loom reports a deadlock if the waiter parks for good.
        let mut seen = [false; 2];
        while !(seen[0] && seen[1]) {
            wake.wait();
            for (i, v) in values.iter().enumerate() {
                seen[i] |= v.load(Ordering::Relaxed) == 1;
            }
        }
    });
}

/// A throttled shard waits with a deadline. A timed wait that returns
/// before the wake-up (the deadline came first) must not swallow it: the
/// publisher's write is seen by a later pass, timed or not, and the waiter
/// never parks for good with a wake owed.
#[test]
fn a_timed_wait_that_times_out_loses_no_wake_up() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let value = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(ThreadWake::for_current_thread());
        {
            let (value, wake) = (Arc::clone(&value), Arc::clone(&wake));
            thread::spawn(move || {
                value.store(1, Ordering::Relaxed);
                wake.wake();
            });
        }
        // A deadline one pass away: loom's wait_until returns at once.
        let deadline = Some(std::time::Instant::now());
        let mut timed = 0;
        while value.load(Ordering::Relaxed) != 1 {
            if timed < 2 {
                wake.wait_until(deadline);
                timed += 1;
            } else {
                // No more deadlines due: wait for the wake itself. If a
                // timed wait had taken the flag down without its write
                // being visible, this would park for good and loom would
                // report the deadlock.
                wake.wait_until(None);
            }
        }
    });
}

/// A small shard's pass may be made by the publisher itself
/// (`ThreadWake::after_batch`), under the lock the writer's passes take.
/// A second waker (a connection's task nudging the shard) can have the
/// writer mid-pass when the publisher publishes. Whatever the
/// interleaving, the published value is written by a pass that started
/// after it: the publisher's own, or the writer's (loom reports a deadlock
/// if the writer is left parked without it). The publisher's own pass asks
/// for a wake-up only so that the model's writer can end.
#[test]
fn a_pass_made_by_the_publisher_loses_no_batch() {
    use loom::sync::Mutex;
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let head = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(Mutex::new(0));
        // The model's main thread is the writer.
        let wake = Arc::new(ThreadWake::for_current_thread());
        let pass = |head: &AtomicUsize, written: &mut usize| {
            *written = (*written).max(head.load(Ordering::Relaxed));
        };
        {
            let wake = Arc::clone(&wake);
            thread::spawn(move || wake.wake());
        }
        {
            let (head, written, wake) =
                (Arc::clone(&head), Arc::clone(&written), Arc::clone(&wake));
            thread::spawn(move || {
                head.store(1, Ordering::Relaxed);
                wake.after_batch(true, || {
                    let mut w = written.try_lock().ok()?;
                    pass(&head, &mut w);
                    Some(true)
                });
            });
        }
        loop {
            wake.wait();
            let mut w = written.lock().unwrap();
            pass(&head, &mut w);
            if *w == 1 {
                break;
            }
        }
    });
}
