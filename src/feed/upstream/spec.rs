//! The `VENUE:URL` spec of a live feed, and what it subscribes to.

use std::collections::HashMap;
use std::time::Duration;

use crate::feed::upstream::ws_client::{Endpoint, UpstreamTls};
use crate::feed::SpecError;

/// The venues whose WebSocket protocol a connector speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Venue {
    Binance,
    Coinbase,
}

/// Timing of upstream connections, from the server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTiming {
    /// No frame at all for this long and the connection counts as down.
    /// Also the limit for opening a connection.
    pub silence_timeout: Duration,
    /// First reconnect delay (before jitter).
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

impl Default for UpstreamTiming {
    fn default() -> Self {
        UpstreamTiming {
            silence_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// A parsed `VENUE:URL` feed.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// The spec as given, for messages.
    pub spec: String,
    pub venue: Venue,
    pub endpoint: Endpoint,
    /// Binance: streams to `SUBSCRIBE` to by message. Coinbase: product ids.
    pub subscribe: Vec<String>,
    /// Coinbase channels.
    pub channels: Vec<String>,
    pub timing: UpstreamTiming,
    /// Whom `wss` trusts, from the server configuration.
    pub tls: UpstreamTls,
    /// Binance: where a depth book's REST snapshot is fetched
    /// (`--upstream-rest-url`, else the venue's public endpoint for the
    /// stream host); `None`: books wait for a snapshot that never comes.
    pub rest_url: Option<String>,
}

/// Coinbase channels a connector may ask for: the ones that carry quotes,
/// trades, order books (`level2_batch` is public; `level2` needs an
/// authenticated subscription, which tickwire does not send), or sequence
/// checks.
const COINBASE_CHANNELS: &[&str] = &[
    "ticker",
    "ticker_batch",
    "matches",
    "heartbeat",
    "level2",
    "level2_batch",
];
const COINBASE_DEFAULT_CHANNELS: &[&str] = &["ticker", "matches", "heartbeat"];

impl UpstreamSpec {
    /// Parses `binance:URL` or `coinbase:URL`. `None` when `s` is not a
    /// WebSocket feed at all (a path, a synthetic spec).
    pub fn parse(s: &str) -> Option<Result<UpstreamSpec, SpecError>> {
        let is_ws = |u: &str| u.starts_with("ws://") || u.starts_with("wss://");
        let err = |reason: String| {
            Some(Err(SpecError::Upstream {
                spec: s.to_owned(),
                reason,
            }))
        };
        if is_ws(s) {
            return err("name the venue: binance:wss://... or coinbase:wss://...".into());
        }
        let (venue, url) = match s.split_once(':') {
            Some(("binance", url)) if is_ws(url) => (Venue::Binance, url),
            Some(("coinbase", url)) if is_ws(url) => (Venue::Coinbase, url),
            Some((other, url)) if is_ws(url) => {
                return err(format!(
                    "unknown venue `{other}`: expected binance or coinbase"
                ))
            }
            _ => return None,
        };
        Some(
            Self::parse_url(s, venue, url).map_err(|reason| SpecError::Upstream {
                spec: s.to_owned(),
                reason,
            }),
        )
    }

    fn parse_url(s: &str, venue: Venue, url: &str) -> Result<UpstreamSpec, String> {
        let ours: &[&str] = match venue {
            Venue::Binance => &["subscribe"],
            Venue::Coinbase => &["products", "channels"],
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut params: HashMap<&str, &str> = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if ours.contains(&key) {
                params.insert(key, pair.split_once('=').map_or("", |(_, v)| v));
            } else {
                kept.push(pair);
            }
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let endpoint = Endpoint::parse(&url)?;
        let list = |v: &str, seps: &[char]| -> Vec<String> {
            v.split(seps)
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let (subscribe, channels) = match venue {
            Venue::Binance => {
                let subscribe = list(params.get("subscribe").unwrap_or(&""), &['/', ',']);
                let by_url = kept.iter().any(|p| p.starts_with("streams="));
                if subscribe.is_empty() && !by_url {
                    return Err(
                        "no streams: add ?streams=a@bookTicker/b@trade (by URL) or ?subscribe=... (by SUBSCRIBE message)"
                            .into(),
                    );
                }
                (subscribe, Vec::new())
            }
            Venue::Coinbase => {
                let products = list(params.get("products").unwrap_or(&""), &[',']);
                if products.is_empty() {
                    return Err("no products: add ?products=BTC-USD,ETH-USD".into());
                }
                let mut channels = list(params.get("channels").unwrap_or(&""), &[',']);
                if channels.is_empty() {
                    channels = COINBASE_DEFAULT_CHANNELS
                        .iter()
                        .map(|c| c.to_string())
                        .collect();
                }
                if let Some(bad) = channels
                    .iter()
                    .find(|c| !COINBASE_CHANNELS.contains(&c.as_str()))
                {
                    return Err(format!(
                        "channel `{bad}` carries no quotes or trades; use {}",
                        COINBASE_CHANNELS.join(", ")
                    ));
                }
                (products, channels)
            }
        };
        Ok(UpstreamSpec {
            spec: s.to_owned(),
            venue,
            endpoint,
            subscribe,
            channels,
            timing: UpstreamTiming::default(),
            tls: UpstreamTls::default(),
            rest_url: None,
        })
    }

    /// What to send after every connect.
    pub(super) fn subscribe_messages(&self) -> Vec<String> {
        let json_list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        match self.venue {
            Venue::Binance if self.subscribe.is_empty() => Vec::new(),
            Venue::Binance => vec![format!(
                r#"{{"method":"SUBSCRIBE","params":{},"id":1}}"#,
                json_list(&self.subscribe)
            )],
            Venue::Coinbase => vec![format!(
                r#"{{"type":"subscribe","product_ids":{},"channels":{}}}"#,
                json_list(&self.subscribe),
                json_list(&self.channels)
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        // TC0: Binance subscribed by URL: the URL is kept whole.
        let s = UpstreamSpec::parse(
            "binance:wss://stream.binance.com:9443/stream?streams=btcusdt@bookTicker/btcusdt@trade",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.venue, Venue::Binance);
        assert!(s.subscribe.is_empty());
        assert_eq!(
            s.endpoint.path_and_query,
            "/stream?streams=btcusdt@bookTicker/btcusdt@trade"
        );
        assert!(s.subscribe_messages().is_empty());
        // TC1: Binance by SUBSCRIBE: our parameter leaves the URL.
        let s = UpstreamSpec::parse("binance:ws://127.0.0.1:9/ws?subscribe=a@trade,b@aggTrade")
            .unwrap()
            .unwrap();
        assert_eq!(s.endpoint.path_and_query, "/ws");
        assert_eq!(
            s.subscribe_messages(),
            [r#"{"method":"SUBSCRIBE","params":["a@trade","b@aggTrade"],"id":1}"#]
        );
        // TC2: Coinbase with products and default channels.
        let s = UpstreamSpec::parse(
            "coinbase:wss://ws-feed.exchange.coinbase.com?products=BTC-USD,ETH-USD",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.path_and_query, "/");
        assert_eq!(
            s.subscribe_messages(),
            [
                r#"{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channels":["ticker","matches","heartbeat"]}"#
            ]
        );
        // TC3: not a WebSocket feed at all.
        assert!(UpstreamSpec::parse("feeds/x.jsonl").is_none());
        assert!(UpstreamSpec::parse("synthetic:symbols=1,rate=1").is_none());
        // TC4: mistakes name the problem.
        for (bad, needle) in [
            ("wss://x/stream?streams=a@trade", "name the venue"),
            ("kraken:wss://x/", "unknown venue"),
            ("binance:wss://x/ws", "no streams"),
            ("coinbase:wss://x", "no products"),
            ("coinbase:wss://x?products=A&channels=full", "full"),
            ("binance:ws://?subscribe=a@trade", "URL"),
        ] {
            let err = UpstreamSpec::parse(bad).unwrap().unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
