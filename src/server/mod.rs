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

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::accept::{accept_loop, serve_http};
use self::session::{Drained, Sessions};
pub use self::setup::{Settings, Setup};
use crate::fanout::shard::Shards;
use crate::feed::{FeedSpec, FeedStats, ReplayOptions};
use crate::market::Market;
use crate::metrics::Metrics;
use crate::pipeline::{Feeds, Pipeline};
use crate::server::guard::access::OriginPolicy;
use crate::server::guard::admission::Admission;
use crate::server::guard::auth::Verifier;
use crate::server::guard::proxy::{ConnectionClient, TrustedProxies};
use crate::server::guard::tls::CertStore;
use crate::server::ws::connection::ConnectionConfig;

mod accept;
pub mod guard;
pub(crate) mod poll;
mod query;
pub(crate) mod replay;
mod replay_ws;
mod routes;
mod session;
mod setup;
pub(crate) mod sse;
mod status;
mod upgrade;
pub(crate) mod web;
pub(crate) mod ws;

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
    /// Shared: each quiet connection holds a pointer, not a copy.
    connection: Arc<ConnectionConfig>,
    send_buffer_bytes: usize,
    /// The threads that write updates to plain-TCP WebSocket connections.
    shards: Arc<Shards>,
    echo: bool,
    admission: Arc<Admission>,
    handshake_timeout: Duration,
    feeds: Vec<Arc<FeedStatus>>,
    /// The NATS URL a feed node publishes to, if it does.
    publish: Option<String>,
    sessions: Sessions,
    started: Instant,
    /// Set when the port speaks TLS.
    tls: Option<tokio_rustls::TlsAcceptor>,
    tls_handshake_timeout: Duration,
    origins: OriginPolicy,
    /// Set when `/ws` and `/sse` need an access token.
    auth: Option<Verifier>,
    /// Peers whose PROXY headers and `X-Forwarded-For` name the client.
    trusted_proxies: TrustedProxies,
    /// Replay on demand, when there is a recordings directory.
    replay: Option<replay::Replays>,
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
                let within = state.handshake_timeout;
                serve_http(io, Bytes::new(), within, client, state, Arc::new(admitted)).await;
            }
            Err(refused) => tracing::debug!(?refused, "stream refused"),
        }
    }
}

/// Starts the feeds, the publisher and the accept loop on `listener`.
/// Fails only if the publisher's or the writers' threads cannot be started.
pub fn start(listener: TcpListener, mut v: Setup) -> std::io::Result<Running> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let metrics = Arc::new(Metrics::default());
    // Before the data path starts encoding: what it compresses.
    if v.settings.connection.compress_min_bytes > 0 {
        crate::wire::deflate::set_min_bytes(v.settings.connection.compress_min_bytes);
    }
    let DataPath {
        market,
        feeds,
        publish,
        background,
    } = start_data_path(&mut v, Arc::clone(&metrics))?;
    for warning in exposure_warnings(addr, v.auth.is_some(), v.origins.allows_any()) {
        tracing::warn!(%addr, "{warning}");
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (sessions, drained) = Sessions::new(Arc::clone(&market), shutdown_rx.clone());
    let tls_store = v.tls.clone();
    let config = &v.settings;
    let state = Arc::new(AppState {
        market: Arc::clone(&market),
        connection: Arc::new(config.connection),
        send_buffer_bytes: config.send_buffer_bytes,
        shards: Arc::new(Shards::start(
            Arc::clone(&market),
            config.writer_threads,
            config.writer_rest_percent,
        )?),
        echo: config.echo,
        admission: Admission::new(config.admission, Arc::clone(&metrics)),
        handshake_timeout: config.handshake_timeout,
        feeds,
        publish,
        sessions,
        started: Instant::now(),
        tls: v.tls.map(|store| {
            tokio_rustls::TlsAcceptor::from(crate::server::guard::tls::server_config(store))
        }),
        tls_handshake_timeout: config.tls_handshake_timeout,
        origins: v.origins,
        auth: v.auth,
        trusted_proxies: v.trusted_proxies,
        replay: v.replay.map(replay::Replays::new),
    });
    let shutdown_timeout = config.shutdown_timeout;
    let task = tokio::spawn(serve(
        listener,
        Arc::clone(&state),
        shutdown_rx,
        background,
        drained,
        shutdown_timeout,
    ));
    Ok(Running {
        addr,
        market,
        tls: tls_store,
        shutdown: shutdown_tx,
        task,
        state,
    })
}

/// The data path a server serves, started.
struct DataPath {
    market: Arc<Market>,
    feeds: Vec<Arc<FeedStatus>>,
    /// The NATS URL a feed node publishes to, if it does.
    publish: Option<String>,
    /// Stopped at shutdown: the feeds, and a feed node's NATS publisher.
    background: Vec<JoinHandle<()>>,
}

