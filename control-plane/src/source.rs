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
    /// Where the Services' endpoints come from.
    pub endpoints: Endpoints,
    /// Objects read but not used, one line each naming where they came from.
    pub warnings: Vec<String>,
}

/// Where the Services' endpoints come from. Either way discovery turns
/// them into the same `Service.endpoints` (grpc/discovery.rs).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub enum Endpoints {
    /// The workloads each Service's selector matches, in its namespace
    /// (local mode; a Service without a selector has none).
    #[default]
    Selected,
    /// As the source lists them, already resolved to meshed workloads
    /// (Kubernetes: the Services' EndpointSlices). A Service missing here
    /// has no endpoints.
    Listed(Vec<ServiceEndpoints>),
}

/// The endpoints of one Service, as the source lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceEndpoints {
    pub namespace: String,
    pub service: String,
    pub endpoints: Vec<ServiceEndpoint>,
    /// The target port of each Service port, by the port's name (`""` for
    /// an unnamed port). A Service port not named here keeps the Service's
    /// own (numeric) `targetPort`.
    pub target_ports: std::collections::BTreeMap<String, u16>,
}

/// One endpoint: a meshed workload's address and the identity its proxy
/// must present.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceEndpoint {
    pub ip: String,
    pub identity: String,
    pub workload: String,
    pub inbound_port: u32,
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
