//! RFC 6455 §5.1: every frame a client sends must be masked, and a server
//! must close the connection (1002) on one that is not.
//!
//! fastwebsockets unmasks a masked frame and reads an unmasked one as it
//! is, without telling its caller which it was. [`MaskCheck`] sits under
//! its reader and follows the frame boundaries in the byte stream as the
//! bytes pass through: it reads each frame header's mask bit and length,
//! and steps over payloads by arithmetic alone (no copy, no allocation).
//! The bytes before an unmasked frame's second header byte (the one with
//! the mask bit) are passed on, so the frames before it are served; the
//! next read fails with an [`io::Error`] that [`is_unmasked`] recognises,
//! which the reader turns into close 1002 `unmasked client frame`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::frame;

/// Where [`FrameScanner`] is in the frame stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a header: the `got` bytes of it seen so far (a header can be cut
    /// across reads; [`frame::parse`] reads it once it is all here).
    Header {
        buf: [u8; frame::MAX_HEADER_LEN],
        got: u8,
    },
    /// `left` payload bytes to go.
    Payload { left: u64 },
    /// An unmasked frame was seen; nothing after it is looked at.
    Unmasked,
}

const FIRST: State = State::Header {
    buf: [0; frame::MAX_HEADER_LEN],
    got: 0,
};

/// Follows frame boundaries in a client's byte stream and finds the first
/// unmasked frame.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    state: State,
    /// Frames whose every byte has been fed.
    complete: u64,
    /// permessage-deflate was negotiated: a text or binary frame with RSV1
    /// is a compressed message's first frame.
    deflate: bool,
    /// Such frames seen: (frame index, it was text), oldest first.
    compressed: Vec<(u64, bool)>,
}

impl Default for FrameScanner {
    fn default() -> Self {
        FrameScanner {
            state: FIRST,
            complete: 0,
            deflate: false,
            compressed: Vec::new(),
        }
    }
}

impl FrameScanner {
    /// Takes the next bytes of the stream. `Err(i)`: `bytes[i]` is the
    /// second header byte of an unmasked frame (and every later call fails
    /// with `Err(0)`).
    ///
    /// With permessage-deflate, a text or binary frame with RSV1 (a
    /// compressed message's first frame) is passed on as a binary frame
    /// without RSV1, rewritten in `bytes`, and recorded in
    /// [`compressed`](Self::take_compressed): fastwebsockets knows no
    /// extension (it refuses RSV1) and would check a compressed text frame
    /// for UTF-8; the reader above inflates, and checks what it inflates
    /// to. RSV1 anywhere else is left for fastwebsockets to refuse (1002).
    pub fn feed(&mut self, bytes: &mut [u8]) -> Result<(), usize> {
        let mut i = 0;
        while i < bytes.len() {
            self.state = match self.state {
                State::Unmasked => return Err(0),
                State::Header { mut buf, got } => {
                    if got == 0 && self.deflate {
                        let b = bytes[i];
                        let opcode = b & 0x0f;
                        if b & 0x40 != 0 && (opcode == 1 || opcode == 2) {
                            bytes[i] = (b & 0xb0) | 0x2;
                            self.compressed.push((self.complete, opcode == 1));
                        }
                    }
                    // Take what is here of the header: its first two bytes,
                    // then the rest of the length they give.
                    let got = usize::from(got);
                    let need = match frame::prefix(&buf[..got]) {
                        Some(p) => p.header_len,
                        None => 2,
                    };
                    let take = (need - got).min(bytes.len() - i);
                    buf[got..got + take].copy_from_slice(&bytes[i..i + take]);
                    i += take;
                    let got = got + take;
                    if got == 2 && need == 2 {
                        // `bytes[i - 1]` was the second header byte.
                        if frame::prefix(&buf[..2]).is_some_and(|p| !p.masked) {
                            self.state = State::Unmasked;
                            return Err(i - 1);
                        }
                    }
                    match frame::parse(&buf[..got]) {
                        Some(h) if h.payload_len == 0 => {
                            self.complete += 1;
                            FIRST
                        }
                        Some(h) => State::Payload {
                            left: h.payload_len,
                        },
                        None => State::Header {
                            buf,
                            // At most MAX_HEADER_LEN (14).
                            got: got as u8,
                        },
                    }
                }
                State::Payload { left } => {
                    // Step over as much of the payload as is here.
                    let here = (bytes.len() - i) as u64;
                    let skip = left.min(here);
                    i += skip as usize;
                    if skip == left {
                        self.complete += 1;
                        FIRST
                    } else {
                        State::Payload { left: left - skip }
                    }
                }
            };
        }
        if self.state == State::Unmasked {
            return Err(0);
        }
        Ok(())
    }
}

