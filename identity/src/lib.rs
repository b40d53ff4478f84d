//! Palisade workload identity: SPIFFE IDs, the CA, X.509-SVID verification,
//! rustls configs and the credential store.

pub mod bundle;
pub mod ca;
pub mod credentials;
pub mod duration;
pub mod local;
pub mod secret;
pub mod spiffe;
pub mod tls;
pub mod token;
pub mod verify;

#[cfg(any(test, feature = "testing"))]
#[allow(clippy::expect_used, clippy::unwrap_used)]
pub mod testing;

pub use bundle::TrustBundle;
pub use ca::{Ca, CaError, CsrRefusal, Issued};
pub use credentials::{Certifier, CertifyError, Credentials, Store};
pub use spiffe::{DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError};
pub use verify::VerifyError;

/// The control plane's own SPIFFE ID in `trust_domain`.
pub fn control_plane_identity(trust_domain: &str) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::workload(trust_domain, "mesh-system", "mesh-control-plane")
}
