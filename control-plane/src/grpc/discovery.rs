//! `Discovery.Watch`: Services (from the source) with their endpoints and
//! every workload, built once per change and shared by all streams. A
//! Service's endpoints are the workloads its selector matches (those the
//! source knows and those registered, local mode), or the ones the source
//! lists for it (Kubernetes: EndpointSlices, resolved to meshed Pods).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mesh_proto::discovery::discovery_server::Discovery;
use mesh_proto::discovery::{
    DiscoveryRequest, DiscoverySnapshot, Endpoint, Service, ServicePort, Workload,
};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::registry::Registry;
use crate::source::Endpoints;
use crate::state::State;

/// Changes arriving within this window are pushed together: a fleet of
/// proxies starting at once causes one push per window, not one per proxy.
const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(20);
/// Snapshots queued for one slow proxy.
const STREAM_QUEUE: usize = 4;

/// Builds the view from the current Services and registry.
pub fn build(state: &State, registry: &Registry, version: u64) -> DiscoverySnapshot {
    let state = state.current();
    let mut workloads = state.workloads.to_vec();
    // In Kubernetes mode a connected proxy is also its Pod: listed once.
    let known = |w: &crate::registry::Workload| {
        state.workloads.iter().any(|s| {
            s.namespace == w.namespace && s.workload == w.workload && s.identity == w.identity
        })
    };
    // Registered here or, in local mode, at another replica.
    workloads.extend(registry.mesh().into_iter().filter(|w| !known(w)));
    let services = state
        .services
        .iter()
        .map(|s| {
            let ns = s.metadata.namespace_or_default();
            let (endpoints, target_ports) = match &*state.endpoints {
                Endpoints::Selected => (selected(s, ns, &workloads), None),
                Endpoints::Listed(listed) => {
                    let of = listed
                        .iter()
                        .find(|l| l.namespace == ns && l.service == s.metadata.name);
                    let endpoints = of
                        .into_iter()
                        .flat_map(|l| l.endpoints.iter())
                        .map(|e| Endpoint {
                            ip: e.ip.clone(),
                            identity: e.identity.clone(),
                            inbound_port: e.inbound_port,
                            workload: e.workload.clone(),
                        })
                        .collect();
                    (endpoints, of.map(|l| &l.target_ports))
                }
            };
            Service {
                name: s.metadata.name.clone(),
                namespace: ns.to_string(),
                vip: s.vip().map(|v| v.to_string()).unwrap_or_default(),
                ports: s
                    .spec
                    .ports
                    .iter()
                    .map(|p| {
                        let name = p.name.clone().unwrap_or_default();
                        // Listed endpoints say which port their pods serve
                        // (an EndpointSlice resolves named target ports).
                        let listed = target_ports.and_then(|t| t.get(&name)).copied();
                        ServicePort {
                            port: u32::from(p.port),
                            target_port: u32::from(listed.or(p.target_port).unwrap_or(p.port)),
                            name,
                        }
                    })
                    .collect(),
                endpoints,
            }
        })
        .collect();
    let workloads = workloads
        .into_iter()
        .map(|w| Workload {
            identity: w.identity,
            namespace: w.namespace,
            name: w.workload,
            labels: w.labels.into_iter().collect(),
            ips: w.ips,
            inbound_port: w.inbound_port,
        })
        .collect();
    DiscoverySnapshot {
        version,
        services,
        workloads,
        // Set by `publish`, which follows the CA.
        ca_generation: String::new(),
    }
}

/// The workloads `service`'s selector matches in its namespace.
fn selected(
    service: &mesh_policy::resource::Service,
    ns: &str,
    workloads: &[crate::registry::Workload],
) -> Vec<Endpoint> {
    // Kubernetes: a Service without a selector has no automatic endpoints.
    let Some(sel) = &service.spec.selector else {
        return Vec::new();
    };
    workloads
        .iter()
        .filter(|w| w.namespace == ns && sel.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
        .flat_map(|w| {
            w.ips.iter().map(move |ip| Endpoint {
                ip: ip.clone(),
                identity: w.identity.clone(),
                inbound_port: w.inbound_port,
                workload: w.workload.clone(),
            })
        })
        .collect()
}

/// Rebuilds the shared view after every (debounced) change.
pub async fn publish(
    state: Arc<State>,
    registry: Arc<Registry>,
    mut ca: watch::Receiver<Arc<mesh_identity::Ca>>,
    tx: watch::Sender<Arc<DiscoverySnapshot>>,
) {
    let mut policy = state.subscribe();
    let mut workloads = registry.subscribe();
    let mut version = 0u64;
    loop {
        version += 1;
        let mut snap = build(&state, &registry, version);
        snap.ca_generation = ca.borrow_and_update().generation().to_string();
        tx.send_replace(Arc::new(snap));
        tokio::select! {
            r = policy.changed() => if r.is_err() { return },
            r = workloads.changed() => if r.is_err() { return },
            r = ca.changed() => if r.is_err() { return },
        }
        tokio::time::sleep(DEFAULT_DEBOUNCE).await;
        policy.borrow_and_update();
        workloads.borrow_and_update();
    }
}

/// The `Discovery` gRPC service.
pub struct DiscoveryService {
    view: watch::Receiver<Arc<DiscoverySnapshot>>,
}

impl DiscoveryService {
    pub fn new(view: watch::Receiver<Arc<DiscoverySnapshot>>) -> Self {
        Self { view }
    }
}

type SnapshotStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<DiscoverySnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        crate::grpc::client_identity(&request, "Discovery.Watch")?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut view = self.view.clone();
        tokio::spawn(async move {
            loop {
                let snap = view.borrow_and_update().clone();
                if tx.send(Ok((*snap).clone())).await.is_err() {
                    return;
                }
                metrics::counter!("mesh_discovery_pushes_total").increment(1);
                tokio::select! {
                    r = view.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
