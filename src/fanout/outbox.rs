//! The frames waiting to be written to one socket, in order, handed to
//! `writev` as up to [`MAX_IOV`] slices at a time: the publisher's bytes,
//! never copies.
//!
//! An update's frame is carved out of one of the publisher's arena chunks
//! (`wire::encode`, 64 KiB, a few hundred frames each), and every `Bytes`
//! of a chunk shares one reference count. Cloning each frame into the
//! outbox made every connection touch that count twice per frame, from
//! every writer thread at once: a quarter of the server's CPU at 1,000
//! subscribers. The outbox instead keeps one `Bytes` per chunk (a
//! [`Keeper`]) and queues its frames as plain pointers into it. A chunk
//! holds one format's frames end to end, so a connection that takes every
//! update of a batch (`*`) queues the run as one entry, written as one
//! buffer.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

use crate::wire::encode::{put_header, MAX_HEADER_LEN, OPCODE_BINARY, OPCODE_TEXT};

/// Frames waiting to be written to one socket, in order. The first frame
/// may be partly written already.
#[derive(Default)]
pub struct Outbox {
    /// Whether adjacent frames of one chunk are queued as one entry; off
    /// for a writer that takes frames one by one ([`pop_frame`](Self::pop_frame)).
    merge: bool,
    frames: VecDeque<Queued>,
    /// What keeps the queued frames' memory alive, oldest first.
    keepers: VecDeque<Keeper>,
    /// Keepers ever pushed: the number the next one gets.
    kept: u64,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
    bytes: usize,
}

/// One `Bytes` that keeps a run of queued frames' memory alive: a frame
/// from an arena chunk (which keeps the whole chunk), or a frame of its own.
struct Keeper {
    /// The arena chunk, for updates; `None` for a frame of its own.
    chunk: Option<u64>,
    bytes: Bytes,
}

/// A frame (or, merging, a run of adjacent frames), and the global
/// sequence of the (last) update it carries (0 for a control message or a
/// definition: sequences start at 1). A writer that frames updates its own
/// way (the SSE stream's event ids) takes the sequence from here rather
/// than parsing it back out of the frame.
#[derive(Clone, Copy)]
struct Queued {
    /// The frames' bytes, inside the memory of keeper number `keeper`.
    ptr: *const u8,
    len: usize,
    keeper: u64,
    seq: u64,
    /// Frames in the run (for a batch: the frames it carries).
    count: u32,
    /// A batch made by [`Outbox::batch`], never batched again.
    batch: bool,
}

// SAFETY: a `Queued` pointer is only read, and only while the keeper that
// owns its memory is in the same outbox; keepers are `Bytes`, which are
// `Send` and `Sync`, and their memory is immutable. So an outbox may move to,
// and be shared with, another thread as its keepers can.
unsafe impl Send for Outbox {}
// SAFETY: as for `Send`: `&Outbox` only reads frames through the pointers.
unsafe impl Sync for Outbox {}

/// Linux's IOV_MAX: the most buffers one `writev` takes.
pub const MAX_IOV: usize = 1024;

/// The most payload bytes one batch ([`Outbox::batch`]) carries.
pub const MAX_BATCH: usize = 64 * 1024;

/// Data frames [`Outbox::batch`] is gathering into one.
#[derive(Default)]
struct Run {
    opcode: u8,
    /// [`MAX_HEADER_LEN`] bytes kept for the header, then the payloads: the
    /// frame is made in place, the payloads copied once.
    buf: Vec<u8>,
    count: u32,
    seq: u64,
}

impl Run {
    fn payload_len(&self) -> usize {
        self.buf.len().saturating_sub(MAX_HEADER_LEN)
    }

    fn push(&mut self, opcode: u8, payload: &[u8], seq: u64) {
        if self.count == 0 {
            self.buf.resize(MAX_HEADER_LEN, 0);
        } else if opcode == OPCODE_TEXT {
            self.buf.push(b'\n');
        }
        self.opcode = opcode;
        self.buf.extend_from_slice(payload);
        self.count += 1;
        self.seq = seq;
    }

