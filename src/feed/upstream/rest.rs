//! The REST depth snapshot a live Binance book is synchronized to
//! (`feed::venue::binance`'s depth sync): one `GET` per book that waits for
//! one, over HTTPS with the same trust as the venue's WebSocket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::ws_client::{Endpoint, UpstreamTls};
use super::Connector;
use crate::feed::normalize::{Emitter, Reason};
use crate::feed::venue::binance;
use crate::update::SymbolId;

/// The largest snapshot read: Binance's deepest (5,000 levels a side) is
/// about 300 KB.
const MAX_SNAPSHOT_BYTES: usize = 16 << 20;

/// Levels asked for: Binance's most for spot is 5,000, for futures 1,000.
const LIMIT: u32 = 1_000;

/// The venue's public depth endpoint for a Binance WebSocket endpoint:
/// spot, USD-M or COIN-M by the stream host; `None` for a host that is not
/// Binance's (a test venue, a testnet: say `--upstream-rest-url`).
pub fn default_url(ws: &Endpoint) -> Option<String> {
    let host = ws.host.as_str();
    let url = if host.starts_with("fstream") && host.ends_with(".binance.com") {
        "https://fapi.binance.com/fapi/v1/depth"
    } else if host.starts_with("dstream") && host.ends_with(".binance.com") {
        "https://dapi.binance.com/dapi/v1/depth"
    } else if host.ends_with(".binance.com") {
        "https://api.binance.com/api/v3/depth"
    } else {
        return None;
    };
    Some(url.to_owned())
}

/// Fetches `url?symbol=SYMBOL&limit=1000` within `timeout`: the body of a
/// `200`, or why not.
pub async fn fetch(
    url: &str,
    symbol: &str,
    tls: &UpstreamTls,
    timeout: Duration,
) -> Result<Bytes, String> {
    tokio::time::timeout(timeout, fetch_inner(url, symbol, tls))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn fetch_inner(url: &str, symbol: &str, tls: &UpstreamTls) -> Result<Bytes, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(format!(
                "{url:?}: the URL must start with http:// or https://"
            ))
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let sep = if uri.query().is_some() { '&' } else { '?' };
    let path = format!(
        "{}{sep}symbol={symbol}&limit={LIMIT}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let request = Request::builder()
        .method("GET")
        .uri(path)
        .header(
            HOST,
            uri.authority().map_or(host.clone(), |a| a.to_string()),
        )
        .header("accept", "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls.config()));
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        send(TokioIo::new(stream), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<T>(io: T, request: Request<Empty<Bytes>>) -> Result<Bytes, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_SNAPSHOT_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the snapshot: {e}"))?
        .to_bytes();
    conn.abort();
    if !status.is_success() {
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("HTTP {status}: {shown}"));
    }
    Ok(body)
}

/// A book's REST snapshot requests.
pub(super) struct Fetch {
    in_flight: bool,
    /// Not asked for again before this.
    next: Instant,
    /// The wait after the next failure.
    delay: Duration,
}

const FETCH_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const FETCH_BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Connector {
    /// Starts a REST snapshot fetch for every book that waits for one and
    /// has none on the way, each at most once per its backoff (1 s,
    /// doubling to 30 s after failures: the venue weighs depth requests).
    pub(super) fn ask_for_snapshots(
        &mut self,
        snapshots: &mut JoinSet<(SymbolId, Result<Bytes, String>)>,
    ) {
        let Some(url) = &self.spec.rest_url else {
            return;
        };
        let now = Instant::now();
        for id in binance::books_waiting(&mut self.books) {
            let fetch = self.fetches.entry(id).or_insert(Fetch {
                in_flight: false,
                next: now,
                delay: FETCH_BACKOFF_INITIAL,
            });
            if fetch.in_flight || now < fetch.next {
                continue;
            }
            let Some(def) = self.normalizer.table().get(id) else {
                continue;
            };
            fetch.in_flight = true;
            let (url, tls) = (url.clone(), self.spec.tls.clone());
            let timeout = self.spec.timing.silence_timeout;
            snapshots.spawn(async move {
                let body = self::fetch(&url, &def.name, &tls, timeout).await;
                (id, body)
            });
        }
    }

    /// Applies a fetched snapshot (or notes why there is none, to ask again
    /// later); false if the publisher is gone.
    pub(super) async fn depth_snapshot(
        &mut self,
        id: SymbolId,
        body: Result<Bytes, String>,
    ) -> bool {
        let Some(fetch) = self.fetches.get_mut(&id) else {
            return true;
        };
        fetch.in_flight = false;
        let name = self.normalizer.table().get(id).map(|d| d.name.to_string());
        let Some(name) = name else {
            return true;
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                fetch.next = Instant::now() + fetch.delay;
                fetch.delay = (fetch.delay * 2).min(FETCH_BACKOFF_MAX);
                self.stats.snapshot_failures.inc();
                tracing::warn!(feed = %self.spec.spec, "depth snapshot of {name}: {e}");
                return true;
            }
        };
        fetch.delay = FETCH_BACKOFF_INITIAL;
        // A snapshot that does not sync (older than the diffs kept) leaves
        // the book waiting: the next one comes no sooner than this.
        fetch.next = Instant::now() + FETCH_BACKOFF_INITIAL;
        self.stats.records.inc();
        let mut buf = body.to_vec();
        let value = match crate::json::parse(&mut buf) {
            Ok(value) => value,
            Err(e) => {
                self.reject(Reason::Json, &e);
                return true;
            }
        };
        self.out.clear();
        let mut emit = Emitter {
            normalizer: &mut self.normalizer,
            books: &mut self.books,
            receive_ts_ns: None,
            out: &mut self.out,
        };
        match binance::depth_snapshot(&value, Some(&name), &mut emit) {
            Ok(_) => self.publish_normalized(false).await,
            Err(e) => {
                self.reject(e.reason(), &e);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_urls_follow_the_stream_host() {
        let url = |ws: &str| default_url(&Endpoint::parse(ws).unwrap());
        assert_eq!(
            url("wss://stream.binance.com:9443/stream?streams=btcusdt@depth").as_deref(),
            Some("https://api.binance.com/api/v3/depth")
        );
        assert_eq!(
            url("wss://fstream.binance.com/stream").as_deref(),
            Some("https://fapi.binance.com/fapi/v1/depth")
        );
        assert_eq!(
            url("wss://dstream.binance.com/ws").as_deref(),
            Some("https://dapi.binance.com/dapi/v1/depth")
        );
        assert_eq!(url("ws://127.0.0.1:9/stream"), None);
    }
}
