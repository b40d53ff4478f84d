//! rustls configurations for mesh connections: TLS 1.3 only, mutual, with the
//! workload's current SVID and the SVID verifiers.

use std::sync::{Arc, Mutex, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};
use tokio::sync::watch;

use crate::bundle::TrustBundle;
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
    cfg.session_storage = Arc::new(BundleScopedSessions::new(store.subscribe_bundle()));
    Ok(Arc::new(cfg))
}

/// Sessions a server remembers for resumption, as rustls' default, but
/// forgotten when the trust bundle changes: a resumed session skips
/// certificate verification, so one established under a root that was
/// since removed (a finished rotation) must not be resumed.
#[derive(Debug)]
struct BundleScopedSessions {
    bundle: Mutex<watch::Receiver<TrustBundle>>,
    cache: RwLock<Arc<ServerSessionMemoryCache>>,
}

/// rustls' default size of the server session cache.
const SERVER_SESSIONS: usize = 256;

impl BundleScopedSessions {
    fn new(bundle: watch::Receiver<TrustBundle>) -> Self {
        Self {
            bundle: Mutex::new(bundle),
            cache: RwLock::new(ServerSessionMemoryCache::new(SERVER_SESSIONS)),
        }
    }

    fn current(&self) -> Arc<ServerSessionMemoryCache> {
        if let Ok(mut rx) = self.bundle.lock()
            && rx.has_changed().unwrap_or(false)
        {
            rx.borrow_and_update();
            if let Ok(mut cache) = self.cache.write() {
                *cache = ServerSessionMemoryCache::new(SERVER_SESSIONS);
            }
        }
        match self.cache.read() {
            Ok(c) => c.clone(),
            // A poisoned lock: an empty cache resumes nothing, which is safe.
            Err(_) => ServerSessionMemoryCache::new(1),
        }
    }
}

impl StoresServerSessions for BundleScopedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.current().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
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
    Ok(Arc::new(cfg))
}

/// The SNI sent on mesh connections. SVIDs carry no DNS name; the peer's
/// identity is checked by SPIFFE ID, so SNI is a fixed name.
pub const MESH_SERVER_NAME: &str = "mesh.palisade.internal";

pub fn mesh_server_name() -> rustls_pki_types::ServerName<'static> {
    #[allow(clippy::expect_used)]
    rustls_pki_types::ServerName::try_from(MESH_SERVER_NAME).expect("constant is a valid DNS name")
}
