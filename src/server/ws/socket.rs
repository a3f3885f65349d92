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
    /// send buffer past what its queue holds by a few KiB when the stall is
    /// declared, and writing the close at once (directly: the runtime waits
    /// for a writability event that a larger buffer does not raise), lets
    /// the close frame into the kernel, which delivers it, and the FIN
    /// after it, whenever the client reads again, after the process has let
    /// go of the socket.
    fn write_past_stall(&self, _bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(0)
    }
}

/// Room for the kernel's overhead on the close frame and what is left of
/// a partly written frame, beyond twice their bytes.
const CLOSE_ROOM_BYTES: usize = 8 << 10;

/// How much memory the socket's send queue holds, its overhead counted
/// (`SK_MEMINFO_WMEM_QUEUED`, what the kernel compares with the send
/// buffer's size before it takes a write); None where it cannot say.
fn queued_send_memory(socket: &socket2::SockRef<'_>) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SK_MEMINFO_VARS (include/uapi/linux/sock_diag.h): not in libc.
        let mut info = [0u32; 9];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `info`, which
        // holds that many, and `len` back; the descriptor is the socket's,
        // alive for the borrow.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let at = libc::SK_MEMINFO_WMEM_QUEUED as usize;
        let filled = len as usize / std::mem::size_of::<u32>();
        (rc == 0 && filled > at).then(|| info[at] as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        None
    }
}

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
        // The kernel starts a new segment only while what its queue holds
        // (its overhead counted) is below the buffer's size, but adds to
        // the last one, unsent behind a shut window, up to its full size
        // (up to 64 KiB): so the queue may be past the size by most of a
        // segment (19 KiB seen in the stall test, where a room of 16 KiB
        // left the close out one time in five). The room goes on top of
        // the larger of the two.
        // Linux reports twice what was set (the doubling covers its
        // bookkeeping) and doubles what is set: ask for half. A size past
        // net.core.wmem_max comes out smaller, which only means the close
        // does not fit either.
        let size = socket.send_buffer_size()?;
        // A host that sets net.ipv4.tcp_notsent_lowat would refuse a new
        // segment past that much unsent, whatever the buffer: not this one.
        let _ = socket.set_tcp_notsent_lowat(u32::MAX);
        let queued = queued_send_memory(&socket).unwrap_or(size);
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let room = CLOSE_ROOM_BYTES + 2 * offered;
        socket.set_send_buffer_size((size.max(queued) + room).div_ceil(2))?;
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A plain TCP connection whose client reads nothing: the server's
    /// write half, and the client's stream to keep it open.
    async fn unread_pair() -> (SharedTcp, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // As the server sets it (`send_buffer_bytes`'s default).
        socket2::SockRef::from(&server)
            .set_send_buffer_size(128 << 10)
            .unwrap();
        let (_, write) = server.into_split();
        (SharedTcp(Arc::new(write)), client)
    }

    /// Writes `bytes`-long frames until the socket would block (straight
    /// to it: tokio's readiness would stop at the first `WouldBlock`).
    fn fill(socket: &socket2::SockRef<'_>, bytes: usize) {
        let frame = vec![b'x'; bytes];
        loop {
            match socket.send(&frame) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Past a stall, the close frame goes into the kernel even when the
    /// queue's memory is past the send buffer's size by most of a segment
    /// (a send that found room for a new segment, followed by small ones
    /// that fill it while the client's window stays shut).
    #[tokio::test]
    async fn the_close_goes_in_past_a_send_queue_over_its_size() {
        let (write, _client) = unread_pair().await;
        let socket = socket2::SockRef::from(write.0.as_ref().as_ref());
        let size = socket.send_buffer_size().unwrap();
        fill(&socket, 1000);
        // Room for one more segment, and one byte in it; then back to
        // the buffer's size, and small frames fill that segment.
        let queued = queued_send_memory(&socket).expect("the kernel says");
        socket.set_send_buffer_size(queued.div_ceil(2) + 1).unwrap();
        assert_eq!(socket.send(b"x").unwrap(), 1);
        socket.set_send_buffer_size(size / 2).unwrap();
        fill(&socket, 100);
        let queued = queued_send_memory(&socket).unwrap();
        let over = queued
            .checked_sub(size)
            .unwrap_or_else(|| panic!("the queue ({queued}) stayed within the size ({size})"));
        // Past what the close's room alone (twice CLOSE_ROOM_BYTES, as
        // Linux doubles it) would cover.
        assert!(over > 2 * CLOSE_ROOM_BYTES, "{over} bytes over");
        let close = [0x88u8, 0x02, 0x03, 0xf0];
        let n = write.write_past_stall(&[IoSlice::new(&close)]).unwrap();
        assert_eq!(n, close.len());
    }
}
