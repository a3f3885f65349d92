//! Feed sources: recorded captures replayed at a chosen speed, and a
//! synthetic random walk. Each source turns its records into [`Update`]s and
//! sends them down a bounded channel to the publisher.
//!
//! # Layout
//!
//! - [`replay`]: opening, decompression (by magic bytes), line reading, line
//!   shape and format detection from the content, pacing and looping. The one
//!   parsing path, [`FileReader`], serves both [`run`] and [`read_all`].
//! - [`binance`], [`coinbase`], [`tardis`]: one file per venue format, each
//!   with its raw message structs and their normalization.
//! - [`log`]: tickwire's own binary log of what a publisher published
//!   (written by `tickwire record` and `tickwire convert`), detected by its
//!   magic bytes and replayed with its recorded symbol sequences.
//! - [`synthetic`]: the generator behind `synthetic:symbols=N,rate=R`.
//! - [`upstream`]: live venue WebSocket feeds (`binance:wss://...`,
//!   `coinbase:wss://...`): reconnection, sequence checks, stale / live
//!   status; over [`ws_client`], the `ws://` / `wss://` client.
//! - [`nats`]: an edge node's feed, a feed node's updates from NATS
//!   (`nats://HOST:PORT[/FILTER]`).
//! - `timestamp`: exact epoch / RFC 3339 parsing to nanoseconds.

pub mod nats;
pub mod recording;
pub mod synthetic;
mod timestamp;
pub mod upstream;
pub mod venue;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::decimal::DecimalError;
use crate::metrics::Counter;
use crate::symbols::{NormalizeError, Normalizer};
use crate::update::{now_ns, Side, Update, UpdateKind};

pub use recording::{probe, read_all, FileReader, Timed};
pub use synthetic::{Rate, SyntheticSpec};
pub use upstream::{UpstreamSpec, UpstreamTiming};

/// The recording the server replays when no feed is named: the first 60 s of
/// Binance spot BTCUSDT and ETHUSDT and COIN-M BTCUSD_PERP on 2024-08-08,
/// merged by receive time (see `feeds/README.md`).
pub const BUNDLED: FeedSpec = FeedSpec::Embedded {
    name: "feeds/binance-spot-20240808-btc-eth-coinm.jsonl.gz",
    bytes: include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/feeds/binance-spot-20240808-btc-eth-coinm.jsonl.gz"
    )),
};

/// Where updates come from.
#[derive(Clone, PartialEq)]
pub enum FeedSpec {
    /// A recording on disk, in any supported format and compression.
    File(PathBuf),
    /// A recording compiled into the binary; `name` is used in messages.
    Embedded {
        name: &'static str,
        bytes: &'static [u8],
    },
    Synthetic(SyntheticSpec),
    /// A live venue WebSocket: `binance:wss://...`, `coinbase:wss://...`.
    Upstream(UpstreamSpec),
    /// A feed node's updates over NATS: this process is an edge node.
    Nats(crate::nats::NatsSource),
}

impl FeedSpec {
    /// How the feed is named in messages and errors.
    pub fn name(&self) -> String {
        match self {
            FeedSpec::File(path) => path.display().to_string(),
            FeedSpec::Embedded { name, .. } => (*name).to_owned(),
            FeedSpec::Synthetic(spec) => spec.to_string(),
            FeedSpec::Upstream(spec) => spec.spec.clone(),
            FeedSpec::Nats(source) => source.url.clone(),
        }
    }
}

// By hand so that an embedded recording prints its name, not its bytes.
impl fmt::Debug for FeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedSpec::File(path) => f.debug_tuple("File").field(path).finish(),
            FeedSpec::Embedded { name, bytes } => f
                .debug_struct("Embedded")
                .field("name", name)
                .field("len", &bytes.len())
                .finish(),
            FeedSpec::Synthetic(spec) => f.debug_tuple("Synthetic").field(spec).finish(),
            FeedSpec::Upstream(spec) => f.debug_tuple("Upstream").field(spec).finish(),
            FeedSpec::Nats(source) => f.debug_tuple("Nats").field(source).finish(),
        }
    }
}

impl FromStr for FeedSpec {
    type Err = SpecError;

