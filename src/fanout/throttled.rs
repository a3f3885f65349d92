//! The throttle's part in a connection's fill (`throttle_ms`,
//! [`super::throttle`]): when the writer must come back, whether a fill
//! may wait for the grid, and sending what was held.

use super::{Outbox, Subscriber};
use crate::ring::Read;

impl Subscriber {
    /// When a throttled symbol's held frames are due ([`clock_ms`](super::clock_ms)), if
    /// any are: the connection's writer fills again then, updates or not.
    pub fn next_due_ms(&self) -> Option<u64> {
        let held = self.throttle.as_ref().and_then(|t| t.next_due());
        let read = self
            .read_at
            .filter(|_| self.market.ring.tail() > self.cursor)
            .map(|(at, _)| at);
        match (held, read) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Decides, after a request, whether every symbol the connection takes
    /// is throttled, and so whether fills may wait for the grid.
    pub(super) fn plan_reads(&mut self) {
        self.read_at = None;
        let Some(t) = &self.throttle else {
            return;
        };
        if self.is_idle() || (self.all && t.all_ms == 0) {
            return;
        }
        let mut shortest = if self.all { t.all_ms } else { u16::MAX };
        for s in self.subscribed.iter() {
            match t.ms_of(s) {
                0 => return,
                ms => shortest = shortest.min(ms),
            }
        }
        self.read_at = Some((0, shortest));
    }

    /// Queues what throttled symbols held, for those whose interval has
    /// ended.
    pub(super) fn release(&mut self, out: &mut Outbox) {
        let Some(t) = &mut self.throttle else {
            return;
        };
        let mut ready = Vec::new();
        t.release(self.now_ms, &mut ready);
        if !ready.is_empty() {
            self.send_held(&ready, out, false);
        }
        if self.lost_held != u64::MAX {
            self.catch_up(out);
        }
    }

    /// Queues the ring entries at sequences `seqs` (ascending) that the
    /// connection still takes; with `floors`, as sent from the cache
    /// (floors raised: for a catch-up, which may send the cache's copy of
    /// one). One the ring no longer holds makes the next fill catch up:
    /// what it was is lost, and the catch-up says so and sends the newest.
    pub(super) fn send_held(&mut self, seqs: &[u64], out: &mut Outbox, floors: bool) {
        let ring = self.market.ring.clone();
        let guard = ring.pin();
        for &seq in seqs {
            match ring.read(&guard, seq - 1) {
                Read::Item(p) if p.seq == seq => {
                    if !self.wants(p) {
                        continue;
                    }
                    if floors {
                        self.send_latest(p, out);
                    } else {
                        self.send(p, out);
                    }
                }
                _ => {
                    self.lost_held = self.lost_held.min(seq);
                }
            }
        }
    }
}
