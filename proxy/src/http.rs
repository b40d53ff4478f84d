//! The HTTP layer shared by every side of the proxy: serving connections
//! (with the limits that keep hostile clients bounded), the client to the
//! local app, and the header rules (hop-by-hop, identity).

pub mod body;
pub mod client;
pub mod flood;
pub mod headers;
pub mod server;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Every body the proxy sends: streamed from a peer, or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;
