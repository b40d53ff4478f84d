//! What the evaluator is asked about: one connection or one HTTP request.
//!
//! Everything is borrowed so building a request costs nothing; the proxy
//! fills it from the accepted connection and the parsed request head.

use std::net::IpAddr;
use std::time::SystemTime;

use crate::resource::Labels;

/// Who is calling, as proven by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer<'a> {
    /// A verified mTLS peer; `principal` is its SPIFFE ID, with or without
    /// the `spiffe://` scheme (`spiffe://td/ns/shop/sa/web`).
    Mtls { principal: &'a str },
    /// No client certificate: no principal and no namespace (Istio's
    /// unauthenticated peer).
    Plaintext,
}

/// A workload: the namespace it runs in and its pod labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload<'a> {
    pub namespace: &'a str,
    pub labels: &'a Labels,
}

/// Request headers, borrowed from wherever the proxy keeps them.
#[derive(Debug, Clone, Copy, Default)]
pub enum Headers<'a> {
    #[default]
    None,
    /// `(name, value)` pairs; names compare case-insensitively.
    Pairs(&'a [(&'a str, &'a str)]),
    Map(&'a http::HeaderMap),
}

impl Headers<'_> {
    /// Whether any value of header `name` (lowercase) satisfies `test`.
    /// Values that are not visible ASCII cannot match a pattern and are skipped.
    pub(crate) fn any(&self, name: &str, mut test: impl FnMut(&str) -> bool) -> bool {
        match self {
            Headers::None => false,
            Headers::Pairs(pairs) => pairs
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && test(v)),
            Headers::Map(map) => map
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(&mut test)),
        }
    }
}

/// The HTTP attributes of a request. Absent for plain TCP.
#[derive(Debug, Clone, Copy)]
pub struct Http<'a> {
    pub method: &'a str,
    /// Already normalized ([`crate::normalize_path`]): no query, no `..`.
    pub path: &'a str,
    /// The Host / :authority header as sent (with a port if it has one).
    pub host: Option<&'a str>,
    pub headers: Headers<'a>,
    /// `iss/sub` of a validated request credential (JWT), if the proxy has one.
    pub request_principal: Option<&'a str>,
    /// The original client address from trusted forwarding headers; `None`
    /// means the connection's source address.
    pub remote_ip: Option<IpAddr>,
}

/// One question to the evaluator.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub peer: Peer<'a>,
    pub source_ip: Option<IpAddr>,
    /// The calling workload, when known (from discovery, or the local
    /// workload for outbound checks). Needed for NetworkPolicy pod selectors.
    pub source: Option<Workload<'a>>,
    /// The called workload; `None` for a destination outside the mesh.
    pub destination: Option<Workload<'a>>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    pub http: Option<Http<'a>>,
    /// When the question is asked: expiring exceptions are judged against it.
    pub now: SystemTime,
}
