//! Loading: errors name file, object and field; directories load whole or not at all;
//! snapshots round-trip through JSON; the per-workload subset decides alike.

#[path = "support/helpers.rs"]
mod support;

use mesh_policy::{Error, Evaluator, Snapshot, load_dir, parse_yaml};
use support::{Call, outcome};
use test_case::test_case;

fn first_error(yaml: &str) -> String {
    match parse_yaml("policies/api.yaml", yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.errors()[0].to_string(),
    }
}

const HEAD: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-frontend\n  namespace: shop\n";

#[test]
fn error_names_file_object_and_field() {
    // DESIGN.md: bad configuration gets a clear error naming file, object and field.
    let yaml = format!(
        "{HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        ports: [\"8080\", \"abc\"]\n"
    );
    assert_eq!(
        first_error(&yaml),
        "policies/api.yaml: AuthorizationPolicy shop/allow-frontend: spec.rules[0].to[0].operation.ports[1]: \"abc\" is not a port"
    );
}

#[test_case("spec:\n  rules:\n  - from:\n    - source:\n        principal: [\"x\"]\n", "spec.rules[0].from[0].source.principal: unknown field `principal`" ; "unknown field is refused")]
#[test_case("spec:\n  action: CUSTOM\n  provider:\n    name: ext\n", "spec.action: CUSTOM (external authorization) is not supported" ; "custom is refused")]
#[test_case("spec:\n  action: PERMIT\n", "spec.action: unknown variant `PERMIT`" ; "unknown action")]
#[test_case("spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/33\"]\n", "spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\": prefix length must be 0 to 32" ; "bad cidr")]
#[test_case("spec:\n  rules:\n  - from:\n    - source:\n        principals: [\"spiffe://cluster.local/ns/a/sa/b\"]\n", "spec.rules[0].from[0].source.principals[0]: \"spiffe://cluster.local/ns/a/sa/b\": write principals without the spiffe:// prefix" ; "spiffe prefix")]
#[test_case("spec:\n  rules:\n  - from:\n    - source:\n        principals: []\n", "spec.rules[0].from[0].source.principals: must not be empty" ; "empty list")]
#[test_case("spec:\n  rules:\n  - from:\n    - source: {}\n", "spec.rules[0].from[0].source: must not be empty" ; "empty source")]
#[test_case("spec:\n  rules:\n  - to:\n    - operation:\n        paths: [\"/a*b\"]\n", "spec.rules[0].to[0].operation.paths[0]: \"/a*b\": `*` is supported only" ; "inner wildcard")]
#[test_case("spec:\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/{*}\"]\n", "path templates" ; "path template")]
#[test_case("spec:\n  rules:\n  - when:\n    - key: connection.sni\n      values: [\"x\"]\n", "spec.rules[0].when[0].key: \"connection.sni\" is not a supported condition key" ; "unknown condition key")]
#[test_case("spec:\n  rules:\n  - when:\n    - key: request.headers[x a]\n      values: [\"1\"]\n", "\"request.headers[x a]\" is not a supported condition key" ; "bad header name")]
#[test_case("spec:\n  rules:\n  - when:\n    - key: source.ip\n", "spec.rules[0].when[0]: needs `values` or `notValues`" ; "condition without values")]
#[test_case("spec:\n  rules:\n  - when:\n    - key: destination.port\n      values: [\"http\"]\n", "spec.rules[0].when[0].values[0]: \"http\" is not a port" ; "condition port")]
#[test_case("spec:\n  targetRefs:\n  - kind: Service\n    name: x\n", "spec.targetRefs: is not supported" ; "target refs")]
#[test_case("spec:\n  rules:\n  - to:\n    - operation:\n        ports: [\"0\"]\n", "\"0\" is not a port" ; "port zero")]
#[test_case("spec:\n  rules:\n  - to:\n    - operation:\n        ports: [\"70000\"]\n", "\"70000\" is not a port" ; "port too large")]
fn authorization_policy_errors(spec: &str, want: &str) {
    let error = first_error(&format!("{HEAD}{spec}"));
    assert!(
        error.starts_with("policies/api.yaml: AuthorizationPolicy shop/allow-frontend: "),
        "{error}"
    );
    assert!(error.contains(want), "{error}\n  should contain: {want}");
}

