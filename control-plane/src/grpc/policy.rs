//! `Policy.Watch`: pushes to each proxy the share of the policy in force
//! that applies to its workload, and registers the workload for discovery.

use std::pin::Pin;
use std::sync::Arc;

use mesh_policy::Labels;
use mesh_proto::policy::policy_server::Policy;
use mesh_proto::policy::{PolicySnapshot, TlsSecret, WatchRequest};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::registry::{DEFAULT_INBOUND_PORT, Registry, Workload};
use crate::state::State;

/// Labels a workload may register; Kubernetes pods carry far fewer.
const MAX_LABELS: usize = 64;
/// Longest label key or value accepted (Kubernetes: 253 + 63 for keys).
const MAX_LABEL_LEN: usize = 317;
const MAX_IPS: usize = 16;
/// Snapshots queued for one slow proxy before it is disconnected.
const STREAM_QUEUE: usize = 4;

/// Where a connected workload's labels and addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workloads {
    /// As the proxy says: in local mode the operator started it with them.
    Claimed,
    /// From the source's Pod of that name and identity; the proxy's own
    /// claims are ignored (Kubernetes mode).
    FromPods,
}

/// The `Policy` gRPC service.
pub struct PolicyService {
    state: Arc<State>,
    registry: Arc<Registry>,
    workloads: Workloads,
    /// The identities that receive the edge's objects and TLS Secrets.
    ingress: Arc<Vec<String>>,
}

impl PolicyService {
    pub fn new(state: Arc<State>, registry: Arc<Registry>) -> Self {
        Self {
            state,
            registry,
            workloads: Workloads::Claimed,
            ingress: Arc::new(Vec::new()),
        }
    }

    /// The identities of the ingress (`--ingress-identity`): only they get
    /// Gateways, Ingresses and the Secrets those name.
    pub fn with_ingress(mut self, identities: Vec<String>) -> Self {
        self.ingress = Arc::new(identities);
        self
    }

    pub fn with_workloads(mut self, workloads: Workloads) -> Self {
        self.workloads = workloads;
        self
    }
}

type SnapshotStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<PolicySnapshot, Status>> + Send>>;

fn validate(req: &WatchRequest) -> Result<(), Error> {
    if req.labels.len() > MAX_LABELS {
        return Err(Error::InvalidArgument(format!(
            "more than {MAX_LABELS} labels"
        )));
    }
    for (k, v) in &req.labels {
        if k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN {
            return Err(Error::InvalidArgument(format!(
                "label {k:?} has an invalid length"
            )));
        }
    }
    if req.ips.len() > MAX_IPS {
        return Err(Error::InvalidArgument(format!("more than {MAX_IPS} IPs")));
    }
    for ip in &req.ips {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| Error::InvalidArgument(format!("{ip:?} is not an IP address")))?;
    }
    if req
        .ports
        .iter()
        .any(|p| *p == 0 || *p > u32::from(u16::MAX))
    {
        return Err(Error::InvalidArgument("a port is out of range".into()));
    }
    if req.workload.len() > MAX_LABEL_LEN {
        return Err(Error::InvalidArgument("workload name too long".into()));
    }
    Ok(())
}

#[tonic::async_trait]
impl Policy for PolicyService {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let identity = crate::grpc::client_identity(&request, "Policy.Watch")?;
        let Some((ns, _sa)) = identity.namespace_and_service_account() else {
            return Err(Error::NotAWorkload(identity.to_string()).into());
        };
        let namespace = ns.to_string();
        let req = request.into_inner();
        validate(&req)?;
        let workload = match self.workloads {
            Workloads::Claimed => Workload {
                identity: identity.to_string(),
                namespace: namespace.clone(),
                workload: req.workload.clone(),
                labels: req.labels.clone().into_iter().collect(),
                ips: req.ips.clone(),
                ports: req.ports.clone(),
                inbound_port: if req.inbound_port == 0 {
                    DEFAULT_INBOUND_PORT
                } else {
                    req.inbound_port
                },
            },
            Workloads::FromPods => self
                .state
                .current()
                .workloads
                .iter()
                .find(|w| {
                    w.namespace == namespace
                        && w.workload == req.workload
                        && w.identity == identity.as_str()
                })
                .cloned()
                .ok_or_else(|| {
                    Error::UnknownPod(format!(
                        "no meshed pod {namespace}/{} with the identity {identity} (yet)",
                        req.workload
                    ))
                })?,
        };
        let labels: Labels = workload.labels.clone();
        let guard = self.registry.register(workload)?;
        tracing::info!(identity = %identity, workload = %req.workload, "proxy connected for policy");
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut state = self.state.subscribe();
        let trust_domain = self.state.trust_domain().to_owned();
        let ingress = self.ingress.iter().any(|i| i == identity.as_str());
        if ingress {
            tracing::info!(identity = %identity, "the ingress connected: it receives the edge's objects and certificates");
        }
        tokio::spawn(async move {
            let _guard = guard;
            let mut last = None;
            loop {
                let current = state.borrow_and_update().clone();
                let (json, secrets) = if ingress {
                    let share = current.snapshot.for_gateway(&namespace, &labels);
                    let secrets = named_secrets(&share, &current.secrets);
                    (share.to_json(), secrets)
                } else {
                    (
                        current.snapshot.for_workload(&namespace, &labels).to_json(),
                        Vec::new(),
                    )
                };
                let fresh = (json, secrets);
                if last.as_ref() != Some(&fresh) {
                    let msg = PolicySnapshot {
                        version: current.version,
                        snapshot_json: fresh.0.clone(),
                        trust_domain: trust_domain.clone(),
                        secrets: fresh.1.clone(),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                    metrics::counter!("mesh_policy_pushes_total").increment(1);
                    last = Some(fresh);
                }
                tokio::select! {
                    r = state.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                }
            }
            tracing::info!(identity = %identity, "proxy disconnected from policy");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The Secrets the share's Gateways (listener certificateRefs) and
/// Ingresses (`tls[].secretName`) name, and no other.
fn named_secrets(
    share: &mesh_policy::Snapshot,
    secrets: &[mesh_policy::resource::TlsSecret],
) -> Vec<TlsSecret> {
    use mesh_policy::Object;
    let mut named: Vec<(String, String)> = Vec::new();
    for object in &share.objects {
        let ns = object.metadata().namespace_or_default().to_owned();
        match object {
            Object::Gateway(g) => named.extend(
                g.spec
                    .listeners
                    .iter()
                    .filter_map(|l| l.tls.as_ref())
                    .flat_map(|t| t.certificate_refs.iter())
                    .map(|r| {
                        (
                            r.namespace.clone().unwrap_or_else(|| ns.clone()),
                            r.name.clone(),
                        )
                    }),
            ),
            Object::Ingress(i) => named.extend(
                i.spec
                    .tls
                    .iter()
                    .filter_map(|t| t.secret_name.clone())
                    .map(|n| (ns.clone(), n)),
            ),
            _ => {}
        }
    }
    secrets
        .iter()
        .filter(|s| {
            named
                .iter()
                .any(|(ns, n)| *ns == s.namespace && *n == s.name)
        })
        .map(|s| TlsSecret {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            cert_pem: s.cert_pem.clone(),
            key_pem: s.key_pem.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
