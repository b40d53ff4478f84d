//! Outbound: accept the app's plaintext connection, open mTLS to the peer
//! proxy, verify the peer is the SPIFFE ID the route names, send the target
//! port, relay.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::config::StaticRoute;
use crate::drain::Drain;
use crate::policy::{self, LocalWorkload, PolicyRx};
use crate::relay::relay;
use crate::wire;

/// Connecting to a peer proxy: peers are in the same cluster, so a slow
/// connect means it is gone.
const DEFAULT_PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One explicit outbound route.
pub struct Route {
    pub route: StaticRoute,
    pub tls: Arc<rustls::ClientConfig>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub policy: PolicyRx,
    pub local: Arc<LocalWorkload>,
}

impl Route {
    pub async fn serve(self: Arc<Self>, listener: TcpListener, drain: Drain) {
        let connector = TlsConnector::from(self.tls.clone());
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
            let this = self.clone();
            let connector = connector.clone();
            let guard = drain.track();
            tokio::spawn(async move {
                if let Err((reason, e)) = this.handle(connector, app).await {
                    metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "outbound", "reason" => reason).increment(1);
                    tracing::warn!(%client, peer = %this.route.peer, expected = %this.route.identity, reason, error = %e, "outbound connection failed");
                }
                drop(guard);
            });
        }
    }

    async fn handle(
        &self,
        connector: TlsConnector,
        app: TcpStream,
    ) -> Result<(), (&'static str, String)> {
        // NetworkPolicy egress of the local workload.
        let peer_ip = self
            .route
            .peer
            .rsplit_once(':')
            .and_then(|(h, _)| h.trim_matches(['[', ']']).parse().ok());
        let view = self.policy.borrow().clone();
        let decision = policy::decide_outbound(
            view.as_deref(),
            &self.local,
            peer_ip,
            self.route.target_port,
        )
        .ok_or(("no_policy", "no policy yet".to_string()))?;
        policy::record("outbound", &decision);
        tracing::info!(
            access = "outbound",
            dst = %self.route.peer,
            port = self.route.target_port,
            server = %self.route.identity,
            decision = decision.label(),
            policy = %decision.decided_by,
            "tcp"
        );
        if !decision.is_allowed() {
            return Err(("denied", format!("denied by {}", decision.decided_by)));
        }
        let tcp = match tokio::time::timeout(
            DEFAULT_PEER_CONNECT_TIMEOUT,
            TcpStream::connect(&self.route.peer),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(("peer_connect", e.to_string())),
            Err(_) => return Err(("peer_connect_timeout", "timed out".into())),
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
        tls.write_all(&wire::encode(self.route.target_port))
            .await
            .map_err(|e| ("peer_write", e.to_string()))?;
        metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "true")
            .increment(1);
        relay(app, tls, self.idle_timeout)
            .await
            .map(|_| ())
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    tracing::debug!(peer = %self.route.peer, "outbound connection idle, closed");
                }
                Ok(())
            })
    }
}
