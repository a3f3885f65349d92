//! Server configuration: defaults, overridden by a TOML file, overridden by
//! environment variables and flags (clap reads both). [`ServeConfig::validate`]
//! reports every problem at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::fanout::FanoutLimits;
use crate::feed::upstream::ws_client::UpstreamTls;
use crate::feed::{FeedSpec, Speed, UpstreamTiming};
use crate::nats::PublishTarget;
use crate::server::guard::access::OriginPolicy;
use crate::server::guard::admission::AdmissionLimits;
use crate::server::guard::auth::{Secret, Verifier};
use crate::server::guard::proxy::TrustedProxies;
use crate::server::guard::tls::CertStore;
use crate::server::ws::connection::ConnectionConfig;
use crate::server::ws::inbound::InboundRate;

/// Everything `tickwire serve` can be told. Units are in the names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on for HTTP and WebSocket.
    pub listen: SocketAddr,
    /// Feed sources: file paths, `synthetic:symbols=N,rate=R`, live venues
    /// (`binance:wss://...`, `coinbase:wss://...`), or
    /// `nats://HOST:PORT[/FILTER]` (an edge node). Empty means the recording
    /// bundled in the binary, looped.
    pub feeds: Vec<String>,
    /// `nats://HOST:PORT[/PREFIX]`: publish every update to NATS, for edge
    /// nodes (a feed node). Not set: no publishing.
    pub publish: Option<String>,
    /// Updates a feed node holds for NATS (while it is down or slow) before
    /// it keeps only the newest of each symbol.
    pub publish_buffer_updates: usize,
    /// Replay speed: a factor (`1`, `10`, `0.5`) or `max`.
    pub speed: String,
    /// Restart recorded files when they end.
    pub r#loop: bool,
    /// Entries in the broadcast ring; a power of two.
    pub ring_capacity: usize,
    /// Bytes a connection may have waiting to be written before it stops
    /// taking frames from the ring.
    pub max_outbox_bytes: usize,
    /// Kernel send buffer per connection (SO_SNDBUF; Linux doubles it): with
    /// max_outbox_bytes, what bounds a slow client's memory. 0 keeps the
    /// kernel's autotuning.
    pub send_buffer_bytes: usize,
    /// A connection further behind the ring's head than this many updates
    /// is conflated: it skips to the newest value of each symbol.
    pub max_lag_updates: u64,
    /// A connection whose socket takes no bytes for this long is closed
    /// with 1008.
    pub stall_timeout_ms: u64,
    /// Time a closing connection gets to send its close frame.
    pub close_timeout_ms: u64,
    /// Largest message a client may send; larger ones are closed with 1009.
    pub max_message_bytes: usize,
    /// Most symbols a connection may subscribe to, or name in one request;
    /// `*` counts every symbol it covers (docs/PROTOCOL.md).
    pub max_subscriptions: usize,
    /// Time connections get to close on SIGINT/SIGTERM before the process
    /// exits anyway.
    pub shutdown_timeout_ms: u64,
    /// Hold the feeds until this many connections have subscribed, so that
    /// a benchmark or test sees a recording from its first update.
    pub min_subscribers: usize,
    /// Serve `/echo`: every message echoed back by the same connection code
    /// as `/ws`, for WebSocket conformance suites. Off by default.
    pub echo: bool,
    /// Live feeds: a venue connection that sends nothing (not even a pong
    /// to our ping, sent halfway) for this long is down: its symbols turn
    /// stale and it is reconnected. Also the limit for opening one.
    pub upstream_silence_timeout_ms: u64,
    /// Live feeds: the first reconnect delay; it doubles per failed attempt.
    pub upstream_backoff_initial_ms: u64,
    /// Live feeds: the largest reconnect delay.
    pub upstream_backoff_max_ms: u64,
    /// Live feeds: a PEM bundle of CA certificates that `wss://` venues are
    /// trusted by, besides Mozilla's roots compiled in (a TLS-intercepting
    /// proxy's CA, a private venue's). Not set: Mozilla's roots only.
    pub upstream_ca_file: Option<PathBuf>,
    /// Most TCP connections open at once (HTTP, WebSocket and SSE); past it
    /// a new connection gets 503 before any request is read.
    pub max_connections: usize,
    /// Most connections open at once from one client IP, IPv6 by /64 (429
    /// past it).
    pub max_connections_per_ip: usize,
    /// Connection attempts one client IP may make per minute (429 with
    /// Retry-After past it): a bucket of this many, refilled continuously.
    pub connection_attempts_per_ip_per_min: u32,
    /// Apply the per-IP limits to loopback clients too. Off by default: the
    /// benchmark harness and local tools open thousands of connections from
    /// 127.0.0.1, and a reverse proxy on the same host would otherwise be
    /// limited as one client (or list it in `trusted_proxies`).
    pub limit_loopback: bool,
    /// Peers trusted to say who the client is (`ADDRESS/PREFIX`, or one
    /// address): a PROXY protocol header (v1 or v2) starting their
    /// connections, and `X-Forwarded-For` on their requests, give the
    /// address that per-IP limits, logs and metrics use. From any other
    /// peer neither is read.
    pub trusted_proxies: Vec<String>,
    /// Time a client gets to send its complete HTTP request headers
    /// (slowloris); also how long an idle keep-alive HTTP connection stays.
    pub handshake_timeout_ms: u64,
    /// Messages (requests, pings, pongs) a WebSocket client may send per
    /// second on average.
    pub max_inbound_per_sec: u32,
    /// Messages a client may send at once above the average rate; as many
    /// more past that are dropped (the first gets error 4005), and the next
    /// one closes the connection with 1008.
    pub inbound_burst: u32,
    /// Most frames one client message may arrive in (1008 past it).
    pub max_fragments: usize,
    /// The server pings every connection this often.
    pub heartbeat_interval_ms: u64,
    /// A connection from which nothing (no pong, no message) has arrived
    /// for this long is closed with 1001.
    pub heartbeat_timeout_ms: u64,
    /// PEM certificate chain (leaf first): with `tls_key`, the port serves
    /// HTTPS and wss only. Reloaded on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Time a client gets to complete the TLS handshake.
    pub tls_handshake_timeout_ms: u64,
    /// Browser origins (`scheme://host[:port]`) allowed on `/ws` and `/sse`
    /// besides the server's own; `*` allows any (unsafe).
    pub allow_origins: Vec<String>,
    /// File holding the HS256 secret that access tokens are signed with.
    /// Without it (or `TICKWIRE_AUTH_SECRET`), no token is required.
    pub auth_secret_file: Option<PathBuf>,
    /// The secret itself, from the environment only (never from the file
    /// config, which tends to be shared).
    #[serde(skip)]
    pub auth_secret: Option<Secret>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            feeds: Vec::new(),
            publish: None,
            publish_buffer_updates: 16_384,
            speed: "1".into(),
            r#loop: false,
            ring_capacity: 16_384,
            max_outbox_bytes: 256 * 1024,
            send_buffer_bytes: 128 * 1024,
            max_lag_updates: 4096,
            stall_timeout_ms: 30_000,
            close_timeout_ms: 2_000,
            max_message_bytes: 64 * 1024,
            max_subscriptions: 1024,
            shutdown_timeout_ms: 5_000,
            min_subscribers: 0,
            echo: false,
            upstream_silence_timeout_ms: 10_000,
            upstream_backoff_initial_ms: 250,
            upstream_backoff_max_ms: 30_000,
            upstream_ca_file: None,
            max_connections: 50_000,
            max_connections_per_ip: 100,
            connection_attempts_per_ip_per_min: 120,
            limit_loopback: false,
            trusted_proxies: Vec::new(),
            handshake_timeout_ms: 10_000,
            max_inbound_per_sec: 10,
            inbound_burst: 20,
            max_fragments: 16,
            heartbeat_interval_ms: 20_000,
            heartbeat_timeout_ms: 60_000,
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout_ms: 10_000,
            allow_origins: Vec::new(),
            auth_secret_file: None,
            auth_secret: None,
        }
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

