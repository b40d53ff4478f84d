//! The edge: Gateway (Gateway API v1) listeners with HTTPRoutes attached by
//! parentRefs, Kubernetes Ingress (networking.k8s.io/v1) rules, and
//! kubernetes.io/tls Secrets: what loads, what is refused with the field
//! named, which rule a request at the ingress takes, and what reaches which
//! proxy.

#[path = "support/helpers.rs"]
mod support;

use mesh_policy::{EdgeRequest, Evaluator, Snapshot, parse_yaml};
use support::{labels, mesh, now};
use test_case::test_case;

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: mesh-system}
spec:
  gatewayClassName: palisade
  listeners:
    - name: shop
      hostname: shop.example
      port: 443
      protocol: HTTPS
      tls: {certificateRefs: [{name: shop-tls}]}
      allowedRoutes: {namespaces: {from: All}}
    - name: wild
      hostname: \"*.example.com\"
      port: 443
      protocol: HTTPS
      tls: {certificateRefs: [{kind: Secret, group: \"\", name: wild-tls}]}
      allowedRoutes:
        namespaces:
          from: Selector
          selector: {matchLabels: {edge: allowed}}
    - name: plain
      port: 80
      protocol: HTTP
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: blog, labels: {edge: allowed}}
---
";

fn route(namespace: &str, name: &str, parent: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  parentRefs: [{parent}]\n{spec}\n---\n"
    )
}

fn at(m: &Evaluator, port: u16, host: &str, path: &str) -> Option<String> {
    let headers = http::HeaderMap::new();
    m.edge_route(&EdgeRequest {
        port,
        ingress: port == 443,
        host,
        method: "GET",
        path,
        query: None,
        headers: &headers,
        now: now(),
    })
    .map(|d| {
        let backend = d
            .backends
            .first()
            .map(|b| format!("{}/{}:{}", b.namespace, b.name, b.port))
            .unwrap_or_default();
        format!("{} rule {} -> {backend}", d.route, d.rule)
    })
}

#[test]
fn routes_attach_to_listeners_by_parent_section_and_hostname() {
    let yaml = format!(
        "{GATEWAY}{}{}{}{}",
        route(
            "shop",
            "front",
            "{name: edge, namespace: mesh-system, sectionName: shop}",
            "  rules:\n    - backendRefs: [{name: frontend, port: 80}]\n    - matches: [{path: {type: PathPrefix, value: /api}}]\n      backendRefs: [{name: api, port: 8080}]"
        ),
        // Blog's namespace is selected by the wildcard listener.
        route(
            "blog",
            "blog",
            "{name: edge, namespace: mesh-system}",
            "  hostnames: [blog.example.com]\n  rules:\n    - backendRefs: [{name: blog, port: 80}]"
        ),
        // Shop's namespace is not: its route on the wildcard listener is
        // not attached.
        route(
            "shop",
            "sneaky",
            "{name: edge, namespace: mesh-system, sectionName: wild}",
            "  rules:\n    - backendRefs: [{name: frontend, port: 80}]"
        ),
        // A route for another Gateway.
        route(
            "shop",
            "other",
            "{name: internal, namespace: mesh-system}",
            "  rules:\n    - backendRefs: [{name: frontend, port: 80}]"
        ),
    );
    let m = mesh(&yaml);
    assert_eq!(
        at(&m, 443, "shop.example", "/"),
        Some("HTTPRoute shop/front rule 0 -> shop/frontend:80".into())
    );
    // The longest prefix wins inside a listener.
    assert_eq!(
        at(&m, 443, "shop.example", "/api/orders"),
        Some("HTTPRoute shop/front rule 1 -> shop/api:8080".into())
    );
    assert_eq!(
        at(&m, 443, "blog.example.com", "/post/1"),
        Some("HTTPRoute blog/blog rule 0 -> blog/blog:80".into())
    );
    // The wildcard listener takes other hosts, but no route of it names them.
    assert_eq!(at(&m, 443, "news.example.com", "/"), None);
    // No listener for the host; the wrong port; the HTTP listener only redirects.
    assert_eq!(at(&m, 443, "evil.example", "/"), None);
    assert_eq!(at(&m, 8443, "shop.example", "/"), None);
    assert_eq!(at(&m, 80, "shop.example", "/"), None);
}

#[test]
fn allowed_routes_default_to_the_gateways_own_namespace() {
    let gw = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: palisade
  listeners:
    - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}
---
";
    let yaml = format!(
        "{gw}{}{}",
        route(
            "shop",
            "mine",
            "{name: edge}",
            "  rules:\n    - matches: [{path: {type: Exact, value: /mine}}]\n      backendRefs: [{name: a, port: 80}]"
        ),
        route(
            "blog",
            "theirs",
            "{name: edge, namespace: shop}",
            "  rules:\n    - backendRefs: [{name: b, port: 80}]"
        ),
    );
    let m = mesh(&yaml);
    assert_eq!(
        at(&m, 443, "any.host", "/mine"),
        Some("HTTPRoute shop/mine rule 0 -> shop/a:80".into())
    );
    assert_eq!(at(&m, 443, "any.host", "/other"), None);
}

