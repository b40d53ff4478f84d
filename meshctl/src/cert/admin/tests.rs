use std::time::Duration;

use mesh_identity::bundle::der_to_pem;
use mesh_identity::testing::LeafSpec;
use tokio::net::TcpListener;

use super::*;
use crate::cert::testing::{API, Mesh};
use crate::testing::{admin_answering, http};

const QUICK: Duration = Duration::from_secs(5);

#[tokio::test]
async fn reads_the_chain_from_certs() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&LeafSpec::svid(API));
    let doc = serde_json::json!({
        "identity": API,
        "serial": "00",
        "not_before": "2020-01-01T00:00:00Z",
        "not_after": "2020-01-02T00:00:00Z",
        "chain": chain.iter().map(|c| der_to_pem(c)).collect::<Vec<_>>(),
        "trust_bundle": mesh.bundle.roots().iter().map(|c| der_to_pem(c)).collect::<Vec<_>>(),
    });
    let (addr, server) = admin_answering(http("200 OK", &doc.to_string())).await;
    let got = fetch_chain(&format!("http://{addr}"), QUICK).await.unwrap();
    assert_eq!(got, chain);
    let head = server.await.unwrap();
    assert!(head.starts_with("GET /certs HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains(&format!("host: {addr}")),
        "{head}"
    );
}

#[tokio::test]
async fn inspect_reports_from_the_certificates_not_the_json() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&LeafSpec::svid(API));
    // The document's own fields lie; the report must not repeat them.
    let doc = serde_json::json!({
        "identity": "spiffe://cluster.local/ns/evil/sa/liar",
        "serial": "00",
        "chain": chain.iter().map(|c| der_to_pem(c)).collect::<Vec<_>>(),
    });
    let (addr, _server) = admin_answering(http("200 OK", &doc.to_string())).await;
    let opts = crate::cert::InspectOptions {
        source: crate::cert::Source::Admin(format!("http://{addr}/")),
        trust_bundle: Some(mesh.bundle_path.clone()),
        timeout: QUICK,
    };
    let report = crate::cert::inspect(&opts).await.unwrap();
    assert_eq!(report.identity.as_deref(), Ok(API));
    assert_ne!(report.leaf.serial, "00");
    assert_eq!(report.verified(), Some(true));
}

#[tokio::test]
async fn no_certificate_yet_is_explained() {
    let body = r#"{"error": "no certificate yet"}"#;
    let (addr, _server) = admin_answering(http("503 Service Unavailable", body)).await;
    let err = fetch_chain(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, AdminError::NoCertificate { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("has no certificate yet: no certificate yet"),
        "{msg}"
    );
}

#[tokio::test]
async fn unexpected_answers_are_errors() {
    // Not a proxy admin.
    let (addr, _s) = admin_answering(http("404 Not Found", "not found\n")).await;
    let err = fetch_chain(&addr, QUICK).await.unwrap_err();
    assert!(
        matches!(err, AdminError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(": not found (is this"), "{err}");

    // JSON, but not a /certs document.
    let (addr, _s) = admin_answering(http("200 OK", r#"{"hello": 1}"#)).await;
    let err = fetch_chain(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, AdminError::Document { .. }), "{err}");

    // An empty chain.
    let (addr, _s) = admin_answering(http("200 OK", r#"{"chain": []}"#)).await;
    let err = fetch_chain(&addr, QUICK).await.unwrap_err();
    assert!(err.to_string().contains("\"chain\" is empty"), "{err}");

    // A chain entry that is not PEM.
    let (addr, _s) = admin_answering(http("200 OK", r#"{"chain": ["nope"]}"#)).await;
    let err = fetch_chain(&addr, QUICK).await.unwrap_err();
    assert!(
        err.to_string().contains("chain[0]: no certificate found"),
        "{err}"
    );

    // Not HTTP at all.
    let (addr, _s) = admin_answering(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()).await;
    let err = fetch_chain(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, AdminError::Http { .. }), "{err}");
}

#[tokio::test]
async fn bodies_are_bounded() {
    let len = MAX_INPUT_BYTES as usize + 1;
    let mut response = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n").into_bytes();
    response.resize(response.len() + len, b' ');
    let (addr, _s) = admin_answering(response).await;
    let err = fetch_chain(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, AdminError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn silence_and_refusal_are_reported() {
    // Accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let err = fetch_chain(&addr, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::Timeout { .. }), "{err}");
    drop(listener);

    // Nothing listens any more.
    let err = fetch_chain(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, AdminError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("is mesh-proxy running"), "{err}");
}

#[test]
fn admin_urls() {
    for (url, authority, path) in [
        ("http://127.0.0.1:4191", "127.0.0.1:4191", "/certs"),
        ("http://127.0.0.1:4191/", "127.0.0.1:4191", "/certs"),
        ("127.0.0.1:4191", "127.0.0.1:4191", "/certs"),
        // Already pointing at the endpoint: not doubled.
        ("http://127.0.0.1:4191/certs", "127.0.0.1:4191", "/certs"),
        // Behind a path prefix (e.g. a reverse proxy).
        (
            "http://admin.local:8080/pod-a/",
            "admin.local:8080",
            "/pod-a/certs",
        ),
        ("http://[::1]:4191", "[::1]:4191", "/certs"),
        ("http://localhost", "localhost:80", "/certs"),
    ] {
        let t = Target::parse(url).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            (authority, path),
            "{url}"
        );
    }
    for (url, reason) in [
        ("https://127.0.0.1:4191", "plain HTTP"),
        ("ftp://127.0.0.1:4191", "only http://"),
        ("", "not a URL"),
        ("http://", "not a URL"),
        ("/certs", "no host"),
    ] {
        let err = Target::parse(url).unwrap_err().to_string();
        assert!(err.contains(reason), "{url:?}: {err}");
        assert!(err.contains("http://127.0.0.1:4191"), "{url:?}: {err}");
    }
}
