//! What a server is started with: its settings in its own units, and what
//! [`crate::config`] parsed and opened for it (feeds, NATS target,
//! certificate, origins, token verifier, trusted proxies). The
//! configuration builds a [`Setup`]; the server never reads the
//! configuration itself, so that the dependency runs one way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::feed::{FeedSpec, Speed};
use crate::nats::PublishTarget;
use crate::publish::CandleSettings;
use crate::server::guard::access::OriginPolicy;
use crate::server::guard::admission::AdmissionLimits;
use crate::server::guard::auth::Verifier;
use crate::server::guard::proxy::TrustedProxies;
use crate::server::guard::tls::CertStore;
use crate::server::ws::connection::ConnectionConfig;

/// The server's settings (see `ServeConfig` for each one's meaning).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub ring_capacity: usize,
    pub publish_buffer_updates: usize,
    pub min_subscribers: usize,
    pub connection: ConnectionConfig,
    pub send_buffer_bytes: usize,
    /// Writer shard threads (at least one).
    pub writer_threads: usize,
    /// How long a writer rests after a busy pass, in percent of the pass.
    pub writer_rest_percent: u32,
    pub echo: bool,
    pub admission: AdmissionLimits,
    pub handshake_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub candles: CandleSettings,
}

/// A validated configuration, ready to serve: settings, feeds and speed
/// parsed, files opened.
#[derive(Debug)]
pub struct Setup {
    pub settings: Settings,
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
    /// Replay on demand: the catalog and the sessions' limits.
    pub replay: Option<crate::server::replay::ReplaySetup>,
}
