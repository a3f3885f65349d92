//! Accepting a connection: admission at accept, the PROXY header of a
//! trusted proxy, the TLS handshake, and HTTP/1.1 over whatever stream that
//! leaves, every request head passing the [`HeadGate`] first.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use super::routes::{forwarded, refuse_head, route};
use super::AppState;
use crate::metrics::Metrics;
use crate::server::guard::admission::{self, Admitted};
use crate::server::guard::head_gate::{HeadGate, HttpRefusal, Verdict, Verdicts};
use crate::server::guard::proxy::{self, ConnectionClient, Identified, LogClient};
use crate::server::ws::socket::ReadReady;
use crate::wire::frame::{whole_pong, MAX_PONG_LEN};

pub(super) async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Before anything else is set up for it: a refused connection
        // costs a small task that writes a fixed answer. A trusted proxy's
        // connection counts against its client once the proxy names it.
        let trusted = state.trusted_proxies.contains(peer.ip());
        let admitted = if trusted {
            state.admission.admit_unattributed()
        } else {
            state.admission.admit(peer.ip())
        };
        let admitted = match admitted {
            Ok(a) => Arc::new(a),
            Err(refused) => {
                // Before a trusted proxy names its client: the peer's.
                tracing::debug!(%peer, ?refused, "connection refused");
                admission::refuse(&state.admission, stream, refused);
                continue;
            }
        };
        // We batch frames ourselves; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        if state.send_buffer_bytes > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(state.send_buffer_bytes);
        }
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut stream = stream;
            let (client, initial) = if trusted {
                // Boxed, as the serving below: the task stays small.
                match Box::pin(identify_client(&state, &mut stream, peer)).await {
                    Some(identified) => identified,
                    None => return,
                }
            } else {
                (ConnectionClient::Peer(peer), Bytes::new())
            };
            if let ConnectionClient::Proxied { source, .. } = client {
                if let Err(refused) = admitted.attribute(source.ip()) {
                    tracing::debug!(client = %source, proxy = %peer, ?refused, "connection refused");
                    drop(admitted);
                    admission::refuse(&state.admission, stream, refused);
                    return;
                }
            }
            let waited = if initial.is_empty() {
                match first_byte(&stream, &state, &client).await {
                    Some(waited) => waited,
                    None => return,
                }
            } else {
                Duration::ZERO
            };
            // Boxed: a connection's task stays this small until it has
            // something to serve.
            let span = client.span();
            Box::pin(serve_connection(
                stream, initial, client, state, admitted, waited,
            ))
            .instrument(span)
            .await;
        });
    }
}

