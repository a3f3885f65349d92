//! HTTPS and wss on the server's one port: rustls with the `ring` provider,
//! and a certificate that can be replaced while the server runs.
//!
//! Every handshake asks [`CertStore`] for the current certificate, so a
//! reload (SIGHUP) applies to the next handshake and leaves established
//! connections as they are. A certificate or key that does not load keeps
//! the old pair in service.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::metrics::Metrics;

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} do not go together: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1) and checks that they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let certified =
        CertifiedKey::from_der(chain, der, &provider()).map_err(|e| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(certified))
}

/// The certificate in service and where it is reloaded from.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair once; the server does not start without it.
    pub fn open(cert_path: PathBuf, key_path: PathBuf) -> Result<CertStore, TlsError> {
        let current = RwLock::new(load(&cert_path, &key_path)?);
        Ok(CertStore {
            cert_path,
            key_path,
            current,
        })
    }

    /// Loads the files again and puts the new pair in service; on failure
    /// logs why, counts it, and keeps the old pair.
    pub fn reload(&self, metrics: &Metrics) -> Result<(), TlsError> {
        match load(&self.cert_path, &self.key_path) {
            Ok(new) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
                metrics.tls_reloads_total.inc();
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                metrics.tls_reload_failures_total.inc();
                tracing::error!("TLS reload failed, keeping the certificate in service: {e}");
                Err(e)
            }
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// rustls asks this for the certificate on every handshake.
#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// The rustls server configuration: TLS 1.2 and 1.3, HTTP/1.1 over ALPN,
/// certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
