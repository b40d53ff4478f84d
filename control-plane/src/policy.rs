//! Policy: the watched config folder, the last good snapshot, and
//! `Policy.Watch`, which pushes to each proxy what applies to its workload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh_policy::resource::Service;
use mesh_policy::{Evaluator, Labels, Snapshot};
use mesh_proto::policy::policy_server::Policy;
use mesh_proto::policy::{PolicySnapshot, WatchRequest};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::server::Peer;

/// How often the config folder is checked. Polling a folder of a few files
/// costs microseconds, survives editors' atomic renames and ConfigMap
/// symlink swaps, and keeps changes well inside the one-second budget.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Labels a workload may register; Kubernetes pods carry far fewer.
const MAX_LABELS: usize = 64;
/// Longest label key or value accepted (Kubernetes: 253 + 63 for keys).
const MAX_LABEL_LEN: usize = 317;
const MAX_IPS: usize = 16;
/// A proxy that does not say otherwise receives mTLS on the standard port.
pub const DEFAULT_INBOUND_PORT: u32 = 4143;
/// Snapshots queued for one slow proxy before it is disconnected.
const STREAM_QUEUE: usize = 4;

/// The configuration in force.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    /// Increases with every successful load, also across restarts.
    pub version: u64,
    pub snapshot: Arc<Snapshot>,
    /// Services from the same folder (discovery).
    pub services: Arc<Vec<Service>>,
    /// Why the latest load failed (the last good snapshot stays in force).
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub loaded_at: Option<SystemTime>,
}

/// Who is connected to `Policy.Watch`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Registration {
    pub identity: String,
    pub namespace: String,
    pub workload: String,
    pub labels: Labels,
    pub ips: Vec<String>,
    pub ports: Vec<u32>,
    pub inbound_port: u32,
}

/// Shared between the loader, the service and the admin endpoint.
pub struct Policies {
    pub state: watch::Sender<Arc<PolicyState>>,
    pub registry: Mutex<BTreeMap<u64, Registration>>,
    /// Bumped whenever discovery data changes (workloads or Services).
    pub changes: watch::Sender<u64>,
    next_id: Mutex<u64>,
    trust_domain: String,
}

impl Policies {
    pub fn new(trust_domain: &str) -> Arc<Self> {
        Arc::new(Self {
            state: watch::channel(Arc::new(PolicyState::default())).0,
            registry: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
            next_id: Mutex::new(0),
            trust_domain: trust_domain.to_string(),
        })
    }

    pub fn current(&self) -> Arc<PolicyState> {
        self.state.borrow().clone()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Loads the folder; on success publishes a new version, on failure keeps
    /// the last good snapshot and records the error.
    pub fn reload(&self, dir: &Path) {
        let result = mesh_policy::load_dir(dir).and_then(|loaded| {
            // Compile once here too, so a snapshot no proxy could use is
            // refused at the source, with the file/object/field named.
            Evaluator::compile(&loaded.snapshot, &self.trust_domain).map(|_| loaded)
        });
        match result {
            Ok(loaded) => {
                let prev = self.current();
                // Milliseconds since the epoch (or one more than the last):
                // versions keep increasing across control plane restarts.
                let now_ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let version = (prev.version + 1).max(now_ms);
                for w in &loaded.warnings {
                    tracing::warn!(warning = %w, "policy object ignored");
                }
                tracing::info!(
                    version,
                    objects = loaded.snapshot.objects.len(),
                    dir = %dir.display(),
                    "policy loaded"
                );
                metrics::counter!("mesh_policy_reloads_total", "result" => "success").increment(1);
                metrics::gauge!("mesh_policy_config_valid").set(1.0);
                metrics::gauge!("mesh_policy_version").set(version as f64);
                self.state.send_replace(Arc::new(PolicyState {
                    version,
                    snapshot: Arc::new(loaded.snapshot),
                    services: Arc::new(loaded.services),
                    error: None,
                    warnings: loaded.warnings,
                    loaded_at: Some(SystemTime::now()),
                }));
                self.changed();
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(error = %message, "policy not loaded; the last good policy stays in force");
                metrics::counter!("mesh_policy_reloads_total", "result" => "error").increment(1);
                metrics::gauge!("mesh_policy_config_valid").set(0.0);
                self.state.send_modify(|s| {
                    let mut next = (**s).clone();
                    next.error = Some(message);
                    *s = Arc::new(next);
                });
            }
        }
    }
}

/// A fingerprint of the folder's YAML files: name, size, modification time
/// and inode. Any write, create, delete or rename changes it.
fn fingerprint(dir: &Path) -> Vec<(String, u64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        // Follow symlinks (ConfigMap mounts) to see the target's changes.
        if let Ok(m) = std::fs::metadata(e.path()) {
            out.push((name, m.len(), m.mtime(), m.mtime_nsec(), m.ino()));
        }
    }
    out.sort();
    out
}

