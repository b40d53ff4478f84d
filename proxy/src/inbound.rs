//! Inbound: every connection to the inbound port. Mesh mTLS (a TLS
//! ClientHello) is terminated: the client must present a valid SVID of our
//! trust domain, and the preamble names the target port. Anything else is a
//! plaintext client, judged by PeerAuthentication (STRICT refuses it). Then
//! the protocol is detected: HTTP/1.1 is authorized per request, everything
//! else once per connection, and delivered to the app at the target port.

pub mod http;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::SpiffeId;
use mesh_policy::Peer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::detect::{self, Protocol, Rewind};
use crate::discovery::DiscoveryRx;
use crate::drain::Drain;
use crate::policy::{self, LocalWorkload, PolicyRx};
use crate::relay::relay;
use crate::wire;

/// Connecting to the local app should be near-instant; a slow connect means it is down.
const DEFAULT_APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a client's first bytes before treating the
/// connection as opaque TCP. Clients of server-first protocols (SMTP, MySQL)
/// wait this long once per connection; HTTP clients speak at once.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How much of a ClientHello is examined; hellos with post-quantum key
/// shares are about 1.5 KB.
const MAX_HELLO_PEEK: usize = 4096;

/// Inbound settings.
pub struct Inbound {
    pub tls: Arc<rustls::ServerConfig>,
    pub app_addr: IpAddr,
    /// Ports the proxy itself listens on; never a delivery target.
    pub own_ports: HashSet<u16>,
    pub handshake_timeout: Duration,
    pub detect_timeout: Duration,
    pub idle_timeout: Duration,
    pub policy: PolicyRx,
    pub discovery: DiscoveryRx,
    pub local: Arc<LocalWorkload>,
}

/// The verified client of one inbound connection.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// `None` for a plaintext client.
    pub identity: Option<SpiffeId>,
}

