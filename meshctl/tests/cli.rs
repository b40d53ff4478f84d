//! The `meshctl` binary as an operator runs it: output on stdout, errors on
//! stderr, exit codes (0 ok, 1 failed, 2 usage), environment variables.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mesh_identity::bundle::der_to_pem;
use mesh_identity::ca::Ca;
use mesh_identity::testing::{LeafSpec, TestCa};
use mesh_identity::token::TokenKey;

const API: &str = "spiffe://cluster.local/ns/shop/sa/api";

fn meshctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    meshctl_with_stdin(args, env, b"")
}

fn meshctl_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Whatever the developer's shell has set must not leak into the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("MESH_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A mesh CA in a temp dir, and a `[leaf, issuer]` PEM file it signed.
struct Fixture {
    dir: tempfile::TempDir,
    chain_pem: PathBuf,
    bundle_pem: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    Ca::load_or_generate(&ca_dir, "cluster.local").unwrap();
    let issuer = TestCa::from_pem(
        &std::fs::read_to_string(ca_dir.join("issuer-cert.pem")).unwrap(),
        &std::fs::read_to_string(ca_dir.join("issuer-key.pem")).unwrap(),
    );
    let (leaf, _) = issuer.sign(&LeafSpec::svid(API));
    let chain_pem = dir.path().join("chain.pem");
    std::fs::write(&chain_pem, der_to_pem(&leaf) + &der_to_pem(&issuer.cert)).unwrap();
    Fixture {
        bundle_pem: ca_dir.join("root-cert.pem"),
        chain_pem,
        dir,
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["token", "--help"],
        &["token", "create", "--help"],
        &["cert", "--help"],
        &["cert", "inspect", "--help"],
        &["policy", "--help"],
        &["policy", "check", "--help"],
        &["policy", "lint", "--help"],
        &["policy", "get", "--help"],
    ] {
        let o = meshctl(args, &[]);
        assert!(o.status.success(), "{args:?}");
        assert!(stdout(&o).contains("Usage: meshctl"), "{args:?}");
    }
    let help = stdout(&meshctl(&["cert", "inspect", "--help"], &[]));
    for needle in [
        "--admin",
        "--connect",
        "--trust-bundle",
        "MESH_ADMIN",
        "Examples:",
    ] {
        assert!(help.contains(needle), "{needle}");
    }
}

#[test]
fn token_create_prints_only_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    let args = [
        "token",
        "create",
        "--data-dir",
        d,
        "--namespace",
        "shop",
        "--service-account",
        "api",
    ];
    let first = meshctl(&args, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = stdout(&first);
    assert_eq!(out.lines().count(), 1, "{out}");
    let claims = TokenKey::load_or_generate(dir.path())
        .unwrap()
        .verify(out.trim_end())
        .unwrap();
    assert_eq!(
        (claims.namespace.as_str(), claims.service_account.as_str()),
        ("shop", "api")
    );
    // The new key is announced on stderr, never mixed into the token.
    assert!(stderr(&first).contains("created a new token signing key"));
    assert!(!stderr(&first).contains(out.trim_end()));
    let second = meshctl(&args, &[]);
    assert!(stderr(&second).is_empty(), "{}", stderr(&second));

    // Every flag also comes from MESH_<FLAG>.
    let env = meshctl(
        &["token", "create"],
        &[
            ("MESH_DATA_DIR", d),
            ("MESH_NAMESPACE", "shop"),
            ("MESH_SERVICE_ACCOUNT", "db"),
            ("MESH_TTL", "2m"),
        ],
    );
    assert!(env.status.success(), "{}", stderr(&env));
    let claims = TokenKey::load_or_generate(dir.path())
        .unwrap()
        .verify(stdout(&env).trim_end())
        .unwrap();
    assert_eq!(claims.service_account, "db");
    assert_eq!(claims.expires_at - claims.issued_at, 120);
}

#[test]
fn token_create_refusals_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    let bad_ns = meshctl(
        &[
            "token",
            "create",
            "--data-dir",
            d,
            "--namespace",
            "a/b",
            "--service-account",
            "api",
        ],
        &[],
    );
    assert_eq!(bad_ns.status.code(), Some(1));
    assert!(stdout(&bad_ns).is_empty());
    assert!(stderr(&bad_ns).starts_with("error: invalid --namespace \"a/b\""));

    let bad_ttl = meshctl(
        &[
            "token",
            "create",
            "--data-dir",
            d,
            "--namespace",
            "a",
            "--service-account",
            "b",
            "--ttl",
            "soon",
        ],
        &[],
    );
    assert_eq!(bad_ttl.status.code(), Some(2));
    assert!(stderr(&bad_ttl).contains("--ttl"));
}

