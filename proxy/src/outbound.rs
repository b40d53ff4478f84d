//! Outbound: the app's connections leave through here, in stages: resolve
//! the destination (`resolve`), check egress policy (`authorize`), connect
//! to the peer proxy over verified mTLS (`connect`) and relay (`tcp`).

pub mod authorize;
pub mod connect;
pub mod resolve;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use self::authorize::Egress;
use self::connect::MeshConnector;
use crate::config::StaticRoute;
use crate::discovery::DiscoveryRx;
use crate::drain::Drain;
use crate::errors::{Error, RouteError};
use crate::transport::{accept, orig_dst};

/// What outbound connections share.
pub struct Outbound {
    pub connector: MeshConnector,
    pub egress: Egress,
    pub discovery: DiscoveryRx,
    pub idle_timeout: Duration,
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
        accept::serve(listener, drain, "outbound", move |app, client| {
            let this = self.clone();
            let route = route.clone();
            async move {
                let r = async {
                    let resolved = resolve::static_route(&route).await?;
                    tcp::serve(&this, app, resolved).await
                };
                failed(client, r.await);
            }
        })
        .await;
    }

    /// Serves redirected connections (transparent mode) until draining starts.
    pub async fn serve_transparent(self: Arc<Self>, listener: TcpListener, drain: Drain) {
        let own = listener.local_addr().ok();
        accept::serve(listener, drain, "outbound", move |app, client| {
            let this = self.clone();
            async move {
                let r = this.transparent(app, own).await;
                failed(client, r);
            }
        })
        .await;
    }

    async fn transparent(&self, app: TcpStream, own: Option<SocketAddr>) -> Result<(), Error> {
        let local = app
            .local_addr()
            .map_err(|_| RouteError::NoOriginalDestination)?;
        let dst = orig_dst::original_dst(&app, local.is_ipv6())
            .filter(|d| Some(*d) != own)
            .ok_or(RouteError::NoOriginalDestination)?;
        let view = self.discovery.borrow().clone();
        let resolved = resolve::transparent(view, dst)?;
        tcp::serve(self, app, resolved).await
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
