//! The client to the local app: one upstream connection per downstream
//! connection, opened when the first request needs it and again after the
//! app closes it.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::Body;
use crate::errors::{ConnectError, Error, HttpError};

/// Connecting to the local app should be near-instant; a slow connect means it is down.
pub const DEFAULT_APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens TCP to `addr` within `timeout`, with Nagle off.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::ConnectTimeout { addr })?
        .map_err(|source| ConnectError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// HTTP/1.1 to the app at one address.
pub struct AppClient {
    target: SocketAddr,
    upstream: Mutex<Option<SendRequest<Incoming>>>,
}

impl AppClient {
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            upstream: Mutex::new(None),
        }
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Sends `req` to the app, connecting first when there is no open connection.
    pub async fn send(&self, req: http::Request<Incoming>) -> Result<http::Response<Body>, Error> {
        use http_body_util::BodyExt;
        let mut upstream = self.upstream.lock().await;
        if upstream.as_ref().is_none_or(|s| s.is_closed()) {
            *upstream = Some(self.connect().await.inspect_err(|_| {
                metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "app_connect").increment(1);
            })?);
        }
        let Some(sender) = upstream.as_mut() else {
            return Err(HttpError::Unavailable("no connection to the app".into()).into());
        };
        if sender.ready().await.is_err() {
            *upstream = None;
            return Err(HttpError::Upstream("the app closed the connection".into()).into());
        }
        match sender.send_request(req).await {
            Ok(resp) => Ok(resp.map(|b| b.boxed())),
            Err(e) => {
                *upstream = None;
                Err(HttpError::Upstream(e.to_string()).into())
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, Error> {
        let tcp = connect_tcp(self.target, DEFAULT_APP_CONNECT_TIMEOUT).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| HttpError::Upstream(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}
