//! Certificate rotation never causes an outage (F3's short form): with a
//! 30 s TTL and continuous traffic across three rotations — about 1,000
//! requests a second on a connection opened before the first rotation, and
//! a new connection (a new mTLS handshake between the proxies) every 20 ms —
//! no request fails, the long-lived connection still works after the third,
//! and /certs shows a new serial each time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mesh_tests::*;

/// Three renewals at about half of a 30 s lifetime, with jitter and slack.
const THREE_ROTATIONS: Duration = Duration::from_secs(80);

#[test]
fn three_rotations_without_a_failed_request() {
    let cp = ControlPlane::start(CpOptions {
        cert_ttl: "30s",
        max_cert_ttl: "30s",
        ..Default::default()
    });
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let a = Proxy::start(&cp, opts);

    // A connection opened before any rotation.
    let mut long = TcpStream::connect(listen).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ping = |s: &mut TcpStream, i: u64| {
        let msg = format!("ping-{i:08}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg.as_bytes());
    };
    ping(&mut long, 0);

    // Continuous traffic: a new connection per request, back to back.
    let stop = Arc::new(AtomicBool::new(false));
    // And about 1,000 requests a second on the long-lived connection.
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut pings = 0u64;
            let started = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                pings += 1;
                ping(&mut long, pings);
                // Pacing to about 1,000/s, not synchronization.
                std::thread::sleep(Duration::from_micros(800));
            }
            (long, pings, started.elapsed())
        })
    };
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let msg = format!("req-{i}");
                match round_trip(listen, msg.as_bytes()) {
                    Ok(r) if r == msg.as_bytes() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                // Pace the load so the test does not starve the proxies on two cores.
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Watch both proxies' serials until each has rotated three times.
    let mut seen_a = vec![a.serial().unwrap()];
    let mut seen_b = vec![b.serial().unwrap()];
    wait_for("three rotations on both proxies", THREE_ROTATIONS, || {
        for (p, seen) in [(&a, &mut seen_a), (&b, &mut seen_b)] {
            if let Some(s) = p.serial()
                && seen.last() != Some(&s)
            {
                assert!(!seen.contains(&s), "a rotation brings a new serial");
                seen.push(s);
            }
        }
        (seen_a.len() >= 4 && seen_b.len() >= 4).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    // The long-lived connection kept working throughout (a failed ping panics the thread).
    let (mut long, pings, took) = pinger
        .join()
        .expect("every ping on the long-lived connection answered");
    ping(&mut long, u64::MAX / 2);
    let rate = pings as f64 / took.as_secs_f64();
    eprintln!(
        "F3: {pings} requests on one long-lived connection across the rotations ({rate:.0}/s)"
    );
    assert!(
        rate > 300.0,
        "the long-lived connection carried real load: {rate:.0}/s"
    );
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    eprintln!("rotations a={seen_a:?} b={seen_b:?}; requests ok={ok} failed={failed}");
    assert_eq!(failed, 0, "no request fails across rotations");
    assert!(ok > 100, "traffic really flowed: {ok}");
    let m = a.metrics();
    assert!(
        metric(
            &m,
            "mesh_identity_cert_renewals_total",
            &[("result", "success")]
        ) >= 4.0
    );
    assert_eq!(
        metric(
            &m,
            "mesh_identity_cert_renewals_total",
            &[("result", "failure")]
        ),
        0.0
    );
}