impl Client {
    pub fn peer(&self) -> Peer<'_> {
        match &self.identity {
            Some(id) => Peer::Mtls {
                principal: id.as_str(),
            },
            None => Peer::Plaintext,
        }
    }

    pub fn name(&self) -> &str {
        self.identity.as_ref().map_or("-", |i| i.as_str())
    }
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
            let drain = drain.clone();
            tokio::spawn(async move {
                this.handle(acceptor, tcp, peer, drain).await;
                drop(guard);
            });
        }
    }

    async fn handle(&self, acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr, drain: Drain) {
        let local = match tcp.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        let is_mesh = match tokio::time::timeout(self.handshake_timeout, peek_mesh(&tcp)).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(_) => {
                refused("inbound", "timeout", peer, "client sent nothing");
                return;
            }
        };
        if is_mesh {
            let Some((tls, port)) = self.mesh_handshake(acceptor, tcp, peer).await else {
                return;
            };
            let identity =
                mesh_identity::verify::peer_identity(tls.get_ref().1.peer_certificates());
            let client = Client {
                addr: peer,
                identity,
            };
            self.deliver(tls, client, local.ip(), port, true, drain)
                .await;
        } else {
            // A plaintext client, or TLS that is not ours (passed through
            // opaque): redirected to us (transparent mode), so the port it
            // wanted is the original destination.
            let target = crate::orig_dst::original_dst(&tcp, local.is_ipv6())
                .filter(|d| *d != local)
                .map(|d| d.port());
            let client = Client {
                addr: peer,
                identity: None,
            };
            match target {
                Some(port) => {
                    self.deliver(tcp, client, local.ip(), port, false, drain)
                        .await
                }
                None => {
                    // Decide anyway, so STRICT refusals are counted and named;
                    // an allowed plaintext client still has nowhere to go.
                    if self
                        .authorize_l4(&client, local.ip(), local.port(), false)
                        .is_ok()
                    {
                        metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "no_original_destination").increment(1);
                        tracing::info!(%peer, "plaintext connection without an original destination (not redirected); closed");
                    }
                }
            }
        }
    }

    async fn mesh_handshake(
        &self,
        acceptor: TlsAcceptor,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, u16)> {
        let handshake = async {
            let mut tls = acceptor.accept(tcp).await?;
            let port = wire::read(&mut tls)
                .await
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            Ok::<_, std::io::Error>((tls, port))
        };
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                let (mut reason, message) = mesh_identity::verify::describe_handshake_error(&e);
                if reason == "io" && e.kind() == std::io::ErrorKind::InvalidData {
                    reason = "bad_preamble";
                }
                refused("inbound", reason, peer, &message);
                None
            }
            Err(_) => {
                refused("inbound", "timeout", peer, "handshake not finished in time");
                None
            }
        }
    }

    /// The L4 decision; `None` when denied (counted and logged).
    /// `Err(Some(what decided))` when denied, `Err(None)` without a policy.
    fn authorize_l4(
        &self,
        client: &Client,
        dst_ip: IpAddr,
        port: u16,
        tls: bool,
    ) -> Result<(), Option<String>> {
        let decision = decide(
            &self.policy,
            &self.discovery,
            &self.local,
            client,
            dst_ip,
            port,
            None,
        );
        let Some(decision) = decision else {
            tracing::warn!(peer = %client.addr, "refused: no policy yet");
            return Err(None);
        };
        policy::record("inbound", &decision);
        tracing::info!(
            access = "inbound",
            src = %client.addr,
            client = client.name(),
            port,
            tls,
            decision = decision.label(),
            policy = %decision.decided_by,
            dry_run = %decision.dry_run.as_ref().map(|d| d.decided_by.to_string()).unwrap_or_default(),
            "tcp"
        );
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(Some(decision.decided_by.to_string()))
        }
    }

    /// PeerAuthentication for a plaintext caller: counted and logged when refused.
    fn plaintext_allowed(&self, client: &Client, port: u16) -> bool {
        let Some(view) = self.policy.borrow().clone() else {
            return false;
        };
        let (mode, decided_by) =
            view.evaluator
                .mtls_mode(&self.local.as_workload(), port, SystemTime::now());
        if mode != mesh_policy::MtlsMode::Strict {
            return true;
        }
        let policy = decided_by.map_or_else(|| "default deny".to_string(), |d| d.to_string());
        metrics::counter!("mesh_authz_decisions_total", "direction" => "inbound", "decision" => "deny", "policy" => policy.clone()).increment(1);
        tracing::info!(access = "inbound", src = %client.addr, client = "-", port, tls = false, decision = "deny", policy, "http");
        false
    }

    async fn deliver<S>(
        &self,
        stream: S,
        client: Client,
        dst_ip: IpAddr,
        port: u16,
        tls: bool,
        drain: Drain,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.own_ports.contains(&port) {
            metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "loop").increment(1);
            tracing::warn!(peer = %client.addr, client = client.name(), port, "refused: target is one of the proxy's own ports");
            return;
        }
        let mut stream = stream;
        let (protocol, prefix) = match detect::detect(&mut stream, self.detect_timeout).await {
            Ok(v) => v,
            Err(_) => return,
        };
        let stream = Rewind::new(prefix, stream);
        let tls_label = if tls { "true" } else { "false" };
        let target = SocketAddr::new(self.app_addr, port);
        // HTTP is served request by request only when some rule reads HTTP
        // fields; otherwise every request of the connection gets the same
        // answer, so it is decided once and relayed as opaque bytes (if a
        // later policy starts reading HTTP, the re-check below closes the
        // connection and the client's next one is served per request).
        let per_request = protocol == Protocol::Http1
            && self
                .policy
                .borrow()
                .as_ref()
                .is_none_or(|v| v.evaluator.reads_http());
        if per_request {
            // A plaintext caller of a STRICT workload is refused here, as a
            // connection, not request by request.
            if client.identity.is_none() && !self.plaintext_allowed(&client, port) {
                return;
            }
            // NetworkPolicy and AuthorizationPolicy are evaluated with every
            // request, together with L7.
            metrics::counter!("mesh_tcp_connections_total", "direction" => "inbound", "tls" => tls_label).increment(1);
            http::serve(
                stream,
                http::Context {
                    client,
                    dst_ip,
                    port,
                    target,
                    policy: self.policy.clone(),
                    discovery: self.discovery.clone(),
                    local: self.local.clone(),
                },
                drain,
            )
            .await;
            return;
        }
        let mut stream = stream;
        if let Err(denied) = self.authorize_l4(&client, dst_ip, port, tls) {
            // An HTTP client is told what denied it, as on the per-request path.
            if protocol == Protocol::Http1
                && let Some(by) = denied
            {
                let body = format!("access denied: {by}\n");
                let resp = format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(DEFAULT_APP_CONNECT_TIMEOUT, async {
                    let _ = stream.write_all(resp.as_bytes()).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            }
            return;
        }
        metrics::counter!("mesh_tcp_connections_total", "direction" => "inbound", "tls" => tls_label).increment(1);
        let app = match tokio::time::timeout(
            DEFAULT_APP_CONNECT_TIMEOUT,
            TcpStream::connect(target),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "app_connect").increment(1);
                tracing::warn!(peer = %client.addr, client = client.name(), %target, error = %e, "cannot connect to the app");
                return;
            }
            Err(_) => {
                metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "app_connect_timeout").increment(1);
                tracing::warn!(peer = %client.addr, client = client.name(), %target, "connecting to the app timed out");
                return;
            }
        };
        let _ = app.set_nodelay(true);
        tokio::select! {
            r = relay(stream, app, self.idle_timeout) => {
                if let Err(e) = r {
                    tracing::debug!(peer = %client.addr, client = client.name(), %target, error = %e, "inbound connection ended");
                }
            }
            _ = self.revoked(&client, dst_ip, port, protocol == Protocol::Http1) => {
                tracing::info!(peer = %client.addr, client = client.name(), port, "open connection closed: no longer allowed by policy");
            }
        }
    }

    /// Resolves when a new policy (or an expiring exception) no longer allows
    /// this open connection.
    /// `http`: the connection carries HTTP/1.1 relayed opaque; it is closed
    /// when a policy starts reading HTTP, so the client reconnects and is
    /// served per request.
    async fn revoked(&self, client: &Client, dst_ip: IpAddr, port: u16, http: bool) {
        let mut rx = self.policy.clone();
        loop {
            let next_expiry = rx.borrow_and_update().as_ref().and_then(|v| v.next_expiry);
            let wait_expiry = async {
                match next_expiry.and_then(|t| t.duration_since(SystemTime::now()).ok()) {
                    Some(d) => tokio::time::sleep(d + Duration::from_millis(1)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return std::future::pending().await },
                _ = wait_expiry => {}
            }
            if http
                && rx
                    .borrow()
                    .as_ref()
                    .is_some_and(|v| v.evaluator.reads_http())
            {
                return;
            }
            let decision = decide(
                &rx,
                &self.discovery,
                &self.local,
                client,
                dst_ip,
                port,
                None,
            );
            if let Some(d) = decision
                && !d.is_allowed()
            {
                policy::record("inbound", &d);
                return;
            }
        }
    }
}

