//! Server configuration: defaults, overridden by a TOML file, overridden by
//! environment variables and flags (clap reads both). [`ServeConfig::validate`]
//! reports every problem at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod validate;

use clap::{Args as _, FromArgMatches as _};
use serde::{Deserialize, Serialize};

use crate::fanout::FanoutLimits;
use crate::publish::CandleSettings;
use crate::server::guard::admission::AdmissionLimits;
use crate::server::guard::auth::Secret;
use crate::server::ws::connection::ConnectionConfig;
use crate::server::ws::inbound::InboundRate;
use crate::server::Settings;

/// Everything `tickwire serve` can be told, each setting declared once:
/// its doc is the flag's help and the TOML key's meaning, its `arg` gives
/// the flag, the environment variable and the default (shown by `--help`),
/// and serde reads the same field from the TOML file. Units are in the
/// names.
///
/// Flat rather than one struct per section: serde's `deny_unknown_fields`
/// does not compose with `flatten`, and a misspelt key must be an error.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "TICKWIRE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A feed: a recorded file (Tardis CSV, Binance or Coinbase JSON lines,
    /// plain, gzip or zstd, or a tickwire log), `synthetic:symbols=N,rate=R`,
    /// a live venue WebSocket as VENUE:URL:
    /// `binance:wss://stream.binance.com:9443/stream?streams=btcusdt@bookTicker/btcusdt@trade`
    /// (or `?subscribe=...` to subscribe by message),
    /// `coinbase:wss://ws-feed.exchange.coinbase.com?products=BTC-USD,ETH-USD&channels=ticker,matches,heartbeat`,
    /// or `nats://HOST:PORT[/FILTER]` (an edge node: a feed node's updates
    /// from NATS; FILTER defaults to `tickwire.>`). Repeatable. Without any,
    /// the bundled recording replays in a loop.
    #[arg(long = "feed", env = "TICKWIRE_FEED", value_delimiter = ';')]
    pub feeds: Vec<String>,
    /// `nats://HOST:PORT[/PREFIX]`: publish every update to NATS, for edge
    /// nodes (a feed node). Not set: no publishing.
    #[arg(long, env = "TICKWIRE_PUBLISH")]
    pub publish: Option<String>,
    /// Updates a feed node holds for NATS (while it is down or slow) before
    /// it keeps only the newest of each symbol.
    #[arg(
        long,
        env = "TICKWIRE_PUBLISH_BUFFER_UPDATES",
        default_value_t = 16_384
    )]
    pub publish_buffer_updates: usize,
    /// Replay speed: a factor (`1`, `10`, `0.5`) or `max`.
    #[arg(long, env = "TICKWIRE_SPEED", default_value = "1")]
    pub speed: String,
    /// Restart recorded files when they end.
    #[arg(long = "loop", env = "TICKWIRE_LOOP")]
    pub r#loop: bool,
    /// Entries in the broadcast ring; a power of two.
    #[arg(long, env = "TICKWIRE_RING_CAPACITY", default_value_t = 16_384)]
    pub ring_capacity: usize,
    /// Bytes a connection may have waiting to be written before it stops
    /// taking frames from the ring.
    #[arg(long, env = "TICKWIRE_MAX_OUTBOX_BYTES", default_value_t = 256 * 1024)]
    pub max_outbox_bytes: usize,
    /// Kernel send buffer per connection (SO_SNDBUF; Linux doubles it): with
    /// max_outbox_bytes, what bounds a slow client's memory. 0 keeps the
    /// kernel's autotuning.
    #[arg(long, env = "TICKWIRE_SEND_BUFFER_BYTES", default_value_t = 128 * 1024)]
    pub send_buffer_bytes: usize,
    /// Writer threads: each writes what is published to its share of the
    /// plain-TCP WebSocket connections. 0: one per CPU core but one (left to
    /// the publisher), at least one.
    #[arg(long, env = "TICKWIRE_WRITER_THREADS", default_value_t = 0)]
    pub writer_threads: usize,
    /// After a pass over its connections that found the next batch already
    /// waiting, a writer thread rests for this percentage of the pass's
    /// duration: under load, batches grow and system calls fall, instead of
    /// the writers taking every core. Passes under 200 µs never rest. 0:
    /// never rest.
    #[arg(long, env = "TICKWIRE_WRITER_REST_PERCENT", default_value_t = 30)]
    pub writer_rest_percent: u32,
    /// A connection further behind the ring's head than this many updates
    /// is conflated: it skips to the newest value of each symbol.
    #[arg(long, env = "TICKWIRE_MAX_LAG_UPDATES", default_value_t = 4096)]
    pub max_lag_updates: u64,
    /// A connection whose socket takes no bytes for this long is closed
    /// with 1008.
    #[arg(long, env = "TICKWIRE_STALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub stall_timeout_ms: u64,
    /// Time a closing connection gets to send its close frame.
    #[arg(long, env = "TICKWIRE_CLOSE_TIMEOUT_MS", default_value_t = 2_000)]
    pub close_timeout_ms: u64,
    /// Largest message a client may send; larger ones are closed with 1009.
    #[arg(long, env = "TICKWIRE_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
    /// Most symbols a connection may subscribe to, or name in one request;
    /// `*` counts every symbol it covers (docs/PROTOCOL.md).
    #[arg(long, env = "TICKWIRE_MAX_SUBSCRIPTIONS", default_value_t = 1024)]
    pub max_subscriptions: usize,
    /// Time connections get to close on SIGINT/SIGTERM before the process
    /// exits anyway.
    #[arg(long, env = "TICKWIRE_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    pub shutdown_timeout_ms: u64,
    /// Hold the feeds until this many connections have subscribed, so that
    /// a benchmark or test sees a recording from its first update.
    #[arg(long, env = "TICKWIRE_MIN_SUBSCRIBERS", default_value_t = 0)]
    pub min_subscribers: usize,
    /// Serve `/echo`: every message echoed back by the same connection code
    /// as `/ws`, for WebSocket conformance suites (Autobahn|Testsuite). Off
    /// by default. Never expose it: it takes 64 MiB messages with no rate
    /// limit.
    #[arg(long, env = "TICKWIRE_ECHO")]
    pub echo: bool,
    /// Live feeds: a venue connection that sends nothing (not even a pong
    /// to our ping, sent halfway) for this long is down: its symbols turn
    /// stale and it is reconnected. Also the limit for opening one.
    #[arg(
        long,
        env = "TICKWIRE_UPSTREAM_SILENCE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub upstream_silence_timeout_ms: u64,
    /// Live feeds: the first reconnect delay; it doubles per failed attempt.
    #[arg(
        long,
        env = "TICKWIRE_UPSTREAM_BACKOFF_INITIAL_MS",
        default_value_t = 250
    )]
    pub upstream_backoff_initial_ms: u64,
    /// Live feeds: the largest reconnect delay.
    #[arg(
        long,
        env = "TICKWIRE_UPSTREAM_BACKOFF_MAX_MS",
        default_value_t = 30_000
    )]
    pub upstream_backoff_max_ms: u64,
    /// Live feeds: a PEM bundle of CA certificates that `wss://` venues are
    /// trusted by, besides Mozilla's roots compiled in (a TLS-intercepting
    /// proxy's CA, a private venue's). Not set: Mozilla's roots only.
    #[arg(long, env = "TICKWIRE_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Live Binance feeds with diff depth: where a book's REST depth
    /// snapshot is fetched (`?symbol=…&limit=1000` is added). Not set: the
    /// venue's public endpoint for the stream host (api, fapi or dapi
    /// .binance.com), none for another host.
    #[arg(long, env = "TICKWIRE_UPSTREAM_REST_URL")]
    pub upstream_rest_url: Option<String>,
    /// Most TCP connections open at once (HTTP, WebSocket and SSE); past it
    /// a new connection gets 503 before any request is read.
    #[arg(long, env = "TICKWIRE_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,
    /// Most connections open at once from one client IP, IPv6 by /64 (429
    /// past it).
    #[arg(long, env = "TICKWIRE_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    pub max_connections_per_ip: usize,
    /// Connection attempts one client IP may make per minute (429 with
    /// Retry-After past it): a bucket of this many, refilled continuously.
    #[arg(
        long,
        env = "TICKWIRE_CONNECTION_ATTEMPTS_PER_IP_PER_MIN",
        default_value_t = 120
    )]
    pub connection_attempts_per_ip_per_min: u32,
    /// Apply the per-IP limits to loopback clients too. Off by default: the
    /// benchmark harness and local tools open thousands of connections from
    /// 127.0.0.1, and a reverse proxy on the same host would otherwise be
    /// limited as one client (or list it in `trusted_proxies`).
    #[arg(long, env = "TICKWIRE_LIMIT_LOOPBACK")]
    pub limit_loopback: bool,
    /// Peers trusted to say who the client is (`ADDRESS/PREFIX`, or one
    /// address): a PROXY protocol header (v1 or v2) starting their
    /// connections, and `X-Forwarded-For` on their requests, give the
    /// address that per-IP limits, logs and metrics use. From any other
    /// peer neither is read.
    #[arg(
        long = "trusted-proxy",
        env = "TICKWIRE_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// Time a client gets to send its first complete HTTP request headers,
    /// from its connection (slowloris), and each later request's, from the
    /// answer before it: how long an idle keep-alive connection stays.
    #[arg(long, env = "TICKWIRE_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
    /// Messages (requests, pings, pongs) a WebSocket client may send per
    /// second on average.
    #[arg(long, env = "TICKWIRE_MAX_INBOUND_PER_SEC", default_value_t = 10)]
    pub max_inbound_per_sec: u32,
    /// Messages a client may send at once above the average rate; as many
    /// more past that are dropped (the first gets error 4005), and the next
    /// one closes the connection with 1008.
    #[arg(long, env = "TICKWIRE_INBOUND_BURST", default_value_t = 20)]
    pub inbound_burst: u32,
    /// Most frames one client message may arrive in (1008 past it).
    #[arg(long, env = "TICKWIRE_MAX_FRAGMENTS", default_value_t = 16)]
    pub max_fragments: usize,
    /// The server pings every connection this often.
    #[arg(long, env = "TICKWIRE_HEARTBEAT_INTERVAL_MS", default_value_t = 20_000)]
    pub heartbeat_interval_ms: u64,
    /// A connection from which nothing (no pong, no message) has arrived
    /// for this long is closed with 1001.
    #[arg(long, env = "TICKWIRE_HEARTBEAT_TIMEOUT_MS", default_value_t = 60_000)]
    pub heartbeat_timeout_ms: u64,
    /// permessage-deflate: messages with a payload of at least this many
    /// bytes go compressed to clients that negotiated it (each compressed
    /// once for all of them); smaller ones, which compression does not
    /// pay for, go as they are. 0 turns the extension off (it is then not
    /// negotiated).
    #[arg(long, env = "TICKWIRE_COMPRESS_MIN_BYTES", default_value_t = 256)]
    pub compress_min_bytes: usize,
    /// A directory of recordings offered for replay on demand
    /// (`/recordings`, `/replay.ndjson`): every file directly in it that
    /// tickwire reads. Unset: no replay.
    #[arg(long = "recordings", env = "TICKWIRE_RECORDINGS")]
    pub recordings_dir: Option<PathBuf>,
    /// Replay sessions running at once, in all.
    #[arg(long, env = "TICKWIRE_MAX_REPLAY_SESSIONS", default_value_t = 16)]
    pub max_replay_sessions: usize,
    /// Replay sessions running at once from one client address.
    #[arg(long, env = "TICKWIRE_MAX_REPLAY_SESSIONS_PER_IP", default_value_t = 4)]
    pub max_replay_sessions_per_ip: usize,
    /// Closed candle bars kept per symbol and interval, sent in a candle
    /// channel's snapshot (memory: at most about 80 bytes × this × 6
    /// intervals per traded symbol).
    #[arg(long, env = "TICKWIRE_CANDLE_HISTORY", default_value_t = crate::candle::DEFAULT_HISTORY)]
    pub candle_history: usize,
    /// A candle bar with no later trade of its symbol closes once the
    /// newest trade of any symbol is this far past the bar's end (venues
    /// order each symbol's trades, not the trades of two symbols).
    #[arg(long, env = "TICKWIRE_CANDLE_CLOSE_GRACE_MS", default_value_t = 1_000)]
    pub candle_close_grace_ms: u64,
    /// The longest a `/poll` request waits for something to change before
    /// it is answered empty.
    #[arg(long, env = "TICKWIRE_POLL_TIMEOUT_MS", default_value_t = 25_000)]
    pub poll_timeout_ms: u64,
    /// PEM certificate chain (leaf first): with `tls_key`, the port serves
    /// HTTPS and wss only. Reloaded on SIGHUP.
    #[arg(long, env = "TICKWIRE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[arg(long, env = "TICKWIRE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Time a client gets to complete the TLS handshake.
    #[arg(
        long,
        env = "TICKWIRE_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub tls_handshake_timeout_ms: u64,
    /// Browser origins (`scheme://host[:port]`) allowed on `/ws` and `/sse`
    /// besides the server's own; `*` allows any (unsafe).
    #[arg(
        long = "allow-origin",
        env = "TICKWIRE_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,
    /// File holding the HS256 secret that access tokens are signed with.
    /// Without it (or `TICKWIRE_AUTH_SECRET`), no token is required.
    #[arg(long, env = "TICKWIRE_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// The secret itself, from the environment only (never from the file
    /// config, which tends to be shared).
    #[arg(skip)]
    #[serde(skip)]
    pub auth_secret: Option<Secret>,
}

