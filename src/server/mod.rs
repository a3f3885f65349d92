//! The server: one port for the dashboard (`/`), the WebSocket (`/ws`), its
//! Server-Sent Events fallback (`/sse`), `/metrics` and `/healthz`, in plain
//! HTTP or, with a certificate, HTTPS and wss; the feed tasks and the
//! publisher behind it.
//!
//! One connection is served by [`serve_http`] over any byte stream: a TCP
//! socket, or the TLS stream [`tls`](crate::server::guard::tls) makes of one. Upgraded
//! WebSocket connections on plain TCP get the socket's owned halves, so the
//! writer's `writev` goes straight to the kernel; over TLS the writer's
//! batches go through the TLS stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::Validated;
use crate::feed::{self, FeedStats, ReplayOptions};
use crate::market::Market;
use crate::metrics::{Counter, Metrics};
use crate::publish::Publisher;
use crate::server::guard::access::{self, Grant, OriginPolicy};
use crate::server::guard::admission::{self, Admission, Admitted};
use crate::server::guard::auth::{AuthError, Verifier};
use crate::server::guard::head_gate::{HeadGate, HttpRefusal, Verdict, Verdicts};
use crate::server::guard::proxy::{self, ConnectionClient, Identified, TrustedProxies};
use crate::server::guard::tls::CertStore;
use crate::server::ws::connection::{self, ConnectionConfig, Service};
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::now_ns;
use crate::wire::encode::write_json_str;
use crate::wire::Format;

pub mod guard;
pub mod sse;
pub mod web;
pub mod ws;

/// Updates a feed may have in flight to the publisher.
const FEED_CHANNEL: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FeedState {
    Running,
    Finished,
    Failed,
}

struct FeedStatus {
    name: String,
    stats: Arc<FeedStats>,
    state: Mutex<FeedState>,
}

/// What request handlers share.
struct AppState {
    market: Arc<Market>,
    connection: ConnectionConfig,
    send_buffer_bytes: usize,
    echo: bool,
    admission: Arc<Admission>,
    handshake_timeout: Duration,
    feeds: Vec<Arc<FeedStatus>>,
    /// The NATS URL a feed node publishes to, if it does.
    publish: Option<String>,
    shutdown: watch::Receiver<bool>,
    started: Instant,
    /// Set when the port speaks TLS.
    tls: Option<tokio_rustls::TlsAcceptor>,
    tls_handshake_timeout: Duration,
    origins: OriginPolicy,
    /// Set when `/ws` and `/sse` need an access token.
    auth: Option<Verifier>,
    /// Peers whose PROXY headers and `X-Forwarded-For` name the client.
    trusted_proxies: TrustedProxies,
}

/// A server started by [`start`]: its address, its market, and the handle
/// that stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub market: Arc<Market>,
    tls: Option<Arc<CertStore>>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    state: Arc<AppState>,
}

impl Running {
    /// Whether the port speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Loads the certificate and key again (what SIGHUP does): the next
    /// handshakes get the new pair, open connections keep theirs. A pair
    /// that does not load leaves the old one in service. Without TLS, does
    /// nothing.
    pub fn reload_tls(&self) -> Result<(), crate::server::guard::tls::TlsError> {
        match &self.tls {
            Some(store) => store.reload(&self.market.metrics),
            None => Ok(()),
        }
    }

    /// Asks every connection to close (1001), waits for them up to the
    /// shutdown timeout, and stops the server.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Serves one HTTP connection over `io` exactly as an accepted TCP
    /// connection is served (the same routes, upgrade checks and WebSocket
    /// connection code), until it ends. The fuzz targets (`fuzz/`) drive it
    /// with arbitrary bytes over an in-memory stream.
    pub async fn serve_stream<IO>(&self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        match self.state.admission.admit(peer.ip()) {
            Ok(admitted) => {
                let state = Arc::clone(&self.state);
                let client = ConnectionClient::Peer(peer);
                serve_http(io, Bytes::new(), client, state, Arc::new(admitted)).await;
            }
            Err(refused) => tracing::debug!(?refused, "stream refused"),
        }
    }
}

