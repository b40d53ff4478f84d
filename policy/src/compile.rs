//! Compilation: checked objects → matchers the evaluator runs without
//! parsing, allocating or looking anything up by string map.
//!
//! Every check that can fail happens here, and the YAML loader runs it on each
//! object as it reads it, so a bad value is reported with its file, object and
//! field, and a snapshot that loaded always compiles.

pub(crate) mod anomaly;
pub(crate) mod authorization;
pub(crate) mod cidr;
pub(crate) mod edge;
pub(crate) mod egress;
pub(crate) mod grpc_route;
pub(crate) mod http_route;
pub(crate) mod matcher;
pub(crate) mod network_policy;
pub(crate) mod peer_authentication;
pub(crate) mod rate_limit;
pub(crate) mod reference_grant;
pub(crate) mod selector;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::Error;
use crate::resource::{
    ANNOTATION_DRY_RUN, ANNOTATION_EXPIRES_AT, Labels, Object, ObjectMeta, ObjectRef, Snapshot,
    TRUST_DOMAIN_ALIAS,
};

use authorization::Authz;
use network_policy::NetPol;
use peer_authentication::PeerAuth;

/// Where an error is: the file and the object, as operators read them.
pub(crate) struct Site<'a> {
    pub(crate) file: &'a str,
    pub(crate) object: String,
}

impl Site<'_> {
    pub(crate) fn field(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Field {
            file: self.file.to_owned(),
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What every compiled policy object carries: its name and when it applies.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) object: Arc<ObjectRef>,
    pub(crate) dry_run: bool,
    pub(crate) expires_at: Option<SystemTime>,
}

impl Common {
    /// Whether the object takes part in an evaluation at `now`. Dry-run
    /// objects take part only in the would-be pass.
    #[inline]
    pub(crate) fn active(&self, now: SystemTime, include_dry_run: bool) -> bool {
        (include_dry_run || !self.dry_run) && self.expires_at.is_none_or(|at| now < at)
    }
}

/// A port written as text: `"8080"`. Port 0 is not a destination.
pub(crate) fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// The Palisade annotations, checked. An unparsable expiry is an error, not
/// "never expires": a typo must not turn a time-limited exception permanent.
fn common(object: &Object, site: &Site<'_>, errors: &mut Vec<Error>) -> Common {
    let metadata: &ObjectMeta = object.metadata();
    let dry_run = match metadata
        .annotations
        .get(ANNOTATION_DRY_RUN)
        .map(String::as_str)
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            errors.push(site.field(
                format!("metadata.annotations[{ANNOTATION_DRY_RUN}]"),
                format!("{other:?} is not \"true\" or \"false\""),
            ));
            false
        }
    };
    let expires_at = metadata
        .annotations
        .get(ANNOTATION_EXPIRES_AT)
        .and_then(|text| match crate::validate::parse_rfc3339(text) {
            Ok(at) => Some(at),
            Err(()) => {
                errors.push(site.field(
                    format!("metadata.annotations[{ANNOTATION_EXPIRES_AT}]"),
                    format!("{text:?} is not an RFC 3339 time (e.g. 2030-01-31T18:00:00Z)"),
                ));
                None
            }
        });
    Common {
        object: Arc::new(object.object_ref()),
        dry_run,
        expires_at,
    }
}

/// One object, compiled.
enum Compiled {
    Authz(Authz),
    PeerAuth(PeerAuth),
    NetPol(NetPol),
    Namespace(String, Labels),
    Route(http_route::Route),
    RateLimit(rate_limit::RateLimit),
    Gateway(edge::EdgeGateway),
    Ingress(edge::CompiledIngress),
    Egress(egress::Egress),
    Exported(egress::Exported),
    Grant(reference_grant::Grant),
    /// Loaded and checked, deciding nothing (a Sidecar without an
    /// outboundTrafficPolicy).
    Inert,
}

fn compile_object(
    file: &str,
    object: &Object,
    trust_domain: &str,
    errors: &mut Vec<Error>,
) -> Option<Compiled> {
    let site = Site {
        file,
        object: object.object_ref().to_string(),
    };
    let start = errors.len();
    let common = common(object, &site, errors);
    let compiled = match object {
        Object::AuthorizationPolicy(p) => {
            authorization::compile(p, common, &site, trust_domain, errors).map(Compiled::Authz)
        }
        Object::PeerAuthentication(p) => {
            peer_authentication::compile(p, common, &site, errors).map(Compiled::PeerAuth)
        }
        Object::NetworkPolicy(p) => {
            network_policy::compile(p, common, &site, errors).map(Compiled::NetPol)
        }
        Object::HttpRoute(r) => http_route::compile(r, common, &site, errors).map(Compiled::Route),
        Object::GrpcRoute(r) => grpc_route::compile(r, common, &site, errors).map(Compiled::Route),
        Object::RateLimitPolicy(p) => {
            rate_limit::compile(p, common, &site, trust_domain, errors).map(Compiled::RateLimit)
        }
        Object::EgressPolicy(p) => egress::compile(p, common, &site, errors).map(Compiled::Egress),
        Object::ServiceEntry(se) => {
            egress::compile_service_entry(se, common, &site, errors).map(Compiled::Exported)
        }
        Object::Sidecar(s) => Some(
            egress::compile_sidecar(s, common, &site, errors)
                .map_or(Compiled::Inert, Compiled::Egress),
        ),
        Object::Gateway(g) => {
            edge::compile_gateway(g, common, &site, errors).map(Compiled::Gateway)
        }
        Object::Ingress(i) => {
            edge::compile_ingress(i, common, &site, errors).map(Compiled::Ingress)
        }
        Object::AnomalyRule(r) => {
            anomaly::check_rule(r, &site, errors);
            Some(Compiled::Inert)
        }
        Object::Quarantine(q) => {
            anomaly::compile_quarantine(q, common, &site, trust_domain, errors).map(Compiled::Authz)
        }
        Object::ReferenceGrant(g) => {
            reference_grant::compile(g, common, &site, errors).map(Compiled::Grant)
        }
        Object::Namespace(n) => Some(Compiled::Namespace(
            n.metadata.name.clone(),
            n.metadata.labels.clone(),
        )),
    };
    if errors.len() > start { None } else { compiled }
}

