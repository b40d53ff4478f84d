//! `mesh-proxy run` settings, parsed from flags (and `MESH_*` environment variables).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use mesh_identity::SpiffeId;

/// mesh-proxy run: the sidecar. Gets a workload certificate from the control
/// plane, terminates mTLS from peer proxies on --inbound and delivers to the
/// local app, and originates mTLS to peers for outbound routes.
#[derive(Debug, Clone, Parser)]
pub struct RunArgs {
    /// Control plane gRPC address.
    #[arg(long, env = "MESH_CONTROL_PLANE", default_value = "127.0.0.1:8443")]
    pub control_plane: String,

    /// PEM roots that the control plane's certificate must chain to
    /// (the control plane writes DATA/trust-bundle.pem).
    #[arg(long, env = "MESH_TRUST_BUNDLE")]
    pub trust_bundle: PathBuf,

    /// The workload's namespace.
    #[arg(long, env = "MESH_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// The workload's service account.
    #[arg(long, env = "MESH_SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,

    /// The workload (pod) name.
    #[arg(long, env = "MESH_WORKLOAD", default_value = "")]
    pub workload: String,

    /// Workload labels, k=v,...
    #[arg(long, env = "MESH_LABELS", default_value = "")]
    pub labels: String,

    /// The credential file (a join token); re-read at every certificate request.
    #[arg(long, env = "MESH_TOKEN_FILE")]
    pub token_file: PathBuf,

    /// SPIFFE trust domain.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,

    /// mTLS from peer proxies.
    #[arg(long, env = "MESH_INBOUND", default_value = "0.0.0.0:4143")]
    pub inbound: SocketAddr,

    /// Redirected application egress.
    #[arg(long, env = "MESH_OUTBOUND", default_value = "127.0.0.1:4140")]
    pub outbound: SocketAddr,

    /// Plain-HTTP admin: /live, /ready, /metrics, /certs.
    #[arg(long, env = "MESH_ADMIN", default_value = "127.0.0.1:4191")]
    pub admin: SocketAddr,

    /// Where inbound traffic is delivered (at the target port).
    #[arg(long, env = "MESH_APP_ADDR", default_value = "127.0.0.1")]
    pub app_addr: IpAddr,

    /// Runtime worker threads. One is the sidecar default: a pod's proxy
    /// should cost one core at most.
    #[arg(long, env = "MESH_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Explicit outbound route without iptables:
    /// LISTEN=PEER_INBOUND/TARGET_PORT@SPIFFE_ID (repeatable).
    #[arg(
        long = "static-route",
        env = "MESH_STATIC_ROUTE",
        value_delimiter = ' '
    )]
    pub static_routes: Vec<StaticRoute>,

    /// Requested certificate lifetime (0 = the control plane's default).
    #[arg(long, env = "MESH_CERT_TTL", value_parser = mesh_identity::duration::parse_duration, default_value = "0")]
    pub cert_ttl: Duration,

    /// TLS handshakes must complete within this.
    #[arg(long, env = "MESH_HANDSHAKE_TIMEOUT", value_parser = mesh_identity::duration::parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,

    /// How long to wait for a client's first bytes to detect its protocol
    /// before relaying it as opaque TCP (server-first protocols pay this once).
    #[arg(long, env = "MESH_DETECT_TIMEOUT", value_parser = mesh_identity::duration::parse_duration_ms, default_value = "500ms")]
    pub detect_timeout: Duration,

    /// Connections with no traffic in either direction for this long are closed.
    #[arg(long, env = "MESH_IDLE_TIMEOUT", value_parser = mesh_identity::duration::parse_duration, default_value = "1h")]
    pub idle_timeout: Duration,

    /// On SIGTERM, wait at most this long for open connections to finish.
    #[arg(long, env = "MESH_DRAIN_TIMEOUT", value_parser = mesh_identity::duration::parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,
}

/// `LISTEN=PEER_INBOUND/TARGET_PORT@SPIFFE_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub listen: SocketAddr,
    pub peer: String,
    pub target_port: u16,
    pub identity: SpiffeId,
}

impl FromStr for StaticRoute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected LISTEN=PEER_INBOUND/TARGET_PORT@SPIFFE_ID, e.g. 127.0.0.1:15000=127.0.0.1:4143/8080@spiffe://cluster.local/ns/default/sa/api";
        let (listen, rest) = s.split_once('=').ok_or_else(|| format!("{s:?}: {usage}"))?;
        let (dest, id) = rest
            .split_once('@')
            .ok_or_else(|| format!("{s:?}: {usage}"))?;
        let (peer, port) = dest
            .rsplit_once('/')
            .ok_or_else(|| format!("{s:?}: {usage}"))?;
        let listen = listen
            .parse()
            .map_err(|_| format!("{s:?}: LISTEN {listen:?} is not an address:port"))?;
        let target_port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: TARGET_PORT {port:?} is not a port"))?;
        if !peer.contains(':') {
            return Err(format!("{s:?}: PEER_INBOUND {peer:?} must be host:port"));
        }
        let identity = SpiffeId::parse(id).map_err(|e| format!("{s:?}: SPIFFE ID {id:?}: {e}"))?;
        Ok(Self {
            listen,
            peer: peer.to_string(),
            target_port,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_route_parses() {
        let r: StaticRoute =
            "127.0.0.1:15000=127.0.0.1:4143/8080@spiffe://cluster.local/ns/default/sa/api"
                .parse()
                .unwrap();
        assert_eq!(r.listen, "127.0.0.1:15000".parse().unwrap());
        assert_eq!(r.peer, "127.0.0.1:4143");
        assert_eq!(r.target_port, 8080);
        assert_eq!(
            r.identity.as_str(),
            "spiffe://cluster.local/ns/default/sa/api"
        );
    }

    #[test]
    fn static_route_errors() {
        for bad in [
            "",
            "127.0.0.1:15000",
            "127.0.0.1:15000=127.0.0.1:4143/8080",
            "x=127.0.0.1:4143/8080@spiffe://td/a",
            "127.0.0.1:1=127.0.0.1:4143/0@spiffe://td/a",
            "127.0.0.1:1=127.0.0.1:4143/99999@spiffe://td/a",
            "127.0.0.1:1=127.0.0.1:4143/80@http://td/a",
            "127.0.0.1:1=nohost/80@spiffe://td/a",
        ] {
            assert!(bad.parse::<StaticRoute>().is_err(), "{bad}");
        }
    }
}
