//! NetworkPolicy: Kubernetes semantics, enforced by the sidecars.

#[path = "support/helpers.rs"]
mod support;

use mesh_policy::Stage;
use support::{Call, mesh, outcome};
use test_case::test_case;

const DB: &[(&str, &str)] = &[("app", "db")];
const WEB: &[(&str, &str)] = &[("app", "web")];

fn np(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}\n---\n"
    )
}

const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    team: shop\n    env: prod\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: dev\n  labels:\n    env: dev\n---\n";

fn shop_db(spec: &str) -> String {
    format!("{NAMESPACES}{}", np("shop", "db", spec))
}

/// A meshed caller in `namespace` with `labels`, to shop/db on 5432.
fn from_pod(namespace: &str, labels: &[(&str, &str)]) -> Call {
    Call::from_sa(namespace, "sa")
        .source_workload(namespace, labels)
        .source_ip("10.1.0.5")
        .to("shop", DB)
        .port(5432)
}

#[test]
fn not_selected_is_not_isolated() {
    // Kubernetes: a pod no policy selects is not isolated: all traffic allowed.
    let m = mesh(&np(
        "shop",
        "other",
        "  podSelector:\n    matchLabels:\n      app: cache\n  ingress: []",
    ));
    assert!(from_pod("dev", WEB).inbound(&m).is_allowed());
}

#[test]
fn isolated_without_rules_denies() {
    // Kubernetes: policyTypes defaults to [Ingress]; no ingress rules ⇒ deny all.
    let m = mesh(&shop_db("  podSelector: {}"));
    let d = from_pod("shop", WEB).inbound(&m);
    assert_eq!(outcome(&d), "deny: NetworkPolicy shop/db");
    assert_eq!(d.stage, Stage::NetworkPolicy);
}

#[test]
fn empty_ingress_rule_allows_all() {
    // Kubernetes: `ingress: [{}]` allows from everywhere, on every port.
    let m = mesh(&shop_db("  podSelector: {}\n  ingress: [{}]"));
    assert!(from_pod("dev", WEB).inbound(&m).is_allowed());
    assert!(
        Call::from_sa("x", "y")
            .source_ip("8.8.8.8")
            .to("shop", DB)
            .inbound(&m)
            .is_allowed()
    );
}

#[test]
fn union_of_policies() {
    // Kubernetes: isolated ⇒ allowed if any rule of any selecting policy allows.
    let yaml = format!(
        "{NAMESPACES}{}{}",
        np(
            "shop",
            "a",
            "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: web"
        ),
        np(
            "shop",
            "b",
            "  podSelector:\n    matchLabels:\n      app: db\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          env: dev"
        ),
    );
    let m = mesh(&yaml);
    assert!(from_pod("shop", WEB).inbound(&m).is_allowed());
    assert!(from_pod("dev", &[("app", "x")]).inbound(&m).is_allowed());
    let d = from_pod("shop", &[("app", "x")]).inbound(&m);
    assert_eq!(outcome(&d), "deny: NetworkPolicy shop/a");
}

