//! `mesh-proxy ingress`: the mesh's public border. It terminates the
//! outside world's TLS (certificates from `kubernetes.io/tls` Secrets,
//! chosen by SNI), routes each request by the Gateway API `Gateway` +
//! `HTTPRoute`s or Kubernetes `Ingress`es of class `palisade`, decides it
//! with the AuthorizationPolicies that select the ingress workload, and
//! sends it to the backend endpoint's sidecar over mesh mTLS through the
//! same pooled HTTP/2 connections and traffic stack as the outbound
//! (`Outbound::forward_edge`), verifying the endpoint's SPIFFE ID.
//!
//! Stages: `listen` (the listeners the Gateways ask for, PROXY protocol
//! from trusted balancers (`proxy_protocol`), TLS, the HTTP → HTTPS
//! redirect), `certs` (the certificate for a handshake), `http` (per
//! request: host, route, authorization, forwarding headers).

pub mod certs;
pub mod http;
pub mod listen;
pub mod proxy_protocol;

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;

use crate::RunArgs;

/// `mesh-proxy ingress`: the gateway. Its mesh identity defaults to
/// spiffe://<trust-domain>/ns/mesh-system/sa/ingress.
#[derive(Debug, Clone, clap::Args)]
pub struct IngressArgs {
    #[command(flatten)]
    pub proxy: RunArgs,

    /// Where Ingress objects are served (HTTPS); Gateway listeners bring
    /// their own ports.
    #[arg(long, env = "MESH_HTTPS_PORT", default_value_t = 443)]
    pub https_port: u16,

    /// Plain HTTP that only redirects to HTTPS (0: off).
    #[arg(long, env = "MESH_HTTP_PORT", default_value_t = 80)]
    pub http_port: u16,

    /// The address the listeners bind.
    #[arg(long, env = "MESH_LISTEN_IP", default_value = "0.0.0.0")]
    pub listen_ip: IpAddr,

    /// Proxies in front of the ingress that append to X-Forwarded-For
    /// (load balancers): the client address is the N-th from the right.
    /// 0: the connection's address, and client forwarding headers are
    /// replaced, never trusted.
    #[arg(long, env = "MESH_TRUSTED_HOPS", default_value_t = 0)]
    pub trusted_hops: usize,

    /// Load balancers (CIDR,CIDR,…) whose connections start with a PROXY
    /// protocol v2 header naming the client: from them a connection
    /// without a valid header is closed; from anyone else no header is
    /// read. Empty: off.
    #[arg(long, env = "MESH_PROXY_PROTOCOL_FROM", default_value = "")]
    pub proxy_protocol_from: crate::init::CidrList,

    /// The certificate (a kubernetes.io/tls Secret, NAMESPACE/NAME) for a
    /// server name no Gateway or Ingress claims. Without it such a
    /// handshake is refused.
    #[arg(long, env = "MESH_DEFAULT_CERTIFICATE", value_name = "NAMESPACE/NAME", value_parser = parse_secret_name)]
    pub default_certificate: Option<certs::SecretName>,

    /// The oldest TLS version accepted from clients: 1.2 or 1.3 (TLS 1.3
    /// is preferred whenever the client offers it).
    #[arg(long, env = "MESH_MIN_TLS_VERSION", default_value = "1.2")]
    pub min_tls_version: TlsVersion,

    /// Largest request body: one that announces more (Content-Length) gets
    /// 413 at once; one without a length (chunked, HTTP/2 DATA) is counted
    /// as it streams and cut off with 413 when it passes the limit.
    #[arg(long, env = "MESH_MAX_REQUEST_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_body_bytes: u64,

    /// `Strict-Transport-Security: max-age=N` on every HTTPS response (0: off).
    #[arg(long, env = "MESH_HSTS_MAX_AGE", default_value_t = 0)]
    pub hsts_max_age: u64,
}

/// `--min-tls-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V12,
    V13,
}

impl FromStr for TlsVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(TlsVersion::V12),
            "1.3" => Ok(TlsVersion::V13),
            other => Err(format!("{other:?} is not 1.2 or 1.3")),
        }
    }
}

fn parse_secret_name(s: &str) -> Result<certs::SecretName, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

/// Runs the ingress until SIGTERM/SIGINT, then drains.
pub async fn run(args: IngressArgs) -> anyhow::Result<()> {
    let proxy = &args.proxy;
    let prepared = crate::prepare(proxy)?;
    let admin_listener = mesh_admin::bind(proxy.admin)
        .await
        .map_err(anyhow::Error::msg)?;
    // The ingress takes no mesh traffic of its own: peers are told port 0.
    let Some(started) = crate::start(proxy, prepared, admin_listener, 0).await? else {
        return Ok(());
    };
    let access = Arc::new(
        crate::access::AccessLog::open(&proxy.access_log)
            .with_context(|| format!("cannot open --access-log {:?}", proxy.access_log))?,
    );
    let outbound = started.outbound(proxy, access.clone());
    let edge = Arc::new(listen::Edge::new(&args, &started, outbound, access)?);
    tokio::spawn(
        edge.clone()
            .run(started.policy.clone(), started.drain.clone()),
    );
    started.until_drained(proxy.drain_timeout).await;
    Ok(())
}
