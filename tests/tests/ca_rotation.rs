//! Trust-anchor rotation in three steps with nothing restarted (`meshctl ca
//! rotate begin|switch|finish`), under load: every connection through the
//! mesh during the rotation is a new mTLS handshake between two proxies, and
//! none fails. The negative control: a client certificate from the old
//! issuer is still accepted after `switch` (the old root is still trusted)
//! and refused after `finish` (it is not), so the steps did change what the
//! proxies trust, live.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mesh_identity::TrustBundle;
use mesh_identity::testing::{LeafSpec, TestCa};
use mesh_tests::netns::meshctl;
use mesh_tests::tls::{Outcome, mesh_connect};
use mesh_tests::*;

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

fn ca_status(admin: &str) -> serde_json::Value {
    let out = meshctl(&["ca", "status", "--admin", admin, "-o", "json"]);
    assert!(
        out.status.success(),
        "meshctl ca status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ca status json")
}

/// Waits until the control plane has the CA on disk in force and every
/// holder (both proxies and the control plane itself) is on it.
fn wait_everyone_on(admin: &str, data: &Path, what: &str) -> serde_json::Value {
    let on_disk = mesh_identity::Ca::load(&data.join("ca"))
        .expect("CA on disk")
        .generation()
        .to_string();
    wait_for(what, Duration::from_secs(15), || {
        let s = ca_status(admin);
        let holders = s["holders"].as_array()?;
        let all = holders.len() >= 3 && holders.iter().all(|h| h["generation"] == s["generation"]);
        (s["generation"] == on_disk.as_str() && all && s["serving_generation"] == s["generation"])
            .then_some(s)
    })
}

/// The trust bundle the control plane publishes in its data directory.
fn published_bundle(cp: &ControlPlane) -> TrustBundle {
    let pem = std::fs::read(cp.trust_bundle()).expect("the published trust bundle");
    TrustBundle::from_pem(&pem).expect("the published trust bundle parses")
}

fn step(args: &[&str]) -> String {
    let out = meshctl(args);
    assert!(
        out.status.success(),
        "meshctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn trust_anchor_rotation_in_three_steps_under_load() {
    let cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let a = Proxy::start(&cp, opts);
    let data = cp.data_dir();
    let data_s = data.display().to_string();
    let admin = format!("http://{}", cp.admin);
    let (old_cert, old_key) = cp.issuer_pem();
    let old_issuer = TestCa::from_pem(&old_cert, &old_key);
    let old_client = || {
        let (leaf, key) = old_issuer.sign(&LeafSpec::svid(WEB));
        Some((vec![leaf, old_issuer.cert.clone()], key))
    };
    let old_root = std::fs::read(data.join("ca/root-cert.pem")).expect("old root");
    let rt = runtime();

    // Load: new connections one after another, each a handshake A → B.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match round_trip(listen, b"ping") {
                    Ok(got) if got == b"ping" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if errors.len() < 5 {
                            errors.push(format!("{other:?}"));
                        }
                    }
                }
            }
            errors
        })
    };
    let served = |n: u64, what: &str| {
        let from = ok.load(Ordering::Relaxed);
        wait_for(what, Duration::from_secs(15), || {
            (ok.load(Ordering::Relaxed) >= from + n).then_some(())
        });
    };
    served(20, "traffic before the rotation");
    let before = wait_everyone_on(&admin, &data, "everyone on the first CA");
    assert_eq!(before["phase"], "steady");
    assert_eq!(before["roots"].as_array().map(Vec::len), Some(1));

    // Steps out of order are refused.
    let out = meshctl(&[
        "ca",
        "rotate",
        "switch",
        "--data-dir",
        &data_s,
        "--admin",
        &admin,
    ]);
    assert!(!out.status.success(), "switch before begin must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rotate begin"));

    // 1. begin: both roots published, the old issuer still signs.
    step(&["ca", "rotate", "begin", "--data-dir", &data_s]);
    let begun = wait_everyone_on(&admin, &data, "everyone trusts both roots");
    assert_eq!(begun["phase"], "begun");
    assert_eq!(begun["roots"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        begun["issuer"], before["issuer"],
        "the old issuer still signs"
    );
    served(20, "traffic after begin");

    // 2. switch: the new issuer signs, both roots still trusted.
    let serial_before = b.serial();
    step(&[
        "ca",
        "rotate",
        "switch",
        "--data-dir",
        &data_s,
        "--admin",
        &admin,
    ]);
    let switched = wait_everyone_on(
        &admin,
        &data,
        "everyone holds a certificate of the new issuer",
    );
    assert_eq!(switched["phase"], "switched");
    assert_eq!(switched["roots"].as_array().map(Vec::len), Some(2));
    assert_ne!(switched["issuer"], before["issuer"]);
    assert_ne!(b.serial(), serial_before, "B renewed");
    served(20, "traffic after switch");
    let bundle = published_bundle(&cp);
    let accepted = rt.block_on(mesh_connect(
        b.inbound,
        &bundle,
        &b.identity,
        old_client(),
        app.port(),
        b"old issuer",
    ));
    assert_eq!(
        accepted,
        Outcome::Data(b"old issuer".to_vec()),
        "after switch the old root is still trusted"
    );

    // 3. finish: only the new root.
    step(&[
        "ca",
        "rotate",
        "finish",
        "--data-dir",
        &data_s,
        "--admin",
        &admin,
    ]);
    let finished = wait_everyone_on(&admin, &data, "everyone trusts the new root only");
    assert_eq!(finished["phase"], "steady");
    let roots = finished["roots"].as_array().expect("roots");
    assert_eq!(roots.len(), 1);
    assert_ne!(roots[0], before["roots"][0], "the old root is gone");
    assert_ne!(
        std::fs::read(data.join("ca/root-cert.pem")).expect("the new root on disk"),
        old_root
    );
    let bundle = published_bundle(&cp);
    let old_root_der = TrustBundle::from_pem(&old_root)
        .expect("the old root parses")
        .roots()[0]
        .clone();
    assert_eq!(bundle.len(), 1);
    assert!(
        !bundle.roots().contains(&old_root_der),
        "the published bundle no longer holds the old root"
    );
    served(20, "traffic after finish");
    let unknown_before = metric(
        &b.metrics(),
        "mesh_tls_handshake_failures_total",
        &[("direction", "inbound"), ("reason", "unknown_issuer")],
    );
    let refused = rt.block_on(mesh_connect(
        b.inbound,
        &bundle,
        &b.identity,
        old_client(),
        app.port(),
        b"old issuer",
    ));
    assert_eq!(
        refused,
        Outcome::ServerRefused,
        "after finish a certificate of the old root is refused"
    );
    wait_for("the refusal counted", Duration::from_secs(5), || {
        (metric(
            &b.metrics(),
            "mesh_tls_handshake_failures_total",
            &[("direction", "inbound"), ("reason", "unknown_issuer")],
        ) > unknown_before)
            .then_some(())
    });

    stop.store(true, Ordering::Relaxed);
    let errors = load.join().expect("load thread");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("rotation under load: {ok} connections, {failed} failed");
    assert_eq!(
        failed, 0,
        "no connection failed during the rotation: {errors:?}"
    );
    assert!(
        metric(&a.metrics(), "mesh_identity_ca_renewals_total", &[]) >= 3.0,
        "A renewed at each step"
    );
}

