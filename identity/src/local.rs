//! A certifier backed by a CA in the same process: the control plane uses it
//! for its own serving certificate.

use std::sync::Arc;
use std::time::Duration;

use crate::ca::{Ca, Issued};
use crate::credentials::{Certifier, CertifyError};
use crate::spiffe::SpiffeId;

/// Signs CSRs for one identity with a local CA.
pub struct LocalCertifier {
    ca: Arc<Ca>,
    identity: SpiffeId,
    ttl: Duration,
}

impl LocalCertifier {
    pub fn new(ca: Arc<Ca>, identity: SpiffeId, ttl: Duration) -> Self {
        Self { ca, identity, ttl }
    }
}

impl Certifier for LocalCertifier {
    async fn certify(&self, csr_der: Vec<u8>) -> Result<Issued, CertifyError> {
        self.ca
            .sign_csr(&csr_der, &self.identity, self.ttl)
            .map_err(|e| CertifyError::Remote(e.to_string()))
    }
}
