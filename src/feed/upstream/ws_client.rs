//! The WebSocket client of the upstream connectors: `ws://` over TCP and
//! `wss://` over rustls, with fastwebsockets' client handshake on a hyper
//! client connection (the same WebSocket library as the server side).
//!
//! TLS uses rustls with the `ring` provider and Mozilla's root certificates
//! compiled in (`webpki-roots`): the binary verifies an exchange the same
//! way on any host, a minimal container without a CA bundle included, and
//! no system configuration can quietly change whom it trusts. A venue
//! behind a TLS-inspecting proxy, or a private venue with its own CA, is
//! trusted by naming its CA certificates (`upstream_ca_file`, a PEM
//! bundle): the roots are then Mozilla's plus those, never the system's.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, WebSocketRead, WebSocketWrite};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

type Io = TokioIo<Upgraded>;

/// An open client WebSocket, in two halves so that a read can stay pending
/// while a ping or a pong is written (fastwebsockets' reads are not
/// cancel-safe: a read dropped halfway through a frame loses the framing).
/// Fragmented messages are reassembled, up to [`MAX_MESSAGE_BYTES`].
/// Nothing is answered on the caller's behalf: pings and close frames come
/// up to it.
pub struct ClientSocket {
    pub read: MessageRead<ReadHalf<Io>>,
    pub write: WebSocketWrite<WriteHalf<Io>>,
}

/// The largest message a venue may send, in one frame or in fragments
/// together. Venue messages are a few KB; a full-book snapshot (Coinbase
/// `level2`) runs to a few MB. Past it the connection fails (and is made
/// again, with back-off): fastwebsockets would otherwise take frames of up
/// to 64 MiB and fragments without end, and the JSON parse of such a
/// message costs many times its size.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Whole messages from a venue: data frames reassembled within
/// [`MAX_MESSAGE_BYTES`], control frames as they come.
pub struct MessageRead<S> {
    ws: WebSocketRead<S>,
    /// The opcode and bytes of a fragmented message so far.
    partial: Option<(OpCode, Vec<u8>)>,
}

impl<S: tokio::io::AsyncRead + Unpin> MessageRead<S> {
    fn new(mut ws: WebSocketRead<S>) -> Self {
        // fastwebsockets refuses a frame of `max` bytes or more.
        ws.set_max_message_size(MAX_MESSAGE_BYTES + 1);
        MessageRead { ws, partial: None }
    }

    /// The next whole message or control frame, owned (the library's frame
    /// borrows its read buffer). fastwebsockets has checked the UTF-8 of a
    /// text message in one frame; a reassembled one is checked here.
    pub async fn read_frame<R, E>(
        &mut self,
        send_fn: &mut impl FnMut(Frame<'_>) -> R,
    ) -> Result<Frame<'static>, WebSocketError>
    where
        R: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        loop {
            let frame = self.ws.read_frame(send_fn).await?;
            match frame.opcode {
                OpCode::Text | OpCode::Binary if self.partial.is_some() => {
                    return Err(WebSocketError::InvalidFragment);
                }
                OpCode::Text | OpCode::Binary if frame.fin => {
                    let data = frame.payload.to_vec();
                    return Ok(Frame::new(true, frame.opcode, None, Payload::Owned(data)));
                }
                OpCode::Text | OpCode::Binary => {
                    self.partial = Some((frame.opcode, frame.payload.to_vec()));
                }
                OpCode::Continuation => {
                    let Some((_, data)) = self.partial.as_mut() else {
                        return Err(WebSocketError::InvalidContinuationFrame);
                    };
                    if data.len() + frame.payload.len() > MAX_MESSAGE_BYTES {
                        return Err(WebSocketError::FrameTooLarge);
                    }
                    data.extend_from_slice(&frame.payload);
                    if !frame.fin {
                        continue;
                    }
                    let Some((opcode, data)) = self.partial.take() else {
                        continue;
                    };
                    if opcode == OpCode::Text && std::str::from_utf8(&data).is_err() {
                        return Err(WebSocketError::InvalidUTF8);
                    }
                    return Ok(Frame::new(true, opcode, None, Payload::Owned(data)));
                }
                // Control frames: at most 125 bytes by RFC 6455 §5.5, not
                // enforced for close frames by the library.
                opcode => {
                    let mut payload = frame.payload.to_vec();
                    payload.truncate(125);
                    return Ok(Frame::new(true, opcode, None, Payload::Owned(payload)));
                }
            }
        }
    }
}

/// Where to connect, taken apart from a `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, as sent in the request line.
    pub path_and_query: String,
}

impl Endpoint {
    /// Parses `ws://host[:port]/path?query` or `wss://...`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err("the URL must start with ws:// or wss://".into()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("the URL has no host")?;
        // An IPv6 literal is bracketed in the URL but not in a socket address
        // or a TLS server name.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(Endpoint {
            tls,
            host,
            port,
            path_and_query,
        })
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

