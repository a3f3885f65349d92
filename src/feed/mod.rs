//! Feed sources: recorded captures replayed at a chosen speed, and a
//! synthetic random walk. Each source turns its records into [`Update`]s and
//! sends them down a bounded channel to the publisher.
//!
//! # Layout
//!
//! In the order of the data path:
//!
//! - `spec.rs`: what a feed is ([`FeedSpec`], [`Speed`], [`ReplayOptions`])
//!   and their parsing from `--feed` and `--speed`; [`BUNDLED`], the
//!   recording served when no feed is named.
//! - [`recording`]: recorded captures, decided from their content:
//!   - `reader.rs`: [`FileReader`], one pass over a recording: opening,
//!     decompression (by magic bytes), format detection, capped line
//!     reading, each line to its parser. The one parsing path serves
//!     [`run`], [`read_all`], [`probe`] and `tickwire convert`.
//!   - `jsonl.rs`: the line shapes of JSON lines (timestamp prefixes,
//!     cryptofeed records, Binance's envelope) and capture tools' notes.
//!   - [`recording::log`]: tickwire's own binary log of what a publisher
//!     published (written by `tickwire record` and `tickwire convert`),
//!     detected by its magic bytes and replayed with its recorded symbol
//!     sequences.
//!   - `replay.rs`: a recording as a feed: passes on a reader thread,
//!     looping, batches to the async side; and what each pass logs.
//!   - `pacer.rs`: recorded time to wall time at `--speed`.
//! - [`synthetic`]: the generator behind `synthetic:symbols=N,rate=R`.
//! - [`upstream`]: live venue WebSocket feeds (`binance:wss://...`,
//!   `coinbase:wss://...`): reconnection (`backoff.rs`), sequence checks
//!   (`sequence.rs`), stale / live status (`status.rs`); over
//!   [`upstream::ws_client`], the `ws://` / `wss://` client.
//! - [`nats`]: an edge node's feed, a feed node's updates from NATS
//!   (`nats://HOST:PORT[/FILTER]`).
//! - [`venue`]: [`venue::binance`], [`venue::coinbase`], [`venue::tardis`],
//!   one file per venue format, each with its raw message structs and their
//!   parsing; shared by recordings and live feeds.
//! - `normalize.rs`: the step every record goes through after its venue
//!   parser: the `Emitter` that checks the fields and makes them [`Timed`]
//!   updates, and `BadRecord`, a record refused, counted by `Reason` in a
//!   `RejectTally` with a log budget per reason.
//! - `mod.rs`: [`FeedStats`], [`FeedError`], and [`run`], which starts the
//!   feed a spec names.

pub(crate) mod nats;
pub(crate) mod normalize;
pub mod recording;
mod spec;
pub(crate) mod synthetic;
pub(crate) mod upstream;
pub mod venue;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::metrics::Counter;
use crate::symbols::{NormalizeError, Normalizer};
use crate::update::Update;

pub use normalize::Timed;
pub use recording::{probe, read_all, FileReader};
pub use spec::{FeedSpec, ReplayOptions, SpecError, Speed, BUNDLED};
pub use synthetic::{Rate, SyntheticSpec};
pub use upstream::{UpstreamSpec, UpstreamTiming};

/// Counters a running feed keeps for the stats endpoint and for tests.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Lines (JSON) or rows (CSV, header included) read.
    pub records: Counter,
    /// Updates handed to the publisher.
    pub updates: Counter,
    /// Records of a known kind that carry no quote or trade (depth, REST
    /// snapshots, headers, heartbeats, ...).
    pub skipped: Counter,
    /// Malformed records: broken JSON, bad decimals, missing fields.
    pub rejected: Counter,
    /// Times a looped replay started again from the top.
    pub loops: Counter,
    /// Network feeds (an exchange WebSocket, NATS): whether the upstream
    /// connection is up and live. Recordings leave it false and `network`
    /// false. Flags are plain atomics, stored and loaded `Relaxed`: like
    /// the counters, each is read on its own.
    pub connected: AtomicBool,
    /// Set once by a network feed when it starts, so `/healthz` reports its
    /// upstream state.
    pub network: AtomicBool,
    /// Network feeds: connections to the upstream after the first.
    pub reconnects: Counter,
    /// Network feeds: sequence gaps detected in the upstream's numbering.
    pub gaps: Counter,
    /// Network feeds: messages dropped because they were not newer than
    /// what the feed already published for their symbol (resent after a
    /// reconnect, out of order).
    pub outdated: Counter,
    /// Network feeds: subscriptions the upstream refused.
    pub refusals: Counter,
    /// Network feeds: order-book snapshots that could not be fetched from
    /// the venue's REST endpoint.
    pub snapshot_failures: Counter,
    /// Order-book levels sent to the publisher (not in `updates`, which
    /// counts what the publisher counts as updates: quotes, trades and
    /// statuses).
    pub book_levels: Counter,
    /// Network feeds: wall-clock time of the last message from upstream, in
    /// nanoseconds since the epoch; 0 before the first. A timestamp,
    /// overwritten with `store`, not a count: hence a plain atomic (stored
    /// and loaded `Relaxed`, as it orders nothing else).
    pub last_message_ns: AtomicU64,
}