/// Starts the feeds, the publisher and the accept loop on `listener`.
/// Fails only if the publisher's thread cannot be started.
pub fn start(listener: TcpListener, v: Validated) -> std::io::Result<Running> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let metrics = Arc::new(Metrics::default());
    let symbols = SymbolTable::new();
    let (market, writer) = Market::new(
        v.config.ring_capacity,
        Arc::clone(&symbols),
        Arc::clone(&metrics),
    );
    let (tx, rx) = mpsc::channel(FEED_CHANNEL);
    let mut publisher = Publisher::new(Arc::clone(&market), writer);
    let mut feed_tasks = Vec::new();
    let (mut publish, mut restored) = (None, None);
    if let Some(target) = v.publish {
        publish = Some(format!("{}/{}", target.server, target.prefix));
        let nats = crate::nats::publish::start(
            target,
            v.config.publish_buffer_updates,
            Arc::clone(&market),
            tx.clone(),
        );
        publisher = publisher.with_sink(nats.sink);
        // Stopped with the feeds at shutdown.
        feed_tasks.push(nats.task);
        restored = Some(nats.restored);
    }
    if let Err(e) = publisher.spawn(rx) {
        for t in &feed_tasks {
            t.abort();
        }
        return Err(e);
    }
    let opts = ReplayOptions {
        speed: v.speed,
        looped: v.looped,
    };
    let mut feeds = Vec::new();
    for spec in v.feeds {
        let status = Arc::new(FeedStatus {
            name: spec.name(),
            stats: Arc::default(),
            state: Mutex::new(FeedState::Running),
        });
        feeds.push(Arc::clone(&status));
        let normalizer = Normalizer::new(Arc::clone(&symbols));
        let run = feed::run(
            spec,
            opts,
            normalizer,
            tx.clone(),
            Arc::clone(&status.stats),
        );
        let metrics = Arc::clone(&metrics);
        let min_subscribers = v.config.min_subscribers as u64;
        let mut restored = restored.clone();
        feed_tasks.push(tokio::spawn(async move {
            // A feed node continues its numbering from NATS: feeds wait.
            if let Some(restored) = &mut restored {
                let _ = restored.wait_for(|done| *done).await;
            }
            while metrics.subscribers.get() < min_subscribers {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let state = match run.await {
                Ok(()) => {
                    tracing::info!(feed = %status.name, "feed finished");
                    FeedState::Finished
                }
                Err(e) => {
                    tracing::error!(feed = %status.name, "feed stopped: {}", e.with_causes());
                    metrics.feed_errors_total.inc();
                    FeedState::Failed
                }
            };
            *status.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        }));
    }
    drop(tx);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    for warning in exposure_warnings(addr, v.auth.is_some(), v.origins.allows_any()) {
        tracing::warn!(%addr, "{warning}");
    }
    let tls_store = v.tls.clone();
    let state = Arc::new(AppState {
        market: Arc::clone(&market),
        connection: v.config.connection(),
        send_buffer_bytes: v.config.send_buffer_bytes,
        echo: v.config.echo,
        admission: Admission::new(v.config.admission(), Arc::clone(&metrics)),
        handshake_timeout: Duration::from_millis(v.config.handshake_timeout_ms),
        feeds,
        publish,
        shutdown: shutdown_rx.clone(),
        started: Instant::now(),
        tls: v.tls.map(|store| {
            tokio_rustls::TlsAcceptor::from(crate::server::guard::tls::server_config(store))
        }),
        tls_handshake_timeout: Duration::from_millis(v.config.tls_handshake_timeout_ms),
        origins: v.origins,
        auth: v.auth,
        trusted_proxies: v.trusted_proxies,
    });
    let shutdown_timeout = Duration::from_millis(v.config.shutdown_timeout_ms);
    let accept_state = Arc::clone(&state);
    let task = tokio::spawn(async move {
        let state = accept_state;
        accept_loop(listener, Arc::clone(&state), shutdown_rx).await;
        for t in &feed_tasks {
            t.abort();
        }
        // Connections saw the same signal and are sending their 1001s.
        let deadline = Instant::now() + shutdown_timeout;
        while state.market.metrics.connections.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Ok(Running {
        addr,
        market,
        tls: tls_store,
        shutdown: shutdown_tx,
        task,
        state,
    })
}

/// What start-up warns about: a server anyone may reach and read.
fn exposure_warnings(addr: SocketAddr, auth: bool, any_origin: bool) -> Vec<&'static str> {
    let mut w = Vec::new();
    if !auth && !addr.ip().is_loopback() {
        w.push(
            "listening beyond loopback without access tokens: anyone who can reach this port \
             gets the feed; set --auth-secret-file (see README, \"Access control\")",
        );
    }
    if any_origin {
        w.push("--allow-origin '*': any web page may open a connection to this server");
    }
    w
}

/// Binds the configured address, prints where to connect, and serves until
/// SIGINT or SIGTERM.
pub async fn serve_until_signal(v: Validated) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listen = v.config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let max_connections = v.config.max_connections;
    let fd_limit = raise_descriptor_limit();
    let running = start(listener, v).context("starting the server")?;
    let addr = running.addr;
    // Every handler before the address line: whoever reads it may signal us
    // at once.
    let stop = shutdown_signal();
    #[cfg(unix)]
    if let Some(store) = running.tls.clone() {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        let metrics = Arc::clone(&running.market.metrics);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the TLS certificate");
                // Logged and counted by reload.
                let _ = store.reload(&metrics);
            }
        });
    }
    if running.is_tls() {
        println!("tickwire serving on https://{addr}/ (WebSocket: wss://{addr}/ws)");
    } else {
        println!("tickwire serving on http://{addr}/ (WebSocket: ws://{addr}/ws)");
    }
    // Feeds, the listener and the runtime need some descriptors too. Short
    // of them, accept fails (and is retried) instead of answering 503.
    let needed = max_connections as u64 + 64;
    if let Some(limit) = fd_limit.filter(|&l| l < needed) {
        tracing::warn!(
            "max_connections {max_connections} needs about {needed} file descriptors, \
             the limit is {limit}: raise it (ulimit -n) or lower max_connections"
        );
    }
    stop.await;
    tracing::info!("shutting down: closing connections with 1001");
    running.stop().await;
    Ok(())
}

