//! The proxy's failures, one enum per kind of failure. Each says what an
//! operator can act on; `errors/respond.rs` is the only place that turns them
//! into HTTP and gRPC statuses and metric labels.

pub mod respond;

use std::io;
use std::net::SocketAddr;

/// Opening a connection to a peer proxy, an app or an external address.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error(
        "connecting to {addr} timed out (is it down, or is a NetworkPolicy or firewall dropping it?)"
    )]
    ConnectTimeout { addr: SocketAddr },
    #[error("mTLS handshake with {addr} failed: {message}")]
    Handshake {
        addr: SocketAddr,
        /// `mesh_tls_handshake_failures_total{reason}`.
        reason: &'static str,
        message: String,
    },
    #[error("mTLS handshake with {addr} timed out")]
    HandshakeTimeout { addr: SocketAddr },
    #[error("cannot send the preamble to {addr}: {source}")]
    Preamble { addr: SocketAddr, source: io::Error },
    #[error("HTTP/2 handshake with {addr} failed: {message}")]
    H2Handshake { addr: SocketAddr, message: String },
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("TLS settings: {0}")]
    Tls(String),
    /// A failure a moment ago, reported to the requests that waited for it.
    #[error("{0}")]
    Recent(std::sync::Arc<ConnectError>),
}

impl ConnectError {
    /// The peer could not be reached at all: another endpoint may be tried.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::ConnectTimeout { .. } => true,
            Self::Recent(e) => e.is_unreachable(),
            _ => false,
        }
    }
}

/// Where an outbound connection should go.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("connection was not redirected (no original destination)")]
    NoOriginalDestination,
    #[error("Service {0} has no endpoints")]
    NoEndpoints(String),
    #[error("target port {0} is one of the proxy's own ports")]
    Loop(u16),
    /// A route sent the request nowhere: no backend with weight, or a
    /// backend Service that does not exist (the Gateway API's 500).
    #[error("no backend: {0}")]
    NoBackend(String),
    /// At the edge: no Gateway route or Ingress rule takes the request.
    #[error("no route for {0}")]
    NoRoute(String),
}

/// Authorization.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// What denied it: `<kind> <namespace>/<name> rule <n>` or `default deny`.
    #[error("access denied: {0}")]
    Denied(String),
    #[error("no policy yet")]
    NoPolicy,
    /// A local rate limit: `RateLimitPolicy <namespace>/<name>` and when
    /// the client may try again.
    #[error("rate limited by {policy}")]
    RateLimited {
        policy: String,
        retry_after: std::time::Duration,
    },
}

/// An HTTP request refused or failed at the proxy.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request target longer than {0} bytes")]
    UriTooLong(usize),
    #[error("request headers larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("CONNECT tunnels from applications are not allowed")]
    ConnectRefused,
    /// RFC 9110 §15.5.20: the request's host is served with another
    /// certificate than the connection's SNI named.
    #[error("{0} is not served on this connection (its TLS server name was another's)")]
    Misdirected(String),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error("upstream request failed: {0}")]
    Upstream(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The caller's own `grpc-timeout` on a request no route takes.
    #[error("grpc-timeout ({0:?}) expired")]
    GrpcTimeout(std::time::Duration),
    /// A route's timeout: which one, how long, and whose.
    #[error("{which} ({after:?}) of {route} expired")]
    RouteTimeout {
        /// `timeouts.request`, `timeouts.backendRequest` or `grpc-timeout`.
        which: &'static str,
        after: std::time::Duration,
        route: String,
    },
}

/// Any failure on the data path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Authz(#[from] AuthzError),
    #[error(transparent)]
    Http(#[from] HttpError),
}
