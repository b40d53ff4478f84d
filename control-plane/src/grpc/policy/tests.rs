use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use mesh_identity::SpiffeId;
use mesh_policy::Snapshot;
use tonic::Code;

use super::*;
use crate::grpc::Peer;
use crate::grpc::discovery;
use crate::source::Source;
use crate::source::fake::Fake;

const SHOP: &str = "
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]
---
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: api}, ports: [{port: 80, targetPort: 8080}]}
";

async fn service(yaml: &str) -> (Fake, Arc<State>, Arc<Registry>, PolicyService) {
    let source = Fake::new(Fake::config(yaml));
    let state = State::new("cluster.local");
    state.start(source.clone().start().await.unwrap());
    let registry = Registry::new();
    let svc = PolicyService::new(state.clone(), registry.clone());
    (source, state, registry, svc)
}

fn watch_request(identity: Option<&str>, labels: &[(&str, &str)]) -> Request<WatchRequest> {
    let mut r = Request::new(WatchRequest {
        workload: "api-1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec!["10.0.0.7".into()],
        ports: vec![8080],
        ..Default::default()
    });
    r.extensions_mut().insert(Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        identity: identity.map(|i| SpiffeId::parse(i).unwrap()),
    });
    r
}

async fn next(stream: &mut SnapshotStream) -> PolicySnapshot {
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(Ok(s))) => s,
        other => panic!(
            "no snapshot within 5s: {:?}",
            other.map(|o| o.map(|r| r.err()))
        ),
    }
}

fn objects(s: &PolicySnapshot) -> Vec<String> {
    Snapshot::from_json(&s.snapshot_json)
        .unwrap()
        .objects
        .iter()
        .map(|o| o.object_ref().to_string())
        .collect()
}

#[tokio::test]
async fn a_proxy_gets_only_the_policy_of_its_workload() {
    let (_source, _state, _registry, svc) = service(SHOP).await;
    let response = svc
        .watch(watch_request(
            Some("spiffe://cluster.local/ns/shop/sa/api"),
            &[("app", "api")],
        ))
        .await
        .unwrap();
    let mut stream = response.into_inner();
    let first = next(&mut stream).await;
    assert_eq!(objects(&first), ["AuthorizationPolicy shop/api"]);
    assert_eq!(first.trust_domain, "cluster.local");
}

#[tokio::test]
async fn a_change_reaches_the_proxies_it_concerns() {
    let (source, _state, _registry, svc) = service(SHOP).await;
    let mut stream = svc
        .watch(watch_request(
            Some("spiffe://cluster.local/ns/shop/sa/api"),
            &[("app", "api")],
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    // Only the db policy goes away: the api proxy's share is unchanged, so
    // the next push it sees is the one after, which removes its own policy.
    source.publish(Fake::config(&SHOP.replace("name: db,", "name: db2,")));
    source.publish(Fake::config(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    ));
    let second = next(&mut stream).await;
    assert!(second.version > first.version);
    // Namespaces travel to every proxy (namespace selectors need them).
    assert_eq!(objects(&second), ["Namespace shop"]);
}

#[tokio::test]
async fn a_connected_proxy_is_a_service_endpoint_until_it_leaves() {
    let (_source, state, registry, svc) = service(SHOP).await;
    let stream = svc
        .watch(watch_request(
            Some("spiffe://cluster.local/ns/shop/sa/api"),
            &[("app", "api")],
        ))
        .await
        .unwrap()
        .into_inner();
    let view = discovery::build(&state, &registry, 1);
    let endpoints = &view.services[0].endpoints;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].ip, "10.0.0.7");
    assert_eq!(
        endpoints[0].identity,
        "spiffe://cluster.local/ns/shop/sa/api"
    );
    assert_eq!(endpoints[0].inbound_port, DEFAULT_INBOUND_PORT);

    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !registry.workloads().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still registered after 5s"
        );
        let mut changes = registry.subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
    }
    assert!(
        discovery::build(&state, &registry, 2).services[0]
            .endpoints
            .is_empty()
    );
}

#[tokio::test]
async fn refusals() {
    let (_source, _state, registry, svc) = service(SHOP).await;
    let cases = [
        (
            watch_request(None, &[]),
            Code::Unauthenticated,
            "needs a workload certificate",
        ),
        (
            watch_request(Some("spiffe://cluster.local/ns/mesh-system/x"), &[]),
            Code::PermissionDenied,
            "not a workload identity",
        ),
        (
            {
                let mut r = watch_request(Some("spiffe://cluster.local/ns/shop/sa/api"), &[]);
                r.get_mut().ips = vec!["not-an-ip".into()];
                r
            },
            Code::InvalidArgument,
            "is not an IP address",
        ),
    ];
    for (request, code, message) in cases {
        let status = match svc.watch(request).await {
            Ok(_) => panic!("accepted; expected {code:?}"),
            Err(s) => s,
        };
        assert_eq!(status.code(), code);
        assert!(status.message().contains(message), "{}", status.message());
    }
    // A refused proxy is not an endpoint.
    assert!(registry.workloads().is_empty());
}

