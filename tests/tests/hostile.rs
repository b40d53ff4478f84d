//! Garbage bytes, plaintext HTTP and never-finished handshakes on the inbound
//! port neither crash the proxy nor delay other connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mesh_tests::*;

#[test]
fn hostile_clients_do_not_hurt_others() {
    let cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let mut bopts = ProxyOptions::new("default", "api");
    bopts.extra = vec!["--handshake-timeout".into(), "2s".into()];
    let mut b = Proxy::start(&cp, bopts);
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let _a = Proxy::start(&cp, opts);

    // 100 clients that start a handshake and never finish it.
    let mut stuck = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(b.inbound).unwrap();
        // A TLS record header promising a 512-byte handshake, then nothing.
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        stuck.push(s);
    }
    // Garbage and plaintext HTTP.
    for i in 0..20 {
        let mut s = TcpStream::connect(b.inbound).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n").unwrap();
        } else {
            let junk: Vec<u8> = (0..4096u32)
                .map(|x| (x.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let _ = s.write_all(&junk);
        }
        let mut buf = Vec::new();
        // The proxy answers with at most a TLS alert and closes.
        let _ = s.read_to_end(&mut buf);
        assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
    }

    // Meanwhile a real request through the mesh is served at once: far
    // sooner than the stuck handshakes' 2 s timeout.
    let started = Instant::now();
    assert_eq!(round_trip(listen, b"still fine").unwrap(), b"still fine");
    let took = started.elapsed();
    // Waiting as long as the handshake timeout would mean it queued behind them.
    assert!(
        took < Duration::from_secs(2),
        "a good request waited {took:?} behind hostile ones"
    );

    // The stuck handshakes are cut at the deadline and counted.
    wait_for(
        "stuck handshakes timed out",
        Duration::from_secs(10),
        || {
            let m = b.metrics();
            (metric(
                &m,
                "mesh_tls_handshake_failures_total",
                &[("direction", "inbound"), ("reason", "timeout")],
            ) >= 100.0)
                .then_some(())
        },
    );
    let m = b.metrics();
    let stalled = metric(
        &m,
        "mesh_tls_handshake_failures_total",
        &[("direction", "inbound")],
    );
    // Garbage and plaintext HTTP are plaintext clients: refused by
    // PeerAuthentication (STRICT is the default) and counted as denials.
    let plaintext = metric(
        &m,
        "mesh_authz_decisions_total",
        &[("direction", "inbound"), ("decision", "deny")],
    );
    assert!(stalled >= 100.0, "stalled handshakes counted: {stalled}");
    assert!(
        plaintext >= 20.0,
        "plaintext and garbage counted: {plaintext}"
    );
    assert!(
        b.proc.child.try_wait().unwrap().is_none(),
        "the proxy is still running"
    );
    assert_eq!(round_trip(listen, b"after").unwrap(), b"after");
    drop(stuck);
    let _ = b.proc.wait_exit(Duration::ZERO);
}
