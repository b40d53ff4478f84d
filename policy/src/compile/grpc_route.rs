//! GRPCRoute → the same rules per parent Service as HTTPRoute: a gRPC call
//! is an HTTP/2 POST to `/<service>/<method>`, so a method match is an
//! exact path (`/shop.v1.Orders/Get`), a service match a path prefix
//! (`/shop.v1.Orders`), and one table answers for both kinds with the
//! Gateway API's precedence (an exact method before a service alone).
//!
//! Checked here, with the field in every error: names are gRPC names, a
//! method match names its service (Palisade cannot match a method of any
//! service), no regular expressions, and what HTTPRoute checks for
//! parents, backends and filters.

use super::http_route::{
    HeaderEdits, Match, PathRule, Route, RouteRule, Timeouts, backends, filters, name_matches,
    parents,
};
use super::{Common, Site};
use crate::resource::grpc_route::{GrpcMethodMatch, GrpcRoute};

/// `package.Service`: dot-separated identifiers (letters, digits, `_`).
fn service_name_ok(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(method_name_ok)
}

/// An identifier: a letter or `_`, then letters, digits or `_`.
fn method_name_ok(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn method_rule(
    m: &GrpcMethodMatch,
    field: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<PathRule> {
    match m.match_type.as_deref() {
        None | Some("Exact") => {}
        Some("RegularExpression") => {
            errors.push(site.field(
                format!("{field}.type"),
                "RegularExpression is not supported by Palisade; use Exact",
            ));
            return None;
        }
        Some(other) => {
            errors.push(site.field(
                format!("{field}.type"),
                format!("{other:?} is not Exact or RegularExpression"),
            ));
            return None;
        }
    }
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = service
        && !service_name_ok(s)
    {
        errors.push(site.field(
            format!("{field}.service"),
            format!("{s:?} is not a gRPC service name (e.g. shop.v1.Orders)"),
        ));
        return None;
    }
    if let Some(name) = method
        && !method_name_ok(name)
    {
        errors.push(site.field(
            format!("{field}.method"),
            format!("{name:?} is not a gRPC method name (e.g. GetOrder)"),
        ));
        return None;
    }
    match (service, method) {
        (Some(s), Some(name)) => Some(PathRule::Exact(format!("/{s}/{name}"))),
        (Some(s), None) => Some(PathRule::Prefix(format!("/{s}"))),
        (None, Some(_)) => {
            errors.push(site.field(
                format!("{field}.service"),
                "a method match without its service is not supported by Palisade; name the service",
            ));
            None
        }
        (None, None) => {
            errors.push(site.field(field, "give service, method or both"));
            None
        }
    }
}

pub(crate) fn compile(
    route: &GrpcRoute,
    common: Common,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Route> {
    let start = errors.len();
    let spec = &route.spec;
    let own_ns = common.object.namespace.clone();
    let (parents, hostnames) = parents(&spec.parent_refs, &spec.hostnames, &own_ns, site, errors);
    let mut rules = Vec::new();
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        let mut matches = Vec::new();
        for (i, m) in rule.matches.iter().enumerate() {
            let mat = format!("{at}.matches[{i}]");
            let path = match &m.method {
                None => Some(Match::every().path),
                Some(method) => method_rule(method, &format!("{mat}.method"), site, errors),
            };
            let headers = name_matches(&m.headers, &format!("{mat}.headers"), true, site, errors);
            if let Some(path) = path {
                matches.push(Match {
                    path,
                    headers,
                    query: vec![],
                    method: None,
                });
            }
        }
        if rule.matches.is_empty() {
            matches.push(Match::every());
        }
        let request_headers: HeaderEdits =
            filters(&rule.filters, &format!("{at}.filters"), site, errors);
        let backends = backends(&rule.backend_refs, &at, &own_ns, site, errors);
        rules.push(RouteRule {
            hostnames: hostnames.clone(),
            matches,
            backends,
            request_headers,
            timeouts: Timeouts::default(),
            retry: None,
        });
    }
    (errors.len() == start).then_some(Route {
        common,
        parents,
        rules,
    })
}
