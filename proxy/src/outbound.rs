//! Outbound: the app's connections leave through here. A static route names
//! its peer proxy and SPIFFE ID; a redirected connection (transparent mode)
//! is resolved by its original destination: a Service VIP goes to one of its
//! endpoints, a meshed pod IP to that pod's proxy — both over mTLS, verifying
//! the identity discovery says they have — and anything else leaves as plain
//! TCP. NetworkPolicy egress of the local workload is checked first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_identity::{SpiffeId, Store};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::StaticRoute;
use crate::discovery::{Destination, DiscoveryRx, KnownWorkload};
use crate::drain::Drain;
use crate::policy::{self, LocalWorkload, PolicyRx};
use crate::relay::relay;
use crate::wire;

/// Connecting to a peer proxy: peers are in the same cluster, so a slow
/// connect means it is gone.
const DEFAULT_PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an outbound connection failed: a metric label and a message.
type Failure = (&'static str, String);

/// What outbound connections share.
pub struct Outbound {
    pub store: Arc<Store>,
    pub policy: PolicyRx,
    pub discovery: DiscoveryRx,
    pub local: Arc<LocalWorkload>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// One client config per expected peer identity (each keeps its own
    /// session-resumption cache).
    configs: Mutex<HashMap<SpiffeId, Arc<rustls::ClientConfig>>>,
}

impl Outbound {
    pub fn new(
        store: Arc<Store>,
        policy: PolicyRx,
        discovery: DiscoveryRx,
        local: Arc<LocalWorkload>,
        handshake_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            store,
            policy,
            discovery,
            local,
            handshake_timeout,
            idle_timeout,
            configs: Mutex::new(HashMap::new()),
        }
    }

    fn connector(&self, identity: &SpiffeId) -> Result<TlsConnector, Failure> {
        let mut configs = self
            .configs
            .lock()
            .map_err(|_| ("internal", "config cache poisoned".to_string()))?;
        if let Some(c) = configs.get(identity) {
            return Ok(TlsConnector::from(c.clone()));
        }
        let cfg = mesh_identity::tls::client_config(
            &self.store,
            identity.clone(),
            &[mesh_identity::tls::ALPN_TCP],
        )
        .map_err(|e| ("internal", e.to_string()))?;
        configs.insert(identity.clone(), cfg.clone());
        Ok(TlsConnector::from(cfg))
    }

    /// Opens mTLS to `peer`, verifies it is `identity`, sends the preamble.
    async fn connect_mesh(
        &self,
        peer: SocketAddr,
        identity: &SpiffeId,
        target_port: u16,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let connector = self.connector(identity)?;
        let tcp = match tokio::time::timeout(DEFAULT_PEER_CONNECT_TIMEOUT, TcpStream::connect(peer))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(("peer_connect", format!("{peer}: {e}"))),
            Err(_) => return Err(("peer_connect_timeout", format!("{peer}: timed out"))),
        };
        let _ = tcp.set_nodelay(true);
        let mut tls = match tokio::time::timeout(
            self.handshake_timeout,
            connector.connect(mesh_identity::tls::mesh_server_name(), tcp),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let (reason, message) = mesh_identity::verify::describe_handshake_error(&e);
                metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "outbound", "reason" => reason).increment(1);
                return Err(("handshake", message));
            }
            Err(_) => {
                metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "outbound", "reason" => "timeout").increment(1);
                return Err(("handshake", "timed out".into()));
            }
        };
        tls.write_all(&wire::encode(target_port))
            .await
            .map_err(|e| ("peer_write", e.to_string()))?;
        Ok(tls)
    }

    /// NetworkPolicy egress for a connection to `dst` (a workload when known).
    fn authorize(
        &self,
        dst: SocketAddr,
        workload: Option<&KnownWorkload>,
        server: &str,
    ) -> Result<(), Failure> {
        let view = self.policy.borrow().clone();
        let decision = policy::decide_outbound(
            view.as_deref(),
            &self.local,
            Some(dst.ip()),
            workload.map(|w| (w.namespace.as_str(), &w.labels)),
            dst.port(),
        )
        .ok_or(("no_policy", "no policy yet".to_string()))?;
        policy::record("outbound", &decision);
        tracing::info!(
            access = "outbound",
            %dst,
            server,
            decision = decision.label(),
            policy = %decision.decided_by,
            "tcp"
        );
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(("denied", format!("denied by {}", decision.decided_by)))
        }
    }

    /// Serves a static route until draining starts.
    pub async fn serve_route(
        self: Arc<Self>,
        route: StaticRoute,
        listener: TcpListener,
        drain: Drain,
    ) {
        let route = Arc::new(route);
        accept_loop(listener, drain, move |app, client| {
            let this = self.clone();
            let route = route.clone();
            async move {
                let peer_ip = route
                    .peer
                    .rsplit_once(':')
                    .and_then(|(h, _)| h.trim_matches(['[', ']']).parse().ok());
                let peer = match tokio::net::lookup_host(&route.peer).await.ok().and_then(|mut a| a.next()) {
                    Some(a) => a,
                    None => return Err(("peer_connect", format!("cannot resolve {}", route.peer))),
                };
                let dst = SocketAddr::new(peer_ip.unwrap_or(peer.ip()), route.target_port);
                this.authorize(dst, None, route.identity.as_str())?;
                let tls = this.connect_mesh(peer, &route.identity, route.target_port).await?;
                metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "true").increment(1);
                tracing::debug!(%client, peer = %route.peer, "outbound route open");
                let _ = relay(app, tls, this.idle_timeout).await;
                Ok(())
            }
        })
        .await;
    }

    /// Serves redirected connections (transparent mode) until draining starts.
    pub async fn serve_transparent(self: Arc<Self>, listener: TcpListener, drain: Drain) {
        let own = listener.local_addr().ok();
        accept_loop(listener, drain, move |app, client| {
            let this = self.clone();
            async move {
                let local = app.local_addr().map_err(|e| ("io", e.to_string()))?;
                let dst = crate::orig_dst::original_dst(&app, local.is_ipv6())
                    .filter(|d| Some(*d) != own)
                    .ok_or((
                        "no_original_destination",
                        format!("{client}: connection was not redirected"),
                    ))?;
                this.transparent(app, dst).await
            }
        })
        .await;
    }

    async fn transparent(&self, app: TcpStream, dst: SocketAddr) -> Result<(), Failure> {
        let view = self.discovery.borrow().clone();
        match view.resolve(dst) {
            Destination::Service(svc) => {
                if svc.endpoints.is_empty() {
                    return Err((
                        "no_endpoints",
                        format!("Service {}/{} has no endpoints", svc.namespace, svc.name),
                    ));
                }
                let mut last = ("no_endpoints", String::new());
                // Try each endpoint once: a dead one costs a connect, not the request.
                for ep in svc.endpoints_from_next() {
                    let target = SocketAddr::new(ep.proxy.ip(), svc.target_port);
                    let workload = view.workloads.get(&ep.proxy.ip());
                    self.authorize(target, workload, ep.identity.as_str())?;
                    match self
                        .connect_mesh(ep.proxy, &ep.identity, svc.target_port)
                        .await
                    {
                        Ok(tls) => {
                            metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "true").increment(1);
                            let _ = relay(app, tls, self.idle_timeout).await;
                            return Ok(());
                        }
                        Err(e) if e.0 == "peer_connect" || e.0 == "peer_connect_timeout" => {
                            // A dead endpoint: counted, and the next one is tried.
                            metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "outbound", "reason" => "endpoint_failover").increment(1);
                            tracing::info!(endpoint = %ep.proxy, error = %e.1, "endpoint unreachable; trying the next");
                            last = e;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(last)
            }
            Destination::Workload(ip, w) => {
                self.authorize(dst, Some(w), w.identity.as_str())?;
                let proxy = SocketAddr::new(ip, w.inbound_port);
                let tls = self.connect_mesh(proxy, &w.identity, dst.port()).await?;
                metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "true").increment(1);
                let _ = relay(app, tls, self.idle_timeout).await;
                Ok(())
            }
            Destination::External => {
                self.authorize(dst, None, "-")?;
                let upstream = match tokio::time::timeout(
                    DEFAULT_PEER_CONNECT_TIMEOUT,
                    TcpStream::connect(dst),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(("peer_connect", format!("{dst}: {e}"))),
                    Err(_) => return Err(("peer_connect_timeout", format!("{dst}: timed out"))),
                };
                let _ = upstream.set_nodelay(true);
                metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "false").increment(1);
                let _ = relay(app, upstream, self.idle_timeout).await;
                Ok(())
            }
        }
    }
}

/// Accepts until draining starts; each connection in its own task, failures
/// counted in `mesh_tcp_connection_errors_total{direction="outbound"}`.
async fn accept_loop<F, Fut>(listener: TcpListener, drain: Drain, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    loop {
        let (app, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "outbound accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drain.signaled() => return,
        };
        let _ = app.set_nodelay(true);
        let guard = drain.track();
        let fut = handle(app, client);
        tokio::spawn(async move {
            if let Err((reason, e)) = fut.await {
                metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "outbound", "reason" => reason).increment(1);
                tracing::warn!(%client, reason, error = %e, "outbound connection failed");
            }
            drop(guard);
        });
    }
}