/// Reads what a trusted proxy's connection starts with: who the client
/// is, and the bytes read past a PROXY header. None when the connection is
/// to be closed (a bad PROXY header, or nothing within the handshake
/// timeout), counted and logged.
pub(super) async fn identify_client(
    state: &AppState,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Option<(ConnectionClient, Bytes)> {
    let timeout = state.handshake_timeout;
    let metrics = &state.market.metrics;
    match proxy::identify(stream, peer, &state.trusted_proxies, timeout).await {
        Identified::Client(client, initial) => Some((client, initial)),
        Identified::Refused(e) => {
            metrics.proxy_header_error(e);
            tracing::debug!(proxy = %peer, "closed: {e}");
            None
        }
        Identified::Silent => {
            metrics.handshake_timeouts_total.inc();
            tracing::debug!(proxy = %peer, "closed: nothing sent within {timeout:?}");
            None
        }
    }
}

/// Waits for a connection's first byte, within the time its first step
/// has (`handshake_timeout_ms` for the request headers, or
/// `tls_handshake_timeout_ms` on a TLS port); returns how long that took,
/// or None when nothing came (counted and logged as that step's timeout).
///
/// Until then a connection is its socket and a small task: hyper and the
/// head gate each take a read buffer as they start, and its log span an
/// entry (18.5 KiB a connection before this wait, measured with 5,000
/// connections that send nothing).
async fn first_byte(
    stream: &TcpStream,
    state: &AppState,
    client: &ConnectionClient,
) -> Option<Duration> {
    let started = Instant::now();
    let tls = state.tls.is_some();
    let limit = if tls {
        state.tls_handshake_timeout
    } else {
        state.handshake_timeout
    };
    // A peek, not `readable()`: a stream just accepted can be reported
    // readable with nothing to read (seen here: tokio says readable, a
    // read says it would block), and the peek waits that out.
    let mut byte = [0u8; 1];
    let readable = match tokio::time::timeout(limit, stream.peek(&mut byte)).await {
        Ok(readable) => readable,
        Err(_) => {
            let metrics = &state.market.metrics;
            if tls {
                metrics.tls_handshake_failures_total.inc();
                tracing::debug!(parent: client.span(), "TLS handshake failed: timed out");
            } else {
                metrics.handshake_timeouts_total.inc();
                tracing::debug!(parent: client.span(), "closed: no request headers within {limit:?}");
            }
            return None;
        }
    };
    match readable {
        // A byte, or the end of the stream: HTTP makes sense of either.
        Ok(_) => Some(started.elapsed()),
        Err(e) => {
            tracing::debug!(parent: client.span(), "connection failed before its first byte: {e}");
            None
        }
    }
}

/// Serves an admitted connection: the TLS handshake when the port speaks
/// TLS, then HTTP. `initial` is what was read before (past a PROXY
/// header); `waited`, how long its first byte took, counts against the
/// first step's timeout.
pub(super) async fn serve_connection(
    stream: TcpStream,
    initial: Bytes,
    client: ConnectionClient,
    state: Arc<AppState>,
    admitted: Arc<Admitted>,
    waited: Duration,
) {
    let Some(acceptor) = state.tls.clone() else {
        let within = state.handshake_timeout.saturating_sub(waited);
        return serve_http(stream, initial, within, client, state, admitted).await;
    };
    let handshake = accept_tls(&acceptor, stream, initial);
    let within = state.tls_handshake_timeout.saturating_sub(waited);
    let tls = match tokio::time::timeout(within, handshake).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    match tls {
        Ok(tls) => {
            let within = state.handshake_timeout;
            serve_http(tls, Bytes::new(), within, client, state, admitted).await;
        }
        Err(e) => {
            state.market.metrics.tls_handshake_failures_total.inc();
            tracing::debug!("TLS handshake failed: {e}");
        }
    }
}

/// The first byte of a TLS connection: a handshake record.
pub(super) const TLS_HANDSHAKE_RECORD: u8 = 0x16;

pub(super) const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\nConnection: close\r\nContent-Length: 45\r\n\r\n\
this port speaks TLS: use https:// or wss://\n";

/// Runs the server side of a TLS handshake over `stream`, whose first
/// bytes, already read, are `initial`. A client that speaks plain HTTP to
/// the TLS port gets a plain-text 400 saying so, rather than a TLS alert
/// its HTTP parser cannot read.
pub(super) async fn accept_tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    mut stream: TcpStream,
    initial: Bytes,
) -> std::io::Result<tokio_rustls::server::TlsStream<Prefixed<TcpStream>>> {
    let first = match initial.first() {
        Some(&b) => b,
        None => {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            first[0]
        }
    };
    if first != TLS_HANDSHAKE_RECORD {
        // Take the request off the socket so that closing it does not
        // reset the connection before the client reads the answer.
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).await;
        stream.write_all(PLAIN_HTTP_ON_TLS_PORT).await?;
        stream.shutdown().await?;
        let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "plain HTTP sent to the TLS port",
        ));
    }
    let stream = Prefixed {
        prefix: initial,
        inner: stream,
    };
    acceptor.accept(stream).await
}