/// The error a [`MaskCheck`] read fails with after an unmasked frame.
#[derive(Debug)]
struct UnmaskedFrame;

impl fmt::Display for UnmaskedFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unmasked client frame")
    }
}

impl std::error::Error for UnmaskedFrame {}

fn unmasked_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, UnmaskedFrame)
}

/// Whether `e` is a [`MaskCheck`]'s unmasked-frame error.
pub fn is_unmasked(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<UnmaskedFrame>())
}

/// How far the bytes a [`MaskCheck`] has passed up have got, for the
/// reader above it, which owns the check (inside fastwebsockets) and so
/// cannot ask it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Frames whose every byte has been passed up.
    complete: AtomicU64,
    /// Whether the bytes passed up end where a frame ends.
    at_boundary: AtomicBool,
    /// The compressed messages' first frames passed up and not yet taken:
    /// (frame index, it was text), oldest first.
    compressed: Mutex<Vec<(u64, bool)>>,
}

impl Progress {
    /// Whether every byte passed up belongs to the first `frames` frames:
    /// a reader that has taken `frames` frames has nothing buffered.
    /// Whether frame `index` was a compressed message's first frame, and
    /// if so whether it was text; forgets it, and any before it.
    pub fn take_compressed(&self, index: u64) -> Option<bool> {
        let mut c = self.compressed.lock().unwrap_or_else(|e| e.into_inner());
        let before = c.partition_point(|&(i, _)| i < index);
        c.drain(..before);
        match c.first() {
            Some(&(i, text)) if i == index => {
                c.remove(0);
                Some(text)
            }
            _ => None,
        }
    }

    pub fn all_taken(&self, frames: u64) -> bool {
        // Relaxed: written and read by the one task that owns the
        // connection's reader; atomic only to be `Send`.
        self.at_boundary.load(Ordering::Relaxed) && self.complete.load(Ordering::Relaxed) == frames
    }
}

/// A client's read half that fails on the first unmasked frame (module
/// docs).
#[derive(Debug)]
pub struct MaskCheck<R> {
    inner: R,
    scanner: FrameScanner,
    progress: Arc<Progress>,
}

impl<R> MaskCheck<R> {
    /// A check that also takes compressed frames apart (permessage-deflate
    /// negotiated), as [`FrameScanner::feed`] says.
    pub fn deflating(mut self, on: bool) -> Self {
        self.scanner.deflate = on;
        self
    }

    pub fn new(inner: R) -> Self {
        MaskCheck {
            inner,
            scanner: FrameScanner::default(),
            progress: Arc::new(Progress {
                complete: AtomicU64::new(0),
                at_boundary: AtomicBool::new(true),
                compressed: Mutex::default(),
            }),
        }
    }