#[test]
fn a_ca_that_does_not_load_leaves_the_last_good_one_in_force() {
    let cp = ControlPlane::start(CpOptions::default());
    let data = cp.data_dir();
    let data_s = data.display().to_string();
    let admin = format!("http://{}", cp.admin);
    let first = ca_status(&admin);

    // A plug-in CA whose issuer key is not the issuer certificate's is refused by begin.
    let other = TestCa::new("operator root");
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write a plug-in file");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod 0600");
        p.display().to_string()
    };
    let root = write(
        "root.pem",
        mesh_identity::bundle::der_to_pem(&other.cert).as_bytes(),
    );
    let (issuer_cert, _) = cp.issuer_pem();
    let wrong_key = write(
        "key.pem",
        rcgen::KeyPair::generate()
            .expect("a key")
            .serialize_pem()
            .as_bytes(),
    );
    let cert = write("issuer.pem", issuer_cert.as_bytes());
    let out = meshctl(&[
        "ca",
        "rotate",
        "begin",
        "--data-dir",
        &data_s,
        "--root-cert",
        &root,
        "--issuer-cert",
        &cert,
        "--issuer-key",
        &wrong_key,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not the one issuer-cert.pem certifies"),
        "{err}"
    );
    assert!(
        !err.contains("PRIVATE KEY"),
        "no key material in errors: {err}"
    );
    assert!(!data.join("ca/next").exists(), "nothing left behind");

    // A CA directory broken by hand: reported, and the last good CA stays.
    let cert_path = data.join("ca/issuer-cert.pem");
    let good = std::fs::read(&cert_path).expect("the issuer certificate");
    std::fs::write(
        &cert_path,
        b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("garble the issuer certificate");
    let broken = wait_for("the broken CA reported", Duration::from_secs(10), || {
        let s = ca_status(&admin);
        s["error"].is_string().then_some(s)
    });
    assert_eq!(
        broken["generation"], first["generation"],
        "the last good CA is in force"
    );
    let p = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    assert!(p.serial().is_some(), "certificates are still issued");
    let out = meshctl(&["ca", "status", "--admin", &admin]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("do not load"));
    std::fs::write(&cert_path, good).expect("restore the issuer certificate");
    wait_for("the CA loads again", Duration::from_secs(10), || {
        ca_status(&admin)["error"].is_null().then_some(())
    });
    assert!(
        metric(
            &http_get(cp.admin, "/metrics")
                .expect("the control plane's /metrics")
                .1,
            "mesh_ca_expiry_timestamp_seconds",
            &[("role", "issuer")]
        ) > 0.0
    );
}