/// A validated configuration, with feeds and speed parsed.
#[derive(Debug)]
pub struct Validated {
    pub config: ServeConfig,
    pub feeds: Vec<FeedSpec>,
    /// Where to publish every update, if anywhere.
    pub publish: Option<PublishTarget>,
    pub speed: Speed,
    pub looped: bool,
    /// The certificate store, when TLS is on.
    pub tls: Option<Arc<CertStore>>,
    pub origins: OriginPolicy,
    /// Checks access tokens, when auth is on.
    pub auth: Option<Verifier>,
    pub trusted_proxies: TrustedProxies,
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

    /// Checks every field and parses the feeds; lists every problem found.
    pub fn validate(self) -> Result<Validated, ConfigError> {
        let mut errors = Vec::new();
        let upstream_tls = match &self.upstream_ca_file {
            None => UpstreamTls::default(),
            Some(path) => UpstreamTls::from_pem_file(path).unwrap_or_else(|e| {
                errors.push(e);
                UpstreamTls::default()
            }),
        };
        let mut feeds = Vec::new();
        for f in &self.feeds {
            match f.parse::<FeedSpec>() {
                Ok(FeedSpec::File(path)) if !path.exists() => {
                    errors.push(format!("feed {f:?}: no such file"));
                }
                // Opened and recognized now, as a missing file is refused:
                // a feed that could only fail would leave the server
                // running with no data.
                Ok(spec @ FeedSpec::File(_)) => match crate::feed::probe(&spec) {
                    Ok(()) => feeds.push(spec),
                    Err(e) => errors.push(format!("feed {f:?}: {}", e.with_causes())),
                },
                Ok(FeedSpec::Upstream(mut spec)) => {
                    spec.timing = self.upstream_timing();
                    spec.tls = upstream_tls.clone();
                    feeds.push(FeedSpec::Upstream(spec));
                }
                Ok(spec) => feeds.push(spec),
                Err(e) => errors.push(format!("feed {f:?}: {e}")),
            }
        }
        let publish = match self.publish.as_deref().map(str::parse::<PublishTarget>) {
            None => None,
            Some(Ok(target)) => Some(target),
            Some(Err(e)) => {
                errors.push(format!("publish: {e}"));
                None
            }
        };
        if self.publish.is_some() && feeds.iter().any(|f| matches!(f, FeedSpec::Nats(_))) {
            errors.push(
                "publish: an edge node (a nats:// feed) does not publish to NATS itself".into(),
            );
        }
        let speed = self.speed.parse::<Speed>().unwrap_or_else(|e| {
            errors.push(format!("speed {:?}: {e}", self.speed));
            Speed::Max
        });
        if !self.ring_capacity.is_power_of_two() || self.ring_capacity < 2 {
            errors.push(format!(
                "ring_capacity {} must be a power of two, at least 2",
                self.ring_capacity
            ));
        }
        if self.max_lag_updates == 0 || self.max_lag_updates >= self.ring_capacity as u64 {
            errors.push(format!(
                "max_lag_updates {} must be between 1 and ring_capacity - 1",
                self.max_lag_updates
            ));
        }
        let positive = [
            ("max_outbox_bytes", self.max_outbox_bytes as u64),
            ("stall_timeout_ms", self.stall_timeout_ms),
            ("close_timeout_ms", self.close_timeout_ms),
            ("max_message_bytes", self.max_message_bytes as u64),
            ("max_subscriptions", self.max_subscriptions as u64),
            (
                "upstream_silence_timeout_ms",
                self.upstream_silence_timeout_ms,
            ),
            (
                "upstream_backoff_initial_ms",
                self.upstream_backoff_initial_ms,
            ),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            (
                "connection_attempts_per_ip_per_min",
                u64::from(self.connection_attempts_per_ip_per_min),
            ),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("max_inbound_per_sec", u64::from(self.max_inbound_per_sec)),
            ("inbound_burst", u64::from(self.inbound_burst)),
            ("max_fragments", self.max_fragments as u64),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms),
            ("publish_buffer_updates", self.publish_buffer_updates as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                errors.push(format!("{name} must be greater than 0"));
            }
        }
        if self.upstream_backoff_max_ms < self.upstream_backoff_initial_ms {
            errors.push(format!(
                "upstream_backoff_max_ms {} must be at least upstream_backoff_initial_ms {}",
                self.upstream_backoff_max_ms, self.upstream_backoff_initial_ms
            ));
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            errors.push(format!(
                "heartbeat_timeout_ms {} must be greater than heartbeat_interval_ms {}",
                self.heartbeat_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => CertStore::open(cert.clone(), key.clone())
                .map_err(|e| errors.push(e.to_string()))
                .ok()
                .map(Arc::new),
            _ => {
                errors.push("tls_cert and tls_key go together: give both or neither".into());
                None
            }
        };
        let origins = OriginPolicy::new(&self.allow_origins).unwrap_or_else(|e| {
            errors.extend(e);
            OriginPolicy::default()
        });
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies).unwrap_or_else(|e| {
            errors.extend(e);
            TrustedProxies::default()
        });
        let secret = match (&self.auth_secret, &self.auth_secret_file) {
            (Some(_), Some(_)) => Err(
                "auth secret given twice: use auth_secret_file or TICKWIRE_AUTH_SECRET, not both"
                    .to_owned(),
            ),
            (Some(s), None) => Ok(Some(s.clone())),
            (None, Some(path)) => Secret::from_file(path).map(Some),
            (None, None) => Ok(None),
        };
        let auth = secret
            .map_err(|e| errors.push(e))
            .ok()
            .flatten()
            .map(Verifier::new);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        let looped = self.r#loop;
        if feeds.is_empty() {
            feeds.push(crate::feed::BUNDLED);
        }
        let looped = looped || self.feeds.is_empty();
        Ok(Validated {
            config: self,
            feeds,
            publish,
            speed,
            looped,
            tls,
            origins,
            auth,
            trusted_proxies,
        })
    }

    fn upstream_timing(&self) -> UpstreamTiming {
        UpstreamTiming {
            silence_timeout: Duration::from_millis(self.upstream_silence_timeout_ms),
            backoff_initial: Duration::from_millis(self.upstream_backoff_initial_ms),
            backoff_max: Duration::from_millis(self.upstream_backoff_max_ms),
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
}
