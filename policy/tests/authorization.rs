//! AuthorizationPolicy: Istio semantics, one case per rule.

#[path = "support/helpers.rs"]
mod support;

use support::{Call, mesh, mesh_in, outcome};
use test_case::test_case;

const API: &[(&str, &str)] = &[("app", "api")];

fn policy(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n{spec}\n"
    )
}

fn shop(name: &str, spec: &str) -> String {
    policy("shop", name, spec)
}

// ---------------------------------------------------------------- actions

#[test]
fn no_policy_allows() {
    // Istio: no ALLOW policy applies to the workload ⇒ allow.
    let m = mesh("");
    let d = Call::from_sa("shop", "web").to("shop", API).inbound(&m);
    assert_eq!(outcome(&d), "allow: default allow");
    assert_eq!(d.label(), "allow");
}

#[test]
fn deny_before_allow() {
    // Istio: DENY is evaluated before ALLOW; an ALLOW match cannot override it.
    let yaml = [
        shop("allow-all", "  action: ALLOW\n  rules: [{}]"),
        shop(
            "deny-web",
            "  action: DENY\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/shop/sa/web\"]",
        ),
    ]
    .join("---\n");
    let m = mesh(&yaml);
    let d = Call::from_sa("shop", "web").to("shop", API).inbound(&m);
    assert_eq!(
        outcome(&d),
        "deny: AuthorizationPolicy shop/deny-web rule 0"
    );
    let d = Call::from_sa("shop", "other").to("shop", API).inbound(&m);
    assert_eq!(
        outcome(&d),
        "allow: AuthorizationPolicy shop/allow-all rule 0"
    );
}

#[test]
fn allow_policy_without_match_denies() {
    // Istio: once an ALLOW policy applies, a request must match one.
    let m = mesh(&shop(
        "only-web",
        "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/shop/sa/web\"]",
    ));
    let d = Call::from_sa("shop", "intruder")
        .to("shop", API)
        .inbound(&m);
    assert_eq!(outcome(&d), "deny: default deny");
    assert_eq!(d.stage, mesh_policy::Stage::AuthorizationPolicy);
    // Istio: the default action is ALLOW.
    let d = Call::from_sa("shop", "web").to("shop", API).inbound(&m);
    assert_eq!(
        outcome(&d),
        "allow: AuthorizationPolicy shop/only-web rule 0"
    );
}

#[test]
fn empty_spec_allows_nothing() {
    // Istio: `spec: {}` is an ALLOW policy with no rules: allow-nothing.
    let m = mesh(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-nothing\n  namespace: shop\nspec: {}\n",
    );
    let d = Call::from_sa("shop", "web").to("shop", API).inbound(&m);
    assert_eq!(outcome(&d), "deny: default deny");
}

#[test]
fn empty_rule_matches_everything() {
    // Istio: `rules: [{}]` matches every request (allow-all).
    let m = mesh(&shop("allow-all", "  action: ALLOW\n  rules: [{}]"));
    let d = Call::plaintext()
        .to("shop", API)
        .http("DELETE", "/x")
        .inbound(&m);
    // (plaintext is refused by the default STRICT mode before authorization)
    assert_eq!(d.stage, mesh_policy::Stage::PeerAuthentication);
    let d = Call::from_sa("other", "x")
        .to("shop", API)
        .http("DELETE", "/x")
        .inbound(&m);
    assert_eq!(
        outcome(&d),
        "allow: AuthorizationPolicy shop/allow-all rule 0"
    );
}

#[test]
fn deny_without_rules_denies_nothing() {
    // Istio: a DENY policy with no rules matches nothing.
    let m = mesh(&shop("deny-nothing", "  action: DENY"));
    let d = Call::from_sa("shop", "web").to("shop", API).inbound(&m);
    assert_eq!(outcome(&d), "allow: default allow");
}

#[test]
fn audit_never_changes_the_decision() {
    // Istio: AUDIT policies flag requests for audit; they do not allow or deny.
    let m = mesh(&shop("audit-all", "  action: AUDIT\n  rules: [{}]"));
    let d = Call::from_sa("shop", "web").to("shop", API).inbound(&m);
    assert_eq!(outcome(&d), "allow: default allow");
    assert_eq!(
        d.audit.map(|a| a.to_string()).as_deref(),
        Some("AuthorizationPolicy shop/audit-all rule 0")
    );
}

