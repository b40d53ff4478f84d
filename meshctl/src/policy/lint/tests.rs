use std::time::UNIX_EPOCH;

use super::*;

/// 2029-12-31T00:00:00Z.
const NOW: u64 = 1_893_369_600;
const DAY: u64 = 86_400;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn lint_yaml(yaml: &str) -> LintReport {
    let loaded = mesh_policy::parse_yaml("test.yaml", yaml).unwrap();
    lint(&loaded, &BTreeMap::new(), at(NOW), DEFAULT_SOON)
}

/// `(severity, code, object)` of every finding, in report order.
fn found(report: &LintReport) -> Vec<(Severity, &str, &str)> {
    report
        .findings
        .iter()
        .map(|f| (f.severity, f.code, f.object.as_str()))
        .collect()
}

/// The findings about `object`, as `(severity, code)`.
fn about<'a>(report: &'a LintReport, object: &str) -> Vec<(Severity, &'a str)> {
    report
        .findings
        .iter()
        .filter(|f| f.object == object)
        .map(|f| (f.severity, f.code))
        .collect()
}

fn message<'a>(report: &'a LintReport, object: &str, code: &str) -> &'a str {
    report
        .findings
        .iter()
        .find(|f| f.object == object && f.code == code)
        .map(|f| f.message.as_str())
        .unwrap_or_else(|| panic!("no {code} for {object}: {:?}", found(report)))
}

