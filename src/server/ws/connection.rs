//! One WebSocket connection: a reader task for what the client sends, and
//! the connection's own task for requests, heartbeats, stalls and closing.
//!
//! Upgrade and reading are fastwebsockets'. Writing is ours: every frame the
//! client gets is already a complete, unmasked frame (`Bytes` shared with
//! the publisher), handed to the kernel in vectored writes. Updates to a
//! plain TCP connection are written by a writer shard
//! ([`crate::fanout::shard`]) while the socket takes them; the task writes
//! its own replies, and takes over whenever the socket would block.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout_at, Instant};
use tracing::Instrument;

use crate::fanout::shard::{Link, Pipe, Retire, Shards, Tally};
use crate::fanout::{FanoutLimits, Subscriber};
use crate::market::Market;
use crate::metrics::Metrics;
use crate::server::guard::access::Grant;
use crate::server::session::Session;
use crate::server::ws::inbound::InboundRate;
use crate::server::ws::quiet::{DeflateGauge, Quiet, Woke};
use crate::server::ws::read::{inbound_limits, read_loop};
use crate::server::ws::socket::{write_close_past_stall, ReadReady, WriteSide};
use crate::wire::deflate::Deflate;
use crate::wire::encode::{self, close_frame};
use crate::wire::{self, close_code, Format, Refusal};

/// Per-connection settings, from the server config.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    pub limits: FanoutLimits,
    /// A client whose socket accepts no bytes for this long is closed with
    /// 1008.
    pub stall_timeout: Duration,
    /// How long a closing connection may take to get its close frame out.
    pub close_timeout: Duration,
    /// Largest message a client may send (close 1009 past it).
    pub max_message_bytes: usize,
    /// Most frames a client message may arrive in (close 1008 past it).
    pub max_fragments: usize,
    /// Messages a client may send (error 4005, then close 1008 past it).
    pub inbound_rate: InboundRate,
    /// How often the server pings the client.
    pub heartbeat_interval: Duration,
    /// A client that sends nothing for this long is closed with 1001.
    pub heartbeat_timeout: Duration,
    /// The longest a `/poll` request waits for a change.
    pub poll_timeout: Duration,
    /// permessage-deflate: the smallest payload compressed; 0: off.
    pub compress_min_bytes: usize,
}

/// What a connection serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Market data in the given format (`/ws`), several updates per
    /// message if `batch` (`/ws?batch=1`).
    Market { format: Format, batch: bool },
    /// Every text or binary message echoed back (`/echo`, with `--echo`):
    /// the same reader and writer as `/ws`, for conformance testing.
    Echo,
}

/// What the reader task tells the writer.
pub(crate) enum Inbound {
    /// A message to send back as it came (echo service).
    Echo(Bytes),
    /// A text message, parsed.
    Request(wire::Request),
    /// A message that got a refusal instead.
    Refused(Refusal),
    /// A frame the protocol obliges us to send (pong, close echo).
    Obligated(Bytes),
    /// The client closed, or broke the protocol: send this close frame (if
    /// any) and stop.
    Close(Option<(u16, String)>),
}

/// Why a connection's writer stopped.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    Stalled,
    /// The access token expired.
    TokenExpired,
    Io(io::Error),
}

