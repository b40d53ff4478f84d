//! Serving HTTP/1.1 and HTTP/2 connections with the limits that keep a
//! hostile client bounded, finishing what is in flight when the proxy drains.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Body;
use super::flood::{self, FloodLimits};
use super::framing::{self, Verdicts};
use crate::drain::Drain;

/// Largest request head accepted: bigger heads get 431. Browsers send a few
/// KiB; 64 KiB leaves room for large cookies and tokens.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest request target: longer ones get 414. 8 KiB is what RFC 9112
/// §3 recommends every party support, and more than any real API uses.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// A client must finish sending a request head within this (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams an application's HTTP/2 connection may have open at once: the
/// value RFC 9113 §6.5.2 recommends as the least a server should allow;
/// more concurrency takes more connections, each bounded on its own.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a peer proxy's pooled connection may have open at once: one
/// pooled connection carries every application connection between two
/// pods, so it gets more room than one application connection.
pub const DEFAULT_MESH_H2_MAX_CONCURRENT_STREAMS: u32 = 2048;
/// An HTTP/2 connection that has had no open stream for this long is closed.
pub const DEFAULT_H2_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// After GOAWAY for a flood, in-flight streams get this long before the
/// connection is closed.
const FLOOD_GRACE: Duration = Duration::from_secs(1);
/// Keep-alive PINGs on HTTP/2 connections: a peer that vanished without a
/// FIN is noticed within interval + timeout.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// Limits on what one client connection may make the proxy hold.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub header_read_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub flood: FloodLimits,
    /// RFC 8441 extended CONNECT (WebSocket between proxies).
    pub extended_connect: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            flood: FloodLimits::default(),
            extended_connect: false,
        }
    }
}

/// Serves `stream` until the client closes or the proxy drains (then what
/// is in flight finishes: HTTP/1.1 answers `Connection: close`, HTTP/2
/// sends GOAWAY).
pub async fn serve<S, Svc>(stream: S, version: Version, svc: Svc, limits: &Limits, drain: &Drain)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<http::Request<Incoming>, Response = http::Response<Body>> + Send + Clone + 'static,
    Svc::Future: Send + 'static,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match version {
        Version::Http1 => serve_http1(stream, svc, limits, drain).await,
        Version::Http2 => serve_http2(stream, svc, limits, drain).await,
    }
}

async fn serve_http1<S, Svc>(stream: S, svc: Svc, limits: &Limits, drain: &Drain)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<http::Request<Incoming>, Response = http::Response<Body>> + Send + 'static,
    Svc::Future: Send + 'static,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stream, verdicts) =
        framing::follow(stream, limits.max_header_bytes + limits.max_uri_bytes);
    let svc = RefuseAmbiguous {
        inner: svc,
        verdicts,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192) + limits.max_uri_bytes);
    let served = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        _ = drain.signaled() => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}

async fn serve_http2<S, Svc>(stream: S, svc: Svc, limits: &Limits, drain: &Drain)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service<http::Request<Incoming>, Response = http::Response<Body>> + Send + Clone + 'static,
    Svc::Future: Send + 'static,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (guarded, flood) = flood::guard(stream, limits.flood.clone());
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    if limits.extended_connect {
        builder.enable_connect_protocol();
    }
    let served = builder.serve_connection(TokioIo::new(guarded), svc);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        _ = drain.signaled() => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
            return;
        }
        frame = flood.tripped() => {
            metrics::counter!("mesh_http_refused_total", "reason" => frame.reason()).increment(1);
            tracing::warn!(reason = frame.reason(), "HTTP/2 flood: GOAWAY, connection closed");
            served.as_mut().graceful_shutdown();
        }
    }
    let _ = tokio::time::timeout(FLOOD_GRACE, served).await;
}

/// Answers a request whose framing was ambiguous on the wire with 400 and
/// `Connection: close`, before the service sees it.
struct RefuseAmbiguous<S> {
    inner: S,
    verdicts: Verdicts,
}

impl<S> Service<http::Request<Incoming>> for RefuseAmbiguous<S>
where
    S: Service<http::Request<Incoming>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<http::Response<Body>, S::Error>>,
        S::Future,
    >;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        use futures_util::future::Either;
        match self.verdicts.next() {
            Some(a) => {
                metrics::counter!("mesh_http_refused_total", "reason" => "ambiguous_framing")
                    .increment(1);
                tracing::info!(error = a.message(), "request refused: ambiguous framing");
                let mut r = crate::errors::Error::from(crate::errors::HttpError::BadRequest(
                    a.message().into(),
                ))
                .to_response(false);
                r.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                Either::Left(std::future::ready(Ok(r)))
            }
            None => Either::Right(self.inner.call(req)),
        }
    }
}
