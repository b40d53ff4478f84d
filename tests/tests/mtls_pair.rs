//! A request crosses client → proxy A → (recorded wire) → proxy B → app, and
//! the wire between the proxies carries only TLS 1.3, never the payload.

use mesh_tests::*;

#[test]
fn request_crosses_the_mtls_hop_encrypted() {
    let cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let wire = Recorder::start(b.inbound);

    let mut opts = ProxyOptions::new("default", "web");
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    opts.routes
        .push((listen, wire.addr, app.port(), b.identity.clone()));
    let _a = Proxy::start(&cp, opts);

    let marker = format!("payload-{}", random_hex(16));
    let got = round_trip(listen, marker.as_bytes()).expect("request through the mesh");
    assert_eq!(
        got,
        marker.as_bytes(),
        "the app's echo comes back through both proxies"
    );

    let to_server = wire.to_server.lock().unwrap().clone();
    let to_client = wire.to_client.lock().unwrap().clone();
    assert!(!to_server.is_empty() && !to_client.is_empty());
    // TLS 1.3 was negotiated on the hop.
    assert_eq!(server_hello_version(&to_client), Some(0x0304));
    // Everything after the hellos is encrypted records ...
    assert!(
        all_encrypted_after_hello(&to_server),
        "client→server records"
    );
    assert!(
        all_encrypted_after_hello(&to_client),
        "server→client records"
    );
    // ... and the payload never appears in clear in either direction.
    let needle = marker.as_bytes();
    for (dir, bytes) in [("to server", &to_server), ("to client", &to_client)] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "payload visible on the wire {dir}"
        );
    }
}

#[test]
fn large_transfer_and_half_close() {
    let cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let _a = Proxy::start(&cp, opts);
    // 4 MiB each way: the client half-closes after sending, and still
    // receives every byte of the response.
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let got = round_trip(listen, &payload).expect("round trip");
    assert_eq!(got.len(), payload.len());
    assert!(got == payload);
}
