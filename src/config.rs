//! Server configuration: defaults, overridden by a TOML file, overridden by
//! environment variables and flags (clap reads both). [`ServeConfig::validate`]
//! reports every problem at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::connection::ConnectionConfig;
use crate::fanout::FanoutLimits;
use crate::feed::{FeedSpec, Speed};
use crate::nats::PublishTarget;

/// Everything `tickwire serve` can be told. Units are in the names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on for HTTP and WebSocket.
    pub listen: SocketAddr,
    /// Feed sources: file paths, `synthetic:symbols=N,rate=R`, or
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
    /// Most symbols a connection may subscribe to.
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
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
        let mut feeds = Vec::new();
        for f in &self.feeds {
            match f.parse::<FeedSpec>() {
                Ok(FeedSpec::File(path)) if !path.exists() => {
                    errors.push(format!("feed {f:?}: no such file"));
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
            ("publish_buffer_updates", self.publish_buffer_updates as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                errors.push(format!("{name} must be greater than 0"));
            }
        }
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
        })
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
        let bad = ServeConfig {
            feeds: vec!["/no/such/file.csv".into(), "synthetic:symbols=x".into()],
            speed: "fast".into(),
            ring_capacity: 1000,
            stall_timeout_ms: 0,
            publish: Some("http://h:1".into()),
            ..ServeConfig::default()
        };
        let ConfigError::Invalid(errors) = bad.validate().unwrap_err() else {
            panic!("expected Invalid");
        };
        let text = errors.join("\n");
        for needle in [
            "no such file",
            "synthetic",
            "speed",
            "ring_capacity",
            "stall_timeout_ms",
            "publish: `http://h:1`",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
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
