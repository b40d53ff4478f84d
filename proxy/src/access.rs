//! The access log: one line per connection decision and per HTTP request,
//! written in one place so every side logs the same fields.

use std::net::SocketAddr;

use mesh_policy::Decision;

fn dry_run(d: &Decision) -> String {
    d.dry_run
        .as_ref()
        .map(|d| d.decided_by.to_string())
        .unwrap_or_default()
}

/// A connection-level decision.
pub fn tcp(
    direction: &'static str,
    src: SocketAddr,
    client: &str,
    port: u16,
    tls: bool,
    d: &Decision,
) {
    tracing::info!(
        access = direction,
        %src,
        client,
        port,
        tls,
        decision = d.label(),
        policy = %d.decided_by,
        dry_run = %dry_run(d),
        "tcp"
    );
}

/// An outbound connection's egress decision.
pub fn outbound(dst: SocketAddr, server: &str, d: &Decision) {
    tracing::info!(
        access = "outbound",
        %dst,
        server,
        decision = d.label(),
        policy = %d.decided_by,
        "tcp"
    );
}

/// A plaintext client refused by STRICT PeerAuthentication.
pub fn refused_plaintext(src: SocketAddr, port: u16, policy: &str) {
    tracing::info!(access = "inbound", %src, client = "-", port, tls = false, decision = "deny", policy, "http");
}

/// One HTTP request's decision.
pub struct Request<'a> {
    pub src: SocketAddr,
    pub client: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub host: Option<&'a str>,
}

pub fn http(r: &Request<'_>, d: &Decision) {
    tracing::info!(
        access = "inbound",
        src = %r.src,
        client = r.client,
        method = r.method,
        path = r.path,
        host = r.host.unwrap_or("-"),
        decision = d.label(),
        policy = %d.decided_by,
        dry_run = %dry_run(d),
        "http"
    );
}

/// A request refused before any decision (e.g. an ambiguous path).
pub fn http_refused(r: &Request<'_>, status: u16, error: &dyn std::fmt::Display) {
    tracing::info!(access = "inbound", src = %r.src, client = r.client, method = r.method, path = r.path, status, error = %error, "http");
}
