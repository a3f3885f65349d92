//! What a feed is: the `--feed` spec (a recording, the bundled one, the
//! synthetic generator, a live venue, NATS) and the `--speed` a recording
//! is replayed at, parsed from the command line and the config file.
//!
//! Kept apart from the feeds themselves so that parsing a spec never
//! depends on how the feed it names runs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::synthetic::SyntheticSpec;
use super::upstream::UpstreamSpec;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::synthetic::{self, Rate};
    use crate::feed::upstream;

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
                book: 0,
            }))
        );
        assert_eq!(
            "synthetic:symbols=1,rate=max,seed=7".parse::<FeedSpec>(),
            Ok(FeedSpec::Synthetic(SyntheticSpec {
                symbols: 1,
                rate: Rate::Max,
                seed: 7,
                book: 0,
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
