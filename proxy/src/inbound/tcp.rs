//! Inbound opaque TCP (and HTTP when no rule reads HTTP fields): authorized
//! once per connection, relayed to the app, and closed when a later policy
//! revokes it.

use std::convert::Infallible;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::authorize::{Authorizer, Destination};
use super::identify::Client;
use crate::errors::Error;
use crate::http::client::{DEFAULT_APP_CONNECT_TIMEOUT, connect_tcp};
use crate::http::server;
use crate::transport::detect::Protocol;
use crate::transport::relay::relay;

/// How long a denied HTTP client gets to read its 403.
const DENIAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection relayed opaque.
pub struct Connection {
    pub client: Client,
    pub dst: Destination,
    pub tls: bool,
    pub protocol: Protocol,
    pub target: std::net::SocketAddr,
    pub idle_timeout: Duration,
}

/// Authorizes `conn` once and relays it to the app until either side ends,
/// the connection idles out, or a new policy revokes it.
pub async fn serve<S>(stream: S, conn: Connection, authz: &Authorizer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = conn.protocol == Protocol::Http1;
    if let Err(denied) = authz.connection(&conn.client, conn.dst, conn.tls) {
        // An HTTP client is told what denied it, as on the per-request path.
        if http {
            refuse_http(stream, Error::from(denied)).await;
        }
        return;
    }
    let tls = if conn.tls { "true" } else { "false" };
    metrics::counter!("mesh_tcp_connections_total", "direction" => "inbound", "tls" => tls)
        .increment(1);
    let app = match connect_tcp(conn.target, DEFAULT_APP_CONNECT_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => {
            let reason = if matches!(e, crate::errors::ConnectError::ConnectTimeout { .. }) {
                "app_connect_timeout"
            } else {
                "app_connect"
            };
            metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => reason).increment(1);
            tracing::warn!(peer = %conn.client.addr, client = conn.client.name(), error = %e, "cannot connect to the app");
            return;
        }
    };
    tokio::select! {
        r = relay(stream, app, conn.idle_timeout) => {
            if let Err(e) = r {
                tracing::debug!(peer = %conn.client.addr, client = conn.client.name(), target = %conn.target, error = %e, "inbound connection ended");
            }
        }
        _ = authz.revoked(&conn.client, conn.dst, http) => {
            tracing::info!(peer = %conn.client.addr, client = conn.client.name(), port = conn.dst.port, "open connection closed: no longer allowed by policy");
        }
    }
}

/// Answers every request on `stream` with `err` and closes.
pub async fn refuse_http<S>(stream: S, err: Error)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let err = std::sync::Arc::new(err);
    let svc = hyper::service::service_fn(move |_req| {
        let err = err.clone();
        async move {
            let mut r = err.to_response(false);
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            Ok::<_, Infallible>(r)
        }
    });
    let (_trigger, drain) = crate::drain::new();
    let _ = tokio::time::timeout(
        DENIAL_WRITE_TIMEOUT,
        server::serve(
            stream,
            server::Version::Http1,
            svc,
            &server::Limits::default(),
            &drain,
        ),
    )
    .await;
}