/// Serves one upgraded connection until the client leaves, breaks the
/// protocol, stalls, its access token expires, or the server shuts down.
/// `grant` is what the token allows. A writer with a [`WriteSide::socket`]
/// is written by one of `shards` once it subscribes; any other by this
/// task.
///
/// Until the client sends something (or the connection must do more than
/// ping), it waits *quiet* ([`Quiet`]): one small future and one
/// allocation, no reader task, subscriber or outbox; the connection's
/// working state is built, boxed, when it wakes.
pub fn serve<R, W>(
    reader: R,
    writer: W,
    (service, deflate): (Service, Option<Deflate>),
    config: Arc<ConnectionConfig>,
    grant: Grant,
    session: Session,
    shards: Option<Arc<Shards>>,
) -> impl Future<Output = ()> + Send + 'static
where
    R: ReadReady + Send + 'static,
    W: WriteSide + Send + 'static,
{
    let metrics = &session.market.metrics;
    let quiet = Box::new(Quiet {
        deflating: deflate.map(|_| DeflateGauge::new(metrics)),
        reader,
        writer,
        service,
        deflate,
        config,
        grant,
        session,
        shards,
    });
    // What the task holds while quiet: the box, and `wait`'s timer and
    // two wake-up registrations. The rest is built when it wakes, in a
    // future of its own.
    async move {
        let mut quiet = quiet;
        let woke = quiet.wait().await;
        // The span its log lines carry, made now (see `LogClient`).
        let span = quiet
            .session
            .client
            .map_or_else(tracing::Span::current, |c| c.span());
        Box::pin(active(*quiet, woke).instrument(span)).await;
    }
}

/// A woken connection, with its reader task and its pipe, until it ends.
async fn active<R, W>(quiet: Quiet<R, W>, woke: Woke)
where
    R: ReadReady + Send + 'static,
    W: WriteSide,
{
    let Quiet {
        reader,
        writer,
        service,
        deflate,
        config,
        grant,
        mut session,
        shards,
        deflating: _deflating,
    } = quiet;
    let config = *config;
    let market = Arc::clone(&session.market);
    let metrics = Arc::clone(&market.metrics);
    let (format, echo, batch) = match service {
        Service::Market { format, batch } => (format, false, batch),
        Service::Echo => (Format::Binary, true, false),
    };
    let (mut read_task, rx) = spawn_reader(reader, (echo, deflate), &config, &metrics, &woke);
    let mut sub = Subscriber::new(Arc::clone(&market), format, config.limits);
    if deflate.is_some_and(|d| d.takes_shared_frames()) {
        sub.deflate_from(crate::wire::deflate::min_bytes());
    }
    if let Some(symbols) = grant.symbols {
        sub.restrict(symbols);
    }
    let link = Link::new(Pipe::new(sub).batched(batch), writer.socket());
    if let Some(written) = woke.ping_written {
        // The rest of a ping the socket took part of while quiet.
        let mut pipe = link.lock();
        pipe.outbox.push(Bytes::from_static(&encode::PING_FRAME));
        pipe.outbox.advance(written);
    }
    let _retire = Retire(Arc::clone(&link));
    let mut conn = Writer {
        io: writer,
        link: Arc::clone(&link),
        shards,
        market,
        config,
    };
    let expired = session.expired();
    let end = if woke.shutdown {
        conn.shutdown().await
    } else {
        conn.run(rx, &mut session.shutdown, expired, woke.next_ping)
            .await
    };
    if matches!(end, End::TokenExpired) {
        // Counted now, not after the client's close reply is awaited.
        metrics.token_expired_closes_total.inc();
        tracing::info!("closed a connection whose access token expired");
    }
    if matches!(end, End::ClientClosed | End::TokenExpired) {
        // Let the reader drain what the client is still sending, so that
        // closing the socket does not reset it and lose our close frame.
        let _ = tokio::time::timeout(config.close_timeout, &mut read_task).await;
    }
    read_task.abort();
    if let End::Stalled = end {
        metrics.slow_client_closes_total.inc();
        tracing::info!(
            "closed a slow client: no progress for {:?}",
            config.stall_timeout
        );
    } else if let End::Io(e) = end {
        tracing::debug!("connection ended: {e}");
    }
}