/// Watches `dir` forever, reloading on every change.
pub async fn watch_dir(policies: Arc<Policies>, dir: PathBuf) {
    let mut last = None;
    loop {
        let d = dir.clone();
        let fp = tokio::task::spawn_blocking(move || fingerprint(&d))
            .await
            .unwrap_or_default();
        if last.as_ref() != Some(&fp) {
            last = Some(fp);
            let (p, d) = (policies.clone(), dir.clone());
            let _ = tokio::task::spawn_blocking(move || p.reload(&d)).await;
        }
        tokio::time::sleep(DEFAULT_POLL_INTERVAL).await;
    }
}

/// The `Policy` gRPC service.
pub struct PolicyService {
    policies: Arc<Policies>,
}

impl PolicyService {
    pub fn new(policies: Arc<Policies>) -> Self {
        Self { policies }
    }
}

type SnapshotStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<PolicySnapshot, Status>> + Send>>;

fn validate(req: &WatchRequest) -> Result<(), Status> {
    if req.labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!(
            "more than {MAX_LABELS} labels"
        )));
    }
    for (k, v) in &req.labels {
        if k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN {
            return Err(Status::invalid_argument(format!(
                "label {k:?} has an invalid length"
            )));
        }
    }
    if req.ips.len() > MAX_IPS {
        return Err(Status::invalid_argument(format!("more than {MAX_IPS} IPs")));
    }
    for ip in &req.ips {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| Status::invalid_argument(format!("{ip:?} is not an IP address")))?;
    }
    if req
        .ports
        .iter()
        .any(|p| *p == 0 || *p > u32::from(u16::MAX))
    {
        return Err(Status::invalid_argument("a port is out of range"));
    }
    if req.workload.len() > MAX_LABEL_LEN {
        return Err(Status::invalid_argument("workload name too long"));
    }
    Ok(())
}

/// Removes a registration when its stream ends.
struct Registered {
    policies: Arc<Policies>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut r) = self.policies.registry.lock() {
            r.remove(&self.id);
            metrics::gauge!("mesh_connected_proxies").set(r.len() as f64);
        }
        self.policies.changed();
    }
}

#[tonic::async_trait]
impl Policy for PolicyService {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let identity = request
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| {
                Status::unauthenticated("Policy.Watch needs a workload certificate (mTLS)")
            })?;
        let Some((ns, _sa)) = identity.namespace_and_service_account() else {
            return Err(Status::permission_denied(format!(
                "{identity} is not a workload identity"
            )));
        };
        let namespace = ns.to_string();
        let req = request.into_inner();
        validate(&req)?;
        let labels: Labels = req.labels.clone().into_iter().collect();
        let id = {
            let mut n = self
                .policies
                .next_id
                .lock()
                .map_err(|_| Status::internal("lock"))?;
            *n += 1;
            *n
        };
        {
            let mut r = self
                .policies
                .registry
                .lock()
                .map_err(|_| Status::internal("lock"))?;
            r.insert(
                id,
                Registration {
                    identity: identity.to_string(),
                    namespace: namespace.clone(),
                    workload: req.workload.clone(),
                    labels: labels.clone(),
                    ips: req.ips.clone(),
                    ports: req.ports.clone(),
                    inbound_port: if req.inbound_port == 0 {
                        DEFAULT_INBOUND_PORT
                    } else {
                        req.inbound_port
                    },
                },
            );
            metrics::gauge!("mesh_connected_proxies").set(r.len() as f64);
        }
        self.policies.changed();
        tracing::info!(identity = %identity, workload = %req.workload, "proxy connected for policy");
        let guard = Registered {
            policies: self.policies.clone(),
            id,
        };
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut state = self.policies.state.subscribe();
        let trust_domain = self.policies.trust_domain.clone();
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
