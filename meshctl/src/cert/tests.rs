use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_identity::testing::{LeafSpec, TestCa};
use rustls_pki_types::CertificateDer;

use super::testing::{API, Mesh};
use super::*;

/// Fixed validity so rendered times are exact: 2027-01-15T08:00:00Z for a day.
const NOT_BEFORE: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn day_long_svid() -> LeafSpec {
    LeafSpec {
        not_before: at(NOT_BEFORE),
        not_after: at(NOT_BEFORE + DAY),
        ..LeafSpec::svid(API)
    }
}

fn report(certs: &[CertificateDer<'_>], now: SystemTime) -> Report {
    build_report(certs, "test.pem", None, now).unwrap()
}

#[test]
fn table_shows_identity_validity_and_chain() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&day_long_svid());
    let r = report(&chain, at(NOT_BEFORE + 60));
    let issuer = &r.issuers[0];
    let expected = format!(
        "identity:    {API}\n\
         serial:      {serial}\n\
         not before:  2027-01-15T08:00:00Z\n\
         not after:   2027-01-16T08:00:00Z\n\
         time left:   23h59m\n\
         key:         ECDSA P-256\n\
         chain:       [0] {API} → {issuer_dn} (until 2027-01-16T08:00:00Z)\n\
         \x20            [1] {issuer_dn} → {root_dn} (CA, until {issuer_until})\n",
        serial = r.leaf.serial,
        issuer_dn = issuer.subject,
        root_dn = issuer.issuer,
        issuer_until = report::rfc3339(issuer.not_after),
    );
    assert_eq!(r.to_table(), expected);
    // The serial is the hex of the certificate's own serial bytes.
    assert!(!r.leaf.serial.is_empty());
    assert!(r.leaf.serial.bytes().all(|b| b.is_ascii_hexdigit()));
    // The issuer is a real intermediate: it has a name and is a CA.
    assert!(issuer.is_ca && !issuer.subject.is_empty());
    assert_ne!(issuer.subject, issuer.issuer);
}

#[test]
fn json_has_the_contract_fields() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&day_long_svid());
    let r = report(&chain, at(NOT_BEFORE + 60));
    let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(v["identity"], API);
    assert_eq!(v["serial"], r.leaf.serial.as_str());
    assert_eq!(v["not_before"], "2027-01-15T08:00:00Z");
    assert_eq!(v["not_after"], "2027-01-16T08:00:00Z");
    assert_eq!(v["seconds_left"], DAY - 60);
    assert_eq!(v["expired"], false);
    assert_eq!(v["key_algorithm"], "ECDSA P-256");
    let chain_json = v["chain"].as_array().unwrap();
    assert_eq!(chain_json.len(), 2);
    // SVIDs are named by their URI SAN, so the leaf's subject DN is empty.
    assert_eq!(chain_json[0]["subject"], "");
    assert_eq!(chain_json[0]["issuer"], r.issuers[0].subject.as_str());
    assert_eq!(chain_json[0]["is_ca"], false);
    assert_eq!(chain_json[1]["is_ca"], true);
    assert_eq!(chain_json[1]["serial"], r.issuers[0].serial.as_str());
    // `verified` appears only when a trust bundle was given.
    assert!(v.get("verified").is_none());
}

#[test]
fn expired_and_not_yet_valid_are_called_out() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&day_long_svid());

    let expired = report(&chain, at(NOT_BEFORE + DAY + 300));
    assert!(expired.to_table().contains("time left:   EXPIRED 5m ago\n"));
    let v: serde_json::Value = serde_json::from_str(&expired.to_json().unwrap()).unwrap();
    assert_eq!(v["expired"], true);
    assert_eq!(v["seconds_left"], -300);

    let early = report(&chain, at(NOT_BEFORE - 90));
    assert!(early.to_table().contains("NOT YET VALID, starts in 1m30s"));
    let v: serde_json::Value = serde_json::from_str(&early.to_json().unwrap()).unwrap();
    assert_eq!(v["not_yet_valid"], true);
    assert_eq!(v["expired"], false);
}

