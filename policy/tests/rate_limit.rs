//! RateLimitPolicy: what loads, what is refused with the field named, and
//! which limits a request counts against (selector, ports, paths, methods,
//! overrides by principal and namespace, dry-run and expiry).

#[path = "support/helpers.rs"]
mod support;

use std::time::{Duration, SystemTime};

use mesh_policy::{Quota, RateLimitRequest, Snapshot, Workload, parse_yaml};
use support::{labels, mesh, now};
use test_case::test_case;

fn policy(name: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata:\n  name: {name}\n  namespace: shop\n{annotations}spec:\n{spec}\n---\n"
    )
}

struct Req {
    app: &'static str,
    port: u16,
    method: &'static str,
    path: &'static str,
    principal: Option<&'static str>,
    at: SystemTime,
}

fn req(principal: &'static str) -> Req {
    Req {
        app: "api",
        port: 8080,
        method: "GET",
        path: "/orders",
        principal: Some(principal),
        at: now(),
    }
}

/// (policy name, total, per-client, override, dry run) for each limit
/// that applies.
type Applied = (String, Option<u32>, Option<u32>, Option<usize>, bool);

fn limits(e: &mesh_policy::Evaluator, r: &Req) -> Vec<Applied> {
    let l = labels(&[("app", r.app)]);
    e.rate_limits(&RateLimitRequest {
        destination: Workload {
            namespace: "shop",
            labels: &l,
        },
        port: r.port,
        method: r.method,
        path: r.path,
        principal: r.principal,
        host: None,
        route: None,
        now: r.at,
    })
    .map(|m| {
        (
            m.policy.name.clone(),
            m.total.map(|q| q.requests_per_second),
            m.per_client.map(|q| q.requests_per_second),
            m.by_override,
            m.dry_run,
        )
    })
    .collect()
}

const WEB: &str = "spiffe://cluster.local/ns/web/sa/frontend";
const BATCH: &str = "spiffe://cluster.local/ns/batch/sa/loader";
const OPS: &str = "spiffe://cluster.local/ns/ops/sa/probe";

#[test]
fn a_policy_applies_to_its_selected_workloads_ports_paths_and_methods() {
    let e = mesh(&policy(
        "orders",
        "",
        "  selector: {matchLabels: {app: api}}\n  ports: [8080]\n  paths: [\"/orders*\"]\n  methods: [GET, POST]\n  total: {requestsPerSecond: 100, burst: 20}\n  perClient: {requestsPerSecond: 10}",
    ));
    assert!(e.has_rate_limits());
    assert!(e.reads_http(), "limits are counted per request");
    assert_eq!(
        limits(&e, &req(WEB)),
        vec![("orders".into(), Some(100), Some(10), None, false)]
    );
    let other = |f: fn(&mut Req)| {
        let mut r = req(WEB);
        f(&mut r);
        limits(&e, &r)
    };
    assert!(other(|r| r.app = "db").is_empty(), "another workload");
    assert!(other(|r| r.port = 9090).is_empty(), "another port");
    assert!(other(|r| r.path = "/health").is_empty(), "another path");
    assert!(other(|r| r.method = "DELETE").is_empty(), "another method");
    assert_eq!(other(|r| r.path = "/orders/7").len(), 1, "a prefix pattern");
}

#[test]
fn burst_defaults_to_the_rate() {
    let loaded = parse_yaml(
        "rl.yaml",
        &policy(
            "p",
            "",
            "  total: {requestsPerSecond: 7}\n  perClient: {requestsPerSecond: 3, burst: 1}",
        ),
    )
    .unwrap();
    let e = mesh_policy::Evaluator::compile(&loaded.snapshot, "cluster.local").unwrap();
    let l = labels(&[]);
    let m: Vec<_> = e
        .rate_limits(&RateLimitRequest {
            destination: Workload {
                namespace: "shop",
                labels: &l,
            },
            port: 1,
            method: "GET",
            path: "/",
            principal: None,
            host: None,
            route: None,
            now: now(),
        })
        .collect();
    assert_eq!(
        m[0].total,
        Some(Quota {
            requests_per_second: 7,
            burst: 7
        })
    );
    assert_eq!(
        m[0].per_client,
        Some(Quota {
            requests_per_second: 3,
            burst: 1
        })
    );
}