/// Default deny and restricted egress for `shop`: the baseline every case
/// adds one object to, so each case sees only its own finding.
const CLEAN: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: default-deny, namespace: shop}
spec: {}
---
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: api-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/shop/sa/web"]}
    to:
    - operation: {ports: ["8080"]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  egress:
  - to:
    - podSelector: {}
    ports:
    - port: 8080
  - to:
    - ipBlock: {cidr: 10.96.0.10/32}
    ports:
    - {port: 53, protocol: UDP}
"#;

fn with(extra: &str) -> String {
    format!("{CLEAN}\n---\n{extra}")
}

#[test]
fn a_clean_folder_has_no_findings() {
    let report = lint_yaml(CLEAN);
    assert_eq!(found(&report), []);
    assert!(!report.failed());
    assert_eq!(report.to_table(), "no findings\n");
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(v["findings"], serde_json::json!([]));
    assert_eq!(v["failed"], false);
    assert_eq!(v["summary"]["warning"], 0);
}

#[test]
fn rules_that_allow_everything() {
    let cases = [
        (
            "rules: [{}]",
            "kind: AuthorizationPolicy\nmetadata: {name: open, namespace: shop}\n\
             spec: {rules: [{}]}",
            "AuthorizationPolicy shop/open",
            Severity::Warning,
            "rule 0 has no from, to or when: it allows every request, to every workload of \
             namespace shop",
        ),
        (
            "any principal",
            "kind: AuthorizationPolicy\nmetadata: {name: any, namespace: shop}\nspec:\n  \
             selector: {matchLabels: {app: api}}\n  rules:\n  - from: \
             [{source: {principals: [\"cluster.local/ns/shop/sa/web\"]}}]\n  - from: \
             [{source: {principals: [\"*\"]}}]",
            "AuthorizationPolicy shop/any",
            Severity::Warning,
            "rule 1 allows any caller (its sources only hold wildcards) with any request, to \
             the workloads it selects in namespace shop",
        ),
        (
            "any address",
            "kind: AuthorizationPolicy\nmetadata: {name: anywhere, namespace: shop}\nspec:\n  \
             rules:\n  - from: [{source: {ipBlocks: [\"0.0.0.0/0\"], namespaces: [\"*\"]}}]",
            "AuthorizationPolicy shop/anywhere",
            Severity::Warning,
            "rule 0 allows any caller (its sources only hold wildcards) with any request, to \
             every workload of namespace shop",
        ),
        (
            // Mesh-wide: the root namespace without a selector opens everything.
            "mesh-wide",
            "kind: AuthorizationPolicy\nmetadata: {name: open, namespace: mesh-system}\n\
             spec: {rules: [{}]}",
            "AuthorizationPolicy mesh-system/open",
            Severity::Error,
            "rule 0 has no from, to or when: it allows every request, to every workload of \
             the mesh",
        ),
    ];
    for (name, yaml, object, severity, expected) in cases {
        let yaml = format!("apiVersion: security.palisade.dev/v1\n{yaml}");
        let report = lint_yaml(&with(&yaml));
        assert_eq!(about(&report, object), [(severity, "allow-all")], "{name}");
        assert_eq!(message(&report, object, "allow-all"), expected, "{name}");
        assert!(report.failed(), "{name}");
    }

    // Not reported: limited by `to` or `when`, a narrowing not-field, or
    // another action.
    for yaml in [
        "metadata: {name: port, namespace: shop}\nspec: {rules: [{to: [{operation: {ports: [\"80\"]}}]}]}",
        "metadata: {name: when, namespace: shop}\nspec: {rules: [{when: [{key: source.ip, values: [\"10.0.0.1\"]}]}]}",
        "metadata: {name: not, namespace: shop}\nspec: {rules: [{from: [{source: {principals: [\"*\"], notNamespaces: [\"dev\"]}}]}]}",
        "metadata: {name: deny, namespace: shop}\nspec: {action: DENY, rules: [{}]}",
    ] {
        let yaml =
            format!("apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n{yaml}");
        assert_eq!(found(&lint_yaml(&with(&yaml))), [], "{yaml}");
    }

    // NetworkPolicy: an ingress rule `{}` admits everything.
    let open = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                metadata: {name: open, namespace: shop}\n\
                spec: {podSelector: {matchLabels: {app: api}}, ingress: [{}]}";
    let report = lint_yaml(&with(open));
    assert_eq!(
        about(&report, "NetworkPolicy shop/open"),
        [(Severity::Warning, "allow-all")]
    );
}

#[test]
fn namespaces_without_a_default_deny() {
    let ns = |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}");
    let authz = |name: &str, namespace: &str, extra: &str| {
        format!(
            "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {name}, namespace: {namespace}{extra}}}\nspec: {{}}"
        )
    };
    let deny_all_ingress = |namespace: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: isolate, namespace: {namespace}}}\nspec: {{podSelector: {{}}}}"
        )
    };
    let scoped = "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
                  metadata: {name: api-only, namespace: billing}\n\
                  spec: {selector: {matchLabels: {app: api}}}";
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: billing}\n\
                   spec: {ports: [{port: 80}]}";
    let cases: [(&str, String, bool); 8] = [
        ("a Namespace object alone", ns("billing"), false),
        ("a Service alone", service.to_owned(), false),
        // Objects name namespaces too, with or without a Namespace object.
        (
            "ALLOW with a selector covers only its workloads",
            scoped.to_owned(),
            false,
        ),
        (
            "spec: {} in the namespace",
            authz("dd", "billing", ""),
            true,
        ),
        (
            "spec: {} in the root namespace covers every namespace",
            format!("{}\n---\n{}", ns("billing"), authz("dd", "mesh-system", "")),
            true,
        ),
        (
            "a NetworkPolicy isolating all pods for ingress",
            deny_all_ingress("billing"),
            true,
        ),
        (
            "a dry-run default deny enforces nothing",
            authz(
                "dd",
                "billing",
                ", annotations: {palisade.dev/dry-run: \"true\"}",
            ),
            false,
        ),
        (
            "an expired one neither",
            authz(
                "dd",
                "billing",
                ", annotations: {palisade.dev/expires-at: \"2020-01-01T00:00:00Z\"}",
            ),
            false,
        ),
    ];
    for (name, extra, has_default_deny) in cases {
        let report = lint_yaml(&with(&extra));
        let flagged =
            about(&report, "Namespace billing").contains(&(Severity::Warning, "no-default-deny"));
        assert_eq!(flagged, !has_default_deny, "{name}: {:?}", found(&report));
        // The baseline namespace stays clean.
        assert!(
            !about(&report, "Namespace shop").contains(&(Severity::Warning, "no-default-deny")),
            "{name}"
        );
    }
    let report = lint_yaml(&with(scoped));
    assert!(
        message(&report, "Namespace billing", "no-default-deny").ends_with(
            "(only the workloads selected by AuthorizationPolicy billing/api-only are default-deny)"
        )
    );
}

