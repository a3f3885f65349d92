//! The server: one port for the dashboard (`/`), the WebSocket (`/ws`), its
//! Server-Sent Events fallback (`/sse`), `/metrics` and `/healthz`; the feed
//! tasks and the publisher behind it.

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
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Validated;
use crate::connection::{self, ConnectionConfig, Service};
use crate::encode::write_json_str;
use crate::feed::{self, FeedStats, ReplayOptions};
use crate::market::Market;
use crate::metrics::Metrics;
use crate::protocol::Format;
use crate::publish::Publisher;
use crate::symbols::{Normalizer, SymbolTable};
use crate::update::now_ns;
use crate::{sse, web};

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
    feeds: Vec<Arc<FeedStatus>>,
    shutdown: watch::Receiver<bool>,
    started: Instant,
}

/// A server started by [`start`]: its address, its market, and the handle
/// that stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub market: Arc<Market>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    state: Arc<AppState>,
}

impl Running {
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
        if let Err(e) = serve_http(io, Arc::clone(&self.state)).await {
            tracing::debug!("http connection error: {e}");
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
    Publisher::new(Arc::clone(&market), writer).spawn(rx)?;
    let opts = ReplayOptions {
        speed: v.speed,
        looped: v.looped,
    };
    let mut feeds = Vec::new();
    let mut feed_tasks = Vec::new();
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
        feed_tasks.push(tokio::spawn(async move {
            while metrics.subscribers.load(Relaxed) < min_subscribers {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let state = match run.await {
                Ok(()) => {
                    tracing::info!(feed = %status.name, "feed finished");
                    FeedState::Finished
                }
                Err(e) => {
                    tracing::error!(feed = %status.name, "feed stopped: {e}");
                    metrics.feed_errors_total.fetch_add(1, Relaxed);
                    FeedState::Failed
                }
            };
            *status.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        }));
    }
    drop(tx);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        market: Arc::clone(&market),
        connection: v.config.connection(),
        send_buffer_bytes: v.config.send_buffer_bytes,
        echo: v.config.echo,
        feeds,
        shutdown: shutdown_rx.clone(),
        started: Instant::now(),
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
        while state.market.metrics.connections.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Ok(Running {
        addr,
        market,
        shutdown: shutdown_tx,
        task,
        state,
    })
}

/// Binds the configured address, prints where to connect, and serves until
/// SIGINT or SIGTERM.
pub async fn serve_until_signal(v: Validated) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listen = v.config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let running = start(listener, v).context("starting the server")?;
    let addr = running.addr;
    println!("tickwire serving on http://{addr}/ (WebSocket: ws://{addr}/ws)");
    shutdown_signal().await;
    tracing::info!("shutting down: closing connections with 1001");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
        // We batch frames ourselves; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        if state.send_buffer_bytes > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(state.send_buffer_bytes);
        }
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if let Err(e) = serve_http(stream, state).await {
                tracing::debug!(%peer, "http connection error: {e}");
            }
        });
    }
}

/// One HTTP/1 connection, with upgrades to WebSocket.
async fn serve_http<IO>(io: IO, state: Arc<AppState>) -> hyper::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(req, &state)) }
    });
    http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
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

fn route(req: Request<Incoming>, state: &Arc<AppState>) -> Response<Body> {
    match req.uri().path() {
        "/ws" => upgrade(req, state, false),
        "/echo" if state.echo => upgrade(req, state, true),
        "/sse" => match sse::open(
            req.method(),
            req.uri(),
            req.headers(),
            &state.market,
            state.connection,
            state.shutdown.clone(),
        ) {
            Ok(r) => r.map(Either::Right),
            Err(e) => respond(e.status(), "text/plain", format!("{e}\n")),
        },
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
    type Counter = fn(&FeedStats) -> &std::sync::atomic::AtomicU64;
    let counters: [(&str, &str, Counter); 7] = [
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
    ];
    for (metric, help, counter) in counters {
        let name = format!("tickwire_feed_{metric}_total");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for f in &state.feeds {
            let v = counter(&f.stats).load(Relaxed);
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
            format!(
                ",\"state\":\"{st}\",\"updates\":{}",
                stats.updates.load(Relaxed)
            )
            .as_bytes(),
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
                    stats.reconnects.load(Relaxed),
                    stats.gaps.load(Relaxed),
                )
                .as_bytes(),
            );
        }
        body.push(b'}');
    }
    let healthy = failed < state.feeds.len() && !*state.shutdown.borrow();
    let m = &state.market.metrics;
    body.extend_from_slice(
        format!(
            "],\"status\":\"{}\",\"connections\":{},\"updates\":{},\"uptime_ms\":{}}}\n",
            if healthy { "ok" } else { "unavailable" },
            m.connections.load(Relaxed),
            m.updates_in_total.load(Relaxed),
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

/// Refuses a request on `/ws` that is not a valid WebSocket upgrade, with
/// the status and reason docs/PROTOCOL.md lists.
fn refuse_upgrade(state: &AppState, status: StatusCode, reason: &str) -> Response<Body> {
    state
        .market
        .metrics
        .upgrade_rejections_total
        .fetch_add(1, Relaxed);
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

fn upgrade(mut req: Request<Incoming>, state: &Arc<AppState>, echo: bool) -> Response<Body> {
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
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(u) => u,
        Err(e) => return refuse_upgrade(state, StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let state = Arc::clone(state);
    tokio::spawn(async move {
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
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // Owned halves of the TCP stream: no lock between reader and
                // writer. Bytes hyper read past the handshake come first.
                let (read, write) = parts.io.into_inner().into_split();
                let read = Prefixed {
                    prefix: parts.read_buf,
                    inner: read,
                };
                connection::serve(read, write, service, market, state.connection, shutdown).await;
            }
            Err(upgraded) => {
                let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                connection::serve(read, write, service, market, state.connection, shutdown).await;
            }
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!is_valid_key(b""));
    }
}
