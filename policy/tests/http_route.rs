//! HTTPRoute (Gateway API v1, GAMMA mesh routing): what loads, what is
//! refused with the field named, and which rule a request takes (the
//! Gateway API's match precedence; producer and consumer routes).

#[path = "support/helpers.rs"]
mod support;

use std::time::Duration;

use mesh_policy::{
    Backend, BackendPort, Permitted, RouteDecision, RouteRequest, Snapshot, parse_yaml,
};
use support::{mesh, now};
use test_case::test_case;

fn route(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: api, port: 8080}}\n{spec}\n---\n"
    )
}

struct Req<'a> {
    client_ns: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: http::HeaderMap,
    port: u16,
}

impl<'a> Req<'a> {
    fn get(path: &'a str) -> Self {
        Req {
            client_ns: Some("web"),
            method: "GET",
            path,
            query: None,
            headers: http::HeaderMap::new(),
            port: 8080,
        }
    }
    fn client_in(mut self, ns: &'a str) -> Self {
        self.client_ns = Some(ns);
        self
    }
    fn method(mut self, m: &'a str) -> Self {
        self.method = m;
        self
    }
    fn query(mut self, q: &'a str) -> Self {
        self.query = Some(q);
        self
    }
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.append(k, http::HeaderValue::from_static(v));
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    fn on<'e>(&self, m: &'e mesh_policy::Evaluator) -> Option<RouteDecision<'e>> {
        m.route(&RouteRequest {
            client_namespace: self.client_ns,
            service_namespace: "shop",
            service_name: "api",
            port: self.port,
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            now: now(),
        })
    }
}

/// `route/rule`, or `-` when no route applies.
fn took(d: Option<RouteDecision<'_>>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{}/{}", d.route.name, d.rule))
}

const CANARY: &str = "  rules:\n    - backendRefs:\n        - {name: api-v1, port: 8080, weight: 90}\n        - {name: api-v2, port: 8080, weight: 10}\n      timeouts: {request: 2s, backendRequest: 500ms}\n      retry: {attempts: 3, codes: [503], backoff: 50ms}\n";

#[test]
fn a_canary_route_loads_with_its_backends_timeouts_and_retry() {
    let m = mesh(&route("shop", "canary", CANARY));
    let d = Req::get("/anything").on(&m).expect("the route applies");
    assert_eq!(
        d.backends,
        &[
            Backend {
                namespace: "shop".into(),
                name: "api-v1".into(),
                port: BackendPort::Number(8080),
                weight: 90,
                permitted: Permitted::Yes,
            },
            Backend {
                namespace: "shop".into(),
                name: "api-v2".into(),
                port: BackendPort::Number(8080),
                weight: 10,
                permitted: Permitted::Yes,
            },
        ]
    );
    assert_eq!(d.timeouts.request, Some(Duration::from_secs(2)));
    assert_eq!(d.timeouts.backend_request, Some(Duration::from_millis(500)));
    let retry = d.retry.expect("retry");
    assert_eq!(
        (retry.attempts, retry.codes.as_slice(), retry.backoff),
        (3, &[503][..], Duration::from_millis(50))
    );
    assert!(!d.method_named);
    // Another Service, or another port of this one, is not routed.
    assert_eq!(took(Req::get("/").port(9090).on(&m)), "-");
    assert!(!m.has_routes("shop", "other"));
}

#[test]
fn a_retry_without_codes_retries_unavailability_only() {
    let m = mesh(&route(
        "shop",
        "r",
        "  rules:\n    - backendRefs: [{name: api, port: 8080}]\n      retry: {}\n",
    ));
    let d = Req::get("/").on(&m).expect("route");
    let retry = d.retry.expect("retry");
    assert_eq!(retry.codes, mesh_policy::DEFAULT_RETRY_CODES.to_vec());
    assert_eq!(retry.attempts, 1);
    assert_eq!(retry.backoff, mesh_policy::DEFAULT_RETRY_BACKOFF);
}