#[test]
fn expired_and_expiring_exceptions() {
    let exception = |name: &str, expires: &str| {
        format!(
            "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {name}, namespace: shop, annotations: \
             {{palisade.dev/expires-at: \"{expires}\"}}}}\nspec:\n  selector: {{matchLabels: \
             {{app: api}}}}\n  rules: [{{from: [{{source: {{namespaces: [\"ops\"]}}}}]}}]"
        )
    };
    // NOW is 2029-12-31T00:00:00Z.
    let yaml = [
        exception("gone", "2029-12-01T00:00:00Z"),
        exception("exactly-now", "2029-12-31T00:00:00Z"),
        exception("soon", "2030-01-03T12:00:00Z"),
        exception("later", "2030-02-01T00:00:00Z"),
    ]
    .join("\n---\n");
    let report = lint_yaml(&with(&yaml));
    assert_eq!(
        about(&report, "AuthorizationPolicy shop/gone"),
        [(Severity::Warning, "expired")]
    );
    assert_eq!(
        message(&report, "AuthorizationPolicy shop/gone", "expired"),
        "expired at 2029-12-01T00:00:00Z (30d ago) and no longer applies; delete it, or move \
         palisade.dev/expires-at if the exception is still needed"
    );
    // It applies while now < expires-at: at the instant itself it is over.
    assert_eq!(
        about(&report, "AuthorizationPolicy shop/exactly-now"),
        [(Severity::Warning, "expired")]
    );
    assert_eq!(
        about(&report, "AuthorizationPolicy shop/soon"),
        [(Severity::Info, "expires-soon")]
    );
    assert_eq!(
        message(&report, "AuthorizationPolicy shop/soon", "expires-soon"),
        "expires at 2030-01-03T12:00:00Z (in 3d12h); after that it no longer applies"
    );
    assert_eq!(about(&report, "AuthorizationPolicy shop/later"), []);
    // --soon widens the window.
    let loaded = mesh_policy::parse_yaml("t.yaml", &with(&yaml)).unwrap();
    let wide = lint(
        &loaded,
        &BTreeMap::new(),
        at(NOW),
        Duration::from_secs(40 * DAY),
    );
    assert_eq!(
        about(&wide, "AuthorizationPolicy shop/later"),
        [(Severity::Info, "expires-soon")]
    );
}

#[test]
fn dry_run_left_on() {
    let yaml = "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
                metadata: {name: trial, namespace: shop, annotations: {palisade.dev/dry-run: \"true\"}}\n\
                spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [shop]}}]}]}";
    let report = lint_yaml(&with(yaml));
    assert_eq!(
        about(&report, "AuthorizationPolicy shop/trial"),
        [(Severity::Warning, "dry-run")]
    );
    assert!(report.failed());
}

#[test]
fn unrestricted_egress() {
    let np = |name: &str, spec: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: {name}, namespace: shop}}\nspec: {spec}"
        )
    };
    let cases = [
        (
            "to 0.0.0.0/0 without except",
            np(
                "out",
                "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}]}]}",
            ),
            vec![(Severity::Warning, "unrestricted-egress")],
            "egress rule 0 allows any address (0.0.0.0/0 without except) on every port",
        ),
        (
            "no `to`, limited to a port",
            np("out", "{podSelector: {}, egress: [{ports: [{port: 443}]}]}"),
            vec![(Severity::Info, "unrestricted-egress")],
            "egress rule 0 allows every destination on ports 443/TCP",
        ),
        (
            "::/0 on a port range",
            np(
                "out",
                "{podSelector: {}, egress: [{to: [{ipBlock: {cidr: \"::/0\"}}], ports: [{port: 8000, endPort: 8100}]}]}",
            ),
            vec![(Severity::Info, "unrestricted-egress")],
            "egress rule 0 allows any address (::/0 without except) on ports 8000-8100/TCP",
        ),
    ];
    for (name, extra, expected, text) in cases {
        let report = lint_yaml(&with(&extra));
        assert_eq!(about(&report, "NetworkPolicy shop/out"), expected, "{name}");
        assert_eq!(
            message(&report, "NetworkPolicy shop/out", "unrestricted-egress"),
            text
        );
    }
    // With except, the rule is a deliberate carve-out: not reported.
    let carved = np(
        "out",
        "{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]}]}",
    );
    assert_eq!(found(&lint_yaml(&with(&carved))), []);

    // A namespace with no Egress NetworkPolicy at all.
    let other = "apiVersion: v1\nkind: Namespace\nmetadata: {name: billing}\n---\n\
                 apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
                 metadata: {name: dd, namespace: billing}\nspec: {}";
    let report = lint_yaml(&with(other));
    assert_eq!(
        about(&report, "Namespace billing"),
        [(Severity::Warning, "unrestricted-egress")]
    );
    // Egress policies that leave pods out: info.
    let partial = format!(
        "{other}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: api, namespace: billing}}\n\
         spec: {{podSelector: {{matchLabels: {{app: api}}}}, policyTypes: [Egress]}}"
    );
    let report = lint_yaml(&with(&partial));
    assert_eq!(
        about(&report, "Namespace billing"),
        [(Severity::Info, "unrestricted-egress")]
    );
}

