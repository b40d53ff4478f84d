use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// 2029-12-31T00:00:00Z and 2030-01-02T00:00:00Z: either side of the
/// fixtures' expiry, 2030-01-01T00:00:00Z.
const BEFORE_EXPIRY: u64 = 1_893_369_600;
const AFTER_EXPIRY: u64 = 1_893_542_400;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn labels(text: &str) -> Labels {
    crate::policy::parse_labels(text).unwrap()
}

/// An mTLS call from `ns/sa` to a pod of `shop` labelled `app=api`, port 8080.
fn call_from(namespace: &str, service_account: &str) -> Call {
    Call {
        caller: Caller::Mtls {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        },
        from_labels: None,
        source_ip: None,
        to_namespace: "shop".to_owned(),
        to_labels: labels("app=api"),
        to_ip: None,
        port: 8080,
        http: None,
        service: None,
    }
}

fn http(mut call: Call, method: &str, path: &str) -> Call {
    call.http = Some(HttpCall {
        method: method.to_owned(),
        path: path.to_owned(),
        ..HttpCall::default()
    });
    call
}

fn plaintext() -> Call {
    Call {
        caller: Caller::Plaintext { namespace: None },
        ..call_from("x", "x")
    }
}

/// Writes `yaml` as the only file of a fresh folder and checks `call` there.
fn ask_at(yaml: &str, call: &Call, trust_domain: &str, now: SystemTime) -> CheckReport {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), yaml).unwrap();
    let (report, warnings) = check_dir(dir.path(), trust_domain, call, now).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    report
}

fn ask(yaml: &str, call: &Call) -> CheckReport {
    ask_at(yaml, call, "cluster.local", at(BEFORE_EXPIRY))
}

/// `(decision, decided_by, stage)`, what most rows assert.
type Short<'a> = (&'a str, &'a str, &'a str);

fn short(r: &CheckReport) -> Short<'_> {
    (r.decision, r.decided_by.as_str(), r.stage)
}

const ALLOW_WEB: &str = r#"
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: api-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/shop/sa/web"]}
"#;

const DENY_WEB: &str = r#"
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: deny-web, namespace: shop}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/shop/sa/web"]}
"#;

const ALLOW_ALL: &str = r#"
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: shop}
spec:
  rules: [{}]
"#;

const DEFAULT_DENY: &str = r#"
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: default-deny, namespace: shop}
spec: {}
"#;

const HTTP_ALLOW: &str = r#"
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: api-http, namespace: shop}
spec:
  rules:
  - to:
    - operation: {methods: ["GET"], paths: ["/api/*"]}
  - to:
    - operation: {methods: ["POST"], paths: ["/api/orders"]}
    when:
    - key: request.headers[x-tenant]
      values: ["acme"]
"#;