/// The connection's reader task, and the channel it sends what it read on.
fn spawn_reader<R: ReadReady + Send + 'static>(
    reader: R,
    (echo, deflate): (bool, Option<Deflate>),
    config: &ConnectionConfig,
    metrics: &Arc<Metrics>,
    woke: &Woke,
) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Box<Inbound>>) {
    // Small: a client that floods requests while we cannot write is held
    // back by TCP, not buffered here. Boxed messages: the channel allocates
    // its first block of 32 slots up front, and a slot of 8 bytes instead
    // of 56 saves 1.5 KiB of each connection.
    let (tx, rx) = mpsc::channel(16);
    let mut limits = inbound_limits(config, echo);
    limits.deflate = deflate.is_some();
    // What the echo service compresses: the conformance suite's messages,
    // each on its own, as market data is (none for a client that limits
    // our window: RFC 7692 lets any message go uncompressed).
    let echo_deflate = deflate
        .filter(|d| echo && d.takes_shared_frames())
        .map(|_| crate::wire::deflate::min_bytes())
        .filter(|&m| m > 0);
    let task = tokio::spawn(read_loop(
        reader,
        limits,
        Arc::clone(metrics),
        tx,
        config.limits.max_subscriptions,
        (echo, echo_deflate),
        woke.heard_at,
    ));
    (task, rx)
}

struct Writer<W> {
    io: W,
    link: Arc<Link>,
    shards: Option<Arc<Shards>>,
    market: Arc<Market>,
    config: ConnectionConfig,
}

