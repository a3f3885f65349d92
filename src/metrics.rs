//! Server-wide counters, rendered in the Prometheus text format at `/metrics`,
//! and the [`Counter`] and [`Gauge`] every count in the crate is kept in
//! (these metrics, each feed's `FeedStats`, the bench harness's progress).
//!
//! # Why `Relaxed`
//!
//! Every method of [`Counter`] and [`Gauge`] uses `Ordering::Relaxed`, and
//! this is the one place that says why: each value is read on its own (a
//! scrape, `/healthz`, a progress line, a test's assertion), never to learn
//! that some other memory was written, so there is no release for an
//! acquire to pair with. Each read-modify-write is still atomic, so no
//! increment is lost and a gauge's ups and downs balance; two values read
//! one after the other may be a few updates apart. An atomic that does
//! order other memory, or is a flag or a timestamp, is not one of these
//! types and keeps its own ordering and its own comment.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::wire::ErrorCode;

/// A count that only goes up: events, bytes, messages (`Relaxed`: see the
/// [module docs](self#why-relaxed)).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A level that goes up and down: open connections, queued bytes
/// (`Relaxed`: see the [module docs](self#why-relaxed)).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicU64::new(0))
    }

    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Relaxed);
    }

    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Adds one unless the gauge was already at `limit` or above; says
    /// whether it did. Increment-then-check in one read-modify-write keeps
    /// the gauge at most `limit` however callers interleave (a scrape may
    /// see it one over for an instant, before the undo).
    #[inline]
    pub fn inc_below(&self, limit: u64) -> bool {
        if self.0.fetch_add(1, Relaxed) >= limit {
            self.0.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }
}

/// A reason that labels a counter: its place among the counter's labels.
/// The labels are declared here, beside their counters, and each owner's
/// reason enum (`HttpRefusal`, `ProxyError`, `AuthError`) maps itself onto
/// them, so that this module imports none of the modules that count into it.
pub trait Labelled: Copy {
    fn index(self) -> usize;
}

/// Labels of `tickwire_http_rejections_total`, by
/// `server::guard::head_gate::HttpRefusal`.
pub const HTTP_REJECTION_REASONS: [&str; 4] = [
    "request_line_too_long",
    "headers_too_large",
    "bad_request",
    "proxy_header_untrusted",
];

/// Labels of `tickwire_proxy_header_errors_total`, by
/// `server::guard::proxy_header::ProxyError`.
pub const PROXY_HEADER_REASONS: [&str; 4] = ["malformed", "too_large", "timeout", "truncated"];

/// Labels of `tickwire_auth_rejections_total`, by
/// `server::guard::auth::AuthError`.
pub const AUTH_REJECTION_REASONS: [&str; 7] = [
    "missing",
    "malformed",
    "algorithm",
    "signature",
    "claims",
    "expired",
    "not_yet_valid",
];

/// Why a connection was refused; the label of
/// `tickwire_connections_refused_total`. Checked and answered in
/// [`admission`](crate::server::guard::admission); defined here, beside its counter, so that
/// this module does not import the admission that counts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open (503).
    ServerFull,
    /// `max_connections_per_ip` are open from this IP (429).
    IpFull,
    /// This IP used up its connection attempts (429); it may try again in
    /// this many seconds.
    IpRate { retry_after_secs: u64 },
}

