//! The trust bundle: the set of roots every mesh certificate must chain to.
//! It may hold several roots, so a root can be rotated with overlap.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

/// Why a trust bundle is unusable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BundleError {
    #[error("trust bundle is empty")]
    Empty,
    #[error("trust bundle has a certificate that is not a usable root: {0}")]
    BadRoot(String),
    #[error("trust bundle is not valid PEM: {0}")]
    Pem(String),
}

/// An immutable, cheaply cloned set of trusted roots.
#[derive(Clone)]
pub struct TrustBundle {
    inner: Arc<Inner>,
}

struct Inner {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.inner.roots.len())
            .finish()
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.inner.roots == other.inner.roots
    }
}

impl TrustBundle {
    /// A bundle of DER roots.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Result<Self, BundleError> {
        if roots.is_empty() {
            return Err(BundleError::Empty);
        }
        let anchors = roots
            .iter()
            .map(|r| {
                webpki::anchor_from_trusted_cert(r)
                    .map(|a| a.to_owned())
                    .map_err(|e| BundleError::BadRoot(format!("{e:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner { roots, anchors }),
        })
    }

    /// A bundle from PEM text (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem: &[u8]) -> Result<Self, BundleError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BundleError::Pem(e.to_string()))?;
        Self::new(roots)
    }

    /// The roots as PEM text.
    pub fn to_pem(&self) -> String {
        self.inner.roots.iter().map(|r| der_to_pem(r)).collect()
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.inner.roots
    }

    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.inner.anchors
    }

    pub fn len(&self) -> usize {
        self.inner.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.roots.is_empty()
    }
}

/// PEM-encodes one DER certificate.
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
