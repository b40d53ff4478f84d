//! The Kubernetes source against recorded API server responses (list and
//! watch streams), replayed by `replay.rs`. No API server runs.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use mesh_kube_api::replay::Replay;

use super::replay as serve;
use super::*;

async fn start(recording: &str) -> (watch::Receiver<Update>, Arc<Replay>) {
    let (addr, replay) = serve(recording).await;
    let api = Api::plain(&format!("http://{addr}")).unwrap();
    let rx = Cluster::new(api, "cluster.local").start().await.unwrap();
    (rx, replay)
}

fn refs(config: &Config) -> BTreeSet<String> {
    config
        .snapshot
        .objects
        .iter()
        .map(|o| o.object_ref().to_string())
        .collect()
}

async fn until(rx: &mut watch::Receiver<Update>, ok: impl Fn(&Config) -> bool) -> Arc<Config> {
    let found = {
        let wait = rx.wait_for(|u| matches!(u, Update::Loaded(c) if ok(c)));
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(Ok(u)) => match &*u {
                Update::Loaded(c) => Some(c.clone()),
                Update::Failed(e) => panic!("{e}"),
            },
            _ => None,
        }
    };
    let last = format!("{:?}", *rx.borrow());
    found.unwrap_or_else(|| panic!("the source did not reach the expected view within 5s: {last}"))
}

fn file_view(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/source/kubernetes/recorded")
        .join(name);
    let l = mesh_policy::parse_yaml(name, &std::fs::read_to_string(path).unwrap()).unwrap();
    Config {
        snapshot: l.snapshot,
        services: l.services,
        secrets: l.secrets,
        workloads: Vec::new(),
        endpoints: Default::default(),
        warnings: l.warnings,
    }
}

fn sorted(mut c: Config) -> Config {
    c.snapshot
        .objects
        .sort_by_key(|o| o.object_ref().to_string());
    // Pods and EndpointSlices are the cluster's, not a folder's.
    c.workloads.clear();
    c.endpoints = Default::default();
    c
}

#[tokio::test]
async fn added_modified_deleted_and_bookmarks_end_in_the_view_a_folder_gives() {
    let (mut rx, replay) = start("watch-events.json").await;
    let end = until(&mut rx, |c| {
        let r = refs(c);
        !r.contains("AuthorizationPolicy shop/default-deny")
            && r.contains("AuthorizationPolicy shop/allow-web")
    })
    .await;
    // The same objects in a folder give exactly the same view: one parser.
    assert_eq!(
        sorted((*end).clone()),
        sorted(file_view("same-objects.yaml"))
    );
    // The watch resumed from the bookmark's resourceVersion, not from the list's.
    let requests = replay.requests();
    assert!(requests.iter().any(|r| r.ends_with("authorizationpolicies?watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=250")), "{requests:#?}");
    // Istio's CRDs are not installed here (404): counted as empty, not an error.
    assert!(requests.iter().any(|r| r.contains("security.istio.io")));
}

#[tokio::test]
async fn a_gone_watch_lists_again() {
    let (mut rx, replay) = start("watch-gone.json").await;
    // 410 as an ERROR event: relist (after-relist); 410 as the watch's HTTP
    // status: relist again (allow-web).
    let end = until(&mut rx, |c| {
        refs(c).contains("AuthorizationPolicy shop/allow-web")
    })
    .await;
    assert!(!refs(&end).contains("AuthorizationPolicy shop/after-relist"));
    let lists = replay
        .requests()
        .iter()
        .filter(|r| {
            r.as_str() == "GET /apis/security.palisade.dev/v1/authorizationpolicies?limit=500"
        })
        .count();
    assert_eq!(lists, 3);
}