#[tokio::test]
async fn in_kubernetes_mode_labels_and_ips_come_from_the_pod_not_the_proxy() {
    let mut config = Fake::config(SHOP);
    config.workloads.push(Workload {
        identity: "spiffe://cluster.local/ns/shop/sa/api".into(),
        namespace: "shop".into(),
        workload: "api-1".into(),
        labels: [("app".to_owned(), "api".to_owned())].into(),
        ips: vec!["10.244.1.7".into()],
        ports: vec![9000],
        inbound_port: DEFAULT_INBOUND_PORT,
    });
    let state = State::new("cluster.local");
    state.start(Fake::new(config).start().await.unwrap());
    let registry = Registry::new();
    let svc =
        PolicyService::new(state.clone(), registry.clone()).with_workloads(Workloads::FromPods);

    // The proxy claims to be the db, at another address: ignored.
    let mut stream = svc
        .watch(watch_request(
            Some("spiffe://cluster.local/ns/shop/sa/api"),
            &[("app", "db")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        objects(&next(&mut stream).await),
        ["AuthorizationPolicy shop/api"]
    );
    assert_eq!(registry.workloads()[0].ips, ["10.244.1.7"]);
    // Listed once in discovery, though both the source and the registry know it.
    let view = discovery::build(&state, &registry, 1);
    assert_eq!(view.workloads.len(), 1);
    assert_eq!(view.services[0].endpoints.len(), 1);

    // Another service account cannot take the pod's place.
    let status = match svc
        .watch(watch_request(
            Some("spiffe://cluster.local/ns/shop/sa/web"),
            &[],
        ))
        .await
    {
        Ok(_) => panic!("accepted"),
        Err(s) => s,
    };
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("no meshed pod shop/api-1"),
        "{}",
        status.message()
    );
}

const EDGE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: mesh-system}
spec:
  gatewayClassName: palisade
  listeners:
    - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: shop-tls}]}}
---
apiVersion: v1
kind: Secret
metadata: {name: shop-tls, namespace: mesh-system}
type: kubernetes.io/tls
stringData:
  tls.crt: \"-----BEGIN CERTIFICATE-----\\nMIIBAA==\\n-----END CERTIFICATE-----\\n\"
  tls.key: \"-----BEGIN PRIVATE KEY-----\\nMIIBAA==\\n-----END PRIVATE KEY-----\\n\"
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated-tls, namespace: mesh-system}
type: kubernetes.io/tls
stringData:
  tls.crt: \"-----BEGIN CERTIFICATE-----\\nMIIBAA==\\n-----END CERTIFICATE-----\\n\"
  tls.key: \"-----BEGIN PRIVATE KEY-----\\nMIIBAA==\\n-----END PRIVATE KEY-----\\n\"
";

/// Gateways and the certificates (with their keys) they name go to the
/// ingress identity alone; a sidecar, even one in mesh-system, gets
/// neither, and the ingress gets no Secret that nothing names.
#[tokio::test]
async fn only_the_ingress_receives_the_edge_and_its_certificates() {
    let (_source, _state, _registry, svc) = service(EDGE).await;
    let svc = svc.with_ingress(vec![
        "spiffe://cluster.local/ns/mesh-system/sa/ingress".into(),
    ]);
    let mut ingress = svc
        .watch(watch_request(
            Some("spiffe://cluster.local/ns/mesh-system/sa/ingress"),
            &[("app", "ingress")],
        ))
        .await
        .unwrap()
        .into_inner();
    let got = next(&mut ingress).await;
    assert_eq!(objects(&got), ["Gateway mesh-system/edge"]);
    let names: Vec<&str> = got.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["shop-tls"]);
    assert!(got.secrets[0].key_pem.contains("PRIVATE KEY"));

    let mut sidecar = svc
        .watch(watch_request(
            Some("spiffe://cluster.local/ns/mesh-system/sa/monitoring"),
            &[("app", "ingress")],
        ))
        .await
        .unwrap()
        .into_inner();
    let got = next(&mut sidecar).await;
    assert!(objects(&got).is_empty(), "{:?}", objects(&got));
    assert!(got.secrets.is_empty());
}
