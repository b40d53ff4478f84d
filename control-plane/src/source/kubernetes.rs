//! Kubernetes mode: the objects come from the API server, each kind listed
//! once and then watched (a reflector per kind: list, watch from the list's
//! resourceVersion, follow bookmarks, relist on 410 Gone). The objects are
//! turned into the [`Config`] the file source produces by the same parser
//! (`mesh_policy::parse_yaml`; JSON is YAML), so a folder and a cluster
//! holding the same objects give the same policy.
//!
//! Pods are not policy: running pods that carry the Palisade proxy become
//! the [`Workload`]s discovery publishes, with labels and IPs from the Pod.
//! Neither are EndpointSlices: they give each Service its endpoints,
//! resolved to those Pods ([`endpoint_slice`]).

pub mod ca_secret;
pub mod endpoint_slice;
pub mod trust_bundle;

/// The recorded API responses of this crate's tests.
#[cfg(test)]
pub(crate) async fn replay(
    name: &str,
) -> (std::net::SocketAddr, Arc<mesh_kube_api::replay::Replay>) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/source/kubernetes/recorded");
    mesh_kube_api::replay::serve(&dir.join(name)).await
}

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::watch;

pub use mesh_kube_api::{Api, ApiError};

use super::{Config, Source, Update};
use crate::registry::{DEFAULT_INBOUND_PORT, Workload};

/// After a failed list or watch, wait this long before the next try: the
/// API server may be restarting; retrying at once would add to its load.
const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// The API server ends a watch after this; a new one continues from the
/// last resourceVersion seen, so nothing is missed.
const DEFAULT_WATCH_SECONDS: u32 = 300;
/// Objects per list page.
const LIST_PAGE: u32 = 500;
/// How long start-up waits for every kind's first list. Without it nothing
/// is served (fail closed); the kubelet restarts a control plane that never
/// becomes ready.
pub const DEFAULT_INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// The proxy container the injector adds; a pod without it is not meshed.
const PROXY_CONTAINER: &str = "palisade-proxy";
/// The namespace label that turns injection on (docs/kubernetes.md).
const INJECT_LABEL: &str = "palisade.dev/inject";
/// Never injected, so never given a trust bundle by the control plane.
const NEVER_MESHED: [&str; 2] = ["kube-system", "mesh-system"];

/// One kind the control plane follows.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The collection path, e.g. `/api/v1/pods`.
    pub path: &'static str,
}

