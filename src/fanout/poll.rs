//! Long-polling (`/poll`, docs/PROTOCOL.md "Long-polling"): what changed
//! since a global sequence, in one answer.
//!
//! A poll is a subscriber that lives for one request. What it answers is
//! what a throttled subscriber sends at the end of an interval, with the
//! interval running from `since` to now: the newest state of each symbol
//! (quote, `book.N`, status) and every event (trade, full-book change),
//! read from the ring by the same [`Throttle`] holding rules. When the ring
//! no longer holds what came after `since`, it answers as a slow
//! connection's catch-up does: a `conflated` notice, then the newest of
//! each symbol from the caches.

use crate::ring::Read;
use crate::update::SymbolId;
use crate::wire;

use super::subscriptions::BitSet;
use super::throttle::Throttle;
use super::{Outbox, Subscriber};

/// Where a poll got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polled {
    /// The global sequence the answer is complete up to: the next poll's
    /// `since`.
    pub next: u64,
    /// Whether anything was queued.
    pub any: bool,
}

impl Subscriber {
    /// The ring position up to which this subscriber has everything (after
    /// a subscribe: where its snapshot stands).
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// Queues in `out` what changed since global sequence `since` of what
    /// this subscriber takes (one definition before each symbol's first
    /// message), reading the ring from `from` (at or after `since`: where
    /// an earlier look that found nothing stopped).
    pub fn poll_since(&mut self, since: u64, from: u64, out: &mut Outbox) -> Polled {
        // What the subscribe queued (its snapshot) is not what this answer
        // sends: forget what it told.
        self.defined = BitSet::default();
        self.floors.clear();
        self.floor_until = 0;
        let ring = self.market.ring.clone();
        let guard = ring.pin();
        let tail = ring.tail();
        let oldest = tail.saturating_sub(ring.capacity() as u64);
        if since < oldest {
            // The ring has overwritten some of what came after `since`.
            self.cursor = since;
            self.catch_up(out);
            return Polled {
                next: self.cursor,
                any: true,
            };
        }
        // Every subscribed symbol held as if throttled, for the one
        // interval from `since` to now.
        let mut held = Throttle::default();
        self.follow(self.market.symbols.len() as SymbolId);
        for s in self.subscribed.iter() {
            held.set(s, 1);
        }
        let mut seqs = Vec::new();
        let mut pos = from.max(since);
        while pos < tail {
            match ring.read(&guard, pos) {
                Read::Item(p) => {
                    pos += 1;
                    if self.wants(p) {
                        held.hold(p, 0, &mut seqs);
                    }
                }
                // Overwritten while read: answer from the caches.
                Read::Lapped { .. } | Read::Empty => {
                    self.cursor = since;
                    self.catch_up(out);
                    return Polled {
                        next: self.cursor,
                        any: true,
                    };
                }
            }
        }
        seqs.extend(held.take_all());
        seqs.sort_unstable();
        let mut any = false;
        for seq in seqs {
            if let Read::Item(p) = ring.read(&guard, seq - 1) {
                if p.seq == seq {
                    self.send(p, out);
                    any = true;
                }
            }
        }
        Polled { next: pos, any }
    }
}

/// The answer, as NDJSON: a first line `{"type":"poll","next":N}`, then
/// one line per message of `out`, in order: the payloads of its frames,
/// the very JSON the WebSocket and SSE clients get (single lines: the
/// encoder escapes control characters).
pub fn poll_body(next: u64, out: &mut Outbox) -> Vec<u8> {
    let mut body = Vec::with_capacity(out.len_bytes() + 64);
    body.extend_from_slice(b"{\"type\":\"poll\",\"next\":");
    wire::encode::write_u64(&mut body, next);
    body.extend_from_slice(b"}\n");
    while let Some((frame, _)) = out.pop_frame() {
        body.extend_from_slice(&wire::encode::frame_payload(&frame));
        body.push(b'\n');
    }
    body
}
