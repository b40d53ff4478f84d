//! The workloads connected to `Policy.Watch`: who they are, their labels and
//! addresses. Discovery turns them into Service endpoints. In local mode
//! with a data directory shared by several replicas, each registration is
//! also a lease the other replicas read ([`lease`]), so every replica
//! publishes the proxies connected to any of them.

pub mod lease;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_policy::Labels;
use tokio::sync::watch;

use crate::error::Error;
use lease::Leases;

/// A proxy that does not say otherwise receives mTLS on the standard port.
pub const DEFAULT_INBOUND_PORT: u32 = 4143;
/// The longest a new or expired lease of another replica goes unseen.
const MAX_LEASE_SCAN: Duration = Duration::from_secs(1);

/// One workload, as discovery publishes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Workload {
    pub identity: String,
    pub namespace: String,
    pub workload: String,
    pub labels: Labels,
    pub ips: Vec<String>,
    pub ports: Vec<u32>,
    pub inbound_port: u32,
}

#[derive(Default)]
struct Entries {
    last_id: u64,
    by_id: BTreeMap<u64, Workload>,
    /// Connected to the other replicas (their live leases).
    peers: Vec<Workload>,
}

/// The connected workloads.
pub struct Registry {
    entries: Mutex<Entries>,
    /// Bumped whenever a workload comes or goes.
    changes: watch::Sender<u64>,
    leases: Option<Leases>,
}

impl Registry {
    /// Workloads connected to this replica only.
    pub fn new() -> Arc<Self> {
        Self::with(None)
    }

    /// Workloads connected to this replica, shared with (and merged with
    /// those of) the replicas using the same lease directory; see
    /// [`Registry::follow_leases`].
    pub fn shared(leases: Leases) -> Arc<Self> {
        Self::with(Some(leases))
    }

    fn with(leases: Option<Leases>) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Entries::default()),
            changes: watch::channel(0).0,
            leases,
        })
    }

    /// Adds `workload` until the returned guard is dropped (its stream ends).
    pub fn register(self: &Arc<Self>, workload: Workload) -> Result<Registered, Error> {
        let id = {
            let mut e = self
                .entries
                .lock()
                .map_err(|_| Error::Internal("registry lock poisoned".into()))?;
            e.last_id += 1;
            let id = e.last_id;
            e.by_id.insert(id, workload.clone());
            metrics::gauge!("mesh_connected_proxies").set(e.by_id.len() as f64);
            id
        };
        self.write_lease(id, &workload);
        self.changed();
        Ok(Registered {
            registry: self.clone(),
            id,
        })
    }

    fn write_lease(&self, id: u64, workload: &Workload) {
        if let Some(leases) = &self.leases
            && let Err(e) = leases.write(id, workload)
        {
            // The proxy is served here; the other replicas do not see it
            // until a renewal succeeds.
            metrics::counter!("mesh_registration_lease_errors_total", "reason" => "write")
                .increment(1);
            tracing::warn!(workload = %workload.workload, error = %e, "cannot write the registration lease");
        }
    }

    /// The workloads connected to this replica, in order of connection.
    pub fn workloads(&self) -> Vec<Workload> {
        self.entries
            .lock()
            .map(|e| e.by_id.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The workloads connected to the other replicas (their live leases).
    pub fn peers(&self) -> Vec<Workload> {
        self.entries
            .lock()
            .map(|e| e.peers.clone())
            .unwrap_or_default()
    }

    /// Every registered workload: this replica's, then the others' that are
    /// not also connected here (a proxy that moved is listed once).
    pub fn mesh(&self) -> Vec<Workload> {
        let Ok(e) = self.entries.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Workload> = e.by_id.values().cloned().collect();
        for p in &e.peers {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    /// Changes whenever a workload comes or goes (here or, with leases, at
    /// another replica).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Renews this replica's leases and reads the others', forever. Without
    /// leases, returns at once.
    pub async fn follow_leases(self: Arc<Self>) {
        let Some(leases) = &self.leases else { return };
        let ttl = leases.ttl();
        let mut scan = tokio::time::interval((ttl / 5).min(MAX_LEASE_SCAN));
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = scan.tick() => {
                    let me = self.clone();
                    let Ok(peers) = tokio::task::spawn_blocking(move || me.leases.as_ref().map(Leases::peers)).await else {
                        continue;
                    };
                    self.set_peers(peers.unwrap_or_default());
                }
                _ = renew.tick() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let current: Vec<(u64, Workload)> = me
                            .entries
                            .lock()
                            .map(|e| e.by_id.iter().map(|(id, w)| (*id, w.clone())).collect())
                            .unwrap_or_default();
                        for (id, w) in current {
                            me.write_lease(id, &w);
                            // Left while being renewed: the guard removed
                            // the lease first, so remove the renewed one.
                            let gone = me.entries.lock().map(|e| !e.by_id.contains_key(&id)).unwrap_or(true);
                            if gone && let Some(leases) = &me.leases {
                                leases.remove(id);
                            }
                        }
                    })
                    .await;
                }
            }
        }
    }

    /// Removes this replica's leases (at shutdown: the others need not wait
    /// for them to expire).
    pub fn leave(&self) {
        if let Some(leases) = &self.leases {
            leases.remove_all();
        }
    }

    fn set_peers(&self, mut peers: Vec<Workload>) {
        // Directory order is arbitrary; a stable order keeps the view (and
        // its version) the same while nothing changes.
        peers.sort_by(|a, b| {
            (&a.namespace, &a.workload, &a.ips).cmp(&(&b.namespace, &b.workload, &b.ips))
        });
        peers.dedup();
        let changed = match self.entries.lock() {
            Ok(mut e) if e.peers != peers => {
                metrics::gauge!("mesh_peer_registrations").set(peers.len() as f64);
                e.peers = peers;
                true
            }
            _ => false,
        };
        if changed {
            self.changed();
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// Keeps a workload registered; dropping it removes the workload.
pub struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut e) = self.registry.entries.lock() {
            e.by_id.remove(&self.id);
            metrics::gauge!("mesh_connected_proxies").set(e.by_id.len() as f64);
        }
        if let Some(leases) = &self.registry.leases {
            leases.remove(self.id);
        }
        self.registry.changed();
    }
}
