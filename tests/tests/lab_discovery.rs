//! Service discovery in the lab: an unmodified curl reaches a Service VIP
//! over mTLS (the bridge only ever carries TLS between pods), and the
//! endpoints every proxy uses follow pods going away and coming back
//! within a second.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mesh_tests::netns::{Capture, LabSpec, Pod, available};
use mesh_tests::{all_encrypted_after_hello, metric, random_hex, server_hello_version};

/// The bound on endpoint changes reaching every proxy.
const ENDPOINT_BOUND: Duration = Duration::from_secs(1);

#[test]
fn curl_to_a_service_vip_is_mtls_on_the_wire() {
    if !available("curl_to_a_service_vip_is_mtls_on_the_wire") {
        return;
    }
    let mut lab = LabSpec::new(21)
        .pod(Pod::new("client", "shop", 10))
        .pod(Pod::new("server", "shop", 20).echo(&[8080]))
        .service("server", "shop", 20, "server", (80, 8080))
        .up();
    // Warm up (discovery may land just after /ready), outside the capture.
    let (code, body) = lab.curl_answered("client", "http://server.shop/warm-up");
    assert_eq!(code, 200, "{body}");

    let capture = Capture::start(&lab.bridge());
    let marker = format!("palisade-marker-{}", random_hex(12));
    let (code, body) = lab.curl(
        "client",
        &format!("http://server.shop.svc.cluster.local/{marker}"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let packets = capture.stop();
    assert_eq!(code, 200, "{body}");
    // The app got the request, from its own sidecar (on the pod's address).
    assert!(
        body.starts_with(&format!(
            "server received \"GET /{marker} HTTP/1.1\" from {}:",
            lab.ip("server")
        )),
        "{body}"
    );
    let m = lab.metrics("server");
    // Both requests reached the server's sidecar over mesh mTLS: on the
    // client sidecar's one pooled connection.
    assert!(
        metric(
            &m,
            "mesh_tcp_connections_total",
            &[("direction", "inbound"), ("tls", "true")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "mesh_requests_total",
            &[("direction", "inbound"), ("code", "200")]
        ) >= 2.0,
        "{m}"
    );

    // On the bridge: no plaintext, no VIP, pod to pod only to the inbound port.
    let pods: HashSet<IpAddr> = [lab.ip("client"), lab.ip("server")].map(IpAddr::V4).into();
    let vip = IpAddr::V4(lab.vip(20));
    assert!(!packets.is_empty(), "nothing captured");
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    let server_inbound = SocketAddr::from((lab.ip("server"), 4143));
    for p in &packets {
        assert!(
            !p.payload
                .windows(marker.len())
                .any(|w| w == marker.as_bytes()),
            "the request crossed the bridge in clear: {p:?}"
        );
        assert!(
            p.dst.ip() != vip && p.src.ip() != vip,
            "VIP on the wire: {p:?}"
        );
        if pods.contains(&p.src.ip()) && pods.contains(&p.dst.ip()) {
            assert!(
                p.src.port() == 4143 || p.dst.port() == 4143,
                "pod-to-pod traffic outside the mesh port: {p:?}"
            );
        }
        if p.dst == server_inbound {
            to_server.extend_from_slice(&p.payload);
        } else if p.src == server_inbound {
            to_client.extend_from_slice(&p.payload);
        }
    }
    // The request rode the pooled connection the warm-up opened (so its
    // handshake is before the capture) or a new one (then the capture
    // starts with the ClientHello): TLS records either way, and TLS 1.3
    // whenever the hello is in view.
    match to_server.first() {
        Some(0x16) => assert_eq!(
            server_hello_version(&to_client),
            Some(0x0304),
            "not TLS 1.3"
        ),
        Some(0x17) => assert_eq!(to_client.first(), Some(&0x17), "server stream"),
        other => panic!("not TLS on the wire: first byte {other:?}"),
    }
    assert!(all_encrypted_after_hello(&to_server), "client stream");
    assert!(all_encrypted_after_hello(&to_client), "server stream");
    lab.down();
}

/// Sends requests to the api Service from client; returns who answered.
fn answers(lab: &mesh_tests::netns::Lab, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (code, body) = lab.curl("client", "http://api.shop:8080/");
            assert_eq!(code, 200, "{body}");
            body.split(' ').next().unwrap_or("").to_owned()
        })
        .collect()
}

/// Connections made to a pod's inbound port (first rule of its inbound
/// chain): counted even when nothing listens any more.
fn attempts(lab: &mesh_tests::netns::Lab, pod: &str) -> u64 {
    lab.nat_counter(pod, "PALISADE_INBOUND", "--dport 4143 -j RETURN")
}

#[test]
fn endpoints_follow_pods_within_a_second() {
    if !available("endpoints_follow_pods_within_a_second") {
        return;
    }
    let api = |name: &str, host| {
        Pod::new(name, "shop", host)
            .label("app", "api")
            .service_account("api")
            .echo(&[8080])
    };
    let mut lab = LabSpec::new(22)
        .pod(Pod::new("client", "shop", 10))
        .pod(api("api-1", 21))
        .pod(api("api-2", 22))
        .service("api", "shop", 20, "api", (8080, 8080))
        .up();
    let (code, body) = lab.curl_answered("client", "http://api.shop:8080/");
    assert_eq!(code, 200, "{body}");
    // Both pods take requests (balanced per request, not in turn).
    let mut seen: HashSet<String> = HashSet::new();
    mesh_tests::wait_for("both pods answering", Duration::from_secs(5), || {
        seen.extend(answers(&lab, 4));
        (seen.len() == 2).then_some(())
    });

    // Scale down: within a second the client stops trying api-2 at all.
    lab.stop_pod("api-2");
    let stopped = Instant::now();
    let gone = loop {
        let before = attempts(&lab, "api-2");
        let who = answers(&lab, 4);
        assert!(who.iter().all(|w| w == "api-1"), "{who:?}");
        if attempts(&lab, "api-2") == before {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the client still connects to the stopped pod"
        );
    };
    eprintln!("endpoint removed from the client's view after {gone:?}");
    assert!(gone < ENDPOINT_BOUND, "took {gone:?}");

    // Scale up: once the pod is ready, the client uses it within a second.
    lab.start_pod("api-2");
    let started = Instant::now();
    let back = loop {
        if answers(&lab, 1)[0] == "api-2" {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the client never uses the restarted pod"
        );
    };
    eprintln!("endpoint back in the client's view after {back:?}");
    assert!(back < ENDPOINT_BOUND, "took {back:?}");
    lab.down();
}
