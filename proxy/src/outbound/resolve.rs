//! Where an outbound connection goes. A static route names its peer proxy and
//! SPIFFE ID; a redirected connection (transparent mode) is resolved by its
//! original destination: a Service VIP to its endpoints, a meshed pod IP to
//! that pod's proxy, anything else to the address itself, outside the mesh.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_identity::SpiffeId;

use crate::config::StaticRoute;
use crate::discovery::{Destination, DiscoveryView, KnownWorkload};
use crate::errors::{ConnectError, Error, RouteError};

/// One peer proxy that can serve the connection.
#[derive(Debug, Clone)]
pub struct MeshEndpoint {
    /// The peer proxy's inbound address.
    pub proxy: SocketAddr,
    /// What the peer must present.
    pub identity: SpiffeId,
    /// The workload address and port the traffic is for (egress policy).
    pub dst: SocketAddr,
}

/// A resolved destination.
pub enum Resolved {
    /// Inside the mesh: endpoints in the order to try them.
    Mesh {
        endpoints: Vec<MeshEndpoint>,
        target_port: u16,
        view: Arc<DiscoveryView>,
    },
    /// Outside the mesh: plain TCP to the address.
    External(SocketAddr),
}

impl Resolved {
    /// The workload at an endpoint, when discovery knows it.
    pub fn workload(&self, ep: &MeshEndpoint) -> Option<&KnownWorkload> {
        match self {
            Resolved::Mesh { view, .. } => view.workloads.get(&ep.proxy.ip()),
            Resolved::External(_) => None,
        }
    }
}

/// A static route: its one peer.
pub async fn static_route(route: &StaticRoute) -> Result<Resolved, Error> {
    let peer_ip = route
        .peer
        .rsplit_once(':')
        .and_then(|(h, _)| h.trim_matches(['[', ']']).parse().ok());
    let peer = tokio::net::lookup_host(&route.peer)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConnectError::Resolve(route.peer.clone()))?;
    Ok(Resolved::Mesh {
        endpoints: vec![MeshEndpoint {
            proxy: peer,
            identity: route.identity.clone(),
            dst: SocketAddr::new(peer_ip.unwrap_or(peer.ip()), route.target_port),
        }],
        target_port: route.target_port,
        view: Arc::new(DiscoveryView::default()),
    })
}

/// A redirected connection to `dst`.
pub fn transparent(view: Arc<DiscoveryView>, dst: SocketAddr) -> Result<Resolved, Error> {
    let (endpoints, target_port) = match view.resolve(dst) {
        Destination::Service(svc) => {
            if svc.endpoints.is_empty() {
                return Err(
                    RouteError::NoEndpoints(format!("{}/{}", svc.namespace, svc.name)).into(),
                );
            }
            // Round-robin start, then the others in order: a dead endpoint
            // costs a connect, not the request.
            let eps = svc
                .endpoints_from_next()
                .map(|ep| MeshEndpoint {
                    proxy: ep.proxy,
                    identity: ep.identity.clone(),
                    dst: SocketAddr::new(ep.proxy.ip(), svc.target_port),
                })
                .collect();
            (eps, svc.target_port)
        }
        Destination::Workload(ip, w) => (
            vec![MeshEndpoint {
                proxy: SocketAddr::new(ip, w.inbound_port),
                identity: w.identity.clone(),
                dst,
            }],
            dst.port(),
        ),
        Destination::External => return Ok(Resolved::External(dst)),
    };
    Ok(Resolved::Mesh {
        endpoints,
        target_port,
        view,
    })
}
