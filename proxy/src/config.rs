//! `mesh-proxy run` settings, parsed from flags (and `MESH_*` environment variables).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use mesh_identity::SpiffeId;

/// Default of `--max-connections`: well above what one workload's sidecar
/// holds, well below the file descriptors the proxy raises its limit to.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// mesh-proxy run: the sidecar. Gets a workload certificate from the control
/// plane, terminates mTLS from peer proxies on --inbound and delivers to the
/// local app, and originates mTLS to peers for outbound routes.
#[derive(Debug, Clone, Parser)]
pub struct RunArgs {
    /// Control plane gRPC address, HOST:PORT. Several replicas of one mesh:
    /// repeat the flag or separate them with commas; the proxy connects to
    /// the first that answers and fails over to the others.
    #[arg(
        long,
        env = "MESH_CONTROL_PLANE",
        default_value = "127.0.0.1:8443",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub control_plane: Vec<String>,

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

    /// Workload labels from a file in the downward API's format (one
    /// `key="value"` per line), read at start; `--labels` adds to them and
    /// wins on the same key.
    #[arg(long, env = "MESH_LABELS_FILE")]
    pub labels_file: Option<PathBuf>,

    /// The app's HTTP probes the injector rewrote to the admin port's
    /// `/app-health/` paths (JSON, as `mesh-injector` writes it).
    #[arg(long, env = "MESH_APP_PROBES")]
    pub app_probes: Option<String>,

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

