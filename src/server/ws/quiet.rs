//! A connection between its upgrade and the first time it needs more
//! than a timer: *quiet*. Most of what a WebSocket connection costs is its
//! working state (the reader task, the subscriber and outbox, the request
//! channel, the futures that wait on them), and an idle connection needs
//! none of it. A quiet connection is one allocation of its settings and
//! one small future in its task that waits for the first byte from the
//! client, the shutdown signal, the token's expiry or the heartbeat
//! timeout, and meanwhile writes its pings straight to the socket.
//! [`super::connection::serve`] builds the working state when it wakes.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;

use tokio::time::Instant;

use super::connection::{ConnectionConfig, Service};
use super::socket::{ReadReady, WriteSide};
use crate::fanout::shard::Shards;
use crate::metrics::Metrics;
use crate::server::guard::access::Grant;
use crate::server::session::Session;
use crate::wire::deflate::Deflate;
use crate::wire::encode::PING_FRAME;

/// A connection that has not needed its working state yet.
pub(super) struct Quiet<R, W> {
    pub(super) reader: R,
    pub(super) writer: W,
    pub(super) service: Service,
    pub(super) deflate: Option<Deflate>,
    pub(super) config: Arc<ConnectionConfig>,
    pub(super) grant: Grant,
    pub(super) session: Session,
    pub(super) shards: Option<Arc<Shards>>,
    pub(super) deflating: Option<DeflateGauge>,
}

/// What a quiet connection hands on when it wakes.
pub(super) struct Woke {
    /// When the client was last heard from: the upgrade, or its last pong.
    pub(super) heard_at: Instant,
    /// When the next ping is due (past: one is owed now).
    pub(super) next_ping: Instant,
    /// A ping the socket took only part of: the bytes it took.
    pub(super) ping_written: Option<usize>,
    /// The shutdown signal came while quiet (and so was seen).
    pub(super) shutdown: bool,
}

/// Counts a quiet connection while it lasts.
struct QuietGauge(Arc<Metrics>);

impl QuietGauge {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.quiet_connections.inc();
        QuietGauge(Arc::clone(metrics))
    }
}

impl Drop for QuietGauge {
    fn drop(&mut self) {
        self.0.quiet_connections.dec();
    }
}

impl<R: ReadReady, W: WriteSide> Quiet<R, W> {
    /// Waits until the client sends something other than a pong, the
    /// server shuts down, the token expires, the client has been silent
    /// for the heartbeat timeout, or a ping cannot be written at once;
    /// pings on time meanwhile, straight to the socket, and takes the
    /// client's pongs.
    pub(super) async fn wait(&mut self) -> Woke {
        let Quiet {
            reader,
            writer,
            config,
            session,
            ..
        } = self;
        let metrics = Arc::clone(&session.market.metrics);
        let _gauge = QuietGauge::new(&metrics);
        let heard_at = Instant::now();
        let mut silent_at = heard_at + config.heartbeat_timeout;
        let mut woke = Woke {
            heard_at,
            next_ping: heard_at + config.heartbeat_interval,
            ping_written: None,
            shutdown: false,
        };
        // Pongs the connection takes while quiet: one for each ping, and
        // one more. More than that, and the working connection's reader
        // takes them, under its inbound rate limit.
        let mut pongs_due: u32 = 1;
        let socket = writer.socket();
        let timer = tokio::time::sleep_until(woke.next_ping);
        tokio::pin!(timer);
        loop {
            let at = woke.next_ping.min(silent_at);
            timer
                .as_mut()
                .reset(session.expiry.map_or(at, |e| e.min(at)));
            tokio::select! {
                biased;
                _ = session.shutdown.changed() => {
                    woke.shutdown = true;
                    return woke;
                }
                // A pong to its pings keeps a client quiet; anything else
                // (or a failure) is the reader's to see.
                took = poll_fn(|cx| {
                    std::task::ready!(reader.poll_read_ready(cx))?;
                    if pongs_due == 0 {
                        return std::task::Poll::Ready(Ok(false));
                    }
                    reader.poll_take_pong(cx)
                }) => {
                    if !matches!(took, Ok(true)) {
                        return woke;
                    }
                    pongs_due -= 1;
                    woke.heard_at = Instant::now();
                    silent_at = woke.heard_at + config.heartbeat_timeout;
                }
                () = &mut timer => {
                    if Instant::now() < woke.next_ping {
                        // Silent too long, or the token expired.
                        return woke;
                    }
                    let Some(socket) = &socket else { return woke };
                    match socket.try_writev(&[io::IoSlice::new(&PING_FRAME)]) {
                        Ok(n) if n > 0 => {
                            metrics.heartbeat_pings_total.inc();
                            woke.next_ping += config.heartbeat_interval;
                            pongs_due = pongs_due.saturating_add(1);
                            if n < PING_FRAME.len() {
                                woke.ping_written = Some(n);
                                return woke;
                            }
                        }
                        // Would block, or failed: the working connection
                        // queues the ping, or meets the error.
                        _ => return woke,
                    }
                }
            }
        }
    }
}

/// Counts a connection that negotiated permessage-deflate while it lives.
pub(super) struct DeflateGauge(Arc<Metrics>);

impl DeflateGauge {
    pub(super) fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.deflate_connections.inc();
        DeflateGauge(Arc::clone(metrics))
    }
}

impl Drop for DeflateGauge {
    fn drop(&mut self) {
        self.0.deflate_connections.dec();
    }
}
