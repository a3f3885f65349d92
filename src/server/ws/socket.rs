//! What a connection needs of its socket: to say when it has bytes before
//! anything is allocated to read them ([`ReadReady`]), and to be written by
//! its task, by a writer shard from another thread, and past a stall
//! ([`WriteSide`]). Plain TCP has all of it; TLS and in-memory streams the
//! defaults.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::tcp::OwnedWriteHalf;

use crate::fanout::shard::{Link, Socket, Tally};
use crate::metrics::Metrics;

/// A client's read half that can say when it has bytes, before anything
/// is allocated to read them into.
pub trait ReadReady: AsyncRead + Unpin {
    /// Ready when a read would not wait (or fail at once); the default is
    /// always ready.
    fn poll_read_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Once ready: takes a whole pong ([`crate::wire::frame::whole_pong`]) off the front of
    /// the stream, and says whether it did; anything else stays for the
    /// reader. The default takes nothing.
    fn poll_take_pong(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        Poll::Ready(Ok(false))
    }
}

/// TLS and in-memory streams: no readiness to wait on apart from a read.
impl<T: AsyncRead> ReadReady for tokio::io::ReadHalf<T> {}

/// A connection's write side: an async writer for its task, and what a
/// shard needs to write it too.
pub trait WriteSide: AsyncWrite + Unpin {
    /// The socket a writer shard may write to from its own thread; `None`
    /// keeps every write in the connection's task (TLS, in-memory streams).
    fn socket(&self) -> Option<Arc<dyn Socket>> {
        None
    }

    /// Grows the send buffer and writes what it can of `bufs` without
    /// waiting; `Ok(0)` where the stream cannot do this.
    ///
    /// A stalled client's socket buffer is full, so a close frame queued
    /// behind it reached the client only if it read again within the close
    /// timeout; otherwise it saw the data end without a close. Growing the
    /// send buffer by a few KiB when the stall is declared, and writing the
    /// close at once (directly: the runtime waits for a writability event
    /// that a larger buffer does not raise), lets the close frame into the
    /// kernel, which delivers it, and the FIN after it, whenever the client
    /// reads again, after the process has let go of the socket.
    fn write_past_stall(&self, _bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(0)
    }
}

/// Room for the close frame and what is left of a partly written frame,
/// and for the kernel's overhead on them.
const CLOSE_ROOM_BYTES: usize = 8 << 10;

/// A plain TCP connection's write half, shared by its task and its writer
/// shard. Both write through [`Socket::try_writev`], which keeps the
/// runtime's readiness state true whichever thread saw `WouldBlock`.
pub struct SharedTcp(pub Arc<OwnedWriteHalf>);

impl Socket for OwnedWriteHalf {
    fn try_writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // sendmsg, not writev: a socket call skips the file layer (the
        // position lock, the iterator) that writev goes through; about 6 %
        // of the kernel's time per send in a profile at 1,000 subscribers.
        // Through `try_io`, so that tokio's readiness is cleared on
        // WouldBlock whichever thread sees it.
        // One buffer (the common case: a pass's frames lie end to end in
        // one arena chunk, one entry) goes by send(), which hands the
        // kernel one user buffer instead of a message header and an iovec
        // to copy in and check: 3 % less CPU per call for 560 bytes over
        // loopback (1.50-1.53 against 1.54-1.57 us, 300,000 calls, 3 runs).
        let stream = self.as_ref();
        stream.try_io(Interest::WRITABLE, || {
            let socket = socket2::SockRef::from(stream);
            match bufs {
                [one] => socket.send(one),
                _ => socket.send_vectored(bufs),
            }
        })
    }
}

impl WriteSide for SharedTcp {
    fn socket(&self) -> Option<Arc<dyn Socket>> {
        Some(Arc::clone(&self.0) as Arc<dyn Socket>)
    }

    fn write_past_stall(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let socket = socket2::SockRef::from(self.0.as_ref().as_ref());
        // Linux reports twice what was set (the doubling covers its
        // bookkeeping) and doubles what is set: ask for half plus the room.
        // A buffer grown by autotuning past net.core.wmem_max comes out
        // smaller, which only means the close does not fit either.
        let size = socket.send_buffer_size()?;
        socket.set_send_buffer_size(size / 2 + CLOSE_ROOM_BYTES)?;
        socket.send_vectored(bufs)
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.as_ref().as_ref().poll_write_ready(cx))?;
            match self.0.try_writev(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let socket = socket2::SockRef::from(self.0.as_ref().as_ref());
        Poll::Ready(socket.shutdown(std::net::Shutdown::Write))
    }
}

/// TLS and in-memory streams: the close frame waits in the TLS layer, and
/// arrives only if the client reads within the close timeout.
impl<T: AsyncRead + AsyncWrite> WriteSide for tokio::io::WriteHalf<T> {}

/// Puts what it can of `link`'s outbox (the close frame behind a half
/// frame) into a stalled socket's grown send buffer.
pub fn write_close_past_stall(io: &impl WriteSide, link: &Link, metrics: &Metrics) {
    let mut pipe = link.lock();
    if let Ok(written) = pipe.with_slices(|iov, _| io.write_past_stall(iov)) {
        let mut tally = Tally::default();
        pipe.wrote(written, &mut tally);
        tally.report(metrics);
    }
}
