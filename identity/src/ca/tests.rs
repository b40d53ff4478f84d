use std::time::{Duration, SystemTime};

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry;

use super::*;
use crate::testing::csr_with;

fn ca() -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_generate(&dir.path().join("ca"), "cluster.local").unwrap();
    (dir, ca)
}

fn api() -> SpiffeId {
    SpiffeId::workload("cluster.local", "default", "api").unwrap()
}

#[test]
fn issued_leaf_has_exactly_the_svid_fields() {
    let (_d, ca) = ca();
    let id = api();
    let csr = csr_with(&[id.as_str()], &[], false);
    let before = SystemTime::now();
    let issued = ca.sign_csr(&csr, &id, Duration::from_secs(3600)).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.leaf).unwrap();

    // Exactly one URI SAN, the identity, and no other SAN.
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI(id.as_str())],
        "exactly one URI SAN"
    );
    // cA=false, present.
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    // Key usage: digitalSignature only, critical.
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical, "key usage must be critical");
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.key_encipherment());
    // EKU serverAuth + clientAuth.
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && eku.value.client_auth);
    // Random 128-bit positive serial.
    assert_eq!(cert.raw_serial().len(), 16);
    assert!(cert.raw_serial()[0] & 0x80 == 0);
    // notBefore backdated by the skew, notAfter = now + TTL.
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let now = before
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let skew = crate::ca::DEFAULT_CLOCK_SKEW.as_secs() as i64;
    assert!(
        (now - skew - 1..=now - skew + 1).contains(&nb),
        "backdated notBefore: {nb} vs {now}"
    );
    assert!(
        (now + 3599..=now + 3601).contains(&na),
        "notAfter = now + ttl"
    );
    // Signed with ECDSA P-256 / SHA-256.
    assert_eq!(
        cert.signature_algorithm.algorithm,
        oid_registry::OID_SIG_ECDSA_WITH_SHA256
    );
    // The SAN is critical because the subject is empty.
    assert!(cert.subject().iter().next().is_none());
    let san_ext = cert
        .extensions()
        .iter()
        .find(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::SubjectAlternativeName(_)
            )
        })
        .unwrap();
    assert!(san_ext.critical);
    // Two serials differ.
    let again = ca.sign_csr(&csr, &id, Duration::from_secs(3600)).unwrap();
    assert_ne!(issued.leaf, again.leaf);
}

#[test]
fn ttl_is_clamped_to_issuer_expiry() {
    let (_d, ca) = ca();
    let id = api();
    let csr = csr_with(&[], &[], false);
    let issued = ca
        .sign_csr(&csr, &id, Duration::from_secs(100 * 365 * 86400))
        .unwrap();
    assert!(issued.not_after <= ca.issuer_not_after());
}

#[test]
fn csr_refusals() {
    let (_d, ca) = ca();
    let id = api();
    let ttl = Duration::from_secs(60);
    let cases: Vec<(Vec<u8>, CsrRefusal)> = vec![
        // The identity comes from the credential; a CSR for another is refused.
        (
            csr_with(&["spiffe://cluster.local/ns/default/sa/db"], &[], false),
            CsrRefusal::IdentityMismatch {
                requested: "spiffe://cluster.local/ns/default/sa/db".into(),
                proven: id.to_string(),
            },
        ),
        (
            csr_with(
                &[id.as_str(), "spiffe://cluster.local/ns/default/sa/db"],
                &[],
                false,
            ),
            CsrRefusal::MultipleUris,
        ),
        (
            csr_with(&[id.as_str()], &["api.example.com"], false),
            CsrRefusal::NonUriSan,
        ),
        (csr_with(&[id.as_str()], &[], true), CsrRefusal::CaRequested),
        (b"not a csr".to_vec(), CsrRefusal::Invalid),
        (vec![0u8; 20_000], CsrRefusal::TooLarge),
    ];
    for (csr, want) in cases {
        match ca.sign_csr(&csr, &id, ttl) {
            Err(CaError::Csr(got)) => assert_eq!(got, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
}

#[test]
fn persisted_and_reloaded_with_0600_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let a = Ca::load_or_generate(&ca_dir, "cluster.local").unwrap();
    for f in [ROOT_KEY_FILE, ISSUER_KEY_FILE] {
        let mode = std::fs::metadata(ca_dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let b = Ca::load_or_generate(&ca_dir, "cluster.local").unwrap();
    assert_eq!(a.bundle(), b.bundle(), "same CA after restart");
    // A world-readable key is refused with a clear message.
    std::fs::set_permissions(
        ca_dir.join(ISSUER_KEY_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = Ca::load_or_generate(&ca_dir, "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("issuer-key.pem") && err.contains("chmod 600"),
        "{err}"
    );
    // An incomplete CA directory is refused, not silently replaced.
    std::fs::remove_file(ca_dir.join(ISSUER_CERT_FILE)).unwrap();
    let err = Ca::load_or_generate(&ca_dir, "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(err.contains("issuer-cert.pem is missing"), "{err}");
}