impl Refused {
    pub const REASONS: [&'static str; 3] = ["max_connections", "max_connections_per_ip", "rate"];

    pub fn index(self) -> usize {
        match self {
            Refused::ServerFull => 0,
            Refused::IpFull => 1,
            Refused::IpRate { .. } => 2,
        }
    }
}

macro_rules! counters {
    (@type "counter") => { Counter };
    (@type "gauge") => { Gauge };
    ($( $(#[doc = $doc:literal])* $name:ident : $kind:tt ),* $(,)?) => {
        /// Every counter and gauge the server exports.
        #[derive(Default, Debug)]
        pub struct Metrics {
            $( $(#[doc = $doc])* pub $name: counters!(@type $kind), )*
            /// Protocol errors sent to clients, by error code.
            pub protocol_errors: [Counter; ErrorCode::ALL.len()],
            /// Connections refused at accept, by [`Refused`] reason.
            pub connections_refused: [Counter; Refused::REASONS.len()],
            /// Requests refused for their access token, by reason.
            pub auth_rejections: [Counter; AUTH_REJECTION_REASONS.len()],
            /// Request heads refused before routing, by [`HttpRefusal`] reason.
            pub http_rejections: [Counter; HTTP_REJECTION_REASONS.len()],
            /// Trusted proxies' connections closed for their PROXY header, by
            /// [`ProxyError`] reason.
            pub proxy_header_errors: [Counter; PROXY_HEADER_REASONS.len()],
        }

        impl Metrics {
            /// The Prometheus text exposition of every metric.
            pub fn render(&self) -> String {
                let mut out = String::with_capacity(4096);
                $(
                    let help = concat!($($doc),*).trim();
                    let name = concat!("tickwire_", stringify!($name));
                    let _ = writeln!(out, "# HELP {name} {help}");
                    let _ = writeln!(out, "# TYPE {name} {}", $kind);
                    let _ = writeln!(out, "{name} {}", self.$name.get());
                )*
                let name = "tickwire_protocol_errors_total";
                let _ = writeln!(out, "# HELP {name} Error messages sent to clients, by code.");
                let _ = writeln!(out, "# TYPE {name} counter");
                for (code, n) in ErrorCode::ALL.iter().zip(&self.protocol_errors) {
                    let _ = writeln!(
                        out,
                        "{name}{{code=\"{}\",reason=\"{}\"}} {}",
                        *code as u16,
                        code.name(),
                        n.get()
                    );
                }
                let name = "tickwire_connections_refused_total";
                let _ = writeln!(out, "# HELP {name} Connections refused before any request was read (503, 429), by limit.");
                let _ = writeln!(out, "# TYPE {name} counter");
                for (reason, n) in Refused::REASONS.iter().zip(&self.connections_refused) {
                    let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", n.get());
                }
                let name = "tickwire_auth_rejections_total";
                let _ = writeln!(out, "# HELP {name} Requests on /ws and /sse refused with 401, by reason.");
                let _ = writeln!(out, "# TYPE {name} counter");
                for (reason, n) in AUTH_REJECTION_REASONS.iter().zip(&self.auth_rejections) {
                    let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", n.get());
                }
                let name = "tickwire_http_rejections_total";
                let _ = writeln!(out, "# HELP {name} Request heads refused before routing (414 request line too long, 431 headers too large, 400 not HTTP or an untrusted PROXY header), by reason.");
                let _ = writeln!(out, "# TYPE {name} counter");
                for (reason, n) in HTTP_REJECTION_REASONS.iter().zip(&self.http_rejections) {
                    let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", n.get());
                }
                let name = "tickwire_proxy_header_errors_total";
                let _ = writeln!(out, "# HELP {name} Connections from trusted proxies closed for their PROXY header (malformed, too large, not complete within handshake_timeout_ms, cut short), by reason.");
                let _ = writeln!(out, "# TYPE {name} counter");
                for (reason, n) in PROXY_HEADER_REASONS.iter().zip(&self.proxy_header_errors) {
                    let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", n.get());
                }
                out
            }
        }
    };
}

counters! {
    /// Open WebSocket connections.
    connections: "gauge",
    /// WebSocket connections accepted since start.
    connections_total: "counter",
    /// Open WebSocket connections that negotiated permessage-deflate.
    deflate_connections: "gauge",
    /// Open WebSocket connections waiting quiet: nothing heard from the client yet, so no reader task, subscriber or outbox.
    quiet_connections: "gauge",
    /// Connections subscribed to at least one symbol.
    subscribers: "gauge",
    /// Bytes queued in connections' outboxes, not yet taken by their sockets.
    queued_bytes: "gauge",
    /// Subscribed symbols summed over connections (a `*` subscription counts every symbol it covers).
    subscriptions: "gauge",
    /// Updates received from feeds.
    updates_in_total: "counter",
    /// Updates encoded into frames; equals updates_in_total whatever the number of subscribers.
    frames_encoded_total: "counter",
    /// Order book levels received from feeds (each a price set to a size; a book event is a run of them).
    book_levels_in_total: "counter",
    /// Book events published (a snapshot or one venue diff, applied to the symbol's book).
    book_updates_total: "counter",
    /// Book frames the publisher encoded: at most one per book event and watched channel, whatever the number of watchers.
    book_frames_encoded_total: "counter",
    /// Book snapshots encoded for connections that subscribed or caught up (shared by every connection asking for the same book state).
    book_snapshots_encoded_total: "counter",
    /// Candle frames the publisher encoded: one per bar change or close of a watched interval, whatever the number of watchers.
    candle_frames_encoded_total: "counter",
    /// Candle snapshots and catch-ups encoded for connections (a snapshot is shared by every connection asking for the same state).
    candle_snapshots_encoded_total: "counter",
    /// Trades older than a candle bar already closed (in no bar).
    candle_late_trades_total: "counter",
    /// Times a symbol's trade time went back past the close grace (a looped replay started over) and its candle bars started over.
    candle_resets_total: "counter",
    /// Replay sessions running (`/replay.ndjson`).
    replay_sessions: "gauge",
    /// Replay sessions started.
    replay_sessions_total: "counter",
    /// Replay requests refused (bad parameters, unknown recording, a name outside the directory, too many sessions).
    replay_refused_total: "counter",
    /// Updates replayed to clients by replay sessions, summed.
    replay_updates_total: "counter",
    /// Bytes of plain logs that replay sessions from a time seeked past by the block index, unread.
    replay_jumped_bytes_total: "counter",
    /// Lines of line-format recordings that replay sessions from a time read past unparsed by the line index.
    replay_jumped_lines_total: "counter",
    /// Updates of logs that replay sessions from a time read but passed over (whole blocks before the time), unpublished.
    replay_passed_over_total: "counter",
    /// Book events after which the best bid was at or above the best ask (served as the source sent them).
    books_crossed_total: "counter",
    /// Times a feed's order book lost its synchronization with the venue (a diff out of sequence, a snapshot too old) and was marked stale.
    book_resyncs_total: "counter",
    /// Updates dropped because their upstream symbol sequence was not newer than the symbol's last.
    updates_out_of_order_total: "counter",
    /// Frames written to clients (data, snapshots, symbol definitions, control replies).
    frames_out_total: "counter",
    /// Bytes written to clients.
    bytes_out_total: "counter",
    /// Vectored write calls made to client sockets.
    writev_calls_total: "counter",
    /// Times a writer shard handed a connection back to its own task because its socket took less than it was offered, or nothing (the task writes until the socket drains, then hands it back).
    writer_holds_total: "counter",
    /// Ring entries skipped by slow clients that caught up from the last-value cache.
    conflated_updates_total: "counter",
    /// Times a slow client was lapped by the ring or fell past the lag bound.
    lapped_readers_total: "counter",
    /// Connections closed with 1008 because they made no progress for too long.
    slow_client_closes_total: "counter",
    /// HTTP requests refused before a WebSocket upgrade (bad handshake).
    upgrade_rejections_total: "counter",
    /// Feeds that stopped with an error.
    feed_errors_total: "counter",
    /// Open TCP connections (HTTP, WebSocket, SSE), counted against max_connections.
    tcp_connections: "gauge",
    /// Connections closed because their HTTP request headers did not arrive within handshake_timeout_ms (slowloris), or an idle keep-alive connection timed out.
    handshake_timeouts_total: "counter",
    /// Connections closed with 1001 because nothing arrived from the client within heartbeat_timeout_ms.
    heartbeat_timeouts_total: "counter",
    /// Pings sent to WebSocket clients by the heartbeat.
    heartbeat_pings_total: "counter",
    /// Client messages (requests, pings, pongs) dropped for exceeding the inbound rate.
    rate_limited_messages_total: "counter",
    /// Connections closed with 1008 for going on exceeding the inbound rate.
    rate_limit_closes_total: "counter",
    /// Connections closed with 1008 for a message in more than max_fragments frames.
    too_many_fragments_closes_total: "counter",
    /// Connections closed with 1009 for a message larger than max_message_bytes.
    message_too_big_closes_total: "counter",
    /// Connections closed with 1009 for a compressed message that inflated past max_message_bytes (permessage-deflate).
    inflated_too_big_closes_total: "counter",
    /// Connections closed with 1002 for an unmasked client frame (RFC 6455 section 5.1).
    unmasked_frame_closes_total: "counter",
    /// Connections closed with 1002 or 1007 for other breaches of RFC 6455 (a reserved opcode or bit, a bad close frame or code, a stray continuation, text that is not UTF-8).
    protocol_error_closes_total: "counter",
    /// Long-poll requests (`/poll`) taken.
    poll_requests_total: "counter",
    /// Requests on /ws and /sse refused with 403 for their Origin.
    origin_rejections_total: "counter",
    /// Connections closed (1008, or the SSE stream ended) when their access token expired.
    token_expired_closes_total: "counter",
    /// TLS handshakes that failed or timed out (including plain HTTP sent to the TLS port).
    tls_handshake_failures_total: "counter",
    /// Certificate reloads (SIGHUP) that put a new certificate in service.
    tls_reloads_total: "counter",
    /// Certificate reloads that failed and kept the old certificate.
    tls_reload_failures_total: "counter",
    /// Feed node: whether the connection to NATS is up (1) or not (0).
    nats_publish_connected: "gauge",
    /// Feed node: updates published to NATS.
    nats_published_total: "counter",
    /// Feed node: updates replaced by a newer one of the same symbol before NATS took them (NATS down or slower than the feeds).
    nats_publish_conflated_total: "counter",
    /// Feed node: last values published again after a reconnect to NATS.
    nats_republished_total: "counter",
    /// Feed node: reconnects to NATS after the first connection.
    nats_publish_reconnects_total: "counter",
    /// Feed node: publishes NATS refused.
    nats_publish_errors_total: "counter",
}

impl Metrics {
    pub fn protocol_error(&self, code: ErrorCode) {
        self.protocol_errors[code.index()].inc();
    }

    pub fn http_rejection(&self, reason: impl Labelled) {
        self.http_rejections[reason.index()].inc();
    }

    pub fn proxy_header_error(&self, reason: impl Labelled) {
        self.proxy_header_errors[reason.index()].inc();
    }

    pub fn auth_rejection(&self, reason: impl Labelled) {
        self.auth_rejections[reason.index()].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_gauge_count() {
        let c = Counter::new();
        c.inc();
        c.add(4);
        assert_eq!(c.get(), 5);
        let g = Gauge::new();
        g.add(3);
        g.inc();
        g.dec();
        g.sub(2);
        assert_eq!(g.get(), 1);
        g.set(7);
        assert_eq!(g.get(), 7);
        // TC: inc_below stops at the limit and leaves no increment behind.
        let g = Gauge::new();
        assert!(g.inc_below(2));
        assert!(g.inc_below(2));
        assert!(!g.inc_below(2));
        assert_eq!(g.get(), 2);
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.updates_in_total.add(3);
        m.protocol_error(ErrorCode::UnknownSymbol);
        let text = m.render();
        assert!(text
            .contains("# TYPE tickwire_updates_in_total counter\ntickwire_updates_in_total 3\n"));
        assert!(text.contains(
            "tickwire_protocol_errors_total{code=\"4002\",reason=\"unknown_symbol\"} 1\n"
        ));
        assert!(text.contains("# TYPE tickwire_connections gauge"));
        // Every sample line is `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
