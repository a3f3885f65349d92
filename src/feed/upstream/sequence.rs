//! Where a venue message sits in the venue's numbering, and which messages
//! are not market data (subscription answers, refusals, heartbeats). The
//! rules are in the table at the top of `upstream/mod.rs`.

use std::collections::HashMap;

use simd_json::prelude::*;
use simd_json::BorrowedValue;

/// The streams a venue numbers separately, per symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Trade = 0,
    AggTrade = 1,
    Book = 2,
}

/// One message's place in its venue's numbering.
pub(super) struct Numbered<'v> {
    pub symbol: &'v str,
    pub stream: Stream,
    pub id: u64,
    /// Whether ids go up by exactly one, so that a jump is a gap.
    pub contiguous: bool,
}

/// The last id published per symbol and stream.
#[derive(Default)]
pub(super) struct Numbering {
    last: HashMap<String, [u64; 3]>,
}

impl Numbering {
    pub(super) fn get(&self, symbol: &str, stream: Stream) -> u64 {
        self.last.get(symbol).map_or(0, |ids| ids[stream as usize])
    }

    pub(super) fn set(&mut self, symbol: &str, stream: Stream, id: u64) {
        match self.last.get_mut(symbol) {
            Some(ids) => ids[stream as usize] = id,
            None => {
                let mut ids = [0; 3];
                ids[stream as usize] = id;
                self.last.insert(symbol.to_owned(), ids);
            }
        }
    }
}

/// What a venue message is, besides its quote or trade.
pub(super) enum Control<'v> {
    /// The venue confirmed the subscription.
    Subscribed,
    /// The venue refused it.
    Refused(String),
    /// Coinbase `heartbeat`: the product's last trade id.
    Heartbeat { symbol: &'v str, last_trade_id: u64 },
    /// Market data (or something the parser will classify).
    Data(Option<Numbered<'v>>),
}

pub(super) fn binance_control<'v>(v: &'v BorrowedValue<'_>) -> Control<'v> {
    let str_of = |k: &str| v.get(k).and_then(|x| x.as_str());
    let u64_of = |k: &str| v.get(k).and_then(|x| x.as_u64());
    // `{"result":null,"id":1}` answers a SUBSCRIBE; `{"error":{"code":2,
    // "msg":".."},"id":1}` or `{"code":2,"msg":".."}` refuses it.
    if v.get("id").is_some() && v.get("result").is_some() {
        return Control::Subscribed;
    }
    let refusal = |e: &BorrowedValue<'_>| {
        let code = e.get("code").and_then(|c| c.as_i64()).unwrap_or(0);
        let msg = e.get("msg").and_then(|m| m.as_str()).unwrap_or("");
        Control::Refused(format!("Binance error {code}: {msg}"))
    };
    if let Some(e) = v.get("error") {
        return refusal(e);
    }
    if v.get("e").is_none() && v.get("code").is_some() {
        return refusal(v);
    }
    let Some(symbol) = str_of("s") else {
        return Control::Data(None);
    };
    let numbered = match str_of("e") {
        Some("trade") => u64_of("t").map(|id| (Stream::Trade, id, true)),
        Some("aggTrade") => u64_of("a").map(|id| (Stream::AggTrade, id, true)),
        Some("bookTicker") | None => u64_of("u").map(|id| (Stream::Book, id, false)),
        Some(_) => None,
    };
    Control::Data(numbered.map(|(stream, id, contiguous)| Numbered {
        symbol,
        stream,
        id,
        contiguous,
    }))
}