    /// `synthetic:symbols=N,rate=R[,seed=S]` is the generator;
    /// `binance:wss://...` and `coinbase:wss://...` are live venues;
    /// `nats://HOST:PORT[/FILTER]` a feed node over NATS; anything else is a
    /// path.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        if let Some(upstream) = UpstreamSpec::parse(s) {
            return upstream.map(FeedSpec::Upstream);
        }
        if s.starts_with("nats://") {
            return Ok(FeedSpec::Nats(s.parse()?));
        }
        match s.strip_prefix("synthetic:") {
            Some(params) => Ok(FeedSpec::Synthetic(SyntheticSpec::parse(s, params)?)),
            None if s == "synthetic" => Ok(FeedSpec::Synthetic(SyntheticSpec::parse(s, "")?)),
            None if s.is_empty() => Err(SpecError::EmptyPath),
            None => Ok(FeedSpec::File(PathBuf::from(s))),
        }
    }
}

/// Replay speed relative to the recording.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// `k` times real time; always positive and finite.
    Factor(f64),
    /// As fast as the publisher takes updates.
    Max,
}

impl FromStr for Speed {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(k) if k.is_finite() && k > 0.0 => Ok(Speed::Factor(k)),
            _ => Err(SpecError::Speed(s.to_owned())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    pub speed: Speed,
    /// Start again from the top when the recording ends.
    pub looped: bool,
}

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
    /// Network feeds: wall-clock time of the last message from upstream, in
    /// nanoseconds since the epoch; 0 before the first. A timestamp,
    /// overwritten with `store`, not a count: hence a plain atomic (stored
    /// and loaded `Relaxed`, as it orders nothing else).
    pub last_message_ns: AtomicU64,
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

/// A `--feed` or `--speed` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("feed path is empty")]
    EmptyPath,
    #[error(
        "synthetic feed `{spec}`: {reason} (expected synthetic:symbols=N,rate=R|max[,seed=S])"
    )]
    Synthetic { spec: String, reason: String },
    #[error("speed `{0}`: expected a positive number such as 1, 10 or 0.5, or `max`")]
    Speed(String),
    #[error("live feed `{spec}`: {reason}")]
    Upstream { spec: String, reason: String },
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsUrlError),
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

/// What a venue parser made of one decoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// One or more updates were pushed.
    Emitted,
    /// A message of this venue that carries no quote or trade.
    Skipped,
    /// Not a message of this venue; the next parser may know it.
    Foreign,
}

/// Why one record was not turned into updates.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadRecord {
    #[error("{0}")]
    Unrecognized(String),
    #[error("{0}")]
    Json(String),
    #[error("{kind}: {reason}")]
    Fields { kind: &'static str, reason: String },
    #[error("{what} {value:?}: {source}")]
    Decimal {
        what: &'static str,
        value: String,
        source: DecimalError,
    },
    #[error("symbol {symbol:?}: {source}")]
    Symbol {
        symbol: String,
        source: NormalizeError,
    },
    #[error("bad timestamp {0:?}")]
    Timestamp(String),
    /// A price or size below zero, which no venue means: a quote's empty
    /// side has size 0, never less.
    #[error("negative {what} {value:?}")]
    Negative { what: &'static str, value: String },
    /// A line longer than [`MAX_LINE_BYTES`]; only its start was kept.
    #[error("a line of more than {} MiB", MAX_LINE_BYTES >> 20)]
    TooLong,
}

/// The longest line of a recording that is parsed. A longer one (no real
/// record comes near it) is read to its end and rejected, never held whole:
/// a few KB of zstd can hold gigabytes without a newline.
pub(crate) const MAX_LINE_BYTES: usize = 16 << 20;

impl BadRecord {
    pub(crate) fn fields(kind: &'static str, err: impl fmt::Display) -> Self {
        BadRecord::Fields {
            kind,
            reason: err.to_string(),
        }
    }

    /// The kind of rejection this is, for counting and the log budget.
    pub(crate) fn reason(&self) -> Reason {
        match self {
            BadRecord::Unrecognized(_) => Reason::Unrecognized,
            BadRecord::Json(_) => Reason::Json,
            BadRecord::Fields { .. } => Reason::Fields,
            BadRecord::Decimal { .. } => Reason::Decimal,
            BadRecord::Symbol { .. } => Reason::Symbol,
            BadRecord::Timestamp(_) => Reason::Timestamp,
            BadRecord::Negative { .. } => Reason::Negative,
            BadRecord::TooLong => Reason::TooLong,
        }
    }
}

/// Why a record was rejected, as the log and the end-of-pass summary count
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// A line of no known shape or venue.
    Unrecognized,
    /// Broken JSON (or nested too deep).
    Json,
    /// A known message with fields missing or of the wrong type.
    Fields,
    /// A price or size that is not a decimal, or finer than its symbol's
    /// scale.
    Decimal,
    /// A negative price or size.
    Negative,
    /// A symbol name that cannot be interned.
    Symbol,
    Timestamp,
    /// A tickwire log's damaged bytes (one per place skipped).
    Corrupt,
    /// A line over [`MAX_LINE_BYTES`].
    TooLong,
}