#[test]
fn permissive_mtls() {
    let pa = |name: &str, annotations: &str, spec: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {{name: {name}, namespace: shop{annotations}}}\nspec: {spec}"
        )
    };
    let yaml = [
        pa("permissive", "", "{mtls: {mode: PERMISSIVE}}"),
        pa(
            "legacy-port",
            ", annotations: {palisade.dev/expires-at: \"2030-06-01T00:00:00Z\"}",
            "{selector: {matchLabels: {app: api}}, mtls: {mode: STRICT}, portLevelMtls: {9100: {mode: DISABLE}}}",
        ),
        pa("strict", "", "{mtls: {mode: STRICT}}"),
    ]
    .join("\n---\n");
    let report = lint_yaml(&with(&yaml));
    assert_eq!(
        about(&report, "PeerAuthentication shop/permissive"),
        [(Severity::Warning, "permissive-mtls")]
    );
    // A time-limited exception is the documented way to migrate: info.
    assert_eq!(
        about(&report, "PeerAuthentication shop/legacy-port"),
        [(Severity::Info, "permissive-mtls")]
    );
    assert_eq!(
        message(
            &report,
            "PeerAuthentication shop/legacy-port",
            "permissive-mtls"
        ),
        "port 9100 DISABLE admits plaintext callers (no identity, no encryption) until \
         2030-06-01T00:00:00Z"
    );
    assert_eq!(about(&report, "PeerAuthentication shop/strict"), []);
}

#[test]
fn report_order_and_rendering() {
    let yaml = "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
                metadata: {name: open, namespace: mesh-system}\nspec: {rules: [{}]}";
    let report = lint_yaml(&with(yaml));
    // Most severe first, then by object.
    assert_eq!(
        found(&report),
        [
            (
                Severity::Error,
                "allow-all",
                "AuthorizationPolicy mesh-system/open"
            ),
            // A policy that allows everything is no default deny.
            (
                Severity::Warning,
                "no-default-deny",
                "Namespace mesh-system"
            ),
            (
                Severity::Warning,
                "unrestricted-egress",
                "Namespace mesh-system"
            ),
        ]
    );
    let table = report.to_table();
    assert!(
        table.starts_with("error: AuthorizationPolicy mesh-system/open: rule 0 has no from"),
        "{table}"
    );
    assert!(
        table.contains(" [allow-all]\nwarning: Namespace mesh-system: "),
        "{table}"
    );
    assert!(
        table.ends_with("3 findings: 1 error, 2 warnings, 0 info\n"),
        "{table}"
    );
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(v["findings"][0]["severity"], "error");
    assert_eq!(v["findings"][0]["code"], "allow-all");
    assert_eq!(
        v["findings"][0]["object"],
        "AuthorizationPolicy mesh-system/open"
    );
    assert_eq!(v["findings"][0]["file"], serde_json::Value::Null);
    assert_eq!(
        v["summary"],
        serde_json::json!({"error": 1, "warning": 2, "info": 0})
    );
    assert_eq!(v["failed"], true);
}

#[test]
fn findings_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), CLEAN).unwrap();
    std::fs::write(
        dir.path().join("open.yaml"),
        "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: open, namespace: shop}\nspec: {rules: [{}]}\n",
    )
    .unwrap();
    let (report, warnings) = lint_dir(dir.path(), at(NOW), DEFAULT_SOON).unwrap();
    assert!(warnings.is_empty());
    let file = dir.path().join("open.yaml").display().to_string();
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].file.as_deref(), Some(file.as_str()));
    assert!(
        report.to_table().starts_with(&format!(
            "warning: {file}: AuthorizationPolicy shop/open: rule 0"
        )),
        "{}",
        report.to_table()
    );
}

