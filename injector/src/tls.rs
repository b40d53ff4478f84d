//! The webhook's TLS identity, read from PEM files and read again when they
//! change: cert-manager (or a new `meshctl install`) replaces the Secret,
//! the kubelet updates the mounted files, and the next handshakes use the
//! new certificate without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The files are looked at no more often than this: a stat per handshake
/// would cost little, but the API server opens connections in bursts.
pub const DEFAULT_RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why the TLS identity cannot be loaded. Names files, never their content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {message}")]
    Cert { path: String, message: String },
    #[error("--tls-key {path}: {message}")]
    Key { path: String, message: String },
    #[error("the certificate and key do not form a TLS identity: {0}")]
    Config(String),
}

/// A TLS 1.2/1.3 server configuration (the API server speaks both) whose
/// certificate follows the files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let identity = Reloading::new(cert, key, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(identity));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Modification times of the two files: a change of either reloads both.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

struct Current {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
    checked: Instant,
}

/// The certificate in force, and where it comes from.
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            message: "no certificate in the file".to_owned(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: format!("no usable private key ({})", pem_reason(&e)),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|_| TlsError::Key {
            path: key.display().to_string(),
            message: "the key's algorithm is not supported".to_owned(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(certified))
}

fn pem_reason(e: &rustls_pki_types::pem::Error) -> &'static str {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM private key block",
        rustls_pki_types::pem::Error::Io(_) => "cannot read the file",
        _ => "malformed PEM",
    }
}

impl Reloading {
    pub fn new(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamp = stamp(cert, key);
        let loaded = load(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: Mutex::new(Current {
                key: loaded,
                stamp,
                checked: Instant::now(),
            }),
        })
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        if current.checked.elapsed() >= DEFAULT_RELOAD_CHECK {
            current.checked = Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now != current.stamp {
                // A half-written pair (new certificate, old key) fails to
                // load: the old identity stays until both files agree.
                match load(&self.cert, &self.key, &self.provider) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                        current.key = key;
                        current.stamp = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook certificate not reloaded; keeping the previous one")
                    }
                }
            }
        }
        Some(current.key.clone())
    }
}