/// Gateway API "Matching precedence": exact path, longest prefix, method,
/// most headers, most query parameters; then route name; then rule order.
#[test_case("/v1/users", "GET", None, &[], "r/0" ; "exact beats every prefix")]
#[test_case("/v1/users/7", "GET", None, &[], "r/1" ; "longest prefix wins")]
#[test_case("/v1/other", "GET", None, &[], "r/2" ; "shorter prefix")]
#[test_case("/v1", "GET", None, &[], "r/2" ; "a prefix matches its own path")]
#[test_case("/v10", "GET", None, &[], "r/5" ; "prefixes match whole segments")]
#[test_case("/v1/other", "POST", None, &[], "r/3" ; "a method match beats none at equal prefix")]
#[test_case("/x", "GET", None, &[("x-canary", "yes")], "r/4" ; "a header match beats the catch-all")]
#[test_case("/x", "GET", Some("debug=1&a=b"), &[], "r/6" ; "a query match")]
#[test_case("/x", "GET", Some("debug=2"), &[], "r/5" ; "a query value must be equal")]
#[test_case("/x", "GET", None, &[("x-canary", "no")], "r/5" ; "a header value must be equal")]
fn match_precedence(
    path: &str,
    method: &str,
    query: Option<&str>,
    headers: &[(&'static str, &'static str)],
    expect: &str,
) {
    let rules = "  rules:
    - matches: [{path: {type: Exact, value: /v1/users}}]
      backendRefs: [{name: a, port: 1}]
    - matches: [{path: {type: PathPrefix, value: /v1/users/}}]
      backendRefs: [{name: a, port: 1}]
    - matches: [{path: {value: /v1}}]
      backendRefs: [{name: a, port: 1}]
    - matches: [{path: {value: /v1}, method: POST}]
      backendRefs: [{name: a, port: 1}]
    - matches: [{headers: [{name: X-Canary, value: 'yes'}]}]
      backendRefs: [{name: a, port: 1}]
    - backendRefs: [{name: a, port: 1}]
    - matches: [{queryParams: [{name: debug, value: '1'}]}]
      backendRefs: [{name: a, port: 1}]
";
    let m = mesh(&route("shop", "r", rules));
    let mut r = Req::get(path).method(method);
    if let Some(q) = query {
        r = r.query(q);
    }
    for (k, v) in headers {
        r = r.header(k, v);
    }
    assert_eq!(took(r.on(&m)), expect);
}

#[test]
fn a_method_match_is_reported_for_retries() {
    let m = mesh(&route(
        "shop",
        "r",
        "  rules:\n    - matches: [{method: POST}]\n      backendRefs: [{name: a, port: 1}]\n      retry: {attempts: 2}\n",
    ));
    let d = Req::get("/").method("POST").on(&m).expect("route");
    assert!(d.method_named);
    assert_eq!(took(Req::get("/").on(&m)), "-");
}

#[test]
fn equal_matches_go_to_the_first_route_by_name() {
    let all = "  rules:\n    - backendRefs: [{name: a, port: 1}]\n";
    let m = mesh(&(route("shop", "b-route", all) + &route("shop", "a-route", all)));
    assert_eq!(took(Req::get("/").on(&m)), "a-route/0");
}