#[test]
fn routes_whose_backends_cannot_serve() {
    let services = "
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{port: 8080}], selector: {app: api}}
---
apiVersion: v1
kind: Service
metadata: {name: api-v2, namespace: shop}
spec: {clusterIP: 10.96.0.11, ports: [{port: 8080}], selector: {app: api-v2}}
";
    let route = |name: &str, parent: &str, backends: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  parentRefs: [{{kind: Service, group: \"\", name: {parent}}}]\n  rules:\n    - backendRefs: {backends}\n"
        )
    };
    let yaml = format!(
        "{CLEAN}---{services}{}{}{}{}",
        route(
            "good",
            "api",
            "[{name: api, port: 8080, weight: 90}, {name: api-v2, port: 8080, weight: 10}]"
        ),
        route("typo", "api", "[{name: api-v3, port: 8080}]"),
        route("zero", "api", "[{name: api, port: 8080, weight: 0}]"),
        route("orphan", "gone", "[{name: api, port: 8080}]"),
    );
    let report = lint_yaml(&yaml);
    assert_eq!(about(&report, "HTTPRoute shop/good"), []);
    assert_eq!(
        about(&report, "HTTPRoute shop/typo"),
        [(Severity::Error, "unknown-backend")]
    );
    assert!(message(&report, "HTTPRoute shop/typo", "unknown-backend").contains("shop/api-v3"));
    assert_eq!(
        about(&report, "HTTPRoute shop/zero"),
        [(Severity::Error, "no-backend")]
    );
    assert_eq!(
        about(&report, "HTTPRoute shop/orphan"),
        [(Severity::Warning, "unknown-parent")]
    );
    assert!(report.failed());
}

#[test]
fn ingress_backends_that_cannot_serve() {
    let ingress = |name: &str, backend: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ingressClassName: palisade\n  defaultBackend: {{service: {backend}}}\n"
        )
    };
    let yaml = format!(
        "{CLEAN}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{clusterIP: 10.96.0.20, ports: [{{name: http, port: 80}}], selector: {{app: web}}}}\n{}{}{}{}",
        ingress("by-number", "{name: web, port: {number: 80}}"),
        ingress("by-name", "{name: web, port: {name: http}}"),
        ingress("bad-name", "{name: web, port: {name: grpc}}"),
        ingress("no-service", "{name: gone, port: {number: 80}}"),
    );
    let report = lint_yaml(&yaml);
    assert_eq!(about(&report, "Ingress shop/by-number"), []);
    assert_eq!(about(&report, "Ingress shop/by-name"), []);
    for (object, says) in [
        ("Ingress shop/bad-name", "no port named \"grpc\""),
        ("Ingress shop/no-service", "shop/gone does not exist"),
    ] {
        assert_eq!(
            about(&report, object),
            [(Severity::Error, "unknown-backend")]
        );
        assert!(message(&report, object, "unknown-backend").contains(says));
    }
}

#[test]
fn references_no_grant_allows() {
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: pay, namespace: shop}\nspec:\n  parentRefs: [{kind: Service, group: \"\", name: api}]\n  rules:\n    - backendRefs: [{name: payments, namespace: billing, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: payments, namespace: billing}\nspec: {clusterIP: 10.96.0.30, ports: [{port: 80}], selector: {app: payments}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec: {clusterIP: 10.96.0.31, ports: [{port: 80}], selector: {app: api}}\n";
    let grant = |to: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: shop-pays, namespace: billing}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}}]\n  to: [{to}]\n"
        )
    };
    let report = lint_yaml(&format!("{CLEAN}{route}"));
    assert_eq!(
        about(&report, "HTTPRoute shop/pay"),
        [(Severity::Error, "ref-not-permitted")]
    );
    assert!(
        message(&report, "HTTPRoute shop/pay", "ref-not-permitted")
            .contains("rule 0: Service billing/payments")
    );
    // A grant naming the Service clears it; one for every Service of the
    // namespace clears it too, with a warning that it is wider than needed.
    let named = lint_yaml(&format!(
        "{CLEAN}{route}{}",
        grant("{group: \"\", kind: Service, name: payments}")
    ));
    assert_eq!(about(&named, "HTTPRoute shop/pay"), []);
    assert_eq!(about(&named, "ReferenceGrant billing/shop-pays"), []);
    let wide = lint_yaml(&format!(
        "{CLEAN}{route}{}",
        grant("{group: \"\", kind: Service}")
    ));
    assert_eq!(about(&wide, "HTTPRoute shop/pay"), []);
    assert_eq!(
        about(&wide, "ReferenceGrant billing/shop-pays"),
        [(Severity::Warning, "wide-reference-grant")]
    );
}

