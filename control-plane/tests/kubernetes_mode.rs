//! The control plane in Kubernetes mode on loopback, for real except for
//! the API server: `mesh-control-plane --source kubernetes` reads its CA
//! Secret, lists the cluster's objects and reviews the proxy's token
//! through recorded API responses (`recorded/cluster.json`, replayed by
//! mesh-kube-api's recording server), and a real `mesh-proxy run` gets its
//! certificate and policy from it over mTLS.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use mesh_tests::{Proc, bin, free_port, http_get, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_gets_its_certificate_and_policy_from_a_kubernetes_mode_control_plane() {
    let recording = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recorded/cluster.json");
    let (api, replay) = mesh_kube_api::replay::serve(&recording).await;
    let dir = tempfile::tempdir().unwrap();

    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cp = Command::new(env!("CARGO_BIN_EXE_mesh-control-plane"));
    cp.env("MESH_SOURCE", "kubernetes")
        .env("MESH_KUBERNETES_API", format!("http://{api}"))
        .env("MESH_DATA_DIR", dir.path().join("data"))
        .env("MESH_LISTEN", listen.to_string())
        .env("MESH_ADMIN", admin.to_string());
    let cp = Proc::spawn(cp, dir.path().join("cp.log"));
    wait_for(
        "the control plane to be ready",
        Duration::from_secs(20),
        || (http_get(admin, "/ready").ok()?.0 == 200).then_some(()),
    );

    // The proxy trusts the root of the CA Secret, as the ConfigMap holds it.
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&recording).unwrap()).unwrap();
    let root = base64::engine::general_purpose::STANDARD
        .decode(
            rec["exchanges"][0]["body"]["data"]["ca.crt"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    std::fs::write(dir.path().join("bundle.pem"), &root).unwrap();
    // What the kubelet projects; the recorded TokenReview vouches for it.
    std::fs::write(
        dir.path().join("token"),
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln",
    )
    .unwrap();
    let proxy_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut proxy = Command::new(bin("mesh-proxy"));
    proxy
        .arg("run")
        .args(["--control-plane", &listen.to_string()])
        .args([
            "--trust-bundle",
            dir.path().join("bundle.pem").to_str().unwrap(),
        ])
        .args([
            "--namespace",
            "shop",
            "--service-account",
            "api",
            "--workload",
            "api-1",
        ])
        .args(["--token-file", dir.path().join("token").to_str().unwrap()])
        .args(["--inbound", &format!("127.0.0.1:{}", free_port())])
        .args(["--outbound", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &proxy_admin.to_string()]);
    let proxy = Proc::spawn(proxy, dir.path().join("proxy.log"));
    wait_for(
        "the proxy to hold a certificate and a policy",
        Duration::from_secs(20),
        || (http_get(proxy_admin, "/ready").ok()?.0 == 200).then_some(()),
    );

    let certs: serde_json::Value =
        serde_json::from_str(&http_get(proxy_admin, "/certs").unwrap().1).unwrap();
    assert_eq!(
        certs["identity"],
        "spiffe://cluster.local/ns/shop/sa/api",
        "{}",
        proxy.logs()
    );
    // The policy is the cluster's: the api pod's share of the listed objects.
    let policy = http_get(proxy_admin, "/policy").unwrap().1;
    assert!(policy.contains("default-deny"), "{policy}");
    // The certificate came through a TokenReview for our audience.
    let reviews: Vec<_> = replay
        .bodies()
        .into_iter()
        .filter(|b| b["kind"] == "TokenReview")
        .collect();
    assert_eq!(reviews.len(), 1, "{}", cp.logs());
    assert_eq!(
        reviews[0]["spec"]["audiences"],
        serde_json::json!(["mesh-control-plane"])
    );
    // The connected proxy is the pod's workload: labels from the Pod.
    let status: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/status").unwrap().1).unwrap();
    let connected = &status["policy"]["connected_proxies"][0];
    assert_eq!(connected["workload"], "api-1");
    assert_eq!(connected["labels"]["app"], "api");
}