impl Default for ServeConfig {
    /// The defaults the flags declare, without the environment.
    fn default() -> Self {
        let command = Self::augment_args(clap::Command::new("tickwire-defaults"))
            .mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["tickwire-defaults"]);
        Self::from_arg_matches(&matches).expect("every setting has a default")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid configuration file")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl ServeConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Layers the settings: the defaults, then the TOML file at `file`,
    /// then `given`, the flags and environment variables (clap has merged
    /// those two, and filled in the defaults). `was_given(key)` says whether
    /// a setting came from a flag or the environment rather than from its
    /// default: those win over the file.
    pub fn layered(
        file: Option<&Path>,
        given: ServeConfig,
        was_given: impl Fn(&str) -> bool,
    ) -> Result<ServeConfig, ConfigError> {
        let Some(path) = file else { return Ok(given) };
        let from_file = ServeConfig::from_toml_file(path)?;
        let table = |c: &ServeConfig| match toml::Value::try_from(c) {
            Ok(toml::Value::Table(t)) => t,
            _ => unreachable!("a ServeConfig serializes to a table"),
        };
        let mut merged = table(&from_file);
        for (key, value) in table(&given) {
            if was_given(&key) {
                merged.insert(key, value);
            }
        }
        let mut c: ServeConfig =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?;
        c.auth_secret = given.auth_secret;
        Ok(c)
    }

