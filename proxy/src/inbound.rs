//! Inbound: terminate mTLS from peer proxies (the client must present a valid
//! SVID of our trust domain), read the target port, and deliver to the local
//! app at that port.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::drain::Drain;
use crate::relay::relay;
use crate::wire;

/// Connecting to the local app should be near-instant; a slow connect means it is down.
const DEFAULT_APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Inbound settings.
pub struct Inbound {
    pub tls: Arc<rustls::ServerConfig>,
    pub app_addr: IpAddr,
    /// Ports the proxy itself listens on; never a delivery target.
    pub own_ports: HashSet<u16>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Inbound {
    /// Accepts until draining starts. Each connection runs in its own task, so
    /// a slow or hostile client never delays others.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, drain: Drain) {
        let acceptor = TlsAcceptor::from(self.tls.clone());
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "inbound accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = drain.signaled() => return,
            };
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            let acceptor = acceptor.clone();
            let guard = drain.track();
            tokio::spawn(async move {
                this.handle(acceptor, tcp, peer).await;
                drop(guard);
            });
        }
    }

    async fn handle(&self, acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr) {
        let handshake = async {
            let mut tls = acceptor.accept(tcp).await?;
            let port = wire::read(&mut tls)
                .await
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            Ok::<_, std::io::Error>((tls, port))
        };
        let (tls, port) = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let (mut reason, message) = mesh_identity::verify::describe_handshake_error(&e);
                if reason == "io" && e.kind() == std::io::ErrorKind::InvalidData {
                    reason = "bad_preamble";
                }
                metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "inbound", "reason" => reason).increment(1);
                tracing::info!(%peer, reason, error = %message, "inbound connection refused");
                return;
            }
            Err(_) => {
                metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "inbound", "reason" => "timeout").increment(1);
                tracing::info!(%peer, "inbound handshake timed out");
                return;
            }
        };
        let client = mesh_identity::verify::peer_identity(tls.get_ref().1.peer_certificates());
        let client_id = client.as_ref().map(|c| c.as_str()).unwrap_or("-");
        if self.own_ports.contains(&port) {
            metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "loop").increment(1);
            tracing::warn!(%peer, client = client_id, port, "refused: target is one of the proxy's own ports");
            return;
        }
        metrics::counter!("mesh_tcp_connections_total", "direction" => "inbound", "tls" => "true")
            .increment(1);
        let target = SocketAddr::new(self.app_addr, port);
        let app = match tokio::time::timeout(
            DEFAULT_APP_CONNECT_TIMEOUT,
            TcpStream::connect(target),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "app_connect").increment(1);
                tracing::warn!(%peer, client = client_id, %target, error = %e, "cannot connect to the app");
                return;
            }
            Err(_) => {
                metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "app_connect_timeout").increment(1);
                tracing::warn!(%peer, client = client_id, %target, "connecting to the app timed out");
                return;
            }
        };
        let _ = app.set_nodelay(true);
        tracing::debug!(%peer, client = client_id, %target, "inbound connection open");
        match relay(tls, app, self.idle_timeout).await {
            Ok((rx, tx)) => {
                tracing::debug!(%peer, client = client_id, %target, rx, tx, "inbound connection closed")
            }
            Err(e) => {
                tracing::debug!(%peer, client = client_id, %target, error = %e, "inbound connection ended")
            }
        }
    }
}
