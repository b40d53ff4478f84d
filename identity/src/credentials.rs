//! The workload's credentials: an in-memory key, its X.509-SVID and the trust
//! bundle, published through `watch` channels so TLS configs pick up new
//! certificates for new handshakes while open connections carry on.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SecureRandom;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio::sync::watch;

use crate::bundle::TrustBundle;
use crate::ca::Issued;
use crate::spiffe::SpiffeId;
use crate::verify::{self, Usage, VerifyError};

/// Renew at this fraction of the certificate's lifetime ...
const RENEW_AT_FRACTION: f64 = 0.5;
/// ... plus or minus this much, so a fleet started together does not renew together.
const RENEW_JITTER_FRACTION: f64 = 0.1;
/// First retry delay after a failed renewal; doubled on each failure.
const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay: short enough to renew well before a one-minute certificate ends.
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Why obtaining a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("could not create key or CSR: {0}")]
    Key(String),
    #[error("control plane refused or failed: {0}")]
    Remote(String),
    #[error("issued certificate is unusable: {0}")]
    BadIssued(String),
    #[error("issued certificate is for {got}, expected {expected}")]
    WrongIdentity { expected: String, got: String },
    #[error("issued certificate does not verify: {0}")]
    Verify(#[from] VerifyError),
}

/// Something that turns a CSR into a certificate: the control plane's
/// `Identity.Certify` for proxies, the local CA for the control plane itself.
pub trait Certifier: Send + Sync + 'static {
    fn certify(
        &self,
        csr_der: Vec<u8>,
    ) -> impl Future<Output = Result<Issued, CertifyError>> + Send;
}

/// A certificate with its key, ready for TLS.
pub struct Credentials {
    pub identity: SpiffeId,
    pub leaf: CertificateDer<'static>,
    pub intermediates: Vec<CertificateDer<'static>>,
    pub certified_key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When this certificate was received; renewal is timed from here.
    pub received_at: SystemTime,
    /// Serial number, lowercase hex.
    pub serial: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Credentials")
            .field("identity", &self.identity.as_str())
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// True while the certificate is within its validity period.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now >= self.not_before && now < self.not_after
    }

    /// When renewal should start: about half-way through the lifetime, with jitter.
    pub fn renew_at(&self, jitter: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.received_at)
            .unwrap_or_default();
        let frac = RENEW_AT_FRACTION + RENEW_JITTER_FRACTION * jitter.clamp(-1.0, 1.0);
        self.received_at + life.mul_f64(frac)
    }
}

/// Publishes the workload's current credentials and trust bundle.
pub struct Store {
    identity: SpiffeId,
    provider: Arc<CryptoProvider>,
    creds: watch::Sender<Option<Arc<Credentials>>>,
    bundle: watch::Sender<TrustBundle>,
    renew_now: tokio::sync::Notify,
}

impl Store {
    /// A store for `identity`, trusting `bundle` until certification brings another.
    pub fn new(identity: SpiffeId, bundle: TrustBundle, provider: Arc<CryptoProvider>) -> Self {
        Self {
            identity,
            provider,
            creds: watch::channel(None).0,
            bundle: watch::channel(bundle).0,
            renew_now: tokio::sync::Notify::new(),
        }
    }

    /// The CA generation of what this store holds (its bundle and the issuer
    /// of its certificate; see [`crate::ca::generation`]), once certified.
    pub fn generation(&self) -> Option<String> {
        let creds = self.current()?;
        Some(crate::ca::generation(
            &self.bundle.borrow(),
            creds.intermediates.first().map(|c| c.as_ref()),
        ))
    }

    /// Asks the renewal loop to renew now rather than at the usual point:
    /// the CA published another bundle or switched its issuer.
    pub fn request_renewal(&self) {
        self.renew_now.notify_one();
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.creds.borrow().clone()
    }

