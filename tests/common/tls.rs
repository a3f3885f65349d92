//! TLS test helpers: a self-signed certificate made at run time (rcgen),
//! and rustls clients that trust only it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::Connector;

use super::Ws;

/// How long a TLS or wss handshake may take: a server that never answers
/// fails the test instead of hanging it.
const HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A certificate for `localhost` and its key, in PEM and (the certificate)
/// in DER.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

pub fn self_signed() -> TestCert {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    TestCert {
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// Writes the pair as `cert.pem` and `key.pem` in `dir`, replacing what is
/// there.
pub fn write_pair(dir: &Path, c: &TestCert) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &c.cert_pem).unwrap();
    std::fs::write(&key, &c.key_pem).unwrap();
    (cert, key)
}

/// A client configuration that trusts `cert` only.
pub fn client_config(cert: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS server side presenting `c` (a fake upstream venue over wss).
pub fn acceptor(c: &TestCert) -> TlsAcceptor {
    let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![c.der.clone()], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// A TLS connection to `addr`; an error (`TimedOut` if the handshake has
/// not finished within 10 s).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let connect = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(config).connect(name, tcp).await
    };
    tokio::time::timeout(HANDSHAKE_LIMIT, connect)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// The end-entity certificate the server presents to a new connection.
pub async fn presented_cert(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<CertificateDer<'static>> {
    let tls = tls_connect(addr, config).await?;
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().unwrap()[0].clone())
}

/// A WebSocket handshake over TLS: `request`'s URL is wss://localhost:PORT/...
pub async fn wss_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    request: Request,
) -> Result<(Ws, Response), tokio_tungstenite::tungstenite::Error> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let handshake = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        None,
        Some(Connector::Rustls(config)),
    );
    match tokio::time::timeout(HANDSHAKE_LIMIT, handshake).await {
        Ok(result) => result,
        Err(_) => panic!("no wss handshake within {HANDSHAKE_LIMIT:?}"),
    }
}

/// GET `path` over HTTPS; returns (status, head and body).
pub async fn https_get(addr: SocketAddr, config: Arc<ClientConfig>, path: &str) -> (u16, String) {
    let s = tls_connect(addr, config).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    super::exchange(s, &req).await
}