impl Reason {
    const ALL: [Reason; 9] = [
        Reason::Unrecognized,
        Reason::Json,
        Reason::Fields,
        Reason::Decimal,
        Reason::Negative,
        Reason::Symbol,
        Reason::Timestamp,
        Reason::Corrupt,
        Reason::TooLong,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Reason::Unrecognized => "unrecognized",
            Reason::Json => "json",
            Reason::Fields => "fields",
            Reason::Decimal => "decimal",
            Reason::Negative => "negative",
            Reason::Symbol => "symbol",
            Reason::Timestamp => "timestamp",
            Reason::Corrupt => "corrupt",
            Reason::TooLong => "too_long",
        }
    }
}

/// Rejections logged per reason before the log thins out to every
/// [`LOG_EVERY`]th.
pub(crate) const LOGGED_PER_REASON: u64 = 10;

/// After the first [`LOGGED_PER_REASON`] of a reason, every this many-th of
/// it is logged.
pub(crate) const LOG_EVERY: u64 = 1000;

/// The rejections of one pass over a recording (or of one live feed), by
/// reason: how many, and where the first of each was.
///
/// Each reason has its own log budget, so that a flood of one kind (a
/// capture's bookkeeping, one field a tool writes wrong) cannot use up the
/// log before the first of another (a negative price further down). Fixed
/// arrays: counting a rejection allocates nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RejectTally {
    count: [u64; Reason::ALL.len()],
    /// Line (or block, or message) number of each reason's first rejection.
    first_at: [u64; Reason::ALL.len()],
}

impl RejectTally {
    /// Counts `n` rejections for `reason` at `at`; returns how many of that
    /// reason there are now.
    pub fn add(&mut self, reason: Reason, at: u64, n: u64) -> u64 {
        let i = reason as usize;
        if self.count[i] == 0 {
            self.first_at[i] = at;
        }
        self.count[i] += n;
        self.count[i]
    }

    /// Whether the `n`th rejection of a reason is within its log budget.
    pub fn logs(n: u64) -> bool {
        n <= LOGGED_PER_REASON || n.is_multiple_of(LOG_EVERY)
    }

    pub fn total(&self) -> u64 {
        self.count.iter().sum()
    }

    /// `json 3 (first at line 17), negative 1 (first at line 9000)`; empty
    /// when nothing was rejected. `unit` names what `at` counted.
    pub fn by_reason(&self, unit: &str) -> String {
        let mut out = String::new();
        for reason in Reason::ALL {
            let i = reason as usize;
            if self.count[i] == 0 {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&format!(
                "{} {} (first at {unit} {})",
                reason.name(),
                self.count[i],
                self.first_at[i]
            ));
        }
        out
    }
}

