//! HTTPRoute → rules per parent Service, ready to match a request.
//!
//! Checked here, with the field in every error: parents are Services
//! (GAMMA), backends are Services with a port, weights and durations are
//! valid, retry codes are HTTP error codes, the backend timeout fits in the
//! request timeout, and only the filters Palisade applies are used.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Common, Site};
use crate::resource::HttpRoute;
use crate::resource::http_route::{HeaderModifier, HttpRouteFilter, HttpRouteMatch, NameMatch};

/// Most tries a rule may ask for: a retry storm needs a bound even when the
/// budget has room.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Backoff between tries when a rule's `retry` names none (Linkerd and Envoy
/// use 25 ms).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// What a `retry` without `codes` retries: the statuses that mean the
/// backend could not serve the request, not that the request was wrong.
pub const DEFAULT_RETRY_CODES: [u16; 3] = [502, 503, 504];

#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) common: Common,
    pub(crate) parents: Vec<Parent>,
    pub(crate) rules: Vec<RouteRule>,
}

/// What a route attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parent {
    /// A Service (GAMMA, mesh routing): requests to it, at `port` or any.
    Service {
        namespace: String,
        name: String,
        port: Option<u16>,
    },
    /// A Gateway's listeners (the ingress): the one named `section`, those
    /// on `port`, or all.
    Gateway {
        namespace: String,
        name: String,
        section: Option<String>,
        port: Option<u16>,
    },
    /// The ingress's `--https-port` (an Ingress of class palisade).
    Ingress,
}

#[derive(Debug)]
pub(crate) struct RouteRule {
    /// The request hosts the rule is for (empty: every host); only at the
    /// edge (`spec.hostnames`, an Ingress rule's `host`).
    pub(crate) hostnames: Vec<super::edge::Host>,
    /// ORed; never empty (a rule without matches matches `PathPrefix /`).
    pub(crate) matches: Vec<Match>,
    pub(crate) backends: Vec<Backend>,
    pub(crate) request_headers: HeaderEdits,
    pub(crate) timeouts: Timeouts,
    pub(crate) retry: Option<Retry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathRule {
    Exact(String),
    /// Element-wise: `/a` matches `/a` and `/a/b`, not `/ab`. Stored without
    /// a trailing `/`; `""` is `/`, every path.
    Prefix(String),
}

#[derive(Debug)]
pub(crate) struct Match {
    pub(crate) path: PathRule,
    /// Lowercased names, exact values.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) method: Option<String>,
}

impl Match {
    /// What a rule without matches matches: `PathPrefix /`, every request.
    pub(crate) fn every() -> Match {
        Match {
            path: PathRule::Prefix(String::new()),
            headers: vec![],
            query: vec![],
            method: None,
        }
    }

    /// The Gateway API's precedence between matches of one parent: an exact
    /// path, then the longest prefix, then a method, then the most headers,
    /// then the most query parameters. Smaller sorts first.
    pub(crate) fn precedence(
        &self,
    ) -> (
        u8,
        std::cmp::Reverse<usize>,
        u8,
        std::cmp::Reverse<usize>,
        std::cmp::Reverse<usize>,
    ) {
        let (kind, len) = match &self.path {
            PathRule::Exact(p) => (0, p.len()),
            PathRule::Prefix(p) => (1, p.len()),
        };
        (
            kind,
            std::cmp::Reverse(len),
            u8::from(self.method.is_none()),
            std::cmp::Reverse(self.headers.len()),
            std::cmp::Reverse(self.query.len()),
        )
    }
}

/// One weighted backend Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub name: String,
    pub port: BackendPort,
    pub weight: u32,
    /// Whether the route may reach this Service: always within its own
    /// namespace, across namespaces only by a ReferenceGrant.
    pub permitted: Permitted,
}

/// What the ReferenceGrants say of a backend in another namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permitted {
    /// Its own namespace, or a grant without expiry.
    Yes,
    /// A grant with `palisade.dev/expires-at`: until then.
    Until(std::time::SystemTime),
    /// No grant: its share of requests gets 500 (`RefNotPermitted`).
    No,
}

