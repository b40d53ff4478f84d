//! Policy through real proxies: pushed from the watched folder over
//! Policy.Watch, enforced at L4 and per HTTP request with the shared evaluator.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use mesh_tests::*;

const WEB: &str = "cluster.local/ns/default/sa/web";

struct Mesh {
    cp: ControlPlane,
    app: EchoApp,
    tcp_app: Echo,
    api: Proxy,
    _web: Proxy,
    /// web's routes to api's HTTP app and TCP echo.
    http: SocketAddr,
    tcp: SocketAddr,
}

fn mesh(initial: &[(&str, &str)]) -> Mesh {
    let cp = ControlPlane::start(CpOptions::default());
    for (name, yaml) in initial {
        cp.write_policy(name, yaml);
    }
    // Proxies start on the loaded policy, not on an earlier empty one.
    cp.wait_policy_objects(initial.len());
    let app = EchoApp::start(cp.dir.path(), "api-app");
    let tcp_app = Echo::start();
    let mut o = ProxyOptions::new("default", "api");
    o.extra = vec!["--labels".into(), "app=api".into()];
    let api = Proxy::start(&cp, o);
    let mut o = ProxyOptions::new("default", "web");
    let http = o.route(&api, app.port(), &api.identity);
    let tcp = o.route(&api, tcp_app.port(), &api.identity);
    let web = Proxy::start(&cp, o);
    Mesh {
        cp,
        app,
        tcp_app,
        api,
        _web: web,
        http,
        tcp,
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, "api", &[]).unwrap_or((0, String::new()))
}

/// Ways to write `/admin` that normalize to it: each must be denied.
const ADMIN_PATHS: [&str; 6] = [
    "/admin",
    "/admin/users",
    "//admin",
    "/x/../admin",
    "/./admin/",
    "/%61dmin",
];
/// Encodings whose meaning differs between servers: refused before any decision.
const AMBIGUOUS_PATHS: [&str; 3] = ["/%2Fadmin", "/admin%00", "/%5cadmin"];

/// One HTTP/2 (prior knowledge) GET with the path exactly as given:
/// (status, HTTP version, body).
fn curl_h2(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "--path-as-is",
        ])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", ""));
    let (code, version) = last.split_once(' ').unwrap_or(("0", ""));
    let body = body
        .strip_suffix('\n')
        .map_or(String::new(), |b| format!("{b}\n"));
    (code.parse().unwrap_or(0), version.to_string(), body)
}

