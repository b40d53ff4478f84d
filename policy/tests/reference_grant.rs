//! ReferenceGrant (Gateway API `gateway.networking.k8s.io/v1beta1`): a
//! route's backend in another namespace, and a Gateway's certificate in
//! another namespace, are followed only when a grant in the target's
//! namespace allows that exact reference; otherwise the backend answers 500
//! and the certificate is not served (RefNotPermitted).

#[path = "support/helpers.rs"]
mod support;

use std::time::Duration;

use mesh_policy::{EdgeRequest, Evaluator, RouteRequest, parse_yaml};
use support::{mesh, now};
use test_case::test_case;

/// A Gateway whose listener's certificate lives in `certs`, an edge route
/// in `shop` to Service `billing/payments`, and a mesh route in `shop` to
/// the same Service.
const REFS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: mesh-system}
spec:
  gatewayClassName: palisade
  listeners:
    - name: shop
      hostname: shop.example
      port: 443
      protocol: HTTPS
      tls: {certificateRefs: [{name: shop-tls, namespace: certs}]}
      allowedRoutes: {namespaces: {from: All}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front, namespace: shop}
spec:
  parentRefs: [{name: edge, namespace: mesh-system}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /pay}}]
      backendRefs: [{name: payments, namespace: billing, port: 80}]
    - backendRefs: [{name: frontend, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{kind: Service, group: \"\", name: api}]
  rules:
    - backendRefs: [{name: payments, namespace: billing, port: 80}]
---
";

fn grant(namespace: &str, annotations: &str, from: &str, to: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: {namespace}{annotations}}}\nspec:\n  from: [{from}]\n  to: [{to}]\n---\n"
    )
}

/// Why a request at the edge for `path` may not reach its backend, if it
/// may not (None: it may).
fn edge_refusal(m: &Evaluator, path: &str, at: std::time::SystemTime) -> Option<String> {
    let headers = http::HeaderMap::new();
    let d = m
        .edge_route(&EdgeRequest {
            port: 443,
            ingress: false,
            host: "shop.example",
            method: "GET",
            path,
            query: None,
            headers: &headers,
            now: at,
        })
        .expect("a rule takes it");
    d.backends[0].refusal(at)
}

fn mesh_refusal(m: &Evaluator, at: std::time::SystemTime) -> Option<String> {
    let headers = http::HeaderMap::new();
    let d = m
        .route(&RouteRequest {
            client_namespace: Some("shop"),
            service_namespace: "shop",
            service_name: "api",
            port: 80,
            method: "GET",
            path: "/",
            query: None,
            headers: &headers,
            now: at,
        })
        .expect("the mesh route takes it");
    d.backends[0].refusal(at)
}

fn served_secrets(m: &Evaluator, at: std::time::SystemTime) -> Vec<(String, String)> {
    m.edge_certificates(443, at)
        .into_iter()
        .map(|c| c.secret)
        .collect()
}

const ROUTES: &str = "{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}";
const GATEWAYS: &str = "{group: gateway.networking.k8s.io, kind: Gateway, namespace: mesh-system}";

#[test]
fn without_a_grant_references_across_namespaces_are_refused_not_followed() {
    let m = mesh(REFS);
    let why = edge_refusal(&m, "/pay", now()).expect("refused");
    assert!(
        why.contains("billing/payments") && why.contains("RefNotPermitted"),
        "{why}"
    );
    // The route's own namespace needs no grant.
    assert_eq!(edge_refusal(&m, "/", now()), None);
    assert!(mesh_refusal(&m, now()).is_some());
    assert_eq!(served_secrets(&m, now()), Vec::<(String, String)>::new());
    let refused: Vec<String> = m
        .refused_references(now())
        .iter()
        .map(|r| format!("{} {}: {}", r.object, r.at, r.target))
        .collect();
    assert_eq!(
        refused,
        [
            "HTTPRoute shop/api rule 0: Service billing/payments",
            "HTTPRoute shop/front rule 0: Service billing/payments",
            "Gateway mesh-system/edge listener shop: Secret certs/shop-tls",
        ]
    );
}

#[test]
fn a_grant_in_the_targets_namespace_permits_exactly_what_it_names() {
    let yaml = format!(
        "{REFS}{}{}",
        grant(
            "billing",
            "",
            ROUTES,
            "{group: \"\", kind: Service, name: payments}"
        ),
        grant("certs", "", GATEWAYS, "{group: \"\", kind: Secret}").replace("name: g,", "name: c,"),
    );
    let m = mesh(&yaml);
    assert_eq!(edge_refusal(&m, "/pay", now()), None);
    assert_eq!(mesh_refusal(&m, now()), None);
    assert_eq!(
        served_secrets(&m, now()),
        [("certs".to_string(), "shop-tls".to_string())]
    );
    assert_eq!(m.refused_references(now()), []);
}