    /// The run as one frame, with the frames it carries and its last
    /// sequence, if it holds any; starts over.
    fn take(&mut self) -> Option<(Bytes, u32, u64)> {
        let mut run = std::mem::take(self);
        if run.count == 0 {
            return None;
        }
        let mut header = bytes::BytesMut::with_capacity(MAX_HEADER_LEN);
        put_header(&mut header, run.opcode, run.payload_len());
        let start = MAX_HEADER_LEN - header.len();
        run.buf[start..MAX_HEADER_LEN].copy_from_slice(&header);
        Some((Bytes::from(run.buf).slice(start..), run.count, run.seq))
    }
}

impl Outbox {
    /// An outbox that queues adjacent frames of one chunk as one entry.
    pub fn merging() -> Self {
        Outbox {
            merge: true,
            ..Outbox::default()
        }
    }

    /// Queues a control message or a definition.
    pub fn push(&mut self, frame: Bytes) {
        let (ptr, len) = (frame.as_ptr(), frame.len());
        let keeper = self.keep(None, frame);
        self.queue(ptr, len, keeper, 0);
    }

    /// Queues an update's frame, carved from arena chunk `chunk`, with its
    /// global sequence. Clones `frame` only if it is the first of its chunk
    /// since the last frame of another chunk.
    #[inline]
    pub fn push_update(&mut self, frame: &Bytes, chunk: u64, seq: u64) {
        self.push_run(frame, chunk, frame.len(), 1, seq);
    }

    /// Whether adjacent frames of one chunk go as one entry, so that a
    /// fill may hand over a run of them at once ([`push_run`](Self::push_run)).
    pub fn merges(&self) -> bool {
        self.merge
    }

    /// Queues `count` update frames that lie end to end in arena chunk
    /// `chunk`, `len` bytes from the start of `first` (the first of them),
    /// with the global sequence of the last. Runs of more than one frame
    /// only into a merging outbox: [`pop_frame`](Self::pop_frame) takes
    /// one frame per entry.
    ///
    /// Once per frame per connection, or per run: the common case (the run
    /// extends the last entry) is inline, the rest is not.
    #[inline]
    pub fn push_run(&mut self, first: &Bytes, chunk: u64, len: usize, count: u32, seq: u64) {
        debug_assert!(len >= first.len() && (count == 1 || self.merge));
        if self.merge {
            let newest = self.kept.wrapping_sub(1);
            if let (Some(last), Some(k)) = (self.frames.back_mut(), self.keepers.back()) {
                // The newest keeper, of the same chunk (one allocation),
                // and end to end: the two ranges make one.
                if last.keeper == newest
                    && k.chunk == Some(chunk)
                    && last.ptr.wrapping_add(last.len) == first.as_ptr()
                {
                    last.len += len;
                    last.seq = seq;
                    last.count += count;
                    self.bytes += len;
                    return;
                }
            }
        }
        self.push_run_entry(first, chunk, len, count, seq);
    }

    /// [`push_run`](Self::push_run) as a new entry: once per fill at
    /// least, so not cold, but out of the per-frame path.
    #[inline(never)]
    fn push_run_entry(&mut self, first: &Bytes, chunk: u64, len: usize, count: u32, seq: u64) {
        let keeper = match self.keepers.back() {
            Some(k) if k.chunk == Some(chunk) => self.kept - 1,
            _ => self.keep(Some(chunk), first.clone()),
        };
        self.enqueue(Queued {
            ptr: first.as_ptr(),
            len,
            keeper,
            seq,
            count,
            batch: false,
        });
    }

    /// Adds a keeper; returns its number.
    fn keep(&mut self, chunk: Option<u64>, bytes: Bytes) -> u64 {
        self.keepers.push_back(Keeper { chunk, bytes });
        self.kept += 1;
        self.kept - 1
    }

    fn queue(&mut self, ptr: *const u8, len: usize, keeper: u64, seq: u64) {
        self.enqueue(Queued {
            ptr,
            len,
            keeper,
            seq,
            count: 1,
            batch: false,
        });
    }

    fn enqueue(&mut self, q: Queued) {
        self.bytes += q.len;
        self.frames.push_back(q);
    }