#[test_case("apiVersion: security.istio.io/v2\nkind: AuthorizationPolicy\nmetadata:\n  name: a\n  namespace: s\n", "policies/api.yaml: AuthorizationPolicy s/a: apiVersion \"security.istio.io/v2\" is not supported for AuthorizationPolicy" ; "unknown security apiVersion")]
#[test_case("apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata:\n  name: a\n  namespace: s\n", "apiVersion \"networking.k8s.io/v1beta1\" is not supported for NetworkPolicy" ; "unknown networking apiVersion")]
#[test_case("apiVersion: v2\nkind: Service\nmetadata:\n  name: a\n", "is not supported for Service" ; "services are version-checked")]
#[test_case("apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  clusterIP: 10.0.0.300\n", "policies/api.yaml: Service default/a: spec.clusterIP: \"10.0.0.300\" is not an IP address" ; "service vip")]
#[test_case("apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports: [{port: 80, targetPort: http}]\n", "spec.ports[0].targetPort" ; "named target ports are refused")]
#[test_case("kind: Namespace\nmetadata:\n  name: a\n", "apiVersion \"\" is not supported for Namespace" ; "missing apiVersion")]
#[test_case("apiVersion: v1\nmetadata:\n  name: a\n", "policies/api.yaml: document 1: missing `kind`" ; "missing kind")]
#[test_case("- a\n- b\n", "document 1: expected a Kubernetes object" ; "not a mapping")]
#[test_case("apiVersion: v1\nkind: Namespace\nmetadata: {}\n", "metadata.name is required" ; "missing name")]
#[test_case("a: [unclosed\n", "policies/api.yaml: " ; "yaml syntax")]
#[test_case("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Shop_1\n", "policies/api.yaml: Namespace Shop_1: metadata.name: \"Shop_1\" is not a valid Kubernetes name" ; "invalid name")]
#[test_case("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: a\n  namespace: a/b\n", "metadata.namespace: \"a/b\" is not a valid Kubernetes name" ; "invalid namespace")]
fn document_errors(yaml: &str, want: &str) {
    let error = first_error(yaml);
    assert!(error.contains(want), "{error}\n  should contain: {want}");
}

#[test_case("  podSelector:\n    matchExpressions:\n    - key: app\n      operator: Maybe\n", "spec.podSelector.matchExpressions[0].operator: \"Maybe\" is not In, NotIn, Exists or DoesNotExist" ; "bad operator")]
#[test_case("  podSelector:\n    matchExpressions:\n    - key: app\n      operator: In\n", "spec.podSelector.matchExpressions[0].values: operator In needs at least one value" ; "in without values")]
#[test_case("  ingress:\n  - ports:\n    - port: http\n", "spec.ingress[0].ports[0].port: named port \"http\" is not supported" ; "named port")]
#[test_case("  ingress:\n  - ports:\n    - port: 80\n      endPort: 79\n", "spec.ingress[0].ports[0].endPort: 79 must be a port no lower than port 80" ; "end port below port")]
#[test_case("  ingress:\n  - ports:\n    - protocol: ICMP\n", "spec.ingress[0].ports[0].protocol: \"ICMP\" is not TCP, UDP or SCTP" ; "protocol")]
#[test_case("  ingress:\n  - from:\n    - ipBlock:\n        cidr: 10.0.0.0/8\n      podSelector: {}\n", "spec.ingress[0].from[0]: ipBlock cannot be combined" ; "ipblock with selector")]
#[test_case("  ingress:\n  - from:\n    - {}\n", "spec.ingress[0].from[0]: a peer needs" ; "empty peer")]
#[test_case("  egress:\n  - to:\n    - ipBlock:\n        cidr: 10.0.0.0/8\n        except: [11.0.0.0/16]\n", "spec.egress[0].to[0].ipBlock.except[0]: \"11.0.0.0/16\" is not inside cidr" ; "except outside cidr")]
#[test_case("  policyTypes: [Sideways]\n", "spec.policyTypes[0]: unknown variant `Sideways`" ; "policy type")]
fn network_policy_errors(spec: &str, want: &str) {
    let yaml = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: db\n  namespace: shop\nspec:\n{spec}"
    );
    let error = first_error(&yaml);
    assert!(
        error.starts_with("policies/api.yaml: NetworkPolicy shop/db: "),
        "{error}"
    );
    assert!(error.contains(want), "{error}\n  should contain: {want}");
}

