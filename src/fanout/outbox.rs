//! The frames waiting to be written to one socket, in order, handed to
//! `writev` as up to [`MAX_IOV`] slices at a time: clones of the
//! publisher's `Bytes`, never copies.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Frames waiting to be written to one socket, in order. The first frame
/// may be partly written already.
#[derive(Default)]
pub struct Outbox {
    frames: VecDeque<Queued>,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
    bytes: usize,
}

/// A frame, and the global sequence of the update it carries (0 for a
/// control message or a definition: sequences start at 1). A writer that
/// frames updates its own way (the SSE stream's event ids) takes the
/// sequence from here rather than parsing it back out of the frame.
struct Queued {
    frame: Bytes,
    seq: u64,
}

/// Linux's IOV_MAX: the most buffers one `writev` takes.
pub const MAX_IOV: usize = 1024;

impl Outbox {
    /// Queues a control message or a definition.
    pub fn push(&mut self, frame: Bytes) {
        self.push_update(frame, 0);
    }

    /// Queues an update's frame with its global sequence.
    pub fn push_update(&mut self, frame: Bytes, seq: u64) {
        self.bytes += frame.len();
        self.frames.push_back(Queued { frame, seq });
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
            iov.push(IoSlice::new(&q.frame[start..]));
            bytes += q.frame.len() - start;
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
            let left = head.frame.len() - self.head_written;
            if written < left {
                self.head_written += written;
                break;
            }
            written -= left;
            self.bytes -= head.frame.len();
            self.head_written = 0;
            self.frames.pop_front();
            done += 1;
        }
        done
    }

    /// Drops every frame not yet started, keeping the rest of a frame that
    /// is half written (cutting it would corrupt the stream). Used before a
    /// close frame when the peer has stopped reading.
    pub fn keep_partial_only(&mut self) {
        let keep = usize::from(self.head_written > 0);
        while self.frames.len() > keep {
            if let Some(q) = self.frames.pop_back() {
                self.bytes -= q.frame.len();
            }
        }
    }

    /// Takes the first frame whole, with the global sequence of the update
    /// it carries (`None` for anything else), for a writer that frames the
    /// bytes its own way (the SSE stream) rather than writing them as they
    /// are. Only for an outbox nothing has been partly written from.
    pub fn pop_frame(&mut self) -> Option<(Bytes, Option<u64>)> {
        debug_assert_eq!(self.head_written, 0, "pop_frame after a partial write");
        let Queued { frame, seq } = self.frames.pop_front()?;
        self.bytes -= frame.len();
        Some((frame, (seq > 0).then_some(seq)))
    }

    /// The unwritten bytes as one buffer (for tests).
    pub fn concat(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len_bytes());
        for (i, q) in self.frames.iter().enumerate() {
            let mut f = q.frame.clone();
            if i == 0 {
                f.advance(self.head_written);
            }
            out.extend_from_slice(&f);
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
        out.push_update(Bytes::from_static(b"quote"), 42);
        out.push_update(Bytes::from_static(b"trade"), u64::MAX);
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
}
