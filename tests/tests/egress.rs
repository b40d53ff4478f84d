//! Egress on loopback, with the real binaries: a proxy's `--egress-route`
//! listeners leave the mesh to fixed addresses, decided by EgressPolicy
//! exactly as redirected connections are (tests/tests/lab_egress.rs does
//! those in network namespaces). Names are resolved by the proxy against a
//! real DNS server (mesh-dns on a UDP port), so the fronting check runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use mesh_tests::*;

/// One HTTP/1.1 request with `host` through `addr`: (status, body).
fn get(addr: SocketAddr, host: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn egress_routes_are_decided_by_host_address_and_dns() {
    let cp = ControlPlane::start(CpOptions::default());
    // The "internet": one echo on 127.0.0.1, one on 127.0.0.2.
    let one = EchoApp::start(cp.dir.path(), "partner");
    let other_port = free_port();
    let other_addr = SocketAddr::from(([127, 0, 0, 2], other_port));
    let mut cmd = Command::new(bin("mesh-echo"));
    cmd.arg(other_addr.to_string()).env("ECHO_NAME", "exfil");
    let _other = Proc::spawn(cmd, cp.dir.path().join("exfil.log"));
    wait_for("exfil listening", Duration::from_secs(5), || {
        TcpStream::connect(other_addr).ok()
    });
    // Its DNS: allowed.example is 127.0.0.1 only.
    let dns_port = free_port();
    let mut cmd = Command::new(bin("mesh-dns"));
    cmd.arg(format!("127.0.0.1:{dns_port}"))
        .arg("allowed.example=127.0.0.1")
        .arg("exfil.example=127.0.0.2");
    let _dns = Proc::spawn(cmd, cp.dir.path().join("dns.log"));

    cp.write_policy(
        "egress.yaml",
        &format!(
            "apiVersion: policy.palisade.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {{name: out, namespace: shop}}\n\
             spec:\n  default: deny\n  allow:\n  - hosts: [allowed.example]\n    protocols: [HTTP]\n  - cidrs: [127.0.0.2/32]\n    ports: [{other_port}]\n    protocols: [TCP]\n"
        ),
    );
    let to_one = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let to_other = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut opts = ProxyOptions::new("shop", "checkout");
    opts.extra = vec![
        "--egress-route".into(),
        format!("{to_one}={}", one.addr),
        "--egress-route".into(),
        format!("{to_other}={other_addr}"),
        "--dns-servers".into(),
        format!("127.0.0.1:{dns_port}"),
    ];
    let proxy = Proxy::start(&cp, opts);

    // Another name: 403 naming the policy (once the policy is in force:
    // the control plane reads the file a moment after it is written).
    let (_, body) = wait_for("the policy in force", Duration::from_secs(10), || {
        let r = get(to_one, "exfil.example");
        (r.0 == 403).then_some(r)
    });
    assert!(
        body.contains("egress denied: EgressPolicy shop/out"),
        "{body}"
    );
    // The allowed name, at an address it resolves to.
    let (status, body) = get(to_one, "allowed.example");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("partner received"), "{body}");
    // A kept-alive connection cannot carry a second request for another
    // host: the first is sent with Connection: close, and the server
    // answers it alone.
    let mut s = TcpStream::connect(to_one).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: allowed.example\r\n\r\nGET /second HTTP/1.1\r\nHost: exfil.example\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.contains("/first"), "{out}");
    assert!(
        out.contains("connection: close") || out.contains("Connection: close"),
        "{out}"
    );
    assert!(
        !out.contains("/second"),
        "a second request rode the decided connection: {out}"
    );
    // The allowed name at another address: fronting.
    let (status, body) = get(to_other, "allowed.example");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("allowed.example does not resolve to 127.0.0.2"),
        "{body}"
    );
    // The CIDR rule: plain TCP to its address and port only.
    let mut s = TcpStream::connect(to_other).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x00ping").unwrap();
    let mut echoed = [0u8; 5];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"\x00ping");
    let mut s = TcpStream::connect(to_one).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x00ping").unwrap();
    let mut buf = [0u8; 5];
    assert!(
        !matches!(s.read(&mut buf), Ok(n) if n > 0),
        "plain TCP to an address no rule names got through"
    );

    // Counted and listed.
    let m = proxy.metrics();
    assert_eq!(
        metric(
            &m,
            "mesh_egress_connections_total",
            &[("host", "exfil.example"), ("decision", "deny")]
        ),
        1.0,
        "{m}"
    );
    let (_, egress) = http_get(proxy.admin, "/egress").unwrap();
    let v: serde_json::Value = serde_json::from_str(&egress).unwrap();
    assert_eq!(v["namespace"], "shop");
    let rows = v["destinations"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["host"] == "-"
            && r["ip"] == "127.0.0.2"
            && r["decision"] == "allow"
            && r["protocol"] == "TCP"),
        "{egress}"
    );
}
