//! The HTTP layer shared by every side of the proxy: serving connections
//! (with the limits that keep hostile clients bounded, `server`, `flood`,
//! `guard`), the pooled HTTP/2 connections between proxies (`pool`), the
//! client to the local app (`client`), header rules (`headers`) and
//! per-request telemetry (`telemetry`, `body`).
//!
//! Traffic management is a stack of tower layers, one per file, each
//! configured by a typed target: `route` (which rule and backend a request
//! to a Service takes), `timeout` (a request's or a try's deadline),
//! `retry` (tries within a budget), `balance` (which endpoint) on the
//! outbound, and `ratelimit` on the inbound. The outbound builds, per
//! request, `Router → Timeout → Retry → Timeout → Balance → endpoint`; a
//! layer whose target is absent passes the request through untouched.

pub mod balance;
pub mod body;
pub mod client;
pub mod flood;
pub mod framing;
pub mod guard;
pub mod headers;
pub mod pool;
pub mod ratelimit;
pub mod retry;
pub mod route;
pub mod server;
pub mod telemetry;
pub mod timeout;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Every body the proxy sends: streamed from a peer, or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// What the traffic layers answer with.
pub type Result = std::result::Result<http::Response<Body>, crate::errors::Error>;

/// A boxed layer future.
pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result> + Send>>;

/// Calls `svc` once, after it is ready.
pub async fn oneshot<S>(mut svc: S, req: http::Request<Body>) -> Result
where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = crate::errors::Error,
        >,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(req).await
}

/// A body with nothing in it.
pub fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}
