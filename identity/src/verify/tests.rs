use std::time::{Duration, SystemTime};

use super::*;
use crate::ca::Ca;
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};

use crate::testing::{LeafSpec, TestCa, digital_signature_usage, uri_san};

struct Mesh {
    _dir: tempfile::TempDir,
    bundle: TrustBundle,
    issuer: TestCa,
    intermediates: Vec<CertificateDer<'static>>,
}

fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = Ca::load_or_generate(&ca_dir, "cluster.local").unwrap();
    let cert = std::fs::read_to_string(ca_dir.join("issuer-cert.pem")).unwrap();
    let key = std::fs::read_to_string(ca_dir.join("issuer-key.pem")).unwrap();
    let issuer = TestCa::from_pem(&cert, &key);
    Mesh {
        bundle: ca.bundle().clone(),
        intermediates: vec![issuer.cert.clone()],
        issuer,
        _dir: dir,
    }
}

fn check(
    m: &Mesh,
    leaf: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
) -> Result<SpiffeId, VerifyError> {
    let provider = crate::tls::provider();
    verify_svid(
        leaf,
        chain,
        &m.bundle,
        "cluster.local",
        Usage::Client,
        UnixTime::now(),
        &provider.signature_verification_algorithms,
    )
}

const API: &str = "spiffe://cluster.local/ns/default/sa/api";

#[test]
fn good_svid_verifies() {
    let m = mesh();
    let (leaf, _) = m.issuer.sign(&LeafSpec::svid(API));
    assert_eq!(check(&m, &leaf, &m.intermediates).unwrap().as_str(), API);
}

#[test]
fn refusals() {
    let m = mesh();
    let other = TestCa::new("someone else");
    let now = SystemTime::now();
    let expired = LeafSpec {
        not_before: now - Duration::from_secs(7200),
        not_after: now - Duration::from_secs(3600),
        ..LeafSpec::svid(API)
    };
    let no_uri = LeafSpec {
        uris: vec![],
        dns: vec!["api.example.com".into()],
        ..LeafSpec::svid(API)
    };
    let two_uris = LeafSpec {
        uris: vec![API.into(), "spiffe://cluster.local/ns/default/sa/db".into()],
        ..LeafSpec::svid(API)
    };
    let ca_leaf = LeafSpec {
        is_ca: true,
        ..LeafSpec::svid(API)
    };
    let cases: Vec<(
        &str,
        CertificateDer<'static>,
        Vec<CertificateDer<'static>>,
        VerifyError,
    )> = vec![
        (
            "certificate from another CA",
            other.sign(&LeafSpec::svid(API)).0,
            vec![],
            VerifyError::UnknownIssuer,
        ),
        (
            "wrong trust domain",
            m.issuer
                .sign(&LeafSpec::svid("spiffe://evil.example/ns/default/sa/api"))
                .0,
            m.intermediates.clone(),
            VerifyError::WrongTrustDomain {
                expected: "cluster.local".into(),
                got: "evil.example".into(),
            },
        ),
        (
            "expired",
            m.issuer.sign(&expired).0,
            m.intermediates.clone(),
            VerifyError::Expired,
        ),
        (
            "CA as leaf",
            m.issuer.sign(&ca_leaf).0,
            m.intermediates.clone(),
            VerifyError::CaAsLeaf,
        ),
        (
            "no URI SAN",
            m.issuer.sign(&no_uri).0,
            m.intermediates.clone(),
            VerifyError::UriSanCount(0),
        ),
        (
            "two URI SANs",
            m.issuer.sign(&two_uris).0,
            m.intermediates.clone(),
            VerifyError::UriSanCount(2),
        ),
        (
            "leaf with keyCertSign",
            m.issuer
                .sign(&LeafSpec {
                    key_usages: Some(vec![
                        KeyUsagePurpose::DigitalSignature,
                        KeyUsagePurpose::KeyCertSign,
                    ]),
                    ..LeafSpec::svid(API)
                })
                .0,
            m.intermediates.clone(),
            VerifyError::LeafKeyCertSign,
        ),
        (
            "leaf with cRLSign",
            m.issuer
                .sign(&LeafSpec {
                    key_usages: Some(vec![
                        KeyUsagePurpose::DigitalSignature,
                        KeyUsagePurpose::CrlSign,
                    ]),
                    ..LeafSpec::svid(API)
                })
                .0,
            m.intermediates.clone(),
            VerifyError::LeafCrlSign,
        ),
        (
            "leaf without digitalSignature",
            m.issuer
                .sign(&LeafSpec {
                    key_usages: Some(vec![KeyUsagePurpose::KeyEncipherment]),
                    ..LeafSpec::svid(API)
                })
                .0,
            m.intermediates.clone(),
            VerifyError::NoDigitalSignature,
        ),
        (
            "leaf without key usage",
            m.issuer
                .sign(&LeafSpec {
                    key_usages: Some(vec![]),
                    ..LeafSpec::svid(API)
                })
                .0,
            m.intermediates.clone(),
            VerifyError::KeyUsageMissing,
        ),
        (
            "key usage not critical",
            m.issuer
                .sign(&LeafSpec {
                    key_usages: Some(vec![]),
                    custom: vec![digital_signature_usage(false)],
                    ..LeafSpec::svid(API)
                })
                .0,
            m.intermediates.clone(),
            VerifyError::KeyUsageNotCritical,
        ),
        (
            "leaf with a path length",
            m.issuer
                .sign(&LeafSpec {
                    path_len: Some(0),
                    ..LeafSpec::svid(API)
                })
                .0,
            m.intermediates.clone(),
            VerifyError::LeafPathLen,
        ),
        (
            "extended key usage without clientAuth",
            m.issuer
                .sign(&LeafSpec {
                    extended_key_usages: vec![ExtendedKeyUsagePurpose::ServerAuth],
                    ..LeafSpec::svid(API)
                })
                .0,
            m.intermediates.clone(),
            VerifyError::Usage(
                "extended key usage must include both serverAuth and clientAuth".into(),
            ),
        ),
        (
            "SPIFFE ID of the trust domain only",
            m.issuer.sign(&LeafSpec::svid("spiffe://cluster.local")).0,
            m.intermediates.clone(),
            VerifyError::LeafWithoutPath,
        ),
        (
            "empty subject, SAN not critical",
            m.issuer
                .sign(&LeafSpec {
                    uris: vec![],
                    custom: vec![uri_san(API, false)],
                    ..LeafSpec::svid(API)
                })
                .0,
            m.intermediates.clone(),
            VerifyError::SanNotCritical,
        ),
        (
            "missing intermediate",
            m.issuer.sign(&LeafSpec::svid(API)).0,
            vec![],
            VerifyError::UnknownIssuer,
        ),
        (
            "garbage",
            CertificateDer::from(b"garbage".to_vec()),
            vec![],
            VerifyError::Unparsable,
        ),
    ];
    for (name, leaf, chain, want) in cases {
        assert_eq!(check(&m, &leaf, &chain), Err(want), "{name}");
    }
}

