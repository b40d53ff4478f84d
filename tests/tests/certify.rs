//! `Identity.Certify` refuses what it must, with clear errors, and issues
//! exactly the SVID the credential proves.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_identity::testing::csr_with;
use mesh_identity::token::{Claims, TokenKey};
use mesh_identity::{SpiffeId, Store, TrustBundle};
use mesh_proto::identity::CertifyRequest;
use mesh_proto::identity::identity_client::IdentityClient;
use mesh_tests::*;
use tonic::Code;

const API: &str = "spiffe://cluster.local/ns/default/sa/api";

fn client(cp: &ControlPlane) -> IdentityClient<tonic::transport::Channel> {
    let bundle = TrustBundle::from_pem(&std::fs::read(cp.trust_bundle()).unwrap()).unwrap();
    // A workload with no certificate yet, as a proxy is at startup.
    let store = Arc::new(Store::new(
        SpiffeId::parse(API).unwrap(),
        bundle,
        mesh_identity::tls::provider(),
    ));
    IdentityClient::new(mesh_control_client::channel(&store, &cp.listen.to_string()).unwrap())
}

async fn certify(
    c: &mut IdentityClient<tonic::transport::Channel>,
    csr: Vec<u8>,
    credential: String,
    ttl: u64,
) -> Result<mesh_proto::identity::CertifyResponse, tonic::Status> {
    c.certify(CertifyRequest {
        csr_der: csr,
        credential,
        requested_ttl_seconds: ttl,
    })
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_clear() {
    let cp = tokio::task::block_in_place(|| {
        ControlPlane::start(CpOptions {
            max_cert_ttl: "2h",
            cert_ttl: "1h",
            ..Default::default()
        })
    });
    let mut c = client(&cp);
    let api_token = cp.token("default", "api", Duration::from_secs(600));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = TokenKey::load_or_generate(&cp.data_dir()).unwrap();
    let expired = key.sign(&Claims {
        namespace: "default".into(),
        service_account: "api".into(),
        expires_at: now - 10,
        issued_at: now - 100,
    });
    let forged = TokenKey::from_bytes(&[42; 32]).create("default", "api", Duration::from_secs(600));

    let cases: Vec<(&str, Vec<u8>, String, Code, &str)> = vec![
        (
            "token for api asking for db",
            csr_with(&["spiffe://cluster.local/ns/default/sa/db"], &[], false),
            api_token.clone(),
            Code::InvalidArgument,
            "CSR asks for spiffe://cluster.local/ns/default/sa/db, but the credential proves spiffe://cluster.local/ns/default/sa/api",
        ),
        (
            "expired token",
            csr_with(&[API], &[], false),
            expired.clone(),
            Code::Unauthenticated,
            "join token expired",
        ),
        (
            "forged token",
            csr_with(&[API], &[], false),
            forged.clone(),
            Code::Unauthenticated,
            "signature is invalid",
        ),
        (
            "garbage token",
            csr_with(&[API], &[], false),
            "garbage".into(),
            Code::Unauthenticated,
            "malformed",
        ),
        (
            "two URI SANs",
            csr_with(
                &[API, "spiffe://cluster.local/ns/default/sa/db"],
                &[],
                false,
            ),
            api_token.clone(),
            Code::InvalidArgument,
            "more than one URI SAN",
        ),
        (
            "DNS SAN",
            csr_with(&[API], &["api.example.com"], false),
            api_token.clone(),
            Code::InvalidArgument,
            "DNS, IP or e-mail SAN",
        ),
        (
            "CA flag",
            csr_with(&[API], &[], true),
            api_token.clone(),
            Code::InvalidArgument,
            "asks for a CA certificate",
        ),
        (
            "garbage CSR",
            b"not a csr".to_vec(),
            api_token.clone(),
            Code::InvalidArgument,
            "could not be parsed",
        ),
    ];
    for (name, csr, token, code, msg) in cases {
        let err = certify(&mut c, csr, token.clone(), 0)
            .await
            .expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(err.message().contains(msg), "{name}: {:?}", err.message());
        // The error never echoes the credential.
        assert!(!err.message().contains(&token), "{name} leaks the token");
    }

    // A TTL above the maximum is clamped (documented), not refused.
    let ok = certify(
        &mut c,
        csr_with(&[API], &[], false),
        api_token.clone(),
        100 * 3600,
    )
    .await
    .expect("clamped");
    let (_, leaf) = x509_parser::parse_x509_certificate(&ok.leaf_der).unwrap();
    let life = leaf.validity().not_after.timestamp() - now as i64;
    assert!(
        (2 * 3600 - 5..=2 * 3600 + 5).contains(&life),
        "clamped to --max-cert-ttl: {life}s"
    );
    assert_eq!(ok.valid_until_unix, leaf.validity().not_after.timestamp());
    // The default TTL applies when none is asked for; a CSR without a SAN is
    // fine: the identity comes from the credential.
    let ok = certify(&mut c, csr_with(&[], &[], false), api_token, 0)
        .await
        .expect("default ttl");
    let (_, leaf) = x509_parser::parse_x509_certificate(&ok.leaf_der).unwrap();
    let life = leaf.validity().not_after.timestamp() - now as i64;
    assert!(
        (3600 - 5..=3600 + 5).contains(&life),
        "default --cert-ttl: {life}s"
    );
    assert_eq!(
        mesh_identity::verify::svid_identity(&ok.leaf_der)
            .unwrap()
            .as_str(),
        API
    );

    let (_, m) = http_get(cp.admin, "/metrics").unwrap();
    assert_eq!(
        metric(&m, "mesh_certs_issued_total", &[("result", "issued")]),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "mesh_certs_issued_total",
            &[("result", "bad_credential")]
        ),
        3.0
    );
    assert_eq!(
        metric(&m, "mesh_certs_issued_total", &[("result", "bad_csr")]),
        5.0
    );
}

#[test]
fn control_plane_refuses_open_key_files() {
    use std::os::unix::fs::PermissionsExt;
    let mut cp = ControlPlane::start(CpOptions::default());
    cp.stop();
    let key = cp.data_dir().join("token.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(bin("mesh-control-plane"))
        .arg("--data-dir")
        .arg(cp.data_dir())
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token.key") && err.contains("readable by group or others"),
        "{err}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let issuer_key = cp.data_dir().join("ca/issuer-key.pem");
    std::fs::set_permissions(&issuer_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = std::process::Command::new(bin("mesh-control-plane"))
        .arg("--data-dir")
        .arg(cp.data_dir())
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("issuer-key.pem") && err.contains("chmod 600"),
        "{err}"
    );
}
