//! Channels: what a subscription carries of each symbol (`docs/PROTOCOL.md`,
//! "Channels"). Each has a number, the [`Published`](crate::market::Published)
//! entries of a channel carry it, and a subscription keeps one bit per
//! channel.

use crate::candle::{COUNT, INTERVALS};

/// Best bid and offer.
pub const QUOTES: u8 = 0;
pub const TRADES: u8 = 1;
/// The first book channel: book variant `v` ([`DEPTHS`]) is `BOOK + v`.
pub const BOOK: u8 = 2;

/// The depths served as book channels: 0 is the full book (`book`), N the
/// top N levels (`book.N`).
pub const DEPTHS: [u16; 7] = [0, 1, 5, 10, 20, 50, 100];

/// Number of book channels.
pub const VARIANTS: usize = DEPTHS.len();

/// The first candle channel: interval `i` ([`crate::candle::INTERVALS`])
/// is `CANDLES + i`.
pub const CANDLES: u8 = BOOK + VARIANTS as u8;

/// The channel number of candle interval `i`.
pub const fn candle(i: usize) -> u8 {
    CANDLES + i as u8
}

/// The channel name of candle interval `i`: `candles.1m`.
pub fn candle_name(i: usize) -> String {
    format!("candles.{}", INTERVALS[i].0)
}

/// The candle interval a channel name names, if it is a candle channel.
pub fn interval_of(channel: &str) -> Option<usize> {
    let suffix = channel.strip_prefix("candles.")?;
    INTERVALS.iter().position(|&(name, _)| name == suffix)
}

/// The channel number of book variant `v`.
pub const fn book(v: usize) -> u8 {
    BOOK + v as u8
}

/// The channel name of book variant `v`: `book` or `book.N`.
pub fn book_name(v: usize) -> String {
    match DEPTHS[v] {
        0 => "book".to_owned(),
        n => format!("book.{n}"),
    }
}

/// The book variant a channel name names, if it is a book channel.
pub fn variant_of(channel: &str) -> Option<usize> {
    if channel == "book" {
        return Some(0);
    }
    let n: u16 = channel.strip_prefix("book.")?.parse().ok()?;
    DEPTHS.iter().position(|&d| d == n && n != 0)
}

/// What a refusal of an unknown channel name says is expected.
pub const EXPECTED: &str = "quotes, trades, book, book.N with N one of 1, 5, 10, 20, 50, 100, \
     or candles.I with I one of 1s, 1m, 5m, 15m, 1h, 1d";

/// A set of channels, one bit per channel number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels(pub u16);

impl Channels {
    /// What a subscription without `channels` means: quotes and trades.
    pub const DEFAULT: Channels = Channels(1 << QUOTES | 1 << TRADES);
    /// Every channel.
    pub const ALL: Channels = Channels((1 << (CANDLES as usize + COUNT)) - 1);

    /// The channel called `name`.
    pub fn named(name: &str) -> Option<Channels> {
        let index = match name {
            "quotes" => QUOTES,
            "trades" => TRADES,
            candles if candles.starts_with("candles.") => candle(interval_of(candles)?),
            book => book_channel(variant_of(book)?),
        };
        Some(Channels(1 << index))
    }

    pub fn has(self, channel: u8) -> bool {
        self.0 & (1 << channel) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The book variants among these channels.
    pub fn book_variants(self) -> impl Iterator<Item = usize> {
        (0..VARIANTS).filter(move |&v| self.has(book(v)))
    }

    /// Whether any of these channels is served from a cache of its own
    /// (a book or candle channel: watched, with a snapshot on subscribe).
    pub fn has_cached(self) -> bool {
        self.0 >> BOOK != 0
    }

    /// The candle intervals among these channels.
    pub fn candle_intervals(self) -> impl Iterator<Item = usize> {
        (0..COUNT).filter(move |&i| self.has(candle(i)))
    }

    /// The names, in channel order.
    pub fn names(self) -> Vec<String> {
        let mut names = Vec::new();
        if self.has(QUOTES) {
            names.push("quotes".to_owned());
        }
        if self.has(TRADES) {
            names.push("trades".to_owned());
        }
        names.extend(self.book_variants().map(book_name));
        names.extend(self.candle_intervals().map(candle_name));
        names
    }
}

fn book_channel(v: usize) -> u8 {
    book(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(variant_of("book"), Some(0));
        assert_eq!(variant_of("book.10"), Some(3));
        for bad in ["book.0", "book.7", "book.", "books", "book.10x", "book.-1"] {
            assert_eq!(variant_of(bad), None, "{bad}");
        }
        for v in 0..VARIANTS {
            assert_eq!(variant_of(&book_name(v)), Some(v));
        }
        assert_eq!(interval_of("candles.1m"), Some(1));
        for bad in [
            "candles.",
            "candles.2m",
            "candles.1M",
            "candle.1m",
            "candles.1m ",
        ] {
            assert_eq!(interval_of(bad), None, "{bad}");
            assert_eq!(Channels::named(bad), None, "{bad}");
        }
        let all = Channels::ALL.names();
        assert_eq!(all.len(), 2 + VARIANTS + COUNT);
        assert_eq!(all.last().map(String::as_str), Some("candles.1d"));
        for n in &all {
            assert!(Channels::named(n).is_some(), "{n}");
        }
    }
}
