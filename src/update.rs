//! The normalized update: one compact `Copy` value per quote or trade,
//! whatever feed it came from.

/// Interned symbol id: an index into the [`SymbolTable`](crate::symbols::SymbolTable).
pub type SymbolId = u32;

/// Side of the aggressor of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Side {
    Unknown = 0,
    Buy = 1,
    Sell = 2,
}

/// What changed. Prices and sizes are fixed-point mantissas at the symbol's
/// `price_decimals` / `size_decimals` (see [`crate::decimal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Best bid and offer. A size is `None` when the venue did not say
    /// (Coinbase tickers may carry prices only): unknown, which is not 0.
    Quote {
        bid_px: i64,
        bid_sz: Option<i64>,
        ask_px: i64,
        ask_sz: Option<i64>,
    },
    /// One trade (or one aggregated trade, for `aggTrade`).
    Trade { px: i64, sz: i64, side: Side },
    /// The symbol's data became stale or live again (an upstream connector
    /// lost its venue, or saw a gap in the venue's numbering). Carries no
    /// price; it travels the same path as the data so that clients get it
    /// in order with the updates around it.
    Status(SymbolStatus),
    /// One price level of the symbol's order book, set to an absolute
    /// size (0 removes it). A book event (a venue's snapshot, or one diff)
    /// is a run of levels of one symbol, the last one flagged
    /// [`level_flags::LAST`]; the publisher applies the run and publishes
    /// it as one book update ([`crate::book`]).
    Level {
        side: BookSide,
        px: i64,
        sz: i64,
        flags: u8,
    },
}

/// Side of an order book level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum BookSide {
    Bid = 0,
    Ask = 1,
}

/// Bits of [`UpdateKind::Level::flags`].
pub mod level_flags {
    /// The first level of a snapshot: the book is emptied before it is
    /// applied.
    pub const RESET: u8 = 1 << 0;
    /// The last level of a book event: the publisher publishes the book
    /// after applying it.
    pub const LAST: u8 = 1 << 1;
}

/// Whether a symbol's last values can be trusted, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SymbolStatus {
    /// Fresh data arrived after the symbol was stale.
    Live = 0,
    /// The venue's sequence numbers skipped: updates were lost.
    StaleGap = 1,
    /// The connection to the venue was lost (closed, reset, refused).
    StaleDisconnected = 2,
    /// The venue sent nothing, not even a pong, for the silence timeout.
    StaleSilent = 3,
    /// The order book lost its synchronization with the venue (a diff did
    /// not follow the one before, or a snapshot was too old): the book is
    /// not served until a new snapshot is applied.
    StaleBookGap = 4,
}

impl SymbolStatus {
    pub fn is_stale(self) -> bool {
        self != SymbolStatus::Live
    }

    /// `live` or `stale`, as the JSON `state`.
    pub fn state(self) -> &'static str {
        if self.is_stale() {
            "stale"
        } else {
            "live"
        }
    }

    /// Why, as the JSON `reason`; `""` for live.
    pub fn reason(self) -> &'static str {
        match self {
            SymbolStatus::Live => "",
            SymbolStatus::StaleGap => "gap",
            SymbolStatus::StaleDisconnected => "disconnected",
            SymbolStatus::StaleSilent => "silent",
            SymbolStatus::StaleBookGap => "book_gap",
        }
    }
}

/// One normalized update on its way from a feed to the publisher.
///
/// Timestamps are nanoseconds since the Unix epoch; 0 means the feed does not
/// carry that time (Binance spot `bookTicker` has no exchange time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub symbol: SymbolId,
    pub kind: UpdateKind,
    /// When the venue says the event happened.
    pub exchange_ts_ns: u64,
    /// When the update reached us (for a recording: when the capture tool
    /// received it).
    pub receive_ts_ns: u64,
    /// The symbol's sequence as numbered by an upstream tickwire (a feed node
    /// seen through NATS, a recorded log), or 0 when this process numbers
    /// it. The publisher keeps a nonzero one as the update's `symbol_seq`, so
    /// the same update carries the same number on every edge, and drops an
    /// update whose number is not above what the symbol already published.
    pub origin_seq: u64,
    /// When an upstream tickwire's publisher published it, or 0 when this
    /// process publishes it first. The publisher keeps a nonzero one as the
    /// update's `publish_ts`, so that every node serves the same timestamps
    /// and latency measured at an edge node includes the hop from the feed
    /// node.
    pub origin_publish_ts_ns: u64,
}

/// An [`Update`] after the publisher has sequenced and stamped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequenced {
    pub update: Update,
    /// Position in the global stream, from 1, with no gaps.
    pub seq: u64,
    /// Position in the symbol's own stream, from 1, with no gaps.
    pub symbol_seq: u64,
    /// When the publisher encoded it, or when the origin's did
    /// ([`Update::origin_publish_ts_ns`]).
    pub publish_ts_ns: u64,
}

/// Nanoseconds since the Unix epoch by the wall clock.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