#[test]
fn time_left_formatting() {
    for (secs, text) in [
        (0, "0s"),
        (42, "42s"),
        (60, "1m"),
        (90, "1m30s"),
        (300, "5m"),
        (3_600, "1h"),
        (DAY - 60, "23h59m"),
        // Two units are enough: seconds are dropped once hours show.
        (DAY - 1, "23h59m"),
        (DAY, "1d"),
        (DAY + 3 * 3_600 + 59, "1d3h"),
        (400 * DAY, "400d"),
    ] {
        assert_eq!(report::format_span(secs), text, "{secs}s");
    }
    let nb = time::OffsetDateTime::from_unix_timestamp(NOT_BEFORE as i64).unwrap();
    let na = nb + time::Duration::seconds(DAY as i64);
    // Validity bounds are inclusive (RFC 5280).
    assert_eq!(TimeLeft::at(nb, na, na), TimeLeft::Valid { seconds: 0 });
    assert_eq!(TimeLeft::at(nb, na, nb).to_string(), "1d");
    assert_eq!(
        TimeLeft::at(nb, na, na + time::Duration::minutes(5)).to_string(),
        "EXPIRED 5m ago"
    );
}

#[test]
fn verification_against_a_trust_bundle() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&LeafSpec::svid(API));
    let path = mesh.bundle_path.as_path();

    let ok = build_report(&chain, "t", Some((path, &mesh.bundle)), SystemTime::now()).unwrap();
    assert_eq!(ok.verified(), Some(true));
    assert!(ok.to_table().contains("verified:    yes, against "));
    let v: serde_json::Value = serde_json::from_str(&ok.to_json().unwrap()).unwrap();
    assert_eq!(v["verified"], true);
    assert!(v.get("verify_error").is_none());

    // Signed by a CA the bundle does not hold.
    let stranger = TestCa::new("not the mesh");
    let (leaf, _) = stranger.sign(&LeafSpec::svid(API));
    let bad = build_report(&[leaf], "t", Some((path, &mesh.bundle)), SystemTime::now()).unwrap();
    assert_eq!(bad.verified(), Some(false));
    assert!(
        bad.to_table().contains("NO, against "),
        "{}",
        bad.to_table()
    );
    let v: serde_json::Value = serde_json::from_str(&bad.to_json().unwrap()).unwrap();
    assert_eq!(v["verified"], false);
    assert!(
        v["verify_error"]
            .as_str()
            .unwrap()
            .contains("does not chain")
    );

    // An expired certificate from the right CA fails verification too.
    let now = SystemTime::now();
    let (old, _) = mesh.chain(&LeafSpec {
        not_before: now - Duration::from_secs(7200),
        not_after: now - Duration::from_secs(3600),
        ..LeafSpec::svid(API)
    });
    let expired = build_report(&old, "t", Some((path, &mesh.bundle)), now).unwrap();
    assert_eq!(
        expired.verification.unwrap().result,
        Err("certificate has expired".into())
    );
}

#[test]
fn non_svid_leaves_are_shown_with_the_reason() {
    // A root inspected on its own: legitimate, but it has no identity.
    let ca = TestCa::new("Palisade Test Root");
    let r = report(std::slice::from_ref(&ca.cert), SystemTime::now());
    assert!(r.leaf.is_ca);
    assert!(r.to_table().contains("identity:    none (a CA certificate"));
    assert!(
        r.to_table()
            .contains("[0] CN=Palisade Test Root → CN=Palisade Test Root (CA,")
    );
    let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert!(v["identity"].is_null());
    assert!(
        v["identity_error"]
            .as_str()
            .unwrap()
            .contains("CA certificate")
    );

    // Two URI SANs: not an SVID.
    let (leaf, _) = ca.sign(&LeafSpec {
        uris: vec![API.into(), "spiffe://cluster.local/ns/shop/sa/db".into()],
        ..LeafSpec::svid(API)
    });
    let r = report(&[leaf], SystemTime::now());
    assert!(r.identity.unwrap_err().contains("exactly one URI SAN"));
}

