//! Choosing a Service's endpoints from its slices: each case names the rule.

use serde_json::{Value, json};

use super::*;
use crate::registry::DEFAULT_INBOUND_PORT;

fn pod(name: &str, ip: &str) -> Workload {
    Workload {
        identity: format!("spiffe://cluster.local/ns/shop/sa/{name}"),
        namespace: "shop".into(),
        workload: name.into(),
        labels: Default::default(),
        ips: vec![ip.into()],
        ports: vec![],
        inbound_port: DEFAULT_INBOUND_PORT,
    }
}

fn endpoint(ip: &str, pod: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({"addresses": [ip], "targetRef": {"kind": "Pod", "name": pod},
           "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
}

fn slice(name: &str, address_type: &str, ports: Value, endpoints: Vec<Value>) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": "shop",
                        "labels": {"kubernetes.io/service-name": "api"}},
           "addressType": address_type, "ports": ports, "endpoints": endpoints})
}

fn http(port: u16) -> Value {
    json!([{"name": "http", "port": port, "protocol": "TCP"}])
}

fn ips(r: &Resolved) -> Vec<&str> {
    r.services
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.ip.as_str()))
        .collect()
}

#[test]
fn ready_endpoints_first_terminating_ones_only_when_none_is_ready() {
    let pods = [
        pod("a", "10.0.0.1"),
        pod("b", "10.0.0.2"),
        pod("c", "10.0.0.3"),
    ];
    let both = slice(
        "api-1",
        "IPv4",
        http(8080),
        vec![
            endpoint("10.0.0.1", "a", true, true, false),
            endpoint("10.0.0.2", "b", false, true, true),
            // Not ready, not terminating: never used.
            endpoint("10.0.0.3", "c", false, false, false),
        ],
    );
    assert_eq!(ips(&resolve([&both].into_iter(), &pods)), ["10.0.0.1"]);
    let terminating_only = slice(
        "api-1",
        "IPv4",
        http(8080),
        vec![
            endpoint("10.0.0.1", "a", false, false, true),
            endpoint("10.0.0.2", "b", false, true, true),
            endpoint("10.0.0.3", "c", false, false, false),
        ],
    );
    // Serving while terminating, and nothing ready: used (kube-proxy).
    assert_eq!(
        ips(&resolve([&terminating_only].into_iter(), &pods)),
        ["10.0.0.2"]
    );
    // Conditions the API server left out: unknown readiness is ready.
    let unknown = slice(
        "api-1",
        "IPv4",
        http(8080),
        vec![json!({"addresses": ["10.0.0.3"]})],
    );
    assert_eq!(ips(&resolve([&unknown].into_iter(), &pods)), ["10.0.0.3"]);
}

#[test]
fn an_address_without_a_meshed_pod_fails_closed() {
    let pods = [pod("a", "10.0.0.1")];
    let s = slice(
        "api-1",
        "IPv4",
        http(8080),
        vec![
            // Ready, but no proxy identity: not an endpoint, and it does
            // not hide the meshed terminating one.
            endpoint("10.0.0.9", "legacy", true, true, false),
            endpoint("10.0.0.1", "a", false, true, true),
            // The address of a meshed pod, but the slice names another pod.
            endpoint("10.0.0.1", "impostor", true, true, false),
        ],
    );
    let r = resolve([&s].into_iter(), &pods);
    assert_eq!(ips(&r), ["10.0.0.1"]);
    assert_eq!(
        r.services[0].endpoints[0].identity,
        "spiffe://cluster.local/ns/shop/sa/a"
    );
    assert_eq!(r.unmeshed, 2);
    assert!(
        r.warnings.iter().any(|w| w.starts_with(
            "EndpointSlice shop/api-1: endpoint 10.0.0.9 (pod legacy) is not a meshed pod"
        )),
        "{:?}",
        r.warnings
    );
    // A pod of another namespace at the same address is not this one.
    let mut elsewhere = pod("a", "10.0.0.1");
    elsewhere.namespace = "blog".into();
    let r = resolve([&s].into_iter(), &[elsewhere]);
    assert!(ips(&r).is_empty());
    assert_eq!(r.unmeshed, 3);
}