#[test]
fn an_override_lifts_only_the_clients_it_names() {
    let e = mesh(&policy(
        "p",
        "",
        "  perClient: {requestsPerSecond: 10}\n  overrides:\n  - principals: [\"cluster.local/ns/batch/sa/loader\"]\n    requestsPerSecond: 50\n  - namespaces: [ops]\n    requestsPerSecond: 20",
    ));
    assert_eq!(limits(&e, &req(WEB))[0].2, Some(10));
    assert_eq!(limits(&e, &req(BATCH))[0].2, Some(50));
    assert_eq!(limits(&e, &req(BATCH))[0].3, Some(0));
    assert_eq!(limits(&e, &req(OPS))[0].2, Some(20));
    assert_eq!(limits(&e, &req(OPS))[0].3, Some(1));
    // A plaintext caller has no identity: no override can name it.
    let mut plain = req(WEB);
    plain.principal = None;
    assert_eq!(limits(&e, &plain)[0].2, Some(10));
}

#[test]
fn dry_run_is_reported_and_expired_policies_stop_applying() {
    let e = mesh(&format!(
        "{}{}",
        policy(
            "trial",
            "  annotations: {palisade.dev/dry-run: \"true\"}\n",
            "  total: {requestsPerSecond: 5}"
        ),
        policy(
            "old",
            "  annotations: {palisade.dev/expires-at: \"2030-01-01T01:00:00Z\"}\n",
            "  total: {requestsPerSecond: 5}"
        ),
    ));
    let before = limits(&e, &req(WEB));
    assert_eq!(
        before
            .iter()
            .map(|l| (l.0.as_str(), l.4))
            .collect::<Vec<_>>(),
        vec![("old", false), ("trial", true)]
    );
    let mut later = req(WEB);
    later.at = now() + Duration::from_secs(2 * 3600);
    assert_eq!(limits(&e, &later).len(), 1, "the expired one is gone");
}

#[test]
fn root_namespace_policies_apply_to_every_workload() {
    let yaml = "apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: mesh-wide, namespace: mesh-system}\nspec:\n  perClient: {requestsPerSecond: 1000}\n";
    let e = mesh(yaml);
    assert_eq!(limits(&e, &req(WEB))[0].0, "mesh-wide");
    // And the proxy of a workload in `shop` receives it.
    let loaded = parse_yaml("rl.yaml", yaml).unwrap();
    let share = loaded
        .snapshot
        .for_workload("shop", &labels(&[("app", "api")]));
    assert_eq!(share.objects.len(), 1);
}

#[test]
fn a_workloads_share_holds_only_the_limits_on_it() {
    let yaml = policy(
        "api",
        "",
        "  selector: {matchLabels: {app: api}}\n  total: {requestsPerSecond: 1}",
    );
    let loaded = parse_yaml("rl.yaml", &yaml).unwrap();
    assert_eq!(
        loaded
            .snapshot
            .for_workload("shop", &labels(&[("app", "api")]))
            .objects
            .len(),
        1
    );
    assert!(
        loaded
            .snapshot
            .for_workload("shop", &labels(&[("app", "db")]))
            .objects
            .is_empty()
    );
    assert!(
        loaded
            .snapshot
            .for_workload("web", &labels(&[("app", "api")]))
            .objects
            .is_empty()
    );
}

#[test]
fn a_snapshot_round_trips_through_json() {
    let yaml = policy(
        "p",
        "",
        "  ports: [8080]\n  total: {requestsPerSecond: 100, burst: 5}\n  overrides:\n  - namespaces: [ops]\n    requestsPerSecond: 20",
    );
    let loaded = parse_yaml("rl.yaml", &yaml).unwrap();
    let back = Snapshot::from_json(&loaded.snapshot.to_json()).unwrap();
    assert_eq!(back, loaded.snapshot);
}