#[test]
fn cert_inspect_file_table_and_json() {
    let f = fixture();
    let table = meshctl(&["cert", "inspect", path(&f.chain_pem)], &[]);
    assert!(table.status.success(), "{}", stderr(&table));
    let out = stdout(&table);
    assert!(out.starts_with(&format!("identity:    {API}\n")), "{out}");
    for label in [
        "serial:",
        "not before:",
        "not after:",
        "time left:",
        "key:",
        "chain:",
    ] {
        assert!(out.contains(label), "{label}\n{out}");
    }

    let json = meshctl(&["cert", "inspect", "-o", "json", path(&f.chain_pem)], &[]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["identity"], API);
    assert_eq!(v["chain"].as_array().unwrap().len(), 2);

    // From stdin, verified against the mesh's trust bundle.
    let pem = std::fs::read(&f.chain_pem).unwrap();
    let piped = meshctl_with_stdin(
        &[
            "cert",
            "inspect",
            "-",
            "--trust-bundle",
            path(&f.bundle_pem),
            "-o",
            "json",
        ],
        &[],
        &pem,
    );
    assert!(piped.status.success(), "{}", stderr(&piped));
    let v: serde_json::Value = serde_json::from_slice(&piped.stdout).unwrap();
    assert_eq!(v["verified"], true);
}