impl<W: WriteSide> Writer<W> {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Box<Inbound>>,
        shutdown: &mut watch::Receiver<bool>,
        expired: impl Future<Output = ()>,
        first_ping: Instant,
    ) -> End {
        let market = Arc::clone(&self.market);
        let interval = self.config.heartbeat_interval;
        let ping = tokio::time::sleep_until(first_ping);
        tokio::pin!(ping);
        tokio::pin!(expired);
        loop {
            if self.link.failed() {
                return End::Io(io::Error::other(
                    "the writer shard gave up on this connection",
                ));
            }
            // Checked here, not only when idle: a connection kept busy by
            // updates must be pinged too, or a client that only reads would
            // time out.
            if ping.is_elapsed() {
                self.link
                    .lock()
                    .outbox
                    .push(Bytes::from_static(&encode::PING_FRAME));
                market.metrics.heartbeat_pings_total.inc();
                ping.as_mut().reset(Instant::now() + interval);
            }
            // Register for the wake-up before looking at the ring, so that
            // an update published between the look and the wait still wakes
            // us (tokio's Notify::notified + enable contract).
            let wakeup = market.wakeup.tasks.notified();
            tokio::pin!(wakeup);
            wakeup.as_mut().enable();

            while let Ok(inbound) = rx.try_recv() {
                if let Some(end) = self.take(*inbound) {
                    return self.finish(end).await;
                }
            }
            let sharded = self.link.is_sharded();
            let (owed, idle, due_at) = self.look(sharded);
            if owed {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return self.shutdown().await,
                    _ = &mut expired => return self.finish(End::TokenExpired).await,
                    r = self.flush(self.config.stall_timeout) => if let Err(end) = r { return self.finish(end).await },
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => return self.shutdown().await,
                _ = &mut expired => return self.finish(End::TokenExpired).await,
                inbound = rx.recv() => match inbound {
                    Some(inbound) => if let Some(end) = self.take(*inbound) {
                        return self.finish(end).await;
                    },
                    None => return End::ClientClosed,
                },
                // A connection with no subscriptions is not woken by
                // updates; one a shard writes is woken by the shard only
                // when its socket would block.
                _ = &mut wakeup, if !idle && !sharded => {}
                _ = self.link.held_back.notified(), if sharded => {}
                () = tokio::time::sleep_until(due_at.unwrap_or_else(Instant::now)), if due_at.is_some() => {}
                () = &mut ping => {}
            }
        }
    }

    /// Fills the pipe unless a shard writes it; returns whether bytes are
    /// owed to the socket, whether the connection is idle, and when its
    /// throttled frames are due (the task fills then, updates or not).
    fn look(&self, sharded: bool) -> (bool, bool, Option<Instant>) {
        let mut pipe = self.link.lock();
        if !sharded {
            pipe.fill();
        }
        let due = pipe.sub.next_due_ms().filter(|_| !sharded);
        let due_at = due.map(|ms| Instant::from_std(crate::fanout::instant_of(ms)));
        (
            !pipe.outbox.is_empty() || pipe.held,
            pipe.sub.is_idle(),
            due_at,
        )
    }

    /// Acts on one message from the reader; returns how the connection ends
    /// if it does.
    fn take(&mut self, inbound: Inbound) -> Option<End> {
        let mut pipe = self.link.lock();
        let pipe = &mut *pipe;
        match inbound {
            Inbound::Echo(frame) => pipe.outbox.push(frame),
            Inbound::Request(req) => {
                pipe.sub.handle(req, &mut pipe.outbox);
                if !pipe.sub.is_idle() {
                    if let Some(shards) = &self.shards {
                        shards.add(&self.link);
                    }
                }
                // What the connection takes may have changed: its shard
                // looks at it again, updates or not (`fanout/slots.rs`).
                self.link.nudge();
            }
            Inbound::Refused(refusal) => pipe.sub.refuse(&refusal, &mut pipe.outbox),
            Inbound::Obligated(frame) => {
                let is_close = frame
                    .first()
                    .is_some_and(|b| b & 0x0f == encode::OPCODE_CLOSE);
                if is_close {
                    pipe.hold_for_close();
                }
                pipe.outbox.push(frame);
                if is_close {
                    return Some(End::ClientClosed);
                }
            }
            Inbound::Close(None) => {
                pipe.hold_for_close();
                return Some(End::ClientClosed);
            }
            Inbound::Close(Some((code, reason))) => {
                // What was queued before the client's error is still owed
                // to it: the close goes after, and nothing after it.
                pipe.hold_for_close();
                pipe.outbox.push(close_frame(code, &reason));
                return Some(End::ClientClosed);
            }
        }
        None
    }

    /// Writes the whole outbox, a batch of frames per system call, holding
    /// the pipe from the shard meanwhile. Fails with `Stalled` if the
    /// socket takes no byte for `stall`.
    async fn flush(&mut self, stall: Duration) -> Result<(), End> {
        let metrics = Arc::clone(&self.market.metrics);
        let mut tally = Tally::default();
        let result = loop {
            let deadline = Instant::now() + stall;
            let step = poll_fn(|cx| {
                let mut pipe = self.link.lock();
                if pipe.outbox.is_empty() {
                    // Released: frames published from here on are the
                    // shard's to write, and it is asked to look.
                    pipe.held = pipe.closing;
                    pipe.report_queue();
                    return Poll::Ready(Ok(true));
                }
                let io = Pin::new(&mut self.io);
                match pipe.with_slices(|iov, _| io.poll_write_vectored(cx, iov)) {
                    Poll::Pending => {
                        pipe.held = true;
                        Poll::Pending
                    }
                    Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        pipe.wrote(n, &mut tally);
                        Poll::Ready(Ok(false))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                }
            });
            match timeout_at(deadline, step).await {
                Err(_) => break Err(End::Stalled),
                Ok(Err(e)) => break Err(End::Io(e)),
                Ok(Ok(true)) => break Ok(()),
                Ok(Ok(false)) => {}
            }
        };
        tally.report(&metrics);
        if result.is_ok() {
            self.link.nudge();
        }
        result
    }

    /// Holds the pipe for good and cuts the outbox back to what must still
    /// go out before `close`: a half-written frame.
    fn close_with(&mut self, close: Bytes) {
        let mut pipe = self.link.lock();
        pipe.hold_for_close();
        pipe.outbox.keep_partial_only();
        pipe.outbox.push(close);
    }

    async fn shutdown(&mut self) -> End {
        self.close_with(close_frame(close_code::GOING_AWAY, "server shutting down"));
        self.close_within_timeout().await;
        End::Shutdown
    }

    /// Ends the connection for `end`: writes what is owed (a close frame for
    /// a stalled client or an expired token), bounded by the close timeout.
    async fn finish(&mut self, end: End) -> End {
        self.link.lock().hold_for_close();
        match end {
            End::ClientClosed => self.close_within_timeout().await,
            End::Stalled => {
                let reason = format!(
                    "slow consumer: no progress for {} ms",
                    self.config.stall_timeout.as_millis()
                );
                self.close_with(close_frame(close_code::POLICY_VIOLATION, &reason));
                write_close_past_stall(&self.io, &self.link, &self.market.metrics);
                self.close_within_timeout().await;
            }
            End::TokenExpired => {
                self.close_with(close_frame(close_code::POLICY_VIOLATION, "token expired"));
                self.close_within_timeout().await;
            }
            End::Shutdown | End::Io(_) => {}
        }
        end
    }

    async fn close_within_timeout(&mut self) {
        let limit = self.config.close_timeout;
        let close = async {
            if self.flush(limit).await.is_ok() {
                let _ = self.io.shutdown().await;
            }
        };
        let _ = tokio::time::timeout(limit, close).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeConfig;
    use crate::fanout::shard::Socket;
    use crate::server::session::Sessions;
    use crate::server::ws::socket::SharedTcp;
    use crate::symbols::SymbolTable;
    use tokio::io::AsyncReadExt;

    /// One unmasked server frame: its opcode and payload.
    async fn read_frame(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await.unwrap();
        let len = match head[1] & 0x7f {
            126 => usize::from(io.read_u16().await.unwrap()),
            127 => io.read_u64().await.unwrap() as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0; len];
        io.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x0f, payload)
    }

    /// Serves a market-data connection (no deflate, every symbol allowed,
    /// no writer shards) in a task of its own.
    fn serve_market<R, W>(
        read: R,
        write: W,
        format: Format,
        config: ConnectionConfig,
        session: Session,
    ) -> tokio::task::JoinHandle<()>
    where
        R: ReadReady + Send + 'static,
        W: WriteSide + Send + 'static,
    {
        let service = Service::Market {
            format,
            batch: false,
        };
        let grant = Grant::default();
        tokio::spawn(serve(
            read,
            write,
            (service, None),
            Arc::new(config),
            grant,
            session,
            None,
        ))
    }

    /// A market with no symbols, its sessions, and the connection settings
    /// with these heartbeat interval and timeout (ms).
    fn sessions_with_heartbeat(
        metrics: &Arc<Metrics>,
        (interval_ms, timeout_ms): (u64, u64),
    ) -> (
        Sessions,
        crate::server::session::Drained,
        watch::Sender<bool>,
        ConnectionConfig,
    ) {
        let (market, _writer) = Market::new(16, SymbolTable::new(), Arc::clone(metrics));
        let (stop, shutdown) = watch::channel(false);
        let (sessions, drained) = Sessions::new(market, shutdown);
        let config = ServeConfig {
            heartbeat_interval_ms: interval_ms,
            heartbeat_timeout_ms: timeout_ms,
            ..ServeConfig::default()
        }
        .connection();
        (sessions, drained, stop, config)
    }

    /// A close queued from the reader holds the pipe in the same lock, so
    /// that no writer pass can fill updates in behind it.
    #[tokio::test]
    async fn a_queued_close_holds_the_pipe_at_once() {
        let metrics = Arc::new(Metrics::default());
        let (market, _writer) = Market::new(16, SymbolTable::new(), metrics);
        let config = ServeConfig::default().connection();
        for inbound in [
            Inbound::Close(Some((1002, "protocol error".into()))),
            Inbound::Obligated(close_frame(1000, "")),
            Inbound::Close(None),
        ] {
            let (_, write) = tokio::io::split(tokio::io::duplex(64).0);
            let sub = Subscriber::new(Arc::clone(&market), Format::Binary, config.limits);
            let link = Link::new(Pipe::new(sub), None);
            let mut writer = Writer {
                io: write,
                link: Arc::clone(&link),
                shards: None,
                market: Arc::clone(&market),
                config,
            };
            assert!(matches!(writer.take(inbound), Some(End::ClientClosed)));
            let pipe = link.lock();
            assert!(pipe.held && pipe.closing, "held with the close queued");
        }
    }

    /// On tokio's paused clock: a client that sends nothing is pinged every
    /// heartbeat interval and closed with 1001 at the heartbeat timeout, to
    /// the millisecond; its session ends with it.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_pinged_then_closed_with_1001_on_time() {
        let metrics = Arc::new(Metrics::default());
        let (sessions, drained, _stop, config) =
            sessions_with_heartbeat(&metrics, (20_000, 50_000));
        let (server, mut client) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(server);
        let started = Instant::now();
        let session = sessions.open(None);
        let conn = serve_market(read, write, Format::Binary, config, session);
        let mut pings = Vec::new();
        let frames = async {
            loop {
                match read_frame(&mut client).await {
                    (0x9, payload) => {
                        assert!(payload.is_empty());
                        pings.push(started.elapsed());
                    }
                    (0x8, payload) => break (started.elapsed(), payload),
                    (op, _) => panic!("unexpected opcode {op:#x}"),
                }
            }
        };
        let close = tokio::time::timeout(Duration::from_secs(120), frames)
            .await
            .expect("no close within 120 s");
        let secs = Duration::from_secs;
        assert_eq!(pings, [secs(20), secs(40)]);
        assert_eq!(close.0, secs(50), "closed at the heartbeat timeout");
        assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1001);
        drop(client);
        conn.await.unwrap();
        assert_eq!(metrics.connections.get(), 0);
        assert_eq!(metrics.heartbeat_pings_total.get(), 2);
        assert!(drained.wait(Duration::ZERO).await, "the session has ended");
    }

    /// A masked client text frame, as a browser sends one (short payloads).
    fn client_text(text: &str) -> Vec<u8> {
        let key = [0x5a, 0x01, 0xc3, 0x7e];
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend(key);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ key[i % 4]));
        frame
    }

    /// On tokio's paused clock: a subscriber that stops reading while
    /// updates keep coming is closed with 1008 once its socket has taken
    /// nothing for the stall timeout, not before; the close frame follows
    /// the half-written frame when the client reads again.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed_with_1008_at_the_stall_timeout() {
        use crate::publish::Publisher;
        use crate::symbols::Normalizer;
        use crate::update::{Update, UpdateKind};
        use tokio::io::AsyncWriteExt;

        let metrics = Arc::new(Metrics::default());
        let (market, writer) = Market::new(1024, SymbolTable::new(), Arc::clone(&metrics));
        let mut publisher = Publisher::new(Arc::clone(&market), writer);
        let mut normalizer = Normalizer::new(Arc::clone(&market.symbols));
        let (_stop, shutdown) = watch::channel(false);
        let (sessions, _drained) = Sessions::new(Arc::clone(&market), shutdown);
        let config = ServeConfig {
            stall_timeout_ms: 30_000,
            close_timeout_ms: 2_000,
            heartbeat_interval_ms: 3_600_000,
            heartbeat_timeout_ms: 7_200_000,
            ..ServeConfig::default()
        }
        .connection();
        // A small pipe: the server's writes block after 4 KiB unread.
        let (server, mut client) = tokio::io::duplex(4096);
        let (read, write) = tokio::io::split(server);
        let conn = serve_market(read, write, Format::Json, config, sessions.open(None));
        let scale = normalizer.scale("BTCUSDT", b"1", b"1").unwrap();
        let mut publish = |n: i64| {
            publisher.publish(Update {
                symbol: scale.id,
                kind: UpdateKind::Trade {
                    px: n,
                    sz: 1,
                    side: crate::update::Side::Buy,
                },
                exchange_ts_ns: 0,
                receive_ts_ns: 1,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            });
            market.wakeup.notify();
        };
        publish(0);
        client
            .write_all(&client_text(r#"{"op":"subscribe","symbols":["*"]}"#))
            .await
            .unwrap();
        let ack = async {
            loop {
                let (op, payload) = read_frame(&mut client).await;
                if op == 0x1 && payload.starts_with(br#"{"type":"ack""#) {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), ack)
            .await
            .expect("no ack within 5 s");
        // The client stops reading; updates fill the pipe.
        for n in 1..=500 {
            publish(n);
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(29_900)).await;
        assert!(!conn.is_finished(), "not closed before the stall timeout");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Past it, reading again, the client gets what was in the pipe, then
        // the close (written once there is room, within the close timeout).
        let frames = async {
            loop {
                let (op, payload) = read_frame(&mut client).await;
                if op == 0x8 {
                    break payload;
                }
            }
        };
        let close = tokio::time::timeout(Duration::from_secs(5), frames)
            .await
            .expect("no close within 5 s of the stall timeout");
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1008);
        assert!(started.elapsed() < Duration::from_millis(30_200));
        drop(client);
        conn.await.unwrap();
        assert_eq!(metrics.slow_client_closes_total.get(), 1);
        assert_eq!(metrics.connections.get(), 0);
    }

    /// A plain TCP write side whose socket takes only the first byte of
    /// its first write: the kernel may take part of any send.
    struct TakesAByteFirst(SharedTcp, Arc<FirstByteOnly>);

    struct FirstByteOnly {
        socket: Arc<dyn Socket>,
        first: std::sync::atomic::AtomicBool,
        /// What the first write gave.
        took: std::sync::Mutex<Option<io::Result<usize>>>,
    }

    impl Socket for FirstByteOnly {
        fn try_writev(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            if self.first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                let took = self.socket.try_writev(&[io::IoSlice::new(&bufs[0][..1])]);
                let copy = match &took {
                    Ok(n) => Ok(*n),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                *self.took.lock().unwrap() = Some(copy);
                return took;
            }
            self.socket.try_writev(bufs)
        }
    }

    impl WriteSide for TakesAByteFirst {
        fn socket(&self) -> Option<Arc<dyn Socket>> {
            Some(Arc::clone(&self.1) as Arc<dyn Socket>)
        }
    }

    impl tokio::io::AsyncWrite for TakesAByteFirst {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// Over real TCP: the first ping of a quiet connection, of which the
    /// socket takes one byte, wakes it, and the working connection writes
    /// the other byte before anything else: the client reads a whole
    /// ping, then the answer to its request, framed as ever.
    #[tokio::test]
    async fn a_ping_the_socket_took_part_of_is_finished_before_anything_else() {
        use crate::server::accept::Prefixed;

        let metrics = Arc::new(Metrics::default());
        let (sessions, _drained, _stop, config) = sessions_with_heartbeat(&metrics, (50, 60_000));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, write) = server.into_split();
        let write = SharedTcp(Arc::new(write));
        let first = Arc::new(FirstByteOnly {
            socket: write.socket().unwrap(),
            first: true.into(),
            took: Default::default(),
        });
        let conn = serve_market(
            Prefixed {
                prefix: Bytes::new(),
                inner: read,
            },
            TakesAByteFirst(write, Arc::clone(&first)),
            Format::Json,
            config,
            sessions.open(None),
        );
        let within = Duration::from_secs(10);
        let ping = tokio::time::timeout(within, read_frame(&mut client))
            .await
            .expect("a ping within 10 s");
        assert_eq!(ping, (0x9, vec![]), "a whole ping");
        let took = first.took.lock().unwrap().take().map(|r| r.ok());
        assert_eq!(
            took,
            Some(Some(1)),
            "the quiet ping went out one byte short"
        );
        assert_eq!(
            metrics.quiet_connections.get(),
            0,
            "woken by the short write"
        );
        client
            .write_all(&client_text(r#"{"op":"subscribe","symbols":["BTCUSDT"]}"#))
            .await
            .unwrap();
        let answer = async {
            loop {
                match read_frame(&mut client).await {
                    (0x9, payload) => assert!(payload.is_empty()),
                    frame => break frame,
                }
            }
        };
        let (op, payload) = tokio::time::timeout(within, answer)
            .await
            .expect("an answer within 10 s");
        assert_eq!(op, 0x1);
        let text = String::from_utf8(payload).unwrap();
        // The market has no symbols: an error, whole, with its reason.
        assert!(
            text.starts_with(r#"{"type":"error""#),
            "a whole message: {text}"
        );
        drop(client);
        conn.await.unwrap();
    }
}
