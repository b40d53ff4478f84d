//! The workloads connected to `Policy.Watch`: who they are, their labels and
//! addresses. Discovery turns them into Service endpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mesh_policy::Labels;
use tokio::sync::watch;

use crate::error::Error;

/// A proxy that does not say otherwise receives mTLS on the standard port.
pub const DEFAULT_INBOUND_PORT: u32 = 4143;

/// One workload, as discovery publishes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
}

/// The connected workloads.
pub struct Registry {
    entries: Mutex<Entries>,
    /// Bumped whenever a workload comes or goes.
    changes: watch::Sender<u64>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Entries::default()),
            changes: watch::channel(0).0,
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
            e.by_id.insert(id, workload);
            metrics::gauge!("mesh_connected_proxies").set(e.by_id.len() as f64);
            id
        };
        self.changed();
        Ok(Registered {
            registry: self.clone(),
            id,
        })
    }

    /// The connected workloads, in order of connection.
    pub fn workloads(&self) -> Vec<Workload> {
        self.entries
            .lock()
            .map(|e| e.by_id.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Changes whenever a workload comes or goes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
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
        self.registry.changed();
    }
}