    /// Makes each run of whole data frames of one opcode that are not yet
    /// started into one frame, for a client that asked for batches
    /// (`/ws?batch=1`): a browser pays per WebSocket message (a task, an
    /// event, an IPC hop: about 30 µs in Chromium), not per byte. Binary
    /// payloads go end to end (each update's type says its length); text
    /// payloads one per line. Control frames and compressed frames stay as
    /// they are, in order. The payloads are copied, once: a frame this
    /// made is never batched again. Batches hold at most [`MAX_BATCH`]
    /// payload bytes.
    pub fn batch(&mut self) {
        let start = usize::from(self.head_written > 0);
        let fresh = self.frames.iter().skip(start).filter(|q| !q.batch);
        if fresh.map(|q| q.count as usize).sum::<usize>() < 2 {
            return;
        }
        let old: Vec<Queued> = self.frames.drain(start..).collect();
        // What to queue, in order: frames made here, or batches made before.
        let mut out: Vec<Result<(Bytes, u32, u64), Queued>> = Vec::new();
        let mut run = Run::default();
        for q in &old {
            if q.batch {
                out.extend(run.take().map(Ok));
                out.push(Err(*q));
                continue;
            }
            let bytes = self.frame(q);
            let mut at = 0;
            while let Some(h) = crate::wire::frame::parse(&bytes[at..]) {
                let end = at + h.header_len + h.payload_len as usize;
                let Some(payload) = bytes.get(at + h.header_len..end) else {
                    debug_assert!(false, "a queued frame is whole");
                    break;
                };
                let data = h.fin && h.rsv == 0 && matches!(h.opcode, OPCODE_TEXT | OPCODE_BINARY);
                if !data || run.opcode != h.opcode || run.payload_len() + payload.len() >= MAX_BATCH
                {
                    out.extend(run.take().map(Ok));
                }
                if data {
                    run.push(h.opcode, payload, q.seq);
                } else {
                    // Copied too: a later frame may not name an older keeper.
                    out.push(Ok((Bytes::copy_from_slice(&bytes[at..end]), 1, q.seq)));
                }
                at = end;
            }
        }
        out.extend(run.take().map(Ok));
        // The old frames' bytes were counted once already.
        self.bytes -= old
            .iter()
            .filter(|q| !q.batch)
            .map(|q| q.len)
            .sum::<usize>();
        for made in out {
            match made {
                Ok((frame, count, seq)) => self.requeue(frame, count, seq),
                Err(q) => self.frames.push_back(q),
            }
        }
        self.release_front();
    }

    /// Queues a frame [`batch`](Self::batch) made, of its own keeper.
    fn requeue(&mut self, frame: Bytes, count: u32, seq: u64) {
        let (ptr, len) = (frame.as_ptr(), frame.len());
        let keeper = self.keep(None, frame);
        self.enqueue(Queued {
            ptr,
            len,
            keeper,
            seq,
            count,
            batch: true,
        });
    }

    /// The number of the oldest keeper still held.
    fn first_kept(&self) -> u64 {
        self.kept - self.keepers.len() as u64
    }

    fn frame(&self, q: &Queued) -> &[u8] {
        debug_assert!(q.keeper >= self.first_kept() && q.keeper < self.kept);
        // SAFETY: `q` was queued from a `Bytes` of `q.len` bytes at `q.ptr`
        // (or from several, end to end in one chunk), whose memory keeper
        // number `q.keeper` keeps alive: that keeper is either the `Bytes`
        // itself (a frame of its own), or a `Bytes` of the same arena chunk,
        // and a chunk's memory is freed only with its last `Bytes` (bytes'
        // shared representation: `BytesMut::split` shares one allocation by
        // reference count) and is never written again once split off.
        // Keepers leave the outbox only after every frame that names them
        // (`advance`, `keep_partial_only`, `pop_frame`).
        unsafe { std::slice::from_raw_parts(q.ptr, q.len) }
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes not yet written.
    pub fn len_bytes(&self) -> usize {
        self.bytes - self.head_written
    }

    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    /// Appends the unwritten bytes to `iov`, in order, as up to [`MAX_IOV`]
    /// slices; returns how many bytes they hold.
    pub fn io_slices<'a>(&'a self, iov: &mut Vec<IoSlice<'a>>) -> usize {
        let mut bytes = 0;
        for (i, q) in self.frames.iter().enumerate().take(MAX_IOV) {
            let start = if i == 0 { self.head_written } else { 0 };
            iov.push(IoSlice::new(&self.frame(q)[start..]));
            bytes += q.len - start;
        }
        bytes
    }