#[test]
fn malformed_pem_is_an_error() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&LeafSpec::svid(API));
    let good = mesh_identity::bundle::der_to_pem(&chain[0]);

    // Not PEM at all.
    let err = chain::from_pem(b"hello", "x.pem").unwrap_err();
    assert!(matches!(err, InspectError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("-----BEGIN CERTIFICATE-----"));

    // A block that never ends.
    let truncated = &good[..good.len() / 2];
    let err = chain::from_pem(truncated.as_bytes(), "x.pem").unwrap_err();
    assert!(matches!(err, InspectError::Pem { .. }), "{err}");

    // A block whose body is not base64.
    let garbled = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    let err = chain::from_pem(garbled.as_bytes(), "x.pem").unwrap_err();
    assert!(matches!(err, InspectError::Pem { .. }), "{err}");

    // Valid PEM, but the DER inside is not a certificate.
    let junk = mesh_identity::bundle::der_to_pem(b"definitely not DER");
    let certs = chain::from_pem(junk.as_bytes(), "x.pem").unwrap();
    let err = build_report(&certs, "x.pem", None, SystemTime::now()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("x.pem: certificate #1 is not a valid X.509"),
        "{err}"
    );

    // A certificate followed by trailing bytes inside the same block.
    let mut padded = chain[0].to_vec();
    padded.extend_from_slice(&[0, 0]);
    let err = build_report(
        &[CertificateDer::from(padded)],
        "x.pem",
        None,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("trailing data"), "{err}");
}

#[test]
fn a_private_key_alone_is_not_echoed() {
    let mesh = Mesh::new();
    let key_pem = std::fs::read_to_string(mesh.dir.path().join("ca/issuer-key.pem")).unwrap();
    let err = chain::from_pem(key_pem.as_bytes(), "key.pem")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no certificate found"), "{err}");
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!err.contains(body), "{err}");
}

#[test]
fn files_are_read_with_bounds_and_named_in_errors() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&LeafSpec::svid(API));
    let path = mesh.write_pem("chain.pem", &chain);
    assert_eq!(chain::read_pem_file(&path, "").unwrap(), chain);

    let missing = mesh.dir.path().join("missing.pem");
    let err = chain::read_pem_file(&missing, "trust bundle")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot read trust bundle "), "{err}");
    assert!(err.contains("missing.pem"), "{err}");

    let huge = mesh.dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'a'; chain::MAX_INPUT_BYTES as usize + 1]).unwrap();
    let err = chain::read_pem_file(&huge, "").unwrap_err();
    assert!(matches!(err, InspectError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn inspect_a_file_with_a_trust_bundle() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.chain(&LeafSpec::svid(API));
    let path = mesh.write_pem("chain.pem", &chain);
    let opts = InspectOptions {
        source: Source::File(path),
        trust_bundle: Some(mesh.bundle_path.clone()),
        timeout: Duration::from_secs(1),
    };
    let r = inspect(&opts).await.unwrap();
    assert_eq!(r.identity.as_deref(), Ok(API));
    assert_eq!(r.verified(), Some(true));

    // A trust bundle that is not PEM is refused up front, naming the file.
    let not_pem = mesh.dir.path().join("bundle.txt");
    std::fs::write(&not_pem, "nope").unwrap();
    let opts = InspectOptions {
        trust_bundle: Some(not_pem),
        ..opts
    };
    let err = inspect(&opts).await.unwrap_err().to_string();
    assert!(err.starts_with("trust bundle "), "{err}");
    assert!(err.contains("bundle.txt"), "{err}");
}
