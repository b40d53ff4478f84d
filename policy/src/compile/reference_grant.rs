//! ReferenceGrants, compiled, and the one question they answer: may an
//! object of one namespace refer to an object of another?

use super::http_route::Permitted;
use super::{Common, Site};
use crate::Error;
use crate::resource::ReferenceGrant;
use crate::resource::gateway::GATEWAY_GROUP;
use crate::resource::reference_grant::MAX_ENTRIES;

#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) common: Common,
    /// (group, kind, namespace) of the objects that may refer.
    from: Vec<(String, String, String)>,
    /// (group, kind, name) of what they may refer to; name `None`: any.
    to: Vec<(String, String, Option<String>)>,
}

/// A reference from one object to another in a different namespace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reference<'a> {
    pub(crate) from_group: &'a str,
    pub(crate) from_kind: &'a str,
    pub(crate) from_namespace: &'a str,
    pub(crate) to_group: &'a str,
    pub(crate) to_kind: &'a str,
    pub(crate) to_namespace: &'a str,
    pub(crate) to_name: &'a str,
}

/// A kind's group as a grant spells it: Kubernetes' core group is `""`.
fn group_ok(group: &str) -> bool {
    group.is_empty()
        || (group.len() <= 253 && crate::validate::check_name(group, 253, true).is_ok())
}

/// A kind is a CamelCase identifier (`HTTPRoute`, `Secret`).
fn kind_ok(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 63
        && kind.as_bytes()[0].is_ascii_alphabetic()
        && kind.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(crate) fn compile(
    grant: &ReferenceGrant,
    common: Common,
    site: &Site<'_>,
    errors: &mut Vec<Error>,
) -> Option<Grant> {
    let start = errors.len();
    let spec = &grant.spec;
    for (field, len) in [("spec.from", spec.from.len()), ("spec.to", spec.to.len())] {
        if len == 0 || len > MAX_ENTRIES {
            errors.push(site.field(field, format!("1 to {MAX_ENTRIES} entries")));
        }
    }
    let mut from = Vec::new();
    for (i, f) in spec.from.iter().enumerate() {
        let at = format!("spec.from[{i}]");
        if !group_ok(&f.group) {
            errors.push(site.field(
                format!("{at}.group"),
                format!("{:?} is not an API group", f.group),
            ));
        }
        if !kind_ok(&f.kind) {
            errors.push(site.field(format!("{at}.kind"), format!("{:?} is not a kind", f.kind)));
        }
        if let Err(m) = crate::validate::check_name(&f.namespace, 63, false) {
            errors.push(site.field(format!("{at}.namespace"), m));
        }
        from.push((f.group.clone(), f.kind.clone(), f.namespace.clone()));
    }
    let mut to = Vec::new();
    for (i, t) in spec.to.iter().enumerate() {
        let at = format!("spec.to[{i}]");
        if !group_ok(&t.group) {
            errors.push(site.field(
                format!("{at}.group"),
                format!("{:?} is not an API group", t.group),
            ));
        }
        if !kind_ok(&t.kind) {
            errors.push(site.field(format!("{at}.kind"), format!("{:?} is not a kind", t.kind)));
        }
        if let Some(name) = &t.name
            && let Err(m) = crate::validate::check_name(name, 253, true)
        {
            errors.push(site.field(format!("{at}.name"), m));
        }
        to.push((t.group.clone(), t.kind.clone(), t.name.clone()));
    }
    (errors.len() == start).then_some(Grant { common, from, to })
}

impl Grant {
    fn permits(&self, r: &Reference<'_>) -> bool {
        self.common.object.namespace == r.to_namespace
            && self
                .from
                .iter()
                .any(|(g, k, ns)| g == r.from_group && k == r.from_kind && ns == r.from_namespace)
            && self.to.iter().any(|(g, k, name)| {
                g == r.to_group && k == r.to_kind && name.as_deref().is_none_or(|n| n == r.to_name)
            })
    }
}

/// Whether `grants` permit `r`: a reference within one namespace needs no
/// grant; across namespaces, the grant that lasts longest decides.
pub(crate) fn permission(grants: &[Grant], r: &Reference<'_>) -> Permitted {
    if r.from_namespace == r.to_namespace {
        return Permitted::Yes;
    }
    let mut best = Permitted::No;
    // A grant in dry-run is reported (lint, `meshctl policy check`), never
    // followed: it permits nothing.
    for g in grants.iter().filter(|g| !g.common.dry_run && g.permits(r)) {
        match g.common.expires_at {
            None => return Permitted::Yes,
            Some(at) => {
                if !matches!(best, Permitted::Until(t) if t >= at) {
                    best = Permitted::Until(at);
                }
            }
        }
    }
    best
}

/// Resolves every cross-namespace reference of the compiled snapshot:
/// route backends (HTTPRoute, GRPCRoute) to Services and Gateway
/// certificates to Secrets.
pub(crate) fn resolve(tables: &mut super::Tables) {
    let grants = &tables.grants;
    for route in &mut tables.routes.routes {
        let from = &route.common.object;
        for rule in &mut route.rules {
            for b in &mut rule.backends {
                b.permitted = permission(
                    grants,
                    &Reference {
                        from_group: GATEWAY_GROUP,
                        from_kind: from.kind.as_str(),
                        from_namespace: &from.namespace,
                        to_group: "",
                        to_kind: "Service",
                        to_namespace: &b.namespace,
                        to_name: &b.name,
                    },
                );
            }
        }
    }
    for gw in &mut tables.edge.gateways {
        let from = &gw.common.object;
        for l in &mut gw.listeners {
            for c in &mut l.certificates {
                c.permitted = permission(
                    grants,
                    &Reference {
                        from_group: GATEWAY_GROUP,
                        from_kind: "Gateway",
                        from_namespace: &from.namespace,
                        to_group: "",
                        to_kind: "Secret",
                        to_namespace: &c.namespace,
                        to_name: &c.name,
                    },
                );
            }
        }
    }
}

/// A cross-namespace reference no ReferenceGrant allows (at some instant):
/// the Gateway API's `RefNotPermitted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedReference {
    /// The referring route or Gateway.
    pub object: std::sync::Arc<crate::resource::ObjectRef>,
    /// Where in it: `rule 0`, `listener shop`.
    pub at: String,
    /// What it refers to: `Service billing/payments`, `Secret certs/shop-tls`.
    pub target: String,
    /// A grant allowed it once and has expired.
    pub lapsed: bool,
}

/// Every reference of `tables` that may not be followed at `now`.
pub(crate) fn refused(tables: &super::Tables, now: std::time::SystemTime) -> Vec<RefusedReference> {
    let mut out = Vec::new();
    let mut note = |object: &std::sync::Arc<crate::resource::ObjectRef>,
                    at: String,
                    target: String,
                    permitted: &Permitted| {
        if !permitted.holds(now) {
            out.push(RefusedReference {
                object: object.clone(),
                at,
                target,
                lapsed: matches!(permitted, Permitted::Until(_)),
            });
        }
    };
    for route in &tables.routes.routes {
        for (i, rule) in route.rules.iter().enumerate() {
            for b in &rule.backends {
                note(
                    &route.common.object,
                    format!("rule {i}"),
                    format!("Service {}/{}", b.namespace, b.name),
                    &b.permitted,
                );
            }
        }
    }
    for gw in &tables.edge.gateways {
        for l in &gw.listeners {
            for c in &l.certificates {
                note(
                    &gw.common.object,
                    format!("listener {}", l.name),
                    format!("Secret {}/{}", c.namespace, c.name),
                    &c.permitted,
                );
            }
        }
    }
    out
}