    /// Records that `written` more bytes went out. Returns how many frames
    /// that completed.
    pub fn advance(&mut self, mut written: usize) -> usize {
        let mut done = 0;
        while written > 0 {
            let Some(head) = self.frames.front() else {
                debug_assert!(false, "advanced past the outbox");
                break;
            };
            let left = head.len - self.head_written;
            if written < left {
                self.head_written += written;
                break;
            }
            written -= left;
            self.bytes -= head.len;
            done += head.count as usize;
            self.head_written = 0;
            self.frames.pop_front();
        }
        self.release_front();
        done
    }

    /// Drops the keepers no queued frame names any more, from the front.
    fn release_front(&mut self) {
        let needed = self.frames.front().map_or(self.kept, |q| q.keeper);
        for _ in self.first_kept()..needed {
            self.keepers.pop_front();
        }
    }

    /// Drops every frame not yet started, keeping the rest of a frame that
    /// is half written (cutting it would corrupt the stream). Used before a
    /// close frame when the peer has stopped reading.
    pub fn keep_partial_only(&mut self) {
        let keep = usize::from(self.head_written > 0);
        while self.frames.len() > keep {
            if let Some(q) = self.frames.pop_back() {
                self.bytes -= q.len;
            }
        }
        self.cut_head_run();
        // Keepers after the last frame's go (their numbers are reused).
        let first = self.first_kept();
        let end = self.frames.back().map_or(first, |q| q.keeper + 1);
        self.keepers.truncate((end - first) as usize);
        self.kept = end;
    }

    /// Cuts a half-written run of merged frames after the frame being
    /// written, so that only that frame's rest goes out before a close.
    fn cut_head_run(&mut self) {
        let Some(q) = self.frames.front() else {
            return;
        };
        if q.count <= 1 || q.batch {
            return;
        }
        let run = self.frame(q);
        let (mut end, mut frames) = (0, 0);
        // Server frames, whole and end to end: each header says where the
        // next one starts.
        while end < self.head_written.max(1) {
            let Some(h) = crate::wire::frame::parse(&run[end..]) else {
                debug_assert!(false, "a run of whole frames");
                return;
            };
            end += h.header_len + h.payload_len as usize;
            frames += 1;
        }
        if end == self.head_written {
            // Written up to a frame's end: nothing of the run is owed.
            self.bytes -= q.len;
            self.head_written = 0;
            self.frames.pop_front();
            self.release_front();
            return;
        }
        let cut = q.len - end;
        let q = &mut self.frames[0];
        q.len = end;
        q.count = frames;
        self.bytes -= cut;
    }

    /// Takes the first frame whole, with the global sequence of the update
    /// it carries (`None` for anything else), for a writer that frames the
    /// bytes its own way (the SSE stream) rather than writing them as they
    /// are. Only for an outbox nothing has been partly written from. A
    /// frame of a shared chunk comes out copied (SSE copies it into its
    /// event anyway).
    pub fn pop_frame(&mut self) -> Option<(Bytes, Option<u64>)> {
        debug_assert_eq!(self.head_written, 0, "pop_frame after a partial write");
        debug_assert!(!self.merge, "pop_frame on a merging outbox");
        let q = self.frames.front()?;
        let keeper = &self.keepers[(q.keeper - self.first_kept()) as usize];
        let frame = match keeper.chunk {
            None => keeper.bytes.clone(),
            Some(_) => Bytes::copy_from_slice(self.frame(q)),
        };
        let seq = q.seq;
        self.bytes -= q.len;
        self.frames.pop_front();
        self.release_front();
        Some((frame, (seq > 0).then_some(seq)))
    }

