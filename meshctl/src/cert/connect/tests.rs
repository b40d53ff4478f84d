use std::sync::Arc;
use std::time::Duration;

use mesh_identity::testing::{LeafSpec, TestCa};
use mesh_identity::verify::SvidClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::cert::testing::{API, Mesh};
use crate::cert::{InspectOptions, Source, inspect};

const QUICK: Duration = Duration::from_secs(5);

/// What the test server saw from its one client: the handshake's outcome and
/// how many application bytes arrived afterwards.
type Seen = Result<usize, std::io::Error>;

/// A real mesh port: TLS 1.3 only, presenting `chain`, verifying clients
/// with the mesh's own verifier. Serves one connection.
async fn mesh_port(
    mesh: &Mesh,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    client_auth_mandatory: bool,
    alpn: &[&[u8]],
) -> (String, JoinHandle<Seen>) {
    let provider = mesh_identity::tls::provider();
    let (_bundle_tx, bundle_rx) = tokio::sync::watch::channel(mesh.bundle.clone());
    let verifier = SvidClientVerifier::new(
        bundle_rx,
        "cluster.local",
        client_auth_mandatory,
        provider.clone(),
    );
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut received = Vec::new();
        // Ends when meshctl closes the connection.
        let _ = tls.read_to_end(&mut received).await;
        Ok(received.len())
    });
    (addr, task)
}

/// A plain TCP server that answers the first connection with `reply`.
async fn plain_port(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 512];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp.write_all(reply).await;
    });
    addr
}

#[tokio::test]
async fn captures_the_chain_from_a_port_that_requires_client_certificates() {
    let mesh = Mesh::new();
    let (chain, key) = mesh.chain(&LeafSpec::svid(API));
    let (addr, server) = mesh_port(&mesh, chain.clone(), key, true, &[ALPN_TCP]).await;

    let presented = presented_chain(&addr, QUICK).await.unwrap();
    assert_eq!(presented, chain);
    // The peer refused us for lacking a client certificate; the chain had
    // already been captured by then.
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn sends_no_application_data() {
    let mesh = Mesh::new();
    let (chain, key) = mesh.chain(&LeafSpec::svid(API));
    // Client certificates optional, so the handshake completes on both sides.
    let (addr, server) = mesh_port(&mesh, chain.clone(), key, false, &[ALPN_H2]).await;

    assert_eq!(presented_chain(&addr, QUICK).await.unwrap(), chain);
    assert_eq!(server.await.unwrap().unwrap(), 0);
}

#[tokio::test]
async fn inspect_verifies_against_the_trust_bundle() {
    let mesh = Mesh::new();
    let (chain, key) = mesh.chain(&LeafSpec::svid(API));
    let (addr, _server) = mesh_port(&mesh, chain, key, true, &[ALPN_TCP]).await;
    let opts = InspectOptions {
        source: Source::Connect(addr),
        trust_bundle: Some(mesh.bundle_path.clone()),
        timeout: QUICK,
    };
    let report = inspect(&opts).await.unwrap();
    assert_eq!(report.identity.as_deref(), Ok(API));
    assert_eq!(report.verified(), Some(true));
    assert_eq!(report.issuers.len(), 1);

    // The same kind of port, judged against another mesh's roots: a root
    // with the same name but a different key, as two control planes have.
    let other = Mesh::new();
    let (chain, key) = mesh.chain(&LeafSpec::svid(API));
    let (addr, _server) = mesh_port(&mesh, chain, key, true, &[ALPN_TCP]).await;
    let opts = InspectOptions {
        source: Source::Connect(addr),
        trust_bundle: Some(other.bundle_path.clone()),
        timeout: QUICK,
    };
    let report = inspect(&opts).await.unwrap();
    assert_eq!(report.verified(), Some(false));
    let why = report.verification.unwrap().result.unwrap_err();
    assert!(why.contains("a different key"), "{why}");
}

#[tokio::test]
async fn a_foreign_certificate_is_still_shown() {
    // Inspection is for finding out what is wrong: a port presenting a
    // certificate from an unrelated CA is reported, not refused.
    let mesh = Mesh::new();
    let stranger = TestCa::new("not the mesh");
    let (leaf, key) = stranger.sign(&LeafSpec::svid(API));
    let (addr, _server) = mesh_port(&mesh, vec![leaf.clone()], key, true, &[ALPN_TCP]).await;
    assert_eq!(presented_chain(&addr, QUICK).await.unwrap(), vec![leaf]);
}

#[tokio::test]
async fn failures_before_the_certificate_are_errors() {
    // ALPN the mesh never speaks: the server refuses us before its certificate.
    let mesh = Mesh::new();
    let (chain, key) = mesh.chain(&LeafSpec::svid(API));
    let (addr, _server) = mesh_port(&mesh, chain, key, true, &[b"other/1"]).await;
    let err = presented_chain(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, ConnectError::Handshake { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("before it presented a certificate"),
        "{err}"
    );

    // Not TLS at all.
    let addr = plain_port(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    let err = presented_chain(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, ConnectError::Handshake { .. }), "{err}");
}

#[tokio::test]
async fn silence_refusal_and_bad_addresses() {
    // Accepts TCP and never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let err = presented_chain(&addr, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
    drop(listener);

    let err = presented_chain(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, ConnectError::Tcp { .. }), "{err}");

    for addr in ["nope", "host:", ":4143", "host:0", "host:70000", "10.0.0.1"] {
        let err = presented_chain(addr, QUICK).await.unwrap_err();
        assert!(matches!(err, ConnectError::Addr { .. }), "{addr}: {err}");
    }
}
