//! rustls configurations for mesh connections: TLS 1.3 only, mutual, with the
//! workload's current SVID and the SVID verifiers.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};
use tokio::sync::watch;

use crate::credentials::{Credentials, Store};
use crate::spiffe::SpiffeId;
use crate::verify::{SvidClientVerifier, SvidServerVerifier};

/// ALPN of an opaque TCP connection between proxies (see docs/wire.md).
pub const ALPN_TCP: &[u8] = b"palisade/tcp1";
/// ALPN of the pooled HTTP/2 connections between proxies (see docs/wire.md).
pub const ALPN_MESH_H2: &[u8] = b"palisade/h2";
/// ALPN of gRPC to the control plane.
pub const ALPN_H2: &[u8] = b"h2";

/// The one crypto provider: rustls on aws-lc-rs, preferring the hybrid
/// post-quantum key exchange X25519MLKEM768 (a recorded session cannot be
/// decrypted later by a quantum computer), with X25519 and P-256 for peers
/// that do not offer it.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::kx_group;
    provider_with_groups(vec![
        kx_group::X25519MLKEM768,
        kx_group::X25519,
        kx_group::SECP256R1,
    ])
}

/// The provider with only classical X25519 key exchange: for measuring what
/// the post-quantum group costs, not for the mesh.
pub fn provider_x25519_only() -> Arc<CryptoProvider> {
    provider_with_groups(vec![rustls::crypto::aws_lc_rs::kx_group::X25519])
}

fn provider_with_groups(
    kx_groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups,
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// Presents whatever certificate the store holds now, so renewals apply to
/// new handshakes without rebuilding configs.
#[derive(Debug)]
pub struct CurrentCertificate {
    creds: watch::Receiver<Option<Arc<Credentials>>>,
}

impl CurrentCertificate {
    pub fn new(creds: watch::Receiver<Option<Arc<Credentials>>>) -> Self {
        Self { creds }
    }

    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.creds
            .borrow()
            .as_ref()
            .map(|c| c.certified_key.clone())
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        self.creds.borrow().is_some()
    }
}

/// Server config for a mesh listener. `client_auth_mandatory`: refuse
/// clients without an SVID (the proxy inbound); the control plane admits them
/// so that workloads without a certificate yet can ask for one.
pub fn server_config(
    store: &Store,
    client_auth_mandatory: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = store.provider().clone();
    let verifier = SvidClientVerifier::new(
        store.subscribe_bundle(),
        store.identity().trust_domain(),
        client_auth_mandatory,
        provider.clone(),
    );
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(CurrentCertificate::new(store.subscribe())));
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    no_resumption_server(&mut cfg);
    Ok(Arc::new(cfg))
}

/// Client config for connections to a peer that must be `expected`,
/// presenting the store's current certificate (none before certification).
pub fn client_config(
    store: &Store,
    expected: SpiffeId,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = store.provider().clone();
    let verifier = SvidServerVerifier::new(store.subscribe_bundle(), expected, provider.clone());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(CurrentCertificate::new(store.subscribe())));
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// No TLS session resumption on mesh connections, either side. A resumed
/// session skips certificate verification: a peer whose certificate has
/// expired, or whose root a rotation removed, would go on being admitted
/// under the identity it once proved. Every mesh handshake verifies the
/// chain; HTTP rides pooled connections, so that costs a handshake per
/// pooled connection, not per request.
fn no_resumption_server(cfg: &mut ServerConfig) {
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
}

/// The SNI sent on mesh connections. SVIDs carry no DNS name; the peer's
/// identity is checked by SPIFFE ID, so SNI is a fixed name.
pub const MESH_SERVER_NAME: &str = "mesh.palisade.internal";

pub fn mesh_server_name() -> rustls_pki_types::ServerName<'static> {
    #[allow(clippy::expect_used)]
    rustls_pki_types::ServerName::try_from(MESH_SERVER_NAME).expect("constant is a valid DNS name")
}
