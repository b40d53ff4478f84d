//! The edge: Gateways (listeners, their certificates, which routes may
//! attach) and Ingresses (host and path rules, TLS by host), compiled into
//! the [`EdgeTable`] the ingress looks requests up in.
//!
//! An Ingress becomes a route like an HTTPRoute, attached to the ingress's
//! `--https-port` ([`Parent::Ingress`]): each path is one rule with its
//! host, `Exact` an exact path match, `Prefix` (and
//! `ImplementationSpecific`) an element-wise prefix, the default backend a
//! last rule for every host and path.

use std::cmp::Reverse;
use std::sync::Arc;

use super::http_route::{
    Backend, BackendPort, HeaderEdits, Match, Parent, PathRule, Route, RouteRule, Timeouts,
};
use super::selector::{NamespaceLabels, Selector};
use super::{Common, Site};
use crate::resource::gateway::{GATEWAY_GROUP, Listener};
use crate::resource::ingress::IngressBackend;
use crate::resource::{Gateway, Ingress, Labels, ObjectRef};

/// A hostname a listener, route or Ingress rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`. The Gateway API's wildcard
    /// covers one or more labels; an Ingress's exactly one.
    Wildcard {
        suffix: String,
        one_label: bool,
    },
}

impl Host {
    /// A lowercase DNS name, optionally with one leading `*.` label; not an
    /// IP address, no port.
    pub fn parse(text: &str, one_label: bool) -> Result<Host, String> {
        let bad = |why: &str| format!("{text:?} is not a hostname: {why}");
        if text.parse::<std::net::IpAddr>().is_ok() {
            return Err(bad("an IP address is not a hostname"));
        }
        let (wild, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if name.is_empty() || name.len() > 253 {
            return Err(bad("1 to 253 characters"));
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad(
                    "lowercase letters, digits and '-' in dot-separated labels, an optional \
                     leading '*.'",
                ));
            }
        }
        Ok(if wild {
            Host::Wildcard {
                suffix: format!(".{name}"),
                one_label,
            }
        } else {
            Host::Exact(name.to_owned())
        })
    }

    /// Whether `host` (lowercase, without a port) is one this names.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Host::Exact(h) => h == host,
            Host::Wildcard { suffix, one_label } => {
                host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && (!one_label || !host[..host.len() - suffix.len()].contains('.'))
            }
        }
    }

    /// Specificity, smaller first: an exact name, then the longest wildcard.
    pub fn rank(&self) -> (u8, Reverse<usize>) {
        match self {
            Host::Exact(h) => (0, Reverse(h.len())),
            Host::Wildcard { suffix, .. } => (1, Reverse(suffix.len())),
        }
    }

    /// As written: `shop.example`, `*.example.com`.
    pub fn as_text(&self) -> String {
        match self {
            Host::Exact(h) => h.clone(),
            Host::Wildcard { suffix, .. } => format!("*{suffix}"),
        }
    }
}

/// The rank of the most specific of `hosts` that `host` matches; (2, 0)
/// for a list that names none (every host), `None` if none matches.
pub(crate) fn host_rank(hosts: &[Host], host: &str) -> Option<(u8, Reverse<usize>)> {
    if hosts.is_empty() {
        return Some((2, Reverse(0)));
    }
    hosts
        .iter()
        .filter(|h| h.matches(host))
        .map(Host::rank)
        .min()
}

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeProtocol {
    /// TLS terminated here, requests routed.
    Https,
    /// Plain HTTP, answered only with a redirect to HTTPS.
    Http,
}

/// Which namespaces' routes may attach to a listener.
#[derive(Debug)]
pub(crate) enum AllowedFrom {
    Same,
    All,
    Selector(Selector),
}

#[derive(Debug)]
pub(crate) struct EdgeListener {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) protocol: EdgeProtocol,
    pub(crate) hostname: Option<Host>,
    /// Each `kubernetes.io/tls` Secret.
    pub(crate) certificates: Vec<CertificateRef>,
    pub(crate) from: AllowedFrom,
    /// `HTTPRoute` / `GRPCRoute`; empty: both.
    pub(crate) kinds: Vec<crate::resource::Kind>,
}

