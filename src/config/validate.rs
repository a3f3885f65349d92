//! Checking a configuration: every problem found at once, by field name,
//! the checks on values first and then what needs the filesystem (feeds,
//! the CA bundle, the certificate, the secret).

use crate::replay::catalog::Catalog;
use crate::server::replay::ReplaySetup;
use std::sync::Arc;
use std::time::Duration;

use crate::feed::upstream::ws_client::UpstreamTls;
use crate::feed::{FeedSpec, Speed, UpstreamTiming};
use crate::nats::PublishTarget;
use crate::server::guard::access::OriginPolicy;
use crate::server::guard::auth::{Secret, Verifier};
use crate::server::guard::proxy::TrustedProxies;
use crate::server::guard::tls::CertStore;
use crate::server::Setup;

use super::{ConfigError, ServeConfig};

/// More writer threads than this is a typo, not a machine.
const MAX_WRITER_THREADS: usize = 1024;
/// Resting ten times a pass's length is already a writer idle 90 % of the
/// time under load.
const MAX_WRITER_REST_PERCENT: u32 = 1000;

impl ServeConfig {
    /// Checks every field and parses the feeds; lists every problem found.
    /// The checks on values come first; then what needs the filesystem
    /// (feeds opened and recognized, the CA bundle, the certificate, the
    /// secret), whose errors join the same list.
    pub fn validate(self) -> Result<Setup, ConfigError> {
        let mut errors = self.check_values();
        let speed = self.speed.parse::<Speed>().unwrap_or_else(|e| {
            errors.push(format!("speed {:?}: {e}", self.speed));
            Speed::Max
        });
        let mut feeds = self.open_feeds(&mut errors);
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
        let origins = OriginPolicy::new(&self.allow_origins).unwrap_or_else(|e| {
            errors.extend(e);
            OriginPolicy::default()
        });
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies).unwrap_or_else(|e| {
            errors.extend(e);
            TrustedProxies::default()
        });
        let tls = self.open_tls(&mut errors);
        let auth = self.load_secret(&mut errors).map(Verifier::new);
        let replay = self.open_recordings(&mut errors);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        if feeds.is_empty() {
            feeds.push(crate::feed::BUNDLED);
        }
        let looped = self.r#loop || self.feeds.is_empty();
        Ok(Setup {
            settings: self.server_settings(),
            feeds,
            publish,
            speed,
            looped,
            tls,
            origins,
            auth,
            trusted_proxies,
            replay,
        })
    }

    /// The recordings directory's catalog, when there is one.
    fn open_recordings(&self, errors: &mut Vec<String>) -> Option<ReplaySetup> {
        let dir = self.recordings_dir.as_ref()?;
        match Catalog::open(dir) {
            Ok(catalog) => Some(ReplaySetup {
                catalog: std::sync::Arc::new(catalog),
                max_sessions: self.max_replay_sessions,
                max_sessions_per_ip: self.max_replay_sessions_per_ip,
            }),
            Err(e) => {
                errors.push(format!("recordings_dir {}: {e}", dir.display()));
                None
            }
        }
    }

    /// The checks on numbers alone: bounds, and pairs that must agree.
    fn check_values(&self) -> Vec<String> {
        let mut errors = Vec::new();
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
        if self.writer_threads > MAX_WRITER_THREADS {
            errors.push(format!(
                "writer_threads {} must be at most {MAX_WRITER_THREADS} (0: one per core but one)",
                self.writer_threads
            ));
        }
        if self.writer_rest_percent > MAX_WRITER_REST_PERCENT {
            errors.push(format!(
                "writer_rest_percent {} must be at most {MAX_WRITER_REST_PERCENT}",
                self.writer_rest_percent
            ));
        }
        if self.candle_history > crate::candle::MAX_HISTORY {
            errors.push(format!(
                "candle_history {} must be at most {}",
                self.candle_history,
                crate::candle::MAX_HISTORY
            ));
        }
        for (name, value) in self.must_be_positive() {
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
        errors
    }

    /// The settings that 0 would break, by name.
    fn must_be_positive(&self) -> [(&'static str, u64); 18] {
        [
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
            ("poll_timeout_ms", self.poll_timeout_ms),
            ("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms),
            ("publish_buffer_updates", self.publish_buffer_updates as u64),
        ]
    }

    /// Parses the feeds; recorded files are opened and recognized now, as a
    /// missing file is refused: a feed that could only fail would leave the
    /// server running with no data. Live feeds take the upstream timing and
    /// CA bundle.
    fn open_feeds(&self, errors: &mut Vec<String>) -> Vec<FeedSpec> {
        let upstream_tls = match &self.upstream_ca_file {
            None => UpstreamTls::default(),
            Some(path) => UpstreamTls::from_pem_file(path).unwrap_or_else(|e| {
                errors.push(e);
                UpstreamTls::default()
            }),
        };
        if let Some(url) = &self.upstream_rest_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                errors.push(format!(
                    "upstream_rest_url {url:?}: must start with http:// or https://"
                ));
            }
        }
        let mut feeds = Vec::new();
        for f in &self.feeds {
            match f.parse::<FeedSpec>() {
                Ok(FeedSpec::File(path)) if !path.exists() => {
                    errors.push(format!("feed {f:?}: no such file"));
                }
                Ok(spec @ FeedSpec::File(_)) => match crate::feed::probe(&spec) {
                    Ok(()) => feeds.push(spec),
                    Err(e) => errors.push(format!("feed {f:?}: {}", e.with_causes())),
                },
                Ok(FeedSpec::Upstream(mut spec)) => {
                    spec.timing = self.upstream_timing();
                    spec.tls = upstream_tls.clone();
                    if spec.venue == crate::feed::upstream::Venue::Binance {
                        spec.rest_url = self
                            .upstream_rest_url
                            .clone()
                            .or_else(|| crate::feed::upstream::rest::default_url(&spec.endpoint));
                    }
                    feeds.push(FeedSpec::Upstream(spec));
                }
                Ok(spec) => feeds.push(spec),
                Err(e) => errors.push(format!("feed {f:?}: {e}")),
            }
        }
        feeds
    }

    /// Loads the certificate and key, when TLS is on.
    fn open_tls(&self, errors: &mut Vec<String>) -> Option<Arc<CertStore>> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => CertStore::open(cert.clone(), key.clone())
                .map_err(|e| errors.push(e.to_string()))
                .ok()
                .map(Arc::new),
            _ => {
                errors.push("tls_cert and tls_key go together: give both or neither".into());
                None
            }
        }
    }

    /// The access-token secret, when auth is on: from the environment or
    /// from its file, never both.
    fn load_secret(&self, errors: &mut Vec<String>) -> Option<Secret> {
        let secret = match (&self.auth_secret, &self.auth_secret_file) {
            (Some(_), Some(_)) => Err(
                "auth secret given twice: use auth_secret_file or TICKWIRE_AUTH_SECRET, not both"
                    .to_owned(),
            ),
            (Some(s), None) => Ok(Some(s.clone())),
            (None, Some(path)) => Secret::from_file(path).map(Some).map_err(|e| e.to_string()),
            (None, None) => Ok(None),
        };
        secret.map_err(|e| errors.push(e)).ok().flatten()
    }

    fn upstream_timing(&self) -> UpstreamTiming {
        UpstreamTiming {
            silence_timeout: Duration::from_millis(self.upstream_silence_timeout_ms),
            backoff_initial: Duration::from_millis(self.upstream_backoff_initial_ms),
            backoff_max: Duration::from_millis(self.upstream_backoff_max_ms),
        }
    }
}