/// Starts the publisher (with a feed node's NATS sink) and `v`'s feeds,
/// taking them out of `v`.
fn start_data_path(v: &mut Setup, metrics: Arc<Metrics>) -> std::io::Result<DataPath> {
    let mut pipeline = Pipeline::new(v.settings.ring_capacity, Arc::clone(&metrics))
        .with_candles(v.settings.candles);
    let market = Arc::clone(&pipeline.market);
    let mut background = Vec::new();
    let (mut publish, mut restored) = (None, None);
    if let Some(target) = v.publish.take() {
        publish = Some(format!("{}/{}", target.server, target.prefix));
        let nats = crate::nats::publish::start(
            target,
            v.settings.publish_buffer_updates,
            Arc::clone(&market),
            pipeline.sender(),
        );
        pipeline = pipeline.with_sink(nats.sink);
        background.push(nats.task);
        restored = Some(nats.restored);
    }
    let feeds = pipeline.start().inspect_err(|_| {
        for t in &background {
            t.abort();
        }
    })?;
    let opts = ReplayOptions {
        speed: v.speed,
        looped: v.looped,
    };
    let gate = FeedGate {
        restored,
        metrics,
        min_subscribers: v.settings.min_subscribers as u64,
    };
    let statuses = std::mem::take(&mut v.feeds)
        .into_iter()
        .map(|spec| {
            let (status, task) = spawn_feed(&feeds, spec, opts, gate.clone());
            background.push(task);
            status
        })
        .collect();
    // The publisher ends when the last feed does.
    drop(feeds);
    Ok(DataPath {
        market,
        feeds: statuses,
        publish,
        background,
    })
}

/// Serves `listener` until the shutdown signal; then stops the feeds and
/// waits, up to `timeout`, for the open sessions, which saw the same signal
/// and are sending their 1001s.
async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: watch::Receiver<bool>,
    background: Vec<JoinHandle<()>>,
    drained: Drained,
    timeout: Duration,
) {
    accept_loop(listener, state, shutdown).await;
    for t in &background {
        t.abort();
    }
    if !drained.wait(timeout).await {
        tracing::info!("shutdown timeout: {timeout:?} passed with sessions still open");
    }
}

/// What a feed waits for before it starts: a feed node's restore from NATS
/// (it continues its numbering from there), and `--min-subscribers`.
#[derive(Clone)]
struct FeedGate {
    restored: Option<watch::Receiver<bool>>,
    metrics: Arc<Metrics>,
    min_subscribers: u64,
}

impl FeedGate {
    async fn open(&mut self) {
        if let Some(restored) = &mut self.restored {
            let _ = restored.wait_for(|done| *done).await;
        }
        while self.metrics.subscribers.get() < self.min_subscribers {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Spawns one feed behind `gate`; its status says how it ended.
fn spawn_feed(
    feeds: &Feeds,
    spec: FeedSpec,
    opts: ReplayOptions,
    mut gate: FeedGate,
) -> (Arc<FeedStatus>, JoinHandle<()>) {
    let status = Arc::new(FeedStatus {
        name: spec.name(),
        stats: Arc::default(),
        state: Mutex::new(FeedState::Running),
    });
    let run = feeds.run(spec, opts, Arc::clone(&status.stats));
    let task_status = Arc::clone(&status);
    let task = tokio::spawn(async move {
        let status = task_status;
        gate.open().await;
        let state = match run.await {
            Ok(()) => {
                tracing::info!(feed = %status.name, "feed finished");
                FeedState::Finished
            }
            Err(e) => {
                tracing::error!(feed = %status.name, "feed stopped: {}", e.with_causes());
                gate.metrics.feed_errors_total.inc();
                FeedState::Failed
            }
        };
        *status.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    });
    (status, task)
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

/// Why a server could not start. The cause is a source, not repeated in
/// the message.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the server")]
    Start(#[source] std::io::Error),
    #[error("listening for SIGHUP")]
    Signal(#[source] std::io::Error),
}

/// Binds the configured address, prints where to connect, and serves until
/// SIGINT or SIGTERM.
pub async fn serve_until_signal(v: Setup) -> Result<(), ServeError> {
    let listen = v.settings.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: listen,
            source,
        })?;
    let max_connections = v.settings.admission.max_connections;
    let fd_limit = crate::os::raise_open_files_limit();
    let running = start(listener, v).map_err(ServeError::Start)?;
    let addr = running.addr;
    // Every handler before the address line: whoever reads it may signal us
    // at once.
    let stop = shutdown_signal();
    #[cfg(unix)]
    if let Some(store) = running.tls.clone() {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).map_err(ServeError::Signal)?;
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
}
