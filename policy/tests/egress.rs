//! EgressPolicy: what loads, what is refused with the field named, and the
//! decision for a connection leaving the mesh (by name, address, port and
//! protocol; defaults; dry-run; the root namespace; expiry).

#[path = "support/helpers.rs"]
mod support;

use std::net::IpAddr;

use mesh_policy::resource::egress::EgressProtocol;
use mesh_policy::{EgressRequest, Snapshot, Workload, parse_yaml};
use support::{labels, mesh, now};
use test_case::test_case;

fn policy(namespace: &str, name: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: EgressPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{annotations}spec:\n{spec}\n---\n"
    )
}

const PAYMENTS: &str = "  selector: {matchLabels: {app: checkout}}\n  default: deny\n  allow:\n  - hosts: [api.stripe.com, \"*.stripe.network\"]\n    ports: [443]\n    protocols: [TLS]\n  - hosts: [status.example.com]\n    protocols: [HTTP]\n  - cidrs: [192.0.2.0/24]\n    ports: [5432]";

/// (decision label, decided by, by name) for a connection from an
/// `app` workload in `namespace`.
fn decide(
    e: &mesh_policy::Evaluator,
    namespace: &str,
    app: &str,
    host: Option<&str>,
    ip: &str,
    port: u16,
    protocol: EgressProtocol,
) -> (String, String, bool) {
    let l = labels(&[("app", app)]);
    let d = e.egress(&EgressRequest {
        source: Workload {
            namespace,
            labels: &l,
        },
        host,
        ip: ip.parse::<IpAddr>().unwrap(),
        port,
        protocol,
        now: now(),
    });
    (
        d.decision.label().to_owned(),
        match &d.decision.dry_run {
            Some(dry) => format!("{} (dry run: {})", d.decision.decided_by, dry.decided_by),
            None => d.decision.decided_by.to_string(),
        },
        d.by_name,
    )
}

use EgressProtocol::{Http, Tcp, Tls};

#[test]
fn allowed_by_name_address_port_and_protocol_else_the_default() {
    let e = mesh(&policy("shop", "payments", "", PAYMENTS));
    assert!(e.has_egress_policies());
    let d = |host, ip, port, proto| decide(&e, "shop", "checkout", host, ip, port, proto);
    let allowed = |rule: usize, by_name: bool| {
        (
            "allow".to_owned(),
            format!("EgressPolicy shop/payments rule {rule}"),
            by_name,
        )
    };
    let denied = (
        "deny".to_owned(),
        "EgressPolicy shop/payments".to_owned(),
        false,
    );
    // By name: the exact host and the wildcard (one or more labels), on
    // the rule's port and protocol; the address is then to be checked.
    assert_eq!(
        d(Some("api.stripe.com"), "203.0.113.5", 443, Tls),
        allowed(0, true)
    );
    assert_eq!(
        d(Some("m.stripe.network"), "203.0.113.5", 443, Tls),
        allowed(0, true)
    );
    assert_eq!(
        d(Some("a.b.stripe.network"), "203.0.113.5", 443, Tls),
        allowed(0, true)
    );
    assert_eq!(d(Some("stripe.network"), "203.0.113.5", 443, Tls), denied);
    assert_eq!(
        d(Some("api.stripe.com"), "203.0.113.5", 80, Tls),
        denied,
        "another port"
    );
    assert_eq!(
        d(Some("api.stripe.com"), "203.0.113.5", 443, Http),
        denied,
        "another protocol"
    );
    assert_eq!(d(Some("evil.example"), "203.0.113.5", 443, Tls), denied);
    assert_eq!(
        d(None, "203.0.113.5", 443, Tcp),
        denied,
        "no name, no host rule"
    );
    // No ports: every port.
    assert_eq!(
        d(Some("status.example.com"), "198.51.100.1", 8080, Http),
        allowed(1, true)
    );
    // By address: the CIDR's range only, whatever name the client gave.
    assert_eq!(d(None, "192.0.2.77", 5432, Tcp), allowed(2, false));
    assert_eq!(
        d(Some("anything.example"), "192.0.2.77", 5432, Tls),
        allowed(2, false)
    );
    assert_eq!(d(None, "192.0.3.1", 5432, Tcp), denied);
    // Workloads the selector does not take, and other namespaces: no
    // policy, unrestricted.
    let open = ("allow".to_owned(), "default allow".to_owned(), false);
    assert_eq!(
        decide(
            &e,
            "shop",
            "web",
            Some("evil.example"),
            "203.0.113.5",
            443,
            Tls
        ),
        open
    );
    assert_eq!(
        decide(
            &e,
            "blog",
            "checkout",
            Some("evil.example"),
            "203.0.113.5",
            443,
            Tls
        ),
        open
    );
}