/// A listener's Secret; one of another namespace is served only while a
/// ReferenceGrant allows it (resolved once the whole snapshot is known).
#[derive(Debug)]
pub(crate) struct CertificateRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) permitted: super::http_route::Permitted,
}

#[derive(Debug)]
pub(crate) struct EdgeGateway {
    pub(crate) common: Common,
    pub(crate) listeners: Vec<EdgeListener>,
}

/// An Ingress: its route (rules by host and path) and its TLS Secrets by host.
#[derive(Debug)]
pub(crate) struct CompiledIngress {
    pub(crate) route: Route,
    pub(crate) tls: Vec<(Vec<Host>, (String, String))>,
}

pub(crate) fn compile_gateway(
    gateway: &Gateway,
    common: Common,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<EdgeGateway> {
    let start = errors.len();
    let own_ns = common.object.namespace.clone();
    if gateway.spec.listeners.is_empty() {
        errors.push(site.field("spec.listeners", "a Gateway needs at least one listener"));
    }
    let mut listeners = Vec::new();
    for (i, l) in gateway.spec.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        if gateway.spec.listeners[..i].iter().any(|o| o.name == l.name) {
            errors.push(site.field(format!("{at}.name"), format!("{:?} is used twice", l.name)));
        }
        if let Some(listener) = compile_listener(l, &at, &own_ns, site, errors) {
            listeners.push(listener);
        }
    }
    (errors.len() == start).then_some(EdgeGateway { common, listeners })
}

