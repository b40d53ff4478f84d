//! SIGTERM drains: the proxy stops accepting, lets open connections finish,
//! and exits; at the drain deadline it exits regardless.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mesh_tests::*;

fn echo_once(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
}

#[test]
fn sigterm_finishes_open_connections_then_exits() {
    let cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    opts.extra = vec!["--drain-timeout".into(), "30s".into()];
    let mut a = Proxy::start(&cp, opts);

    let mut open = TcpStream::connect(listen).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo_once(&mut open, b"before");

    a.proc.terminate();
    wait_for("drain started", Duration::from_secs(5), || {
        a.logs().contains("draining").then_some(())
    });
    // No new connections are accepted ...
    wait_for("listener closed", Duration::from_secs(5), || {
        round_trip(listen, b"new")
            .map_or(true, |r| r.is_empty())
            .then_some(())
    });
    // ... but the open one still works.
    echo_once(&mut open, b"during drain");
    assert!(
        a.proc.child.try_wait().unwrap().is_none(),
        "still running while a connection is open"
    );
    drop(open);
    let status = a
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("exits once drained");
    assert!(status.success(), "{status}");
    assert!(a.logs().contains("drained"));
}

#[test]
fn drain_deadline_bounds_shutdown() {
    let cp = ControlPlane::start(CpOptions::default());
    let app = Echo::start();
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    opts.extra = vec!["--drain-timeout".into(), "1s".into()];
    let mut a = Proxy::start(&cp, opts);
    let mut open = TcpStream::connect(listen).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo_once(&mut open, b"hold");
    let started = Instant::now();
    a.proc.terminate();
    let status = a
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("exits at the deadline");
    assert!(status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for the open connection"
    );
    assert!(a.logs().contains("drain deadline reached"));
}