#[test_case("  mtls:\n    mode: SOMETIMES\n", "spec.mtls.mode: unknown variant `SOMETIMES`" ; "mode")]
#[test_case("  mtls:\n    mode: STRICT\n  portLevelMtls:\n    8080:\n      mode: PERMISSIVE\n", "spec.portLevelMtls: needs spec.selector" ; "port level without selector")]
#[test_case("  selector:\n    matchLabels:\n      app: a\n  portLevelMtls:\n    http:\n      mode: PERMISSIVE\n", "spec.portLevelMtls[http]: \"http\" is not a port" ; "port key")]
fn peer_authentication_errors(spec: &str, want: &str) {
    let yaml = format!(
        "apiVersion: security.palisade.dev/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa\n  namespace: shop\nspec:\n{spec}"
    );
    let error = first_error(&yaml);
    assert!(
        error.starts_with("policies/api.yaml: PeerAuthentication shop/pa: "),
        "{error}"
    );
    assert!(error.contains(want), "{error}\n  should contain: {want}");
}

#[test]
fn annotation_errors() {
    // An invalid expiry is a load error, never "no expiry".
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: tmp\n  namespace: shop\n  annotations:\n    palisade.dev/expires-at: next tuesday\n    palisade.dev/dry-run: \"yes\"\n";
    let errors = parse_yaml("p.yaml", yaml).expect_err("invalid annotations");
    let messages: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "p.yaml: AuthorizationPolicy shop/tmp: metadata.annotations[palisade.dev/dry-run]: \"yes\" is not \"true\" or \"false\"",
            "p.yaml: AuthorizationPolicy shop/tmp: metadata.annotations[palisade.dev/expires-at]: \"next tuesday\" is not an RFC 3339 time (e.g. 2030-01-31T18:00:00Z)",
        ]
    );
}

#[test]
fn all_errors_are_reported() {
    let yaml = format!(
        "{HEAD}spec:\n  rules:\n  - to:\n    - operation:\n        ports: [\"x\", \"y\"]\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n"
    );
    let error = parse_yaml("a.yaml", &yaml).expect_err("errors");
    let messages: Vec<String> = error.errors().iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert_eq!(messages[2], "a.yaml: Namespace ok: defined more than once");
}

#[test]
fn several_documents_and_lists() {
    // Also: YAML 1.2 booleans only, so the name `n` stays a name.
    let yaml = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: b\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata:\n    name: n\n    namespace: b\n  spec:\n    podSelector: {}\n";
    let loaded = parse_yaml("x.yaml", yaml).expect("valid");
    let names: Vec<String> = loaded
        .snapshot
        .objects
        .iter()
        .map(|o| o.object_ref().to_string())
        .collect();
    assert_eq!(names, ["Namespace a", "Namespace b", "NetworkPolicy b/n"]);
}