#[test]
fn the_most_specific_hostname_wins() {
    let yaml = format!(
        "{GATEWAY}{}{}",
        route(
            "blog",
            "wide",
            "{name: edge, namespace: mesh-system}",
            "  hostnames: [\"*.example.com\"]\n  rules:\n    - backendRefs: [{name: wide, port: 80}]"
        ),
        route(
            "blog",
            "narrow",
            "{name: edge, namespace: mesh-system}",
            "  hostnames: [api.example.com]\n  rules:\n    - backendRefs: [{name: narrow, port: 80}]"
        ),
    );
    let m = mesh(&yaml);
    assert_eq!(
        at(&m, 443, "api.example.com", "/"),
        Some("HTTPRoute blog/narrow rule 0 -> blog/narrow:80".into())
    );
    assert_eq!(
        at(&m, 443, "www.example.com", "/"),
        Some("HTTPRoute blog/wide rule 0 -> blog/wide:80".into())
    );
}

const INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  ingressClassName: palisade
  tls:
    - {hosts: [shop.example, \"*.shop.example\"], secretName: shop-tls}
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
    - host: shop.example
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: frontend, port: {number: 80}}}}
          - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
          - {path: /login, pathType: Exact, backend: {service: {name: auth, port: {number: 80}}}}
    - host: \"*.shop.example\"
      http:
        paths:
          - {path: /, pathType: ImplementationSpecific, backend: {service: {name: tenants, port: {number: 80}}}}
---
";

// A backend may name the Service port instead of numbering it; the proxy
// finds the port by that name in the Service it discovers.
#[test]
fn ingress_backends_by_port_name() {
    let m = mesh(&INGRESS.replacen("port: {number: 8080}", "port: {name: http}", 1));
    assert_eq!(
        at(&m, 443, "shop.example", "/api/x"),
        Some("Ingress shop/shop rule 1 -> shop/api:http".into())
    );
}

#[test]
fn ingress_rules_by_host_and_path_type() {
    let m = mesh(INGRESS);
    let shop = |path| at(&m, 443, "shop.example", path);
    assert_eq!(
        shop("/"),
        Some("Ingress shop/shop rule 0 -> shop/frontend:80".into())
    );
    assert_eq!(
        shop("/api/x"),
        Some("Ingress shop/shop rule 1 -> shop/api:8080".into())
    );
    // Prefix is element-wise: /apix is not under /api.
    assert_eq!(
        shop("/apix"),
        Some("Ingress shop/shop rule 0 -> shop/frontend:80".into())
    );
    assert_eq!(
        shop("/login"),
        Some("Ingress shop/shop rule 2 -> shop/auth:80".into())
    );
    assert_eq!(
        shop("/login/x"),
        Some("Ingress shop/shop rule 0 -> shop/frontend:80".into())
    );
    // An Ingress wildcard is one label.
    assert_eq!(
        at(&m, 443, "a.shop.example", "/"),
        Some("Ingress shop/shop rule 3 -> shop/tenants:80".into())
    );
    // No rule for the host: the default backend.
    assert_eq!(
        at(&m, 443, "a.b.shop.example", "/"),
        Some("Ingress shop/shop rule 4 -> shop/fallback:80".into())
    );
    assert_eq!(
        at(&m, 443, "other.example", "/x"),
        Some("Ingress shop/shop rule 4 -> shop/fallback:80".into())
    );
    // Ingresses are served on the --https-port only.
    assert_eq!(at(&m, 8443, "shop.example", "/"), None);
    let certs = m.edge_certificates(443, now());
    assert_eq!(certs.len(), 1);
    assert_eq!(
        certs[0].secret,
        ("shop".to_string(), "shop-tls".to_string())
    );
    assert!(certs[0].hosts.iter().any(|h| h.matches("x.shop.example")));
}