#[test]
fn a_hand_written_critical_san_is_accepted() {
    // The control for "empty subject, SAN not critical": the same extension
    // marked critical verifies, so that case fails for the flag alone.
    let m = mesh();
    let (leaf, _) = m.issuer.sign(&LeafSpec {
        uris: vec![],
        custom: vec![uri_san(API, true)],
        ..LeafSpec::svid(API)
    });
    assert_eq!(
        check(&m, &leaf, &m.intermediates).map(|id| id.to_string()),
        Ok(API.to_string())
    );
    let (leaf, _) = m.issuer.sign(&LeafSpec {
        key_usages: Some(vec![]),
        custom: vec![digital_signature_usage(true)],
        ..LeafSpec::svid(API)
    });
    assert_eq!(
        check(&m, &leaf, &m.intermediates).map(|id| id.to_string()),
        Ok(API.to_string())
    );
}

#[test]
fn a_signing_certificate_names_a_trust_domain_not_a_workload() {
    let root = TestCa::new("plug-in root");
    let bundle = TrustBundle::new(vec![root.cert.clone()]).expect("a bundle of the test root");
    let provider = crate::tls::provider();
    let verify = |issuer: &TestCa| {
        let (leaf, _) = issuer.sign(&LeafSpec::svid(API));
        verify_svid(
            &leaf,
            std::slice::from_ref(&issuer.cert),
            &bundle,
            "cluster.local",
            Usage::Server,
            UnixTime::now(),
            &provider.signature_verification_algorithms,
        )
    };
    let of_domain = root.intermediate("issuer", Some("spiffe://cluster.local"));
    assert_eq!(
        verify(&of_domain).map(|id| id.to_string()),
        Ok(API.to_string())
    );
    let unnamed = root.intermediate("issuer", None);
    assert_eq!(
        verify(&unnamed).map(|id| id.to_string()),
        Ok(API.to_string())
    );
    let of_workload = root.intermediate("issuer", Some("spiffe://cluster.local/ns/default/sa/ca"));
    assert_eq!(verify(&of_workload), Err(VerifyError::SigningIdWithPath));
}