#[test]
fn unknown_kinds_are_warnings() {
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  clusterIP: 10.251.0.10\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let loaded = parse_yaml("x.yaml", yaml).expect("warnings only");
    assert!(loaded.snapshot.objects.is_empty());
    assert_eq!(
        loaded.warnings,
        ["x.yaml: Deployment shop/web: kind Deployment (apps/v1) is not policy; ignored"]
    );
    // Services are discovery: loaded beside the policy snapshot.
    assert_eq!(loaded.services.len(), 1);
    let svc = &loaded.services[0];
    assert_eq!(svc.vip(), Some("10.251.0.10".parse().unwrap()));
    assert_eq!(svc.spec.ports[0].target_port, Some(8080));
}

#[test]
fn missing_namespace_means_default() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\nspec:\n  action: DENY\n  rules: [{}]\n";
    let loaded = parse_yaml("x.yaml", yaml).expect("valid");
    assert_eq!(
        loaded.snapshot.objects[0].object_ref().to_string(),
        "AuthorizationPolicy default/a"
    );
}

#[test]
fn bad_input_never_panics() {
    for yaml in [
        "",
        "---",
        "null",
        "[]",
        "42",
        "kind: 5",
        "apiVersion: [1]\nkind: Namespace",
        "kind: List\napiVersion: v1\nitems: 5",
        "*alias",
        "a: &x [*x]",
        "\u{0}",
        "kind: AuthorizationPolicy\napiVersion: security.istio.io/v1\nmetadata: 7",
        "kind: AuthorizationPolicy\napiVersion: security.istio.io/v1\nmetadata: {name: a}\nspec: [1]",
    ] {
        let _ = parse_yaml("x.yaml", yaml);
    }
}

#[test]
fn directory_loads_sorted_and_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("write");
    };
    write(
        "b.yml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n",
    );
    write(
        "a.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
    );
    write("notes.txt", "not yaml: [");
    write(".hidden.yaml", "not yaml: [");
    std::fs::create_dir(dir.path().join("sub.yaml")).expect("mkdir");
    let loaded = load_dir(dir.path()).expect("loads");
    let names: Vec<String> = loaded
        .snapshot
        .objects
        .iter()
        .map(|o| o.object_ref().name.clone())
        .collect();
    assert_eq!(names, ["a", "b"]);

    // The same object in two files: both are named.
    write(
        "d.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
    );
    let error = load_dir(dir.path()).expect_err("duplicate");
    let (a, d) = (dir.path().join("a.yaml"), dir.path().join("d.yaml"));
    assert_eq!(
        error.to_string(),
        format!(
            "{}: Namespace a: defined more than once (also in {})",
            d.display(),
            a.display()
        )
    );
    std::fs::remove_file(dir.path().join("d.yaml")).expect("rm");

    // One bad file fails the whole load, naming the file.
    write("c.yaml", &format!("{HEAD}spec:\n  action: CUSTOM\n"));
    let error = load_dir(dir.path()).expect_err("bad file");
    let shown = dir.path().join("c.yaml").display().to_string();
    assert!(
        error.to_string().starts_with(&format!(
            "{shown}: AuthorizationPolicy shop/allow-frontend: spec.action"
        )),
        "{error}"
    );

    let missing = load_dir(&dir.path().join("missing")).expect_err("missing dir");
    assert!(matches!(missing, Error::Io { .. }));
}

const MIXED: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    env: prod\n---\napiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: api\n  namespace: shop\n  annotations:\n    palisade.dev/dry-run: \"true\"\nspec:\n  selector:\n    matchLabels:\n      app: api\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/shop/sa/web\"]\n    to:\n    - operation:\n        ports: [8080]\n        methods: [GET]\n    when:\n    - key: request.headers[x-a]\n      notValues: [\"1\"]\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    9090:\n      mode: PERMISSIVE\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  podSelector:\n    matchLabels:\n      app: api\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions:\n        - key: env\n          operator: In\n          values: [prod]\n      podSelector: {}\n    - ipBlock:\n        cidr: 10.0.0.0/8\n        except: [10.1.0.0/16]\n    ports:\n    - port: 8080\n      endPort: 8090\n  egress:\n  - {}\n";