impl Permitted {
    /// Whether the reference may be followed at `now`.
    pub fn holds(&self, now: std::time::SystemTime) -> bool {
        match self {
            Permitted::Yes => true,
            Permitted::Until(at) => now < *at,
            Permitted::No => false,
        }
    }
}

impl Backend {
    /// Why a request may not go to this backend at `now`, if it may not.
    pub fn refusal(&self, now: std::time::SystemTime) -> Option<String> {
        if self.permitted.holds(now) {
            return None;
        }
        let lapsed = match self.permitted {
            Permitted::No => "no ReferenceGrant allows it",
            _ => "the ReferenceGrant that allowed it has expired",
        };
        Some(format!(
            "backend Service {}/{} is in another namespace and {lapsed} (RefNotPermitted)",
            self.namespace, self.name
        ))
    }
}

/// The Service port a backend names: by number (route `backendRefs`, an
/// Ingress's `port.number`) or by the Service port's name (an Ingress's
/// `port.name`), which the proxy looks up in the Service it discovers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum BackendPort {
    Number(u16),
    Name(String),
}

impl std::fmt::Display for BackendPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendPort::Number(n) => write!(f, "{n}"),
            BackendPort::Name(name) => f.write_str(name),
        }
    }
}

/// `RequestHeaderModifier`: set (replace), add (append), remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole request, retries included, until the response head.
    pub request: Option<Duration>,
    /// Each try.
    pub backend_request: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first try.
    pub attempts: u32,
    pub codes: Vec<u16>,
    pub backoff: Duration,
}

/// A Gateway API duration (GEP-2257): one to four `<1–5 digits><h|m|s|ms>`
/// parts, e.g. `1h`, `1m30s`, `500ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (e.g. 10s, 500ms, 1m30s)");
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(n), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(n * 3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(n * 60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(n), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit;
        parts += 1;
        if parts > 4 {
            return Err(bad());
        }
    }
    if parts == 0 {
        return Err(bad());
    }
    Ok(total)
}

/// A timeout field: `0s` (or any zero) turns it off.
fn timeout(
    text: Option<&String>,
    field: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Duration> {
    let text = text?;
    match parse_duration(text) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(message) => {
            errors.push(site.field(field, message));
            None
        }
    }
}

fn header_name_ok(name: &str) -> bool {
    !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// Headers a route may never set or remove: the proxy's own identity and
/// routing headers, and the connection's framing.
fn reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("x-palisade-")
        || name.starts_with(':')
        || matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding" | "upgrade" | "te"
        )
}