#[test_case("  - podSelector:\n        matchLabels:\n          app: web", "shop", WEB, true ; "podSelector alone is the policy namespace")]
#[test_case("  - podSelector:\n        matchLabels:\n          app: web", "dev", WEB, false ; "podSelector alone excludes other namespaces")]
#[test_case("  - namespaceSelector:\n        matchLabels:\n          env: dev", "dev", &[("any", "pod")], true ; "namespaceSelector alone is all pods there")]
#[test_case("  - namespaceSelector:\n        matchLabels:\n          env: dev\n      podSelector:\n        matchLabels:\n          app: web", "dev", WEB, true ; "both selectors in one peer both hold")]
#[test_case("  - namespaceSelector:\n        matchLabels:\n          env: dev\n      podSelector:\n        matchLabels:\n          app: web", "dev", &[("app", "x")], false ; "both selectors in one peer are ANDed")]
#[test_case("  - namespaceSelector:\n        matchLabels:\n          env: dev\n      podSelector:\n        matchLabels:\n          app: web", "shop", WEB, false ; "both selectors in one peer are ANDed namespace side")]
#[test_case("  - namespaceSelector:\n        matchLabels:\n          env: dev\n    - podSelector:\n        matchLabels:\n          app: web", "shop", WEB, true ; "two peers are ORed")]
#[test_case("  - namespaceSelector: {}", "anywhere", &[], true ; "empty namespaceSelector selects all namespaces")]
#[test_case("  - podSelector: {}", "shop", &[("x", "y")], true ; "empty podSelector selects all pods of the namespace")]
#[test_case("  - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: dev", "dev", &[], true ; "automatic namespace name label")]
#[test_case("  - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: unlisted", "unlisted", &[], true ; "name label without a Namespace object")]
#[test_case("  - namespaceSelector:\n        matchExpressions:\n        - key: env\n          operator: In\n          values: [dev, staging]", "dev", &[], true ; "matchExpressions In")]
#[test_case("  - namespaceSelector:\n        matchExpressions:\n        - key: env\n          operator: NotIn\n          values: [prod]", "shop", &[], false ; "matchExpressions NotIn")]
#[test_case("  - namespaceSelector:\n        matchExpressions:\n        - key: env\n          operator: NotIn\n          values: [prod]", "unlisted", &[], true ; "NotIn matches a missing key")]
#[test_case("  - podSelector:\n        matchExpressions:\n        - key: app\n          operator: Exists", "shop", WEB, true ; "matchExpressions Exists")]
#[test_case("  - podSelector:\n        matchExpressions:\n        - key: app\n          operator: DoesNotExist", "shop", WEB, false ; "matchExpressions DoesNotExist")]
#[test_case("  - podSelector:\n        matchLabels:\n          app: web\n        matchExpressions:\n        - key: tier\n          operator: Exists", "shop", WEB, false ; "matchLabels and matchExpressions are ANDed")]
fn peers(from: &str, namespace: &str, labels: &[(&str, &str)], allowed: bool) {
    // Kubernetes: NetworkPolicyPeer semantics.
    let m = mesh(&shop_db(&format!(
        "  podSelector: {{}}\n  ingress:\n  - from:\n  {from}"
    )));
    let d = from_pod(namespace, labels).inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

#[test_case("10.1.0.5", true ; "inside the block")]
#[test_case("10.1.2.5", false ; "inside except")]
#[test_case("192.168.0.1", false ; "outside the block")]
fn ip_block(source_ip: &str, allowed: bool) {
    // Kubernetes: ipBlock cidr minus except.
    let m = mesh(&shop_db(
        "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock:\n        cidr: 10.1.0.0/16\n        except: [10.1.2.0/24]",
    ));
    let d = Call::from_sa("x", "y")
        .source_ip(source_ip)
        .to("shop", DB)
        .port(5432)
        .inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

#[test]
fn external_source_matches_only_ip_blocks() {
    // Kubernetes (as enforced by sidecars): an unknown caller has no
    // namespace or labels; only ipBlock peers can match it.
    let m = mesh(&format!(
        "{}apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\n  namespace: shop\nspec:\n  mtls:\n    mode: PERMISSIVE\n",
        shop_db("  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {}")
    ));
    let d = Call::plaintext()
        .source_ip("203.0.113.9")
        .to("shop", DB)
        .port(5432)
        .inbound(&m);
    assert_eq!(outcome(&d), "deny: NetworkPolicy shop/db");
}

#[test]
fn known_namespace_unknown_labels() {
    // An mTLS caller's namespace is known from its identity, its labels are
    // not: only selectors that select every pod can match it.
    let m = mesh(&shop_db(
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          env: dev\n      podSelector: {}",
    ));
    assert!(
        Call::from_sa("dev", "x")
            .to("shop", DB)
            .inbound(&m)
            .is_allowed()
    );
    let m = mesh(&shop_db(
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          env: dev\n      podSelector:\n        matchLabels:\n          app: web",
    ));
    assert!(
        !Call::from_sa("dev", "x")
            .to("shop", DB)
            .inbound(&m)
            .is_allowed()
    );
}

#[test_case("  - port: 5432", 5432, true ; "numeric port")]
#[test_case("  - port: 5432", 5433, false ; "other port")]
#[test_case("  - protocol: TCP\n      port: 5000\n      endPort: 6000", 5432, true ; "port range")]
#[test_case("  - port: 5000\n      endPort: 6000", 6001, false ; "beyond endPort")]
#[test_case("  - protocol: UDP\n      port: 5432", 5432, false ; "udp entry does not match tcp")]
#[test_case("  - protocol: TCP", 1234, true ; "protocol without port is every port")]
fn ports(ports: &str, port: u16, allowed: bool) {
    // Kubernetes: ports with protocol (TCP default), port and endPort.
    let m = mesh(&shop_db(&format!(
        "  podSelector: {{}}\n  ingress:\n  - ports:\n  {ports}"
    )));
    let d = from_pod("shop", WEB).port(port).inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

#[test]
fn from_and_ports_are_anded() {
    // Kubernetes: a rule allows traffic matching one of `from` AND one of `ports`.
    let m = mesh(&shop_db(
        "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: web\n    ports:\n    - port: 5432",
    ));
    assert!(from_pod("shop", WEB).inbound(&m).is_allowed());
    assert!(!from_pod("shop", WEB).port(22).inbound(&m).is_allowed());
    assert!(!from_pod("shop", &[("app", "x")]).inbound(&m).is_allowed());
}

// ---------------------------------------------------------------- egress

fn web_egress(spec: &str) -> String {
    format!("{NAMESPACES}{}", np("shop", "web-out", spec))
}

fn from_web() -> Call {
    Call::from_sa("shop", "web").source_workload("shop", WEB)
}

#[test]
fn egress_defaults_from_egress_section() {
    // Kubernetes: without policyTypes, Egress applies when the policy has egress rules.
    let m = mesh(&web_egress(
        "  podSelector:\n    matchLabels:\n      app: web\n  egress:\n  - to:\n    - podSelector:\n        matchLabels:\n          app: db",
    ));
    assert!(from_web().to("shop", DB).outbound(&m).is_allowed());
    let d = from_web().to("shop", &[("app", "cache")]).outbound(&m);
    assert_eq!(outcome(&d), "deny: NetworkPolicy shop/web-out");
    assert_eq!(d.stage, Stage::NetworkPolicy);
    // The ingress side is isolated too (Ingress is always a default type).
    assert!(
        !from_pod("shop", DB)
            .to("shop", WEB)
            .inbound(&m)
            .is_allowed()
    );
}

#[test]
fn ingress_only_policy_does_not_isolate_egress() {
    // Kubernetes: policyTypes [Ingress] (the default without egress rules)
    // leaves egress open.
    let m = mesh(&web_egress(
        "  podSelector:\n    matchLabels:\n      app: web",
    ));
    assert!(from_web().to("dev", DB).outbound(&m).is_allowed());
}

#[test]
fn egress_only_policy_type() {
    // Kubernetes: policyTypes [Egress] with no rules denies all egress and
    // leaves ingress open.
    let m = mesh(&web_egress(
        "  podSelector:\n    matchLabels:\n      app: web\n  policyTypes: [Egress]",
    ));
    assert!(!from_web().to("shop", DB).outbound(&m).is_allowed());
    assert!(
        from_pod("shop", DB)
            .to("shop", WEB)
            .inbound(&m)
            .is_allowed()
    );
}

#[test]
fn egress_to_external_ip_matches_only_ip_block() {
    // Kubernetes: an address outside the mesh matches ipBlock peers only.
    let m = mesh(&web_egress(
        "  podSelector:\n    matchLabels:\n      app: web\n  egress:\n  - to:\n    - ipBlock:\n        cidr: 203.0.113.0/24\n  - to:\n    - namespaceSelector: {}",
    ));
    assert!(
        from_web()
            .outside_mesh()
            .destination_ip("203.0.113.7")
            .port(443)
            .outbound(&m)
            .is_allowed()
    );
    assert!(
        !from_web()
            .outside_mesh()
            .destination_ip("198.51.100.1")
            .port(443)
            .outbound(&m)
            .is_allowed()
    );
    assert!(from_web().to("dev", DB).outbound(&m).is_allowed());
}

#[test]
fn check_needs_both_sides() {
    // Kubernetes: a connection needs the source's egress AND the destination's ingress.
    let yaml = format!(
        "{}{}",
        web_egress(
            "  podSelector:\n    matchLabels:\n      app: web\n  egress:\n  - to:\n    - podSelector: {}"
        ),
        np(
            "shop",
            "db-in",
            "  podSelector:\n    matchLabels:\n      app: db\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: api"
        )
    );
    let m = mesh(&yaml);
    let d = from_web().to("shop", DB).port(5432).check(&m);
    assert_eq!(outcome(&d), "deny: NetworkPolicy shop/db-in");
    let d = from_web().to("dev", DB).port(5432).check(&m);
    assert_eq!(outcome(&d), "deny: NetworkPolicy shop/web-out");
    let api = Call::from_sa("shop", "api").source_workload("shop", &[("app", "api")]);
    assert!(api.to("shop", DB).port(5432).check(&m).is_allowed());
}

#[test]
fn unmeshed_source_only_destination_checked() {
    // Either side unknown: only the other side's check is possible.
    let m = mesh(&web_egress("  podSelector: {}\n  policyTypes: [Egress]"));
    assert!(
        Call::from_sa("dev", "x")
            .to("shop", DB)
            .check(&m)
            .is_allowed()
    );
}
