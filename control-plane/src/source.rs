//! Where configuration comes from. A [`Source`] publishes complete views of
//! the mesh's configuration (policy objects, Services, workloads) on a
//! `watch` channel; the [`State`](crate::state::State) follows that channel,
//! compiles each view and keeps the last good one in force. Sources know
//! nothing about versions, proxies or gRPC.

use std::future::Future;
use std::sync::Arc;

use mesh_policy::Snapshot;
use mesh_policy::resource::{Service, TlsSecret};
use tokio::sync::watch;

use crate::registry::Workload;

#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod file;
pub mod kubernetes;

/// One complete view of the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub snapshot: Snapshot,
    /// Services (discovery, not policy).
    pub services: Vec<Service>,
    /// `kubernetes.io/tls` Secrets, for the ingress only.
    pub secrets: Vec<TlsSecret>,
    /// Workloads the source itself knows about (Kubernetes Pods). Local-mode
    /// workloads are not here: they register themselves over `Policy.Watch`.
    pub workloads: Vec<Workload>,
    /// Objects read but not used, one line each naming where they came from.
    pub warnings: Vec<String>,
}

/// What a source last saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A view that parsed completely.
    Loaded(Arc<Config>),
    /// The latest read failed; the message names the file, object and field.
    /// The last good view stays in force.
    Failed(String),
}

/// A publisher of [`Update`]s.
pub trait Source: Send + 'static {
    /// Reads the first view, then follows changes in a task of its own.
    /// Returns once the first view is on the channel, so nothing is served
    /// before the configuration has been read once.
    fn start(self) -> impl Future<Output = anyhow::Result<watch::Receiver<Update>>> + Send;
}