impl FeedStats {
    /// Counts one update sent to the publisher: a book level apart.
    pub fn sent(&self, update: &crate::update::Update) {
        if let crate::update::UpdateKind::Level { .. } = update.kind {
            self.book_levels.inc();
        } else {
            self.updates.inc();
        }
    }
}

/// Why a feed stopped.
///
/// A variant with a `source` does not repeat the source's text: printed as
/// a chain (the binary's `Error: … Caused by: …`, or
/// [`with_causes`](Self::with_causes) in a log line), each cause appears
/// once.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{file}: cannot open")]
    Open {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: read failed (truncated or corrupt stream?)")]
    Read {
        file: String,
        line: u64,
        source: std::io::Error,
    },
    #[error("{file}: empty: no records")]
    Empty { file: String },
    #[error("{file}:{line}: not a recognized record: {reason}")]
    Unrecognized {
        file: String,
        line: u64,
        reason: String,
    },
    #[error("{file}:{line}: {what} is not supported")]
    Unsupported {
        file: String,
        line: u64,
        what: String,
    },
    #[error("{name}: a synthetic, live or NATS feed has no records to read")]
    NotRecorded { name: String },
    #[error("{name}: cannot intern a symbol")]
    Symbol {
        name: String,
        source: NormalizeError,
    },
    #[error("{name}: the generator's thread: {reason}")]
    Thread { name: String, reason: String },
    #[error("{file}: reader thread failed: {reason}")]
    Reader { file: String, reason: String },
    #[error("{name}: {reason}")]
    Nats { name: String, reason: String },
}

impl FeedError {
    /// The error and its causes on one line (`a.gz:7: read failed (…): corrupt
    /// deflate stream`), for logs, which print only what they are given.
    pub fn with_causes(&self) -> WithCauses<'_> {
        WithCauses(self)
    }
}

/// An error followed by each of its sources, `: `-separated.
pub struct WithCauses<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for WithCauses<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
/// Runs a feed until a recording ends (when not looped), the receiver is
/// dropped (the server is shutting down), or an error.
pub async fn run(
    spec: FeedSpec,
    opts: ReplayOptions,
    normalizer: Normalizer,
    tx: mpsc::Sender<Update>,
    stats: Arc<FeedStats>,
) -> Result<(), FeedError> {
    match spec {
        FeedSpec::Synthetic(spec) => synthetic::run(spec, normalizer, tx, stats).await,
        FeedSpec::Upstream(spec) => upstream::run(spec, normalizer, tx, stats).await,
        FeedSpec::Nats(source) => nats::run(source, normalizer, tx, stats).await,
        recorded => recording::replay::run(recorded, opts, normalizer, tx, stats).await,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_with_a_source_do_not_repeat_it() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let cases = [
            // TC0: open and read failures: the message, then the cause once.
            (
                FeedError::Open {
                    file: "a.gz".into(),
                    source: io(),
                },
                "a.gz: cannot open",
            ),
            (
                FeedError::Read {
                    file: "a.gz".into(),
                    line: 7,
                    source: io(),
                },
                "a.gz:7: read failed (truncated or corrupt stream?)",
            ),
        ];
        for (err, shown) in cases {
            assert_eq!(err.to_string(), shown);
            let cause = std::error::Error::source(&err).map(ToString::to_string);
            assert_eq!(cause.as_deref(), Some("gone"));
            assert_eq!(err.with_causes().to_string(), format!("{shown}: gone"));
        }
    }
}