    /// The unwritten bytes as one buffer (for tests).
    pub fn concat(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len_bytes());
        for (i, q) in self.frames.iter().enumerate() {
            let start = if i == 0 { self.head_written } else { 0 };
            out.extend_from_slice(&self.frame(q)[start..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_tracks_partial_writes() {
        let mut out = Outbox::default();
        out.push(Bytes::from_static(b"abc"));
        out.push(Bytes::from_static(b"de"));
        out.push(Bytes::from_static(b"f"));
        assert_eq!(out.advance(4), 1);
        assert_eq!(out.concat(), b"ef");
        let mut iov = Vec::new();
        assert_eq!(out.io_slices(&mut iov), 2);
        assert_eq!(iov.len(), 2);
        assert_eq!(&*iov[0], b"e");
        // Cut back to the half-written frame only.
        out.keep_partial_only();
        assert_eq!(out.concat(), b"e");
        assert_eq!(out.advance(1), 1);
        assert!(out.is_empty());
        assert_eq!(out.len_bytes(), 0);
    }

    #[test]
    fn an_update_keeps_its_sequence_and_nothing_else_has_one() {
        let mut out = Outbox::default();
        out.push(Bytes::from_static(b"ack"));
        out.push_update(&Bytes::from_static(b"quote"), 1, 42);
        out.push_update(&Bytes::from_static(b"trade"), 2, u64::MAX);
        assert_eq!(out.concat(), b"ackquotetrade");
        assert_eq!(out.pop_frame(), Some((Bytes::from_static(b"ack"), None)));
        assert_eq!(
            out.pop_frame(),
            Some((Bytes::from_static(b"quote"), Some(42)))
        );
        assert_eq!(
            out.pop_frame(),
            Some((Bytes::from_static(b"trade"), Some(u64::MAX)))
        );
        assert_eq!(out.pop_frame(), None);
        assert_eq!(out.len_bytes(), 0);
    }

    /// Frames split from one arena, as the encoder carves them.
    fn carve(frames: &[&[u8]]) -> Vec<Bytes> {
        let mut arena = bytes::BytesMut::with_capacity(64);
        frames
            .iter()
            .map(|f| {
                arena.extend_from_slice(f);
                arena.split().freeze()
            })
            .collect()
    }

    #[test]
    fn frames_of_one_chunk_share_one_keeper_which_outlives_them() {
        let chunk7 = carve(&[b"ab", b"cd", b"ef"]);
        let chunk8 = carve(&[b"gh"]);
        let mut out = Outbox::default();
        out.push_update(&chunk7[0], 7, 1);
        out.push_update(&chunk7[1], 7, 2);
        out.push(Bytes::from_static(b"!"));
        out.push_update(&chunk7[2], 7, 3);
        out.push_update(&chunk8[0], 8, 4);
        // TC0: one keeper per run of a chunk, one per frame of its own.
        assert_eq!(out.keepers.len(), 4);
        // The arena's own handles go; the outbox's keepers hold the memory.
        drop((chunk7, chunk8));
        assert_eq!(out.concat(), b"abcd!efgh");
        // TC1: a keeper goes when the last frame naming it is written.
        assert_eq!(out.advance(3), 1);
        assert_eq!(out.keepers.len(), 4, "cd still needs chunk 7");
        assert_eq!(out.advance(1), 1);
        assert_eq!(out.keepers.len(), 3);
        assert_eq!(out.concat(), b"!efgh");
        // TC2: popped whole, a chunk frame comes out as its own bytes.
        assert_eq!(out.pop_frame(), Some((Bytes::from_static(b"!"), None)));
        assert_eq!(out.pop_frame(), Some((Bytes::from_static(b"ef"), Some(3))));
        assert_eq!(out.keepers.len(), 1);
        // TC3: cut back to a half-written frame, later keepers go, and the
        // next frame of the same chunk gets a keeper again.
        let chunk9 = carve(&[b"ij", b"kl"]);
        out.push_update(&chunk9[0], 9, 5);
        out.advance(1);
        out.keep_partial_only();
        assert_eq!(out.keepers.len(), 1);
        assert_eq!(out.concat(), b"h");
        out.push_update(&chunk9[1], 9, 6);
        assert_eq!(out.keepers.len(), 2);
        drop(chunk9);
        assert_eq!(out.concat(), b"hkl");
        out.advance(3);
        assert!(out.keepers.is_empty() && out.is_empty());
    }

    #[test]
    fn a_merging_outbox_queues_adjacent_frames_of_a_chunk_as_one_entry() {
        let chunk = carve(&[b"ab", b"cd", b"ef", b"gh"]);
        let mut out = Outbox::merging();
        out.push_update(&chunk[0], 1, 1);
        out.push_update(&chunk[1], 1, 2);
        // TC0: a gap (a frame this connection skips) starts a new entry.
        out.push_update(&chunk[3], 1, 4);
        assert_eq!((out.frames.len(), out.keepers.len()), (2, 1));
        assert_eq!(out.concat(), b"abcdgh");
        // TC1: a run completes, and counts its frames, when all is written.
        assert_eq!(out.advance(3), 0);
        assert_eq!(out.advance(1), 2);
        // TC2: a control frame in between is never merged into a run.
        out.push(Bytes::from_static(b"!"));
        let more = carve(&[b"ij", b"kl"]);
        out.push_update(&more[0], 2, 5);
        out.push_update(&more[1], 2, 6);
        assert_eq!(out.frames.len(), 3);
        drop((chunk, more));
        assert_eq!(out.concat(), b"gh!ijkl");
        assert_eq!(out.advance(7), 4);
        assert!(out.is_empty() && out.keepers.is_empty());
    }

    #[test]
    fn cutting_back_a_merged_run_keeps_only_the_frame_being_written() {
        let frames: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                crate::wire::encode::frame(crate::wire::encode::OPCODE_BINARY, &[i; 5]).to_vec()
            })
            .collect();
        let chunk = carve(&frames.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let mut out = Outbox::merging();
        for (i, f) in chunk.iter().enumerate() {
            out.push_update(f, 3, i as u64 + 1);
        }
        assert_eq!(out.frames.len(), 1);
        // 7-byte frames (2 header, 5 payload): 9 bytes written ends in the second.
        out.advance(9);
        out.keep_partial_only();
        assert_eq!(out.len_bytes(), 5, "the second frame's last 5 bytes");
        assert_eq!(out.concat(), &frames[1][2..]);
        assert_eq!(out.advance(5), 2, "the run's two frames counted");
        assert!(out.is_empty());
        // Written up to a frame's end, nothing of the run is owed.
        for (i, f) in chunk.iter().enumerate() {
            out.push_update(f, 3, i as u64 + 1);
        }
        out.advance(7);
        out.keep_partial_only();
        assert!(out.is_empty() && out.keepers.is_empty());
        assert_eq!(out.len_bytes(), 0);
    }

    #[test]
    fn a_batch_carries_each_run_of_data_frames_as_one_frame() {
        use crate::wire::encode::{frame, OPCODE_BINARY as BIN, OPCODE_PING, OPCODE_TEXT as TEXT};
        let updates: Vec<Vec<u8>> = (0..=5u8).map(|i| frame(BIN, &[i; 5]).to_vec()).collect();
        let chunk = carve(&updates.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let mut out = Outbox::merging();
        out.push(frame(BIN, &[9; 5]));
        // TC0: the frame being written is left whole.
        out.advance(1);
        out.push_update(&chunk[2], 1, 2);
        out.push_update(&chunk[3], 1, 3);
        out.push(frame(TEXT, b"{\"a\":1}"));
        out.push(frame(TEXT, b"{\"b\":2}"));
        out.push(frame(OPCODE_PING, b""));
        out.push_update(&chunk[4], 1, 4);
        out.batch();
        drop(chunk.clone());
        // TC1: binary end to end, text one per line, a control frame as it
        // was, in order.
        let want = [
            &frame(BIN, &[9; 5])[1..],
            &frame(BIN, &[[2u8; 5], [3; 5]].concat())[..],
            &frame(TEXT, b"{\"a\":1}\n{\"b\":2}")[..],
            &frame(OPCODE_PING, b"")[..],
            &frame(BIN, &[4u8; 5])[..],
        ]
        .concat();
        assert_eq!(out.concat(), want);
        assert_eq!(out.len_bytes(), want.len());
        // TC2: a batch is not batched again; what comes after it is.
        out.push_update(&chunk[5], 1, 5);
        out.push(frame(BIN, &[6u8; 5]));
        out.batch();
        let tail = [
            &frame(BIN, &[4u8; 5])[..],
            &frame(BIN, &[[5u8; 5], [6; 5]].concat())[..],
        ]
        .concat();
        assert!(out.concat().ends_with(&tail));
        // TC3: every frame a batch carries is counted when it is written.
        assert_eq!(out.advance(out.len_bytes()), 9);
        assert!(out.is_empty() && out.keepers.is_empty());
    }
}
