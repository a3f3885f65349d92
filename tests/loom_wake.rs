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
