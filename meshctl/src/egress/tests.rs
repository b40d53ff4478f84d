use super::*;
use mesh_policy::resource::egress::EgressProtocol;
use mesh_policy::{EgressRequest, Workload};

const LOG: &str = r#"2026-12-03T10:00:00.000Z  INFO policy received version=3 objects=2
{"ts":"2026-12-03T10:00:01.000Z","direction":"egress","namespace":"shop","workload":"checkout-1","dst":"203.0.113.5:443","host":"api.partner.example","port":443,"protocol":"TLS","decision":"allow","policy":"default allow"}
{"ts":"2026-12-03T10:00:02.000Z","direction":"egress","namespace":"shop","workload":"checkout-2","dst":"203.0.113.5:443","host":"api.partner.example","port":443,"protocol":"TLS","decision":"dry_run_deny","policy":"default allow","dry_run_policy":"EgressPolicy shop/trial"}
{"ts":"2026-12-03T10:00:03.000Z","direction":"egress","namespace":"shop","workload":"checkout-1","dst":"203.0.113.5:80","host":"api.partner.example","port":80,"protocol":"HTTP","decision":"allow","policy":"default allow"}
{"ts":"2026-12-03T10:00:04.000Z","direction":"egress","namespace":"shop","workload":"checkout-1","dst":"192.0.2.7:5432","host":"-","port":5432,"protocol":"TCP","decision":"deny","policy":"EgressPolicy shop/trial"}
{"ts":"2026-12-03T10:00:05.000Z","direction":"ingress","namespace":"shop","workload":"x"}
{"ts":"2026-12-03T09:00:00.000Z","direction":"egress","namespace":"blog","workload":"web","dst":"198.51.100.9:443","host":"cdn.example.org","port":443,"protocol":"TLS","decision":"allow","policy":"default allow"}
not json at all
"#;

#[test]
fn the_log_is_read_for_its_egress_lines_in_the_window() {
    let all = from_log(LOG, None);
    assert_eq!(all.len(), 5);
    let since = parse_time("2026-12-03T09:30:00Z");
    let recent = from_log(LOG, since);
    assert_eq!(recent.len(), 4);
    assert!(recent.iter().all(|s| s.namespace == "shop"));
    // A nameless connection keeps its address; the dry-run policy is named.
    assert_eq!(recent[3].ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(recent[1].policy, "EgressPolicy shop/trial");
}

#[test]
fn the_report_sums_by_destination() {
    let rows = report(&from_log(LOG, None));
    let brief: Vec<(&str, &str, u16, u64, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r.namespace.as_str(),
                r.destination.as_str(),
                r.port,
                r.connections,
                r.allowed,
                r.denied,
                r.dry_run_denied,
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            ("blog", "cdn.example.org", 443, 1, 1, 0, 0),
            ("shop", "192.0.2.7", 5432, 1, 0, 1, 0),
            ("shop", "api.partner.example", 80, 1, 1, 0, 0),
            ("shop", "api.partner.example", 443, 2, 1, 0, 1),
        ]
    );
    assert_eq!(
        rows[3].workloads.iter().cloned().collect::<Vec<_>>(),
        ["checkout-1", "checkout-2"]
    );
    let table = report_table(&rows);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(table.contains("api.partner.example"), "{table}");
    assert_eq!(report_table(&[]), "no egress connections seen\n");
}

#[test]
fn from_admin_documents_and_refusals() {
    let doc = r#"{"namespace":"shop","workload":"checkout","dropped":0,"destinations":[
        {"host":"api.partner.example","ip":null,"port":443,"protocol":"TLS","decision":"allow","policy":"EgressPolicy shop/p rule 0","connections":7,"first_seen":"2026-12-03T10:00:00.000Z","last_seen":"2026-12-03T10:05:00.000Z"}]}"#;
    let seen = from_admin(doc, None).expect("the test document is an /egress document");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].connections, seen[0].workload.as_str()),
        (7, "checkout")
    );
    assert!(
        from_admin(doc, parse_time("2026-12-03T11:00:00Z"))
            .unwrap()
            .is_empty()
    );
    assert!(from_admin("{\"not\": 1}", None).is_err());
}

/// The suggestion loads, and decides exactly: every seen destination is
/// allowed, anything else is not.
#[test]
fn the_suggestion_allows_exactly_what_was_seen() {
    let seen = from_log(LOG, None);
    let yaml = suggest(&seen, "seen", Mode::Enforce);
    let loaded =
        mesh_policy::parse_yaml("suggested.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(loaded.snapshot.objects.len(), 2, "{yaml}");
    let e = mesh_policy::Evaluator::compile(&loaded.snapshot, "cluster.local")
        .expect("a loaded suggestion compiles");
    let labels = Default::default();
    let decide = |ns: &str, host: Option<&str>, ip: &str, port: u16, protocol| {
        e.egress(&EgressRequest {
            source: Workload {
                namespace: ns,
                labels: &labels,
            },
            host,
            ip: ip.parse().expect("test addresses are addresses"),
            port,
            protocol,
            now: SystemTime::now(),
        })
        .decision
        .is_allowed()
    };
    use EgressProtocol::{Http, Tcp, Tls};
    for s in &seen {
        let protocol = match s.protocol.as_str() {
            "TLS" => Tls,
            "HTTP" => Http,
            _ => Tcp,
        };
        let host = (s.host != "-").then_some(s.host.as_str());
        let ip = s.ip.as_deref().unwrap_or("203.0.113.5");
        assert!(
            decide(&s.namespace, host, ip, s.port, protocol),
            "{s:?}\n{yaml}"
        );
    }
    assert!(!decide(
        "shop",
        Some("api.partner.example"),
        "203.0.113.5",
        8443,
        Tls
    ));
    assert!(!decide(
        "shop",
        Some("api.partner.example"),
        "203.0.113.5",
        443,
        Http
    ));
    assert!(!decide(
        "shop",
        Some("exfil.example"),
        "203.0.113.5",
        443,
        Tls
    ));
    assert!(!decide("shop", None, "192.0.2.8", 5432, Tcp));
    assert!(!decide(
        "blog",
        Some("api.partner.example"),
        "203.0.113.5",
        443,
        Tls
    ));
    // Dry-run on request; a name no rule can hold is left out, said.
    let odd = vec![Seen {
        host: "under_score.example".into(),
        ..seen[0].clone()
    }];
    let dry = suggest(&odd, "seen", Mode::DryRun);
    assert!(dry.contains("mode: dry-run"), "{dry}");
    assert!(dry.contains("# left out:"), "{dry}");
    mesh_policy::parse_yaml("dry.yaml", &dry).unwrap_or_else(|e| panic!("{e}\n{dry}"));
    assert!(suggest(&[], "x", Mode::Enforce).starts_with("# No egress"));
}