/// Refuses a negative price or size, before anything else reads it: the
/// same answer for a symbol's first update (whose scale it would set) and
/// any later one. Zero passes, `-0` included (an empty side has size 0);
/// text that is not a decimal at all is left to the decimal parser.
fn non_negative(what: &'static str, value: &str) -> Result<(), BadRecord> {
    let Some(digits) = value.as_bytes().strip_prefix(b"-") else {
        return Ok(());
    };
    let decimal = digits.iter().all(|b| b.is_ascii_digit() || *b == b'.');
    if decimal && digits.iter().any(|b| (b'1'..=b'9').contains(b)) {
        return Err(BadRecord::Negative {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Whether an update carries a price or size below zero (a tickwire log
/// read back, which no venue parser checked).
pub(crate) fn has_negative(kind: &UpdateKind) -> bool {
    match *kind {
        UpdateKind::Quote {
            bid_px,
            bid_sz,
            ask_px,
            ask_sz,
        } => bid_px < 0 || bid_sz.unwrap_or(0) < 0 || ask_px < 0 || ask_sz.unwrap_or(0) < 0,
        UpdateKind::Trade { px, sz, .. } => px < 0 || sz < 0,
        UpdateKind::Status(_) => false,
    }
}

/// Collects the updates of one record, stamping them with the record's
/// capture time and interning their symbols.
pub(crate) struct Emitter<'a> {
    pub normalizer: &'a mut Normalizer,
    /// When the capture tool received the record, if the recording says.
    pub receive_ts_ns: Option<u64>,
    pub out: &'a mut Vec<Timed>,
}

impl Emitter<'_> {
    /// Pushes a best bid and offer; a size is `None` when the venue did not
    /// give it (unknown, not 0). The symbol's scales are fixed from the bid
    /// (or the ask's size, if the bid has none) if this is the first time
    /// anyone sees it.
    pub fn quote(
        &mut self,
        symbol: &str,
        (bid_px, bid_sz): (&str, Option<&str>),
        (ask_px, ask_sz): (&str, Option<&str>),
        exchange_ts_ns: u64,
    ) -> Result<(), BadRecord> {
        for (what, value) in [
            ("bid price", Some(bid_px)),
            ("bid size", bid_sz),
            ("ask price", Some(ask_px)),
            ("ask size", ask_sz),
        ] {
            if let Some(value) = value {
                non_negative(what, value)?;
            }
        }
        let size_sample = bid_sz.or(ask_sz).unwrap_or("0");
        let scale = self.scale(symbol, bid_px, size_sample)?;
        let size = |what, sz: Option<&str>| {
            sz.map(|sz| decimal(what, sz, scale.size(sz.as_bytes())))
                .transpose()
        };
        let kind = UpdateKind::Quote {
            bid_px: decimal("bid price", bid_px, scale.price(bid_px.as_bytes()))?,
            bid_sz: size("bid size", bid_sz)?,
            ask_px: decimal("ask price", ask_px, scale.price(ask_px.as_bytes()))?,
            ask_sz: size("ask size", ask_sz)?,
        };
        self.push(scale.id, kind, exchange_ts_ns);
        Ok(())
    }

    /// Pushes a trade; `side` is the aggressor's.
    pub fn trade(
        &mut self,
        symbol: &str,
        px: &str,
        sz: &str,
        side: Side,
        exchange_ts_ns: u64,
    ) -> Result<(), BadRecord> {
        non_negative("price", px)?;
        non_negative("size", sz)?;
        let scale = self.scale(symbol, px, sz)?;
        let kind = UpdateKind::Trade {
            px: decimal("price", px, scale.price(px.as_bytes()))?,
            sz: decimal("size", sz, scale.size(sz.as_bytes()))?,
            side,
        };
        self.push(scale.id, kind, exchange_ts_ns);
        Ok(())
    }

    fn scale(
        &mut self,
        symbol: &str,
        px: &str,
        sz: &str,
    ) -> Result<crate::symbols::Scale, BadRecord> {
        self.normalizer
            .scale(symbol, px.as_bytes(), sz.as_bytes())
            .map_err(|source| BadRecord::Symbol {
                symbol: symbol.to_owned(),
                source,
            })
    }

    fn push(&mut self, symbol: u32, kind: UpdateKind, exchange_ts_ns: u64) {
        let update = Update {
            symbol,
            kind,
            exchange_ts_ns,
            receive_ts_ns: self.receive_ts_ns.unwrap_or_else(now_ns),
            origin_seq: 0,
            origin_publish_ts_ns: 0,
        };
        // Pace by capture time; a capture without one is paced by the
        // venue's clock, and a record with neither is sent unpaced.
        let pace_ns = self
            .receive_ts_ns
            .or((exchange_ts_ns != 0).then_some(exchange_ts_ns));
        self.out.push(Timed { update, pace_ns });
    }
}

fn decimal(
    what: &'static str,
    value: &str,
    parsed: Result<i64, DecimalError>,
) -> Result<i64, BadRecord> {
    parsed.map_err(|source| BadRecord::Decimal {
        what,
        value: value.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::SymbolTable;

    #[test]
    fn negative_prices_and_sizes_are_refused_first_or_later() {
        enum Rec {
            Quote([&'static str; 4]),
            Trade(&'static str, &'static str),
        }
        use Rec::{Quote, Trade};
        // (symbol, record, the field refused as negative or None if served)
        let cases: &[(&str, Rec, Option<&str>)] = &[
            // TC0: a symbol's first update, negative: refused as negative
            // (not as a bad decimal), and the symbol is not interned.
            ("A", Quote(["-1.5", "2", "1.6", "3"]), Some("bid price")),
            ("A", Trade("1.5", "-0.1"), Some("size")),
            // TC1: a good first update, then every field negative in turn.
            ("B", Quote(["1.5", "2", "1.6", "3"]), None),
            (
                "B",
                Quote(["-0.02667200", "2", "1.6", "3"]),
                Some("bid price"),
            ),
            ("B", Quote(["1.5", "-2", "1.6", "3"]), Some("bid size")),
            ("B", Quote(["1.5", "2", "-1.6", "3"]), Some("ask price")),
            ("B", Quote(["1.5", "2", "1.6", "-.5"]), Some("ask size")),
            ("B", Trade("-1.5", "1"), Some("price")),
            ("B", Trade("1.5", "-1"), Some("size")),
            // TC2: zero sizes (an empty side) are served, as before; so is
            // a signed zero once the symbol is known.
            ("B", Quote(["1.5", "0", "1.6", "0.00000000"]), None),
            ("B", Quote(["1.5", "-0", "1.6", "-0.000"]), None),
            ("B", Trade("1.5", "0"), None),
        ];
        let table = SymbolTable::new();
        let mut normalizer = Normalizer::new(table.clone());
        for (i, (symbol, rec, refused)) in cases.iter().enumerate() {
            let mut out = Vec::new();
            let mut emit = Emitter {
                normalizer: &mut normalizer,
                receive_ts_ns: None,
                out: &mut out,
            };
            let result = match rec {
                Quote([bp, bs, ap, asz]) => emit.quote(symbol, (bp, Some(bs)), (ap, Some(asz)), 0),
                Trade(px, sz) => emit.trade(symbol, px, sz, Side::Buy, 0),
            };
            match (refused, result) {
                (None, Ok(())) => {
                    assert_eq!(out.len(), 1, "case {i}");
                    assert!(!has_negative(&out[0].update.kind), "case {i}");
                }
                (Some(field), Err(BadRecord::Negative { what, .. })) => {
                    assert_eq!(&what, field, "case {i}");
                    assert!(out.is_empty(), "case {i}");
                }
                (want, got) => panic!("case {i}: want {want:?}, got {got:?}"),
            }
        }
        assert!(table.get_by_name("A").is_none());
        // TC3: text that is not a decimal keeps its own error.
        let mut out = Vec::new();
        let mut emit = Emitter {
            normalizer: &mut normalizer,
            receive_ts_ns: None,
            out: &mut out,
        };
        let err = emit.trade("B", "-1x", "1", Side::Buy, 0).unwrap_err();
        assert_eq!(err.reason(), Reason::Decimal, "{err}");
        assert_eq!(
            BadRecord::Negative {
                what: "bid price",
                value: "-0.02667200".into()
            }
            .to_string(),
            "negative bid price \"-0.02667200\""
        );
    }

    #[test]
    fn rejections_are_budgeted_and_summarized_per_reason() {
        let mut t = RejectTally::default();
        // TC0: each reason has its own budget: 10, then every 1000th.
        let logged: Vec<bool> = (1..=2000)
            .map(|line| RejectTally::logs(t.add(Reason::Unrecognized, line, 1)))
            .collect();
        assert_eq!(logged.iter().filter(|l| **l).count(), 12);
        assert!(logged[..10].iter().all(|l| *l) && logged[999] && logged[1999]);
        // TC1: a flood of one reason leaves another's first one logged.
        assert!(RejectTally::logs(t.add(Reason::Negative, 2001, 1)));
        // TC2: several at once (a log's corrupt places) count from the
        // first; the summary lists reasons in a fixed order with the first
        // position of each.
        assert_eq!(t.add(Reason::Corrupt, 7, 3), 3);
        assert_eq!(t.total(), 2004);
        assert_eq!(
            t.by_reason("line"),
            "unrecognized 2000 (first at line 1), negative 1 (first at line 2001), \
             corrupt 3 (first at line 7)"
        );
        // TC3: nothing rejected, nothing listed.
        assert_eq!(RejectTally::default().by_reason("line"), "");
    }

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

    #[test]
    fn speed_parses() {
        // TC0: factors and max.
        assert_eq!("1".parse::<Speed>(), Ok(Speed::Factor(1.0)));
        assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Factor(0.5)));
        assert_eq!("10".parse::<Speed>(), Ok(Speed::Factor(10.0)));
        assert_eq!("MAX".parse::<Speed>(), Ok(Speed::Max));
        // TC1: not positive and finite.
        for bad in ["0", "-1", "inf", "NaN", "", "fast"] {
            assert!(bad.parse::<Speed>().is_err(), "{bad}");
        }
    }

    #[test]
    fn feed_spec_parses() {
        // TC0: a path.
        assert_eq!(
            "feeds/x.jsonl.gz".parse::<FeedSpec>(),
            Ok(FeedSpec::File("feeds/x.jsonl.gz".into()))
        );
        // TC1: synthetic with and without max rate.
        assert_eq!(
            "synthetic:symbols=3,rate=500".parse::<FeedSpec>(),
            Ok(FeedSpec::Synthetic(SyntheticSpec {
                symbols: 3,
                rate: Rate::PerSecond(500),
                seed: synthetic::DEFAULT_SEED,
            }))
        );
        assert_eq!(
            "synthetic:symbols=1,rate=max,seed=7".parse::<FeedSpec>(),
            Ok(FeedSpec::Synthetic(SyntheticSpec {
                symbols: 1,
                rate: Rate::Max,
                seed: 7,
            }))
        );
        // TC2: bad synthetic specs name the problem.
        for (bad, needle) in [
            ("synthetic:symbols=0,rate=1", "symbols"),
            ("synthetic:symbols=x,rate=1", "symbols"),
            ("synthetic:symbols=2,rate=0", "rate"),
            ("synthetic:symbols=2,speed=1", "unknown key `speed`"),
            ("synthetic:symbols", "key=value"),
            ("synthetic:symbols=99999999,rate=1", "symbols"),
        ] {
            let err = bad.parse::<FeedSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        // TC3: empty.
        assert_eq!("".parse::<FeedSpec>(), Err(SpecError::EmptyPath));
        // TC4: live venues (the URL rules are tested in `upstream`).
        let live = "coinbase:wss://ws-feed.exchange.coinbase.com?products=BTC-USD";
        match live.parse::<FeedSpec>() {
            Ok(FeedSpec::Upstream(spec)) => assert_eq!(spec.venue, upstream::Venue::Coinbase),
            other => panic!("{other:?}"),
        }
        assert_eq!(live.parse::<FeedSpec>().unwrap().name(), live);
        assert!(matches!(
            "wss://x/".parse::<FeedSpec>(),
            Err(SpecError::Upstream { .. })
        ));
        // TC5: NATS, with and without a filter; a bad one names the problem.
        let Ok(FeedSpec::Nats(source)) = "nats://127.0.0.1:4222".parse::<FeedSpec>() else {
            panic!("not a NATS feed");
        };
        assert_eq!(source.filter, "tickwire.>");
        let err = "nats://h:1/a..b".parse::<FeedSpec>().unwrap_err();
        assert!(err.to_string().contains("empty token"), "{err}");
    }
}
