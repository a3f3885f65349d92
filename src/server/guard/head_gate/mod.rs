//! The request-head gate: every HTTP request head on a connection passes
//! through [`HeadGate`] before hyper parses it, so that a head over the
//! limits or not HTTP at all gets a status with a one-line reason and is
//! counted, instead of hyper's automatic answer (an empty body, no metric).
//!
//! The gate sits between the socket and hyper. It holds a head back until
//! it is complete, checks it with the rules hyper applies and the limits
//! below, and only then lets hyper read it. For each head it lets through
//! it queues a [`Verdict`] in [`Verdicts`]; the server's service takes one
//! per request, in order, so the two stay in step whatever the pipelining.
//! A refused head is replaced by a fixed request of the gate's own, whose
//! verdict carries the refusal: hyper then answers it in its turn, after
//! any earlier response, and closes the connection.
//!
//! Only heads are checked. Once a request has a body (`Content-Length`
//! above 0, any `Transfer-Encoding`) or asks for an upgrade, the gate stops
//! looking ([`Verdict::Pass`] with `last`): what follows is a body or
//! WebSocket frames, and finding the next head would mean framing bodies a
//! second time, differently from hyper. The response to such a request
//! closes the connection unless it is a 101, so every head hyper reads on
//! a connection that stays open has been through here. tickwire's routes
//! take no request bodies.

mod check;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use self::check::{check_head, Check};
pub use self::check::{HttpRefusal, MAX_HEAD_BYTES, MAX_REQUEST_LINE_BYTES};

/// How long a refused connection keeps reading (and discarding) what the
/// client still sends after its answer: closing a socket with unread input
/// resets it, and the reset can destroy the answer before it is read.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Bytes read from the socket at a time while a head is incomplete.
const READ_CHUNK: usize = 4096;

/// What the gate hands hyper in place of a refused head: a request that
/// parses, whose verdict is the refusal.
const REFUSED_STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";

/// How PROXY protocol headers start, version 1 and 2.
const PROXY_V1_SIGNATURE: &[u8] = b"PROXY ";
const PROXY_V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the gate decided about one head it let hyper read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A good head. With `last`, the gate stopped checking after it (a
    /// body or an upgrade follows): unless the answer is a 101, it must
    /// close the connection.
    Pass { last: bool },
    /// The head was refused; hyper reads the gate's stand-in request.
    Refuse(HttpRefusal),
}

/// The verdicts of one connection, oldest first, shared by its gate and
/// its service.
#[derive(Debug, Default)]
pub struct Verdicts {
    queue: Mutex<VecDeque<Verdict>>,
    /// Whether the gate has decided on a head (let it through, or
    /// refused it).
    any: AtomicBool,
}

impl Verdicts {
    fn push(&self, v: Verdict) {
        // Relaxed, pairs with nothing: stored while the gate is polled and
        // read by `Verdicts::any` in the same task (`serve_http`'s
        // select), whose polls the runtime orders.
        self.any.store(true, Ordering::Relaxed);
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(v);
    }

    /// Whether the gate has decided on a head (the connection's first
    /// request is no longer waited for). Read in the task that polls the
    /// gate.
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed) // see `push`
    }

    /// The verdict of the request hyper parsed next. Every head hyper reads
    /// comes through the gate, which queues one verdict for each; a head
    /// read after the gate stopped checking has none, and is treated as the
    /// last.
    pub fn next(&self) -> Verdict {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or(Verdict::Pass { last: true })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Holding bytes back until a whole head is there.
    Head,
    /// Past a body or an upgrade: bytes go straight to hyper.
    Passthrough,
    /// A head was refused: hyper gets the stand-in and nothing more.
    Refused,
}

/// A byte stream whose request heads are checked before hyper reads them;
/// writes go through untouched.
pub struct HeadGate<S> {
    io: S,
    /// Read from `io`, not yet read by hyper.
    buf: BytesMut,
    /// Leading bytes of `buf` hyper may read (checked, or past checking).
    released: usize,
    mode: Mode,
    /// No head has been looked at yet (a PROXY header can only be first).
    first: bool,
    /// Bytes of the current head already scanned for line ends.
    scanned: usize,
    /// Length of the current head's request line, once its end is seen.
    line_len: Option<usize>,
    /// Whether new bytes are worth a full parse: the first bytes of a head,
    /// the end of its request line, or the blank line that ends it. Parsing
    /// only then keeps a head that trickles in byte by byte linear.
    parse_due: bool,
    verdicts: Arc<Verdicts>,
    /// While a refused connection is closing: the end of its linger.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    shut_down: bool,
}