#[test]
fn failed_verification_prints_the_report_and_exits_1() {
    let f = fixture();
    let other = fixture();
    let o = meshctl(
        &[
            "cert",
            "inspect",
            path(&f.chain_pem),
            "--trust-bundle",
            path(&other.bundle_pem),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("verified:    NO, against "),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).starts_with("error: the chain does not verify against "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let f = fixture();
    let cases: [(&str, &[u8]); 4] = [
        ("empty.pem", b""),
        ("text.pem", b"hello world\n"),
        ("truncated.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n"),
        (
            "junk.pem",
            b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        ),
    ];
    for (name, contents) in cases {
        let p = f.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        let o = meshctl(&["cert", "inspect", path(&p)], &[]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = stderr(&o);
        assert!(
            err.starts_with("error: ") && err.contains(name),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(stdout(&o).is_empty(), "{name}");
    }
}

#[test]
fn command_line_source_wins_over_the_environment() {
    let f = fixture();
    // A sidecar container may have MESH_ADMIN set for the proxy.
    let env = [("MESH_ADMIN", "http://127.0.0.1:1")];
    let o = meshctl(&["cert", "inspect", path(&f.chain_pem)], &env);
    assert!(o.status.success(), "{}", stderr(&o));

    // Two sources on the command line are a usage error.
    let o = meshctl(
        &[
            "cert",
            "inspect",
            "--admin",
            "http://127.0.0.1:1",
            path(&f.chain_pem),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("give only one of"), "{}", stderr(&o));

    // No source at all.
    let o = meshctl(&["cert", "inspect"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--admin URL, --connect HOST:PORT or FILE.pem"));
}

/// A policy folder: `shop` is default-deny, and `web` may call the API.
fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("shop.yaml"),
        "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: default-deny, namespace: shop}\nspec: {}\n---\n\
         apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: api-from-web, namespace: shop}\nspec:\n  \
         selector: {matchLabels: {app: api}}\n  rules:\n  - from:\n    \
         - source: {principals: [\"cluster.local/ns/shop/sa/web\"]}\n",
    )
    .unwrap();
    dir
}

fn check_args<'a>(dir: &'a str, service_account: &'a str) -> Vec<&'a str> {
    vec![
        "policy",
        "check",
        "--config-dir",
        dir,
        "--from-namespace",
        "shop",
        "--from-service-account",
        service_account,
        "--to-namespace",
        "shop",
        "--to-labels",
        "app=api",
        "--port",
        "8080",
    ]
}

#[test]
fn policy_help_documents_flags_and_exit_codes() {
    let check = stdout(&meshctl(&["policy", "check", "--help"], &[]));
    for needle in [
        "--config-dir",
        "--from-namespace",
        "--from-service-account",
        "--plaintext",
        "--from-labels",
        "--source-ip",
        "--to-namespace",
        "--to-labels",
        "--to-ip",
        "--port",
        "--method",
        "--path",
        "--host",
        "--header",
        "--trust-domain",
        "[default: cluster.local]",
        "MESH_CONFIG_DIR",
        "Exit status: 0 allowed",
        "3 denied",
        "Examples:",
    ] {
        assert!(check.contains(needle), "check: {needle}");
    }
    let lint = stdout(&meshctl(&["policy", "lint", "--help"], &[]));
    for needle in [
        "no-default-deny",
        "allow-all",
        "expires-soon",
        "--soon",
        "Exit status",
    ] {
        assert!(lint.contains(needle), "lint: {needle}");
    }
    let get = stdout(&meshctl(&["policy", "get", "--help"], &[]));
    assert!(get.contains("GET /policy") && get.contains("MESH_ADMIN"));
}

#[test]
fn policy_check_exit_codes_and_json() {
    let dir = policy_dir();
    let d = path(dir.path());

    let mut args = check_args(d, "web");
    args.extend(["-o", "json"]);
    let allowed = meshctl(&args, &[]);
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr(&allowed));
    let v: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(
        v["decided_by"],
        "AuthorizationPolicy shop/api-from-web rule 0"
    );
    assert_eq!(v["stage"], "AuthorizationPolicy");
    assert_eq!(v["dry_run"], serde_json::Value::Null);

    let mut args = check_args(d, "db");
    args.extend(["-o", "json"]);
    let denied = meshctl(&args, &[]);
    assert_eq!(denied.status.code(), Some(3), "{}", stderr(&denied));
    let v: serde_json::Value = serde_json::from_slice(&denied.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["decided_by"], "default deny");
    assert!(stderr(&denied).is_empty(), "{}", stderr(&denied));

    // Table output, first line as docs/policy.md shows it.
    let table = meshctl(&check_args(d, "web"), &[]);
    assert!(
        stdout(&table).starts_with("allow: AuthorizationPolicy shop/api-from-web rule 0\n"),
        "{}",
        stdout(&table)
    );

    // Every flag also comes from MESH_<FLAG>.
    let env = meshctl(
        &["policy", "check"],
        &[
            ("MESH_CONFIG_DIR", d),
            ("MESH_FROM_NAMESPACE", "shop"),
            ("MESH_FROM_SERVICE_ACCOUNT", "web"),
            ("MESH_TO_NAMESPACE", "shop"),
            ("MESH_TO_LABELS", "app=api"),
            ("MESH_PORT", "8080"),
            ("MESH_METHOD", "GET"),
            ("MESH_PATH", "/a/../b"),
            ("MESH_TRUST_DOMAIN", "example.org"),
            ("MESH_OUTPUT", "json"),
        ],
    );
    assert_eq!(env.status.code(), Some(0), "{}", stderr(&env));
    let v: serde_json::Value = serde_json::from_slice(&env.stdout).unwrap();
    assert_eq!(v["principal"], "spiffe://example.org/ns/shop/sa/web");
    assert_eq!(v["path"], "/b");

    // A caller on the command line wins over the other kind from the environment.
    let mut args = check_args(d, "web");
    args.extend(["-o", "json"]);
    let o = meshctl(&args, &[("MESH_PLAINTEXT", "true")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let args = [
        "policy",
        "check",
        "--config-dir",
        d,
        "--plaintext",
        "--to-namespace",
        "shop",
        "--to-labels",
        "app=api",
        "--port",
        "8080",
        "-o",
        "json",
    ];
    let o = meshctl(&args, &[("MESH_FROM_SERVICE_ACCOUNT", "web")]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Palisade's default is STRICT: the plaintext caller is refused.
    assert_eq!(v["stage"], "PeerAuthentication");
    assert_eq!(v["principal"], serde_json::Value::Null);
}

#[test]
fn policy_check_errors_and_usage() {
    let dir = policy_dir();
    let d = path(dir.path());

    // A broken folder: exit 1, the file, object and field named, nothing on stdout.
    std::fs::write(
        dir.path().join("zz.yaml"),
        "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: bad, namespace: shop}\nspec: {action: MAYBE}\n",
    )
    .unwrap();
    let broken = meshctl(&check_args(d, "web"), &[]);
    assert_eq!(broken.status.code(), Some(1));
    let err = stderr(&broken);
    assert!(err.starts_with("error: policy in "), "{err}");
    assert!(
        err.contains("zz.yaml: AuthorizationPolicy shop/bad: spec.action"),
        "{err}"
    );
    assert!(stdout(&broken).is_empty());

    // Usage errors: exit 2.
    let usage: [&[&str]; 5] = [
        // Neither an identity nor --plaintext.
        &[
            "policy",
            "check",
            "--config-dir",
            d,
            "--to-namespace",
            "shop",
            "--to-labels",
            "",
            "--port",
            "80",
        ],
        // Both.
        &[
            "policy",
            "check",
            "--config-dir",
            d,
            "--from-namespace",
            "a",
            "--from-service-account",
            "b",
            "--plaintext",
            "--to-namespace",
            "shop",
            "--to-labels",
            "",
            "--port",
            "80",
        ],
        // --host without --method or --path.
        &[
            "policy",
            "check",
            "--config-dir",
            d,
            "--plaintext",
            "--to-namespace",
            "shop",
            "--to-labels",
            "",
            "--port",
            "80",
            "--host",
            "x",
        ],
        // A service account without its namespace.
        &[
            "policy",
            "check",
            "--config-dir",
            d,
            "--from-service-account",
            "b",
            "--to-namespace",
            "shop",
            "--to-labels",
            "",
            "--port",
            "80",
        ],
        // Port 0.
        &[
            "policy",
            "check",
            "--config-dir",
            d,
            "--plaintext",
            "--to-namespace",
            "shop",
            "--to-labels",
            "",
            "--port",
            "0",
        ],
    ];
    for args in usage {
        let o = meshctl(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn policy_lint_exit_codes() {
    let dir = policy_dir();
    let d = path(dir.path());
    // shop has a default deny but no egress restriction: a warning.
    let o = meshctl(&["policy", "lint", "--config-dir", d, "-o", "json"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["failed"], true);
    assert_eq!(v["findings"][0]["code"], "unrestricted-egress");

    std::fs::write(
        dir.path().join("egress.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: egress, namespace: shop}\n\
         spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {}}]}]}\n",
    )
    .unwrap();
    let o = meshctl(&["policy", "lint", "--config-dir", d], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&o), "no findings\n");
}

#[test]
fn policy_get_from_a_proxy_admin() {
    use std::io::{Read, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"version":3,"received_at":"2030-01-01T00:00:00Z","next_expiry":null,"snapshot":{"objects":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop"}}]}}"#;
        let _ = write!(
            socket,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let o = meshctl(
        &["policy", "get", "--admin", &format!("http://{addr}")],
        &[],
    );
    server.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("version:     3\n"), "{out}");
    assert!(out.contains("\nNamespace  shop "), "{out}");

    // Nothing listens there any more: exit 1 with the reason.
    let o = meshctl(&["policy", "get", "--admin", &addr], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot connect to the proxy admin"),
        "{}",
        stderr(&o)
    );
}

/// `meshctl egress report | suggest` from an access log, table and JSON;
/// no source at all is a usage error.
#[test]
fn egress_report_and_suggest_from_a_log() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let log = dir.path().join("access.log");
    std::fs::write(
        &log,
        "{\"ts\":\"2026-12-03T10:00:01.000Z\",\"direction\":\"egress\",\"namespace\":\"shop\",\"workload\":\"checkout\",\"dst\":\"203.0.113.5:443\",\"host\":\"api.partner.example\",\"port\":443,\"protocol\":\"TLS\",\"decision\":\"allow\",\"policy\":\"default allow\"}\n",
    )
    .expect("write the log");
    let log = log.display().to_string();
    let report = meshctl(&["egress", "report", "--log", &log], &[]);
    assert!(report.status.success(), "{report:?}");
    assert!(
        stdout(&report).contains("api.partner.example"),
        "{}",
        stdout(&report)
    );
    let json = meshctl(&["egress", "suggest", "--log", &log, "-o", "json"], &[]);
    assert!(json.status.success(), "{json:?}");
    let docs: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("JSON");
    assert_eq!(docs[0]["kind"], "EgressPolicy");
    assert_eq!(
        docs[0]["spec"]["allow"][0]["hosts"][0],
        "api.partner.example"
    );
    let none = meshctl(&["egress", "report"], &[]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("--admin URL or --log FILE"));
}
