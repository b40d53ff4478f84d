//! A test mesh client: real TLS 1.3 to a proxy's inbound, presenting a
//! certificate of the test's choosing (or none).

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_identity::verify::SvidServerVerifier;
use mesh_identity::{SpiffeId, TrustBundle};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a client saw when it tried to use the mesh.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handshake failed on our side (e.g. the server is not who we expected).
    ClientRefused(String),
    /// The connection was closed or reset with no data after the handshake
    /// (the server refused us).
    ServerRefused,
    /// Data came back.
    Data(Vec<u8>),
}

/// Connects to `inbound` with ALPN `palisade/tcp1`, expecting the server to be
/// `server_id`; presents `client` (chain, PKCS#8 key) if given; sends the
/// preamble for `target_port` and `payload`, and reports what happened.
pub async fn mesh_connect(
    inbound: SocketAddr,
    bundle: &TrustBundle,
    server_id: &str,
    client: Option<(Vec<CertificateDer<'static>>, Vec<u8>)>,
    target_port: u16,
    payload: &[u8],
) -> Outcome {
    let provider = mesh_identity::tls::provider();
    let (_tx, rx) = tokio::sync::watch::channel(bundle.clone());
    let verifier =
        SvidServerVerifier::new(rx, SpiffeId::parse(server_id).unwrap(), provider.clone());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut cfg = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![mesh_identity::tls::ALPN_TCP.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(inbound).await.unwrap();
    let mut tls = match connector
        .connect(mesh_identity::tls::mesh_server_name(), tcp)
        .await
    {
        Ok(t) => t,
        Err(e) => return Outcome::ClientRefused(e.to_string()),
    };
    // The `palisade/tcp1` preamble, written from docs/wire.md rather than
    // from the proxy's code, so the test checks the documented format.
    let mut msg = b"PAL\x01".to_vec();
    msg.extend_from_slice(&target_port.to_be_bytes());
    msg.extend_from_slice(payload);
    if tls.write_all(&msg).await.is_err() {
        return Outcome::ServerRefused;
    }
    let _ = tls.shutdown().await;
    let mut out = Vec::new();
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut out),
    )
    .await
    {
        Ok(Ok(_)) if !out.is_empty() => Outcome::Data(out),
        Ok(_) => Outcome::ServerRefused,
        Err(_) => panic!("no answer from {inbound} within 10s"),
    }
}