/// A namespace with Authorization defaults but no egress restriction of
/// any kind, for the EgressPolicy cases.
const OPEN_EGRESS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: pay}
---
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: default-deny, namespace: pay}
spec: {}
"#;

fn egress_policy(name: &str, extra_meta: &str, spec: &str) -> String {
    format!(
        "{OPEN_EGRESS}\n---\napiVersion: policy.palisade.dev/v1alpha1\nkind: EgressPolicy\nmetadata:\n  name: {name}\n  namespace: pay\n{extra_meta}spec:\n{spec}\n"
    )
}

#[test]
fn egress_outside_the_mesh() {
    // Nothing restricts it: warned, naming both ways to restrict.
    let open = lint_yaml(OPEN_EGRESS);
    assert_eq!(
        about(&open, "Namespace pay"),
        [(Severity::Warning, "unrestricted-egress")]
    );
    assert!(message(&open, "Namespace pay", "unrestricted-egress").contains("EgressPolicy"));

    // A namespace-wide default deny governs it.
    let closed = lint_yaml(&egress_policy(
        "out",
        "",
        "  default: deny\n  allow:\n  - hosts: [api.stripe.com, \"*.stripe.com\"]\n    ports: [443]",
    ));
    assert_eq!(found(&closed), []);

    // One that selects some pods, or allows all by default, does not.
    for spec in [
        "  selector: {matchLabels: {app: a}}\n  default: deny",
        "  default: allow-all\n  allow:\n  - hosts: [api.stripe.com]",
    ] {
        let r = lint_yaml(&egress_policy("out", "", spec));
        assert_eq!(
            about(&r, "Namespace pay"),
            [(Severity::Warning, "unrestricted-egress")],
            "{spec}"
        );
    }

    // Wildcards over public suffixes, and every address.
    let wide = lint_yaml(&egress_policy(
        "wide",
        "",
        "  allow:\n  - hosts: [\"*.com\", \"*.co.uk\", \"*.amazonaws.com\", \"*.example.co.uk\"]\n  - cidrs: [0.0.0.0/0]",
    ));
    let codes: Vec<_> = about(&wide, "EgressPolicy pay/wide");
    assert_eq!(
        codes,
        [
            (Severity::Warning, "unrestricted-egress"),
            (Severity::Warning, "wide-egress-wildcard"),
            (Severity::Warning, "wide-egress-wildcard"),
            (Severity::Warning, "wide-egress-wildcard"),
        ]
    );
    let texts: Vec<&str> = wide
        .findings
        .iter()
        .filter(|f| f.code == "wide-egress-wildcard")
        .map(|f| f.message.as_str())
        .collect();
    assert!(texts.iter().any(|m| m.contains("\"*.co.uk\"")), "{texts:?}");
    assert!(
        !texts.iter().any(|m| m.contains("example.co.uk\" matches")),
        "{texts:?}"
    );
}

#[test]
fn a_dry_run_left_too_long() {
    let since = |days: u64| {
        format!(
            "  annotations: {{palisade.dev/dry-run-since: \"{}\"}}\n",
            rfc3339(at(NOW - days * DAY).into())
        )
    };
    let spec = "  mode: dry-run\n  default: deny\n  allow:\n  - hosts: [api.stripe.com]";
    let old = lint_yaml(&egress_policy("trial", &since(30), spec));
    let codes = about(&old, "EgressPolicy pay/trial");
    assert!(
        codes.contains(&(Severity::Warning, "old-dry-run")),
        "{codes:?}"
    );
    assert!(codes.contains(&(Severity::Warning, "dry-run")), "{codes:?}");
    assert!(message(&old, "EgressPolicy pay/trial", "old-dry-run").contains("in dry-run for 30d"));
    // A dry run does not restrict anything yet.
    assert!(about(&old, "Namespace pay").contains(&(Severity::Warning, "unrestricted-egress")));

    let fresh = lint_yaml(&egress_policy("trial", &since(3), spec));
    assert!(!about(&fresh, "EgressPolicy pay/trial").contains(&(Severity::Warning, "old-dry-run")));
    // From the API server: creationTimestamp.
    let created = format!(
        "  creationTimestamp: \"{}\"\n",
        rfc3339(at(NOW - 20 * DAY).into())
    );
    let api = lint_yaml(&egress_policy("trial", &created, spec));
    assert!(about(&api, "EgressPolicy pay/trial").contains(&(Severity::Warning, "old-dry-run")));
}