// Each of these grants misses the reference by one field.
#[test_case("shop", ROUTES, "{group: \"\", kind: Service}" ; "grant in the referrer's namespace")]
#[test_case("billing", "{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: blog}", "{group: \"\", kind: Service}" ; "other from namespace")]
#[test_case("billing", "{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: shop}", "{group: \"\", kind: Service}" ; "other from kind")]
#[test_case("billing", "{group: example.com, kind: HTTPRoute, namespace: shop}", "{group: \"\", kind: Service}" ; "other from group")]
#[test_case("billing", ROUTES, "{group: \"\", kind: Service, name: ledger}" ; "other name")]
#[test_case("billing", ROUTES, "{group: \"\", kind: Secret}" ; "other kind")]
fn a_grant_that_misses_permits_nothing(namespace: &str, from: &str, to: &str) {
    let m = mesh(&format!("{REFS}{}", grant(namespace, "", from, to)));
    assert!(edge_refusal(&m, "/pay", now()).is_some());
    assert!(mesh_refusal(&m, now()).is_some());
}

// A grant in dry-run permits nothing: it is reported, not followed.
#[test]
fn a_dry_run_grant_permits_nothing() {
    let m = mesh(&format!(
        "{REFS}{}",
        grant(
            "billing",
            ", annotations: {palisade.dev/dry-run: \"true\"}",
            ROUTES,
            "{group: \"\", kind: Service, name: payments}"
        )
    ));
    assert!(edge_refusal(&m, "/pay", now()).is_some());
    assert!(mesh_refusal(&m, now()).is_some());
}

// A grant is an exception: time-limited with palisade.dev/expires-at, it
// stops permitting at that instant, and the backend then answers 500.
#[test]
fn an_expiring_grant_lapses() {
    let expiry = ", annotations: {palisade.dev/expires-at: \"2030-01-01T01:00:00Z\"}";
    let m = mesh(&format!(
        "{REFS}{}",
        grant(
            "billing",
            expiry,
            ROUTES,
            "{group: \"\", kind: Service, name: payments}"
        )
    ));
    let before = now();
    let after = now() + Duration::from_secs(2 * 3600);
    assert_eq!(edge_refusal(&m, "/pay", before), None);
    let why = edge_refusal(&m, "/pay", after).expect("lapsed");
    assert!(why.contains("expired"), "{why}");
    assert!(
        m.refused_references(after)
            .iter()
            .all(|r| r.lapsed || r.target.starts_with("Secret"))
    );
}

#[test_case(&format!("from: [{ROUTES}]"), "from: []", "spec.from" ; "empty from")]
#[test_case("to: [{group: \"\", kind: Service, name: payments}]", "to: []", "spec.to" ; "empty to")]
#[test_case("kind: HTTPRoute", "kind: \"HTTP Route\"", "spec.from[0].kind" ; "bad kind")]
#[test_case("namespace: shop}", "namespace: Shop}", "spec.from[0].namespace" ; "bad namespace")]
#[test_case("group: gateway.networking.k8s.io", "group: Gateway_API", "spec.from[0].group" ; "bad group")]
#[test_case("name: payments", "name: \"pay ments\"", "spec.to[0].name" ; "bad name")]
#[test_case("  to: [{group: \"\", kind: Service, name: payments}]\n", "", "spec" ; "missing to")]
fn bad_grants_are_refused_with_the_field(from: &str, to: &str, field: &str) {
    let good = grant(
        "billing",
        "",
        ROUTES,
        "{group: \"\", kind: Service, name: payments}",
    );
    let yaml = good.replacen(from, to, 1);
    assert_ne!(yaml, good, "the edit applies");
    let e = parse_yaml("g.yaml", &yaml).unwrap_err().to_string();
    assert!(
        e.contains("g.yaml") && e.contains("ReferenceGrant billing/g"),
        "{e}"
    );
    assert!(e.contains(field), "{field}: {e}");
}

#[test]
fn grants_reach_every_proxy_and_only_v1beta1_and_v1alpha2_load() {
    let yaml = grant("billing", "", ROUTES, "{group: \"\", kind: Service}");
    let loaded = parse_yaml("g.yaml", &yaml).unwrap();
    let share = loaded
        .snapshot
        .for_workload("shop", &support::labels(&[("app", "web")]));
    assert_eq!(share.objects.len(), 1);
    let alpha = yaml.replace("v1beta1", "v1alpha2");
    assert!(parse_yaml("g.yaml", &alpha).is_ok());
    let v1 = yaml.replace("v1beta1", "v1");
    let e = parse_yaml("g.yaml", &v1).unwrap_err().to_string();
    assert!(e.contains("v1beta1"), "{e}");
}
