//! Outbound: the app's connections leave through here, in stages: resolve
//! the destination (`resolve`), detect the protocol, then HTTP goes request
//! by request over the pooled HTTP/2 connections to peer proxies (`http`)
//! and anything else as one mTLS connection per app connection (`tcp`);
//! egress policy (`authorize`) is checked for every destination before
//! anything is sent, and peers are reached over verified mTLS (`connect`).

pub mod authorize;
pub mod connect;
pub mod egress;
pub mod http;
pub mod resolve;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use self::authorize::Egress;
use self::connect::MeshConnector;
use self::resolve::Resolved;
use crate::access::AccessLog;
use crate::config::StaticRoute;
use crate::discovery::DiscoveryRx;
use crate::drain::Drain;
use crate::errors::{Error, RouteError};
use crate::http::pool::MeshPool;
use crate::http::server::{Limits, Version};
use crate::transport::detect::{self, Protocol, Rewind};
use crate::transport::{accept, orig_dst};

/// What outbound connections share.
pub struct Outbound {
    pub connector: Arc<MeshConnector>,
    pub pool: MeshPool,
    pub egress: Egress,
    /// EgressPolicy's resolver and host labels.
    pub gate: Arc<egress::Gate>,
    pub discovery: DiscoveryRx,
    pub idle_timeout: Duration,
    pub detect_timeout: Duration,
    pub http: Limits,
    pub access: Arc<AccessLog>,
    /// Target ports relayed opaque without detection (`--opaque-ports`).
    pub opaque_ports: std::collections::HashSet<u16>,
    /// Retry budgets by backend Service (`ns/name:port`), for routed requests.
    pub budgets: crate::http::retry::Budgets,
    /// Latency and health of the endpoints requests go to.
    pub balancer: Arc<crate::http::balance::Balancer>,
}

impl Outbound {
    /// Serves a static route until draining starts.
    pub async fn serve_route(
        self: Arc<Self>,
        route: StaticRoute,
        listener: TcpListener,
        drain: Drain,
    ) {
        let route = Arc::new(route);
        let d = drain.clone();
        accept::serve(listener, d, "outbound", move |app, client| {
            let this = self.clone();
            let route = route.clone();
            let drain = drain.clone();
            async move {
                let r = async {
                    let resolved = Arc::new(resolve::static_route(&route).await?);
                    this.clone()
                        .dispatch(app, client, http::Dest::Route(resolved), drain)
                        .await
                };
                failed(client, r.await);
            }
        })
        .await;
    }

    /// Serves a `--service-route` until draining starts: each connection is
    /// one to the Service's VIP, as if redirected.
    pub async fn serve_service_route(
        self: Arc<Self>,
        route: crate::config::ServiceRoute,
        listener: TcpListener,
        drain: Drain,
    ) {
        let route = Arc::new(route);
        let d = drain.clone();
        accept::serve(listener, d, "outbound", move |app, client| {
            let this = self.clone();
            let route = route.clone();
            let drain = drain.clone();
            async move {
                let vip = this
                    .discovery
                    .borrow()
                    .services
                    .iter()
                    .find(|(vip, s)| {
                        vip.port() == route.port
                            && s.name == route.name
                            && s.namespace == route.namespace
                    })
                    .map(|(vip, _)| *vip);
                let r = match vip {
                    Some(vip) => {
                        this.clone()
                            .dispatch(app, client, http::Dest::Transparent(vip), drain)
                            .await
                    }
                    None => Err(RouteError::NoEndpoints(format!(
                        "{}/{} port {} (not in discovery)",
                        route.namespace, route.name, route.port
                    ))
                    .into()),
                };
                failed(client, r);
            }
        })
        .await;
    }

    /// Serves redirected connections (transparent mode) until draining starts.
    /// `--egress-route`: every connection leaves the mesh to `dst`.
    pub async fn serve_egress_route(
        self: Arc<Self>,
        dst: SocketAddr,
        listener: TcpListener,
        drain: Drain,
    ) {
        let d = drain.clone();
        accept::serve(listener, d, "outbound", move |app, client| {
            let this = self.clone();
            async move {
                failed(client, egress::serve(&this, app, dst).await);
            }
        })
        .await;
    }

    pub async fn serve_transparent(self: Arc<Self>, listener: TcpListener, drain: Drain) {
        let own = listener.local_addr().ok();
        let d = drain.clone();
        accept::serve(listener, d, "outbound", move |app, client| {
            let this = self.clone();
            let drain = drain.clone();
            async move {
                let r = this.transparent(app, client, own, drain).await;
                failed(client, r);
            }
        })
        .await;
    }

    async fn transparent(
        self: Arc<Self>,
        app: TcpStream,
        client: SocketAddr,
        own: Option<SocketAddr>,
        drain: Drain,
    ) -> Result<(), Error> {
        let local = app
            .local_addr()
            .map_err(|_| RouteError::NoOriginalDestination)?;
        let dst = orig_dst::original_dst(&app, local.is_ipv6())
            .filter(|d| Some(*d) != own)
            .ok_or(RouteError::NoOriginalDestination)?;
        let view = self.discovery.borrow().clone();
        if matches!(view.resolve(dst), crate::discovery::Destination::External) {
            return egress::serve(&self, app, dst).await;
        }
        // Endpoints are chosen when the protocol is known: per request for
        // HTTP, once for opaque TCP.
        self.dispatch(app, client, http::Dest::Transparent(dst), drain)
            .await
    }

    /// Mesh HTTP goes over the pool; everything else is relayed.
    async fn dispatch(
        self: Arc<Self>,
        mut app: TcpStream,
        client: SocketAddr,
        dest: http::Dest,
        drain: Drain,
    ) -> Result<(), Error> {
        let opaque = match &dest {
            http::Dest::Route(r) => match &**r {
                Resolved::Mesh { target_port, .. } => self.opaque_ports.contains(target_port),
                Resolved::External(_) => true,
            },
            http::Dest::Transparent(dst) => self.opaque_ports.contains(&dst.port()),
        };
        let (protocol, prefix) = if opaque {
            (Protocol::Opaque, Vec::new())
        } else {
            match detect::detect(&mut app, self.detect_timeout).await {
                Ok(v) => v,
                Err(_) => return Ok(()),
            }
        };
        let app = Rewind::new(prefix, app);
        let version = match protocol {
            Protocol::Http1 => Version::Http1,
            Protocol::Http2 => Version::Http2,
            Protocol::Opaque => {
                let resolved = match &dest {
                    http::Dest::Route(r) => r.clone(),
                    http::Dest::Transparent(dst) => {
                        Arc::new(resolve::transparent(self.discovery.borrow().clone(), *dst)?)
                    }
                };
                return tcp::serve(&self, app, &resolved).await;
            }
        };
        metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "true")
            .increment(1);
        http::serve(self, app, version, dest, client, &drain).await;
        Ok(())
    }
}

/// Counts and logs a failed outbound connection.
fn failed(client: SocketAddr, r: Result<(), Error>) {
    if let Err(e) = r {
        let reason = e.reason();
        metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "outbound", "reason" => reason).increment(1);
        tracing::warn!(%client, reason, error = %e, "outbound connection failed");
    }
}