#[test]
fn defaults_the_root_namespace_and_several_policies() {
    let yaml = format!(
        "{}{}{}",
        policy(
            "mesh-system",
            "mesh-wide",
            "",
            "  default: deny\n  allow:\n  - hosts: [ntp.example.org]"
        ),
        policy(
            "shop",
            "a-audit",
            "",
            "  default: allow-all\n  allow:\n  - hosts: [metrics.example]"
        ),
        policy("blog", "b-open", "", "  default: allow-all")
    );
    let e = mesh(&yaml);
    let d = |ns, host| decide(&e, ns, "x", Some(host), "203.0.113.9", 443, Tls);
    // A mesh-wide deny and a namespace's allow-all: any deny wins over the
    // allow-all defaults; a rule of either allows.
    assert_eq!(
        d("shop", "ntp.example.org").1,
        "EgressPolicy mesh-system/mesh-wide rule 0"
    );
    assert_eq!(
        d("shop", "metrics.example").1,
        "EgressPolicy shop/a-audit rule 0"
    );
    assert_eq!(d("shop", "evil.example").0, "deny");
    assert_eq!(
        d("shop", "evil.example").1,
        "EgressPolicy mesh-system/mesh-wide"
    );
    // The root namespace's own workloads.
    assert_eq!(d("mesh-system", "evil.example").0, "deny");
    // allow-all alone: allowed, naming the policy.
    let only_open = mesh(&policy("blog", "b-open", "", "  default: allow-all"));
    let r = decide(
        &only_open,
        "blog",
        "x",
        Some("evil.example"),
        "203.0.113.9",
        443,
        Tls,
    );
    assert_eq!(
        (r.0.as_str(), r.1.as_str()),
        ("allow", "EgressPolicy blog/b-open")
    );
}

#[test]
fn dry_run_counts_what_it_would_deny_and_expired_policies_stop() {
    let dry = mesh(&policy(
        "shop",
        "trial",
        "",
        "  mode: dry-run\n  allow:\n  - hosts: [api.stripe.com]",
    ));
    let d = |host| decide(&dry, "shop", "x", Some(host), "203.0.113.9", 443, Tls);
    assert_eq!(
        d("evil.example"),
        (
            "dry_run_deny".to_owned(),
            "default allow (dry run: EgressPolicy shop/trial)".to_owned(),
            false
        )
    );
    assert_eq!(d("api.stripe.com").0, "allow");
    // The annotation works as on every kind.
    let annotated = mesh(&policy(
        "shop",
        "trial",
        "  annotations: {palisade.dev/dry-run: \"true\"}\n",
        "  allow:\n  - hosts: [api.stripe.com]",
    ));
    let r = decide(
        &annotated,
        "shop",
        "x",
        Some("evil.example"),
        "203.0.113.9",
        443,
        Tls,
    );
    assert_eq!(r.0, "dry_run_deny");
    // An enforced deny beside a dry-run allow: the dry-run rule does not
    // let anything out.
    let both = mesh(&format!(
        "{}{}",
        policy("shop", "enforced", "", "  default: deny"),
        policy(
            "shop",
            "trial",
            "",
            "  mode: dry-run\n  allow:\n  - hosts: [api.stripe.com]"
        )
    ));
    let r = decide(
        &both,
        "shop",
        "x",
        Some("api.stripe.com"),
        "203.0.113.9",
        443,
        Tls,
    );
    assert_eq!(
        (r.0.as_str(), r.1.as_str()),
        ("deny", "EgressPolicy shop/enforced")
    );
    // Expired: no longer applies.
    let expired = mesh(&policy(
        "shop",
        "old",
        "  annotations: {palisade.dev/expires-at: \"2029-12-01T00:00:00Z\"}\n",
        "  default: deny",
    ));
    let r = decide(
        &expired,
        "shop",
        "x",
        Some("evil.example"),
        "203.0.113.9",
        443,
        Tls,
    );
    assert_eq!((r.0.as_str(), r.1.as_str()), ("allow", "default allow"));
}

