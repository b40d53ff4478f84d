//! HTTPRoute lookup for a request to a Service, as the client's proxy asks
//! it: which rule applies, hence which backends, timeouts and retries.
//!
//! GAMMA: a route in the Service's own namespace (a producer route) applies
//! to every client; a route in the client's namespace (a consumer route)
//! applies to that namespace's clients only, and when a namespace has
//! consumer routes for a Service its clients see those instead of the
//! producer's. Within them the Gateway API's precedence picks the match.

use std::sync::Arc;
use std::time::SystemTime;

use super::Evaluator;
use crate::compile::http_route::{
    Backend, Entry, HeaderEdits, Match, PathRule, Retry, Route, Timeouts,
};
use crate::resource::ObjectRef;

/// A request to a Service, as a route sees it.
pub struct RouteRequest<'a> {
    /// The calling workload's namespace (consumer routes), when known.
    pub client_namespace: Option<&'a str>,
    pub service_namespace: &'a str,
    pub service_name: &'a str,
    /// The Service port the client called.
    pub port: u16,
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub now: SystemTime,
}

/// Methods that may be sent twice without a route saying so (RFC 9110
/// §9.2.2). Others are retried only by a rule whose match names the method.
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// The rule that applies.
#[derive(Debug)]
pub struct RouteDecision<'e> {
    pub route: Arc<ObjectRef>,
    /// Index in `spec.rules`.
    pub rule: usize,
    /// Empty, or all weights 0: the Gateway API answers 500.
    pub backends: &'e [Backend],
    pub request_headers: &'e HeaderEdits,
    pub timeouts: Timeouts,
    pub retry: Option<&'e Retry>,
    /// The match named the request's method: a route that says `method:
    /// POST` and `retry` means POSTs may be retried.
    pub method_named: bool,
}

impl Evaluator {
    /// Whether any route is in force for `service` at all (its requests then
    /// need the lookup).
    pub fn has_routes(&self, service_namespace: &str, service_name: &str) -> bool {
        self.tables
            .routes
            .by_parent
            .get(service_namespace)
            .is_some_and(|m| m.contains_key(service_name))
    }

    /// The route rule for `request`, if a route in force matches it.
    pub fn route<'e>(&'e self, request: &RouteRequest<'_>) -> Option<RouteDecision<'e>> {
        let table = &self.tables.routes;
        let entries = table
            .by_parent
            .get(request.service_namespace)?
            .get(request.service_name)?;
        let active = |e: &&Entry| {
            let route = &table.routes[e.route];
            route.common.active(request.now, false) && e.port.is_none_or(|p| p == request.port)
        };
        let consumer = |e: &&Entry| {
            let ns = &table.routes[e.route].common.object.namespace;
            ns != request.service_namespace && Some(ns.as_str()) == request.client_namespace
        };
        let producer =
            |e: &&Entry| table.routes[e.route].common.object.namespace == request.service_namespace;
        let has_consumer = entries.iter().filter(active).any(|e| consumer(&e));
        let entry = entries
            .iter()
            .filter(active)
            .filter(|e| {
                if has_consumer {
                    consumer(e)
                } else {
                    producer(e)
                }
            })
            .find(|e| {
                let m = &table.routes[e.route].rules[e.rule].matches[e.matched];
                matches(m, &Facts::of(request))
            })?;
        Some(RouteDecision::of(
            &table.routes[entry.route],
            entry.rule,
            entry.matched,
        ))
    }
}

impl<'e> RouteDecision<'e> {
    /// Rule `rule` of `route`, taken by its match `matched`.
    pub(crate) fn of(route: &'e Route, rule: usize, matched: usize) -> Self {
        let r = &route.rules[rule];
        RouteDecision {
            route: route.common.object.clone(),
            rule,
            backends: &r.backends,
            request_headers: &r.request_headers,
            timeouts: r.timeouts,
            retry: r.retry.as_ref(),
            method_named: r.matches[matched].method.is_some(),
        }
    }
}

/// What a route match reads of a request.
pub(crate) struct Facts<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a http::HeaderMap,
}

impl<'a> Facts<'a> {
    fn of(r: &RouteRequest<'a>) -> Self {
        Facts {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
        }
    }
}

pub(crate) fn matches(m: &Match, r: &Facts<'_>) -> bool {
    let path_ok = match &m.path {
        PathRule::Exact(p) => r.path == p,
        PathRule::Prefix(p) => {
            p.is_empty()
                || r.path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
    };
    path_ok
        && m.method.as_deref().is_none_or(|method| method == r.method)
        && m.headers.iter().all(|(name, value)| {
            r.headers
                .get_all(name.as_str())
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes())
        })
        && m.query.iter().all(|(name, value)| {
            // Only the first occurrence of a parameter counts.
            r.query
                .unwrap_or_default()
                .split('&')
                .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                .find(|(k, _)| k == name)
                .is_some_and(|(_, v)| v == value)
        })
}