    /// A local port for a mesh Service, for hosts without traffic
    /// redirection: LISTEN=NAMESPACE/NAME:PORT (repeatable). A connection
    /// there is treated as one to the Service's VIP and port: its routes,
    /// retries, timeouts and balancing apply.
    #[arg(
        long = "service-route",
        env = "MESH_SERVICE_ROUTE",
        value_delimiter = ' '
    )]
    pub service_routes: Vec<ServiceRoute>,

    /// A local port for a destination outside the mesh, for hosts without
    /// traffic redirection: LISTEN=IP:PORT (repeatable). A connection there
    /// leaves the mesh to IP:PORT, decided as a redirected one would be
    /// (NetworkPolicy egress, EgressPolicy by SNI / Host and address).
    #[arg(long = "egress-route", env = "MESH_EGRESS_ROUTE", value_delimiter = ' ', value_parser = parse_egress_route)]
    pub egress_routes: Vec<(SocketAddr, SocketAddr)>,

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

    /// Connections the data listeners (inbound, outbound, ingress) hold open
    /// at once; past it a new connection is closed as it is accepted and
    /// counted in `mesh_tcp_connection_errors_total{reason="max_connections"}`.
    /// The admin listener is not counted: `/ready` and `/metrics` answer.
    #[arg(long, env = "MESH_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// On SIGTERM, wait at most this long for open connections to finish.
    #[arg(long, env = "MESH_DRAIN_TIMEOUT", value_parser = mesh_identity::duration::parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,

    /// The HTTP access log, one JSON line per request: `-` (stderr, with the
    /// other logs), a file, or `off`.
    #[arg(long, env = "MESH_ACCESS_LOG", default_value = "-")]
    pub access_log: crate::access::Target,

    /// Largest HTTP request head (HTTP/1.1) or header list (HTTP/2); larger get 431.
    #[arg(long, env = "MESH_MAX_HEADER_BYTES", default_value_t = crate::http::server::DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,

    /// Longest request target; longer get 414.
    #[arg(long, env = "MESH_MAX_URI_BYTES", default_value_t = crate::http::server::DEFAULT_MAX_URI_BYTES)]
    pub max_uri_bytes: usize,

    /// An HTTP/1.1 client must send a whole request head within this.
    #[arg(long, env = "MESH_HEADER_READ_TIMEOUT", value_parser = mesh_identity::duration::parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Concurrent streams on one application HTTP/2 connection.
    #[arg(long, env = "MESH_H2_MAX_CONCURRENT_STREAMS", default_value_t = crate::http::server::DEFAULT_H2_MAX_CONCURRENT_STREAMS)]
    pub h2_max_concurrent_streams: u32,

    /// Concurrent streams on one peer proxy's pooled connection.
    #[arg(long, env = "MESH_MESH_H2_MAX_CONCURRENT_STREAMS", default_value_t = crate::http::server::DEFAULT_MESH_H2_MAX_CONCURRENT_STREAMS)]
    pub mesh_h2_max_concurrent_streams: u32,

    /// HTTP/2 RST_STREAM frames a client may send per second before GOAWAY.
    #[arg(long, env = "MESH_H2_MAX_RESETS_PER_SECOND", default_value_t = crate::http::flood::DEFAULT_H2_MAX_RESETS_PER_SECOND)]
    pub h2_max_resets_per_second: u32,

    /// HTTP/2 PING frames a client may send per second before GOAWAY.
    #[arg(long, env = "MESH_H2_MAX_PINGS_PER_SECOND", default_value_t = crate::http::flood::DEFAULT_H2_MAX_PINGS_PER_SECOND)]
    pub h2_max_pings_per_second: u32,

    /// HTTP/2 SETTINGS frames a client may send per second before GOAWAY.
    #[arg(long, env = "MESH_H2_MAX_SETTINGS_PER_SECOND", default_value_t = crate::http::flood::DEFAULT_H2_MAX_SETTINGS_PER_SECOND)]
    pub h2_max_settings_per_second: u32,

    /// Destination ports whose traffic is never read as HTTP: relayed as
    /// opaque TCP (`palisade/tcp1`), decided once per connection, with no
    /// protocol detection delay for server-first protocols (comma-separated).
    #[arg(long, env = "MESH_OPAQUE_PORTS", value_delimiter = ',')]
    pub opaque_ports: Vec<u16>,

    /// Pooled connections to peer proxies with nothing in flight close after this.
    #[arg(long, env = "MESH_POOL_IDLE_TIMEOUT", value_parser = mesh_identity::duration::parse_duration, default_value = "90s")]
    pub pool_idle_timeout: Duration,

    /// The resolver configuration egress names are resolved with (the
    /// pod's own, so the proxy sees the addresses the app sees).
    #[arg(long, env = "MESH_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: std::path::PathBuf,

    /// DNS servers (IP:PORT, comma-separated) used instead of the
    /// `--resolv-conf` name servers.
    #[arg(long, env = "MESH_DNS_SERVERS", value_delimiter = ',')]
    pub dns_servers: Vec<std::net::SocketAddr>,

    /// Names kept in the egress resolver's cache (each for its TTL).
    #[arg(long, env = "MESH_DNS_CACHE_SIZE", default_value_t = 1024)]
    pub dns_cache_size: u64,

    /// Distinct destination hosts `mesh_egress_connections_total` names
    /// before folding the rest into `host="other"`.
    #[arg(long, env = "MESH_EGRESS_HOST_LABELS", default_value_t = crate::outbound::egress::DEFAULT_HOST_LABELS)]
    pub egress_host_labels: usize,
}

impl RunArgs {
    /// Every `--control-plane` address, comma-separated, as the control
    /// plane channel takes them.
    pub fn control_plane_addresses(&self) -> anyhow::Result<String> {
        let list = mesh_control_client::addresses(&self.control_plane)
            .map_err(|e| anyhow::anyhow!("--control-plane: {e}"))?;
        Ok(list.join(","))
    }

    /// The HTTP limits for application clients.
    pub fn http_limits(&self) -> crate::http::server::Limits {
        crate::http::server::Limits {
            max_header_bytes: self.max_header_bytes,
            max_uri_bytes: self.max_uri_bytes,
            header_read_timeout: self.header_read_timeout,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            flood: crate::http::flood::FloodLimits {
                resets_per_second: self.h2_max_resets_per_second,
                pings_per_second: self.h2_max_pings_per_second,
                settings_per_second: self.h2_max_settings_per_second,
            },
            extended_connect: false,
        }
    }

