//! The HTTP layer shared by every side of the proxy: serving connections
//! (with the limits that keep hostile clients bounded, `server`, `flood`,
//! `guard`), the pooled HTTP/2 connections between proxies (`pool`), the
//! client to the local app (`client`), header rules (`headers`) and
//! per-request telemetry (`telemetry`, `body`).

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

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Every body the proxy sends: streamed from a peer, or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;
