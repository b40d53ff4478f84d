//! `meshctl inject`, `uninject`: the binary as an operator pipes it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const WORKLOADS: &str = include_str!("data/workloads.yaml");

fn meshctl(args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("MESH_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn inject_from_stdin_then_again_then_uninject() {
    let once = meshctl(&["inject", "-f", "-"], WORKLOADS.as_bytes());
    let injected = ok(&once);
    let report = String::from_utf8_lossy(&once.stderr);
    assert!(report.contains("injected Deployment shop/web"), "{report}");
    assert!(
        report.contains("unchanged Deployment shop/legacy: palisade.dev/inject: disabled"),
        "{report}"
    );
    assert!(injected.contains("palisade-proxy"));

    let twice = ok(&meshctl(&["inject", "-f", "-"], injected.as_bytes()));
    assert_eq!(twice, injected, "injecting twice changes nothing");

    let restored = ok(&meshctl(&["uninject", "-f", "-"], injected.as_bytes()));
    let plain = ok(&meshctl(&["uninject", "-f", "-"], WORKLOADS.as_bytes()));
    assert_eq!(restored, plain, "uninject restores the original");
    assert!(!restored.contains("palisade-"));
}

#[test]
fn inject_takes_settings_from_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    std::fs::write(&file, WORKLOADS).unwrap();
    let out = ok(&meshctl(
        &[
            "inject",
            "-f",
            file.to_str().unwrap(),
            "--proxy-image",
            "registry.example/proxy:dev",
        ],
        b"",
    ));
    assert!(out.contains("registry.example/proxy:dev"));
}

#[test]
fn bad_input_is_a_clear_error() {
    let o = meshctl(&["inject", "-f", "-"], b"kind: Pod\nmetadata: [");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("<stdin>"));
    let o = meshctl(&["inject", "-f", "/nonexistent/w.yaml"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read /nonexistent/w.yaml"));
}

#[test]
fn install_prints_manifests_and_keeps_its_secrets_where_told() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let args = [
        "install",
        "--secrets-dir",
        secrets.to_str().unwrap(),
        "--set",
        "controlPlane.replicas=3",
    ];
    let first = ok(&meshctl(&args, b""));
    assert!(first.contains("kind: MutatingWebhookConfiguration"));
    assert!(first.contains("replicas: 3"));
    // Reused, not regenerated: an upgrade keeps the CA every proxy trusts.
    assert_eq!(ok(&meshctl(&args, b"")), first);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(secrets.join("ca/issuer-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "keys are private");

    let o = meshctl(&["install", "--set", "colour=blue"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown key"));

    let un = ok(&meshctl(&["uninstall"], b""));
    assert!(un.contains("kind: Namespace") && !un.contains("CustomResourceDefinition"));
}

#[test]
fn new_commands_have_help() {
    for cmd in ["inject", "uninject", "install", "uninstall", "check"] {
        let o = meshctl(&[cmd, "--help"], b"");
        assert!(ok(&o).contains("Usage: meshctl"), "{cmd}");
    }
}

/// deploy/validate.sh: the install's manifests against the Kubernetes API
/// schemas of PyPI's kubernetes-validate (strict), and the CRD schemas
/// against the policy examples. Skips, saying so, only without PyPI.
#[test]
fn install_manifests_pass_kubernetes_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let out = Command::new("bash")
        .arg(root.join("deploy/validate.sh"))
        .arg(env!("CARGO_BIN_EXE_meshctl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    if stdout.starts_with("SKIPPED:") {
        println!("{stdout}");
        return;
    }
    assert!(
        stdout.contains("validates against Kubernetes 1.35.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("malformed policy objects are rejected"),
        "{stdout}"
    );
}

#[test]
fn check_without_an_api_server_fails_saying_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let o = meshctl(&["check", "--kubernetes-api", &url], b"");
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("FAIL  kubernetes-api  unreachable: "),
        "{out}"
    );
}