#[test]
fn audit_does_not_count_as_allow_policy() {
    // Istio: only ALLOW policies turn on "must match an ALLOW policy".
    let m = mesh(&shop(
        "audit-web",
        "  action: AUDIT\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/shop/sa/web\"]",
    ));
    let d = Call::from_sa("shop", "other").to("shop", API).inbound(&m);
    assert!(d.is_allowed());
    assert!(d.audit.is_none());
}

// ---------------------------------------------------------------- scope

#[test_case("shop", API, "deny: AuthorizationPolicy shop/deny-all rule 0" ; "selector matches")]
#[test_case("shop", &[("app", "web")], "allow: default allow" ; "selector does not match")]
#[test_case("other", API, "allow: default allow" ; "other namespace is out of scope")]
fn selector_and_namespace(namespace: &str, pairs: &[(&str, &str)], want: &str) {
    // Istio: a policy applies to workloads of its own namespace that its
    // selector.matchLabels selects (no selector: all of them).
    let m = mesh(&shop(
        "deny-all",
        "  selector:\n    matchLabels:\n      app: api\n  action: DENY\n  rules: [{}]",
    ));
    let d = Call::from_sa("shop", "web")
        .to(namespace, pairs)
        .inbound(&m);
    assert_eq!(outcome(&d), want);
}

