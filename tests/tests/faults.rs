//! Faults of the control plane, as a mesh meets them: down when a proxy
//! boots (F1), down while proxies run and one restarts (F6), and a clock
//! ahead of the proxies' (F15). Real processes, real mTLS; each test prints
//! its figure for docs/reliability.md.

use std::time::{Duration, Instant};

use mesh_tests::*;

fn ready(p: &Proxy) -> bool {
    p.admin_get("/ready").0 == 200
}

/// For `window`, the proxy is not ready and its inbound refuses connections
/// outright (nothing listens before a certificate and policy: a client is
/// refused at once instead of waiting on a queued connection).
fn stays_refusing(p: &Proxy, window: Duration) {
    let end = Instant::now() + window;
    let mut checks = 0;
    while Instant::now() < end {
        assert!(!ready(p), "not ready without a control plane");
        let got = std::net::TcpStream::connect_timeout(&p.inbound, Duration::from_secs(1));
        assert!(
            matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "the inbound refuses before the proxy is ready: {got:?}"
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(checks >= 5);
}

/// F1: the control plane is down when a proxy boots. The proxy is not
/// ready and refuses; once the control plane is up it is ready within the
/// renewal backoff cap (10 s) and serves.
#[test]
fn f1_control_plane_down_at_boot() {
    let mut cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    cp.stop();
    let b = Proxy::spawn(&cp, ProxyOptions::new("default", "api"));
    stays_refusing(&b, Duration::from_secs(2));

    cp.restart();
    let up = Instant::now();
    wait_for(
        "ready once the control plane is up",
        Duration::from_secs(20),
        || ready(&b).then_some(()),
    );
    let took = up.elapsed();
    println!("F1: ready {took:?} after the control plane came up");
    assert!(
        took <= Duration::from_secs(11),
        "within the backoff cap (10 s): {took:?}"
    );
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let _a = Proxy::start(&cp, opts);
    assert_eq!(
        round_trip(listen, b"served").expect("a round trip through the mesh"),
        b"served"
    );
}

/// F6: the policy server goes away. Running proxies keep the last policy
/// (an allowed call passes, a denied one is refused); a sidecar restarted
/// meanwhile stays not ready rather than serving without policy; it is
/// ready once the control plane is back.
#[test]
fn f6_policy_server_down_keeps_policy_and_a_restarted_sidecar_not_ready() {
    let mut cp = ControlPlane::start(CpOptions::default());
    cp.write_policy(
        "api.yaml",
        "apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: api-from-web, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/web]}}]}]
",
    );
    cp.wait_policy_objects(1);
    let app = Echo::start();
    let mut opts = ProxyOptions::new("default", "api");
    opts.extra = vec!["--labels".into(), "app=api".into()];
    let b = Proxy::start(&cp, opts);
    let mut web = ProxyOptions::new("default", "web");
    let allowed = web.route(&b, app.port(), &b.identity);
    let _web = Proxy::start(&cp, web);
    let mut other = ProxyOptions::new("default", "other");
    let denied = other.route(&b, app.port(), &b.identity);
    let _other = Proxy::start(&cp, other);
    wait_for("the policy enforced", Duration::from_secs(10), || {
        (round_trip(allowed, b"ok").ok()? == b"ok"
            && round_trip(denied, b"no").unwrap_or_default().is_empty())
        .then_some(())
    });

    cp.stop();
    for i in 0..20 {
        assert_eq!(
            round_trip(allowed, b"ok").expect("a round trip through the mesh"),
            b"ok",
            "allowed call {i}"
        );
        assert!(
            round_trip(denied, b"no").unwrap_or_default().is_empty(),
            "denied call {i}: the last policy stays in force"
        );
    }
    let mut again = ProxyOptions::new("default", "api");
    again.extra = vec!["--labels".into(), "app=api".into()];
    let restarted = Proxy::spawn(&cp, again);
    stays_refusing(&restarted, Duration::from_secs(2));

    cp.restart();
    let up = Instant::now();
    wait_for(
        "the restarted sidecar ready",
        Duration::from_secs(20),
        || ready(&restarted).then_some(()),
    );
    println!(
        "F6: the restarted sidecar was ready {:?} after the control plane came back",
        up.elapsed()
    );
}

/// F15: the control plane's clock is two minutes ahead of the proxies'.
/// Certificates are backdated by more than that, so a fresh certificate is
/// already valid for the proxies, and the mesh works.
#[test]
fn f15_control_plane_clock_two_minutes_ahead() {
    // libfaketime, preloaded into the control plane only: its wall clock
    // runs 120 s ahead, its monotonic clock (timers) is left alone.
    let lib = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is missing (scripts/setup.sh installs faketime)");
    let cp = ControlPlane::start(CpOptions {
        env: vec![
            ("LD_PRELOAD".into(), lib.display().to_string()),
            ("FAKETIME".into(), "+120".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ],
        ..Default::default()
    });
    let cp_now = http_get(cp.admin, "/quarantines")
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["now"].as_u64())
        .expect("the control plane's clock");
    let local = unix_now() as u64;
    assert!(
        cp_now >= local + 110,
        "the control plane's clock is ahead: {cp_now} vs {local}"
    );
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let a = Proxy::start(&cp, opts);
    assert_eq!(
        round_trip(listen, b"skewed").expect("a round trip through the mesh"),
        b"skewed"
    );
    let (_, certs) = a.admin_get("/certs");
    let v: serde_json::Value = serde_json::from_str(&certs).expect("/certs is JSON");
    let not_before = time::OffsetDateTime::parse(
        v["not_before"].as_str().expect("not_before in /certs"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
    .unix_timestamp() as u64;
    let now = unix_now() as u64;
    println!(
        "F15: control plane 120 s ahead; the certificate was valid from {} s before the proxy's now",
        now as i64 - not_before as i64
    );
    assert!(not_before <= now, "valid on the proxy's clock");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A connection the proxy closed as it accepted it: EOF or reset at once.
fn closed_at_once(c: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    c.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let mut b = [0u8; 1];
    match c.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// F12: 10,000 idle connections (never a TLS byte) against a proxy whose
/// cap is 10,000. The cap holds: the next connection is closed at accept and
/// counted; `/ready` and `/metrics` still answer; once idle ones go, a mesh
/// connection gets through.
#[test]
fn f12_ten_thousand_idle_connections_meet_the_cap() {
    const CAP: usize = 10_000;
    let cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let mut opts = ProxyOptions::new("default", "api");
    opts.extra = vec![
        "--max-connections".into(),
        CAP.to_string(),
        "--handshake-timeout".into(),
        "60s".into(),
    ];
    let b = Proxy::start(&cp, opts);
    let pid = b.proc.child.id();
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    let mut idle = Vec::with_capacity(CAP + 16);
    for i in 0..CAP {
        idle.push(
            std::net::TcpStream::connect(b.inbound)
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}")),
        );
    }
    // The proxy accepts in order; once it has taken all of them, the next is refused.
    wait_for(
        "a connection past the cap refused",
        Duration::from_secs(20),
        || {
            let mut c = std::net::TcpStream::connect(b.inbound).ok()?;
            if closed_at_once(&mut c) {
                Some(())
            } else {
                idle.push(c);
                None
            }
        },
    );
    let opened = started.elapsed();
    let t = Instant::now();
    assert!(ready(&b), "/ready answers at the cap");
    let metrics = b.metrics();
    let admin_took = t.elapsed();
    let refused = metric(
        &metrics,
        "mesh_tcp_connection_errors_total",
        &[("direction", "inbound"), ("reason", "max_connections")],
    );
    assert!(refused >= 1.0, "the refusal counted");
    let rss_full = rss_kib(pid);
    println!(
        "F12: {} idle connections held in {opened:?}; past the cap refused ({refused} counted); /ready and /metrics in {admin_took:?}; RSS {rss_before} → {rss_full} KiB ({:.1} KiB per idle connection)",
        idle.len(),
        (rss_full.saturating_sub(rss_before)) as f64 / idle.len() as f64
    );
    assert!(idle.len() >= CAP);

    // Idle connections go; a mesh connection through A gets in again.
    idle.truncate(CAP - 100);
    let mut web = ProxyOptions::new("default", "web");
    let listen = web.route(&b, app.port(), &b.identity);
    let _a = Proxy::start(&cp, web);
    wait_for(
        "a mesh connection once there is room",
        Duration::from_secs(10),
        || (round_trip(listen, b"room").ok()? == b"room").then_some(()),
    );
}

fn signal(p: &Proc, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig}");
}

fn not_after(p: &Proxy) -> i64 {
    let (_, certs) = p.admin_get("/certs");
    let v: serde_json::Value = serde_json::from_str(&certs).expect("/certs");
    time::OffsetDateTime::parse(
        v["not_after"].as_str().expect("not_after"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
    .unix_timestamp()
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// F2: the control plane is blackholed mid-run (stopped with SIGSTOP: its
/// sockets accept, nothing answers). While the certificates are valid no
/// connection fails and none waits on the CA; once they have expired the
/// proxies refuse each other; when the control plane answers again they
/// recover within the request timeout plus the backoff cap.
#[test]
fn f2_control_plane_blackholed_mid_run() {
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
    assert_eq!(
        round_trip(listen, b"up").expect("a round trip through the mesh"),
        b"up"
    );
    let proc = cp.proc.as_ref().expect("control plane running");
    signal(proc, "-STOP");
    let expiry = not_after(&a).min(not_after(&b));

    // Valid certificates: every connection succeeds, none waits on the CA.
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while unix_now() < expiry - 2 {
        let t = Instant::now();
        assert_eq!(
            round_trip(listen, b"valid").unwrap_or_default(),
            b"valid",
            "connection {served} while the certificates are valid"
        );
        slowest = slowest.max(t.elapsed());
        served += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served > 100);
    assert!(
        slowest < Duration::from_secs(1),
        "no connection waits on the CA: {slowest:?}"
    );

    // Expired: refused, quickly.
    let refused_at = expiry + 2;
    while unix_now() < refused_at {
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    assert!(
        round_trip(listen, b"expired")
            .unwrap_or_default()
            .is_empty(),
        "refused once the certificates have expired"
    );
    let refusal_took = t.elapsed();

    signal(proc, "-CONT");
    let back = Instant::now();
    wait_for(
        "recovery once the control plane answers",
        Duration::from_secs(30),
        || (round_trip(listen, b"again").ok()? == b"again").then_some(()),
    );
    let recovered = back.elapsed();
    println!(
        "F2: {served} connections while blackholed and valid, slowest {slowest:?}; after expiry refused in {refusal_took:?}; recovered {recovered:?} after the control plane answered again"
    );
    assert!(
        recovered <= Duration::from_secs(21),
        "within the request timeout (10 s) and the backoff cap (10 s): {recovered:?}"
    );
}
