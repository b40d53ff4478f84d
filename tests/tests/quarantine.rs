//! Anomaly rules and quarantine through real processes: an intruder's
//! denied calls set off a deny-spike rule, the control plane quarantines
//! its identity everywhere (a service that allowed it now refuses it,
//! naming the Quarantine), legitimate traffic is untouched, `meshctl
//! quarantine list` shows the evidence, and the quarantine lifts itself at
//! expiry; a lift request ends one early; a dry-run rule only counts; an
//! alert rule raises an event and cuts nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_tests::netns::meshctl;
use mesh_tests::*;

fn policies(rule_meta: &str, action: &str) -> String {
    format!(
        "apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {{name: api, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  rules: [{{from: [{{source: {{principals: [cluster.local/ns/shop/sa/web]}}}}]}}]
---
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {{name: public, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: public}}}}
  rules: [{{from: [{{source: {{namespaces: [shop]}}}}]}}]
---
apiVersion: policy.palisade.dev/v1alpha1
kind: AnomalyRule
metadata: {{name: probe, namespace: shop{rule_meta}}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  denySpike: {{count: 5, window: 10s}}
{action}"
    )
}

const QUARANTINE: &str = "  action: quarantine\n  quarantine: {scope: Source, duration: 5s}\n";

struct Shop {
    cp: ControlPlane,
    _apps: Vec<EchoApp>,
    _tcp: Echo,
    /// The intruder's route to a raw TCP echo behind `public`.
    intruder_to_public_tcp: SocketAddr,
    _proxies: Vec<Proxy>,
    web_to_api: SocketAddr,
    intruder_to_api: SocketAddr,
    intruder_to_public: SocketAddr,
}

fn shop(yaml: &str) -> Shop {
    let cp = ControlPlane::start(CpOptions::default());
    cp.write_policy("shop.yaml", yaml);
    cp.wait_policy_objects(3);
    let api_app = EchoApp::start(cp.dir.path(), "api");
    let public_app = EchoApp::start(cp.dir.path(), "public");
    let start = |sa: &str, labels: &str| {
        let mut o = ProxyOptions::new("shop", sa);
        o.extra = vec!["--labels".into(), labels.into()];
        Proxy::start(&cp, o)
    };
    let api = start("api", "app=api");
    let public = start("public", "app=public");
    let mut o = ProxyOptions::new("shop", "web");
    let web_to_api = o.route(&api, api_app.port(), &api.identity);
    let web = Proxy::start(&cp, o);
    let mut o = ProxyOptions::new("shop", "intruder");
    let intruder_to_api = o.route(&api, api_app.port(), &api.identity);
    let intruder_to_public = o.route(&public, public_app.port(), &public.identity);
    let tcp = Echo::start();
    let intruder_to_public_tcp = o.route(&public, tcp.addr.port(), &public.identity);
    let intruder = Proxy::start(&cp, o);
    Shop {
        cp,
        _apps: vec![api_app, public_app],
        _tcp: tcp,
        intruder_to_public_tcp,
        _proxies: vec![api, public, web, intruder],
        web_to_api,
        intruder_to_api,
        intruder_to_public,
    }
}

fn get(addr: SocketAddr) -> (u16, String) {
    http_request(addr, "GET", "/", "svc", &[]).unwrap_or((0, String::new()))
}