/// Serves HTTP/1.1 (and the upgrades it leads to) on one connection, over
/// any byte stream whose first bytes, already read, are `initial`. Every
/// request head passes the [`HeadGate`] first. The first must be whole
/// `within` (the handshake timeout; on plain TCP, less what the first
/// byte took); each later one within the handshake timeout of the answer
/// before it: the time a kept-alive connection may stay idle.
///
/// `admitted` holds the connection's place against the connection limits;
/// an upgraded connection takes a clone along.
pub(super) async fn serve_http<S>(
    io: S,
    initial: Bytes,
    within: Duration,
    client: ConnectionClient,
    state: Arc<AppState>,
    admitted: Arc<Admitted>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = Arc::clone(&state.market.metrics);
    let handshake_timeout = state.handshake_timeout;
    // A stalled event stream ends the connection with it.
    let close = Arc::new(Notify::new());
    let close_on_stall = Arc::clone(&close);
    let verdicts = Arc::new(Verdicts::default());
    let gate = HeadGate::new(io, initial, Arc::clone(&verdicts));
    let first_head = first_head_deadline(within, Arc::clone(&verdicts));
    let service = service_fn(move |req| {
        let close = Arc::clone(&close_on_stall);
        let response = match verdicts.next() {
            Verdict::Refuse(refusal) => refuse_head(&state, refusal),
            Verdict::Pass { last } => {
                let mut r = match client {
                    ConnectionClient::Forwarded { hop, .. } => {
                        forwarded(req, (hop, client), &state, Arc::clone(&admitted), close)
                    }
                    _ => {
                        let who = LogClient {
                            conn: client,
                            forwarded: None,
                        };
                        route(req, &state, (Arc::clone(&admitted), who), close)
                    }
                };
                // The gate stopped checking heads on this connection.
                if last && r.status() != StatusCode::SWITCHING_PROTOCOLS {
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                r
            }
        };
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout.max(Duration::from_millis(1)))
        .serve_connection(TokioIo::new(gate), service)
        .with_upgrades();
    let served = tokio::select! {
        // Biased, the connection first: a head already in the socket when
        // the first head's deadline fires is read, not cut off.
        biased;
        served = conn => served,
        // Dropping the connection closes the socket, and what hyper still
        // held for the client with it.
        () = close.notified() => Ok(()),
        () = first_head => {
            count_head_timeout(&metrics, handshake_timeout);
            Ok(())
        }
    };
    if let Err(e) = served {
        count_http_error(&e, &metrics, handshake_timeout);
    }
}

/// Ends when the connection's first request head has not come through the
/// gate whole `within`; never, once it has. Hyper's own timer restarts for
/// each head, at the full handshake timeout: it bounds the later ones, and
/// a kept-alive connection's idle time.
async fn first_head_deadline(within: Duration, verdicts: Arc<Verdicts>) {
    tokio::time::sleep(within).await;
    if verdicts.any() {
        std::future::pending::<()>().await;
    }
}

fn count_head_timeout(metrics: &Metrics, handshake_timeout: Duration) {
    metrics.handshake_timeouts_total.inc();
    tracing::debug!("closed: no request headers within {handshake_timeout:?}");
}

/// Counts and logs how hyper ended a connection.
fn count_http_error(e: &hyper::Error, metrics: &Metrics, handshake_timeout: Duration) {
    if e.is_timeout() {
        count_head_timeout(metrics, handshake_timeout);
    } else if e.is_parse() {
        // A head the gate let through and hyper refused, with hyper's
        // empty answer: not expected, but counted all the same.
        let refusal = if e.is_parse_too_large() {
            HttpRefusal::HeadersTooLarge
        } else {
            HttpRefusal::Malformed("refused by the HTTP parser")
        };
        metrics.http_rejection(refusal);
        tracing::debug!("http parse error past the head gate: {e}");
    } else {
        tracing::debug!("http connection error: {e}");
    }
}

/// A client's TCP read half: ready with the prefix, else when the socket
/// is.
impl ReadReady for Prefixed<tokio::net::tcp::OwnedReadHalf> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            self.inner.as_ref().poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// Peeks, and reads the pong only once it has all of it: what it
    /// leaves is whole frames for the reader.
    fn poll_take_pong(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if !self.prefix.is_empty() {
            return Poll::Ready(Ok(false));
        }
        let mut peeked = [0u8; MAX_PONG_LEN];
        let mut buf = ReadBuf::new(&mut peeked);
        std::task::ready!(self.inner.poll_peek(cx, &mut buf))?;
        let Some(len) = whole_pong(buf.filled()) else {
            return Poll::Ready(Ok(false));
        };
        // The bytes are in the socket's queue, so a read takes them all.
        match self.inner.as_ref().try_read(&mut peeked[..len]) {
            Ok(n) if n == len => Poll::Ready(Ok(true)),
            Ok(_) => Poll::Ready(Err(std::io::Error::other("a pong read short"))),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A reader that yields `prefix` before `inner`.
pub(super) struct Prefixed<R> {
    pub(super) prefix: Bytes,
    pub(super) inner: R,
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Let go of the allocation, not only of the bytes.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<R: AsyncWrite + Unpin> AsyncWrite for Prefixed<R> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
