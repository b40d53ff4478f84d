//! The README's loopback quickstart works: the script brings up a mesh,
//! sends a request across the mTLS hop and inspects the certificates.

use std::process::Command;

use mesh_tests::*;

#[test]
fn quickstart_script_runs() {
    let bin_dir = bin("mesh-proxy").parent().unwrap().to_path_buf();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    // Standard ports moved by an offset, so the test does not collide with a
    // quickstart someone is running.
    // Below the ephemeral range (32768+), where other tests pick free ports.
    let offset = 10_000 + (std::process::id() % 500) * 10;
    let out = Command::new("bash")
        .arg(root.join("scripts/quickstart.sh"))
        .arg("--once")
        .env("MESH_BIN_DIR", &bin_dir)
        .env("QS_PORT_BASE", offset.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}"
    );
    // The app answered through both proxies ...
    assert!(
        stdout.contains("api-app received \"GET /hello HTTP/1.1\""),
        "{stdout}"
    );
    // ... meshctl showed the api proxy's SVID, and verified what it presents.
    assert!(
        stdout.contains("identity:    spiffe://cluster.local/ns/default/sa/api"),
        "{stdout}"
    );
    assert!(stdout.contains("verified:    yes"), "{stdout}");
    assert!(
        stdout.contains("mesh_tcp_connections_total{direction=\"inbound\",tls=\"true\"} 1"),
        "{stdout}"
    );
    assert!(stdout.contains("quickstart OK"));
}
