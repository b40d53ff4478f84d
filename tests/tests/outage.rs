//! With the control plane down after certification, proxies keep serving on
//! their still-valid certificates, and renew once it is back.

use std::time::Duration;

use mesh_tests::*;

#[test]
fn proxies_serve_through_a_control_plane_outage_and_renew_after() {
    let mut cp = ControlPlane::start(CpOptions {
        cert_ttl: "1m",
        max_cert_ttl: "1m",
        ..Default::default()
    });
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let a = Proxy::start(&cp, opts);
    assert_eq!(round_trip(listen, b"before").unwrap(), b"before");
    let serial_before = a.serial().unwrap();

    cp.stop();
    // Renewal (at about half of the minute) fails while the control plane is down ...
    wait_for("a failed renewal", Duration::from_secs(60), || {
        let m = a.metrics();
        (metric(
            &m,
            "mesh_identity_cert_renewals_total",
            &[("result", "failure")],
        ) >= 1.0)
            .then_some(())
    });
    // ... and the proxies keep serving with the certificate they hold.
    assert_eq!(a.serial().unwrap(), serial_before);
    assert_eq!(round_trip(listen, b"during").unwrap(), b"during");
    wait_for("the failed renewal logged", Duration::from_secs(5), || {
        a.logs()
            .contains("keeping current certificate")
            .then_some(())
    });

    cp.restart();
    let serial_after = wait_for(
        "renewal after the control plane is back",
        Duration::from_secs(30),
        || a.serial().filter(|s| *s != serial_before),
    );
    assert_ne!(serial_after, serial_before);
    wait_for("b renewed too", Duration::from_secs(30), || {
        let m = b.metrics();
        (metric(
            &m,
            "mesh_identity_cert_renewals_total",
            &[("result", "success")],
        ) >= 2.0)
            .then_some(())
    });
    assert_eq!(round_trip(listen, b"after").unwrap(), b"after");
}
