//! The ingress in the lab, in real network namespaces: a client on the host
//! reaches the frontend at https://shop.example through the ingress pod;
//! the app sees the ingress's identity; on the bridge both legs are TLS
//! (outside TLS to the ingress, mesh mTLS 1.3 from the ingress to the
//! frontend's sidecar) and the request never crosses in clear; a backend
//! policy that admits only the ingress refuses a meshed pod.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use mesh_tests::netns::{Capture, LabSpec, Pod, available};
use mesh_tests::{all_encrypted_after_hello, metric, random_hex, server_hello_version, wait_for};

const EDGE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: mesh-system}
spec:
  gatewayClassName: palisade
  listeners:
    - name: shop
      hostname: shop.example
      port: 443
      protocol: HTTPS
      tls: {certificateRefs: [{name: shop-tls}]}
      allowedRoutes: {namespaces: {from: All}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: frontend, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: mesh-system}]
  hostnames: [shop.example]
  rules:
    - backendRefs: [{name: frontend, port: 80}]
---
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: only-the-ingress, namespace: shop}
spec:
  selector: {matchLabels: {app: frontend}}
  rules:
    - from: [{source: {principals: [cluster.local/ns/mesh-system/sa/ingress]}}]
";

fn curl_from_host(lab_dir: &std::path::Path, ingress: IpAddr, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(lab_dir.join("ingress-ca.pem"))
        .arg("--resolve")
        .arg(format!("shop.example:443:{ingress}"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://shop.example{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn outside_https_reaches_the_frontend_re_encrypted_through_the_ingress() {
    if !available("outside_https_reaches_the_frontend_re_encrypted_through_the_ingress") {
        return;
    }
    let mut lab = LabSpec::new(23)
        .pod(Pod::ingress(
            "ingress",
            5,
            (443, 80),
            "mesh-system/shop-tls",
            &["shop.example"],
        ))
        .pod(Pod::new("frontend", "shop", 10).echo(&[8080]))
        .pod(Pod::new("client", "shop", 20))
        .service("frontend", "shop", 10, "frontend", (80, 8080))
        .file("edge.yaml", EDGE)
        .up();
    let ingress = IpAddr::V4(lab.ip("ingress"));
    let dir = lab.state_dir();
    // Discovery and the certificate reach the ingress just after it is ready.
    let (code, body) = wait_for(
        "the frontend through the ingress",
        std::time::Duration::from_secs(15),
        || {
            let r = curl_from_host(&dir, ingress, "/warm-up");
            (r.0 == 200).then_some(r)
        },
    );
    assert_eq!(code, 200, "{body}");

    let capture = Capture::start(&lab.bridge());
    let marker = format!("palisade-edge-{}", random_hex(12));
    let (code, body) = curl_from_host(&dir, ingress, &format!("/{marker}"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let packets = capture.stop();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("x-palisade-peer-identity: spiffe://cluster.local/ns/mesh-system/sa/ingress"),
        "{body}"
    );
    let frontend_inbound = SocketAddr::from((lab.ip("frontend"), 4143));
    let (mut to_frontend, mut from_frontend) = (Vec::new(), Vec::new());
    let mut outside_leg = 0;
    for p in &packets {
        assert!(
            !p.payload
                .windows(marker.len())
                .any(|w| w == marker.as_bytes()),
            "the request crossed the bridge in clear: {p:?}"
        );
        if p.dst == frontend_inbound && p.src.ip() == ingress {
            to_frontend.extend_from_slice(&p.payload);
        } else if p.src == frontend_inbound && p.dst.ip() == ingress {
            from_frontend.extend_from_slice(&p.payload);
        } else if p.dst == SocketAddr::new(ingress, 443) {
            outside_leg += p.payload.len();
        }
    }
    assert!(
        outside_leg > 0,
        "the client's TLS to the ingress was not captured"
    );
    // The mesh hop: the pooled connection from the warm-up (TLS records) or
    // a new one (a TLS 1.3 handshake first).
    match to_frontend.first() {
        Some(0x16) => assert_eq!(
            server_hello_version(&from_frontend),
            Some(0x0304),
            "not TLS 1.3"
        ),
        Some(0x17) => assert_eq!(from_frontend.first(), Some(&0x17)),
        other => panic!("not TLS on the mesh hop: first byte {other:?}"),
    }
    assert!(all_encrypted_after_hello(&to_frontend));

    // Only the ingress may call the frontend: a meshed pod of the shop is
    // refused by the frontend's policy.
    let (code, body) = lab.curl("client", "http://frontend.shop/direct");
    assert_eq!(code, 403, "{body}");
    let m = lab.metrics("ingress");
    assert!(
        metric(
            &m,
            "mesh_tcp_connections_total",
            &[("direction", "ingress")]
        ) >= 2.0,
        "{m}"
    );
    // The edge's own log stream names the route and the backend.
    let log = std::fs::read_to_string(dir.join("pods/ingress/edge-access.log")).unwrap_or_default();
    let line = log
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("\"route\":\"HTTPRoute shop/frontend rule 0\""),
        "{line}"
    );
    assert!(
        line.contains("\"backend_identity\":\"spiffe://cluster.local/ns/shop/sa/frontend\""),
        "{line}"
    );
    lab.down();
}
