use std::time::{Duration, SystemTime};

use super::*;
use crate::ca::Ca;
use crate::testing::{LeafSpec, TestCa};

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
