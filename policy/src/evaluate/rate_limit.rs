//! RateLimitPolicy lookup at the limited workload's proxy: which limits a
//! request counts against. The proxy keeps the counters (GCRA); the
//! evaluator says which apply, so `meshctl policy check` gives the same
//! answer as the running mesh.
//!
//! Policies of the workload's namespace and of the root namespace apply
//! when their selector, ports, paths, methods, hosts and routes all take
//! the request. Every
//! policy that applies counts the request; the first override naming the
//! client replaces the policy's `perClient` limit for that client.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Evaluator, Workload, principal_namespace};
use crate::compile::namespace_slice;
use crate::compile::rate_limit::{OverrideRule, Quota, RateLimit};
use crate::resource::{ObjectRef, ROOT_NAMESPACE};

/// A request at the limited workload's inbound.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitRequest<'a> {
    pub destination: Workload<'a>,
    pub port: u16,
    pub method: &'a str,
    /// Normalized, without the query.
    pub path: &'a str,
    /// The client's verified SPIFFE ID (with or without `spiffe://`);
    /// `None` for a plaintext caller.
    pub principal: Option<&'a str>,
    /// The request's `Host` / `:authority` (a port, a trailing dot and
    /// case are ignored).
    pub host: Option<&'a str>,
    /// The route that took the request (at the ingress).
    pub route: Option<&'a ObjectRef>,
    pub now: SystemTime,
}

/// One policy the request counts against.
#[derive(Debug, Clone)]
pub struct RateLimitMatch<'e> {
    pub policy: &'e Arc<ObjectRef>,
    /// Counted and reported, never refused.
    pub dry_run: bool,
    pub total: Option<Quota>,
    /// This client's own limit: an override's, else `perClient`.
    pub per_client: Option<Quota>,
    /// The index in `spec.overrides` that set `per_client`.
    pub by_override: Option<usize>,
}

impl Evaluator {
    /// Whether any RateLimitPolicy is in the snapshot (requests then need
    /// the lookup, and HTTP is served request by request).
    pub fn has_rate_limits(&self) -> bool {
        !self.tables.rate_limits.is_empty()
    }

    /// The limits `request` counts against, in (namespace, name) order.
    pub fn rate_limits<'e>(
        &'e self,
        request: &RateLimitRequest<'_>,
    ) -> impl Iterator<Item = RateLimitMatch<'e>> {
        let r = *request;
        let principal = r
            .principal
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p));
        let client_namespace = principal.and_then(principal_namespace);
        let host = r.host.map(bare_host);
        let own = namespace_slice(&self.tables.rate_limits, r.destination.namespace, |l| {
            &l.common
        });
        let root = if r.destination.namespace == ROOT_NAMESPACE {
            &[][..]
        } else {
            namespace_slice(&self.tables.rate_limits, ROOT_NAMESPACE, |l| &l.common)
        };
        own.iter()
            .chain(root)
            .filter(move |l| applies(l, &r, host.as_deref()))
            .map(move |l| {
                let o = l
                    .overrides
                    .iter()
                    .position(|o| names(o, principal, client_namespace));
                RateLimitMatch {
                    policy: &l.common.object,
                    dry_run: l.common.dry_run,
                    total: l.total,
                    per_client: o.map(|i| l.overrides[i].quota).or(l.per_client),
                    by_override: o,
                }
            })
    }
}

/// `Shop.Example.:8080` → `shop.example`.
fn bare_host(authority: &str) -> String {
    let host = authority
        .parse::<http::uri::Authority>()
        .map_or(authority.to_owned(), |a| a.host().to_owned());
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn applies(l: &RateLimit, r: &RateLimitRequest<'_>, host: Option<&str>) -> bool {
    l.common.active(r.now, true)
        && l.selector
            .as_ref()
            .is_none_or(|s| s.matches(r.destination.labels))
        && (l.ports.is_empty() || l.ports.contains(&r.port))
        && l.paths.as_ref().is_none_or(|p| p.matches(r.path))
        && (l.methods.is_empty() || l.methods.iter().any(|m| m == r.method))
        && (l.hosts.is_empty() || host.is_some_and(|h| l.hosts.iter().any(|p| p.matches(h))))
        && (l.routes.is_empty()
            || r.route.is_some_and(|route| {
                l.routes
                    .iter()
                    .any(|(ns, name)| *ns == route.namespace && *name == route.name)
            }))
}

fn names(o: &OverrideRule, principal: Option<&str>, namespace: Option<&str>) -> bool {
    o.principals
        .as_ref()
        .is_some_and(|p| principal.is_some_and(|v| p.matches(v)))
        || o.namespaces
            .as_ref()
            .is_some_and(|n| namespace.is_some_and(|v| n.matches(v)))
}