fn compile_listener(
    l: &Listener,
    at: &str,
    own_ns: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<EdgeListener> {
    let start = errors.len();
    if let Err(m) = crate::validate::check_name(&l.name, 253, true) {
        errors.push(site.field(format!("{at}.name"), m));
    }
    if l.port == 0 {
        errors.push(site.field(format!("{at}.port"), "0 is not a port"));
    }
    let hostname = l
        .hostname
        .as_deref()
        .and_then(|h| match Host::parse(h, false) {
            Ok(h) => Some(h),
            Err(m) => {
                errors.push(site.field(format!("{at}.hostname"), m));
                None
            }
        });
    let protocol = match l.protocol.as_str() {
        "HTTPS" => EdgeProtocol::Https,
        "HTTP" => EdgeProtocol::Http,
        other => {
            errors.push(site.field(
                format!("{at}.protocol"),
                format!("{other:?} is not supported; Palisade's ingress serves HTTPS (and HTTP, which only redirects to HTTPS)"),
            ));
            EdgeProtocol::Http
        }
    };
    let mut certificates = Vec::new();
    match (protocol, &l.tls) {
        (EdgeProtocol::Https, None) => {
            errors.push(site.field(format!("{at}.tls"), "required for an HTTPS listener"));
        }
        (EdgeProtocol::Http, Some(_)) => {
            errors.push(site.field(format!("{at}.tls"), "an HTTP listener has no TLS"));
        }
        (EdgeProtocol::Https, Some(tls)) => {
            if let Some(mode) = tls.mode.as_deref().filter(|m| *m != "Terminate") {
                errors.push(site.field(
                    format!("{at}.tls.mode"),
                    format!("{mode:?} is not supported; the ingress terminates TLS (Terminate)"),
                ));
            }
            if tls.certificate_refs.is_empty() {
                errors.push(site.field(
                    format!("{at}.tls.certificateRefs"),
                    "an HTTPS listener needs a certificate (a kubernetes.io/tls Secret)",
                ));
            }
            for (c, r) in tls.certificate_refs.iter().enumerate() {
                let cat = format!("{at}.tls.certificateRefs[{c}]");
                if r.kind.as_deref().unwrap_or("Secret") != "Secret"
                    || !r.group.as_deref().unwrap_or("").is_empty()
                {
                    errors.push(site.field(format!("{cat}.kind"), "a certificate is a Secret"));
                    continue;
                }
                if let Some(ns) = &r.namespace
                    && let Err(m) = crate::validate::check_name(ns, 63, false)
                {
                    errors.push(site.field(format!("{cat}.namespace"), m));
                    continue;
                }
                certificates.push(CertificateRef {
                    namespace: r.namespace.clone().unwrap_or_else(|| own_ns.to_owned()),
                    name: r.name.clone(),
                    permitted: super::http_route::Permitted::Yes,
                });
            }
        }
        (EdgeProtocol::Http, None) => {}
    }
    let allowed = l.allowed_routes.as_ref();
    let from = match allowed.and_then(|a| a.namespaces.as_ref()) {
        None => AllowedFrom::Same,
        Some(n) => match (n.from.as_deref(), &n.selector) {
            (None | Some("Same"), _) => AllowedFrom::Same,
            (Some("All"), _) => AllowedFrom::All,
            (Some("Selector"), Some(s)) => match Selector::compile(s) {
                Ok(s) => AllowedFrom::Selector(s),
                Err(list) => {
                    for (f, m) in list {
                        errors.push(
                            site.field(format!("{at}.allowedRoutes.namespaces.selector.{f}"), m),
                        );
                    }
                    AllowedFrom::Same
                }
            },
            (Some("Selector"), None) => {
                errors.push(site.field(
                    format!("{at}.allowedRoutes.namespaces.selector"),
                    "required with from: Selector",
                ));
                AllowedFrom::Same
            }
            (Some(other), _) => {
                errors.push(site.field(
                    format!("{at}.allowedRoutes.namespaces.from"),
                    format!("{other:?} is not Same, All or Selector"),
                ));
                AllowedFrom::Same
            }
        },
    };
    let mut kinds = Vec::new();
    for (k, gk) in allowed
        .map(|a| a.kinds.as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let kind = match gk.kind.as_str() {
            "HTTPRoute" => crate::resource::Kind::HttpRoute,
            "GRPCRoute" => crate::resource::Kind::GrpcRoute,
            other => {
                errors.push(site.field(
                    format!("{at}.allowedRoutes.kinds[{k}].kind"),
                    format!("{other:?} is not HTTPRoute or GRPCRoute"),
                ));
                continue;
            }
        };
        if gk.group.as_deref().is_some_and(|g| g != GATEWAY_GROUP) {
            errors.push(site.field(
                format!("{at}.allowedRoutes.kinds[{k}].group"),
                format!("routes are in {GATEWAY_GROUP}"),
            ));
        }
        kinds.push(kind);
    }
    (errors.len() == start).then(|| EdgeListener {
        name: l.name.clone(),
        port: l.port,
        protocol,
        hostname,
        certificates,
        from,
        kinds,
    })
}

fn ingress_backend(
    b: &IngressBackend,
    at: &str,
    own_ns: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Backend> {
    if b.resource.is_some() {
        errors.push(site.field(
            format!("{at}.resource"),
            "not supported; Palisade's ingress routes to Services",
        ));
        return None;
    }
    let Some(s) = &b.service else {
        errors.push(site.field(format!("{at}.service"), "required"));
        return None;
    };
    if let Err(m) = crate::validate::check_name(&s.name, 63, false) {
        errors.push(site.field(format!("{at}.service.name"), m));
        return None;
    }
    let port = match (s.port.number, &s.port.name) {
        (Some(p), None) if p != 0 => BackendPort::Number(p),
        (None, Some(name)) => {
            // A Service port name is a DNS label (IANA_SVC_NAME: at most 15).
            if let Err(m) = crate::validate::check_name(name, 15, false) {
                errors.push(site.field(format!("{at}.service.port.name"), m));
                return None;
            }
            BackendPort::Name(name.clone())
        }
        _ => {
            errors.push(site.field(
                format!("{at}.service.port"),
                "exactly one of number (1-65535) or name",
            ));
            return None;
        }
    };
    Some(Backend {
        namespace: own_ns.to_owned(),
        name: s.name.clone(),
        permitted: super::http_route::Permitted::Yes,
        port,
        weight: 1,
    })
}

fn ingress_rule(hostnames: Vec<Host>, path: PathRule, backend: Backend) -> RouteRule {
    RouteRule {
        hostnames,
        matches: vec![Match {
            path,
            headers: vec![],
            query: vec![],
            method: None,
        }],
        backends: vec![backend],
        request_headers: HeaderEdits::default(),
        timeouts: Timeouts::default(),
        retry: None,
    }
}

pub(crate) fn compile_ingress(
    ingress: &Ingress,
    common: Common,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<CompiledIngress> {
    let start = errors.len();
    let own_ns = common.object.namespace.clone();
    let spec = &ingress.spec;
    let mut rules = Vec::new();
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        let hosts = match rule.host.as_deref() {
            None | Some("") => vec![],
            Some(h) => match Host::parse(h, true) {
                Ok(h) => vec![h],
                Err(m) => {
                    errors.push(site.field(format!("{at}.host"), m));
                    continue;
                }
            },
        };
        let Some(http) = &rule.http else {
            errors.push(site.field(format!("{at}.http"), "required (Palisade routes HTTP)"));
            continue;
        };
        for (p, path) in http.paths.iter().enumerate() {
            let pat = format!("{at}.http.paths[{p}]");
            let value = path.path.clone().unwrap_or_else(|| "/".to_owned());
            if !value.starts_with('/') {
                errors.push(site.field(format!("{pat}.path"), "must start with /"));
                continue;
            }
            let rule_path = match path.path_type.as_str() {
                "Exact" => PathRule::Exact(value),
                "Prefix" | "ImplementationSpecific" => {
                    PathRule::Prefix(value.trim_end_matches('/').to_owned())
                }
                other => {
                    errors.push(site.field(
                        format!("{pat}.pathType"),
                        format!("{other:?} is not Exact, Prefix or ImplementationSpecific"),
                    ));
                    continue;
                }
            };
            if let Some(b) = ingress_backend(
                &path.backend,
                &format!("{pat}.backend"),
                &own_ns,
                site,
                errors,
            ) {
                rules.push(ingress_rule(hosts.clone(), rule_path, b));
            }
        }
    }
    if let Some(d) = &spec.default_backend
        && let Some(b) = ingress_backend(d, "spec.defaultBackend", &own_ns, site, errors)
    {
        rules.push(ingress_rule(vec![], PathRule::Prefix(String::new()), b));
    }
    if rules.is_empty() && errors.len() == start {
        errors.push(site.field("spec", "an Ingress needs rules or a defaultBackend"));
    }
    let mut tls = Vec::new();
    for (t, entry) in spec.tls.iter().enumerate() {
        let at = format!("spec.tls[{t}]");
        let Some(secret) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            errors.push(site.field(format!("{at}.secretName"), "required"));
            continue;
        };
        let mut hosts = Vec::new();
        for (h, host) in entry.hosts.iter().enumerate() {
            match Host::parse(host, true) {
                Ok(host) => hosts.push(host),
                Err(m) => errors.push(site.field(format!("{at}.hosts[{h}]"), m)),
            }
        }
        tls.push((hosts, (own_ns.clone(), secret.to_owned())));
    }
    (errors.len() == start).then(|| CompiledIngress {
        route: Route {
            common,
            parents: vec![Parent::Ingress],
            rules,
        },
        tls,
    })
}

/// An Ingress's `tls` entry: the Ingress, its hosts, its Secret
/// (namespace, name).
pub(crate) type IngressTls = (Arc<ObjectRef>, Vec<Host>, (String, String));

/// One match of one rule of one route, as the edge tries them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeEntry {
    pub(crate) route: usize,
    pub(crate) rule: usize,
    pub(crate) matched: usize,
}

