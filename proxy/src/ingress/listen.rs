//! The ingress's listeners: `--https-port` (Ingresses), `--http-port` (the
//! redirect to HTTPS) and every port a Gateway listener names, opened and
//! closed as the policy changes. Closing a listener stops new connections
//! only; open ones finish on their own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_policy::EdgeProtocol;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::IngressArgs;
use super::certs::{CertSet, KeyCache, Resolver, SecretName};
use super::proxy_protocol;
use crate::access::AccessLog;
use crate::drain::Drain;
use crate::http::server::{self, Limits, Version};
use crate::http::telemetry::EdgeTls;
use crate::outbound::Outbound;
use crate::policy::{LocalWorkload, PolicyRx};

/// What every ingress connection shares.
pub struct Edge {
    pub out: Arc<Outbound>,
    pub access: Arc<AccessLog>,
    pub policy: PolicyRx,
    pub local: Arc<LocalWorkload>,
    pub certs: watch::Receiver<Arc<CertSet>>,
    certs_tx: watch::Sender<Arc<CertSet>>,
    pub https_port: u16,
    http_port: u16,
    listen_ip: std::net::IpAddr,
    pub trusted_hops: usize,
    proxy_protocol_from: crate::init::CidrList,
    default_certificate: Option<SecretName>,
    min_tls: super::TlsVersion,
    pub max_request_body_bytes: u64,
    pub hsts_max_age: u64,
    handshake_timeout: Duration,
    pub limits: Limits,
    /// RateLimitPolicy counters, kept across policy pushes.
    pub rate_limits: crate::http::ratelimit::Limiters,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Edge {
    pub(crate) fn new(
        args: &IngressArgs,
        started: &crate::Started,
        out: Arc<Outbound>,
        access: Arc<AccessLog>,
    ) -> anyhow::Result<Self> {
        let (certs_tx, certs) = watch::channel(Arc::new(CertSet::default()));
        Ok(Self {
            out,
            access,
            policy: started.policy.clone(),
            local: started.local.clone(),
            certs,
            certs_tx,
            https_port: args.https_port,
            http_port: args.http_port,
            listen_ip: args.listen_ip,
            trusted_hops: args.trusted_hops,
            proxy_protocol_from: args.proxy_protocol_from.clone(),
            default_certificate: args.default_certificate.clone(),
            min_tls: args.min_tls_version,
            max_request_body_bytes: args.max_request_body_bytes,
            hsts_max_age: args.hsts_max_age,
            handshake_timeout: args.proxy.handshake_timeout,
            limits: args.proxy.http_limits(),
            rate_limits: Default::default(),
            provider: mesh_identity::tls::provider(),
        })
    }

    /// Follows the policy: certificates and listeners, until draining.
    pub async fn run(self: Arc<Self>, mut policy: PolicyRx, drain: Drain) {
        let mut cache = KeyCache::default();
        let mut open: BTreeMap<u16, (EdgeProtocol, JoinHandle<()>)> = BTreeMap::new();
        loop {
            let view = policy.borrow_and_update().clone();
            if let Some(view) = view {
                let now = SystemTime::now();
                let wanted = view.evaluator.edge_certificates(self.https_port, now);
                let set = CertSet::build(
                    &wanted,
                    self.default_certificate.as_ref(),
                    &view.secrets,
                    &mut cache,
                    &self.provider,
                );
                self.certs_tx.send_replace(Arc::new(set));
                let mut desired: BTreeMap<u16, EdgeProtocol> = BTreeMap::new();
                desired.insert(self.https_port, EdgeProtocol::Https);
                if self.http_port != 0 {
                    desired.insert(self.http_port, EdgeProtocol::Http);
                }
                for l in view.evaluator.edge_listeners(now) {
                    match desired.get(&l.port) {
                        Some(p) if *p != l.protocol => tracing::error!(
                            port = l.port,
                            gateway = %l.gateway,
                            listener = %l.name,
                            "a listener's protocol conflicts with another on the same port; it is not served"
                        ),
                        _ => {
                            desired.insert(l.port, l.protocol);
                        }
                    }
                }
                self.reconcile(&mut open, &desired, &drain).await;
            }
            tokio::select! {
                r = policy.changed() => if r.is_err() { return },
                _ = drain.signaled() => return,
            }
        }
    }

    async fn reconcile(
        self: &Arc<Self>,
        open: &mut BTreeMap<u16, (EdgeProtocol, JoinHandle<()>)>,
        desired: &BTreeMap<u16, EdgeProtocol>,
        drain: &Drain,
    ) {
        open.retain(|port, (protocol, task)| {
            let keep = desired.get(port) == Some(protocol) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(port, "listener closed");
            }
            keep
        });
        for (&port, &protocol) in desired {
            if open.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.listen_ip, port);
            let listener = match crate::transport::accept::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    metrics::counter!("mesh_ingress_listener_errors_total").increment(1);
                    tracing::error!(%addr, error = %e, "cannot listen; tried again at the next policy change");
                    continue;
                }
            };
            tracing::info!(%addr, ?protocol, "listening");
            let task = match protocol {
                EdgeProtocol::Https => match self.tls_config(port) {
                    Ok(tls) => tokio::spawn(self.clone().serve_https(listener, tls, drain.clone())),
                    Err(e) => {
                        tracing::error!(port, error = %e, "TLS settings refused");
                        continue;
                    }
                },
                EdgeProtocol::Http => {
                    tokio::spawn(self.clone().serve_redirect(listener, drain.clone()))
                }
            };
            open.insert(port, (protocol, task));
        }
    }

    fn tls_config(&self, port: u16) -> Result<Arc<ServerConfig>, rustls::Error> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.min_tls {
            super::TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            super::TlsVersion::V13 => &[&rustls::version::TLS13],
        };
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver {
                port,
                set: self.certs.clone(),
            }));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    async fn serve_https(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        drain: Drain,
    ) {
        let acceptor = TlsAcceptor::from(tls);
        let d = drain.clone();
        crate::transport::accept::serve(listener, d, "ingress", move |tcp, peer| {
            let edge = self.clone();
            let acceptor = acceptor.clone();
            let drain = drain.clone();
            async move { edge.https_connection(acceptor, tcp, peer, drain).await }
        })
        .await;
    }

    async fn https_connection(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        mut tcp: TcpStream,
        peer: SocketAddr,
        drain: Drain,
    ) {
        let Some(peer) = self.client_of(&mut tcp, peer).await else {
            return;
        };
        let port = tcp.local_addr().map_or(self.https_port, |a| a.port());
        let stream = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "ingress", "reason" => "handshake").increment(1);
                tracing::debug!(%peer, error = %e, "ingress handshake failed");
                return;
            }
            Err(_) => {
                metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "ingress", "reason" => "timeout").increment(1);
                return;
            }
        };
        let (_, conn) = stream.get_ref();
        let version = if conn.alpn_protocol() == Some(b"h2") {
            Version::Http2
        } else {
            Version::Http1
        };
        let tls = Arc::new(EdgeTls {
            sni: conn.server_name().map(str::to_owned),
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "-",
            },
            cipher: conn
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("-"),
        });
        metrics::counter!("mesh_tcp_connections_total", "direction" => "ingress", "tls" => "true")
            .increment(1);
        let conn = Arc::new(super::http::Conn { peer, port, tls });
        let edge = self.clone();
        let svc = hyper::service::service_fn(move |req| {
            let edge = edge.clone();
            let conn = conn.clone();
            async move { Ok::<_, std::convert::Infallible>(edge.handle(&conn, req).await) }
        });
        server::serve(stream, version, svc, &self.limits, &drain).await;
    }

    /// The client a connection is for: its own address, or, from a
    /// `--proxy-protocol-from` balancer, the one its PROXY header names
    /// (`None`: no valid header in time; the connection is closed).
    async fn client_of(&self, tcp: &mut TcpStream, peer: SocketAddr) -> Option<SocketAddr> {
        if !self.proxy_protocol_from.contains(peer.ip()) {
            return Some(peer);
        }
        let why =
            match tokio::time::timeout(self.handshake_timeout, proxy_protocol::read(tcp)).await {
                Ok(Ok(source)) => return Some(source.unwrap_or(peer)),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no PROXY protocol header in time".to_owned(),
            };
        metrics::counter!("mesh_ingress_proxy_protocol_errors_total").increment(1);
        tracing::info!(%peer, error = %why, "connection from a PROXY protocol balancer refused");
        None
    }

    async fn serve_redirect(self: Arc<Self>, listener: TcpListener, drain: Drain) {
        let d = drain.clone();
        crate::transport::accept::serve(listener, d, "ingress", move |mut tcp, peer| {
            let edge = self.clone();
            let drain = drain.clone();
            async move {
                if edge.client_of(&mut tcp, peer).await.is_none() {
                    return;
                }
                let https_port = edge.https_port;
                let svc = hyper::service::service_fn(move |req| async move {
                    Ok::<_, std::convert::Infallible>(super::http::redirect(&req, https_port))
                });
                server::serve(tcp, Version::Http1, svc, &edge.limits, &drain).await;
            }
        })
        .await;
    }
}