    /// The server's settings, in its units.
    pub fn server_settings(&self) -> Settings {
        Settings {
            listen: self.listen,
            ring_capacity: self.ring_capacity,
            publish_buffer_updates: self.publish_buffer_updates,
            min_subscribers: self.min_subscribers,
            connection: self.connection(),
            send_buffer_bytes: self.send_buffer_bytes,
            writer_threads: match self.writer_threads {
                // The publisher must never wait for a core: a writer that
                // took it from the publisher delays every connection.
                0 => std::thread::available_parallelism()
                    .map_or(1, |n| n.get().saturating_sub(1).max(1)),
                n => n,
            },
            writer_rest_percent: self.writer_rest_percent,
            echo: self.echo,
            admission: self.admission(),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            tls_handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            candles: CandleSettings {
                history: self.candle_history,
                grace_ns: self.candle_close_grace_ms.saturating_mul(1_000_000),
            },
        }
    }

    pub fn connection(&self) -> ConnectionConfig {
        ConnectionConfig {
            limits: FanoutLimits {
                max_outbox_bytes: self.max_outbox_bytes,
                max_lag_updates: self.max_lag_updates,
                max_subscriptions: self.max_subscriptions,
            },
            stall_timeout: Duration::from_millis(self.stall_timeout_ms),
            close_timeout: Duration::from_millis(self.close_timeout_ms),
            max_message_bytes: self.max_message_bytes,
            max_fragments: self.max_fragments,
            inbound_rate: InboundRate {
                per_sec: self.max_inbound_per_sec,
                burst: self.inbound_burst,
            },
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout_ms),
            poll_timeout: Duration::from_millis(self.poll_timeout_ms),
            compress_min_bytes: self.compress_min_bytes,
        }
    }

    pub fn admission(&self) -> AdmissionLimits {
        AdmissionLimits {
            max_connections: self.max_connections,
            max_per_ip: self.max_connections_per_ip,
            attempts_per_ip_per_min: self.connection_attempts_per_ip_per_min,
            limit_loopback: self.limit_loopback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::upstream::ws_client::UpstreamTls;
    use crate::feed::FeedSpec;

    #[test]
    fn defaults_are_valid() {
        let v = ServeConfig::default().validate().unwrap();
        assert!(v.looped, "the bundled recording loops by default");
        assert_eq!(v.feeds.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        // A file that exists but is in no format tickwire reads.
        let unknown = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let bad = ServeConfig {
            feeds: vec![
                "/no/such/file.csv".into(),
                "synthetic:symbols=x".into(),
                unknown.into(),
            ],
            speed: "fast".into(),
            ring_capacity: 1000,
            stall_timeout_ms: 0,
            max_connections: 0,
            heartbeat_interval_ms: 5_000,
            heartbeat_timeout_ms: 5_000,
            publish: Some("http://h:1".into()),
            writer_threads: 1025,
            writer_rest_percent: 1001,
            ..ServeConfig::default()
        };
        let ConfigError::Invalid(errors) = bad.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        let text = errors.join("\n");
        for needle in [
            "no such file",
            "Cargo.toml:1: not a recognized record",
            "synthetic",
            "speed",
            "ring_capacity",
            "stall_timeout_ms",
            "max_connections",
            "heartbeat_timeout_ms",
            "publish: `http://h:1`",
            "writer_threads 1025",
            "writer_rest_percent 1001",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn live_feeds_take_the_upstream_timing() {
        // TC0: the timing reaches the parsed spec.
        let v = ServeConfig {
            feeds: vec!["binance:ws://127.0.0.1:9/stream?streams=a@trade".into()],
            upstream_silence_timeout_ms: 700,
            upstream_backoff_initial_ms: 10,
            upstream_backoff_max_ms: 40,
            ..ServeConfig::default()
        }
        .validate()
        .unwrap();
        let FeedSpec::Upstream(spec) = &v.feeds[0] else {
            panic!("not a live feed: {:?}", v.feeds);
        };
        assert_eq!(spec.timing.silence_timeout, Duration::from_millis(700));
        assert_eq!(spec.timing.backoff_max, Duration::from_millis(40));
        // TC1: a maximum below the first delay, and a zero timeout, are refused.
        let ConfigError::Invalid(errors) = ServeConfig {
            upstream_silence_timeout_ms: 0,
            upstream_backoff_initial_ms: 100,
            upstream_backoff_max_ms: 50,
            ..ServeConfig::default()
        }
        .validate()
        .unwrap_err() else {
            panic!("expected Invalid");
        };
        let text = errors.join("\n");
        assert!(text.contains("upstream_silence_timeout_ms"), "{text}");
        assert!(text.contains("upstream_backoff_max_ms"), "{text}");
    }

    #[test]
    fn upstream_ca_file_is_checked_and_reaches_live_feeds() {
        let dir = std::env::temp_dir().join(format!("tickwire-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let good = file("good.pem", &ca.cert.pem());
        let key_only = file("key.pem", &ca.signing_key.serialize_pem());
        let not_base64 = file(
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        );
        // Valid base64 and PEM, but not a certificate.
        let not_der = file(
            "notder.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let validate = |path: &Path| {
            ServeConfig {
                feeds: vec!["binance:wss://localhost:9/stream?streams=a@trade".into()],
                upstream_ca_file: Some(path.to_owned()),
                ..ServeConfig::default()
            }
            .validate()
        };
        // TC0: a good bundle reaches the live feed: its roots are not the
        // default ones.
        let v = validate(&good).unwrap();
        let FeedSpec::Upstream(spec) = &v.feeds[0] else {
            panic!("not a live feed: {:?}", v.feeds);
        };
        assert_ne!(spec.tls, UpstreamTls::default());
        assert!(format!("{:?}", spec.tls).contains("extra_roots: 1"));
        // TC1: without the option, the default roots.
        let v = ServeConfig {
            feeds: vec!["binance:wss://localhost:9/stream?streams=a@trade".into()],
            ..ServeConfig::default()
        }
        .validate()
        .unwrap();
        let FeedSpec::Upstream(spec) = &v.feeds[0] else {
            panic!("not a live feed: {:?}", v.feeds);
        };
        assert_eq!(spec.tls, UpstreamTls::default());
        // TC2: each bad file is refused at start, naming the file and why,
        // with the other problems.
        for (path, why) in [
            (dir.join("missing.pem"), "No such file"),
            (key_only, "no PEM CERTIFICATE"),
            (not_base64, "not a PEM certificate bundle"),
            (not_der, "not a usable CA"),
        ] {
            let ConfigError::Invalid(errors) = ServeConfig {
                upstream_ca_file: Some(path.clone()),
                ring_capacity: 1000,
                ..ServeConfig::default()
            }
            .validate()
            .unwrap_err() else {
                panic!("expected Invalid");
            };
            let text = errors.join("\n");
            let name = format!("upstream_ca_file {}", path.display());
            assert!(text.contains(&name) && text.contains(why), "{why}: {text}");
            assert!(text.contains("ring_capacity"), "{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_origins_and_secret_are_checked_with_the_rest() {
        let short = std::env::temp_dir().join(format!("tickwire-short-{}", std::process::id()));
        std::fs::write(&short, "too short\n").unwrap();
        let bad = ServeConfig {
            tls_cert: Some("/no/such/cert.pem".into()),
            allow_origins: vec!["app.example".into(), "https://ok.example".into()],
            trusted_proxies: vec!["10.0.0.1/8".into(), "192.0.2.0/24".into(), "proxy".into()],
            auth_secret_file: Some(short.clone()),
            ring_capacity: 1000,
            ..ServeConfig::default()
        };
        let ConfigError::Invalid(errors) = bad.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        let _ = std::fs::remove_file(&short);
        let text = errors.join("\n");
        for needle in [
            "tls_cert and tls_key go together",
            "allow_origins \"app.example\"",
            "trusted_proxies \"10.0.0.1/8\": host bits are set",
            "trusted_proxies \"proxy\"",
            "at least 32",
            "ring_capacity",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(!text.contains("ok.example"), "{text}");
        assert!(!text.contains("192.0.2.0/24"), "{text}");
        // TC1: the TOML keys; the secret itself is not one.
        let c: ServeConfig = toml::from_str(
            "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nallow_origins = [\"https://a.example\"]\n\
             auth_secret_file = \"s\"\ntls_handshake_timeout_ms = 5\n\
             trusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
        )
        .unwrap();
        assert_eq!(c.allow_origins, ["https://a.example"]);
        assert_eq!(c.trusted_proxies, ["10.0.0.0/8", "::1"]);
        assert_eq!(c.tls_handshake_timeout_ms, 5);
        assert!(toml::from_str::<ServeConfig>("auth_secret = \"x\"").is_err());
        // TC2: the secret never shows in Debug.
        let with_secret = ServeConfig {
            auth_secret: Some(Secret::new(&[b'z'; 40]).unwrap()),
            ..ServeConfig::default()
        };
        assert!(!format!("{with_secret:?}").contains("zzzz"));
    }

    #[test]
    fn nats_roles_are_validated() {
        // TC0: a feed node and an edge node.
        let feed_node = ServeConfig {
            feeds: vec!["synthetic:symbols=2,rate=10".into()],
            publish: Some("nats://127.0.0.1:4222/md".into()),
            ..ServeConfig::default()
        };
        assert_eq!(feed_node.validate().unwrap().publish.unwrap().prefix, "md");
        let edge = ServeConfig {
            feeds: vec!["nats://127.0.0.1:4222".into()],
            ..ServeConfig::default()
        };
        assert!(edge.validate().unwrap().publish.is_none());
        // TC1: both at once would republish its own input.
        let both = ServeConfig {
            feeds: vec!["nats://127.0.0.1:4222".into()],
            publish: Some("nats://127.0.0.1:4222".into()),
            ..ServeConfig::default()
        };
        let err = both.validate().unwrap_err().to_string();
        assert!(err.contains("edge node"), "{err}");
    }

    #[test]
    fn toml_with_unknown_keys_is_refused() {
        let err = toml::from_str::<ServeConfig>("stall_timeout = 5").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let ok: ServeConfig = toml::from_str("stall_timeout_ms = 5\nfeeds = [\"a.csv\"]").unwrap();
        assert_eq!(ok.stall_timeout_ms, 5);
    }

    #[test]
    fn flags_and_environment_win_over_the_file_which_wins_over_defaults() {
        let path =
            std::env::temp_dir().join(format!("tickwire-layers-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "ring_capacity = 1024\nloop = true\nspeed = \"5\"\nallow_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        // As clap hands it over: defaults filled in, two settings given.
        let given = ServeConfig {
            speed: "max".into(),
            tls_cert: Some("cert.pem".into()),
            ..ServeConfig::default()
        };
        let c = ServeConfig::layered(Some(&path), given, |key| {
            key == "speed" || key == "tls_cert"
        })
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.ring_capacity, 1024, "from the file");
        assert!(c.r#loop, "from the file");
        assert_eq!(c.allow_origins, ["https://a.example"], "from the file");
        assert_eq!(c.speed, "max", "given beats the file");
        assert_eq!(
            c.tls_cert,
            Some("cert.pem".into()),
            "given, absent from the file"
        );
        assert_eq!(c.listen, ServeConfig::default().listen, "default");
        assert_eq!(c.tls_key, None, "default");
        // Without a file, what was given is the configuration.
        let plain = ServeConfig::layered(None, ServeConfig::default(), |_| false).unwrap();
        assert_eq!(plain, ServeConfig::default());
    }

    #[test]
    fn defaults_are_the_flags_defaults() {
        let d = ServeConfig::default();
        assert_eq!(d.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(d.speed, "1");
        assert_eq!(d.ring_capacity, 16_384);
        assert_eq!(d.max_message_bytes, 64 * 1024);
        assert!(!d.r#loop && !d.echo && d.feeds.is_empty() && d.auth_secret.is_none());
    }
}