#[test]
fn snapshot_round_trips_through_json() {
    // The control plane sends snapshots as JSON; the proxy must get back the
    // same objects (ports typed as numbers come back as the strings Istio uses).
    let snapshot = parse_yaml("x.yaml", MIXED).expect("valid").snapshot;
    let json = snapshot.to_json();
    let back = Snapshot::from_json(&json).expect("round trip");
    assert_eq!(back, snapshot);
    let via_serde: Snapshot = serde_json::from_str(&json).expect("serde");
    assert_eq!(via_serde, snapshot);
    assert!(json.contains("\"kind\":\"AuthorizationPolicy\""), "{json}");
    assert!(json.contains("\"ports\":[\"8080\"]"), "{json}");
}

#[test]
fn json_snapshot_gets_the_same_checks() {
    let json = r#"{"objects":[{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"a","namespace":"s"},"spec":{"rules":[{"to":[{"operation":{"ports":["x"]}}]}]}}]}"#;
    let error = Snapshot::from_json(json).expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "<snapshot>: AuthorizationPolicy s/a: spec.rules[0].to[0].operation.ports[0]: \"x\" is not a port"
    );
    assert!(serde_json::from_str::<Snapshot>(json).is_err());
    assert!(Snapshot::from_json("{").is_err());
    assert!(Snapshot::from_json("[]").is_err());
}

#[test]
fn workload_subset_decides_alike() {
    // The control plane pushes `for_workload`; the proxy's answers must equal
    // the full snapshot's for that workload, as destination and as source.
    let yaml = format!(
        "{MIXED}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-dev\n  namespace: mesh-system\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [dev]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: other\n  namespace: billing\nspec: {{}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  podSelector:\n    matchLabels:\n      app: web\n  policyTypes: [Egress]\n"
    );
    let full = parse_yaml("x.yaml", &yaml).expect("valid").snapshot;
    let api_labels = support::labels(&[("app", "api")]);
    let subset = full.for_workload("shop", &api_labels);
    let names: Vec<String> = subset
        .objects
        .iter()
        .map(|o| o.object_ref().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "Namespace shop",
            "AuthorizationPolicy shop/api",
            "PeerAuthentication shop/api",
            "NetworkPolicy shop/api",
            "AuthorizationPolicy mesh-system/deny-dev",
        ]
    );
    let full = Evaluator::compile(&full, "cluster.local").expect("compile");
    let subset = Evaluator::compile(&subset, "cluster.local").expect("compile");
    let calls = [
        Call::from_sa("shop", "web")
            .source_ip("10.2.0.1")
            .port(8080)
            .http("GET", "/"),
        Call::from_sa("dev", "web").source_ip("10.2.0.1").port(8080),
        Call::plaintext().source_ip("10.2.0.1").port(9090),
        Call::plaintext().source_ip("10.1.0.1").port(9090),
        Call::from_sa("shop", "web")
            .source_workload("shop", &[("app", "web")])
            .port(8085),
        Call::from_sa("other", "x").port(22),
    ];
    for call in calls {
        let call = call.to("shop", &[("app", "api")]);
        assert_eq!(call.inbound(&full), call.inbound(&subset));
        assert_eq!(outcome(&call.check(&full)), outcome(&call.check(&full)));
    }
    // As a source: egress of shop/api.
    let out = Call::from_sa("shop", "api")
        .source_workload("shop", &[("app", "api")])
        .to("billing", &[]);
    assert_eq!(out.outbound(&full), out.outbound(&subset));
}

#[test]
fn decision_json_for_meshctl() {
    let m = support::mesh(&format!("{HEAD}spec:\n  action: DENY\n  rules: [{{}}]\n"));
    let d = Call::from_sa("a", "b").to("shop", &[]).inbound(&m);
    let json = serde_json::to_value(&d).expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "decision": "deny",
            "label": "deny",
            "stage": "AuthorizationPolicy",
            "decided_by": "AuthorizationPolicy shop/allow-frontend rule 0",
            "dry_run": null,
            "audit": null,
        })
    );
}
