//! The client to the local app, shared by every inbound connection: idle
//! HTTP/1.1 connections per port are kept and reused (one request at a time
//! each), one HTTP/2 connection per port carries every HTTP/2 request, and
//! an upgrade (WebSocket) gets a connection of its own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::Body;
use super::body::Observed;
use super::server::Version;
use crate::errors::{ConnectError, Error, HttpError};

/// Connecting to the local app should be near-instant; a slow connect means it is down.
pub const DEFAULT_APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle HTTP/1.1 connections kept per app port: enough for the concurrency
/// of a busy pod, few enough that an idle proxy holds little.
const MAX_IDLE_PER_PORT: usize = 64;
/// An idle app connection older than this is not reused (apps close idle
/// keep-alive connections after 60 s or more; reusing one they are closing
/// would fail the request).
const IDLE_REUSE_LIMIT: Duration = Duration::from_secs(30);

/// Opens TCP to `addr` within `timeout`, with Nagle off.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::ConnectTimeout { addr })?
        .map_err(|source| ConnectError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

type Idle = Vec<(Instant, http1::SendRequest<Body>)>;

/// Connections to the app at one address, any port.
pub struct AppClient {
    ip: IpAddr,
    idle: Mutex<HashMap<u16, Idle>>,
    h2: tokio::sync::Mutex<HashMap<u16, http2::SendRequest<Body>>>,
}

impl AppClient {
    pub fn new(ip: IpAddr) -> Arc<Self> {
        Arc::new(Self {
            ip,
            idle: Mutex::new(HashMap::new()),
            h2: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Sends `req` to the app's `port` in the app's protocol.
    pub async fn send(
        self: &Arc<Self>,
        port: u16,
        version: Version,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, Error> {
        match version {
            Version::Http1 => self.send_http1(port, req).await,
            Version::Http2 => self.send_http2(port, req).await,
        }
    }

    fn take_idle(&self, port: u16) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&port)?;
        while let Some((since, s)) = list.pop() {
            if since.elapsed() < IDLE_REUSE_LIMIT && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, port: u16, s: http1::SendRequest<Body>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(port).or_default();
        if list.len() < MAX_IDLE_PER_PORT {
            list.push((Instant::now(), s));
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        port: u16,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, Error> {
        let mut req = req;
        // A kept connection the app has just closed gives the request back
        // unsent; it then goes on a new connection.
        if let Some(mut s) = self.take_idle(port) {
            match s.try_send_request(req).await {
                Ok(resp) => return Ok(self.recycle(port, s, resp)),
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(HttpError::Upstream(e.into_error().to_string()).into()),
                },
            }
        }
        let mut s = self.connect_http1(port, false).await?;
        match s.send_request(req).await {
            Ok(resp) => Ok(self.recycle(port, s, resp)),
            Err(e) => Err(HttpError::Upstream(e.to_string()).into()),
        }
    }

    /// The connection goes back to the idle list once the response body is
    /// read to its end.
    fn recycle(
        self: &Arc<Self>,
        port: u16,
        s: http1::SendRequest<Body>,
        resp: http::Response<hyper::body::Incoming>,
    ) -> http::Response<Body> {
        let this = self.clone();
        resp.map(move |b| {
            Observed::new(b, move |end| {
                if !end.failed {
                    this.put_idle(port, s);
                }
            })
            .boxed()
        })
    }

    async fn connect_http1(
        &self,
        port: u16,
        upgrades: bool,
    ) -> Result<http1::SendRequest<Body>, Error> {
        let addr = SocketAddr::new(self.ip, port);
        let tcp = connect_tcp(addr, DEFAULT_APP_CONNECT_TIMEOUT)
            .await
            .inspect_err(app_connect_failed)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| HttpError::Upstream(e.to_string()))?;
        if upgrades {
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
        } else {
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        Ok(sender)
    }

    /// An upgrade request (WebSocket) on a connection of its own: after a
    /// `101` the connection is the tunnel.
    pub async fn send_upgrade(
        &self,
        port: u16,
        req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        let mut s = self.connect_http1(port, true).await?;
        s.send_request(req)
            .await
            .map_err(|e| HttpError::Upstream(e.to_string()).into())
    }

    async fn send_http2(
        &self,
        port: u16,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, Error> {
        let mut conns = self.h2.lock().await;
        let mut s = match conns.get(&port) {
            Some(s) if !s.is_closed() => s.clone(),
            _ => {
                let addr = SocketAddr::new(self.ip, port);
                let tcp = connect_tcp(addr, DEFAULT_APP_CONNECT_TIMEOUT)
                    .await
                    .inspect_err(app_connect_failed)?;
                let (s, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| HttpError::Upstream(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                conns.insert(port, s.clone());
                s
            }
        };
        drop(conns);
        match s.send_request(req).await {
            Ok(resp) => Ok(resp.map(|b| b.boxed())),
            Err(e) => Err(HttpError::Upstream(e.to_string()).into()),
        }
    }
}

fn app_connect_failed(_: &ConnectError) {
    metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "app_connect").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An HTTP/1.1 app on loopback that answers `status` with no body and
    /// counts the connections it accepts.
    async fn app(status: http::StatusCode) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counted = accepts.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        let mut r =
                            http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                        *r.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(r)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (port, accepts)
    }

    fn get() -> http::Request<Body> {
        http::Request::builder()
            .uri("/")
            .header(http::header::HOST, "app")
            .body(crate::http::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_after_a_response_without_a_body() {
        let (port, accepts) = app(http::StatusCode::NO_CONTENT).await;
        let client = AppClient::new(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..3 {
            let resp = client.send(port, Version::Http1, get()).await.unwrap();
            assert_eq!(resp.status(), http::StatusCode::NO_CONTENT);
            // The empty body is dropped unread, as hyper does with a 204.
            drop(resp);
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_down_app_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = AppClient::new(IpAddr::from([127, 0, 0, 1]));
        let err = client.send(port, Version::Http1, get()).await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)), "{err:?}");
    }
}