/// Looks at the first bytes: `Some(true)` for a mesh mTLS ClientHello,
/// `Some(false)` for anything else (plaintext, or TLS meant for the app),
/// `None` when the client closed.
async fn peek_mesh(tcp: &TcpStream) -> Option<bool> {
    let mut buf = vec![0u8; MAX_HELLO_PEEK];
    loop {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[0] != TLS_HANDSHAKE {
            return Some(false);
        }
        if let Some(mesh) = detect::client_hello_is_mesh(&buf[..n]) {
            return Some(mesh);
        }
        if n == buf.len() {
            // A hello larger than we look at: let the mesh handshake judge it.
            return Some(true);
        }
        // Wait for more of the hello (peek returns at once while data is pending).
        tcp.readable().await.ok()?;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The inbound decision for `client`, with its workload's labels when
/// discovery knows it. `None` before any policy arrived.
pub(crate) fn decide(
    policy: &PolicyRx,
    discovery: &DiscoveryRx,
    local: &LocalWorkload,
    client: &Client,
    dst_ip: IpAddr,
    port: u16,
    http: Option<mesh_policy::Http<'_>>,
) -> Option<mesh_policy::Decision> {
    let view = policy.borrow().clone();
    let mesh = discovery.borrow().clone();
    let source = mesh
        .source(client.addr.ip(), client.identity.as_ref())
        .map(|w| (w.namespace.as_str(), &w.labels));
    policy::decide_inbound(
        view.as_deref(),
        local,
        policy::Inbound {
            peer: client.peer(),
            source,
            source_ip: client.addr.ip(),
            destination_ip: dst_ip,
            port,
            http,
        },
    )
}

/// Counts and logs a refused connection.
fn refused(direction: &'static str, reason: &'static str, peer: SocketAddr, message: &str) {
    metrics::counter!("mesh_tls_handshake_failures_total", "direction" => direction, "reason" => reason).increment(1);
    tracing::info!(%peer, reason, error = %message, "inbound connection refused");
}
