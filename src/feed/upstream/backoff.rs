//! When a live feed tries its venue again: exponential backoff with jitter,
//! so that a venue that drops every client at once (a restart, the 24 h
//! disconnect) is not met by all of them again at the same instant.
//!
//! Apart from the connector as it is plain arithmetic on durations,
//! tested without a network.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use super::spec::UpstreamTiming;

/// Exponential backoff with jitter: each delay is drawn from the upper
/// half of the current step, and the step doubles up to the maximum.
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub(super) fn new(timing: UpstreamTiming) -> Self {
        Backoff {
            initial: timing.backoff_initial,
            max: timing.backoff_max.max(timing.backoff_initial),
            step: timing.backoff_initial,
            random: RandomState::new(),
            draws: 0,
        }
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        self.draws += 1;
        // Each RandomState has random keys: its hash of a counter is a
        // fresh uniform u64, plenty for jitter.
        let r = self.random.hash_one(self.draws);
        let half = self.step / 2;
        let jitter = half.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64);
        let delay = half + jitter;
        self.step = (self.step * 2).min(self.max);
        delay
    }

    pub(super) fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(UpstreamTiming {
            silence_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(800),
        });
        // TC0: each delay in the upper half of its step: 100, 200, 400, 800, 800.
        for step in [100u64, 200, 400, 800, 800] {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(step / 2) && d <= Duration::from_millis(step),
                "{d:?} for step {step}"
            );
        }
        // TC1: after a reset it starts over.
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        // TC2: the jitter varies.
        let draws: std::collections::HashSet<_> = (0..20)
            .map(|_| {
                b.reset();
                b.next_delay()
            })
            .collect();
        assert!(draws.len() > 1);
    }
}
