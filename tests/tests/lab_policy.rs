//! AuthorizationPolicy and NetworkPolicy enforced end to end in the lab:
//! for each kind, an allowed and a denied flow by identity (pod labels for
//! NetworkPolicy), by namespace and by IP block. Clients are unmodified
//! curls in meshed pods calling a Service by name; the 403 names what denied.

use mesh_tests::metric;
use mesh_tests::netns::{Lab, LabSpec, Pod, available};

const SERVER_URL: &str = "http://server.shop.svc.cluster.local:8080/orders";

/// A lab with a server in `shop` (Service `server`), the clients, and `policy`.
fn lab(index: u8, clients: Vec<Pod>, policy: &str) -> Lab {
    let mut spec = LabSpec::new(index)
        .pod(Pod::new("server", "shop", 10).echo(&[8080]))
        .service("server", "shop", 10, "server", (8080, 8080))
        .file(
            "namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: shop}}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: front, labels: {team: front}}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: other, labels: {team: other}}\n",
        )
        .file("policy.yaml", policy);
    for c in clients {
        spec = spec.pod(c);
    }
    spec.up()
}

/// `allowed` gets the app's answer; `denied` gets 403 naming `denied_by`,
/// and the server's proxy counts both decisions.
fn check(lab: &Lab, allowed: &str, denied: &str, denied_by: &str) {
    let (code, body) = lab.curl_answered(allowed, SERVER_URL);
    assert_eq!(code, 200, "{allowed} was refused: {body}");
    assert!(body.starts_with("server received"), "{body}");
    let (code, body) = lab.curl_answered(denied, SERVER_URL);
    assert_eq!(code, 403, "{denied} was not refused: {body}");
    assert!(
        body.contains(denied_by),
        "403 does not name {denied_by:?}: {body}"
    );
    assert!(!body.contains("server received"), "the app saw it: {body}");
    let m = lab.metrics("server");
    let decisions = |d| {
        metric(
            &m,
            "mesh_authz_decisions_total",
            &[("direction", "inbound"), ("decision", d)],
        )
    };
    assert!(decisions("allow") >= 1.0 && decisions("deny") >= 1.0, "{m}");
    assert!(
        metric(
            &m,
            "mesh_authz_decisions_total",
            &[("decision", "deny"), ("policy", denied_by)]
        ) >= 1.0,
        "{m}"
    );
}

#[test]
fn authorization_policy_by_identity() {
    if !available("authorization_policy_by_identity") {
        return;
    }
    let mut lab = lab(
        31,
        vec![Pod::new("good", "shop", 20), Pod::new("bad", "shop", 21)],
        "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: server, namespace: shop}\n\
         spec:\n  selector: {matchLabels: {app: server}}\n  rules:\n\
         \x20 - from: [{source: {principals: [cluster.local/ns/shop/sa/good]}}]\n",
    );
    check(&lab, "good", "bad", "default deny");
    lab.down();
}

#[test]
fn authorization_policy_by_namespace() {
    if !available("authorization_policy_by_namespace") {
        return;
    }
    let mut lab = lab(
        32,
        vec![Pod::new("good", "front", 20), Pod::new("bad", "other", 21)],
        "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: server, namespace: shop}\n\
         spec:\n  selector: {matchLabels: {app: server}}\n  rules:\n\
         \x20 - from: [{source: {namespaces: [front]}}]\n",
    );
    check(&lab, "good", "bad", "default deny");
    lab.down();
}

#[test]
fn authorization_policy_by_ip_block() {
    if !available("authorization_policy_by_ip_block") {
        return;
    }
    // A DENY rule by source address; nothing else applies, so others pass.
    let mut lab = lab(
        33,
        vec![Pod::new("good", "shop", 20), Pod::new("bad", "shop", 21)],
        "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: deny-bad-ip, namespace: shop}\n\
         spec:\n  selector: {matchLabels: {app: server}}\n  action: DENY\n  rules:\n\
         \x20 - from: [{source: {ipBlocks: [10.250.33.21/32]}}]\n",
    );
    check(
        &lab,
        "good",
        "bad",
        "AuthorizationPolicy shop/deny-bad-ip rule 0",
    );
    lab.down();
}

#[test]
fn network_policy_by_pod_labels() {
    if !available("network_policy_by_pod_labels") {
        return;
    }
    let mut lab = lab(
        34,
        vec![Pod::new("good", "shop", 20), Pod::new("bad", "shop", 21)],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: server, namespace: shop}\n\
         spec:\n  podSelector: {matchLabels: {app: server}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - from: [{podSelector: {matchLabels: {app: good}}}]\n    ports: [{port: 8080}]\n",
    );
    check(&lab, "good", "bad", "NetworkPolicy shop/server");
    lab.down();
}

#[test]
fn network_policy_by_namespace() {
    if !available("network_policy_by_namespace") {
        return;
    }
    let mut lab = lab(
        35,
        vec![Pod::new("good", "front", 20), Pod::new("bad", "other", 21)],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: server, namespace: shop}\n\
         spec:\n  podSelector: {matchLabels: {app: server}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - from: [{namespaceSelector: {matchLabels: {team: front}}}]\n",
    );
    check(&lab, "good", "bad", "NetworkPolicy shop/server");
    lab.down();
}

#[test]
fn network_policy_by_ip_block() {
    if !available("network_policy_by_ip_block") {
        return;
    }
    let mut lab = lab(
        36,
        vec![Pod::new("good", "shop", 20), Pod::new("bad", "shop", 21)],
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: server, namespace: shop}\n\
         spec:\n  podSelector: {matchLabels: {app: server}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - from: [{ipBlock: {cidr: 10.250.36.0/24, except: [10.250.36.21/32]}}]\n",
    );
    check(&lab, "good", "bad", "NetworkPolicy shop/server");
    lab.down();
}
