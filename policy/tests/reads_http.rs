//! `Evaluator::reads_http`: whether a proxy must look at HTTP requests, or
//! may decide once per connection.

use mesh_policy::{Evaluator, parse_yaml};

fn reads_http(yaml: &str) -> bool {
    let loaded = parse_yaml("t.yaml", yaml).expect("valid");
    Evaluator::compile(&loaded.snapshot, "cluster.local")
        .expect("compiles")
        .reads_http()
}

const HEAD: &str = "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\n";

#[test]
fn only_http_fields_need_http() {
    // No policy, or L4 fields only (principals, namespaces, ports, source.ip):
    // the same answer for every request of a connection.
    assert!(!reads_http(""));
    assert!(!reads_http(&format!("{HEAD}spec: {{}}\n")));
    assert!(!reads_http(&format!(
        "{HEAD}spec:\n  rules:\n  - from: [{{source: {{principals: [\"cluster.local/ns/shop/sa/web\"]}}}}]\n    to: [{{operation: {{ports: [\"8080\"]}}}}]\n    when: [{{key: source.ip, values: [\"10.0.0.0/8\"]}}]\n"
    )));
    // Paths, methods, hosts and request headers are per request.
    for rule in [
        "to: [{operation: {paths: [\"/admin\"]}}]",
        "to: [{operation: {methods: [\"GET\"]}}]",
        "to: [{operation: {hosts: [\"api\"]}}]",
        "when: [{key: \"request.headers[x-user]\", values: [\"a\"]}]",
    ] {
        assert!(
            reads_http(&format!(
                "{HEAD}spec:\n  action: DENY\n  rules:\n  - {rule}\n"
            )),
            "{rule}"
        );
    }
}