#[test_case("shop", API, false ; "root policy with selector applies in shop")]
#[test_case("billing", API, false ; "root policy with selector applies in billing")]
#[test_case("billing", &[("app", "db")], true ; "root policy selector still filters")]
fn root_namespace_is_mesh_wide(namespace: &str, pairs: &[(&str, &str)], allowed: bool) {
    // Istio: policies in the root namespace apply to every namespace; their
    // selector (if any) matches workloads in all namespaces.
    let m = mesh(&policy(
        "mesh-system",
        "deny-api",
        "  selector:\n    matchLabels:\n      app: api\n  action: DENY\n  rules: [{}]",
    ));
    let d = Call::from_sa("shop", "web")
        .to(namespace, pairs)
        .inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

#[test]
fn root_namespace_allow_without_selector_covers_everyone() {
    // Istio: a root-namespace ALLOW policy makes every workload need a match.
    let m = mesh(&policy(
        "mesh-system",
        "allow-shop",
        "  rules:\n  - from:\n    - source:\n        namespaces: [\"shop\"]",
    ));
    assert!(
        Call::from_sa("shop", "web")
            .to("billing", API)
            .inbound(&m)
            .is_allowed()
    );
    let d = Call::from_sa("dev", "web").to("billing", API).inbound(&m);
    assert_eq!(outcome(&d), "deny: default deny");
}

// ---------------------------------------------------------------- combination

const COMBINED: &str = "  rules:
  - from:
    - source:
        principals: [\"cluster.local/ns/shop/sa/web\", \"cluster.local/ns/shop/sa/admin\"]
        ipBlocks: [\"10.0.0.0/8\"]
    - source:
        namespaces: [\"ops\"]
    to:
    - operation:
        ports: [\"8080\"]
    - operation:
        ports: [\"9090\"]
";

#[test_case("shop", "web", "10.1.1.1", 8080, true ; "first source all fields")]
#[test_case("shop", "admin", "10.1.1.1", 9090, true ; "values in a field are ORed; to entries ORed")]
#[test_case("shop", "web", "192.168.1.1", 8080, false ; "fields in one source are ANDed")]
#[test_case("ops", "anything", "192.168.1.1", 8080, true ; "from entries are ORed")]
#[test_case("ops", "anything", "192.168.1.1", 7070, false ; "from and to are ANDed")]
#[test_case("dev", "web", "10.1.1.1", 8080, false ; "no source matches")]
fn rule_combination(namespace: &str, sa: &str, ip: &str, port: u16, allowed: bool) {
    // Istio: within a rule from/to/when are ANDed; entries of from (and of to)
    // are ORed; fields inside one source/operation are ANDed; values ORed.
    let m = mesh(&shop("combined", COMBINED));
    let d = Call::from_sa(namespace, sa)
        .source_ip(ip)
        .to("shop", API)
        .port(port)
        .inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

#[test]
fn first_matching_rule_is_named() {
    // DESIGN.md: a decision names `<kind> <namespace>/<name> rule <n>`.
    let m = mesh(&shop(
        "rules",
        "  rules:\n  - to:\n    - operation:\n        ports: [\"1\"]\n  - to:\n    - operation:\n        ports: [\"8080\"]\n  - {}",
    ));
    let d = Call::from_sa("shop", "web")
        .to("shop", API)
        .port(8080)
        .inbound(&m);
    assert_eq!(outcome(&d), "allow: AuthorizationPolicy shop/rules rule 1");
}

// ---------------------------------------------------------------- source fields

fn allow_source(field: &str, values: &str) -> String {
    shop(
        "p",
        &format!("  rules:\n  - from:\n    - source:\n        {field}: {values}"),
    )
}

#[test_case("principals", "[\"cluster.local/ns/shop/sa/web\"]", Call::from_sa("shop", "web"), true ; "principals exact")]
#[test_case("principals", "[\"cluster.local/ns/shop/*\"]", Call::from_sa("shop", "any"), true ; "principals prefix")]
#[test_case("principals", "[\"*/sa/web\"]", Call::from_sa("dev", "web"), true ; "principals suffix")]
#[test_case("principals", "[\"*\"]", Call::from_sa("dev", "x"), true ; "principals presence matches any mTLS peer")]
#[test_case("principals", "[\"*\"]", Call::plaintext().source_ip("10.0.0.1"), false ; "principals presence needs mTLS")]
#[test_case("notPrincipals", "[\"cluster.local/ns/shop/sa/web\"]", Call::from_sa("shop", "web"), false ; "notPrincipals excludes")]
#[test_case("notPrincipals", "[\"cluster.local/ns/shop/sa/web\"]", Call::from_sa("shop", "db"), true ; "notPrincipals admits others")]
#[test_case("namespaces", "[\"shop\"]", Call::from_sa("shop", "x"), true ; "namespaces from the principal")]
#[test_case("namespaces", "[\"shop\"]", Call::from_sa("dev", "x"), false ; "namespaces other")]
#[test_case("notNamespaces", "[\"dev\"]", Call::from_sa("dev", "x"), false ; "notNamespaces excludes")]
#[test_case("notNamespaces", "[\"dev\"]", Call::from_sa("shop", "x"), true ; "notNamespaces admits")]
#[test_case("ipBlocks", "[\"10.0.0.0/8\", \"192.168.0.1\"]", Call::from_sa("a", "b").source_ip("192.168.0.1"), true ; "ipBlocks single address")]
#[test_case("ipBlocks", "[\"10.0.0.0/8\"]", Call::from_sa("a", "b").source_ip("11.0.0.1"), false ; "ipBlocks outside")]
#[test_case("ipBlocks", "[\"10.0.0.0/8\"]", Call::from_sa("a", "b").source_ip("::ffff:10.0.0.1"), true ; "ipBlocks mapped ipv6")]
#[test_case("notIpBlocks", "[\"10.0.0.0/8\"]", Call::from_sa("a", "b").source_ip("10.0.0.1"), false ; "notIpBlocks excludes")]
#[test_case("remoteIpBlocks", "[\"1.2.3.0/24\"]", Call::from_sa("a", "b").source_ip("10.0.0.1").http("GET", "/").remote_ip("1.2.3.4"), true ; "remoteIpBlocks uses the forwarded client")]
#[test_case("remoteIpBlocks", "[\"1.2.3.0/24\"]", Call::from_sa("a", "b").source_ip("1.2.3.9"), true ; "remoteIpBlocks defaults to source ip")]
#[test_case("notRemoteIpBlocks", "[\"1.2.3.0/24\"]", Call::from_sa("a", "b").source_ip("10.0.0.1").http("GET", "/").remote_ip("1.2.3.4"), false ; "notRemoteIpBlocks excludes")]
#[test_case("requestPrincipals", "[\"https://issuer/*\"]", Call::from_sa("a", "b").http("GET", "/").request_principal("https://issuer/alice"), true ; "requestPrincipals on HTTP")]
#[test_case("requestPrincipals", "[\"*\"]", Call::from_sa("a", "b").http("GET", "/"), false ; "requestPrincipals needs a credential")]
#[test_case("notRequestPrincipals", "[\"https://issuer/alice\"]", Call::from_sa("a", "b").http("GET", "/").request_principal("https://issuer/alice"), false ; "notRequestPrincipals excludes")]
fn source_fields(field: &str, values: &str, call: Call, allowed: bool) {
    // Istio: source fields; not-fields match when the value is not in the list.
    let m = mesh(&format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: permissive\n  namespace: shop\nspec:\n  mtls:\n    mode: PERMISSIVE\n",
        allow_source(field, values)
    ));
    let d = call.to("shop", API).inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

#[test]
fn not_principals_matches_plaintext() {
    // Istio: a plaintext caller has no principal, so it is "not in" any list.
    let m = mesh(&format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: permissive\n  namespace: shop\nspec:\n  mtls:\n    mode: PERMISSIVE\n",
        allow_source("notPrincipals", "[\"cluster.local/ns/shop/sa/web\"]")
    ));
    assert!(Call::plaintext().to("shop", API).inbound(&m).is_allowed());
}

#[test_case("cluster.local/ns/shop/sa/web", "spiffe://example.org/ns/shop/sa/web", true ; "cluster.local is the mesh trust domain")]
#[test_case("example.org/ns/shop/sa/web", "spiffe://example.org/ns/shop/sa/web", true ; "the real trust domain also works")]
#[test_case("cluster.local/ns/shop/sa/web", "spiffe://other.org/ns/shop/sa/web", false ; "a foreign trust domain does not match")]
#[test_case("cluster.local/ns/shop/*", "spiffe://example.org/ns/shop/sa/any", true ; "alias in a prefix pattern")]
fn trust_domain_alias(principal: &str, caller: &str, allowed: bool) {
    // Istio: `cluster.local` in a policy is an alias of the mesh trust domain.
    let m = mesh_in(
        &allow_source("principals", &format!("[\"{principal}\"]")),
        "example.org",
    );
    let d = Call::from_principal(caller).to("shop", API).inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

// ---------------------------------------------------------------- operation fields

fn allow_operation(field: &str, values: &str) -> String {
    shop(
        "p",
        &format!("  rules:\n  - to:\n    - operation:\n        {field}: {values}"),
    )
}

#[test_case("ports", "[\"8080\", 9090]", Call::from_sa("a", "b").port(9090), true ; "ports as strings or numbers")]
#[test_case("ports", "[\"8080\"]", Call::from_sa("a", "b").port(9090), false ; "ports other")]
#[test_case("notPorts", "[\"8080\"]", Call::from_sa("a", "b").port(8080), false ; "notPorts excludes")]
#[test_case("methods", "[\"GET\", \"HEAD\"]", Call::from_sa("a", "b").http("HEAD", "/"), true ; "methods")]
#[test_case("methods", "[\"GET\"]", Call::from_sa("a", "b").http("get", "/"), false ; "methods are case-sensitive")]
#[test_case("notMethods", "[\"DELETE\"]", Call::from_sa("a", "b").http("DELETE", "/"), false ; "notMethods excludes")]
#[test_case("paths", "[\"/api/*\", \"/health\"]", Call::from_sa("a", "b").http("GET", "/api/v1/x"), true ; "paths prefix")]
#[test_case("paths", "[\"*.css\"]", Call::from_sa("a", "b").http("GET", "/s/site.css"), true ; "paths suffix")]
#[test_case("paths", "[\"/admin\"]", Call::from_sa("a", "b").http("GET", "/ADMIN"), false ; "paths are case-sensitive")]
#[test_case("notPaths", "[\"/admin/*\"]", Call::from_sa("a", "b").http("GET", "/admin/x"), false ; "notPaths excludes")]
#[test_case("hosts", "[\"api.shop.svc\"]", Call::from_sa("a", "b").http("GET", "/").host("API.Shop.svc"), true ; "hosts are case-insensitive")]
#[test_case("hosts", "[\"api.shop.svc\"]", Call::from_sa("a", "b").http("GET", "/").host("api.shop.svc:8080"), false ; "hosts match the header as sent")]
#[test_case("hosts", "[\"api.shop.svc\", \"api.shop.svc:*\"]", Call::from_sa("a", "b").http("GET", "/").host("api.shop.svc:8080"), true ; "hosts with any port")]
#[test_case("hosts", "[\"*\"]", Call::from_sa("a", "b").http("GET", "/"), false ; "hosts presence needs a host")]
#[test_case("notHosts", "[\"*.internal\"]", Call::from_sa("a", "b").http("GET", "/").host("db.internal"), false ; "notHosts excludes")]
fn operation_fields(field: &str, values: &str, call: Call, allowed: bool) {
    // Istio: operation fields; values ORed, fields ANDed.
    let m = mesh(&allow_operation(field, values));
    let d = call.to("shop", API).inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

// ---------------------------------------------------------------- conditions

fn allow_when(key: &str, field: &str, values: &str) -> String {
    shop(
        "p",
        &format!("  rules:\n  - when:\n    - key: {key}\n      {field}: {values}"),
    )
}

#[test_case("source.ip", "values", "[\"10.0.0.0/8\"]", Call::from_sa("a", "b").source_ip("10.2.3.4"), true ; "source.ip")]
#[test_case("source.ip", "notValues", "[\"10.0.0.0/8\"]", Call::from_sa("a", "b").source_ip("10.2.3.4"), false ; "source.ip notValues")]
#[test_case("remote.ip", "values", "[\"1.2.3.4\"]", Call::from_sa("a", "b").source_ip("10.0.0.1").http("GET", "/").remote_ip("1.2.3.4"), true ; "remote.ip")]
#[test_case("source.namespace", "values", "[\"shop\"]", Call::from_sa("shop", "b"), true ; "source.namespace")]
#[test_case("source.namespace", "values", "[\"shop\"]", Call::from_sa("dev", "b"), false ; "source.namespace other")]
#[test_case("source.principal", "values", "[\"cluster.local/ns/shop/sa/web\"]", Call::from_sa("shop", "web"), true ; "source.principal")]
#[test_case("destination.port", "values", "[\"8080\"]", Call::from_sa("a", "b").port(8080), true ; "destination.port")]
#[test_case("destination.port", "notValues", "[8080]", Call::from_sa("a", "b").port(8080), false ; "destination.port notValues")]
#[test_case("destination.ip", "values", "[\"10.9.0.0/16\"]", Call::from_sa("a", "b").destination_ip("10.9.1.1"), true ; "destination.ip")]
#[test_case("request.headers[X-Tenant]", "values", "[\"acme\", \"beta-*\"]", Call::from_sa("a", "b").http("GET", "/").header("x-tenant", "beta-7"), true ; "header values, names case-insensitive")]
#[test_case("request.headers[x-tenant]", "values", "[\"acme\"]", Call::from_sa("a", "b").http("GET", "/"), false ; "absent header does not match values")]
#[test_case("request.headers[x-tenant]", "notValues", "[\"evil\"]", Call::from_sa("a", "b").http("GET", "/"), true ; "absent header is not in notValues")]
#[test_case("request.headers[x-tenant]", "notValues", "[\"evil\"]", Call::from_sa("a", "b").http("GET", "/").header("X-Tenant", "evil"), false ; "header notValues excludes")]
#[test_case("request.auth.principal", "values", "[\"iss/alice\"]", Call::from_sa("a", "b").http("GET", "/").request_principal("iss/alice"), true ; "request.auth.principal")]
fn conditions(key: &str, field: &str, values: &str, call: Call, allowed: bool) {
    // Istio: `when` conditions; all must hold; values ORed, notValues excluded.
    let m = mesh(&allow_when(key, field, values));
    let d = call.to("shop", API).inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

// ---------------------------------------------------------------- HTTP-only fields on TCP

#[test_case("  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9000\"]", 9000, false ; "allow with methods does not match tcp")]
#[test_case("  action: ALLOW\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"*\"]", 9000, false ; "allow with requestPrincipals does not match tcp")]
#[test_case("  action: ALLOW\n  rules:\n  - when:\n    - key: request.headers[x-a]\n      values: [\"1\"]", 9000, false ; "allow with header condition does not match tcp")]
#[test_case("  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]", 9001, false ; "deny with only methods denies all tcp")]
#[test_case("  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9000\"]", 9000, false ; "deny with methods and ports denies that port")]
#[test_case("  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9000\"]", 9001, true ; "deny with methods and ports spares other ports")]
#[test_case("  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-a]\n      values: [\"1\"]", 9000, false ; "deny with header condition denies tcp")]
#[test_case("  action: DENY\n  rules:\n  - from:\n    - source:\n        notRequestPrincipals: [\"*\"]", 9000, false ; "deny with notRequestPrincipals denies tcp")]
fn http_only_fields_on_tcp(spec: &str, port: u16, allowed: bool) {
    // Istio (tasks/security/authorization/authz-tcp): on TCP an ALLOW rule
    // using HTTP-only fields never matches; a DENY rule ignores them and
    // matches more broadly. Both fail closed.
    let m = mesh(&shop("tcp", spec));
    let d = Call::from_sa("shop", "web")
        .to("shop", API)
        .port(port)
        .inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

#[test]
fn http_only_fields_apply_to_http() {
    // Istio: the same ALLOW rule matches an HTTP request that fits it.
    let m = mesh(&shop(
        "tcp",
        "  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9000\"]",
    ));
    let call = Call::from_sa("shop", "web").to("shop", API).port(9000);
    assert!(call.clone().http("GET", "/").inbound(&m).is_allowed());
    assert!(!call.http("POST", "/").inbound(&m).is_allowed());
}

// ---------------------------------------------------------------- many rules

#[test]
fn principal_index_keeps_rule_order() {
    // Many rules: the index must name the same (first) rule a scan would.
    let mut spec = String::from("  rules:\n");
    for i in 0..40 {
        spec.push_str(&format!(
            "  - from:\n    - source:\n        principals: [\"cluster.local/ns/shop/sa/sa{i}\"]\n    to:\n    - operation:\n        ports: [\"{}\"]\n",
            8000 + i
        ));
        if i == 20 {
            // An unindexable rule in the middle: any caller on port 7000.
            spec.push_str("  - to:\n    - operation:\n        ports: [\"7000\"]\n");
        }
    }
    // sa5 is allowed by rule 5 (its own port), and by rule 21 on port 7000.
    spec.push_str(
        "  - from:\n    - source:\n        principals: [\"cluster.local/ns/shop/sa/sa5\"]\n",
    );
    let m = mesh(&shop("many", &spec));
    let call = |sa: &str, port| {
        outcome(
            &Call::from_sa("shop", sa)
                .to("shop", API)
                .port(port)
                .inbound(&m),
        )
    };
    assert_eq!(
        call("sa5", 8005),
        "allow: AuthorizationPolicy shop/many rule 5"
    );
    assert_eq!(
        call("sa30", 7000),
        "allow: AuthorizationPolicy shop/many rule 21"
    );
    assert_eq!(
        call("sa30", 8030),
        "allow: AuthorizationPolicy shop/many rule 31"
    );
    assert_eq!(
        call("sa5", 1234),
        "allow: AuthorizationPolicy shop/many rule 41"
    );
    assert_eq!(call("nobody", 8005), "deny: default deny");
}

#[test]
fn namespace_index_keeps_rule_order() {
    // Many rules by source namespace, one rule keyed by a principal and a
    // namespace at once, and one that cannot be indexed: the index must name
    // the same (first) rule a scan would, and never a rule that does not match.
    let mut spec = String::from("  rules:\n");
    for i in 0..40 {
        spec.push_str(&format!(
            "  - from:\n    - source:\n        namespaces: [ns{i}]\n    to:\n    - operation:\n        ports: [\"{}\"]\n",
            8000 + i
        ));
        if i == 20 {
            // Rule 21: sa "special" of ns30, or anyone in ns7, on port 7000.
            spec.push_str(
                "  - from:\n    - source:\n        principals: [\"cluster.local/ns/ns30/sa/special\"]\n    - source:\n        namespaces: [ns7]\n    to:\n    - operation:\n        ports: [\"7000\"]\n",
            );
            // Rule 22: any caller on port 7001.
            spec.push_str("  - to:\n    - operation:\n        ports: [\"7001\"]\n");
        }
    }
    // Rule 42: anyone in ns7, any port.
    spec.push_str("  - from:\n    - source:\n        namespaces: [ns7]\n");
    let m = mesh(&shop("by-namespace", &spec));
    let call = |ns: &str, sa: &str, port| {
        outcome(&Call::from_sa(ns, sa).to("shop", API).port(port).inbound(&m))
    };
    let rule = |n: u32| format!("allow: AuthorizationPolicy shop/by-namespace rule {n}");
    assert_eq!(call("ns5", "default", 8005), rule(5));
    assert_eq!(call("ns7", "default", 8007), rule(7));
    assert_eq!(call("ns7", "default", 7000), rule(21));
    assert_eq!(call("ns30", "special", 7000), rule(21));
    assert_eq!(call("ns30", "other", 7000), "deny: default deny");
    assert_eq!(call("ns30", "other", 7001), rule(22));
    assert_eq!(call("ns30", "other", 8030), rule(32));
    assert_eq!(call("ns30", "other", 8031), "deny: default deny");
    assert_eq!(call("ns7", "default", 1234), rule(42));
    assert_eq!(call("elsewhere", "default", 8005), "deny: default deny");
}