/// Why a connection to an upstream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {host}:{port}: {source}")]
    Tcp {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("TLS with {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("cannot build the upgrade request: {0}")]
    Request(String),
    #[error("WebSocket handshake: {0}")]
    Handshake(#[from] WebSocketError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Opens a WebSocket to `endpoint` within `timeout`: TCP, TLS for `wss`,
/// then the HTTP upgrade. Pings and closes are left to the caller
/// (auto-pong and auto-close are off), so that it sees every ping as a sign
/// of life and answers it itself.
/// `wss` trusts the roots of `tls`.
pub async fn connect(
    endpoint: &Endpoint,
    tls: &UpstreamTls,
    timeout: Duration,
) -> Result<ClientSocket, ConnectError> {
    tokio::time::timeout(timeout, connect_inner(endpoint, tls))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

async fn connect_inner(
    endpoint: &Endpoint,
    tls: &UpstreamTls,
) -> Result<ClientSocket, ConnectError> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| ConnectError::Tcp {
            host: endpoint.host.clone(),
            port: endpoint.port,
            source,
        })?;
    // Market data is many small messages; Nagle would only delay our pongs.
    let _ = tcp.set_nodelay(true);
    let request = Request::builder()
        .method("GET")
        .uri(endpoint.path_and_query.as_str())
        .header(HOST, endpoint.host_header())
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ConnectError::Request(e.to_string()))?;
    let mut ws = if endpoint.tls {
        let tls_err = |reason: String| ConnectError::Tls {
            host: endpoint.host.clone(),
            reason,
        };
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| tls_err(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| tls_err(e.to_string()))?;
        fastwebsockets::handshake::client(&SpawnExecutor, request, tls)
            .await?
            .0
    } else {
        fastwebsockets::handshake::client(&SpawnExecutor, request, tcp)
            .await?
            .0
    };
    ws.set_auto_pong(false);
    ws.set_auto_close(false);
    let (read, write) = ws.split(tokio::io::split);
    Ok(ClientSocket {
        read: MessageRead::new(read),
        write,
    })
}

/// The TLS client configuration of upstream connections: Mozilla's roots
/// (`webpki-roots`) plus the CA certificates the operator added. Cheap to
/// clone; equal when it is the same configuration.
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
    /// CA certificates added to Mozilla's roots.
    extra_roots: usize,
}

impl UpstreamTls {
    /// The rustls configuration (for the REST snapshot's HTTPS too).
    pub(crate) fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// Mozilla's roots plus `extra`; an `extra` certificate that is not a
    /// usable trust anchor is an error.
    pub fn with_extra_roots(extra: Vec<CertificateDer<'static>>) -> Result<UpstreamTls, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let extra_roots = extra.len();
        for (i, cert) in extra.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|e| format!("certificate {} is not a usable CA: {e}", i + 1))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(UpstreamTls {
            config: Arc::new(config),
            extra_roots,
        })
    }

    /// Mozilla's roots plus every certificate in the PEM bundle at `path`
    /// (other PEM sections, such as keys, are ignored). A file that cannot
    /// be read, is not PEM, or holds no certificate is an error.
    pub fn from_pem_file(path: &Path) -> Result<UpstreamTls, String> {
        let err = |reason: String| format!("upstream_ca_file {}: {reason}", path.display());
        // Read first, so that a missing file says so (the PEM reader's error
        // would not).
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(err("no PEM CERTIFICATE in it".into()));
        }
        UpstreamTls::with_extra_roots(certs).map_err(err)
    }
}

impl Default for UpstreamTls {
    /// Mozilla's roots only, parsed once for the whole process.
    fn default() -> Self {
        static DEFAULT: OnceLock<UpstreamTls> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                UpstreamTls::with_extra_roots(Vec::new())
                    .expect("the ring provider supports the default TLS versions")
            })
            .clone()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("extra_roots", &self.extra_roots)
            .finish()
    }
}

/// Runs hyper's connection task (which carries the upgrade) on tokio.
struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        // TC0: wss with a port and a Binance combined-stream query.
        let e = Endpoint::parse(
            "wss://stream.binance.com:9443/stream?streams=btcusdt@bookTicker/btcusdt@trade",
        )
        .unwrap();
        assert!(e.tls);
        assert_eq!((e.host.as_str(), e.port), ("stream.binance.com", 9443));
        assert_eq!(
            e.path_and_query,
            "/stream?streams=btcusdt@bookTicker/btcusdt@trade"
        );
        assert_eq!(e.host_header(), "stream.binance.com:9443");
        // TC1: default ports and path.
        let e = Endpoint::parse("wss://ws-feed.exchange.coinbase.com").unwrap();
        assert_eq!((e.port, e.path_and_query.as_str()), (443, "/"));
        assert_eq!(e.host_header(), "ws-feed.exchange.coinbase.com");
        let e = Endpoint::parse("ws://127.0.0.1:9/x").unwrap();
        assert!(!e.tls);
        assert_eq!(e.host_header(), "127.0.0.1:9");
        // TC2: other schemes and junk are refused.
        for bad in ["http://x/", "wss://", "x", ""] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
