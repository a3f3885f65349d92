//! The normalize step every feed shares: a venue parser hands one record's
//! fields to an [`Emitter`], which checks them (no negative price or size,
//! decimals within the symbol's scale), interns the symbol and stamps the
//! [`Update`]s with the record's times; a record it cannot turn into
//! updates is a [`BadRecord`], counted by [`Reason`] in a [`RejectTally`],
//! whose per-reason budget keeps one noisy kind from drowning the log.
//!
//! Recordings ([`super::recording`]) and live venues ([`super::upstream`])
//! go through the same step, so a record means the same wherever it comes
//! from.

use std::any::Any;
use std::fmt;

use crate::decimal::DecimalError;
use crate::symbols::Scale;
use crate::symbols::{NormalizeError, Normalizer};
use crate::update::{
    level_flags, now_ns, BookSide, Side, SymbolId, SymbolStatus, Update, UpdateKind,
};

/// The longest line of a recording that is parsed. A longer one (no real
/// record comes near it) is read to its end and rejected, never held whole:
/// a few KB of zstd can hold gigabytes without a newline.
pub(crate) const MAX_LINE_BYTES: usize = 16 << 20;

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

/// One order-book level from a venue's text: a price and a size, neither
/// negative nor finer than the symbol's scale (a size of 0 removes the
/// level).
pub(crate) fn book_level(
    scale: &Scale,
    side: BookSide,
    px: &str,
    sz: &str,
) -> Result<(BookSide, i64, i64), BadRecord> {
    non_negative("level price", px)?;
    non_negative("level size", sz)?;
    Ok((
        side,
        decimal("level price", px, scale.price(px.as_bytes()))?,
        decimal("level size", sz, scale.size(sz.as_bytes()))?,
    ))
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
        UpdateKind::Level { px, sz, .. } => px < 0 || sz < 0,
        UpdateKind::Status(_) => false,
    }
}

/// What a feed's venue parsers keep across messages to build order books
/// (a venue's book sync: diffs waiting for a snapshot, the last update id),
/// one value per parser type: so that the normalize step carries it without
/// knowing any venue, and adding a venue touches only its own folder. One
/// per recording file or live session, since a venue's sync follows the
/// order of its own messages.
#[derive(Default)]
pub(crate) struct BookSync {
    states: Vec<Box<dyn Any + Send>>,
}

impl BookSync {
    /// The state of type `T`, created empty the first time it is asked for.
    pub fn get<T: Default + Send + 'static>(&mut self) -> &mut T {
        let at = match self.states.iter().position(|s| s.is::<T>()) {
            Some(at) => at,
            None => {
                self.states.push(Box::<T>::default());
                self.states.len() - 1
            }
        };
        match self.states[at].downcast_mut() {
            Some(state) => state,
            // `at` holds a `T`: found by type, or just pushed.
            None => unreachable!("the state at {at} is a {}", std::any::type_name::<T>()),
        }
    }
}

/// One update and the time it is paced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    pub update: Update,
    /// Capture receive time, else exchange time, in ns; `None` is unpaced.
    pub pace_ns: Option<u64>,
}

/// Collects the updates of one record, stamping them with the record's
/// capture time and interning their symbols.
pub(crate) struct Emitter<'a> {
    pub normalizer: &'a mut Normalizer,
    /// The feed's order books in the making (a venue's sync state).
    pub books: &'a mut BookSync,
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

    /// Pushes one book event of symbol `id`: `levels` as (side, price,
    /// size) mantissas, a snapshot if `reset`. `receive_ts_ns` is when the
    /// venue's message arrived (a diff held for a snapshot arrived before
    /// the record that releases it, and is paced with that record).
    pub fn levels(
        &mut self,
        id: SymbolId,
        levels: &[(BookSide, i64, i64)],
        reset: bool,
        exchange_ts_ns: u64,
        receive_ts_ns: Option<u64>,
    ) {
        let pace_ns = self
            .receive_ts_ns
            .or((exchange_ts_ns != 0).then_some(exchange_ts_ns));
        let receive_ts_ns = receive_ts_ns.unwrap_or_else(now_ns);
        for (i, &(side, px, sz)) in levels.iter().enumerate() {
            let mut flags = 0;
            if reset && i == 0 {
                flags |= level_flags::RESET;
            }
            if i + 1 == levels.len() {
                flags |= level_flags::LAST;
            }
            let update = Update {
                symbol: id,
                kind: UpdateKind::Level {
                    side,
                    px,
                    sz,
                    flags,
                },
                exchange_ts_ns,
                receive_ts_ns,
                origin_seq: 0,
                origin_publish_ts_ns: 0,
            };
            self.out.push(Timed { update, pace_ns });
        }
    }

    /// Pushes a status of symbol `id` (its book lost its sync).
    pub fn status(
        &mut self,
        id: SymbolId,
        status: SymbolStatus,
        exchange_ts_ns: u64,
        _receive_ts_ns: Option<u64>,
    ) {
        self.push(id, UpdateKind::Status(status), exchange_ts_ns);
    }

    /// The scale of `symbol`, interning it with these samples if it is new.
    pub fn scale_of(&mut self, symbol: &str, px: &str, sz: &str) -> Result<Scale, BadRecord> {
        self.scale(symbol, px, sz)
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
                books: &mut BookSync::default(),
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
            books: &mut BookSync::default(),
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
}
