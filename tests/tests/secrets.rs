//! Secrets (private keys, tokens) never appear in logs, admin output or errors.

use std::time::Duration;

use mesh_tests::*;

#[test]
fn no_secret_in_logs_admin_or_errors() {
    let mut cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let mut b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let mut a = Proxy::start(&cp, opts);
    assert_eq!(round_trip(listen, b"x").unwrap(), b"x");

    // A proxy with a forged token (signed by another key) is refused; its
    // errors must not repeat the token.
    let forged = mesh_identity::token::TokenKey::from_bytes(&[9; 32]).create(
        "default",
        "db",
        Duration::from_secs(600),
    );
    let mut c = Proxy::spawn(&cp, ProxyOptions::new("default", "db"));
    std::fs::write(&c.token_file, &forged).unwrap();
    wait_for(
        "refused certification logged",
        Duration::from_secs(15),
        || {
            c.logs()
                .contains("join token signature is invalid")
                .then_some(())
        },
    );
    c.proc.terminate();
    let _ = c.proc.wait_exit(Duration::from_secs(5));

    let mut secrets: Vec<(String, String)> = vec![("forged token".into(), forged)];
    for p in [&a, &b] {
        secrets.push((
            "token".into(),
            std::fs::read_to_string(&p.token_file).unwrap(),
        ));
    }
    let key_bytes = std::fs::read(cp.data_dir().join("token.key")).unwrap();
    secrets.push((
        "token key (hex)".into(),
        key_bytes.iter().map(|b| format!("{b:02x}")).collect(),
    ));
    for f in ["ca/issuer-key.pem", "ca/root-key.pem"] {
        let pem = std::fs::read_to_string(cp.data_dir().join(f)).unwrap();
        // Every base64 line of the key body.
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
        {
            secrets.push((f.into(), line.to_string()));
        }
    }

    let mut haystacks = Vec::new();
    for path in ["/live", "/ready", "/metrics", "/status", "/certs"] {
        haystacks.push((
            format!("control plane {path}"),
            http_get(cp.admin, path).unwrap().1,
        ));
        for (n, p) in [("a", &a), ("b", &b)] {
            haystacks.push((format!("proxy {n} {path}"), p.admin_get(path).1));
        }
    }
    // Logs are written in batches: stop every process first (SIGTERM, so
    // each writes what it still holds), then read everything they logged.
    for p in [&mut a.proc, &mut b.proc, &mut c.proc] {
        p.terminate();
        assert!(
            p.wait_exit(Duration::from_secs(15)).is_some(),
            "proxy exits"
        );
    }
    if let Some(p) = cp.proc.as_mut() {
        p.terminate();
        assert!(
            p.wait_exit(Duration::from_secs(15)).is_some(),
            "control plane exits"
        );
    }
    haystacks.extend([
        ("control plane logs".to_string(), cp.logs()),
        ("proxy a logs".into(), a.logs()),
        ("proxy b logs".into(), b.logs()),
        ("proxy c logs".into(), c.logs()),
    ]);
    // The haystacks are real: certificates and logs are there.
    assert!(
        haystacks
            .iter()
            .any(|(_, h)| h.contains("BEGIN CERTIFICATE"))
    );
    for (where_, text) in &haystacks {
        assert!(
            !text.contains("PRIVATE KEY"),
            "{where_} shows a private key"
        );
        for (what, secret) in &secrets {
            assert!(
                !text.contains(secret.trim()),
                "{where_} contains the {what}"
            );
        }
    }
}