/// What the control plane reads. Kinds whose CRDs are not installed
/// (Istio's groups, say) answer 404 and count as empty.
pub const KINDS: [Kind; 21] = [
    Kind {
        api_version: "v1",
        kind: "Namespace",
        path: "/api/v1/namespaces",
    },
    Kind {
        api_version: "v1",
        kind: "Service",
        path: "/api/v1/services",
    },
    Kind {
        api_version: "v1",
        kind: "Pod",
        path: "/api/v1/pods",
    },
    Kind {
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        path: "/apis/networking.k8s.io/v1/networkpolicies",
    },
    Kind {
        api_version: "security.palisade.dev/v1",
        kind: "AuthorizationPolicy",
        path: "/apis/security.palisade.dev/v1/authorizationpolicies",
    },
    Kind {
        api_version: "security.palisade.dev/v1",
        kind: "PeerAuthentication",
        path: "/apis/security.palisade.dev/v1/peerauthentications",
    },
    Kind {
        api_version: "security.istio.io/v1",
        kind: "AuthorizationPolicy",
        path: "/apis/security.istio.io/v1/authorizationpolicies",
    },
    Kind {
        api_version: "security.istio.io/v1",
        kind: "PeerAuthentication",
        path: "/apis/security.istio.io/v1/peerauthentications",
    },
    // Routes and rate limits, read as a folder's are.
    Kind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "HTTPRoute",
        path: "/apis/gateway.networking.k8s.io/v1/httproutes",
    },
    Kind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "GRPCRoute",
        path: "/apis/gateway.networking.k8s.io/v1/grpcroutes",
    },
    Kind {
        api_version: "policy.palisade.dev/v1alpha1",
        kind: "RateLimitPolicy",
        path: "/apis/policy.palisade.dev/v1alpha1/ratelimitpolicies",
    },
    Kind {
        api_version: "policy.palisade.dev/v1alpha1",
        kind: "EgressPolicy",
        path: "/apis/policy.palisade.dev/v1alpha1/egresspolicies",
    },
    // What the control plane watches the flows for, and the quarantines an
    // operator wrote (docs/visibility.md).
    Kind {
        api_version: "policy.palisade.dev/v1alpha1",
        kind: "AnomalyRule",
        path: "/apis/policy.palisade.dev/v1alpha1/anomalyrules",
    },
    Kind {
        api_version: "policy.palisade.dev/v1alpha1",
        kind: "Quarantine",
        path: "/apis/policy.palisade.dev/v1alpha1/quarantines",
    },
    // Istio's egress control, mapped onto EgressPolicy (docs/egress.md).
    Kind {
        api_version: "networking.istio.io/v1",
        kind: "ServiceEntry",
        path: "/apis/networking.istio.io/v1/serviceentries",
    },
    Kind {
        api_version: "networking.istio.io/v1",
        kind: "Sidecar",
        path: "/apis/networking.istio.io/v1/sidecars",
    },
    // The edge: served by the ingress (class palisade).
    Kind {
        api_version: "gateway.networking.k8s.io/v1",
        kind: "Gateway",
        path: "/apis/gateway.networking.k8s.io/v1/gateways",
    },
    Kind {
        api_version: "networking.k8s.io/v1",
        kind: "Ingress",
        path: "/apis/networking.k8s.io/v1/ingresses",
    },
    // Which references across namespaces (route backends, Gateway
    // certificates) the target namespace's owner allows.
    Kind {
        api_version: "gateway.networking.k8s.io/v1beta1",
        kind: "ReferenceGrant",
        path: "/apis/gateway.networking.k8s.io/v1beta1/referencegrants",
    },
    // Their certificates: TLS Secrets only (the API server filters by
    // type); they go to the ingress identity alone, never into policy.
    Kind {
        api_version: "v1",
        kind: "Secret",
        path: "/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Ftls",
    },
    // The Services' endpoints (discovery, not policy).
    Kind {
        api_version: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        path: "/apis/discovery.k8s.io/v1/endpointslices",
    },
];

/// `path` with more query parameters.
fn with_query(path: &str, params: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{params}")
}

/// The API server as a source.
pub struct Cluster {
    api: Api,
    trust_domain: String,
    initial_sync_timeout: Duration,
    namespaces: watch::Sender<BTreeSet<String>>,
}

impl Cluster {
    pub fn new(api: Api, trust_domain: &str) -> Self {
        Self {
            api,
            trust_domain: trust_domain.to_owned(),
            initial_sync_timeout: DEFAULT_INITIAL_SYNC_TIMEOUT,
            namespaces: watch::channel(BTreeSet::new()).0,
        }
    }

    /// The namespaces that need the trust bundle: labelled for injection,
    /// or holding a pod with the Palisade proxy (in any phase: a pod waits
    /// for the ConfigMap before it gets an IP).
    pub fn meshed_namespaces(&self) -> watch::Receiver<BTreeSet<String>> {
        self.namespaces.subscribe()
    }

    pub fn with_initial_sync_timeout(mut self, t: Duration) -> Self {
        self.initial_sync_timeout = t;
        self
    }
}

/// Every kind's objects by `namespace/name`, and which kinds have listed.
#[derive(Default)]
struct Store {
    objects: Vec<BTreeMap<String, Value>>,
    synced: Vec<bool>,
}

struct Shared {
    store: Mutex<Store>,
    tx: watch::Sender<Option<Update>>,
    namespaces: watch::Sender<BTreeSet<String>>,
    trust_domain: String,
}

impl Shared {
    /// Publishes the whole view, once every kind has listed.
    fn publish(&self) {
        let Ok(store) = self.store.lock() else {
            return;
        };
        if !store.synced.iter().all(|s| *s) {
            return;
        }
        let update = translate(&store.objects, &self.trust_domain);
        let namespaces = meshed_namespaces(&store.objects);
        drop(store);
        self.tx.send_replace(Some(update));
        self.namespaces.send_if_modified(|n| {
            let changed = *n != namespaces;
            *n = namespaces;
            changed
        });
    }