#[tokio::test]
async fn running_meshed_pods_are_workloads_with_their_labels_and_ips() {
    let (rx, _replay) = start("watch-events.json").await;
    let Update::Loaded(config) = rx.borrow().clone() else {
        panic!("not loaded")
    };
    // web-1 has no proxy, db-1 has no IP yet: only api-1.
    assert_eq!(config.workloads.len(), 1);
    let w = &config.workloads[0];
    assert_eq!(w.identity, "spiffe://cluster.local/ns/shop/sa/api");
    assert_eq!(w.workload, "api-1");
    assert_eq!(w.ips, ["10.244.1.7"]);
    assert_eq!(w.labels["app"], "api");
    assert_eq!(w.ports, [8080]);
}

#[tokio::test]
async fn no_api_server_means_no_start() {
    // A port nothing listens on: fail closed, with the reason.
    let api = mesh_kube_api::replay::unreachable();
    let e = Cluster::new(api, "cluster.local")
        .with_initial_sync_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("did not list every kind in time"),
        "{e:#}"
    );
}

#[test]
fn a_bad_object_in_the_cluster_is_named_and_refused() {
    let mut objects = vec![BTreeMap::new(); KINDS.len()];
    let bad = serde_json::json!({"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "typo", "namespace": "shop"}, "spec": {"action": "PERMIT"}});
    objects[4].insert("shop/typo".to_owned(), bad);
    match translate(&objects, "cluster.local") {
        Update::Failed(e) => assert!(e.contains("AuthorizationPolicy shop/typo"), "{e}"),
        Update::Loaded(_) => panic!("accepted"),
    }
}

#[test]
fn namespaces_labelled_or_with_proxies_need_the_trust_bundle() {
    let mut objects = vec![BTreeMap::new(); KINDS.len()];
    let ns = |name: &str, label: Option<&str>| {
        let mut n = serde_json::json!({"metadata": {"name": name, "labels": {}}});
        if let Some(l) = label {
            n["metadata"]["labels"]["palisade.dev/inject"] = l.into();
        }
        n
    };
    objects[0].insert("/shop".into(), ns("shop", Some("enabled")));
    objects[0].insert("/blog".into(), ns("blog", Some("disabled")));
    objects[0].insert("/kube-system".into(), ns("kube-system", Some("enabled")));
    let pod = |ns: &str, container: &str| {
        serde_json::json!({"metadata": {"name": "p", "namespace": ns},
            "spec": {"initContainers": [{"name": container}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending"}})
    };
    // A pod labelled for injection in an unlabelled namespace, still
    // waiting for its volumes (no IP yet).
    objects[2].insert("news/p".into(), pod("news", "palisade-proxy"));
    objects[2].insert("blog/p".into(), pod("blog", "migrate"));
    let got: Vec<String> = meshed_namespaces(&objects).into_iter().collect();
    assert_eq!(got, ["news", "shop"]);
}

/// TLS Secrets and Gateways from the API server (only TLS Secrets are
/// listed: the API server filters by type) reach the view as a folder's
/// do: the Secret beside the policy, never in the snapshot; the server's
/// own fields dropped.
#[test]
fn tls_secrets_and_gateways_from_the_cluster() {
    let secret_kind = KINDS
        .iter()
        .position(|k| k.kind == "Secret")
        .expect("KINDS lists Secret");
    assert!(
        KINDS[secret_kind]
            .path
            .ends_with("fieldSelector=type%3Dkubernetes.io%2Ftls")
    );
    assert_eq!(
        with_query(KINDS[secret_kind].path, "limit=500"),
        "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Ftls&limit=500"
    );
    let gateway_kind = KINDS
        .iter()
        .position(|k| k.kind == "Gateway")
        .expect("KINDS lists Gateway");
    let mut objects = vec![BTreeMap::new(); KINDS.len()];
    let pem = |label: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!(
            "-----BEGIN {label}-----\nMIIBAA==\n-----END {label}-----\n"
        ))
    };
    objects[secret_kind].insert(
        "mesh-system/shop-tls".into(),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "shop-tls", "namespace": "mesh-system", "uid": "u1",
                         "resourceVersion": "9", "managedFields": [{"manager": "cert-manager"}]},
            "data": {"tls.crt": pem("CERTIFICATE"), "tls.key": pem("PRIVATE KEY")}
        }),
    );
    objects[gateway_kind].insert(
        "mesh-system/edge".into(),
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "mesh-system", "generation": 2},
            "spec": {"gatewayClassName": "palisade", "listeners": [{
                "name": "https", "port": 443, "protocol": "HTTPS",
                "allowedRoutes": {"namespaces": {"from": "Same"}},
                "tls": {"mode": "Terminate", "certificateRefs": [{"group": "", "kind": "Secret", "name": "shop-tls"}]}
            }]},
            "status": {"conditions": []}
        }),
    );
    // Someone else's broken TLS Secret blocks nothing: skipped, named.
    objects[secret_kind].insert(
        "other/broken".into(),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "broken", "namespace": "other"}, "data": {"tls.crt": "%%%"}}),
    );
    let Update::Loaded(config) = translate(&objects, "cluster.local") else {
        panic!("refused");
    };
    assert_eq!(
        refs(&config),
        BTreeSet::from(["Gateway mesh-system/edge".to_string()])
    );
    assert_eq!(config.secrets.len(), 1);
    assert_eq!(config.secrets[0].name, "shop-tls");
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("Secret other/broken")),
        "{:?}",
        config.warnings
    );
}