    /// What the reader above asks about the bytes passed up.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for MaskCheck<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.scanner.state == State::Unmasked {
            return Poll::Ready(Err(unmasked_error()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Err(at) = this.scanner.feed(&mut buf.filled_mut()[before..]) {
            if at == 0 {
                // Nothing to pass on: an empty read would look like EOF.
                buf.set_filled(before);
                return Poll::Ready(Err(unmasked_error()));
            }
            // The bytes before it now; the error on the next read.
            buf.set_filled(before + at);
        }
        let p = &this.progress;
        if !this.scanner.compressed.is_empty() {
            let mut c = p.compressed.lock().unwrap_or_else(|e| e.into_inner());
            c.append(&mut this.scanner.compressed);
        }
        // Relaxed: see `Progress::all_taken`.
        p.complete.store(this.scanner.complete, Ordering::Relaxed);
        p.at_boundary
            .store(this.scanner.state == FIRST, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// fastwebsockets' whole-connection reader wants a writer too; ours never
/// writes through it (its automatic pong and close are off: we send both).
impl<R: Unpin> AsyncWrite for MaskCheck<R> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A client frame: FIN, `opcode`, the given length encoding, masked or
    /// not (the key is arbitrary: the scanner never unmasks).
    fn frame(opcode: u8, len: usize, masked: bool, ext: u8) -> Vec<u8> {
        let m = if masked { 0x80 } else { 0 };
        let mut f = vec![0x80 | opcode];
        match ext {
            0 => f.push(m | len as u8),
            2 => {
                f.push(m | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
        }
        // Payload bytes that look like headers, unmasked ones included.
        f.extend((0..len).map(|i| [0x81, 0x05, 0x00][i % 3]));
        f
    }

    /// Feeds `stream` cut at `cuts` (ascending offsets); returns the
    /// stream offset of the reported byte, if any.
    fn scan(stream: &[u8], cuts: &[usize]) -> Option<usize> {
        let mut s = FrameScanner::default();
        let mut start = 0;
        for &end in cuts.iter().chain([stream.len()].iter()) {
            if let Err(i) = s.feed(&mut stream[start..end].to_vec()) {
                return Some(start + i);
            }
            start = end;
        }
        None
    }

    fn masked_stream() -> Vec<u8> {
        let mut stream = Vec::new();
        // 7-bit, 16-bit and 64-bit lengths; empty, control and data frames.
        for (opcode, len, ext) in [
            (0x1, 2, 0),
            (0x9, 0, 0),
            (0xA, 125, 0),
            (0x2, 126, 2),
            (0x1, 300, 2),
            (0x0, 65535, 2),
            (0x2, 65536, 8),
            (0x1, 5, 8),
            (0x8, 2, 0),
        ] {
            stream.extend(frame(opcode, len, true, ext));
        }
        stream
    }

    #[test]
    fn masked_frames_pass_at_every_cut() {
        let stream = masked_stream();
        // TC0: whole; TC1: cut once at every offset (headers split at every
        // byte); TC2: one byte at a time.
        assert_eq!(scan(&stream, &[]), None);
        for cut in 0..=stream.len() {
            assert_eq!(scan(&stream, &[cut]), None, "cut at {cut}");
        }
        let bytes: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(scan(&stream, &bytes), None);
    }

    #[test]
    fn an_unmasked_frame_is_found_at_every_cut() {
        for (opcode, len, ext) in [
            (0x1, 2, 0),
            (0x9, 0, 0),
            (0x8, 2, 0),
            (0x2, 200, 2),
            (0x0, 70000, 8),
        ] {
            let mut stream = masked_stream();
            let at = stream.len() + 1;
            stream.extend(frame(opcode, len, false, ext));
            // A masked frame after it changes nothing.
            stream.extend(frame(0x1, 3, true, 0));
            assert_eq!(scan(&stream, &[]), Some(at));
            for cut in 0..=stream.len() {
                assert_eq!(scan(&stream, &[cut]), Some(at), "{opcode} cut at {cut}");
            }
            let bytes: Vec<usize> = (1..stream.len()).collect();
            assert_eq!(scan(&stream, &bytes), Some(at));
        }
        // TC: the very first frame.
        assert_eq!(scan(&frame(0x1, 2, false, 0), &[]), Some(1));
    }

    #[test]
    fn once_unmasked_every_feed_fails() {
        let mut s = FrameScanner::default();
        assert_eq!(s.feed(&mut [0x81, 0x02]), Err(1));
        assert_eq!(s.feed(&mut [0x81]), Err(0));
        assert_eq!(s.feed(&mut []), Err(0));
    }

    /// Reads `stream` through a [`MaskCheck`] over a reader that returns
    /// `chunk` bytes at a time; returns what got through and the error.
    async fn read_through(stream: &[u8], chunk: usize) -> (Vec<u8>, Option<io::Error>) {
        let (mut client, server) = tokio::io::duplex(chunk);
        let writer = async {
            for c in stream.chunks(chunk) {
                use tokio::io::AsyncWriteExt;
                if client.write_all(c).await.is_err() {
                    break;
                }
            }
            drop(client);
        };
        let reader = async {
            let mut r = MaskCheck::new(server);
            let mut got = Vec::new();
            let mut buf = [0u8; 7];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) => return (got, None),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        // The stream under it still reads (the drain).
                        let mut rest = Vec::new();
                        r.get_mut().read_to_end(&mut rest).await.unwrap();
                        return (got, Some(e));
                    }
                }
            }
        };
        tokio::join!(writer, reader).1
    }

    #[tokio::test]
    async fn the_reader_passes_what_precedes_an_unmasked_frame_then_fails() {
        // Small frames of every length encoding, read a byte at a time too.
        let mut good = Vec::new();
        for (opcode, len, ext) in [(0x1, 2, 0), (0x9, 0, 0), (0x2, 300, 2), (0x1, 5, 8)] {
            good.extend(frame(opcode, len, true, ext));
        }
        for chunk in [1, 2, 3, 64, 1 << 20] {
            // TC0: masked frames all get through, then EOF.
            let (got, err) = read_through(&good, chunk).await;
            assert_eq!(got, good, "chunk {chunk}");
            assert!(err.is_none());
            // TC1: everything before the unmasked frame's mask byte, then
            // the unmasked-frame error.
            let mut bad = good.clone();
            bad.extend(frame(0x1, 2, false, 0));
            let (got, err) = read_through(&bad, chunk).await;
            assert_eq!(got, bad[..good.len() + 1], "chunk {chunk}");
            assert!(is_unmasked(&err.expect("an error")));
        }
        // Other I/O errors are not taken for it.
        assert!(!is_unmasked(&io::Error::from(io::ErrorKind::InvalidData)));
    }
}