fn deny_admin(name: &str) -> String {
    format!(
        r#"apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: default
spec:
  selector:
    matchLabels:
      app: api
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin", "/admin/*"]
"#
    )
}

fn decisions(p: &Proxy, decision: &str, policy: &str) -> f64 {
    metric(
        &p.metrics(),
        "mesh_authz_decisions_total",
        &[
            ("direction", "inbound"),
            ("decision", decision),
            ("policy", policy),
        ],
    )
}

#[test]
fn denied_http_request_gets_403_naming_the_rule() {
    let yaml = deny_admin("deny-admin");
    let m = mesh(&[("deny-admin.yaml", &yaml)]);
    let (code, body) = get(m.http, "/hello");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("api-app received \"GET /hello HTTP/1.1\""));
    // The app learns the caller from the proxy, never from the client.
    assert!(
        body.contains(&format!("x-palisade-peer-identity: spiffe://{WEB}")),
        "{body}"
    );

    let rule = "AuthorizationPolicy default/deny-admin rule 0";
    for path in ADMIN_PATHS {
        let (code, body) = get(m.http, path);
        assert_eq!(code, 403, "{path}: {body}");
        assert_eq!(body, format!("access denied: {rule}\n"), "{path}");
    }
    // Ambiguous encodings are refused before any decision.
    for path in AMBIGUOUS_PATHS {
        assert_eq!(get(m.http, path).0, 400, "{path}");
    }
    assert_eq!(decisions(&m.api, "deny", rule), 6.0);
    // The same table over HTTP/2 (prior knowledge, paths sent as written):
    // the same decisions and the same body naming the rule.
    for path in ADMIN_PATHS {
        let (code, version, body) = curl_h2(m.http, path);
        assert_eq!((code, version.as_str()), (403, "2"), "{path}: {body}");
        assert_eq!(body, format!("access denied: {rule}\n"), "{path}");
    }
    for path in AMBIGUOUS_PATHS {
        assert_eq!(curl_h2(m.http, path).0, 400, "{path}");
    }
    assert_eq!(decisions(&m.api, "deny", rule), 12.0);
    // A forged identity header is replaced by the verified one.
    let (code, body) = http_request(
        m.http,
        "GET",
        "/hello",
        "api",
        &[(
            "x-palisade-peer-identity",
            "spiffe://cluster.local/ns/default/sa/admin",
        )],
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(!body.contains("sa/admin"), "{body}");
    // The access log names the rule (logs are written in batches).
    wait_for(
        "the access log naming the rule",
        Duration::from_secs(5),
        || {
            m.api
                .logs()
                .contains(&format!("\"policy\":\"{rule}\""))
                .then_some(())
        },
    );
}

#[test]
fn policy_change_applies_within_a_second_and_keeps_allowed_connections() {
    let m = mesh(&[]);
    let port = m.tcp_app.port();
    // An open TCP connection through the mesh.
    let mut conn = TcpStream::connect(m.tcp).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo = |c: &mut TcpStream, msg: &[u8]| -> bool {
        let mut buf = vec![0u8; msg.len()];
        c.write_all(msg).is_ok() && c.read_exact(&mut buf).is_ok() && buf == msg
    };
    assert!(echo(&mut conn, b"one"));

    // Allow web to the TCP port only: the open connection is allowed and stays.
    let allow = |who: &str| {
        format!(
            r#"apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {{name: allow-tcp, namespace: default}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["{who}"]}}}}]
    to: [{{operation: {{ports: ["{port}"]}}}}]
"#
        )
    };
    let v0 = m.api.policy_version().unwrap();
    let written = Instant::now();
    m.cp.write_policy("allow.yaml", &allow(WEB));
    wait_for(
        "new policy version at the proxy",
        Duration::from_secs(1),
        || (m.api.policy_version()? != v0).then_some(()),
    );
    let took = written.elapsed();
    assert!(
        echo(&mut conn, b"two"),
        "allowed connection survives the update"
    );
    // The HTTP port is not in the ALLOW rule: denied now.
    assert_eq!(get(m.http, "/hello").0, 403);

    // Now only another principal may connect: the open connection is closed
    // and new ones are refused, within a second.
    let written = Instant::now();
    m.cp.write_policy("allow.yaml", &allow("cluster.local/ns/default/sa/other"));
    wait_for(
        "open connection closed by the new policy",
        Duration::from_secs(1),
        || {
            let mut buf = [0u8; 1];
            let _ = conn.set_read_timeout(Some(Duration::from_millis(20)));
            match conn.read(&mut buf) {
                Ok(0) => Some(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(()),
                _ => None,
            }
        },
    );
    let revoked = written.elapsed();
    assert!(round_trip(m.tcp, b"new").unwrap_or_default().is_empty());
    assert!(decisions(&m.api, "deny", "default deny") >= 1.0);
    eprintln!("policy update visible after {took:?}; revocation after {revoked:?}");
}

#[test]
fn broken_yaml_keeps_the_last_good_policy_and_is_reported() {
    let yaml = deny_admin("deny-admin");
    let m = mesh(&[("deny-admin.yaml", &yaml)]);
    assert_eq!(get(m.http, "/admin").0, 403);
    let good = m.cp.status()["policy"]["version"].as_u64().unwrap();

    m.cp.write_policy("broken.yaml", "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: default}\nspec:\n  action: ALLOW\n  rules:\n  - to: [{operation: {ports: [\"not-a-port\"]}}]\n");
    let error = wait_for("error reported in /status", Duration::from_secs(5), || {
        m.cp.status()["policy"]["error"]
            .as_str()
            .map(str::to_string)
    });
    // The error names the file, the object and the field.
    assert!(error.contains("broken.yaml"), "{error}");
    assert!(error.contains("AuthorizationPolicy default/bad"), "{error}");
    assert!(error.contains("ports"), "{error}");
    let (_, metrics) = http_get(m.cp.admin, "/metrics").unwrap();
    assert_eq!(metric(&metrics, "mesh_policy_config_valid", &[]), 0.0);
    assert!(
        metric(
            &metrics,
            "mesh_policy_reloads_total",
            &[("result", "error")]
        ) >= 1.0
    );
    // The last good policy stays in force, everywhere.
    assert_eq!(m.cp.status()["policy"]["version"].as_u64(), Some(good));
    assert_eq!(get(m.http, "/admin").0, 403);
    assert_eq!(get(m.http, "/hello").0, 200);

    // Fixing the file clears the error.
    m.cp.remove_policy("broken.yaml");
    wait_for("error cleared", Duration::from_secs(5), || {
        m.cp.status()["policy"]["error"].is_null().then_some(())
    });
}

#[test]
fn exception_stops_applying_at_expires_at() {
    // RFC 3339 with whole seconds: the instant is exactly what is written.
    let at_time = time::OffsetDateTime::from(SystemTime::now() + Duration::from_secs(3))
        .replace_nanosecond(0)
        .unwrap();
    let expires = SystemTime::from(at_time);
    let at = at_time
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let deny_all = r#"apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: default-deny, namespace: default}
spec: {}
"#;
    let exception = format!(
        r#"apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata:
  name: temp-web
  namespace: default
  annotations:
    palisade.dev/expires-at: "{at}"
spec:
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["{WEB}"]}}}}]
"#
    );
    let m = mesh(&[("deny.yaml", deny_all), ("exception.yaml", &exception)]);
    assert_eq!(get(m.http, "/hello").0, 200, "the exception allows web");
    // An open TCP connection allowed by the exception is closed when it ends.
    let mut conn = TcpStream::connect(m.tcp).unwrap();
    conn.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.read_exact(&mut one).unwrap();

    let (code, body) = wait_for("the exception expired", Duration::from_secs(6), || {
        let r = get(m.http, "/hello");
        (r.0 == 403).then_some(r)
    });
    assert_eq!(code, 403);
    assert_eq!(body, "access denied: default deny\n");
    assert!(SystemTime::now() >= expires, "not before the instant");
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(
        matches!(conn.read(&mut one), Ok(0) | Err(_)),
        "the open connection was closed at expiry"
    );
}

#[test]
fn dry_run_denies_nothing_and_is_counted() {
    let yaml = r#"apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata:
  name: would-deny
  namespace: default
  annotations:
    palisade.dev/dry-run: "true"
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: ["GET"]}}]
"#;
    let m = mesh(&[("dry.yaml", yaml)]);
    for _ in 0..3 {
        assert_eq!(get(m.http, "/hello").0, 200);
    }
    assert_eq!(
        decisions(
            &m.api,
            "dry_run_deny",
            "AuthorizationPolicy default/would-deny rule 0"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m.api.metrics(),
            "mesh_authz_decisions_total",
            &[("decision", "deny")]
        ),
        0.0
    );
    let _ = &m.app;
}

#[test]
fn strict_refuses_a_plaintext_client() {
    let strict = r#"apiVersion: security.palisade.dev/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec:
  mtls: {mode: STRICT}
"#;
    let m = mesh(&[("strict.yaml", strict)]);
    let mut c = TcpStream::connect(m.api.inbound).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /hello HTTP/1.1\r\nHost: api\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    assert!(out.is_empty(), "nothing is served to a plaintext client");
    wait_for("plaintext denial counted", Duration::from_secs(5), || {
        (decisions(&m.api, "deny", "PeerAuthentication default/strict") == 1.0).then_some(())
    });
    // mTLS clients are unaffected.
    assert_eq!(get(m.http, "/hello").0, 200);
}

#[test]
fn proxies_keep_the_last_policy_when_the_control_plane_goes_away() {
    let yaml = deny_admin("deny-admin");
    let mut m = mesh(&[("deny-admin.yaml", &yaml)]);
    let version = m.api.policy_version().unwrap();
    m.cp.stop();
    // Still enforced, still ready, same version: proxies never invent policy.
    assert_eq!(get(m.http, "/admin").0, 403);
    assert_eq!(get(m.http, "/hello").0, 200);
    assert_eq!(m.api.admin_get("/ready").0, 200);
    assert_eq!(m.api.policy_version(), Some(version));
    // A change made while it is down arrives once it is back.
    m.cp.remove_policy("deny-admin.yaml");
    m.cp.restart();
    wait_for(
        "policy after the control plane is back",
        Duration::from_secs(10),
        || (get(m.http, "/admin").0 == 200).then_some(()),
    );
}
