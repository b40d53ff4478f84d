//! The mesh as this proxy sees it: Service VIPs with their endpoints and the
//! SPIFFE ID each must present, and every workload by IP. Streamed from
//! `Discovery.Watch`; the last view stays in force if the control plane goes away.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_identity::SpiffeId;
use mesh_policy::Labels;
use mesh_proto::discovery::DiscoveryRequest;
use mesh_proto::discovery::discovery_client::DiscoveryClient;
use tokio::sync::watch;
use tonic::transport::Channel;

/// A meshed workload.
#[derive(Debug, Clone)]
pub struct KnownWorkload {
    pub identity: SpiffeId,
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub inbound_port: u16,
}

/// One endpoint of a Service.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The endpoint proxy's inbound address.
    pub proxy: SocketAddr,
    pub identity: SpiffeId,
}

/// A Service port.
#[derive(Debug)]
pub struct ServiceTarget {
    pub name: String,
    pub namespace: String,
    pub target_port: u16,
    /// The Service port's name (empty when unnamed): an Ingress backend may
    /// name the port instead of numbering it.
    pub port_name: String,
    pub endpoints: Vec<Endpoint>,
    next: AtomicUsize,
}

impl ServiceTarget {
    pub fn new(name: &str, namespace: &str, target_port: u16, endpoints: Vec<Endpoint>) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            target_port,
            port_name: String::new(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// Round-robin over the endpoints, starting after the last one used.
    pub fn endpoints_from_next(&self) -> impl Iterator<Item = &Endpoint> {
        let n = self.endpoints.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        self.endpoints.iter().cycle().skip(start).take(n)
    }
}

/// The whole view.
#[derive(Debug, Default)]
pub struct DiscoveryView {
    pub version: u64,
    /// The CA generation the control plane has in force (empty from an
    /// older control plane).
    pub ca_generation: String,
    pub services: HashMap<SocketAddr, ServiceTarget>,
    pub workloads: HashMap<IpAddr, KnownWorkload>,
}

pub type DiscoveryRx = watch::Receiver<Arc<DiscoveryView>>;

/// Where an outbound connection goes.
pub enum Destination<'a> {
    Service(&'a ServiceTarget),
    Workload(IpAddr, &'a KnownWorkload),
    /// Outside the mesh.
    External,
}

impl DiscoveryView {
    pub fn resolve(&self, dst: SocketAddr) -> Destination<'_> {
        if let Some(s) = self.services.get(&dst) {
            return Destination::Service(s);
        }
        match self.workloads.get(&dst.ip()) {
            Some(w) => Destination::Workload(dst.ip(), w),
            None => Destination::External,
        }
    }

    /// The workload at `ip`, if it is the one `identity` says (for plaintext
    /// callers, any workload at that IP).
    pub fn source(&self, ip: IpAddr, identity: Option<&SpiffeId>) -> Option<&KnownWorkload> {
        let w = self.workloads.get(&ip)?;
        match identity {
            Some(id) if *id != w.identity => None,
            _ => Some(w),
        }
    }
}

fn to_view(msg: mesh_proto::discovery::DiscoverySnapshot) -> DiscoveryView {
    let mut view = DiscoveryView {
        version: msg.version,
        ca_generation: msg.ca_generation,
        ..Default::default()
    };
    for w in msg.workloads {
        let Ok(identity) = SpiffeId::parse(&w.identity) else {
            continue;
        };
        let known = KnownWorkload {
            identity,
            namespace: w.namespace,
            name: w.name,
            labels: w.labels.into_iter().collect(),
            inbound_port: u16::try_from(w.inbound_port).unwrap_or(0),
        };
        for ip in w.ips.iter().filter_map(|i| i.parse::<IpAddr>().ok()) {
            view.workloads.insert(ip, known.clone());
        }
    }
    for s in msg.services {
        let Ok(vip) = s.vip.parse::<IpAddr>() else {
            continue;
        };
        let endpoints: Vec<Endpoint> = s
            .endpoints
            .iter()
            .filter_map(|e| {
                Some(Endpoint {
                    proxy: SocketAddr::new(e.ip.parse().ok()?, u16::try_from(e.inbound_port).ok()?),
                    identity: SpiffeId::parse(&e.identity).ok()?,
                })
            })
            .collect();
        for p in &s.ports {
            let (Ok(port), Ok(target_port)) = (u16::try_from(p.port), u16::try_from(p.target_port))
            else {
                continue;
            };
            view.services.insert(
                SocketAddr::new(vip, port),
                ServiceTarget {
                    name: s.name.clone(),
                    namespace: s.namespace.clone(),
                    target_port,
                    port_name: p.name.clone(),
                    endpoints: endpoints.clone(),
                    next: AtomicUsize::new(0),
                },
            );
        }
    }
    view
}

/// Keeps the view current forever; the last view stays in force while the
/// stream is down.
pub async fn run_watch(channel: Channel, tx: watch::Sender<Arc<DiscoveryView>>) {
    let client = DiscoveryClient::new(channel);
    let open = || {
        let mut client = client.clone();
        async move { client.watch(DiscoveryRequest {}).await }
    };
    crate::control::watch::run("discovery", open, |msg| {
        let view = to_view(msg);
        tracing::debug!(
            version = view.version,
            services = view.services.len(),
            workloads = view.workloads.len(),
            "discovery updated"
        );
        tx.send_replace(Arc::new(view));
    })
    .await;
}
