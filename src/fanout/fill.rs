//! A fill: the frames one connection takes from the ring, moved into its
//! outbox. Once per frame per connection, so its common case (a wanted
//! entry, nothing floored or held, the frame as encoded) costs a few
//! compares: consecutive frames of one arena chunk gather in a [`Run`] and
//! go into the outbox as one entry, and only the rest takes the general
//! way ([`Subscriber::take`]).

use bytes::Bytes;

use super::{clock_ms, floor_class, Outbox, Subscriber};
use crate::market::Published;
use crate::ring::Read;
use crate::update::SymbolId;
use crate::wire::Format;

/// Update frames a fill has taken and not yet queued: end to end in one
/// arena chunk, so they go into the outbox as one entry
/// ([`Outbox::push_run`]), and a frame that extends them costs a compare
/// and two adds instead of a visit to the outbox's queues.
#[derive(Default)]
struct Run<'a> {
    /// The first frame (None: the run is empty); the rest follow it.
    first: Option<&'a Bytes>,
    chunk: u64,
    len: usize,
    count: u32,
    seq: u64,
}

impl<'a> Run<'a> {
    fn of(frame: &'a Bytes, chunk: u64, seq: u64) -> Self {
        Run {
            first: Some(frame),
            chunk,
            len: frame.len(),
            count: 1,
            seq,
        }
    }

    /// Adds `frame` if it starts where the run ends, in the same chunk
    /// (one allocation: two chunks may lie end to end in memory, and the
    /// first's keeper does not keep the second alive).
    #[inline]
    fn extend(&mut self, frame: &Bytes, chunk: u64, seq: u64) -> bool {
        let Some(first) = self.first else {
            return false;
        };
        if first.as_ptr().wrapping_add(self.len) != frame.as_ptr() || chunk != self.chunk {
            return false;
        }
        self.len += frame.len();
        self.count += 1;
        self.seq = seq;
        true
    }

    /// Queues the run, if any, and empties it.
    #[inline]
    fn queue(&mut self, out: &mut Outbox) {
        if let Some(first) = self.first.take() {
            out.push_run(first, self.chunk, self.len, self.count, self.seq);
            *self = Run::default();
        }
    }
}

impl Subscriber {
    /// Moves pending frames from the ring into `out`, up to the outbox
    /// bound. Returns the number of ring entries it consumed.
    pub fn fill(&mut self, out: &mut Outbox) -> u64 {
        let now = match self.throttle {
            Some(_) => clock_ms(),
            None => 0,
        };
        self.fill_at(out, now)
    }

    /// [`fill`](Self::fill) at `now` on [`clock_ms`]'s scale.
    pub(super) fn fill_at(&mut self, out: &mut Outbox, now: u64) -> u64 {
        if self.is_idle() {
            return 0;
        }
        self.now_ms = self.now_ms.max(now);
        if self.all && self.all_channels.book_variants().next().is_some() {
            self.join_new_books(out);
        }
        let Some(hold_at) = self.read_due(out) else {
            return 0;
        };
        let start = self.cursor;
        let ring = self.market.ring.clone();
        let guard = ring.pin();
        // Once per fill, not per entry: a fill is bounded by the outbox, and
        // a connection that lags while it writes is caught at the next one.
        if ring.tail().saturating_sub(self.cursor) > self.limits.max_lag_updates {
            self.catch_up(out);
        }
        // Frames taken and not yet queued, end to end in one chunk; queued
        // as one entry before anything else goes into `out`.
        let mut run = Run::default();
        // What a fill cannot change: a throttle comes only with a request.
        let runs = out.merges() && self.deflate_min == 0 && self.throttle.is_none();
        while out.len_bytes() + run.len < self.limits.max_outbox_bytes {
            match ring.read(&guard, self.cursor) {
                Read::Empty => break,
                Read::Lapped { .. } => {
                    run.queue(out);
                    self.catch_up(out);
                }
                Read::Item(p) => {
                    self.cursor += 1;
                    if !self.floors.is_empty() && self.cursor > self.floor_until {
                        self.floors.clear();
                    }
                    let wanted = self.wants(p);
                    if !self.joined.is_empty() {
                        run.queue(out);
                        // Symbols that joined `*` just now: their books
                        // first, as of now; this entry is then held to them.
                        for j in std::mem::take(&mut self.joined) {
                            self.send_latest(&j, out);
                        }
                    }
                    if !wanted {
                        continue;
                    }
                    // The common case, once per frame: nothing floored or
                    // held, the symbol defined, the frame as encoded.
                    if runs && self.floors.is_empty() && self.defined.contains(p.symbol) {
                        let (frame, chunk) = (p.frame(self.format), p.chunk(self.format));
                        if !run.extend(frame, chunk, p.seq) {
                            run.queue(out);
                            run = Run::of(frame, chunk, p.seq);
                        }
                        continue;
                    }
                    run.queue(out);
                    self.take(p, out, hold_at);
                }
            }
        }
        run.queue(out);
        // After the read: what came up to now goes with an interval that
        // ends now.
        self.release(out);
        self.cursor - start
    }