impl<S> HeadGate<S> {
    /// A gate over `io`, whose first bytes (read before, e.g. past a PROXY
    /// header) are `initial`.
    pub fn new(io: S, initial: Bytes, verdicts: Arc<Verdicts>) -> Self {
        HeadGate {
            io,
            buf: BytesMut::from(&initial[..]),
            released: 0,
            mode: Mode::Head,
            first: true,
            scanned: 0,
            line_len: None,
            parse_due: true,
            verdicts,
            linger: None,
            shut_down: false,
        }
    }

    /// The stream, and the bytes read from it that hyper has not taken
    /// (they come before anything still in the stream).
    pub fn into_parts(self) -> (S, Bytes) {
        (self.io, self.buf.freeze())
    }

    /// Looks at the buffered head and decides, parsing only when worth it.
    fn check(&mut self) -> Check {
        if self.first {
            for signature in [PROXY_V1_SIGNATURE, PROXY_V2_SIGNATURE] {
                if self.buf.starts_with(signature) {
                    return Check::Refuse(HttpRefusal::UntrustedProxyHeader);
                }
                if !self.buf.is_empty() && signature.starts_with(&self.buf) {
                    return Check::Partial;
                }
            }
        }
        // Empty lines before a request line are allowed (RFC 9112 2.2) and
        // skipped; hyper would skip them too.
        if self.scanned == 0 {
            let blank = self
                .buf
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(self.buf.len());
            let whole_lines = self.buf[..blank]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            self.buf.advance(whole_lines);
        }
        if self.buf.is_empty() {
            return Check::Partial;
        }
        self.first = false;
        let from = self.scanned;
        for i in from..self.buf.len() {
            if self.buf[i] != b'\n' {
                continue;
            }
            if self.line_len.is_none() {
                self.line_len = Some(i + 1);
                self.parse_due = true;
            }
            let before = &self.buf[..i];
            if before.ends_with(b"\n") || before.ends_with(b"\n\r") {
                self.parse_due = true;
                break;
            }
        }
        self.scanned = self.buf.len();
        if self.line_len.unwrap_or(self.buf.len()) > MAX_REQUEST_LINE_BYTES {
            return Check::Refuse(HttpRefusal::RequestLineTooLong);
        }
        if !self.parse_due {
            return self.partial();
        }
        self.parse_due = false;
        match check_head(&self.buf) {
            Check::Partial => self.partial(),
            Check::Complete { len, .. } if len > MAX_HEAD_BYTES => {
                Check::Refuse(HttpRefusal::HeadersTooLarge)
            }
            other => other,
        }
    }

    fn partial(&self) -> Check {
        if self.buf.len() >= MAX_HEAD_BYTES {
            Check::Refuse(HttpRefusal::HeadersTooLarge)
        } else {
            Check::Partial
        }
    }