#[test]
fn other_classes_are_left_to_their_implementation() {
    let other = INGRESS.replace("ingressClassName: palisade", "ingressClassName: nginx");
    let gw = GATEWAY.replace("gatewayClassName: palisade", "gatewayClassName: istio");
    let loaded = parse_yaml("edge.yaml", &format!("{other}{gw}")).unwrap();
    assert!(
        !loaded.snapshot.objects.iter().any(|o| matches!(
            o.kind(),
            mesh_policy::resource::Kind::Gateway | mesh_policy::resource::Kind::Ingress
        )),
        "{:?}",
        loaded.snapshot.objects
    );
    assert_eq!(
        loaded
            .warnings
            .iter()
            .filter(|w| w.contains("left to its own implementation"))
            .count(),
        2,
        "{:?}",
        loaded.warnings
    );
    // The older annotation names the class too.
    let annotated = INGRESS
        .replace("  ingressClassName: palisade\n", "")
        .replace(
            "namespace: shop}",
            "namespace: shop, annotations: {kubernetes.io/ingress.class: palisade}}",
        );
    let m = mesh(&annotated);
    assert!(at(&m, 443, "shop.example", "/").is_some());
}

#[test_case("protocol: HTTPS", "protocol: TCP", "spec.listeners[0].protocol" ; "tcp listener")]
#[test_case("      tls: {certificateRefs: [{name: shop-tls}]}\n", "", "spec.listeners[0].tls" ; "https without tls")]
#[test_case("{name: shop-tls}", "{name: shop-tls, namespace: Other}", "spec.listeners[0].tls.certificateRefs[0].namespace" ; "bad secret namespace")]
#[test_case("{name: shop-tls}", "{name: shop-tls, kind: ConfigMap}", "spec.listeners[0].tls.certificateRefs[0].kind" ; "not a secret")]
#[test_case("tls: {certificateRefs", "tls: {mode: Passthrough, certificateRefs", "spec.listeners[0].tls.mode" ; "passthrough")]
#[test_case("hostname: shop.example", "hostname: 10.0.0.1", "spec.listeners[0].hostname" ; "ip hostname")]
#[test_case("namespaces: {from: All}", "namespaces: {from: Everywhere}", "spec.listeners[0].allowedRoutes.namespaces.from" ; "bad from")]
#[test_case("    - name: plain\n", "    - name: shop\n", "spec.listeners[2].name" ; "duplicate listener")]
fn bad_gateways_are_refused_with_the_field(from: &str, to: &str, field: &str) {
    let yaml = GATEWAY.replacen(from, to, 1);
    assert_ne!(yaml, GATEWAY, "the edit applies");
    let e = parse_yaml("edge.yaml", &yaml).unwrap_err().to_string();
    assert!(
        e.contains("edge.yaml") && e.contains("Gateway mesh-system/edge"),
        "{e}"
    );
    assert!(e.contains(field), "{field}: {e}");
}

#[test_case("{service: {name: api, port: {number: 8080}}}", "{resource: {kind: Bucket, name: b}}", "spec.rules[0].http.paths[1].backend.resource" ; "resource backend")]
#[test_case("port: {number: 8080}", "port: {name: Http_1}", "spec.rules[0].http.paths[1].backend.service.port.name" ; "bad port name")]
#[test_case("port: {number: 8080}", "port: {number: 8080, name: http}", "spec.rules[0].http.paths[1].backend.service.port" ; "number and name")]
#[test_case("pathType: Exact", "pathType: Regex", "spec.rules[0].http.paths[2].pathType" ; "path type")]
#[test_case("host: shop.example", "host: Shop.Example", "spec.rules[0].host" ; "bad host")]
#[test_case("secretName: shop-tls", "secretName: \"\"", "spec.tls[0].secretName" ; "tls without secret")]
fn bad_ingresses_are_refused_with_the_field(from: &str, to: &str, field: &str) {
    let yaml = INGRESS.replacen(from, to, 1);
    assert_ne!(yaml, INGRESS, "the edit applies");
    let e = parse_yaml("ing.yaml", &yaml).unwrap_err().to_string();
    assert!(e.contains("Ingress shop/shop"), "{e}");
    assert!(e.contains(field), "{field}: {e}");
}

#[test]
fn a_mesh_route_has_no_hostnames() {
    // A mesh route keeps GAMMA's rule: hostnames are refused there.
    let mesh_route = route(
        "shop",
        "m",
        "{kind: Service, group: \"\", name: api}",
        "  hostnames: [a.example]\n  rules:\n    - backendRefs: [{name: api, port: 80}]",
    );
    let e = parse_yaml("r.yaml", &mesh_route).unwrap_err().to_string();
    assert!(e.contains("spec.hostnames") && e.contains("GAMMA"), "{e}");
}