    fn update(&self, kind: usize, change: impl FnOnce(&mut BTreeMap<String, Value>)) {
        if let Ok(mut store) = self.store.lock() {
            change(&mut store.objects[kind]);
        }
        self.publish();
    }
}

/// The stored objects (index = [`KINDS`] index) as the source's view.
pub fn translate(objects: &[BTreeMap<String, Value>], trust_domain: &str) -> Update {
    let mut text = String::new();
    let mut workloads = Vec::new();
    let mut secrets = Vec::new();
    let mut secret_warnings = Vec::new();
    let mut pods = Vec::new();
    let mut slices = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        for object in objects.get(i).into_iter().flat_map(BTreeMap::values) {
            if kind.kind == "Pod" {
                if let Some(pod) = meshed_pod(object, trust_domain) {
                    if !terminating(object) {
                        workloads.push(pod.clone());
                    }
                    pods.push(pod);
                }
                continue;
            }
            if kind.kind == "EndpointSlice" {
                slices.push(object);
                continue;
            }
            if kind.kind == "Secret" {
                // Any namespace's TLS Secret is listed; one that does not
                // parse is skipped with a warning naming it (never its
                // data), and blocks nothing else.
                match mesh_policy::parse_yaml("<kubernetes>", &clean(object).to_string()) {
                    Ok(l) => secrets.extend(l.secrets),
                    Err(e) => secret_warnings.push(format!("{e}; the Secret is ignored")),
                }
                continue;
            }
            // One object per document, JSON being YAML: parse_yaml then
            // reads exactly what it reads from a file.
            text.push_str("---\n");
            text.push_str(&clean(object).to_string());
            text.push('\n');
        }
    }
    let endpoints = endpoint_slice::resolve(slices.into_iter(), &pods);
    for (reason, n) in [
        ("unmeshed", endpoints.unmeshed),
        ("port_mismatch", endpoints.port_mismatch),
    ] {
        metrics::gauge!("mesh_endpointslice_endpoints_dropped", "reason" => reason).set(n as f64);
    }
    match mesh_policy::parse_yaml("<kubernetes>", &text) {
        Ok(l) => Update::Loaded(Arc::new(Config {
            snapshot: l.snapshot,
            services: l.services,
            secrets,
            workloads,
            endpoints: super::Endpoints::Listed(endpoints.services),
            warnings: l
                .warnings
                .into_iter()
                .chain(secret_warnings)
                .chain(endpoints.warnings)
                .collect(),
        })),
        Err(e) => Update::Failed(e.to_string()),
    }
}

/// See [`Cluster::meshed_namespaces`].
fn meshed_namespaces(objects: &[BTreeMap<String, Value>]) -> BTreeSet<String> {
    let of = |kind: &str| {
        KINDS
            .iter()
            .position(|k| k.kind == kind)
            .and_then(|i| objects.get(i))
            .into_iter()
            .flat_map(BTreeMap::values)
    };
    let labelled = of("Namespace")
        .filter(|n| n["metadata"]["labels"][INJECT_LABEL] == "enabled")
        .filter_map(|n| n["metadata"]["name"].as_str());
    let with_proxies = of("Pod")
        .filter(|p| has_proxy(p))
        .filter_map(|p| p["metadata"]["namespace"].as_str());
    labelled
        .chain(with_proxies)
        .filter(|ns| !NEVER_MESHED.contains(ns))
        .map(str::to_owned)
        .collect()
}

fn has_proxy(pod: &Value) -> bool {
    ["initContainers", "containers"].iter().any(|k| {
        pod["spec"][*k]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == PROXY_CONTAINER))
    })
}