    /// Starts on the next head, `len` bytes into the buffer.
    fn release(&mut self, len: usize) {
        self.released = len;
        self.scanned = 0;
        self.line_len = None;
        self.parse_due = true;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.released > 0 {
                let n = this.released.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.released -= n;
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Passthrough if !this.buf.is_empty() => this.released = this.buf.len(),
                Mode::Passthrough => return Pin::new(&mut this.io).poll_read(cx, out),
                // Never end of stream: hyper takes that for a client gone
                // mid-request and would drop the answer. It closes the
                // connection itself once it has answered the stand-in.
                Mode::Refused => return Poll::Pending,
                Mode::Head => match this.check() {
                    Check::Complete { len, last } => {
                        this.verdicts.push(Verdict::Pass { last });
                        this.release(len);
                        if last {
                            this.mode = Mode::Passthrough;
                        }
                    }
                    Check::Refuse(refusal) => {
                        this.verdicts.push(Verdict::Refuse(refusal));
                        this.buf.clear();
                        this.buf.extend_from_slice(REFUSED_STAND_IN);
                        this.release(this.buf.len());
                        this.mode = Mode::Refused;
                    }
                    Check::Partial => {
                        let want = READ_CHUNK.min(MAX_HEAD_BYTES - this.buf.len());
                        debug_assert!(want > 0, "a full buffer is refused, not read into");
                        // Read on the stack and keep only what arrived: an
                        // idle connection then holds no read buffer here.
                        let mut chunk = [0u8; READ_CHUNK];
                        let mut rb = ReadBuf::new(&mut chunk[..want]);
                        let polled = Pin::new(&mut this.io).poll_read(cx, &mut rb);
                        let n = rb.filled().len();
                        this.buf.extend_from_slice(rb.filled());
                        match polled {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Ready(Ok(())) if n == 0 => {
                                // End of stream: hyper gets what there is
                                // (a cut-off head is its incomplete-message
                                // error, as without the gate), then the end.
                                this.mode = Mode::Passthrough;
                                if this.buf.is_empty() {
                                    return Poll::Ready(Ok(()));
                                }
                            }
                            Poll::Ready(Ok(())) => {}
                        }
                    }
                },
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadGate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Shuts the stream down; a refused connection then reads and discards
    /// what the client still sends, for up to [`REFUSAL_LINGER`], so that
    /// the close does not reset the answer away.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.shut_down {
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.shut_down = true;
        }
        if this.mode != Mode::Refused {
            return Poll::Ready(Ok(()));
        }
        let linger = this
            .linger
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(REFUSAL_LINGER)));
        let mut scratch = [0u8; 1024];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return linger.as_mut().poll(cx).map(Ok);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check::MAX_HEADER_FIELDS;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Feeds `chunks` through a gate, one write each, read as they come,
    /// and returns what hyper would read and the verdicts queued.
    async fn through_gate(chunks: &[&[u8]]) -> (Vec<u8>, Vec<Verdict>) {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let verdicts = Arc::new(Verdicts::default());
        let mut gate = HeadGate::new(server, Bytes::new(), Arc::clone(&verdicts));
        let write = async move {
            for c in chunks {
                client.write_all(c).await.unwrap();
                // The reader sees each chunk before the next is written.
                tokio::task::yield_now().await;
            }
        };
        let read = async {
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            loop {
                let read = tokio::time::timeout(Duration::from_millis(50), gate.read(&mut buf));
                match read.await {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                    Ok(Err(e)) => panic!("{e}"),
                }
            }
            seen
        };
        let ((), seen) = tokio::join!(write, read);
        let mut v = Vec::new();
        while let Some(x) = verdicts.queue.lock().unwrap().pop_front() {
            v.push(x);
        }
        (seen, v)
    }

    const GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    #[tokio::test]
    async fn good_heads_pass_in_order_and_bodies_stop_the_checks() {
        // TC0: two pipelined heads, each passed, hyper reads both as sent.
        let two = [GET, GET].concat();
        let (seen, v) = through_gate(&[&two]).await;
        assert_eq!(seen, two);
        assert_eq!(v, [Verdict::Pass { last: false }; 2]);
        // TC1: a head trickling in byte by byte, after blank lines.
        let bytes: Vec<&[u8]> = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n".chunks(1).collect();
        let (seen, v) = through_gate(&bytes).await;
        assert_eq!(seen, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(v, [Verdict::Pass { last: false }]);
        // TC2: a body: passed as the last head; whatever follows is not
        // looked at (here, garbage that would be refused as a head).
        let post = b"POST /ws HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\x00\x01";
        let (seen, v) = through_gate(&[post]).await;
        assert_eq!(seen, post);
        assert_eq!(v, [Verdict::Pass { last: true }]);
        // TC3: an upgrade, then frames.
        let up = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x80";
        let (_, v) = through_gate(&[up]).await;
        assert_eq!(v, [Verdict::Pass { last: true }]);
        // TC4: Content-Length: 0 is no body.
        let empty = b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let (_, v) = through_gate(&[empty, GET]).await;
        assert_eq!(v, [Verdict::Pass { last: false }; 2]);
    }

    #[tokio::test]
    async fn bad_heads_are_replaced_by_the_stand_in() {
        let long_line = [b"GET /".as_slice(), &[b'a'; MAX_REQUEST_LINE_BYTES]].concat();
        let big_head = [
            b"GET / HTTP/1.1\r\n".as_slice(),
            &b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
                .repeat(MAX_HEAD_BYTES / 70 + 1),
        ]
        .concat();
        let many = [
            b"GET / HTTP/1.1\r\n".as_slice(),
            &b"A: b\r\n".repeat(MAX_HEADER_FIELDS + 1),
            b"\r\n",
        ]
        .concat();
        let v2 = [PROXY_V2_SIGNATURE, b"\x21\x11\x00\x0c"].concat();
        let cases: [(&[u8], HttpRefusal); 9] = [
            // TC0: a request line over the limit, no end in sight.
            (&long_line, HttpRefusal::RequestLineTooLong),
            // TC1: headers over the limit.
            (&big_head, HttpRefusal::HeadersTooLarge),
            // TC2: too many fields, each small.
            (&many, HttpRefusal::TooManyHeaders),
            // TC3: binary garbage; a TLS ClientHello.
            (
                b"\x00\x01\x02\r\n\r\n",
                HttpRefusal::Malformed("invalid method or request target"),
            ),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                HttpRefusal::Malformed("invalid method or request target"),
            ),
            // TC4: HTTP/2's preface.
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                HttpRefusal::Malformed("invalid HTTP version"),
            ),
            // TC5: conflicting lengths (request smuggling's raw material).
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpRefusal::Malformed("Content-Length given twice with different values"),
            ),
            // TC6: PROXY headers, v1 and v2, reaching the gate.
            (
                b"PROXY TCP4 203.0.113.1 127.0.0.1 5000 80\r\nGET / HTTP/1.1\r\n\r\n",
                HttpRefusal::UntrustedProxyHeader,
            ),
            (&v2, HttpRefusal::UntrustedProxyHeader),
        ];
        for (i, (input, refusal)) in cases.into_iter().enumerate() {
            let (seen, v) = through_gate(&[input]).await;
            assert_eq!(v, [Verdict::Refuse(refusal)], "case {i}");
            assert_eq!(seen, REFUSED_STAND_IN, "case {i}");
        }
        // TC7: a good head, then a bad one: the first passes, the second is
        // refused after it.
        let (seen, v) = through_gate(&[GET, b"BAD\x00 / HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(seen, [GET, REFUSED_STAND_IN].concat());
        assert_eq!(v[0], Verdict::Pass { last: false });
        assert!(matches!(v[1], Verdict::Refuse(HttpRefusal::Malformed(_))));
    }

    #[tokio::test]
    async fn limits_are_exact() {
        // A request line of exactly the limit passes; one byte more is 414.
        let line = |len: usize| {
            let target = len - "GET  HTTP/1.1\r\n".len();
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(target - 1)).into_bytes()
        };
        let (_, v) = through_gate(&[&line(MAX_REQUEST_LINE_BYTES)]).await;
        assert_eq!(v, [Verdict::Pass { last: false }]);
        let (_, v) = through_gate(&[&line(MAX_REQUEST_LINE_BYTES + 1)]).await;
        assert_eq!(v, [Verdict::Refuse(HttpRefusal::RequestLineTooLong)]);
        // A head of exactly the limit passes; one byte more is 431.
        let head = |len: usize| {
            let start = "GET / HTTP/1.1\r\nX: ";
            let pad = len - start.len() - "\r\n\r\n".len();
            format!("{start}{}\r\n\r\n", "a".repeat(pad)).into_bytes()
        };
        let (_, v) = through_gate(&[&head(MAX_HEAD_BYTES)]).await;
        assert_eq!(v, [Verdict::Pass { last: false }]);
        let (_, v) = through_gate(&[&head(MAX_HEAD_BYTES + 1)]).await;
        assert_eq!(v, [Verdict::Refuse(HttpRefusal::HeadersTooLarge)]);
    }

    #[test]
    fn reasons_are_one_line() {
        for r in [
            HttpRefusal::RequestLineTooLong,
            HttpRefusal::HeadersTooLarge,
            HttpRefusal::TooManyHeaders,
            HttpRefusal::Malformed("x"),
            HttpRefusal::UntrustedProxyHeader,
        ] {
            assert!(!r.reason().contains('\n'));
            assert!(HttpRefusal::REASONS
                .get(crate::metrics::Labelled::index(r))
                .is_some());
        }
    }
}
