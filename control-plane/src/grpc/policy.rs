//! `Policy.Watch`: pushes to each proxy the share of the policy in force
//! that applies to its workload, and registers the workload for discovery.

use std::pin::Pin;
use std::sync::Arc;

use mesh_policy::Labels;
use mesh_proto::policy::policy_server::Policy;
use mesh_proto::policy::{PolicySnapshot, WatchRequest};
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
}

impl PolicyService {
    pub fn new(state: Arc<State>, registry: Arc<Registry>) -> Self {
        Self {
            state,
            registry,
            workloads: Workloads::Claimed,
        }
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
        tokio::spawn(async move {
            let _guard = guard;
            let mut last_json = None;
            loop {
                let current = state.borrow_and_update().clone();
                let json = current.snapshot.for_workload(&namespace, &labels).to_json();
                if last_json.as_ref() != Some(&json) {
                    let msg = PolicySnapshot {
                        version: current.version,
                        snapshot_json: json.clone(),
                        trust_domain: trust_domain.clone(),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                    metrics::counter!("mesh_policy_pushes_total").increment(1);
                    last_json = Some(json);
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

#[cfg(test)]
mod tests;