/// What an object says, without what the API server adds (managedFields,
/// uid, resourceVersion, status…), which the policy model does not read.
fn clean(object: &Value) -> Value {
    let meta = &object["metadata"];
    let mut m = serde_json::Map::new();
    for k in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = meta.get(k) {
            m.insert(k.to_owned(), v.clone());
        }
    }
    let mut out = serde_json::Map::new();
    for k in ["apiVersion", "kind"] {
        if let Some(v) = object.get(k) {
            out.insert(k.to_owned(), v.clone());
        }
    }
    out.insert("metadata".to_owned(), Value::Object(m));
    if object["kind"] == "Secret" {
        // A TLS Secret is its type and data.
        for k in ["type", "data"] {
            if let Some(v) = object.get(k) {
                out.insert(k.to_owned(), v.clone());
            }
        }
    }
    if let Some(spec) = object.get("spec") {
        let mut spec = spec.clone();
        if object["kind"] == "Service"
            && let Value::Object(s) = &mut spec
        {
            // Palisade reads clusterIP, ports, selector and type; the API
            // server fills in many more fields the model does not know.
            s.retain(|k, _| ["clusterIP", "ports", "selector", "type"].contains(&k.as_str()));
            if let Some(Value::Array(ports)) = s.get_mut("ports") {
                for p in ports {
                    if let Value::Object(p) = p {
                        p.retain(|k, _| {
                            ["name", "port", "targetPort", "protocol"].contains(&k.as_str())
                        });
                        // A named target port is the pods' to resolve: the
                        // EndpointSlices carry its number (endpoint_slice.rs).
                        if p.get("targetPort").is_some_and(Value::is_string) {
                            p.remove("targetPort");
                        }
                    }
                }
            }
        }
        out.insert("spec".to_owned(), spec);
    }
    Value::Object(out)
}