    /// The HTTP limits for peer proxies' pooled connections: more streams,
    /// and WebSocket as extended CONNECT.
    pub fn mesh_http_limits(&self) -> crate::http::server::Limits {
        crate::http::server::Limits {
            h2_max_concurrent_streams: self.mesh_h2_max_concurrent_streams,
            extended_connect: true,
            ..self.http_limits()
        }
    }
}

/// `LISTEN=PEER_INBOUND/TARGET_PORT@SPIFFE_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub listen: SocketAddr,
    pub peer: String,
    pub target_port: u16,
    pub identity: SpiffeId,
}

/// `--service-route`: a local listener for a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRoute {
    pub listen: SocketAddr,
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

/// `LISTEN=IP:PORT`.
fn parse_egress_route(s: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let bad = || format!("{s:?}: expected LISTEN=IP:PORT, e.g. 127.0.0.1:15002=203.0.113.7:443");
    let (listen, dst) = s.split_once('=').ok_or_else(bad)?;
    Ok((
        listen.parse().map_err(|_| bad())?,
        dst.parse().map_err(|_| bad())?,
    ))
}

impl FromStr for ServiceRoute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "expected LISTEN=NAMESPACE/NAME:PORT, e.g. 127.0.0.1:15001=shop/api:80";
        let bad = || format!("{s:?}: {usage}");
        let (listen, rest) = s.split_once('=').ok_or_else(bad)?;
        let (namespace, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (name, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let listen = listen
            .parse()
            .map_err(|_| format!("{s:?}: LISTEN {listen:?} is not an address:port"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{s:?}: PORT {port:?} is not a port"))?;
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(Self {
            listen,
            namespace: namespace.to_string(),
            name: name.to_string(),
            port,
        })
    }
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
    fn control_plane_takes_one_address_or_several() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["run", "--trust-bundle", "b.pem", "--token-file", "t"];
            argv.extend_from_slice(args);
            RunArgs::try_parse_from(argv).map(|a| a.control_plane_addresses())
        };
        assert_eq!(parse(&[]).unwrap().unwrap(), "127.0.0.1:8443");
        assert_eq!(
            parse(&["--control-plane", "cp:8443"]).unwrap().unwrap(),
            "cp:8443"
        );
        // Repeated, comma-separated, or both: one list, in order, once each.
        assert_eq!(
            parse(&[
                "--control-plane",
                "10.0.0.1:8443,10.0.0.2:8443",
                "--control-plane",
                "[::1]:8443",
                "--control-plane",
                "10.0.0.1:8443"
            ])
            .unwrap()
            .unwrap(),
            "10.0.0.1:8443,10.0.0.2:8443,[::1]:8443"
        );
        for bad in ["cp", "cp:0", ":8443", "cp:http", "a b:1", ","] {
            assert!(parse(&["--control-plane", bad]).unwrap().is_err(), "{bad}");
        }
    }

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

    #[test]
    fn service_route_parses_and_refuses_what_is_not_one() {
        let r: ServiceRoute = "127.0.0.1:15001=shop/api:80".parse().unwrap();
        assert_eq!(
            r,
            ServiceRoute {
                listen: "127.0.0.1:15001".parse().unwrap(),
                namespace: "shop".into(),
                name: "api".into(),
                port: 80,
            }
        );
        for bad in [
            "",
            "127.0.0.1:15001",
            "127.0.0.1:15001=api:80",
            "127.0.0.1:15001=shop/api",
            "127.0.0.1:15001=shop/api:0",
            "127.0.0.1:15001=/api:80",
            "127.0.0.1:15001=shop/:80",
            "x=shop/api:80",
        ] {
            assert!(bad.parse::<ServiceRoute>().is_err(), "{bad}");
        }
    }
}
