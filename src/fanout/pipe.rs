//! A connection's [`Pipe`]: what it sends, written by its task or by its
//! writer shard ([`super::shard`]).

use std::io::IoSlice;

use crate::fanout::{Outbox, Subscriber};
use crate::metrics::Metrics;

/// What one connection sends, written by its task or by its shard.
pub struct Pipe {
    pub sub: Subscriber,
    pub outbox: Outbox,
    /// The connection's task is writing (the socket would block, or the
    /// connection is closing): the shard leaves the pipe alone.
    pub held: bool,
    /// The connection is closing: the pipe stays held.
    pub closing: bool,
    /// The outbox size last added to the `queued_bytes` gauge.
    reported_queue: usize,
    /// The client asked for several updates per message (`/ws?batch=1`):
    /// the outbox is batched before each write.
    batch: bool,
}

impl Pipe {
    pub fn new(sub: Subscriber) -> Self {
        Pipe {
            sub,
            outbox: Outbox::merging(),
            held: false,
            closing: false,
            reported_queue: 0,
            batch: false,
        }
    }

    /// The pipe, batched before each write if `on` (`/ws?batch=1`).
    pub fn batched(mut self, on: bool) -> Self {
        self.batch = on;
        self
    }

    /// Keeps the shard off for good: a close frame is queued, or about to
    /// be, and nothing may follow it. Under the same lock as the close, so
    /// that no pass fills in between.
    pub fn hold_for_close(&mut self) {
        self.held = true;
        self.closing = true;
    }

    /// Moves what the ring holds for this connection into the outbox.
    pub fn fill(&mut self) {
        self.sub.fill(&mut self.outbox);
    }

    /// Calls `write` with the unwritten bytes (up to [`MAX_IOV`](crate::fanout::MAX_IOV)
    /// frames; batched first if the client asked) and how many bytes they
    /// hold.
    pub fn with_slices<R>(&mut self, write: impl FnOnce(&[IoSlice<'_>], usize) -> R) -> R {
        if self.batch {
            self.outbox.batch();
        }
        let mut iov = Vec::with_capacity(self.outbox.frame_count().min(crate::fanout::MAX_IOV));
        let offered = self.outbox.io_slices(&mut iov);
        write(&iov, offered)
    }

    /// Records `n` bytes written by one system call.
    pub fn wrote(&mut self, n: usize, tally: &mut Tally) {
        tally.frames += self.outbox.advance(n) as u64;
        tally.bytes += n as u64;
        tally.writes += 1;
    }

    /// Brings the server-wide `queued_bytes` gauge up to date with this
    /// pipe's outbox.
    pub fn report_queue(&mut self) {
        let now = self.outbox.len_bytes();
        let gauge = &self.sub.market.metrics.queued_bytes;
        if now >= self.reported_queue {
            gauge.add((now - self.reported_queue) as u64);
        } else {
            gauge.sub((self.reported_queue - now) as u64);
        }
        self.reported_queue = now;
    }

    /// Records that a writer shard held the pipe back to its task.
    pub fn held_back(&mut self, tally: &mut Tally) {
        self.held = true;
        tally.holds += 1;
    }

    /// Empties the outbox (the connection has ended) and says so to the
    /// gauge.
    pub fn discard(&mut self) {
        self.outbox = Outbox::default();
        self.report_queue();
    }
}

/// Writes counted locally and added to the shared counters once per pass
/// or flush, not once per system call.
#[derive(Default)]
pub struct Tally {
    writes: u64,
    bytes: u64,
    frames: u64,
    holds: u64,
}

impl Tally {
    pub fn report(&mut self, metrics: &Metrics) {
        if self.writes > 0 {
            metrics.writev_calls_total.add(self.writes);
            metrics.bytes_out_total.add(self.bytes);
            metrics.frames_out_total.add(self.frames);
        }
        if self.holds > 0 {
            metrics.writer_holds_total.add(self.holds);
        }
        *self = Tally::default();
    }
}