const DENY_ADMIN: &str = r#"
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin", "/admin/*"]}
"#;

fn join(parts: &[&str]) -> String {
    parts.join("\n---\n")
}

#[test]
fn identity_rules() {
    let cases: [(&str, String, Call, Short); 5] = [
        (
            // Istio: no ALLOW policy for the workload ⇒ allow.
            "nothing applies",
            String::new(),
            call_from("shop", "web"),
            ("allow", "default allow", "AuthorizationPolicy"),
        ),
        (
            // Istio: an ALLOW rule matching the principal allows.
            "allowed service account",
            ALLOW_WEB.to_owned(),
            call_from("shop", "web"),
            (
                "allow",
                "AuthorizationPolicy shop/api-from-web rule 0",
                "AuthorizationPolicy",
            ),
        ),
        (
            // Istio: ALLOW policies apply and none matches ⇒ deny.
            "other service account",
            ALLOW_WEB.to_owned(),
            call_from("shop", "db"),
            ("deny", "default deny", "AuthorizationPolicy"),
        ),
        (
            // Istio: `spec: {}` with ALLOW allows nothing.
            "namespace default deny",
            DEFAULT_DENY.to_owned(),
            call_from("shop", "web"),
            ("deny", "default deny", "AuthorizationPolicy"),
        ),
        (
            // Istio: DENY policies are evaluated before ALLOW policies.
            "DENY before ALLOW",
            join(&[ALLOW_ALL, DENY_WEB]),
            call_from("shop", "web"),
            (
                "deny",
                "AuthorizationPolicy shop/deny-web rule 0",
                "AuthorizationPolicy",
            ),
        ),
    ];
    for (name, yaml, call, expected) in cases {
        let report = ask(&yaml, &call);
        assert_eq!(short(&report), expected, "{name}");
        assert_eq!(report.direction, "inbound", "{name}");
        assert_eq!(
            report.principal.as_deref(),
            Some(format!(
                "spiffe://cluster.local/ns/shop/sa/{}",
                match &call.caller {
                    Caller::Mtls {
                        service_account, ..
                    } => service_account.as_str(),
                    Caller::Plaintext { .. } => unreachable!(),
                }
            ))
            .as_deref(),
            "{name}"
        );
        // TCP: no path, and no HTTP status.
        assert_eq!((report.path.as_deref(), report.status), (None, None));
    }
}

#[test]
fn dry_run_reports_without_enforcing() {
    let dry = DENY_WEB.replace(
        "name: deny-web, namespace: shop}",
        "name: deny-web, namespace: shop, annotations: {palisade.dev/dry-run: \"true\"}}",
    );
    let report = ask(&dry, &call_from("shop", "web"));
    // Dry run: the object is evaluated and reported, never enforced.
    assert_eq!(
        short(&report),
        ("allow", "default allow", "AuthorizationPolicy")
    );
    assert!(report.is_allowed());
    assert_eq!(report.label, "dry_run_deny");
    assert_eq!(
        report.dry_run,
        Some(DryRun {
            decision: "deny",
            stage: "AuthorizationPolicy",
            decided_by: "AuthorizationPolicy shop/deny-web rule 0".to_owned(),
        })
    );
    let table = report.to_table();
    assert!(
        table.starts_with(
            "allow: default allow (dry run would deny: AuthorizationPolicy shop/deny-web rule 0)\n"
        ),
        "{table}"
    );
    assert!(table.contains("\n  dry run: would deny: "), "{table}");
}

#[test]
fn exceptions_stop_at_their_expiry() {
    let exception = ALLOW_WEB.replace(
        "name: api-from-web, namespace: shop}",
        "name: api-from-web, namespace: shop, \
         annotations: {palisade.dev/expires-at: \"2030-01-01T00:00:00Z\"}}",
    );
    let yaml = join(&[DEFAULT_DENY, &exception]);
    let call = call_from("shop", "web");
    // expires-at: the object applies until that instant, and not after it.
    let before = ask_at(&yaml, &call, "cluster.local", at(BEFORE_EXPIRY));
    assert_eq!(
        before.decided_by,
        "AuthorizationPolicy shop/api-from-web rule 0"
    );
    let after = ask_at(&yaml, &call, "cluster.local", at(AFTER_EXPIRY));
    assert_eq!(
        short(&after),
        ("deny", "default deny", "AuthorizationPolicy")
    );
}

#[test]
fn http_rules_match_the_normalized_request() {
    let yaml = &join(&[HTTP_ALLOW, DENY_ADMIN]);
    let web = || call_from("shop", "web");
    let tenant = |mut call: Call, value: &str| {
        if let Some(h) = call.http.as_mut() {
            h.headers.push(("X-Tenant".to_owned(), value.to_owned()));
        }
        call
    };
    let cases: [(&str, Call, Short, Option<u16>); 7] = [
        (
            "GET under the prefix",
            http(web(), "GET", "/api/orders"),
            (
                "allow",
                "AuthorizationPolicy shop/api-http rule 0",
                "AuthorizationPolicy",
            ),
            None,
        ),
        (
            // Methods are case-sensitive, as in Istio.
            "method not listed",
            http(web(), "DELETE", "/api/orders"),
            ("deny", "default deny", "AuthorizationPolicy"),
            Some(403),
        ),
        (
            // when: all conditions must hold; header names are case-insensitive.
            "POST with the header",
            tenant(http(web(), "POST", "/api/orders"), "acme"),
            (
                "allow",
                "AuthorizationPolicy shop/api-http rule 1",
                "AuthorizationPolicy",
            ),
            None,
        ),
        (
            "POST with another header value",
            tenant(http(web(), "POST", "/api/orders"), "evil"),
            ("deny", "default deny", "AuthorizationPolicy"),
            Some(403),
        ),
        (
            // The path is normalized before matching: `..` cannot bypass the DENY.
            "dot-dot into a denied path",
            http(web(), "GET", "/api/../admin/users"),
            (
                "deny",
                "AuthorizationPolicy shop/deny-admin rule 0",
                "AuthorizationPolicy",
            ),
            Some(403),
        ),
        (
            // An encoded slash is refused (400) before any policy is asked.
            "encoded slash",
            http(web(), "GET", "/api%2Forders"),
            (
                "deny",
                "request path \"/api%2Forders\" refused: encoded slash (%2F)",
                "request",
            ),
            Some(400),
        ),
        (
            // Istio: on TCP a DENY rule ignores HTTP-only fields, so one with
            // only paths matches all TCP traffic.
            "TCP hits the DENY with only paths",
            Call {
                port: 9000,
                ..web()
            },
            (
                "deny",
                "AuthorizationPolicy shop/deny-admin rule 0",
                "AuthorizationPolicy",
            ),
            None,
        ),
    ];
    for (name, call, expected, status) in cases {
        let report = ask(yaml, &call);
        assert_eq!(short(&report), expected, "{name}");
        assert_eq!(report.status, status, "{name}");
    }
    // Istio: on TCP an ALLOW rule with HTTP-only fields never matches.
    let report = ask(HTTP_ALLOW, &web());
    assert_eq!(
        short(&report),
        ("deny", "default deny", "AuthorizationPolicy")
    );
    let normalized = ask(yaml, &http(web(), "GET", "/api//v1/./orders?x=1"));
    assert_eq!(normalized.path.as_deref(), Some("/api/v1/orders"));
    assert!(
        normalized
            .to_table()
            .contains("\n  path:    /api/v1/orders\n")
    );
}

#[test]
fn cluster_local_is_an_alias_of_the_trust_domain() {
    let other_domain = ALLOW_WEB.replace(
        "principals: [",
        "principals: [\"other.org/ns/shop/sa/db\", ",
    );
    let call = call_from("shop", "web");
    // `cluster.local` in a policy stands for the mesh's trust domain, as in Istio.
    let report = ask_at(ALLOW_WEB, &call, "example.org", at(BEFORE_EXPIRY));
    assert_eq!(
        report.decided_by,
        "AuthorizationPolicy shop/api-from-web rule 0"
    );
    assert_eq!(
        report.principal.as_deref(),
        Some("spiffe://example.org/ns/shop/sa/web")
    );
    // Another trust domain matches only callers of that trust domain.
    let db = call_from("shop", "db");
    let report = ask_at(&other_domain, &db, "example.org", at(BEFORE_EXPIRY));
    assert_eq!(
        short(&report),
        ("deny", "default deny", "AuthorizationPolicy")
    );
    let report = ask_at(&other_domain, &db, "other.org", at(BEFORE_EXPIRY));
    assert_eq!(
        report.decided_by,
        "AuthorizationPolicy shop/api-from-web rule 0"
    );
}

#[test]
fn plaintext_callers_and_peer_authentication() {
    let permissive = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: legacy, namespace: shop}
spec:
  mtls: {mode: PERMISSIVE}
"#;
    // Palisade's default is STRICT: a plaintext caller is refused.
    let report = ask("", &plaintext());
    assert_eq!(
        short(&report),
        ("deny", "default deny", "PeerAuthentication")
    );
    assert_eq!(report.principal, None);
    assert!(
        report
            .to_table()
            .contains("caller:  plaintext (no identity)")
    );
    // PERMISSIVE admits it, as an unauthenticated peer…
    let report = ask(permissive, &plaintext());
    assert_eq!(
        short(&report),
        ("allow", "default allow", "AuthorizationPolicy")
    );
    // …which identity-based ALLOW rules do not match.
    let report = ask(&join(&[permissive, ALLOW_WEB]), &plaintext());
    assert_eq!(
        short(&report),
        ("deny", "default deny", "AuthorizationPolicy")
    );
}

#[test]
fn network_policy_on_both_sides() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: db}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports:
    - port: 8080
"#;
    let with_labels = |l: &str| Call {
        from_labels: Some(labels(l)),
        ..http(call_from("shop", "web"), "GET", "/")
    };
    // Kubernetes: a connection needs the source's egress to allow it; the
    // source's proxy refuses it (no HTTP status).
    let report = ask(yaml, &with_labels("app=web"));
    assert_eq!(
        short(&report),
        ("deny", "NetworkPolicy shop/web-egress", "NetworkPolicy")
    );
    assert_eq!((report.direction, report.status), ("outbound", None));
    assert!(
        report
            .to_table()
            .contains("(outbound, at the source's proxy)")
    );
    // …and the destination's ingress: a pod the ingress rule does not select.
    let report = ask(yaml, &with_labels("app=batch"));
    assert_eq!(
        short(&report),
        ("deny", "NetworkPolicy shop/api-ingress", "NetworkPolicy")
    );
    assert_eq!((report.direction, report.status), ("inbound", Some(403)));
    // Without source labels only selectors that select every pod match it.
    let report = ask(yaml, &http(call_from("shop", "web"), "GET", "/"));
    assert_eq!(report.decided_by, "NetworkPolicy shop/api-ingress");
}

#[test]
fn audit_matches_are_reported() {
    let audit = r#"
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: audit-web, namespace: shop}
spec:
  action: AUDIT
  rules:
  - from:
    - source: {namespaces: ["shop"]}
"#;
    let report = ask(audit, &call_from("shop", "web"));
    assert!(report.is_allowed());
    assert_eq!(
        report.audit.as_deref(),
        Some("AuthorizationPolicy shop/audit-web rule 0")
    );
    assert!(
        report
            .to_table()
            .contains("\n  audit:   AuthorizationPolicy shop/audit-web rule 0\n")
    );
}

#[test]
fn json_has_the_contract_fields() {
    let report = ask(ALLOW_WEB, &http(call_from("shop", "web"), "GET", "/x"));
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["label"], "allow");
    assert_eq!(
        v["decided_by"],
        "AuthorizationPolicy shop/api-from-web rule 0"
    );
    assert_eq!(v["stage"], "AuthorizationPolicy");
    assert_eq!(v["direction"], "inbound");
    assert_eq!(v["dry_run"], serde_json::Value::Null);
    assert_eq!(v["audit"], serde_json::Value::Null);
    assert_eq!(v["principal"], "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(v["path"], "/x");
    assert_eq!(v["status"], serde_json::Value::Null);
}

#[test]
fn a_broken_folder_names_the_file_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = ALLOW_WEB.replace(
        "rules:",
        "rules:\n  - to: [{operation: {ports: [\"abc\"]}}]",
    );
    std::fs::write(dir.path().join("api.yaml"), bad).unwrap();
    let err = check_dir(
        dir.path(),
        "cluster.local",
        &call_from("shop", "web"),
        SystemTime::now(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("does not load (1 problem)"), "{err}");
    assert!(err.contains("api.yaml"), "{err}");
    assert!(
        err.contains("AuthorizationPolicy shop/api-from-web"),
        "{err}"
    );
    assert!(
        err.contains("spec.rules[0].to[0].operation.ports[0]"),
        "{err}"
    );

    let missing = dir.path().join("nope");
    let err = check_dir(
        &missing,
        "cluster.local",
        &call_from("shop", "web"),
        SystemTime::now(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn bad_calls_are_refused_before_loading() {
    // The folder does not exist: the call's own problem must be the one reported.
    let dir = std::path::Path::new("/nonexistent/policy");
    let cases: [(&str, Call, &str, &str); 5] = [
        (
            "bad trust domain",
            call_from("shop", "web"),
            "Example.ORG",
            "--trust-domain",
        ),
        (
            "slash in namespace",
            call_from("a/b", "web"),
            "cluster.local",
            "--from-namespace",
        ),
        (
            "empty service account",
            call_from("shop", ""),
            "cluster.local",
            "--from-service-account",
        ),
        (
            "labels without namespace",
            Call {
                from_labels: Some(labels("app=web")),
                ..plaintext()
            },
            "cluster.local",
            "--from-namespace",
        ),
        (
            "method with a space",
            http(call_from("shop", "web"), "GE T", "/"),
            "cluster.local",
            "--method",
        ),
    ];
    for (name, call, td, needle) in cases {
        let err = check_dir(dir, td, &call, SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{name}: {err}");
    }
}

const ROUTE_AND_LIMIT: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: canary, namespace: shop}
spec:
  parentRefs: [{kind: Service, group: \"\", name: api, port: 80}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /orders}}]
      backendRefs:
        - {name: api-v1, port: 80, weight: 90}
        - {name: api-v2, port: 80, weight: 10}
      timeouts: {request: 2s, backendRequest: 500ms}
      retry: {attempts: 3, codes: [503], backoff: 10ms}
---
apiVersion: policy.palisade.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: api-limit, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  total: {requestsPerSecond: 100, burst: 20}
  perClient: {requestsPerSecond: 10}
  overrides:
  - namespaces: [ops]
    requestsPerSecond: 50
";

// With --to-service, the route the request takes, its backends, timeouts
// and retry (and whether its method may be retried); and the rate limits
// at the destination, with the caller's own limit.
#[test]
fn a_request_shows_its_route_and_rate_limits() {
    let mut call = http(call_from("shop", "web"), "GET", "/orders/7");
    call.service = Some(("api".into(), 80));
    let report = ask(ROUTE_AND_LIMIT, &call);
    assert!(report.is_allowed());
    let route = report.route.clone().flatten().expect("a route");
    assert_eq!(route.name, "HTTPRoute shop/canary rule 0");
    assert_eq!(
        route
            .backends
            .iter()
            .map(|b| (b.service.as_str(), b.weight))
            .collect::<Vec<_>>(),
        [("shop/api-v1", 90), ("shop/api-v2", 10)]
    );
    assert_eq!(
        (route.request_timeout_ms, route.backend_request_timeout_ms),
        (Some(2000), Some(500))
    );
    assert!(
        route
            .retry
            .as_ref()
            .is_some_and(|r| r.attempts == 3 && r.applies)
    );
    assert_eq!(report.rate_limits.len(), 1);
    let l = &report.rate_limits[0];
    assert_eq!(l.policy, "RateLimitPolicy shop/api-limit");
    assert_eq!(
        l.total.map(|t| (t.requests_per_second, t.burst)),
        Some((100, 20))
    );
    assert_eq!(
        l.per_client.map(|t| (t.requests_per_second, t.burst)),
        Some((10, 10))
    );
    let table = report.to_table();
    assert!(table.contains("route:   HTTPRoute shop/canary rule 0 -> shop/api-v1:80 (weight 90), shop/api-v2:80 (weight 10); timeouts.request 2000ms; timeouts.backendRequest 500ms; retry 3 attempts on [503], backoff 10ms\n"), "{table}");
    assert!(table.contains("limit:   RateLimitPolicy shop/api-limit: total 100/s burst 20, per client 10/s burst 10\n"), "{table}");
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(v["route"]["name"], "HTTPRoute shop/canary rule 0");
    assert_eq!(v["rate_limits"][0]["override"], serde_json::Value::Null);

    // A POST is not retried (the match does not name it); the override
    // gives a caller from ops its own limit.
    let mut post = http(call_from("ops", "tool"), "POST", "/orders");
    post.service = Some(("api".into(), 80));
    let report = ask(ROUTE_AND_LIMIT, &post);
    let route = report.route.clone().flatten().expect("a route");
    assert!(route.retry.as_ref().is_some_and(|r| !r.applies));
    assert!(report.to_table().contains("(not for this method)"));
    assert_eq!(
        report.rate_limits[0]
            .per_client
            .map(|q| q.requests_per_second),
        Some(50)
    );
    assert_eq!(report.rate_limits[0].by_override, Some(0));

    // Another path takes no route: Palisade's defaults.
    let mut other = http(call_from("shop", "web"), "GET", "/health");
    other.service = Some(("api".into(), 80));
    let report = ask(ROUTE_AND_LIMIT, &other);
    assert_eq!(report.route, Some(None));
    assert!(
        report
            .to_table()
            .contains("route:   none (the Service's endpoints")
    );
    // TCP and calls without --to-service say nothing of routes or limits.
    let report = ask(ROUTE_AND_LIMIT, &call_from("shop", "web"));
    assert_eq!((report.route.clone(), report.rate_limits.len()), (None, 0));
    assert!(!report.to_json().contains("rate_limits"));
}