/// Checks one object as the loader reads it (file and object in the errors).
pub(crate) fn check_object(file: &str, object: &Object) -> Vec<Error> {
    let mut errors = Vec::new();
    compile_object(file, object, TRUST_DOMAIN_ALIAS, &mut errors);
    errors
}

/// The compiled snapshot, sorted by (namespace, name) so the evaluator can
/// slice out one namespace by binary search and names the same deciding
/// object every time.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub(crate) authz: Vec<Authz>,
    pub(crate) peer_auth: Vec<PeerAuth>,
    pub(crate) netpol: Vec<NetPol>,
    pub(crate) namespaces: BTreeMap<String, Labels>,
    pub(crate) routes: http_route::RouteTable,
    pub(crate) rate_limits: Vec<rate_limit::RateLimit>,
    pub(crate) edge: edge::EdgeTable,
    pub(crate) egress: Vec<egress::Egress>,
    /// ServiceEntries, consulted for every namespace they are exported to.
    pub(crate) service_entries: Vec<egress::Exported>,
    pub(crate) grants: Vec<reference_grant::Grant>,
}

pub(crate) fn compile_snapshot(
    snapshot: &Snapshot,
    trust_domain: &str,
    origin: &str,
) -> Result<Tables, Error> {
    let mut errors = Vec::new();
    let mut tables = Tables::default();
    for object in &snapshot.objects {
        match compile_object(origin, object, trust_domain, &mut errors) {
            Some(Compiled::Authz(a)) => tables.authz.push(a),
            Some(Compiled::PeerAuth(p)) => tables.peer_auth.push(p),
            Some(Compiled::NetPol(n)) => tables.netpol.push(n),
            Some(Compiled::Namespace(name, labels)) => {
                tables.namespaces.insert(name, labels);
            }
            Some(Compiled::Route(r)) => tables.routes.routes.push(r),
            Some(Compiled::RateLimit(l)) => tables.rate_limits.push(l),
            Some(Compiled::Gateway(g)) => tables.edge.gateways.push(g),
            Some(Compiled::Egress(e)) => tables.egress.push(e),
            Some(Compiled::Exported(e)) => tables.service_entries.push(e),
            Some(Compiled::Grant(g)) => tables.grants.push(g),
            Some(Compiled::Inert) => {}
            Some(Compiled::Ingress(i)) => {
                for (hosts, secret) in i.tls {
                    tables
                        .edge
                        .ingress_tls
                        .push((i.route.common.object.clone(), hosts, secret));
                }
                tables.routes.routes.push(i.route);
            }
            None => {}
        }
    }
    errors.extend(crate::validate::check_duplicates(origin, &snapshot.objects));
    if let Some(error) = Error::from_list(errors) {
        return Err(error);
    }
    let key = |c: &Common| (c.object.namespace.clone(), c.object.name.clone());
    tables.authz.sort_by_key(|a| key(&a.common));
    tables.peer_auth.sort_by_key(|p| key(&p.common));
    tables.netpol.sort_by_key(|n| key(&n.common));
    tables.rate_limits.sort_by_key(|l| key(&l.common));
    tables.egress.sort_by_key(|e| key(&e.common));
    tables.service_entries.sort_by_key(|e| key(&e.common));
    reference_grant::resolve(&mut tables);
    tables.routes.index();
    tables.edge.gateways.sort_by_key(|g| key(&g.common));
    tables.edge.index(&tables.routes.routes, &tables.namespaces);
    Ok(tables)
}

/// The items of one namespace in a slice sorted by namespace.
#[inline]
pub(crate) fn namespace_slice<'a, T>(
    items: &'a [T],
    namespace: &str,
    common: impl Fn(&T) -> &Common,
) -> &'a [T] {
    let start = items.partition_point(|i| common(i).object.namespace.as_str() < namespace);
    let len = items[start..].partition_point(|i| common(i).object.namespace.as_str() == namespace);
    &items[start..start + len]
}
