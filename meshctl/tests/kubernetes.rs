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