/// A listener with the route matches that attach to it, in precedence order.
#[derive(Debug)]
pub(crate) struct ServedListener {
    pub(crate) gateway: usize,
    pub(crate) listener: usize,
    pub(crate) entries: Vec<EdgeEntry>,
}

/// Everything the ingress serves.
#[derive(Debug, Default)]
pub(crate) struct EdgeTable {
    pub(crate) gateways: Vec<EdgeGateway>,
    pub(crate) listeners: Vec<ServedListener>,
    /// The matches of every Ingress, in precedence order.
    pub(crate) ingress: Vec<EdgeEntry>,
    /// (hosts, Secret) of every Ingress's `tls`, with the Ingress.
    pub(crate) ingress_tls: Vec<IngressTls>,
}

impl EdgeTable {
    /// Attaches the routes (already ordered by `RouteTable::index`) to the
    /// listeners that allow them.
    pub(crate) fn index(
        &mut self,
        routes: &[Route],
        namespaces: &std::collections::BTreeMap<String, Labels>,
    ) {
        let order = |entries: &mut Vec<EdgeEntry>| {
            entries.sort_by(|a, b| {
                let ma = &routes[a.route].rules[a.rule].matches[a.matched];
                let mb = &routes[b.route].rules[b.rule].matches[b.matched];
                (ma.precedence(), a.route, a.rule, a.matched).cmp(&(
                    mb.precedence(),
                    b.route,
                    b.rule,
                    b.matched,
                ))
            });
        };
        let all = |route: usize| {
            let r: &Route = &routes[route];
            r.rules.iter().enumerate().flat_map(move |(rule, rr)| {
                (0..rr.matches.len()).map(move |matched| EdgeEntry {
                    route,
                    rule,
                    matched,
                })
            })
        };
        self.listeners.clear();
        for (g, gw) in self.gateways.iter().enumerate() {
            for (li, l) in gw.listeners.iter().enumerate() {
                if l.protocol != EdgeProtocol::Https {
                    continue;
                }
                let mut entries = Vec::new();
                for (ri, route) in routes.iter().enumerate() {
                    let attached = route.parents.iter().any(|p| match p {
                        Parent::Gateway {
                            namespace,
                            name,
                            section,
                            port,
                        } => {
                            *namespace == gw.common.object.namespace
                                && *name == gw.common.object.name
                                && section.as_ref().is_none_or(|s| *s == l.name)
                                && port.is_none_or(|p| p == l.port)
                        }
                        _ => false,
                    });
                    if !attached {
                        continue;
                    }
                    let route_ns = route.common.object.namespace.as_str();
                    let allowed_ns = match &l.from {
                        AllowedFrom::Same => route_ns == gw.common.object.namespace,
                        AllowedFrom::All => true,
                        AllowedFrom::Selector(s) => s.matches(&NamespaceLabels {
                            name: route_ns,
                            labels: namespaces.get(route_ns),
                        }),
                    };
                    let allowed_kind =
                        l.kinds.is_empty() || l.kinds.contains(&route.common.object.kind);
                    if allowed_ns && allowed_kind {
                        entries.extend(all(ri));
                    }
                }
                order(&mut entries);
                self.listeners.push(ServedListener {
                    gateway: g,
                    listener: li,
                    entries,
                });
            }
        }
        let mut ingress: Vec<EdgeEntry> = Vec::new();
        for (ri, route) in routes.iter().enumerate() {
            if route.parents.contains(&Parent::Ingress) {
                ingress.extend(all(ri));
            }
        }
        order(&mut ingress);
        self.ingress = ingress;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        let exact = Host::parse("shop.example", false).unwrap();
        assert!(exact.matches("shop.example"));
        assert!(!exact.matches("www.shop.example"));
        let gw = Host::parse("*.example.com", false).unwrap();
        assert!(gw.matches("a.example.com"));
        // The Gateway API's wildcard covers several labels, an Ingress's one.
        assert!(gw.matches("a.b.example.com"));
        assert!(!gw.matches("example.com"));
        assert!(!gw.matches("aexample.com"));
        let ing = Host::parse("*.example.com", true).unwrap();
        assert!(ing.matches("a.example.com"));
        assert!(!ing.matches("a.b.example.com"));
        for bad in [
            "",
            "Shop.example",
            "10.0.0.1",
            "a..b",
            "*",
            "a.*.b",
            "shop.example:443",
            "-a.b",
        ] {
            assert!(Host::parse(bad, false).is_err(), "{bad:?}");
        }
        assert!(exact.rank() < gw.rank());
        let longer = Host::parse("*.shop.example.com", false).unwrap();
        assert!(longer.rank() < gw.rank());
    }
}
