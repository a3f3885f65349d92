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

use super::ws_client::{Endpoint, UpstreamTls};

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
