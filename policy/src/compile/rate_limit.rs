//! RateLimitPolicy → limits ready to match a request at the limited
//! workload's inbound.
//!
//! Checked here, with the field in every error: rates above 0 and bounded,
//! bursts at least 1, path and principal patterns valid, every override
//! naming someone, and a policy that limits something.

use super::authorization::{principal_set, string_set};
use super::matcher::{Case, StrSet};
use super::selector::Selector;
use super::{Common, Site};
use crate::resource::rate_limit::{Limit as LimitSpec, RateLimitPolicy};

/// Largest rate a limit may name: beyond it a local limit protects nothing.
pub const MAX_REQUESTS_PER_SECOND: u32 = 1_000_000;

/// A compiled limit: `requests_per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub requests_per_second: u32,
    pub burst: u32,
}

#[derive(Debug)]
pub(crate) struct RateLimit {
    pub(crate) common: Common,
    pub(crate) selector: Option<Selector>,
    pub(crate) ports: Vec<u16>,
    pub(crate) paths: Option<StrSet>,
    pub(crate) methods: Vec<String>,
    pub(crate) hosts: Vec<super::edge::Host>,
    /// (namespace, name) of the routes named.
    pub(crate) routes: Vec<(String, String)>,
    pub(crate) total: Option<Quota>,
    pub(crate) per_client: Option<Quota>,
    pub(crate) overrides: Vec<OverrideRule>,
}

#[derive(Debug)]
pub(crate) struct OverrideRule {
    pub(crate) principals: Option<StrSet>,
    pub(crate) namespaces: Option<StrSet>,
    pub(crate) quota: Quota,
}

fn quota(
    rps: u32,
    burst: Option<u32>,
    path: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Quota> {
    let start = errors.len();
    if rps == 0 {
        errors.push(site.field(
            format!("{path}.requestsPerSecond"),
            "must be at least 1; to refuse every request use an AuthorizationPolicy",
        ));
    } else if rps > MAX_REQUESTS_PER_SECOND {
        errors.push(site.field(
            format!("{path}.requestsPerSecond"),
            format!("{rps} is above the largest rate, {MAX_REQUESTS_PER_SECOND}"),
        ));
    }
    let burst = burst.unwrap_or(rps);
    if burst == 0 {
        errors.push(site.field(format!("{path}.burst"), "must be at least 1"));
    } else if burst > MAX_REQUESTS_PER_SECOND {
        errors.push(site.field(
            format!("{path}.burst"),
            format!("{burst} is above the largest burst, {MAX_REQUESTS_PER_SECOND}"),
        ));
    }
    (errors.len() == start).then_some(Quota {
        requests_per_second: rps,
        burst,
    })
}

fn limit(
    l: &Option<LimitSpec>,
    path: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Quota> {
    l.as_ref()
        .and_then(|l| quota(l.requests_per_second, l.burst, path, site, errors))
}

pub(crate) fn compile(
    policy: &RateLimitPolicy,
    common: Common,
    site: &Site<'_>,
    trust_domain: &str,
    errors: &mut Vec<crate::Error>,
) -> Option<RateLimit> {
    let start = errors.len();
    let spec = &policy.spec;
    let selector = Selector::of_workloads(spec.selector.as_ref());
    for (i, port) in spec.ports.iter().enumerate() {
        if *port == 0 {
            errors.push(site.field(format!("spec.ports[{i}]"), "0 is not a port"));
        }
    }
    let paths = if spec.paths.is_empty() {
        None
    } else {
        string_set(&spec.paths, "spec.paths", Case::Sensitive, site, errors)
    };
    for (i, method) in spec.methods.iter().enumerate() {
        if method.is_empty()
            || !method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            errors.push(site.field(
                format!("spec.methods[{i}]"),
                format!("{method:?} is not an HTTP method"),
            ));
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        match super::edge::Host::parse(h, false) {
            Ok(h) => hosts.push(h),
            Err(e) => errors.push(site.field(format!("spec.hosts[{i}]"), e)),
        }
    }
    let mut routes = Vec::new();
    for (i, r) in spec.routes.iter().enumerate() {
        let (ns, name) = r
            .split_once('/')
            .unwrap_or((common.object.namespace.as_str(), r));
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            errors.push(site.field(
                format!("spec.routes[{i}]"),
                format!("{r:?} is not [namespace/]name"),
            ));
        } else {
            routes.push((ns.to_owned(), name.to_owned()));
        }
    }
    let total = limit(&spec.total, "spec.total", site, errors);
    let per_client = limit(&spec.per_client, "spec.perClient", site, errors);
    let mut overrides = Vec::new();
    for (i, o) in spec.overrides.iter().enumerate() {
        let path = format!("spec.overrides[{i}]");
        if o.principals.is_empty() && o.namespaces.is_empty() {
            errors.push(site.field(&path, "names no client; give principals or namespaces"));
            continue;
        }
        let principals = (!o.principals.is_empty())
            .then(|| {
                principal_set(
                    &o.principals,
                    &format!("{path}.principals"),
                    site,
                    trust_domain,
                    errors,
                )
            })
            .flatten();
        let namespaces = (!o.namespaces.is_empty())
            .then(|| {
                string_set(
                    &o.namespaces,
                    &format!("{path}.namespaces"),
                    Case::Sensitive,
                    site,
                    errors,
                )
            })
            .flatten();
        if let Some(quota) = quota(o.requests_per_second, o.burst, &path, site, errors) {
            overrides.push(OverrideRule {
                principals,
                namespaces,
                quota,
            });
        }
    }
    if spec.total.is_none() && spec.per_client.is_none() && spec.overrides.is_empty() {
        errors.push(site.field("spec", "limits nothing; give total, perClient or overrides"));
    }
    if errors.len() > start {
        return None;
    }
    Some(RateLimit {
        common,
        selector,
        ports: spec.ports.clone(),
        paths,
        methods: spec.methods.clone(),
        hosts,
        routes,
        total,
        per_client,
        overrides,
    })
}
