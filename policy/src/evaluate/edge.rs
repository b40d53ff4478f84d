//! Route lookup at the edge, as the ingress asks it: the listener a request
//! arrived on (by port and host), the routes attached to it, the Ingress
//! rules on the `--https-port`; and what the ingress must listen on and
//! which certificate it serves for which host.
//!
//! Precedence (Gateway API): the most specific listener hostname, then the
//! route hostname that matches most specifically (exact, then the longest
//! wildcard, then none), then the match precedence (an exact path, the
//! longest prefix, a method, the most headers, the most query parameters),
//! then route and rule order. A Gateway's routes come before the
//! Ingresses on a shared port.

use std::sync::Arc;
use std::time::SystemTime;

use super::Evaluator;
use super::route::{Facts, RouteDecision, matches};
use crate::compile::edge::{EdgeEntry, EdgeProtocol, Host, host_rank};
use crate::resource::ObjectRef;

/// A request at the edge.
pub struct EdgeRequest<'a> {
    /// The port it arrived on.
    pub port: u16,
    /// Whether this port serves Ingresses (`--https-port`).
    pub ingress: bool,
    /// The request's host, lowercase, without a port.
    pub host: &'a str,
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub now: SystemTime,
}

/// A listener the ingress must open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeListenerInfo {
    pub gateway: Arc<ObjectRef>,
    pub name: String,
    pub port: u16,
    pub protocol: EdgeProtocol,
    pub hostname: Option<Host>,
    /// (namespace, name) of each `kubernetes.io/tls` Secret, the first the
    /// one served.
    pub certificates: Vec<(String, String)>,
}

/// A certificate the ingress serves: on `port`, for `hosts` (empty: any
/// host that nothing more specific claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCertificate {
    pub port: u16,
    pub hosts: Vec<Host>,
    pub secret: (String, String),
    /// The Gateway or Ingress that asked for it.
    pub owner: Arc<ObjectRef>,
}

impl Evaluator {
    /// The Gateway listeners in force, in Gateway order.
    pub fn edge_listeners(&self, now: SystemTime) -> Vec<EdgeListenerInfo> {
        let edge = &self.tables.edge;
        edge.gateways
            .iter()
            .filter(|g| g.common.active(now, false))
            .flat_map(|g| {
                g.listeners.iter().map(|l| EdgeListenerInfo {
                    gateway: g.common.object.clone(),
                    name: l.name.clone(),
                    port: l.port,
                    protocol: l.protocol,
                    hostname: l.hostname.clone(),
                    certificates: l
                        .certificates
                        .iter()
                        .filter(|c| c.permitted.holds(now))
                        .map(|c| (c.namespace.clone(), c.name.clone()))
                        .collect(),
                })
            })
            .collect()
    }

    /// Every certificate to serve: the HTTPS listeners' and, on
    /// `ingress_port`, the Ingresses' `tls`.
    pub fn edge_certificates(&self, ingress_port: u16, now: SystemTime) -> Vec<EdgeCertificate> {
        let mut out: Vec<EdgeCertificate> = self
            .edge_listeners(now)
            .into_iter()
            .filter(|l| l.protocol == EdgeProtocol::Https)
            .filter_map(|l| {
                Some(EdgeCertificate {
                    port: l.port,
                    hosts: l.hostname.into_iter().collect(),
                    secret: l.certificates.first()?.clone(),
                    owner: l.gateway,
                })
            })
            .collect();
        let routes = &self.tables.routes.routes;
        for (owner, hosts, secret) in &self.tables.edge.ingress_tls {
            let active = routes
                .iter()
                .find(|r| r.common.object == *owner)
                .is_some_and(|r| r.common.active(now, false));
            if active {
                out.push(EdgeCertificate {
                    port: ingress_port,
                    hosts: hosts.clone(),
                    secret: secret.clone(),
                    owner: owner.clone(),
                });
            }
        }
        out
    }

    /// Whether anything is routed at the edge at all.
    pub fn has_edge(&self) -> bool {
        let edge = &self.tables.edge;
        !edge.gateways.is_empty() || !edge.ingress.is_empty()
    }

    /// The rule that takes `request`, if any.
    pub fn edge_route<'e>(&'e self, request: &EdgeRequest<'_>) -> Option<RouteDecision<'e>> {
        let edge = &self.tables.edge;
        let routes = &self.tables.routes.routes;
        let facts = Facts {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
        };
        let best = |entries: &[EdgeEntry], listener_host: Option<&Host>| {
            entries
                .iter()
                .filter_map(|e| {
                    let route = &routes[e.route];
                    if !route.common.active(request.now, false) {
                        return None;
                    }
                    let rule = &route.rules[e.rule];
                    let rank = host_rank(&rule.hostnames, request.host)?;
                    // A route without hostnames takes the listener's.
                    let rank = match (rule.hostnames.is_empty(), listener_host) {
                        (true, Some(h)) => h.rank(),
                        _ => rank,
                    };
                    // A route's hostnames must also fit the listener's.
                    if listener_host.is_some_and(|h| !h.matches(request.host)) {
                        return None;
                    }
                    matches(&rule.matches[e.matched], &facts).then_some((rank, *e))
                })
                // Entries are in match precedence already: the first of the
                // best host rank wins.
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, e)| e)
        };
        // The most specific listener on the port that takes the host.
        let mut served: Vec<_> = edge
            .listeners
            .iter()
            .filter_map(|s| {
                let gw = &edge.gateways[s.gateway];
                let l = &gw.listeners[s.listener];
                if l.port != request.port || !gw.common.active(request.now, false) {
                    return None;
                }
                let rank = match &l.hostname {
                    None => (2, std::cmp::Reverse(0)),
                    Some(h) if h.matches(request.host) => h.rank(),
                    Some(_) => return None,
                };
                Some((rank, s, l))
            })
            .collect();
        served.sort_by_key(|(rank, _, _)| *rank);
        let entry = served
            .iter()
            .find_map(|(_, s, l)| best(&s.entries, l.hostname.as_ref()))
            .or_else(|| request.ingress.then(|| best(&edge.ingress, None)).flatten())?;
        Some(RouteDecision::of(
            &routes[entry.route],
            entry.rule,
            entry.matched,
        ))
    }
}
