//! Inbound: every connection to the inbound port, in stages. The TLS sniff
//! tells mesh mTLS from anything else; mesh clients are handshaken
//! (`handshake`) and identified by their SVID (`identify`); anything else is
//! a plaintext client, judged by PeerAuthentication. A peer proxy's pooled
//! `palisade/h2` connection is served request by request (`http`); an
//! opaque `palisade/tcp1` or plaintext connection is detected: HTTP is
//! authorized per request (`http`) when a rule reads HTTP fields,
//! everything else once per connection (`tcp`).

pub mod authorize;
pub mod handshake;
pub mod http;
pub mod identify;
pub mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use self::authorize::{Authorizer, Destination};
use self::identify::Client;
use crate::drain::Drain;
use crate::errors::RouteError;
use crate::http::server::{Limits, Version};
use crate::transport::detect::{self, Protocol, Rewind};
use crate::transport::{accept, orig_dst, sniff};

/// How long to wait for a client's first bytes before treating the
/// connection as opaque TCP. Clients of server-first protocols (SMTP, MySQL)
/// wait this long once per connection; HTTP clients speak at once.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Inbound settings.
pub struct Inbound {
    pub tls: Arc<rustls::ServerConfig>,
    pub app_addr: IpAddr,
    pub handshake_timeout: Duration,
    pub detect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Limits for application clients' connections.
    pub http: Limits,
    /// Limits for peer proxies' pooled connections.
    pub mesh_http: Limits,
    pub authz: Authorizer,
    pub handler: Arc<http::Handler>,
}

/// An accepted connection, identified, and the port it asks for.
struct Accepted {
    client: Client,
    dst: Destination,
    tls: bool,
}

impl Inbound {
    /// Accepts until draining starts.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, drain: Drain) {
        let acceptor = TlsAcceptor::from(self.tls.clone());
        let d = drain.clone();
        accept::serve(listener, d, "inbound", move |tcp, peer| {
            let this = self.clone();
            let acceptor = acceptor.clone();
            let drain = drain.clone();
            async move { this.handle(acceptor, tcp, peer, drain).await }
        })
        .await;
    }

    async fn handle(&self, acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr, drain: Drain) {
        let Ok(local) = tcp.local_addr() else {
            return;
        };
        let is_mesh =
            match tokio::time::timeout(self.handshake_timeout, sniff::peek_mesh(&tcp)).await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(_) => {
                    handshake::refused("timeout", peer, "client sent nothing");
                    return;
                }
            };
        // Boxed: the state of what follows (TLS, HTTP, the relay) is
        // allocated only once the client has sent its first bytes, so an
        // idle connection holds a small task.
        Box::pin(self.serve_sniffed(acceptor, tcp, peer, local, is_mesh, drain)).await;
    }

    async fn serve_sniffed(
        &self,
        acceptor: TlsAcceptor,
        tcp: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        is_mesh: bool,
        drain: Drain,
    ) {
        if is_mesh {
            let accepted = match handshake::accept(&acceptor, tcp, self.handshake_timeout).await {
                Ok(v) => v,
                Err(refused) => return refused.record(peer),
            };
            match accepted {
                handshake::Accepted::Http2(tls) => {
                    let client = Client::mesh(peer, tls.get_ref().1.peer_certificates());
                    metrics::counter!("mesh_tcp_connections_total", "direction" => "inbound", "tls" => "true").increment(1);
                    let hop = http::Hop::Mesh {
                        local_ip: local.ip(),
                    };
                    http::serve(
                        tls,
                        client,
                        hop,
                        self.handler.clone(),
                        &self.mesh_http,
                        &drain,
                    )
                    .await;
                }
                handshake::Accepted::Tcp(tls, port) => {
                    let client = Client::mesh(peer, tls.get_ref().1.peer_certificates());
                    let accepted = Accepted {
                        client,
                        dst: Destination {
                            ip: local.ip(),
                            port,
                        },
                        tls: true,
                    };
                    self.deliver(tls, accepted, drain).await;
                }
            }
            return;
        }
        // A plaintext client, or TLS that is not ours (passed through
        // opaque): redirected to us (transparent mode), so the port it
        // wanted is the original destination.
        let client = Client::plaintext(peer);
        let target = orig_dst::original_dst(&tcp, local.is_ipv6())
            .filter(|d| *d != local)
            .map(|d| d.port());
        let Some(port) = target else {
            // Decide anyway, so STRICT refusals are counted and named; an
            // allowed plaintext client still has nowhere to go.
            let dst = Destination {
                ip: local.ip(),
                port: local.port(),
            };
            if self.authz.connection(&client, dst, false).is_ok() {
                metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "no_original_destination").increment(1);
                tracing::info!(%peer, "plaintext connection without an original destination (not redirected); closed");
            }
            return;
        };
        let accepted = Accepted {
            client,
            dst: Destination {
                ip: local.ip(),
                port,
            },
            tls: false,
        };
        self.deliver(tcp, accepted, drain).await;
    }

    /// Detects the protocol and hands the connection to the stage that serves it.
    async fn deliver<S>(&self, mut stream: S, conn: Accepted, drain: Drain)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.handler.own_ports.contains(&conn.dst.port) {
            let e = RouteError::Loop(conn.dst.port);
            metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "loop").increment(1);
            tracing::warn!(peer = %conn.client.addr, client = conn.client.name(), error = %e, "refused");
            return;
        }
        let Ok((protocol, prefix)) = detect::detect(&mut stream, self.detect_timeout).await else {
            return;
        };
        let stream = Rewind::new(prefix, stream);
        let target = SocketAddr::new(self.app_addr, conn.dst.port);
        // HTTP is served request by request only when some rule reads HTTP
        // fields; otherwise every request of the connection gets the same
        // answer, so it is decided once and relayed as opaque bytes (if a
        // later policy starts reading HTTP, the revocation check closes the
        // connection and the client's next one is served per request).
        let version = match protocol {
            Protocol::Http1 => Some(Version::Http1),
            Protocol::Http2 => Some(Version::Http2),
            Protocol::Opaque => None,
        };
        if let Some(version) = version
            && self.authz.reads_http()
        {
            // A plaintext caller of a STRICT workload is refused here, as a
            // connection, not request by request.
            if conn.client.identity.is_none()
                && !self.authz.plaintext_allowed(&conn.client, conn.dst.port)
            {
                return;
            }
            let tls = if conn.tls { "true" } else { "false" };
            metrics::counter!("mesh_tcp_connections_total", "direction" => "inbound", "tls" => tls)
                .increment(1);
            let hop = http::Hop::Direct {
                dst: conn.dst,
                version,
            };
            http::serve(
                stream,
                conn.client,
                hop,
                self.handler.clone(),
                &self.http,
                &drain,
            )
            .await;
            return;
        }
        let c = tcp::Connection {
            client: conn.client,
            dst: conn.dst,
            tls: conn.tls,
            protocol,
            target,
            idle_timeout: self.idle_timeout,
        };
        tcp::serve(stream, c, &self.authz).await;
    }
}
