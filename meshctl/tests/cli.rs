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