    pub fn current_bundle(&self) -> TrustBundle {
        self.bundle.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Credentials>>> {
        self.creds.subscribe()
    }

    pub fn subscribe_bundle(&self) -> watch::Receiver<TrustBundle> {
        self.bundle.subscribe()
    }

    /// Generates a new key, asks `certifier` for a certificate, checks it and
    /// publishes it. On error the current credentials stay in force.
    pub async fn certify_once<C: Certifier>(
        &self,
        certifier: &C,
    ) -> Result<Arc<Credentials>, CertifyError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertifyError::Key(e.to_string()))?;
        let csr = csr_for(&self.identity, &key)?;
        let issued = certifier.certify(csr).await?;
        self.accept(issued, &key)
    }

    fn accept(&self, issued: Issued, key: &KeyPair) -> Result<Arc<Credentials>, CertifyError> {
        let now = SystemTime::now();
        let id = verify::verify_svid(
            &issued.leaf,
            &issued.intermediates,
            &issued.bundle,
            self.identity.trust_domain(),
            Usage::Client,
            UnixTime::now(),
            &self.provider.signature_verification_algorithms,
        )?;
        if id != self.identity {
            return Err(CertifyError::WrongIdentity {
                expected: self.identity.to_string(),
                got: id.to_string(),
            });
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(&issued.leaf)
            .map_err(|_| CertifyError::BadIssued("unparsable leaf".into()))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertifyError::BadIssued(
                "certificate is not for the key in our CSR".into(),
            ));
        }
        let not_before = to_system(parsed.validity().not_before.timestamp());
        let not_after = to_system(parsed.validity().not_after.timestamp());
        let serial = parsed.raw_serial_as_string().replace(':', "");
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .map_err(|e| CertifyError::Key(e.to_string()))?;
        let mut chain = Vec::with_capacity(1 + issued.intermediates.len());
        chain.push(issued.leaf.clone());
        chain.extend(issued.intermediates.iter().cloned());
        let creds = Arc::new(Credentials {
            identity: id,
            leaf: issued.leaf,
            intermediates: issued.intermediates,
            certified_key: Arc::new(CertifiedKey::new(chain, signing_key)),
            not_before,
            not_after,
            received_at: now,
            serial,
        });
        // Bundle first, so a peer certificate from a new root verifies by the
        // time our own new certificate is presented.
        self.bundle.send_if_modified(|b| {
            if *b != issued.bundle {
                *b = issued.bundle.clone();
                true
            } else {
                false
            }
        });
        self.creds.send_replace(Some(creds.clone()));
        Ok(creds)
    }

    /// Keeps the credentials fresh forever: renews at about half the lifetime
    /// (with jitter); on failure retries with exponential backoff while the
    /// current certificate stays in force.
    pub async fn run_renewal<C: Certifier>(&self, certifier: C) {
        let mut backoff = DEFAULT_BACKOFF_MIN;
        loop {
            if let Some(current) = self.current() {
                let at = current.renew_at(jitter());
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.renew_now.notified() => {
                        tracing::info!("renewing now: the CA's bundle or issuer changed");
                    }
                }
            }
            match self.certify_once(&certifier).await {
                Ok(c) => {
                    tracing::info!(identity = %c.identity, serial = %c.serial, "certificate renewed");
                    backoff = DEFAULT_BACKOFF_MIN;
                }
                Err(e) => {
                    let left = self
                        .current()
                        .and_then(|c| c.not_after.duration_since(SystemTime::now()).ok());
                    match left {
                        Some(left) => {
                            tracing::warn!(error = %e, retry_in = ?backoff, valid_for = ?left, "certificate renewal failed; keeping current certificate")
                        }
                        None => {
                            tracing::warn!(error = %e, retry_in = ?backoff, "no valid certificate yet; retrying")
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(DEFAULT_BACKOFF_MAX);
                    // Retry after the backoff, not at the next renewal point.
                    continue_retrying(self, &certifier, &mut backoff).await;
                }
            }
        }
    }
}

async fn continue_retrying<C: Certifier>(store: &Store, certifier: &C, backoff: &mut Duration) {
    while let Err(e) = store.certify_once(certifier).await {
        tracing::warn!(error = %e, retry_in = ?*backoff, "certificate renewal failed");
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(DEFAULT_BACKOFF_MAX);
    }
    *backoff = DEFAULT_BACKOFF_MIN;
}

/// A CSR for `identity` signed by `key`.
pub fn csr_for(identity: &SpiffeId, key: &KeyPair) -> Result<Vec<u8>, CertifyError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names =
        vec![SanType::URI(identity.as_str().try_into().map_err(
            |_| CertifyError::Key("identity is not an IA5 string".into()),
        )?)];
    let csr = params
        .serialize_request(key)
        .map_err(|e| CertifyError::Key(e.to_string()))?;
    Ok(csr.der().to_vec())
}

/// A number in [-1, 1] for renewal jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if aws_lc_rs::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) * 2.0 - 1.0
}

fn to_system(ts: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).unwrap_or(0))
}