/// Being deleted: still a Pod (an EndpointSlice may list it as
/// terminating), no longer a workload proxies are told about.
fn terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// A running, meshed pod with an IP, as discovery sees it.
fn meshed_pod(pod: &Value, trust_domain: &str) -> Option<Workload> {
    let s = |p: &str| pod.pointer(p).and_then(Value::as_str);
    if s("/status/phase") != Some("Running") {
        return None;
    }
    let spec = pod.get("spec")?;
    if !has_proxy(pod) {
        return None;
    }
    let namespace = s("/metadata/namespace")?.to_owned();
    let sa = s("/spec/serviceAccountName").unwrap_or("default");
    let mut ips: Vec<String> = pod
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i["ip"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if ips.is_empty() {
        ips.extend(s("/status/podIP").map(str::to_owned));
    }
    if ips.is_empty() {
        return None;
    }
    let labels = pod
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let ports = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| {
            p["containerPort"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
        })
        .collect();
    let identity = mesh_identity::SpiffeId::workload(trust_domain, &namespace, sa).ok()?;
    Some(Workload {
        identity: identity.to_string(),
        namespace,
        workload: s("/metadata/name").unwrap_or_default().to_owned(),
        labels,
        ips,
        ports,
        inbound_port: DEFAULT_INBOUND_PORT,
    })
}

fn key(object: &Value) -> String {
    let s = |k: &str| object["metadata"][k].as_str().unwrap_or("");
    format!("{}/{}", s("namespace"), s("name"))
}

/// Lists every page of `kind`; returns the objects and the list's
/// resourceVersion. A kind whose CRD is not installed lists as empty.
async fn list(api: &Api, kind: &Kind) -> Result<(BTreeMap<String, Value>, String), ApiError> {
    let mut objects = BTreeMap::new();
    let mut next = String::new();
    loop {
        let mut path = with_query(kind.path, &format!("limit={LIST_PAGE}"));
        if !next.is_empty() {
            path.push_str(&format!("&continue={next}"));
        }
        let page = match api.json("GET", &path, None).await {
            Ok(p) => p,
            Err(e) if e.status() == Some(http::StatusCode::NOT_FOUND) => {
                return Ok((BTreeMap::new(), String::new()));
            }
            Err(e) => return Err(e),
        };
        for mut item in page["items"].as_array().cloned().unwrap_or_default() {
            // List items omit their kind; the kind is the collection's.
            item["apiVersion"] = Value::from(kind.api_version);
            item["kind"] = Value::from(kind.kind);
            objects.insert(key(&item), item);
        }
        next = page["metadata"]["continue"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if next.is_empty() {
            let rv = page["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            return Ok((objects, rv));
        }
    }
}

/// Why a watch stopped.
enum WatchEnd {
    /// Continue from this resourceVersion.
    Resume(String),
    /// The resourceVersion is too old (410 Gone): list again.
    Relist,
}

async fn follow_watch(
    api: &Api,
    kind: &Kind,
    index: usize,
    mut rv: String,
    shared: &Shared,
) -> Result<WatchEnd, ApiError> {
    let path = with_query(
        kind.path,
        &format!(
            "watch=1&allowWatchBookmarks=true&timeoutSeconds={DEFAULT_WATCH_SECONDS}&resourceVersion={rv}"
        ),
    );
    let mut lines = match api.lines(&path).await {
        Ok(l) => l,
        Err(e) if e.status() == Some(http::StatusCode::GONE) => return Ok(WatchEnd::Relist),
        Err(e) => return Err(e),
    };
    while let Some(line) = lines.next().await? {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(event) = serde_json::from_slice::<Value>(&line) else {
            tracing::warn!(kind = kind.kind, "unreadable watch event; listing again");
            return Ok(WatchEnd::Relist);
        };
        let mut object = event["object"].clone();
        if let Some(v) = object["metadata"]["resourceVersion"].as_str() {
            rv = v.to_owned();
        }
        match event["type"].as_str().unwrap_or("") {
            "ADDED" | "MODIFIED" => {
                object["apiVersion"] = Value::from(kind.api_version);
                object["kind"] = Value::from(kind.kind);
                shared.update(index, |m| {
                    m.insert(key(&object), object);
                });
            }
            "DELETED" => shared.update(index, |m| {
                m.remove(&key(&object));
            }),
            "BOOKMARK" => {}
            "ERROR" => {
                // A Status object; 410 means the history is gone.
                if object["code"].as_u64() == Some(410) {
                    return Ok(WatchEnd::Relist);
                }
                tracing::warn!(
                    kind = kind.kind,
                    message = object["message"].as_str().unwrap_or(""),
                    "watch error"
                );
                return Ok(WatchEnd::Relist);
            }
            other => tracing::debug!(kind = kind.kind, event = other, "watch event ignored"),
        }
    }
    Ok(WatchEnd::Resume(rv))
}

/// One kind, forever: list, watch, relist when told to.
async fn reflect(api: Api, index: usize, shared: Arc<Shared>) {
    let kind = &KINDS[index];
    loop {
        let (objects, mut rv) = match list(&api, kind).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(kind = kind.kind, error = %e, "list failed; retrying");
                tokio::time::sleep(DEFAULT_RETRY_BACKOFF).await;
                continue;
            }
        };
        if let Ok(mut store) = shared.store.lock() {
            store.objects[index] = objects;
            store.synced[index] = true;
        }
        shared.publish();
        if rv.is_empty() {
            // Not installed: look again later.
            tokio::time::sleep(DEFAULT_RETRY_BACKOFF * 30).await;
            continue;
        }
        loop {
            match follow_watch(&api, kind, index, rv.clone(), &shared).await {
                Ok(WatchEnd::Resume(next)) => rv = next,
                Ok(WatchEnd::Relist) => break,
                Err(e) => {
                    tracing::warn!(kind = kind.kind, error = %e, "watch failed; retrying");
                    tokio::time::sleep(DEFAULT_RETRY_BACKOFF).await;
                }
            }
            if shared.tx.is_closed() {
                return;
            }
        }
    }
}

impl Source for Cluster {
    async fn start(self) -> anyhow::Result<watch::Receiver<Update>> {
        let (tx, mut first) = watch::channel(None);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                objects: vec![BTreeMap::new(); KINDS.len()],
                synced: vec![false; KINDS.len()],
            }),
            tx,
            namespaces: self.namespaces.clone(),
            trust_domain: self.trust_domain.clone(),
        });
        for index in 0..KINDS.len() {
            tokio::spawn(reflect(self.api.clone(), index, shared.clone()));
        }
        tokio::time::timeout(self.initial_sync_timeout, first.wait_for(Option::is_some))
            .await
            .context("the Kubernetes API server did not list every kind in time")?
            .context("the Kubernetes source stopped")?;
        // The state follows a channel of updates; this one carries Options
        // until the first view, so it is bridged.
        let initial = first
            .borrow()
            .clone()
            .unwrap_or(Update::Failed("no view".into()));
        let (out, rx) = watch::channel(initial);
        tokio::spawn(async move {
            while first.changed().await.is_ok() {
                if let Some(u) = first.borrow_and_update().clone() {
                    out.send_replace(u);
                }
                if out.is_closed() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests;