fn quarantines(cp: &ControlPlane) -> serde_json::Value {
    http_get(cp.admin, "/quarantines")
        .ok()
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

fn active(cp: &ControlPlane) -> Vec<serde_json::Value> {
    quarantines(cp)["quarantines"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_deny_spike_quarantines_the_source_everywhere_until_it_expires() {
    let s = shop(&policies("", QUARANTINE));
    assert_eq!(get(s.web_to_api).0, 200);
    assert_eq!(get(s.intruder_to_public).0, 200, "allowed before");
    // An open TCP connection of the intruder's, admitted before.
    let mut open = std::net::TcpStream::connect(s.intruder_to_public_tcp).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    std::io::Write::write_all(&mut open, b"ping").unwrap();
    std::io::Read::read_exact(&mut open, &mut buf[..4]).unwrap();
    assert_eq!(&buf[..4], b"ping");
    // The probe: denied calls until the rule's threshold.
    for _ in 0..5 {
        assert_eq!(get(s.intruder_to_api).0, 403);
    }
    let probed = Instant::now();
    // Everywhere: the service that allowed it now refuses it, naming the
    // Quarantine.
    let (status, body) = wait_for(
        "the quarantine at another service",
        Duration::from_secs(10),
        || {
            let r = get(s.intruder_to_public);
            (r.0 == 403).then_some(r)
        },
    );
    let took = probed.elapsed();
    eprintln!("quarantined everywhere {took:?} after the threshold");
    assert_eq!(status, 403);
    assert!(body.contains("Quarantine mesh-system/q-"), "{body}");
    // The open connection it revokes is closed.
    let closed = std::io::Read::read(&mut open, &mut buf);
    let timed_out = matches!(&closed, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(matches!(closed, Ok(0) | Err(_)) && !timed_out, "{closed:?}");
    // Legitimate traffic: untouched.
    for _ in 0..20 {
        assert_eq!(get(s.web_to_api).0, 200);
    }
    let list = active(&s.cp);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["rule"], "AnomalyRule shop/probe");
    assert_eq!(
        list[0]["source"],
        "spiffe://cluster.local/ns/shop/sa/intruder"
    );
    assert!(
        list[0]["evidence"]
            .as_str()
            .unwrap_or("")
            .contains("denied calls")
    );
    assert!(
        s.cp.data_dir().join("quarantines.json").exists(),
        "persisted"
    );
    let admin = format!("http://{}", s.cp.admin);
    let out = meshctl(&["quarantine", "list", "--admin", &admin]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("shop/sa/intruder") && table.contains("evidence"),
        "{table}"
    );
    let metrics = http_get(s.cp.admin, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert!(metrics.contains("mesh_quarantines_active 1"), "{metrics}");
    assert!(
        metrics.contains(
            "mesh_anomaly_events_total{rule=\"AnomalyRule shop/probe\",action=\"quarantine\"} 1"
        ),
        "{metrics}"
    );
    // It lifts itself at expiry (5 s).
    wait_for("the quarantine's expiry", Duration::from_secs(15), || {
        (get(s.intruder_to_public).0 == 200).then_some(())
    });
    wait_for("the list emptied", Duration::from_secs(5), || {
        active(&s.cp).is_empty().then_some(())
    });
}

#[test]
fn a_lift_request_ends_a_quarantine_early_and_dry_run_only_counts() {
    let long = "  action: quarantine\n  quarantine: {scope: Source, duration: 1h}\n";
    let s = shop(&policies("", long));
    for _ in 0..5 {
        assert_eq!(get(s.intruder_to_api).0, 403);
    }
    let name = wait_for("the quarantine", Duration::from_secs(10), || {
        active(&s.cp)
            .first()
            .and_then(|q| q["name"].as_str().map(str::to_owned))
    });
    wait_for("enforced", Duration::from_secs(10), || {
        (get(s.intruder_to_public).0 == 403).then_some(())
    });
    let data_dir = s.cp.data_dir();
    let out = meshctl(&[
        "quarantine",
        "lift",
        &name,
        "--data-dir",
        &data_dir.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the lift", Duration::from_secs(10), || {
        (get(s.intruder_to_public).0 == 200).then_some(())
    });
    assert!(active(&s.cp).is_empty());

    // The same rule in dry-run: counted, nothing cut.
    let dry = shop(&policies(
        ", annotations: {palisade.dev/dry-run: \"true\"}",
        long,
    ));
    for _ in 0..6 {
        assert_eq!(get(dry.intruder_to_api).0, 403);
    }
    wait_for("the dry-run event", Duration::from_secs(10), || {
        let m = http_get(dry.cp.admin, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        m.contains("action=\"dry_run_quarantine\"} 1").then_some(())
    });
    assert!(active(&dry.cp).is_empty());
    assert_eq!(get(dry.intruder_to_public).0, 200);
}

#[test]
fn an_alert_rule_raises_an_event_and_cuts_nothing() {
    let s = shop(&policies("", "  action: alert\n"));
    for _ in 0..5 {
        assert_eq!(get(s.intruder_to_api).0, 403);
    }
    let event = wait_for("the alert", Duration::from_secs(10), || {
        quarantines(&s.cp)["events"]
            .as_array()
            .and_then(|e| e.first().cloned())
    });
    assert_eq!(event["action"], "alert", "{event}");
    assert_eq!(
        event["source"],
        "spiffe://cluster.local/ns/shop/sa/intruder"
    );
    assert!(active(&s.cp).is_empty());
    assert_eq!(get(s.intruder_to_public).0, 200);
    // The event's JSON log line (logs are written in batches).
    wait_for("the event's log line", Duration::from_secs(5), || {
        let logs = s.cp.logs();
        (logs.contains("anomaly rule fired") && logs.contains("\"action\":\"alert\"")).then_some(())
    });
}

/// A tiny HTTP server that keeps every request body it receives.
fn webhook_server() -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_ok() {
                let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (addr, rx)
}

// A source never seen before calling a workload the rule watches raises an
// alert (log, metric, webhook) once the learning period is over; sources
// seen while learning do not; nothing is cut.
#[test]
fn a_never_seen_source_raises_an_alert_through_the_webhook() {
    let (hook, received) = webhook_server();
    let cp = ControlPlane::start(CpOptions {
        extra: vec!["--event-webhook".into(), format!("http://{hook}/events")],
        ..CpOptions::default()
    });
    let yaml = policies("", "  action: alert\n")
        .replace(
            "  denySpike: {count: 5, window: 10s}\n",
            "  newSource: {learningPeriod: 1s}\n",
        )
        .replace(
            "principals: [cluster.local/ns/shop/sa/web]",
            "namespaces: [shop]",
        );
    cp.write_policy("shop.yaml", &yaml);
    cp.wait_policy_objects(3);
    let api_app = EchoApp::start(cp.dir.path(), "api");
    let mut o = ProxyOptions::new("shop", "api");
    o.extra = vec!["--labels".into(), "app=api".into()];
    let api = Proxy::start(&cp, o);
    let mut o = ProxyOptions::new("shop", "web");
    let web = o.route(&api, api_app.port(), &api.identity);
    let _web = Proxy::start(&cp, o);
    let mut o = ProxyOptions::new("shop", "newcomer");
    let newcomer = o.route(&api, api_app.port(), &api.identity);
    let _newcomer = Proxy::start(&cp, o);
    // web is learned: it calls until the learning period is over.
    wait_for("the learning period", Duration::from_secs(15), || {
        assert_eq!(get(web).0, 200);
        let q = quarantines(&cp);
        let until = q["learning_until"]["AnomalyRule shop/probe"].as_u64()?;
        (q["now"].as_u64()? > until).then_some(())
    });
    assert_eq!(get(web).0, 200);
    assert_eq!(get(newcomer).0, 200, "an alert cuts nothing");
    let event = wait_for("the alert", Duration::from_secs(10), || {
        quarantines(&cp)["events"]
            .as_array()
            .and_then(|e| e.first().cloned())
    });
    assert_eq!(event["action"], "alert", "{event}");
    assert_eq!(
        event["source"],
        "spiffe://cluster.local/ns/shop/sa/newcomer"
    );
    let posted = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the webhook got the event");
    let posted: serde_json::Value = serde_json::from_str(&posted).expect("JSON");
    assert_eq!(posted["rule"], "AnomalyRule shop/probe");
    assert_eq!(
        posted["source"],
        "spiffe://cluster.local/ns/shop/sa/newcomer"
    );
    // One alert: web was learned.
    assert_eq!(quarantines(&cp)["events"].as_array().map(Vec::len), Some(1));
    assert!(active(&cp).is_empty());
}