    /// When every symbol the connection takes is throttled, whether the
    /// ring is due to be read now: the time the entries read now are held
    /// as of, or None (what throttles hold is released, nothing read).
    fn read_due(&mut self, out: &mut Outbox) -> Option<u64> {
        let Some((at, shortest)) = self.read_at else {
            return Some(self.now_ms);
        };
        let behind = self.market.ring.tail().saturating_sub(self.cursor);
        if self.now_ms < at && behind < self.limits.max_lag_updates / 2 {
            self.release(out);
            return None;
        }
        let ms = u64::from(shortest);
        self.read_at = Some(((self.now_ms / ms + 1) * ms, shortest));
        if self.now_ms >= at && at > 0 {
            // Read at the grid point: they came in the interval that ends
            // there, and go out with it, now.
            return Some(at - 1);
        }
        Some(self.now_ms)
    }

    /// Queues wanted entry `p` unless a floor or a throttle holds it back:
    /// the fill's way for everything but the common case.
    fn take(&mut self, p: &Published, out: &mut Outbox, hold_at: u64) {
        if let Some(&floor) = self.floors.get(&(p.symbol, floor_class(p))) {
            if p.seq <= floor {
                return;
            }
        }
        if let Some(t) = &mut self.throttle {
            let mut early = Vec::new();
            if t.hold(p, hold_at, &mut early) {
                if !early.is_empty() {
                    self.send_held(&early, out, false);
                }
                return;
            }
        }
        self.send(p, out);
    }

    /// Queues the symbol's definition unless this connection has it.
    /// Once per frame: the check is inline, the first time is not.
    #[inline]
    pub(super) fn define(&mut self, s: SymbolId, out: &mut Outbox) {
        if !self.defined.contains(s) {
            self.define_new(s, out);
        }
    }

    #[cold]
    #[inline(never)]
    fn define_new(&mut self, s: SymbolId, out: &mut Outbox) {
        self.defined.insert(s);
        if let Some(def) = self.market.symbols.get(s) {
            out.push(match self.format {
                Format::Binary => def.frame_binary,
                Format::Json => def.frame_json,
            });
        }
    }

    /// Queues `p`'s frame in this connection's format (its compressed form
    /// if the connection takes those and it has one).
    pub(super) fn push_frame(&self, p: &Published, out: &mut Outbox) {
        if self.deflate_min > 0 {
            let i = usize::from(self.format == Format::Json);
            if let Some((frame, chunk)) = p.frames.deflated(i, self.deflate_min) {
                out.push_update(frame, chunk, p.seq);
                return;
            }
        }
        out.push_update(p.frame(self.format), p.chunk(self.format), p.seq);
    }

    /// Queues `p`, which the connection has been found to want, as it is.
    pub(super) fn send(&mut self, p: &Published, out: &mut Outbox) {
        self.define(p.symbol, out);
        self.push_frame(p, out);
    }
}
