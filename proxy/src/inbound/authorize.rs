//! Inbound authorization: one place that asks the evaluator about a client,
//! at connection level (L4) or per request (with its HTTP facts), counts the
//! decision and watches open connections for revocation.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_policy::{Decision, Http, RateLimitRequest};

use super::identify::Client;
use crate::access;
use crate::discovery::DiscoveryRx;
use crate::errors::AuthzError;
use crate::http::ratelimit::{Limiters, RateLimitTarget};
use crate::policy::{self, LocalWorkload, PolicyRx};

/// What inbound decisions read.
#[derive(Clone)]
pub struct Authorizer {
    pub policy: PolicyRx,
    pub discovery: DiscoveryRx,
    pub local: Arc<LocalWorkload>,
}

/// The destination of an inbound connection: the address the client reached
/// and the port it asked for.
#[derive(Debug, Clone, Copy)]
pub struct Destination {
    pub ip: IpAddr,
    pub port: u16,
}

impl Authorizer {
    /// The inbound decision for `client`, with its workload's labels when
    /// discovery knows it. `None` before any policy arrived.
    pub fn decide(
        &self,
        client: &Client,
        dst: Destination,
        http: Option<Http<'_>>,
    ) -> Option<Decision> {
        let view = self.policy.borrow().clone();
        let mesh = self.discovery.borrow().clone();
        let source = mesh
            .source(client.addr.ip(), client.identity.as_ref())
            .map(|w| (w.namespace.as_str(), &w.labels));
        policy::decide_inbound(
            view.as_deref(),
            &self.local,
            policy::Inbound {
                peer: client.peer(),
                source,
                source_ip: client.addr.ip(),
                destination_ip: dst.ip,
                port: dst.port,
                http,
            },
        )
    }

    /// The connection-level decision, counted and logged.
    pub fn connection(
        &self,
        client: &Client,
        dst: Destination,
        tls: bool,
    ) -> Result<(), AuthzError> {
        let Some(decision) = self.decide(client, dst, None) else {
            tracing::warn!(peer = %client.addr, "refused: no policy yet");
            return Err(AuthzError::NoPolicy);
        };
        policy::record("inbound", &decision);
        crate::flows::record(&client.source(), dst.port, &decision);
        access::tcp(
            "inbound",
            client.addr,
            client.name(),
            dst.port,
            tls,
            &decision,
        );
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(AuthzError::Denied(decision.decided_by.to_string()))
        }
    }

    /// What the rate-limit layer counts an allowed request by; `None`
    /// when no RateLimitPolicy is in force. The client is its SPIFFE ID, or
    /// its address for a plaintext caller.
    pub fn rate_limit<'a>(
        &'a self,
        limiters: &'a Limiters,
        client: &'a Client,
        port: u16,
        method: &'a str,
        path: &'a str,
        host: Option<&'a str>,
    ) -> Option<RateLimitTarget<'a>> {
        let policy = self.policy.borrow().clone()?;
        if !policy.evaluator.has_rate_limits() {
            return None;
        }
        let request = RateLimitRequest {
            destination: self.local.as_workload(),
            port,
            method,
            path,
            principal: client.identity.as_ref().map(|i| i.as_str()),
            host,
            route: None,
            now: SystemTime::now(),
        };
        let client = client.source();
        Some(RateLimitTarget {
            limiters,
            policy,
            request,
            client,
        })
    }

    /// PeerAuthentication for a plaintext caller: counted and logged when refused.
    pub fn plaintext_allowed(&self, client: &Client, port: u16) -> bool {
        let Some(view) = self.policy.borrow().clone() else {
            return false;
        };
        let (mode, decided_by) =
            view.evaluator
                .mtls_mode(&self.local.as_workload(), port, SystemTime::now());
        if mode != mesh_policy::MtlsMode::Strict {
            return true;
        }
        let policy = decided_by.map_or_else(|| "default deny".to_string(), |d| d.to_string());
        metrics::counter!("mesh_authz_decisions_total", "direction" => "inbound", "decision" => "deny", "policy" => policy.clone()).increment(1);
        access::refused_plaintext(client.addr, port, &policy);
        false
    }

    /// Whether HTTP must be served request by request: some rule reads HTTP
    /// fields (or there is no policy yet, and every request is refused).
    pub fn reads_http(&self) -> bool {
        self.policy
            .borrow()
            .as_ref()
            .is_none_or(|v| v.evaluator.reads_http())
    }

    /// Resolves when a new policy (or an expiring exception) no longer allows
    /// this open connection. `http`: the connection carries HTTP relayed
    /// opaque; it is closed when a policy starts reading HTTP, so the client
    /// reconnects and is served per request.
    pub async fn revoked(&self, client: &Client, dst: Destination, http: bool) {
        let mut rx = self.policy.clone();
        loop {
            let next_expiry = rx.borrow_and_update().as_ref().and_then(|v| v.next_expiry);
            let wait_expiry = async {
                match next_expiry.and_then(|t| t.duration_since(SystemTime::now()).ok()) {
                    Some(d) => tokio::time::sleep(d + Duration::from_millis(1)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return std::future::pending().await },
                _ = wait_expiry => {}
            }
            if http && self.reads_http() {
                return;
            }
            if let Some(d) = self.decide(client, dst, None)
                && !d.is_allowed()
            {
                policy::record("inbound", &d);
                return;
            }
        }
    }
}