#[test]
fn edge_objects_reach_the_ingress_only() {
    let yaml = format!(
        "{GATEWAY}{INGRESS}{}{}",
        route(
            "shop",
            "front",
            "{name: edge, namespace: mesh-system}",
            "  rules:\n    - backendRefs: [{name: frontend, port: 80}]"
        ),
        route(
            "shop",
            "mesh",
            "{kind: Service, group: \"\", name: api}",
            "  rules:\n    - backendRefs: [{name: api, port: 80}]"
        ),
    );
    let snapshot: Snapshot = parse_yaml("all.yaml", &yaml).unwrap().snapshot;
    let kinds = |s: &Snapshot| {
        let mut k: Vec<String> = s
            .objects
            .iter()
            .map(|o| o.object_ref().to_string())
            .collect();
        k.sort();
        k
    };
    let sidecar = snapshot.for_workload("shop", &labels(&[("app", "frontend")]));
    assert_eq!(
        kinds(&sidecar),
        ["HTTPRoute shop/mesh", "Namespace blog", "Namespace shop"],
    );
    let ingress = snapshot.for_gateway("mesh-system", &labels(&[("app", "ingress")]));
    assert_eq!(
        kinds(&ingress),
        [
            "Gateway mesh-system/edge",
            "HTTPRoute shop/front",
            // A producer route applies to every client, the ingress too.
            "HTTPRoute shop/mesh",
            "Ingress shop/shop",
            "Namespace blog",
            "Namespace shop"
        ],
    );
    // What the ingress receives compiles there.
    let json = ingress.to_json();
    let back = Snapshot::from_json(&json).unwrap();
    Evaluator::compile(&back, "cluster.local").unwrap();
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n";

fn secret(body: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: shop-tls, namespace: shop}}\n{body}\n")
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn tls_secrets_load_beside_the_policy_and_never_show_their_key() {
    let data = secret(&format!(
        "type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}",
        b64(CERT),
        b64(KEY)
    ));
    let loaded = parse_yaml("s.yaml", &data).unwrap();
    assert!(loaded.snapshot.objects.is_empty(), "a Secret is not policy");
    assert_eq!(loaded.secrets.len(), 1);
    let s = &loaded.secrets[0];
    assert_eq!(
        (s.namespace.as_str(), s.name.as_str()),
        ("shop", "shop-tls")
    );
    assert_eq!(s.chain().len(), 1);
    assert!(s.key().is_some());
    let shown = format!("{s:?}");
    assert!(
        shown.contains("<redacted>") && !shown.contains("MIIBVQ"),
        "{shown}"
    );

    // stringData, as cert-manager's users sometimes write by hand.
    let string_data = secret(&format!(
        "type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        CERT.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>(),
        KEY.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>(),
    ));
    assert_eq!(parse_yaml("s.yaml", &string_data).unwrap().secrets[0], *s);

    // Another type is not Palisade's.
    let opaque = secret("type: Opaque\ndata: {password: aHVudGVyMg==}");
    let loaded = parse_yaml("s.yaml", &opaque).unwrap();
    assert!(loaded.secrets.is_empty());
    assert!(
        loaded.warnings[0].contains("Secret shop/shop-tls"),
        "{:?}",
        loaded.warnings
    );
}

#[test_case("  tls.key: KEY\n", "", "data[tls.key]" ; "no key")]
#[test_case("  tls.crt: CRT\n", "  tls.crt: \"%%%\"\n", "data[tls.crt]" ; "bad base64")]
#[test_case("  tls.key: KEY\n", "  tls.key: BADKEY\n", "tls.key" ; "not a key")]
fn bad_tls_secrets_are_refused_without_quoting_them(from: &str, to: &str, field: &str) {
    let template = secret("type: kubernetes.io/tls\ndata:\n  tls.crt: CRT\n  tls.key: KEY\n");
    let yaml = template
        .replacen(from, to, 1)
        .replace("CRT", &b64(CERT))
        .replace(
            "BADKEY",
            &b64("-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n"),
        )
        .replace("KEY", &b64(KEY));
    let e = parse_yaml("s.yaml", &yaml).unwrap_err().to_string();
    assert!(
        e.contains("Secret shop/shop-tls") && e.contains(field),
        "{field}: {e}"
    );
    assert!(
        !e.contains("MIIB") && !e.contains("not base64 at all"),
        "{e}"
    );
}