pub(super) fn coinbase_control<'v>(v: &'v BorrowedValue<'_>) -> Control<'v> {
    let str_of = |k: &str| v.get(k).and_then(|x| x.as_str());
    let u64_of = |k: &str| v.get(k).and_then(|x| x.as_u64());
    let symbol = str_of("product_id").unwrap_or("");
    match str_of("type") {
        Some("subscriptions") => Control::Subscribed,
        // `{"type":"error","message":"Failed to subscribe","reason":"..."}`
        Some("error") => Control::Refused(format!(
            "Coinbase error: {}: {}",
            str_of("message").unwrap_or(""),
            str_of("reason").unwrap_or("")
        )),
        Some("heartbeat") => match u64_of("last_trade_id") {
            Some(last_trade_id) => Control::Heartbeat {
                symbol,
                last_trade_id,
            },
            None => Control::Data(None),
        },
        Some("ticker") => Control::Data(u64_of("sequence").map(|id| Numbered {
            symbol,
            stream: Stream::Book,
            id,
            contiguous: false,
        })),
        Some("match" | "last_match") => Control::Data(u64_of("trade_id").map(|id| Numbered {
            symbol,
            stream: Stream::Trade,
            id,
            contiguous: true,
        })),
        _ => Control::Data(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(json: &str, venue: for<'v, 'x> fn(&'v BorrowedValue<'x>) -> Control<'v>) -> String {
        let mut buf = json.as_bytes().to_vec();
        let v = simd_json::to_borrowed_value(&mut buf).unwrap();
        match venue(&v) {
            Control::Subscribed => "subscribed".into(),
            Control::Refused(r) => format!("refused: {r}"),
            Control::Heartbeat {
                symbol,
                last_trade_id,
            } => format!("heartbeat {symbol} {last_trade_id}"),
            Control::Data(None) => "data".into(),
            Control::Data(Some(n)) => {
                format!("{} {:?} {} {}", n.symbol, n.stream, n.id, n.contiguous)
            }
        }
    }

    #[test]
    fn binance_messages() {
        for (json, want) in [
            // TC0: trades and aggregate trades count by one; book ids do not.
            (
                r#"{"e":"trade","E":1,"s":"BTCUSDT","t":3071245454,"p":"1","q":"1","T":1,"m":true}"#,
                "BTCUSDT Trade 3071245454 true",
            ),
            (
                r#"{"e":"aggTrade","E":1,"s":"ETHUSDT","a":26129,"p":"1","q":"1","T":1,"m":true}"#,
                "ETHUSDT AggTrade 26129 true",
            ),
            (
                r#"{"u":36090299876,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}"#,
                "BTCUSDT Book 36090299876 false",
            ),
            (
                r#"{"e":"bookTicker","u":7,"s":"BTCUSD_PERP","b":"1","B":"1","a":"2","A":"1","T":1,"E":1}"#,
                "BTCUSD_PERP Book 7 false",
            ),
            // TC1: the answer to a SUBSCRIBE, and refusals in both shapes.
            (r#"{"result":null,"id":1}"#, "subscribed"),
            (
                r#"{"error":{"code":2,"msg":"Invalid request"},"id":1}"#,
                "refused: Binance error 2: Invalid request",
            ),
            (
                r#"{"code":2,"msg":"Invalid request"}"#,
                "refused: Binance error 2: Invalid request",
            ),
            // TC2: other events carry no number we use.
            (
                r#"{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2}"#,
                "data",
            ),
        ] {
            assert_eq!(classify(json, binance_control), want, "{json}");
        }
    }

    #[test]
    fn coinbase_messages() {
        for (json, want) in [
            // TC0: matches count by one; the ticker's sequence does not.
            (
                r#"{"type":"match","trade_id":10,"sequence":50,"product_id":"BTC-USD"}"#,
                "BTC-USD Trade 10 true",
            ),
            (
                r#"{"type":"last_match","trade_id":9,"sequence":49,"product_id":"BTC-USD"}"#,
                "BTC-USD Trade 9 true",
            ),
            (
                r#"{"type":"ticker","sequence":37475248783,"product_id":"ETH-USD"}"#,
                "ETH-USD Book 37475248783 false",
            ),
            // TC1: heartbeats, subscriptions, refusals.
            (
                r#"{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD"}"#,
                "heartbeat BTC-USD 20",
            ),
            (r#"{"type":"subscriptions","channels":[]}"#, "subscribed"),
            (
                r#"{"type":"error","message":"Failed to subscribe","reason":"X is not a valid product"}"#,
                "refused: Coinbase error: Failed to subscribe: X is not a valid product",
            ),
            // TC2: a ticker without a sequence (older ws-feed) is unnumbered.
            (r#"{"type":"ticker","product_id":"ETH-USD"}"#, "data"),
        ] {
            assert_eq!(classify(json, coinbase_control), want, "{json}");
        }
    }
}