/// Raises the soft open-files limit to the hard one (as Go's runtime does
/// at start); returns the limit, if there is one.
fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct we
        // pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives in
/// between is not lost (and does not kill the process). Call it inside the
/// runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn accept_loop(
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
                match identify_client(&state, &mut stream, peer).await {
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
            let span = client.span();
            serve_connection(stream, initial, client, state, admitted)
                .instrument(span)
                .await;
        });
    }
}

/// Reads what a trusted proxy's connection starts with: who the client
/// is, and the bytes read past a PROXY header. None when the connection is
/// to be closed (a bad PROXY header, or nothing within the handshake
/// timeout), counted and logged.
async fn identify_client(
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

/// Serves an admitted connection: the TLS handshake when the port speaks
/// TLS, then HTTP. `initial` is what was read before (past a PROXY
/// header).
async fn serve_connection(
    stream: TcpStream,
    initial: Bytes,
    client: ConnectionClient,
    state: Arc<AppState>,
    admitted: Arc<Admitted>,
) {
    let Some(acceptor) = state.tls.clone() else {
        return serve_http(stream, initial, client, state, admitted).await;
    };
    let handshake = accept_tls(&acceptor, stream, initial);
    let tls = match tokio::time::timeout(state.tls_handshake_timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    match tls {
        Ok(tls) => serve_http(tls, Bytes::new(), client, state, admitted).await,
        Err(e) => {
            state.market.metrics.tls_handshake_failures_total.inc();
            tracing::debug!("TLS handshake failed: {e}");
        }
    }
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\nConnection: close\r\nContent-Length: 45\r\n\r\n\
this port speaks TLS: use https:// or wss://\n";

/// Runs the server side of a TLS handshake over `stream`, whose first
/// bytes, already read, are `initial`. A client that speaks plain HTTP to
/// the TLS port gets a plain-text 400 saying so, rather than a TLS alert
/// its HTTP parser cannot read.
async fn accept_tls(
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
/// request head passes the [`HeadGate`] first.
///
/// `admitted` holds the connection's place against the connection limits;
/// an upgraded connection takes a clone along.
async fn serve_http<S>(
    io: S,
    initial: Bytes,
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
    let service = service_fn(move |req| {
        let close = Arc::clone(&close_on_stall);
        let response = match verdicts.next() {
            Verdict::Refuse(refusal) => refuse_head(&state, refusal),
            Verdict::Pass { last } => {
                let mut r = match client {
                    ConnectionClient::Forwarded { hop, .. } => {
                        forwarded(req, hop, &state, Arc::clone(&admitted), close)
                    }
                    _ => route(req, &state, Arc::clone(&admitted), close),
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
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(gate), service)
        .with_upgrades();
    let served = tokio::select! {
        served = conn => served,
        // Dropping the connection closes the socket, and what hyper still
        // held for the client with it.
        () = close.notified() => Ok(()),
    };
    if let Err(e) = served {
        if e.is_timeout() {
            metrics.handshake_timeouts_total.inc();
            tracing::debug!("closed: no request headers within {handshake_timeout:?}");
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
}

/// Routes a request a trusted proxy passed on, as its client's: the
/// connection is attributed to the client its `X-Forwarded-For` names (so
/// that the per-IP limits count it), and the request's log lines carry
/// that client.
fn forwarded(
    req: Request<Incoming>,
    hop: std::net::IpAddr,
    state: &Arc<AppState>,
    admitted: Arc<Admitted>,
    close_connection: Arc<Notify>,
) -> Response<Body> {
    let values = req.headers().get_all("x-forwarded-for");
    let client = state
        .trusted_proxies
        .forwarded_client(hop, values.iter().map(|v| v.as_bytes()));
    tracing::info_span!("req", client = %client).in_scope(|| match admitted.attribute(client) {
        Ok(()) => route(req, state, admitted, close_connection),
        Err(refused) => {
            tracing::debug!(?refused, "request refused");
            let (status, retry_after, reason) = refused.answer(state.admission.limits());
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            let mut r = respond(status, "text/plain", format!("{reason}\n"));
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    })
}

/// Answers a request head the [`HeadGate`] refused: its status, a
/// one-line reason, and the end of the connection.
fn refuse_head(state: &AppState, refusal: HttpRefusal) -> Response<Body> {
    state.market.metrics.http_rejection(refusal);
    tracing::debug!(
        reason = HttpRefusal::REASONS[refusal.index()],
        "refused a request head ({})",
        refusal.status().as_u16()
    );
    let mut r = respond(
        refusal.status(),
        "text/plain",
        format!("{}\n", refusal.reason()),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

type Body = Either<Full<Bytes>, sse::EventStream>;

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(body.into())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn route(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    admitted: Arc<Admitted>,
    close_connection: Arc<Notify>,
) -> Response<Body> {
    match req.uri().path() {
        "/ws" => upgrade(req, state, false, admitted),
        "/echo" if state.echo => upgrade(req, state, true, admitted),
        "/sse" => {
            let grant = match admit(&req, state) {
                Ok(grant) => grant,
                Err(refused) => return *refused,
            };
            match sse::open(
                req.method(),
                req.uri(),
                req.headers(),
                &state.market,
                state.connection,
                grant,
                sse::StreamControl {
                    shutdown: state.shutdown.clone(),
                    close_connection,
                },
            ) {
                Ok(r) => {
                    let mut r = r.map(Either::Right);
                    // An allowed cross-origin page may read the stream.
                    if let Some(origin) = req.headers().get(header::ORIGIN) {
                        let h = r.headers_mut();
                        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                        h.insert(header::VARY, HeaderValue::from_static("Origin"));
                    }
                    r
                }
                Err(e) => respond(e.status(), "text/plain", format!("{e}\n")),
            }
        }
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(state),
        ),
        "/healthz" => healthz(state),
        path => match web::asset(path) {
            Some((content_type, body)) if req.method() == Method::GET => {
                respond(StatusCode::OK, content_type, Bytes::from_static(body))
            }
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        },
    }
}

fn render_metrics(state: &AppState) -> String {
    use std::fmt::Write as _;
    let mut out = state.market.metrics.render();
    let _ = writeln!(
        out,
        "# HELP tickwire_symbols Symbols interned.\n# TYPE tickwire_symbols gauge"
    );
    let _ = writeln!(out, "tickwire_symbols {}", state.market.symbols.len());
    let _ = writeln!(out, "# HELP tickwire_ring_tail Next ring position (updates published).\n# TYPE tickwire_ring_tail counter");
    let _ = writeln!(out, "tickwire_ring_tail {}", state.market.ring.tail());
    type Field = fn(&FeedStats) -> &Counter;
    let counters: [(&str, &str, Field); 9] = [
        ("records", "Records (lines, rows) read by a feed.", |s| {
            &s.records
        }),
        ("updates", "Updates a feed sent to the publisher.", |s| {
            &s.updates
        }),
        (
            "skipped",
            "Records skipped as not quotes or trades (depth, snapshots, notes).",
            |s| &s.skipped,
        ),
        ("rejected", "Malformed records a feed rejected.", |s| {
            &s.rejected
        }),
        ("loops", "Times a looped recording restarted.", |s| &s.loops),
        (
            "reconnects",
            "Times a network feed connected again to its upstream.",
            |s| &s.reconnects,
        ),
        (
            "gaps",
            "Sequence gaps a network feed detected upstream.",
            |s| &s.gaps,
        ),
        (
            "outdated",
            "Upstream messages dropped as not newer than what the feed already published.",
            |s| &s.outdated,
        ),
        (
            "refusals",
            "Subscriptions a network feed's upstream refused.",
            |s| &s.refusals,
        ),
    ];
    for (metric, help, counter) in counters {
        let name = format!("tickwire_feed_{metric}_total");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for f in &state.feeds {
            let v = counter(&f.stats).get();
            let mut label = Vec::new();
            write_json_str(&mut label, &f.name);
            let _ = writeln!(
                out,
                "{name}{{feed={}}} {v}",
                String::from_utf8_lossy(&label)
            );
        }
    }
    out
}

fn healthz(state: &AppState) -> Response<Body> {
    let mut body = Vec::with_capacity(256);
    let mut failed = 0;
    body.extend_from_slice(b"{\"feeds\":[");
    for (i, f) in state.feeds.iter().enumerate() {
        let st = *f.state.lock().unwrap_or_else(|e| e.into_inner());
        failed += usize::from(st == FeedState::Failed);
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"name\":");
        write_json_str(&mut body, &f.name);
        let st = match st {
            FeedState::Running => "running",
            FeedState::Finished => "finished",
            FeedState::Failed => "failed",
        };
        let stats = &f.stats;
        body.extend_from_slice(
            format!(",\"state\":\"{st}\",\"updates\":{}", stats.updates.get()).as_bytes(),
        );
        if stats.network.load(Relaxed) {
            let last = stats.last_message_ns.load(Relaxed);
            let age_ms = if last == 0 {
                "null".to_owned()
            } else {
                (now_ns().saturating_sub(last) / 1_000_000).to_string()
            };
            body.extend_from_slice(
                format!(
                    ",\"connected\":{},\"last_message_age_ms\":{age_ms},\"reconnects\":{},\"gaps\":{}",
                    stats.connected.load(Relaxed),
                    stats.reconnects.get(),
                    stats.gaps.get(),
                )
                .as_bytes(),
            );
        }
        body.push(b'}');
    }
    let healthy = failed < state.feeds.len() && !*state.shutdown.borrow();
    let m = &state.market.metrics;
    body.push(b']');
    if let Some(url) = &state.publish {
        body.extend_from_slice(b",\"publish\":{\"url\":");
        write_json_str(&mut body, url);
        body.extend_from_slice(
            format!(
                ",\"connected\":{},\"reconnects\":{},\"published\":{},\"republished\":{},\"conflated\":{}}}",
                m.nats_publish_connected.get() == 1,
                m.nats_publish_reconnects_total.get(),
                m.nats_published_total.get(),
                m.nats_republished_total.get(),
                m.nats_publish_conflated_total.get(),
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            ",\"status\":\"{}\",\"connections\":{},\"updates\":{},\"uptime_ms\":{}}}\n",
            if healthy { "ok" } else { "unavailable" },
            m.connections.get(),
            m.updates_in_total.get(),
            state.started.elapsed().as_millis()
        )
        .as_bytes(),
    );
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "application/json", body)
}

/// Checks a request for `/ws` or `/sse` against the Origin policy (403)
/// and, when auth is on, its access token (401); returns what the token
/// allows. The refusal is boxed: a cold path, and a large type.
fn admit(req: &Request<Incoming>, state: &AppState) -> Result<Grant, Box<Response<Body>>> {
    let metrics = &state.market.metrics;
    if let Err(e) = state.origins.check(req.headers()) {
        metrics.origin_rejections_total.inc();
        tracing::info!(origin = %e.0, path = req.uri().path(), "refused a cross-origin request (403)");
        let refused = respond(StatusCode::FORBIDDEN, "text/plain", format!("{e}\n"));
        return Err(Box::new(refused));
    }
    access::authorize(state.auth.as_ref(), req.headers(), req.uri()).map_err(|e| {
        metrics.auth_rejection(e);
        tracing::info!(
            reason = e.name(),
            path = req.uri().path(),
            "refused an access token (401)"
        );
        Box::new(refuse_token(e))
    })
}

/// 401 with the RFC 6750 challenge.
fn refuse_token(e: AuthError) -> Response<Body> {
    let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", format!("{e}\n"));
    if let Ok(v) = HeaderValue::from_str(&access::www_authenticate(e)) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Refuses a request on `/ws` that is not a valid WebSocket upgrade, with
/// the status and reason docs/PROTOCOL.md lists.
fn refuse_upgrade(state: &AppState, status: StatusCode, reason: &str) -> Response<Body> {
    state.market.metrics.upgrade_rejections_total.inc();
    let mut r = respond(status, "text/plain", format!("{reason}\n"));
    if status == StatusCode::UPGRADE_REQUIRED {
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    r
}

fn upgrade(
    mut req: Request<Incoming>,
    state: &Arc<AppState>,
    echo: bool,
    admitted: Arc<Admitted>,
) -> Response<Body> {
    if req.method() != Method::GET {
        return refuse_upgrade(
            state,
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must be a GET",
        );
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return refuse_upgrade(
            state,
            StatusCode::UPGRADE_REQUIRED,
            "/ws is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket",
        );
    }
    let headers = req.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return refuse_upgrade(
            state,
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13",
        );
    }
    let key_ok = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .is_some_and(|k| is_valid_key(k.as_bytes()));
    if !key_ok {
        return refuse_upgrade(
            state,
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes in base64",
        );
    }
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let format = match Format::negotiate((!offered.is_empty()).then_some(offered.as_str())) {
        Ok(f) => f,
        Err(e) => return refuse_upgrade(state, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // The echo route serves no market data and is for conformance suites.
    let grant = if echo {
        Grant::default()
    } else {
        match admit(&req, state) {
            Ok(grant) => grant,
            Err(refused) => return *refused,
        }
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(u) => u,
        Err(e) => return refuse_upgrade(state, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let state = Arc::clone(state);
    let connection = async move {
        let _admitted = admitted;
        let upgraded = match fut.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(e) => {
                tracing::debug!("upgrade failed: {e}");
                return;
            }
        };
        let service = if echo {
            Service::Echo
        } else {
            Service::Market(format.unwrap_or(Format::Binary))
        };
        let market = Arc::clone(&state.market);
        let shutdown = state.shutdown.clone();
        match upgraded.downcast::<TokioIo<HeadGate<TcpStream>>>() {
            Ok(parts) => {
                // Owned halves of the TCP stream: no lock between reader and
                // writer. Bytes hyper read past the handshake come first,
                // then any the gate read and hyper did not.
                let (tcp, unread) = parts.io.into_inner().into_parts();
                let prefix = if unread.is_empty() {
                    parts.read_buf
                } else {
                    Bytes::from([&parts.read_buf[..], &unread[..]].concat())
                };
                let (read, write) = tcp.into_split();
                let read = Prefixed {
                    prefix,
                    inner: read,
                };
                connection::serve(
                    read,
                    write,
                    service,
                    market,
                    state.connection,
                    grant,
                    shutdown,
                )
                .await;
            }
            Err(upgraded) => {
                // TLS (or any other stream): one object, shared by the halves.
                let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                connection::serve(
                    read,
                    write,
                    service,
                    market,
                    state.connection,
                    grant,
                    shutdown,
                )
                .await;
            }
        }
    };
    // The connection's log lines carry its client, as the request's did.
    tokio::spawn(connection.in_current_span());
    let (mut parts, _) = response.into_parts();
    if let Some(f) = format {
        parts.headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(f.subprotocol()),
        );
    }
    Response::from_parts(parts, Either::Left(Full::new(Bytes::new())))
}

/// RFC 6455 §4.1: the key is a base64-encoded 16-byte value (24 characters
/// ending in `==`).
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// A reader that yields `prefix` before `inner`.
struct Prefixed<R> {
    prefix: Bytes,
    inner: R,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_warned_about() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let all: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let v6: SocketAddr = "[::]:8080".parse().unwrap();
        assert!(exposure_warnings(lo, false, false).is_empty());
        assert!(exposure_warnings(all, true, false).is_empty());
        assert!(exposure_warnings(all, false, false)[0].contains("without access tokens"));
        assert!(exposure_warnings(v6, false, false)[0].contains("without access tokens"));
        assert!(exposure_warnings(lo, true, true)[0].contains("allow-origin"));
    }

    #[test]
    fn websocket_keys() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!is_valid_key(b""));
    }
}