/// A ReferenceGrant from the API server (v1beta1, with the server's own
/// metadata) is policy like a file's: the cross-namespace backend it names
/// is then permitted for the route it names, and no other.
#[test]
fn reference_grants_from_the_cluster() {
    let kind = |name: &str| {
        KINDS
            .iter()
            .position(|k| k.kind == name)
            .unwrap_or_else(|| panic!("KINDS lists {name}"))
    };
    let grant_kind = kind("ReferenceGrant");
    assert_eq!(
        KINDS[grant_kind].path,
        "/apis/gateway.networking.k8s.io/v1beta1/referencegrants"
    );
    let mut objects = vec![BTreeMap::new(); KINDS.len()];
    objects[kind("HTTPRoute")].insert(
        "web/cross".into(),
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "cross", "namespace": "web", "uid": "u2", "generation": 1},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "front"}],
                     "rules": [{"backendRefs": [{"name": "frontend", "namespace": "shop", "port": 80}]}]}
        }),
    );
    objects[grant_kind].insert(
        "shop/web-to-frontend".into(),
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "web-to-frontend", "namespace": "shop", "resourceVersion": "77",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "web"}],
                     "to": [{"group": "", "kind": "Service", "name": "frontend"}]}
        }),
    );
    let Update::Loaded(config) = translate(&objects, "cluster.local") else {
        panic!("refused");
    };
    assert!(
        refs(&config).contains("ReferenceGrant shop/web-to-frontend"),
        "{:?}",
        refs(&config)
    );
    let evaluator = mesh_policy::Evaluator::compile(&config.snapshot, "cluster.local")
        .expect("the translated snapshot compiles");
    assert_eq!(
        evaluator.refused_references(std::time::SystemTime::now()),
        []
    );
    // Without the grant the same route's backend is refused.
    objects[grant_kind].clear();
    let Update::Loaded(config) = translate(&objects, "cluster.local") else {
        panic!("refused");
    };
    let evaluator = mesh_policy::Evaluator::compile(&config.snapshot, "cluster.local")
        .expect("the translated snapshot compiles");
    assert_eq!(
        evaluator
            .refused_references(std::time::SystemTime::now())
            .len(),
        1
    );
}

fn listed(config: &Config) -> &[crate::source::ServiceEndpoints] {
    match &config.endpoints {
        crate::source::Endpoints::Listed(l) => l,
        crate::source::Endpoints::Selected => panic!("the kube source lists endpoints"),
    }
}