#[test]
fn named_ports_take_the_slices_numbers() {
    let pods = [pod("a", "10.0.0.1")];
    let s = slice(
        "api-1",
        "IPv4",
        json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090, "protocol": "TCP"},
               {"name": "dns", "port": 53, "protocol": "UDP"}]),
        vec![endpoint("10.0.0.1", "a", true, true, false)],
    );
    let r = resolve([&s].into_iter(), &pods);
    assert_eq!(
        r.services[0].target_ports,
        BTreeMap::from([("http".into(), 8080), ("metrics".into(), 9090)])
    );
    // An unnamed Service port is the slice's unnamed port.
    let unnamed = slice(
        "api-1",
        "IPv4",
        json!([{"port": 5432}]),
        vec![endpoint("10.0.0.1", "a", true, true, false)],
    );
    let r = resolve([&unnamed].into_iter(), &pods);
    assert_eq!(
        r.services[0].target_ports,
        BTreeMap::from([(String::new(), 5432)])
    );
}

#[test]
fn endpoints_that_disagree_on_a_port_are_left_out() {
    // One target port per Service port for every endpoint (the proxy's
    // model): the larger group wins, the other is not sent to a port its
    // pod may not serve.
    let pods = [
        pod("a", "10.0.0.1"),
        pod("b", "10.0.0.2"),
        pod("c", "10.0.0.3"),
    ];
    let old = slice(
        "api-old",
        "IPv4",
        http(8000),
        vec![endpoint("10.0.0.3", "c", true, true, false)],
    );
    let new = slice(
        "api-new",
        "IPv4",
        http(8080),
        vec![
            endpoint("10.0.0.1", "a", true, true, false),
            endpoint("10.0.0.2", "b", true, true, false),
        ],
    );
    let r = resolve([&old, &new].into_iter(), &pods);
    assert_eq!(ips(&r), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(r.services[0].target_ports["http"], 8080);
    assert_eq!(r.port_mismatch, 1);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("EndpointSlice shop/api-old: endpoint 10.0.0.3"))
    );
}

#[test]
fn address_types_and_malformed_slices() {
    let pods = [pod("a", "fd00::1"), pod("b", "10.0.0.2")];
    let v6 = slice(
        "api-v6",
        "IPv6",
        http(8080),
        vec![endpoint("fd00:0:0:0:0:0:0:1", "a", true, true, false)],
    );
    let fqdn = slice(
        "api-dns",
        "FQDN",
        http(8080),
        vec![json!({"addresses": ["db.example.com"]})],
    );
    let broken = json!({"metadata": {"name": "api-x", "namespace": "shop",
                                     "labels": {"kubernetes.io/service-name": "api"}},
                        "addressType": "IPv4", "ports": "http",
                        "endpoints": [{"addresses": ["not-an-ip"]}, {"addresses": []}, 7,
                                      {"addresses": ["10.0.0.2"], "conditions": {"ready": "yes"}}]});
    // No service-name label: no Service's slice.
    let unowned = json!({"metadata": {"name": "x", "namespace": "shop"}, "addressType": "IPv4",
                         "endpoints": [{"addresses": ["10.0.0.2"]}]});
    // IPv6 written in full is the pod's address.
    let r = resolve([&v6, &fqdn, &unowned].into_iter(), &pods);
    assert_eq!(ips(&r), ["fd00::1"]);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("EndpointSlice shop/api-dns: addressType FQDN is not used"))
    );
    // Malformed endpoints are skipped and named, never a panic; a
    // non-boolean condition is unknown, so ready.
    let r = resolve([&broken].into_iter(), &pods);
    assert_eq!(ips(&r), ["10.0.0.2"]);
    assert_eq!(
        r.warnings
            .iter()
            .filter(|w| w.contains("api-x: an endpoint without a valid address"))
            .count(),
        3
    );
}

#[test]
fn the_same_address_in_two_slices_is_one_endpoint() {
    let pods = [pod("a", "10.0.0.1")];
    let one = slice(
        "api-1",
        "IPv4",
        http(8080),
        vec![endpoint("10.0.0.1", "a", true, true, false)],
    );
    let two = slice(
        "api-2",
        "IPv4",
        http(8080),
        vec![endpoint("10.0.0.1", "a", true, true, false)],
    );
    assert_eq!(ips(&resolve([&one, &two].into_iter(), &pods)), ["10.0.0.1"]);
}
