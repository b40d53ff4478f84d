//! Where an outbound connection goes. A static route names its peer proxy and
//! SPIFFE ID; a redirected connection (transparent mode) is resolved by its
//! original destination: a Service VIP to its endpoints, a meshed pod IP to
//! that pod's proxy, anything else to the address itself, outside the mesh.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_identity::SpiffeId;
use mesh_policy::BackendPort;

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

impl crate::http::balance::Endpoint for MeshEndpoint {
    fn address(&self) -> SocketAddr {
        self.dst
    }
}

/// The Service a connection was for (routes attach to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
    /// The Service port the client called.
    pub port: u16,
}

/// A resolved destination.
pub enum Resolved {
    /// Inside the mesh: endpoints in the order to try them.
    Mesh {
        endpoints: Vec<MeshEndpoint>,
        target_port: u16,
        view: Arc<DiscoveryView>,
        /// When the destination was a Service VIP.
        service: Option<ServiceKey>,
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
        service: None,
    })
}

/// The endpoints of a Service port, by name: a route's backend.
pub fn service(
    view: Arc<DiscoveryView>,
    namespace: &str,
    name: &str,
    port: &BackendPort,
) -> Result<Resolved, Error> {
    // Services are keyed by VIP; a pod has few enough that a scan is cheap.
    let vip = view
        .services
        .iter()
        .find(|(vip, s)| {
            s.name == name
                && s.namespace == namespace
                && match port {
                    BackendPort::Number(n) => vip.port() == *n,
                    BackendPort::Name(n) => s.port_name == *n,
                }
        })
        .map(|(vip, _)| *vip)
        .ok_or_else(|| {
            RouteError::NoBackend(format!(
                "Service {namespace}/{name} port {port} is not known"
            ))
        })?;
    transparent(view, vip)
}

/// The Service at `dst`, if it is a Service VIP that `wanted` (namespace,
/// name) asks for; nothing is resolved or copied otherwise.
pub fn service_at(
    view: &DiscoveryView,
    dst: SocketAddr,
    wanted: impl Fn(&str, &str) -> bool,
) -> Option<ServiceKey> {
    match view.resolve(dst) {
        Destination::Service(svc) if wanted(&svc.namespace, &svc.name) => Some(ServiceKey {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            port: dst.port(),
        }),
        _ => None,
    }
}

/// A redirected connection to `dst`.
pub fn transparent(view: Arc<DiscoveryView>, dst: SocketAddr) -> Result<Resolved, Error> {
    let mut service = None;
    let (endpoints, target_port) = match view.resolve(dst) {
        Destination::Service(svc) => {
            service = Some(ServiceKey {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                port: dst.port(),
            });
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
        service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Endpoint, ServiceTarget};

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://cluster.local/ns/shop/sa/{sa}")).unwrap()
    }

    fn view() -> Arc<DiscoveryView> {
        let mut v = DiscoveryView::default();
        let eps = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|ip| Endpoint {
                proxy: format!("{ip}:4143").parse().unwrap(),
                identity: id("api"),
            })
            .collect();
        let mut api = ServiceTarget::new("api", "shop", 8080, eps);
        api.port_name = "http".into();
        v.services.insert("10.96.0.10:80".parse().unwrap(), api);
        v.workloads.insert(
            "10.0.0.3".parse().unwrap(),
            KnownWorkload {
                identity: id("db"),
                namespace: "shop".into(),
                name: "db-0".into(),
                labels: Default::default(),
                inbound_port: 4143,
            },
        );
        Arc::new(v)
    }

    fn first_proxy(r: &Resolved) -> SocketAddr {
        match r {
            Resolved::Mesh { endpoints, .. } => endpoints[0].proxy,
            Resolved::External(a) => *a,
        }
    }

    // A Service VIP goes to its endpoints at the target port, each call
    // starting at the next endpoint, with the others behind it for failover.
    #[test]
    fn service_vips_round_robin_with_failover_order() {
        let v = view();
        let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let a = transparent(v.clone(), vip).unwrap();
        let b = transparent(v.clone(), vip).unwrap();
        assert_ne!(first_proxy(&a), first_proxy(&b));
        let Resolved::Mesh {
            endpoints,
            target_port,
            ..
        } = a
        else {
            panic!("mesh")
        };
        assert_eq!(target_port, 8080);
        assert_eq!(endpoints.len(), 2);
        assert!(
            endpoints
                .iter()
                .all(|e| e.dst.port() == 8080 && e.identity == id("api"))
        );
    }

    // A meshed pod IP goes to that pod's proxy and must present its identity;
    // anything else leaves the mesh.
    #[test]
    fn pods_and_external_addresses() {
        let v = view();
        let r = transparent(v.clone(), "10.0.0.3:5432".parse().unwrap()).unwrap();
        let Resolved::Mesh {
            endpoints,
            target_port,
            ..
        } = r
        else {
            panic!("mesh")
        };
        assert_eq!(target_port, 5432);
        assert_eq!(endpoints[0].proxy, "10.0.0.3:4143".parse().unwrap());
        assert_eq!(endpoints[0].identity, id("db"));
        let ext: SocketAddr = "203.0.113.7:443".parse().unwrap();
        assert!(matches!(transparent(v, ext).unwrap(), Resolved::External(a) if a == ext));
    }

    // Only a Service the caller wants (one with routes) is named.
    #[test]
    fn services_at_a_vip_when_wanted() {
        let v = view();
        let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let key = service_at(&v, vip, |ns, name| (ns, name) == ("shop", "api")).unwrap();
        assert_eq!((key.name.as_str(), key.port), ("api", 80));
        assert!(service_at(&v, vip, |_, _| false).is_none());
        assert!(service_at(&v, "10.0.0.3:5432".parse().unwrap(), |_, _| true).is_none());
    }

    // A route's backend is found by Service name and port, the port by its
    // number or (an Ingress `port.name`) by the Service port's name.
    #[test]
    fn backends_by_name() {
        let v = view();
        for port in [BackendPort::Number(80), BackendPort::Name("http".into())] {
            let r = service(v.clone(), "shop", "api", &port).unwrap();
            let Resolved::Mesh {
                target_port,
                service: Some(key),
                ..
            } = r
            else {
                panic!("mesh")
            };
            assert_eq!(
                (target_port, key.name.as_str(), key.port),
                (8080, "api", 80)
            );
        }
        for port in [BackendPort::Number(81), BackendPort::Name("grpc".into())] {
            let e = service(v.clone(), "shop", "api", &port).err().unwrap();
            assert_eq!(e.reason(), "no_backend");
        }
    }

    #[test]
    fn a_service_without_endpoints_is_an_error() {
        let mut v = DiscoveryView::default();
        v.services.insert(
            "10.96.0.11:80".parse().unwrap(),
            ServiceTarget::new("empty", "shop", 80, vec![]),
        );
        let e = transparent(Arc::new(v), "10.96.0.11:80".parse().unwrap())
            .err()
            .unwrap();
        assert_eq!(e.reason(), "no_endpoints");
    }
}