/// EndpointSlices listed, then watched (ADDED, BOOKMARK, MODIFIED,
/// DELETED), recorded: the Service's endpoints follow them, resolved to
/// meshed Pods, and discovery serves exactly those.
#[tokio::test]
async fn endpoint_slices_give_the_services_endpoints_and_discovery_serves_them() {
    let (mut rx, replay) = start("endpoint-slices.json").await;
    // The end of the watch: api-1 is no longer ready, so the terminating
    // api-2 (still serving) takes the traffic; the FQDN slice is deleted.
    let end = until(&mut rx, |c| {
        listed(c)
            .iter()
            .any(|s| s.endpoints.iter().any(|e| e.workload == "api-2"))
            && !c.warnings.iter().any(|w| w.contains("api-fqdn"))
    })
    .await;
    let api = &listed(&end)[0];
    assert_eq!(
        (api.namespace.as_str(), api.service.as_str()),
        ("shop", "api")
    );
    // Terminating-but-serving is used only because nothing ready is left;
    // api-3 (not ready) and legacy-1 (ready, but no proxy) are not endpoints.
    assert_eq!(
        api.endpoints,
        [crate::source::ServiceEndpoint {
            ip: "10.244.1.8".into(),
            identity: "spiffe://cluster.local/ns/shop/sa/api".into(),
            workload: "api-2".into(),
            inbound_port: DEFAULT_INBOUND_PORT,
        }]
    );
    // The Service's named target port "http" is the slice's 8080.
    assert_eq!(
        api.target_ports,
        BTreeMap::from([("http".to_owned(), 8080)])
    );
    // The unmeshed address fails closed: named, with its slice.
    assert!(
        end.warnings
            .iter()
            .any(|w| w.contains("EndpointSlice shop/api-abc12")
                && w.contains("10.244.3.4 (pod legacy-1) is not a meshed pod")),
        "{:?}",
        end.warnings
    );
    // The terminating pod is an endpoint, not a workload proxies are told about.
    assert!(end.workloads.iter().all(|w| w.workload != "api-2"));
    let requests = replay.requests();
    assert!(requests.iter().any(|r| r == "GET /apis/discovery.k8s.io/v1/endpointslices?watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=300"), "{requests:#?}");

    // What the control plane then serves.
    let state = crate::state::State::new("cluster.local");
    state.start(rx);
    let view = crate::grpc::discovery::build(&state, &crate::registry::Registry::new(), 7);
    let svc = &view.services[0];
    assert_eq!((svc.name.as_str(), svc.vip.as_str()), ("api", "10.96.12.7"));
    assert_eq!(svc.ports.len(), 1);
    assert_eq!(
        (
            svc.ports[0].port,
            svc.ports[0].target_port,
            svc.ports[0].name.as_str()
        ),
        (80, 8080, "http")
    );
    let endpoints: Vec<_> = svc
        .endpoints
        .iter()
        .map(|e| (e.ip.as_str(), e.identity.as_str(), e.workload.as_str()))
        .collect();
    assert_eq!(
        endpoints,
        [(
            "10.244.1.8",
            "spiffe://cluster.local/ns/shop/sa/api",
            "api-2"
        )]
    );
}

#[test]
fn every_kind_is_readable_with_the_control_planes_rbac() {
    // deploy/20-rbac.yaml's ClusterRole must let the control plane list
    // and watch each collection it follows.
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(include_str!("../../../../deploy/20-rbac.yaml"))
            .expect("deploy/20-rbac.yaml parses");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "palisade-control-plane")
        .expect("the control plane's ClusterRole");
    let has = |v: &Value, s: &str| v.as_array().is_some_and(|a| a.iter().any(|x| x == s));
    for kind in KINDS {
        let path = kind.path.split('?').next().unwrap_or(kind.path);
        let resource = path.rsplit('/').next().unwrap_or_default();
        let group = match path.strip_prefix("/apis/") {
            Some(rest) => rest.split('/').next().unwrap_or_default(),
            None => "",
        };
        let granted = role["rules"].as_array().into_iter().flatten().any(|r| {
            has(&r["apiGroups"], group)
                && has(&r["resources"], resource)
                && has(&r["verbs"], "list")
                && has(&r["verbs"], "watch")
                && r.get("resourceNames").is_none()
        });
        assert!(
            granted,
            "no rule of deploy/20-rbac.yaml lets the control plane list and watch {group:?}/{resource}"
        );
    }
}