#[test_case("  total: {requestsPerSecond: 0}", "spec.total.requestsPerSecond", "at least 1" ; "zero rate")]
#[test_case("  total: {requestsPerSecond: 2000000}", "spec.total.requestsPerSecond", "largest rate" ; "huge rate")]
#[test_case("  perClient: {requestsPerSecond: 5, burst: 0}", "spec.perClient.burst", "at least 1" ; "zero burst")]
#[test_case("  total: {requestsPerSecond: -1}", "spec.total.requestsPerSecond", "" ; "negative rate")]
#[test_case("  perclient: {requestsPerSecond: 5}", "spec", "unknown field" ; "misspelt field")]
#[test_case("  ports: [0]\n  total: {requestsPerSecond: 5}", "spec.ports[0]", "not a port" ; "port zero")]
#[test_case("  paths: [\"/a*b\"]\n  total: {requestsPerSecond: 5}", "spec.paths[0]", "`*`" ; "inner wildcard")]
#[test_case("  methods: [\"GET POST\"]\n  total: {requestsPerSecond: 5}", "spec.methods[0]", "not an HTTP method" ; "bad method")]
#[test_case("  overrides:\n  - requestsPerSecond: 5", "spec.overrides[0]", "names no client" ; "override without clients")]
#[test_case("  overrides:\n  - principals: [\"spiffe://cluster.local/ns/a/sa/b\"]\n    requestsPerSecond: 5", "spec.overrides[0].principals[0]", "without the spiffe://" ; "spiffe prefix")]
#[test_case("  selector: {matchLabels: {app: api}}", "spec", "limits nothing" ; "no limit")]
#[test_case("  hosts: [\"Shop.Example\"]\n  total: {requestsPerSecond: 5}", "spec.hosts[0]", "not a hostname" ; "uppercase host")]
#[test_case("  hosts: [\"10.0.0.1\"]\n  total: {requestsPerSecond: 5}", "spec.hosts[0]", "an IP address" ; "address as host")]
#[test_case("  routes: [\"a/b/c\"]\n  total: {requestsPerSecond: 5}", "spec.routes[0]", "not [namespace/]name" ; "route with two slashes")]
#[test_case("  routes: [\"/b\"]\n  total: {requestsPerSecond: 5}", "spec.routes[0]", "not [namespace/]name" ; "route without namespace")]
fn refused_with_the_field_named(spec: &str, field: &str, message: &str) {
    let e = parse_yaml("rl.yaml", &policy("bad", "", spec))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rl.yaml"), "{e}");
    assert!(e.contains("RateLimitPolicy shop/bad"), "{e}");
    assert!(e.contains(field), "{e}");
    assert!(e.contains(message), "{e}");
}

#[test]
fn hosts_and_routes_narrow_a_policy() {
    let e = mesh(&policy(
        "edge",
        "",
        "  hosts: [shop.example, \"*.api.example\"]\n  routes: [frontend, web/storefront]\n  total: {requestsPerSecond: 9}",
    ));
    let l = labels(&[]);
    let count = |host: Option<&str>, route: Option<(&str, &str)>| {
        let route = route.map(|(ns, name)| mesh_policy::ObjectRef {
            kind: mesh_policy::resource::Kind::HttpRoute,
            namespace: ns.into(),
            name: name.into(),
        });
        e.rate_limits(&RateLimitRequest {
            destination: Workload {
                namespace: "shop",
                labels: &l,
            },
            port: 443,
            method: "GET",
            path: "/",
            principal: None,
            host,
            route: route.as_ref(),
            now: now(),
        })
        .count()
    };
    let here = Some(("shop", "frontend"));
    // The host as sent: case, port and a trailing dot do not matter.
    assert_eq!(count(Some("shop.example"), here), 1);
    assert_eq!(count(Some("Shop.Example.:8443"), here), 1);
    assert_eq!(
        count(Some("v1.api.example"), Some(("web", "storefront"))),
        1
    );
    assert_eq!(
        count(Some("api.example"), here),
        0,
        "a wildcard needs a label"
    );
    assert_eq!(count(Some("other.example"), here), 0);
    assert_eq!(count(None, here), 0, "no host, no match");
    // A bare route name is in the policy's namespace.
    assert_eq!(count(Some("shop.example"), Some(("web", "frontend"))), 0);
    assert_eq!(
        count(Some("shop.example"), None),
        0,
        "a sidecar's inbound takes no route"
    );
}

#[test]
fn only_its_own_api_version() {
    let yaml = policy("p", "", "  total: {requestsPerSecond: 5}")
        .replace("policy.palisade.dev/v1alpha1", "policy.palisade.dev/v2");
    let e = parse_yaml("rl.yaml", &yaml).unwrap_err().to_string();
    assert!(e.contains("policy.palisade.dev/v1alpha1"), "{e}");
}