/// GAMMA: a consumer route (in the client's namespace) overrides the
/// producer's for that namespace's clients only.
#[test]
fn consumer_routes_apply_to_their_namespace_only() {
    let all = "  rules:\n    - backendRefs: [{name: a, namespace: shop, port: 1}]\n";
    let consumer = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: mine\n  namespace: web\nspec:\n  parentRefs:\n    - {{kind: Service, group: \"\", name: api, namespace: shop}}\n{all}"
    );
    let m = mesh(&(route("shop", "producer", all) + &consumer));
    assert_eq!(took(Req::get("/").client_in("web").on(&m)), "mine/0");
    assert_eq!(
        took(Req::get("/").client_in("billing").on(&m)),
        "producer/0"
    );
    assert_eq!(took(Req::get("/").client_in("shop").on(&m)), "producer/0");
}

#[test]
fn dry_run_and_expired_routes_do_not_apply() {
    let all = "  rules:\n    - backendRefs: [{name: a, port: 1}]\n";
    let dry = route("shop", "dry", all).replace(
        "  namespace: shop\n",
        "  namespace: shop\n  annotations: {palisade.dev/dry-run: \"true\"}\n",
    );
    let expired = route("shop", "old", all).replace(
        "  namespace: shop\n",
        "  namespace: shop\n  annotations: {palisade.dev/expires-at: \"2029-12-31T00:00:00Z\"}\n",
    );
    let m = mesh(&(dry + &expired));
    assert_eq!(took(Req::get("/").on(&m)), "-");
}

#[test_case("  rules:\n    - backendRefs: [{name: a}]\n", "spec.rules[0].backendRefs[0].port", "required" ; "backend without port")]
#[test_case("  rules:\n    - backendRefs: [{name: a, port: 1, kind: Pod}]\n", "spec.rules[0].backendRefs[0].kind", "Service" ; "backend not a service")]
#[test_case("  rules:\n    - timeouts: {request: '10'}\n", "spec.rules[0].timeouts.request", "not a duration" ; "duration without unit")]
#[test_case("  rules:\n    - timeouts: {request: 1s, backendRequest: 2s}\n", "spec.rules[0].timeouts.backendRequest", "longer" ; "per try longer than request")]
#[test_case("  rules:\n    - retry: {codes: [200]}\n", "spec.rules[0].retry.codes[0]", "400-599" ; "retry on success")]
#[test_case("  rules:\n    - retry: {attempts: 50}\n", "spec.rules[0].retry.attempts", "at most" ; "too many attempts")]
#[test_case("  rules:\n    - matches: [{path: {type: RegularExpression, value: /a.*}}]\n", "spec.rules[0].matches[0].path.type", "not supported" ; "regex path")]
#[test_case("  rules:\n    - matches: [{path: {value: v1}}]\n", "spec.rules[0].matches[0].path.value", "start with /" ; "relative path")]
#[test_case("  rules:\n    - matches: [{method: FETCH}]\n", "spec.rules[0].matches[0].method", "not an HTTP method" ; "unknown method")]
#[test_case("  rules:\n    - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-palisade-peer-identity, value: x}]}}]\n", "spec.rules[0].filters[0].requestHeaderModifier.set[0].name", "may not be set" ; "forged identity header")]
#[test_case("  rules:\n    - filters: [{type: URLRewrite, urlRewrite: {}}]\n", "spec.rules[0].filters[0].type", "not supported" ; "unsupported filter")]
#[test_case("  hostnames: [api.example.com]\n", "spec.hostnames", "GAMMA" ; "hostnames on a service parent")]
#[test_case("  rules:\n    - backendRef: [{name: a, port: 1}]\n", "spec.rules[0]", "unknown field" ; "misspelt field")]
fn bad_routes_are_refused_naming_the_field(spec: &str, field: &str, message: &str) {
    let err = parse_yaml("routes.yaml", &route("shop", "bad", spec))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("routes.yaml"), "{err}");
    assert!(err.contains("HTTPRoute shop/bad"), "{err}");
    assert!(err.contains(field), "{err}");
    assert!(err.contains(message), "{err}");
}

/// A parent that is neither a Service (mesh) nor a Gateway (the ingress,
/// tests/edge.rs) is refused.
#[test]
fn a_parent_of_another_kind_is_refused() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{kind: ServiceImport, group: multicluster.x-k8s.io, name: api}]\n";
    let err = parse_yaml("r.yaml", yaml).expect_err("refused").to_string();
    assert!(err.contains("spec.parentRefs[0].kind"), "{err}");
}

#[test]
fn routes_travel_in_snapshots_to_clients() {
    let loaded = parse_yaml("r.yaml", &route("shop", "canary", CANARY)).expect("loads");
    let json = loaded.snapshot.to_json();
    let back = Snapshot::from_json(&json).expect("round trip");
    assert_eq!(back, loaded.snapshot);
    // A producer route goes to clients in every namespace.
    let labels = Default::default();
    assert_eq!(back.for_workload("web", &labels).objects.len(), 1);
}
