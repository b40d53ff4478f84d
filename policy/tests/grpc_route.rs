//! GRPCRoute (Gateway API v1, GAMMA mesh routing): what loads, what is
//! refused with the field named, and which rule a call takes — by gRPC
//! service and method (an exact method before a service alone), headers,
//! and against HTTPRoutes of the same Service.

#[path = "support/helpers.rs"]
mod support;

use mesh_policy::{RouteRequest, Snapshot, parse_yaml};
use support::{labels, mesh, now};
use test_case::test_case;

fn grpc_route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: orders, port: 9090}}\n{spec}\n---\n"
    )
}

const ROUTES: &str = "  rules:
    - matches:
        - method: {service: shop.v1.Orders, method: Get}
      backendRefs: [{name: orders-cache, port: 9090}]
    - matches:
        - method: {service: shop.v1.Orders}
          headers: [{name: x-canary, value: \"yes\"}]
      backendRefs: [{name: orders-v2, port: 9090}]
    - matches:
        - method: {service: shop.v1.Orders}
      backendRefs:
        - {name: orders-v1, port: 9090, weight: 90}
        - {name: orders-v2, port: 9090, weight: 10}
";

/// (route and rule, backends with weights) for a gRPC call to `path`.
fn call(
    m: &mesh_policy::Evaluator,
    path: &str,
    headers: &[(&'static str, &'static str)],
) -> Option<(String, Vec<(String, u32)>)> {
    let mut h = http::HeaderMap::new();
    h.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    for (k, v) in headers {
        h.append(*k, http::HeaderValue::from_static(v));
    }
    m.route(&RouteRequest {
        client_namespace: Some("web"),
        service_namespace: "shop",
        service_name: "orders",
        port: 9090,
        method: "POST",
        path,
        query: None,
        headers: &h,
        now: now(),
    })
    .map(|d| {
        (
            format!("{} rule {}", d.route, d.rule),
            d.backends
                .iter()
                .map(|b| (b.name.clone(), b.weight))
                .collect(),
        )
    })
}

#[test]
fn calls_take_the_rule_of_their_service_and_method() {
    let m = mesh(&grpc_route("orders", ROUTES));
    let rule =
        |path, headers: &[(&'static str, &'static str)]| call(&m, path, headers).map(|(r, _)| r);
    assert_eq!(
        rule("/shop.v1.Orders/Get", &[]).as_deref(),
        Some("GRPCRoute shop/orders rule 0"),
        "an exact method beats its service"
    );
    assert_eq!(
        rule("/shop.v1.Orders/Get", &[("x-canary", "yes")]).as_deref(),
        Some("GRPCRoute shop/orders rule 0"),
        "a method match outranks header matches"
    );
    assert_eq!(
        rule("/shop.v1.Orders/List", &[("x-canary", "yes")]).as_deref(),
        Some("GRPCRoute shop/orders rule 1")
    );
    assert_eq!(
        call(&m, "/shop.v1.Orders/List", &[]),
        Some((
            "GRPCRoute shop/orders rule 2".to_string(),
            vec![("orders-v1".to_string(), 90), ("orders-v2".to_string(), 10)]
        ))
    );
    // Another service, or one whose name only starts the same: no route.
    assert_eq!(rule("/shop.v1.Payments/Get", &[]), None);
    assert_eq!(rule("/shop.v1.OrdersAdmin/Get", &[]), None);
}

// A rule without matches takes every call; an HTTPRoute on the same
// Service competes by the same precedence (here: its exact path wins).
#[test]
fn grpc_and_http_routes_share_one_table() {
    let yaml = format!(
        "{}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: health, namespace: shop}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: orders, port: 9090}}]\n  rules:\n    - matches: [{{path: {{type: Exact, value: /grpc.health.v1.Health/Check}}}}]\n      backendRefs: [{{name: health, port: 9090}}]\n",
        grpc_route(
            "all",
            "  rules:\n    - backendRefs: [{name: orders-v1, port: 9090}]\n"
        )
    );
    let m = mesh(&yaml);
    assert_eq!(
        call(&m, "/shop.v1.Orders/Get", &[])
            .map(|(r, _)| r)
            .as_deref(),
        Some("GRPCRoute shop/all rule 0")
    );
    assert_eq!(
        call(&m, "/grpc.health.v1.Health/Check", &[])
            .map(|(r, _)| r)
            .as_deref(),
        Some("HTTPRoute shop/health rule 0")
    );
}

#[test_case("  rules:\n    - matches: [{method: {method: Get}}]\n", "spec.rules[0].matches[0].method.service", "name the service" ; "method without service")]
#[test_case("  rules:\n    - matches: [{method: {}}]\n", "spec.rules[0].matches[0].method", "service, method or both" ; "empty method match")]
#[test_case("  rules:\n    - matches: [{method: {type: RegularExpression, service: \"shop.*\"}}]\n", "spec.rules[0].matches[0].method.type", "not supported" ; "regex")]
#[test_case("  rules:\n    - matches: [{method: {service: shop/v1}}]\n", "spec.rules[0].matches[0].method.service", "not a gRPC service name" ; "bad service")]
#[test_case("  rules:\n    - matches: [{method: {service: shop.v1.Orders, method: 1Get}}]\n", "spec.rules[0].matches[0].method.method", "not a gRPC method name" ; "bad method")]
#[test_case("  rules:\n    - backendRefs: [{name: a}]\n", "spec.rules[0].backendRefs[0].port", "required" ; "backend without port")]
#[test_case("  rules:\n    - filters: [{type: RequestMirror, requestMirror: {}}]\n", "spec.rules[0].filters[0].type", "not supported" ; "unsupported filter")]
#[test_case("  hostnames: [orders.example.com]\n", "spec.hostnames", "GAMMA" ; "hostnames")]
#[test_case("  rules:\n    - timeouts: {request: 1s}\n", "spec.rules[0]", "unknown field" ; "timeouts are HTTPRoute's")]
fn bad_grpc_routes_are_refused_naming_the_field(spec: &str, field: &str, message: &str) {
    let err = parse_yaml("grpc.yaml", &grpc_route("bad", spec))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("grpc.yaml"), "{err}");
    assert!(err.contains("GRPCRoute shop/bad"), "{err}");
    assert!(err.contains(field), "{err}");
    assert!(err.contains(message), "{err}");
}

#[test]
fn grpc_routes_travel_in_snapshots_to_clients() {
    let loaded = parse_yaml("g.yaml", &grpc_route("orders", ROUTES)).expect("loads");
    let back = Snapshot::from_json(&loaded.snapshot.to_json()).expect("round trip");
    assert_eq!(back, loaded.snapshot);
    let share = loaded
        .snapshot
        .for_workload("web", &labels(&[("app", "web")]));
    assert_eq!(
        share.objects.len(),
        1,
        "a producer route goes to every client"
    );
}
