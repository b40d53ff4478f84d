//! Both ends of every mesh connection verify the peer's SVID: the inbound
//! refuses bad client certificates in the handshake, the outbound refuses a
//! peer that is not the route's SPIFFE ID; each refusal is counted.

use std::time::{Duration, SystemTime};

use mesh_identity::TrustBundle;
use mesh_identity::testing::{LeafSpec, TestCa};
use mesh_tests::tls::{Outcome, mesh_connect};
use mesh_tests::*;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

#[tokio::test(flavor = "multi_thread")]
async fn inbound_refuses_bad_client_certificates() {
    let (cp, b, app) = tokio::task::block_in_place(|| {
        let cp = ControlPlane::start(CpOptions::default());
        let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
        (cp, b, Echo::start())
    });
    let bundle = TrustBundle::from_pem(&std::fs::read(cp.trust_bundle()).unwrap()).unwrap();
    let (cert_pem, key_pem) = cp.issuer_pem();
    let issuer = TestCa::from_pem(&cert_pem, &key_pem);
    let chain = |spec: &LeafSpec| {
        let (leaf, key) = issuer.sign(spec);
        (vec![leaf, issuer.cert.clone()], key)
    };
    let now = SystemTime::now();

    // A good client certificate gets through: the refusals below are about the certificate.
    let good = mesh_connect(
        b.inbound,
        &bundle,
        &b.identity,
        Some(chain(&LeafSpec::svid(WEB))),
        app.port(),
        b"hi",
    )
    .await;
    assert_eq!(good, Outcome::Data(b"hi".to_vec()));

    let other_ca = TestCa::new("another CA");
    let (other_leaf, other_key) = other_ca.sign(&LeafSpec::svid(WEB));
    type ClientCert = Option<(Vec<rustls_pki_types::CertificateDer<'static>>, Vec<u8>)>;
    let cases: Vec<(&str, ClientCert, &str)> = vec![
        ("no client certificate", None, "no_certificate"),
        (
            "certificate from another CA",
            Some((vec![other_leaf, other_ca.cert.clone()], other_key)),
            "unknown_issuer",
        ),
        (
            "wrong trust domain",
            Some(chain(&LeafSpec::svid(
                "spiffe://other.example/ns/default/sa/web",
            ))),
            "wrong_trust_domain",
        ),
        (
            "CA certificate as leaf",
            Some(chain(&LeafSpec {
                is_ca: true,
                ..LeafSpec::svid(WEB)
            })),
            "ca_as_leaf",
        ),
        (
            "workload certificate that can sign certificates",
            Some(chain(&LeafSpec {
                key_usages: Some(vec![
                    rcgen::KeyUsagePurpose::DigitalSignature,
                    rcgen::KeyUsagePurpose::KeyCertSign,
                ]),
                ..LeafSpec::svid(WEB)
            })),
            "leaf_key_cert_sign",
        ),
        (
            "workload certificate without digitalSignature",
            Some(chain(&LeafSpec {
                key_usages: Some(vec![rcgen::KeyUsagePurpose::KeyAgreement]),
                ..LeafSpec::svid(WEB)
            })),
            "no_digital_signature",
        ),
        (
            "workload certificate with a path length",
            Some(chain(&LeafSpec {
                path_len: Some(1),
                ..LeafSpec::svid(WEB)
            })),
            "leaf_path_len",
        ),
        (
            "expired certificate",
            Some(chain(&LeafSpec {
                not_before: now - Duration::from_secs(7200),
                not_after: now - Duration::from_secs(60),
                ..LeafSpec::svid(WEB)
            })),
            "expired",
        ),
    ];
    for (name, client, reason) in cases {
        let before = metric(
            &b.metrics(),
            "mesh_tls_handshake_failures_total",
            &[("direction", "inbound"), ("reason", reason)],
        );
        let got = mesh_connect(
            b.inbound,
            &bundle,
            &b.identity,
            client,
            app.port(),
            b"secret",
        )
        .await;
        assert_eq!(got, Outcome::ServerRefused, "{name}");
        let m = wait_for(name, Duration::from_secs(5), || {
            let v = metric(
                &b.metrics(),
                "mesh_tls_handshake_failures_total",
                &[("direction", "inbound"), ("reason", reason)],
            );
            (v > before).then_some(v)
        });
        assert_eq!(m, before + 1.0, "{name} counted once as {reason}");
    }
    // Only the good connection reached the app through the proxy.
    assert_eq!(
        metric(
            &b.metrics(),
            "mesh_tcp_connections_total",
            &[("direction", "inbound")]
        ),
        1.0
    );
}

#[test]
fn outbound_refuses_a_peer_with_another_identity() {
    let cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    // The route says the peer must be `db`; it is `api`.
    let listen = opts.route(&b, app.port(), "spiffe://cluster.local/ns/default/sa/db");
    let a = Proxy::start(&cp, opts);
    let got = round_trip(listen, b"must not arrive").unwrap_or_default();
    assert!(got.is_empty(), "no data through a mismatched peer");
    wait_for(
        "outbound wrong_identity counted",
        Duration::from_secs(5),
        || {
            (metric(
                &a.metrics(),
                "mesh_tls_handshake_failures_total",
                &[("direction", "outbound"), ("reason", "wrong_identity")],
            ) == 1.0)
                .then_some(())
        },
    );
    // Logs are written in batches, shortly after the event.
    wait_for("the refusal logged", Duration::from_secs(5), || {
        a.logs().contains("peer certificate refused: peer is spiffe://cluster.local/ns/default/sa/api, expected spiffe://cluster.local/ns/default/sa/db").then_some(())
    });
    assert_eq!(
        metric(
            &b.metrics(),
            "mesh_tcp_connections_total",
            &[("direction", "inbound")]
        ),
        0.0
    );
}
