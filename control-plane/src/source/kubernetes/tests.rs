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
        warnings: l.warnings,
    }
}

fn sorted(mut c: Config) -> Config {
    c.snapshot
        .objects
        .sort_by_key(|o| o.object_ref().to_string());
    c.workloads.clear();
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