#[test]
fn a_workloads_share_holds_the_policies_that_select_it() {
    let yaml = format!(
        "{}{}",
        policy("shop", "payments", "", PAYMENTS),
        policy("mesh-system", "mesh-wide", "", "  default: deny")
    );
    let loaded = parse_yaml("egress.yaml", &yaml).unwrap();
    let share = |ns: &str, app: &str| {
        loaded
            .snapshot
            .for_workload(ns, &labels(&[("app", app)]))
            .objects
            .iter()
            .map(|o| o.object_ref().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        share("shop", "checkout"),
        [
            "EgressPolicy shop/payments",
            "EgressPolicy mesh-system/mesh-wide"
        ]
    );
    assert_eq!(share("shop", "web"), ["EgressPolicy mesh-system/mesh-wide"]);
    let back = Snapshot::from_json(&loaded.snapshot.to_json()).unwrap();
    assert_eq!(back, loaded.snapshot);
}

#[test_case("  allow:\n  - hosts: [\"API.stripe.com\"]", "spec.allow[0].hosts[0]", "not a hostname" ; "uppercase host")]
#[test_case("  allow:\n  - hosts: [\"a.*.example\"]", "spec.allow[0].hosts[0]", "not a hostname" ; "inner wildcard")]
#[test_case("  allow:\n  - hosts: [\"203.0.113.1\"]", "spec.allow[0].hosts[0]", "an IP address" ; "address as host")]
#[test_case("  allow:\n  - cidrs: [\"10.0.0.0/33\"]", "spec.allow[0].cidrs[0]", "prefix length" ; "bad prefix")]
#[test_case("  allow:\n  - cidrs: [example.com]", "spec.allow[0].cidrs[0]", "not an IP address" ; "name as cidr")]
#[test_case("  allow:\n  - cidrs: [192.0.2.0/24]\n    ports: [0]", "spec.allow[0].ports[0]", "not a port" ; "port zero")]
#[test_case("  allow:\n  - ports: [443]", "spec.allow[0]", "names no destination" ; "rule without destination")]
#[test_case("  allow:\n  - hosts: [db.example]\n    protocols: [TCP]", "spec.allow[0].protocols", "plain TCP carries no name" ; "host over tcp")]
#[test_case("  allow:\n  - hosts: [a.example]\n    protocols: [QUIC]", "spec", "unknown variant" ; "unknown protocol")]
#[test_case("  mode: audit", "spec", "unknown variant" ; "unknown mode")]
#[test_case("  default: allow", "spec", "unknown variant" ; "unknown default")]
#[test_case("  allow:\n  - host: [a.example]", "spec", "unknown field" ; "misspelt field")]
fn refused_with_the_field_named(spec: &str, field: &str, message: &str) {
    let e = parse_yaml("egress.yaml", &policy("shop", "bad", "", spec))
        .unwrap_err()
        .to_string();
    assert!(e.contains("egress.yaml"), "{e}");
    assert!(e.contains("EgressPolicy shop/bad"), "{e}");
    assert!(e.contains(field), "{e}");
    assert!(e.contains(message), "{e}");
}

#[test]
fn only_its_own_api_version() {
    let yaml = policy("shop", "p", "", "  default: deny")
        .replace("policy.palisade.dev/v1alpha1", "policy.palisade.dev/v1");
    let e = parse_yaml("egress.yaml", &yaml).unwrap_err().to_string();
    assert!(e.contains("policy.palisade.dev/v1alpha1"), "{e}");
}

/// Istio's egress control as users write it (the ServiceEntries of Istio's
/// "Accessing External Services" and "Egress TCP" tasks, REGISTRY_ONLY set
/// by a Sidecar): mapped onto the same decision.
const ISTIO: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: shop
spec:
  egress:
  - hosts: [\"./*\", \"istio-system/*\"]
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin-ext
  namespace: shop
spec:
  hosts:
  - httpbin.org
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: google
  namespace: shop
spec:
  hosts:
  - www.google.com
  ports:
  - number: 443
    name: https
    protocol: HTTPS
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: mongo
  namespace: shop
spec:
  hosts:
  - my-mongo.tcp.svc
  addresses:
  - 192.0.2.20/32
  ports:
  - number: 27017
    name: tcp
    protocol: TCP
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: 192.0.2.20
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: private
  namespace: blog
spec:
  hosts: [api.private.example]
  exportTo: [\".\"]
  ports:
  - {number: 443, name: tls, protocol: TLS}
";

#[test]
fn istio_service_entries_and_registry_only() {
    let loaded = parse_yaml("istio.yaml", ISTIO).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let e = mesh(ISTIO);
    let d = |ns, host, ip, port, proto| decide(&e, ns, "x", host, ip, port, proto);
    // REGISTRY_ONLY: what a ServiceEntry names, on its port and protocol.
    assert_eq!(
        d("shop", Some("httpbin.org"), "203.0.113.1", 80, Http),
        (
            "allow".to_owned(),
            "ServiceEntry shop/httpbin-ext rule 0".to_owned(),
            true
        )
    );
    assert_eq!(
        d("shop", Some("www.google.com"), "203.0.113.2", 443, Tls).1,
        "ServiceEntry shop/google rule 0"
    );
    assert_eq!(
        d("shop", Some("www.google.com"), "203.0.113.2", 443, Http).0,
        "deny"
    );
    assert_eq!(
        d("shop", Some("httpbin.org"), "203.0.113.1", 443, Tls).0,
        "deny"
    );
    // TCP by the entry's addresses.
    assert_eq!(
        d("shop", None, "192.0.2.20", 27017, Tcp),
        (
            "allow".to_owned(),
            "ServiceEntry shop/mongo rule 0".to_owned(),
            false
        )
    );
    assert_eq!(d("shop", None, "192.0.2.21", 27017, Tcp).0, "deny");
    // Anything else: denied, naming the Sidecar.
    assert_eq!(
        d("shop", Some("evil.example"), "203.0.113.9", 443, Tls).1,
        "Sidecar shop/default"
    );
    // exportTo ".": blog's own; and without REGISTRY_ONLY blog is open.
    assert_eq!(
        d("shop", Some("api.private.example"), "203.0.113.3", 443, Tls).0,
        "deny"
    );
    assert_eq!(
        d("blog", Some("anything.example"), "203.0.113.3", 443, Tls).1,
        "default allow"
    );
    // Shares: the Sidecar and what is exported to the namespace.
    let share = |ns: &str| {
        loaded
            .snapshot
            .for_workload(ns, &labels(&[]))
            .objects
            .iter()
            .map(|o| o.object_ref().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        share("shop"),
        [
            "Sidecar shop/default",
            "ServiceEntry shop/httpbin-ext",
            "ServiceEntry shop/google",
            "ServiceEntry shop/mongo"
        ]
    );
    assert!(share("blog").contains(&"ServiceEntry blog/private".to_owned()));
    assert!(!share("blog").contains(&"Sidecar shop/default".to_owned()));
    // A ServiceEntry exported everywhere (the default) reaches blog too.
    assert!(share("blog").contains(&"ServiceEntry shop/google".to_owned()));
    let back = Snapshot::from_json(&loaded.snapshot.to_json()).unwrap();
    assert_eq!(back, loaded.snapshot);
}

#[test]
fn istio_entries_inside_the_mesh_are_skipped_and_mistakes_refused() {
    let internal = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: vm, namespace: shop}\nspec:\n  hosts: [vm.shop.internal]\n  location: MESH_INTERNAL\n  ports: [{number: 80, protocol: HTTP}]\n";
    let loaded = parse_yaml("istio.yaml", internal).unwrap();
    assert!(loaded.snapshot.objects.is_empty());
    assert!(
        loaded.warnings[0].contains("MESH_INTERNAL"),
        "{:?}",
        loaded.warnings
    );
    for (spec, field, message) in [
        (
            "  hosts: [db.example]\n  ports: [{number: 5432, protocol: TCP}]",
            "spec.ports[0].protocol",
            "give spec.addresses",
        ),
        ("  hosts: [a.example]", "spec.ports", "at least one port"),
        (
            "  hosts: [a.example]\n  ports: [{number: 70000, protocol: TLS}]",
            "spec.ports[0].number",
            "not a port",
        ),
        (
            "  hosts: [\"*\"]\n  ports: [{number: 443, protocol: TLS}]",
            "spec.hosts[0]",
            "not a hostname",
        ),
    ] {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: bad, namespace: shop}}\nspec:\n{spec}\n"
        );
        let e = parse_yaml("istio.yaml", &yaml).unwrap_err().to_string();
        assert!(e.contains("ServiceEntry shop/bad"), "{e}");
        assert!(e.contains(field), "{e}");
        assert!(e.contains(message), "{e}");
    }
    let bad_mode = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s, namespace: shop}\nspec:\n  outboundTrafficPolicy: {mode: DENY_ALL}\n";
    let e = parse_yaml("istio.yaml", bad_mode).unwrap_err().to_string();
    assert!(e.contains("spec.outboundTrafficPolicy.mode"), "{e}");
}