fn header_edits(
    m: &HeaderModifier,
    field: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> HeaderEdits {
    let mut out = HeaderEdits::default();
    for (list, name, target) in [("set", &m.set, &mut out.set), ("add", &m.add, &mut out.add)] {
        for (i, h) in name.iter().enumerate() {
            let f = format!("{field}.{list}[{i}]");
            if !header_name_ok(&h.name) || reserved_header(&h.name) {
                errors.push(site.field(
                    format!("{f}.name"),
                    format!("{:?} may not be set by a route", h.name),
                ));
            } else if http::HeaderValue::from_str(&h.value).is_err() {
                errors.push(site.field(format!("{f}.value"), "not a valid header value"));
            } else {
                target.push((h.name.to_ascii_lowercase(), h.value.clone()));
            }
        }
    }
    for (i, name) in m.remove.iter().enumerate() {
        if !header_name_ok(name) || reserved_header(name) {
            errors.push(site.field(
                format!("{field}.remove[{i}]"),
                format!("{name:?} may not be removed by a route"),
            ));
        } else {
            out.remove.push(name.to_ascii_lowercase());
        }
    }
    out
}

pub(crate) fn filters(
    list: &[HttpRouteFilter],
    field: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> HeaderEdits {
    let mut edits = HeaderEdits::default();
    for (i, f) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match (f.filter_type.as_str(), &f.request_header_modifier) {
            ("RequestHeaderModifier", Some(m)) => {
                let e = header_edits(m, &format!("{at}.requestHeaderModifier"), site, errors);
                edits.set.extend(e.set);
                edits.add.extend(e.add);
                edits.remove.extend(e.remove);
            }
            ("RequestHeaderModifier", None) => errors.push(site.field(
                format!("{at}.requestHeaderModifier"),
                "required for type RequestHeaderModifier",
            )),
            (other, _) => errors.push(site.field(
                format!("{at}.type"),
                format!("{other:?} is not supported in mesh routes; Palisade applies RequestHeaderModifier"),
            )),
        }
    }
    edits
}

pub(crate) fn name_matches(
    list: &[NameMatch],
    field: &str,
    lowercase: bool,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        match m.match_type.as_deref() {
            None | Some("Exact") => {}
            Some("RegularExpression") => {
                errors.push(site.field(
                    format!("{at}.type"),
                    "RegularExpression is not supported by Palisade; use Exact",
                ));
                continue;
            }
            Some(other) => {
                errors.push(site.field(
                    format!("{at}.type"),
                    format!("{other:?} is not Exact or RegularExpression"),
                ));
                continue;
            }
        }
        if m.name.is_empty() || (lowercase && !header_name_ok(&m.name)) {
            errors.push(site.field(
                format!("{at}.name"),
                format!("{:?} is not a valid name", m.name),
            ));
            continue;
        }
        let name = if lowercase {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        };
        // Gateway API: only the first of several matches on one name counts.
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, m.value.clone()));
        }
    }
    out
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn compile_match(
    m: &HttpRouteMatch,
    field: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Match> {
    let start = errors.len();
    let path = match &m.path {
        None => PathRule::Prefix(String::new()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".to_owned());
            if !value.starts_with('/') {
                errors.push(site.field(
                    format!("{field}.path.value"),
                    format!("{value:?} must start with /"),
                ));
            }
            match p.match_type.as_deref() {
                Some("Exact") => PathRule::Exact(value),
                None | Some("PathPrefix") => {
                    if value.contains("//") {
                        errors.push(site.field(
                            format!("{field}.path.value"),
                            "a PathPrefix may not contain //",
                        ));
                    }
                    PathRule::Prefix(value.trim_end_matches('/').to_owned())
                }
                Some("RegularExpression") => {
                    errors.push(site.field(
                        format!("{field}.path.type"),
                        "RegularExpression is not supported by Palisade; use Exact or PathPrefix",
                    ));
                    PathRule::Exact(value)
                }
                Some(other) => {
                    errors.push(site.field(
                        format!("{field}.path.type"),
                        format!("{other:?} is not Exact, PathPrefix or RegularExpression"),
                    ));
                    PathRule::Exact(value)
                }
            }
        }
    };
    let method = match &m.method {
        Some(method) if !METHODS.contains(&method.as_str()) => {
            errors.push(site.field(
                format!("{field}.method"),
                format!("{method:?} is not an HTTP method the Gateway API names"),
            ));
            None
        }
        other => other.clone(),
    };
    let headers = name_matches(&m.headers, &format!("{field}.headers"), true, site, errors);
    let query = name_matches(
        &m.query_params,
        &format!("{field}.queryParams"),
        false,
        site,
        errors,
    );
    (errors.len() == start).then_some(Match {
        path,
        headers,
        query,
        method,
    })
}

/// The parents of a route: Services (GAMMA: `kind: Service`, `group:
/// ""`, no `sectionName`) and Gateways (the Gateway API's default kind, at
/// the edge). `hostnames` only make sense with a Gateway parent.
pub(crate) fn parents(
    refs: &[crate::resource::http_route::ParentRef],
    hostnames: &[String],
    own_ns: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> (Vec<Parent>, Vec<super::edge::Host>) {
    if refs.is_empty() {
        errors.push(site.field(
            "spec.parentRefs",
            "a route needs a parent: a Service (mesh) or a Gateway (ingress)",
        ));
    }
    let mut parents = Vec::new();
    for (i, p) in refs.iter().enumerate() {
        let at = format!("spec.parentRefs[{i}]");
        if p.port == Some(0) {
            errors.push(site.field(format!("{at}.port"), "0 is not a port"));
        }
        let namespace = p.namespace.clone().unwrap_or_else(|| own_ns.to_owned());
        let group = p.group.as_deref();
        match p.kind.as_deref() {
            Some("Service") if group.unwrap_or("").is_empty() => {
                if p.section_name.is_some() {
                    errors.push(site.field(
                        format!("{at}.sectionName"),
                        "not supported on a Service parent; use port",
                    ));
                }
                parents.push(Parent::Service {
                    namespace,
                    name: p.name.clone(),
                    port: p.port,
                });
            }
            None | Some("Gateway")
                if group.is_none_or(|g| g == crate::resource::gateway::GATEWAY_GROUP) =>
            {
                parents.push(Parent::Gateway {
                    namespace,
                    name: p.name.clone(),
                    section: p.section_name.clone(),
                    port: p.port,
                });
            }
            _ => errors.push(site.field(
                format!("{at}.kind"),
                "Palisade routes attach to Services (kind: Service, group: \"\") or \
                 Gateways (kind: Gateway, group: gateway.networking.k8s.io)",
            )),
        }
    }
    let at_edge = parents.iter().any(|p| matches!(p, Parent::Gateway { .. }));
    let mut hosts = Vec::new();
    if !hostnames.is_empty() && !at_edge {
        errors.push(site.field(
            "spec.hostnames",
            "hostnames have no meaning on a Service parent (GAMMA); remove them",
        ));
    } else {
        for (i, h) in hostnames.iter().enumerate() {
            match super::edge::Host::parse(h, false) {
                Ok(host) => hosts.push(host),
                Err(m) => errors.push(site.field(format!("spec.hostnames[{i}]"), m)),
            }
        }
    }
    (parents, hosts)
}

/// A rule's weighted backend Services (`at`: the rule's field path).
pub(crate) fn backends(
    refs: &[crate::resource::http_route::BackendRef],
    at: &str,
    own_ns: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Vec<Backend> {
    let mut backends = Vec::new();
    for (b, backend) in refs.iter().enumerate() {
        let bat = format!("{at}.backendRefs[{b}]");
        if backend.kind.as_deref().unwrap_or("Service") != "Service"
            || !backend.group.as_deref().unwrap_or("").is_empty()
        {
            errors.push(site.field(format!("{bat}.kind"), "a backend is a Service"));
            continue;
        }
        if !backend.filters.is_empty() {
            errors.push(site.field(
                format!("{bat}.filters"),
                "per-backend filters are not supported; put them on the rule",
            ));
        }
        let Some(port) = backend.port.filter(|p| *p != 0) else {
            errors.push(site.field(format!("{bat}.port"), "required for a Service backend"));
            continue;
        };
        let weight = backend.weight.unwrap_or(1);
        if weight > 1_000_000 {
            errors.push(site.field(format!("{bat}.weight"), "at most 1000000"));
            continue;
        }
        backends.push(Backend {
            namespace: backend
                .namespace
                .clone()
                .unwrap_or_else(|| own_ns.to_owned()),
            name: backend.name.clone(),
            port: BackendPort::Number(port),
            weight,
            permitted: Permitted::Yes,
        });
    }
    backends
}

pub(crate) fn compile(
    route: &HttpRoute,
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
        let mut matches: Vec<Match> = rule
            .matches
            .iter()
            .enumerate()
            .filter_map(|(i, m)| compile_match(m, &format!("{at}.matches[{i}]"), site, errors))
            .collect();
        if rule.matches.is_empty() {
            matches.push(Match::every());
        }
        let request_headers = filters(&rule.filters, &format!("{at}.filters"), site, errors);
        let backends = backends(&rule.backend_refs, &at, &own_ns, site, errors);
        let mut timeouts = Timeouts::default();
        if let Some(t) = &rule.timeouts {
            timeouts.request = timeout(
                t.request.as_ref(),
                &format!("{at}.timeouts.request"),
                site,
                errors,
            );
            timeouts.backend_request = timeout(
                t.backend_request.as_ref(),
                &format!("{at}.timeouts.backendRequest"),
                site,
                errors,
            );
            if let (Some(req), Some(backend)) = (timeouts.request, timeouts.backend_request)
                && backend > req
            {
                errors.push(site.field(
                    format!("{at}.timeouts.backendRequest"),
                    "must not be longer than timeouts.request",
                ));
            }
        }
        let retry = rule.retry.as_ref().map(|r| {
            let attempts = r.attempts.unwrap_or(1);
            if attempts > MAX_RETRY_ATTEMPTS {
                errors.push(site.field(
                    format!("{at}.retry.attempts"),
                    format!("at most {MAX_RETRY_ATTEMPTS}"),
                ));
            }
            for (i, code) in r.codes.iter().enumerate() {
                if !(400..=599).contains(code) {
                    errors.push(site.field(
                        format!("{at}.retry.codes[{i}]"),
                        format!("{code} is not an HTTP error status (400-599)"),
                    ));
                }
            }
            let backoff = match &r.backoff {
                None => DEFAULT_RETRY_BACKOFF,
                Some(text) => parse_duration(text).unwrap_or_else(|message| {
                    errors.push(site.field(format!("{at}.retry.backoff"), message));
                    DEFAULT_RETRY_BACKOFF
                }),
            };
            Retry {
                attempts,
                codes: if r.codes.is_empty() {
                    DEFAULT_RETRY_CODES.to_vec()
                } else {
                    r.codes.clone()
                },
                backoff,
            }
        });
        rules.push(RouteRule {
            hostnames: hostnames.clone(),
            matches,
            backends,
            request_headers,
            timeouts,
            retry,
        });
    }
    (errors.len() == start).then_some(Route {
        common,
        parents,
        rules,
    })
}

/// Every route, and their matches by parent Service in the order they are
/// tried.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    pub(crate) routes: Vec<Route>,
    /// Service namespace → Service name → matches in precedence order
    /// (nested, so a lookup borrows the names instead of copying them).
    pub(crate) by_parent: BTreeMap<String, BTreeMap<String, Vec<Entry>>>,
}

/// One match of one rule of one route, under one parent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) route: usize,
    pub(crate) rule: usize,
    pub(crate) matched: usize,
    /// The parent's port: only requests to it (`None`: every port).
    pub(crate) port: Option<u16>,
}

