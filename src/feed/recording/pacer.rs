//! Pacing a replay by the recorded clock: an update recorded `d` after the
//! first is sent `d / k` after it, at `--speed k`, and a looped replay's
//! next pass carries on from where the last one ended.
//!
//! On the async side of a replay ([`super::replay`]), apart from the
//! reading: the only part that looks at the wall clock.

use std::time::Duration;

use tokio::time::Instant;

use crate::feed::Speed;

/// Gaps shorter than this are not slept: tokio's timer ticks in ms, so such
/// a sleep would end at the next tick anyway.
const SLEEP_SLACK: Duration = Duration::from_millis(1);

/// Maps recorded time to wall time: an update recorded at `t` is due at
/// `start + (t - t0) / k`.
pub(crate) struct Pacer {
    speed: Speed,
    /// Wall time and recorded time of the first paced update of this pass.
    anchor: Option<(Instant, u64)>,
    /// When the last paced update was due; the next pass starts there.
    last_due: Option<Instant>,
    /// A recent reading of the clock; anything due by then needs no sleep.
    now: Instant,
}

impl Pacer {
    pub(crate) fn new(speed: Speed) -> Self {
        Pacer {
            speed,
            anchor: None,
            last_due: None,
            now: Instant::now(),
        }
    }

    /// How long after its due time the last paced update went (its
    /// client or the reading held it up), if it was late.
    pub(crate) fn lateness(&self) -> Option<Duration> {
        if !self.is_paced() {
            return None;
        }
        Instant::now().checked_duration_since(self.last_due?)
    }

    /// Whether updates wait for their recorded time (not `Speed::Max`).
    pub(crate) fn is_paced(&self) -> bool {
        matches!(self.speed, Speed::Factor(_))
    }

    pub(crate) async fn wait(&mut self, pace_ns: Option<u64>) {
        let (Speed::Factor(k), Some(t)) = (self.speed, pace_ns) else {
            return;
        };
        let (start, t0) = *self
            .anchor
            .get_or_insert_with(|| (self.last_due.unwrap_or_else(Instant::now), t));
        // Recorded time going backwards (a merge of sources) is due now.
        let recorded = Duration::from_nanos(t.saturating_sub(t0));
        // Capped so that a wild timestamp cannot overflow `Instant`.
        let wall = recorded
            .div_f64(k)
            .min(Duration::from_secs(10 * 365 * 86_400));
        let due = start + wall;
        self.last_due = Some(due);
        if due <= self.now {
            return;
        }
        self.now = Instant::now();
        if due <= self.now + SLEEP_SLACK {
            return;
        }
        tokio::time::sleep_until(due).await;
        self.now = Instant::now();
    }

    /// Re-anchors so that the next pass continues where this one ended.
    pub(super) fn restart(&mut self) {
        self.anchor = None;
    }
}