impl RouteTable {
    /// Orders what was compiled: routes by namespace and name (the Gateway
    /// API's tie-break, there being no creation times in files), and each
    /// parent's matches by precedence, then route, rule and match order.
    pub(crate) fn index(&mut self) {
        self.routes.sort_by(|a, b| {
            (&a.common.object.namespace, &a.common.object.name)
                .cmp(&(&b.common.object.namespace, &b.common.object.name))
        });
        let mut by_parent: BTreeMap<String, BTreeMap<String, Vec<Entry>>> = BTreeMap::new();
        for (ri, route) in self.routes.iter().enumerate() {
            for parent in &route.parents {
                let Parent::Service {
                    namespace: ns,
                    name,
                    port,
                } = parent
                else {
                    continue;
                };
                let list = by_parent
                    .entry(ns.clone())
                    .or_default()
                    .entry(name.clone())
                    .or_default();
                for (rule, r) in route.rules.iter().enumerate() {
                    for matched in 0..r.matches.len() {
                        list.push(Entry {
                            route: ri,
                            rule,
                            matched,
                            port: *port,
                        });
                    }
                }
            }
        }
        let routes = &self.routes;
        for list in by_parent.values_mut().flat_map(|m| m.values_mut()) {
            list.sort_by(|a, b| {
                let ma = &routes[a.route].rules[a.rule].matches[a.matched];
                let mb = &routes[b.route].rules[b.rule].matches[b.matched];
                (ma.precedence(), a.route, a.rule, a.matched).cmp(&(
                    mb.precedence(),
                    b.route,
                    b.rule,
                    b.matched,
                ))
            });
        }
        self.by_parent = by_parent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_api_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration("1h1m1s1ms"),
            Ok(Duration::from_millis(3_661_001))
        );
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "123456s",
            "1d",
            "-1s",
            "1h1m1s1ms1s",
            " 1s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
