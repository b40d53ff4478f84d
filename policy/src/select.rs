//! The part of a snapshot one workload needs, for the control plane to push
//! to that workload's proxy.
//!
//! The subset gives the same decisions as the whole snapshot for every
//! request where the workload is the destination (inbound) or the source
//! (outbound): it keeps every object that can apply to the workload, whatever
//! its annotations (expiry is judged by the proxy at request time, dry-run
//! objects are reported by it), and every Namespace (namespaceSelectors look
//! at the caller's namespace, which can be any).

use crate::compile::selector::Selector;
use crate::resource::{Labels, Object, ROOT_NAMESPACE, Snapshot, WorkloadSelector};

fn selects(selector: Option<&WorkloadSelector>, labels: &Labels) -> bool {
    match selector.and_then(|s| s.match_labels.as_ref()) {
        None => true,
        Some(wanted) => wanted.iter().all(|(k, v)| labels.get(k) == Some(v)),
    }
}

impl Snapshot {
    /// The objects that apply to a workload in `namespace` with `labels`.
    pub fn for_workload(&self, namespace: &str, labels: &Labels) -> Snapshot {
        let in_scope = |object_namespace: &str| {
            object_namespace == namespace || object_namespace == ROOT_NAMESPACE
        };
        let objects = self
            .objects
            .iter()
            .filter(|object| match object {
                Object::AuthorizationPolicy(p) => {
                    in_scope(p.metadata.namespace_or_default())
                        && selects(p.spec.selector.as_ref(), labels)
                }
                Object::PeerAuthentication(p) => {
                    in_scope(p.metadata.namespace_or_default())
                        && selects(p.spec.selector.as_ref(), labels)
                }
                // NetworkPolicies select pods of their own namespace only,
                // for both ingress to and egress from them.
                Object::NetworkPolicy(p) => {
                    p.metadata.namespace_or_default() == namespace
                        // A selector that does not compile is kept: the proxy's
                        // compile then fails loudly instead of losing a policy.
                        && Selector::compile(&p.spec.pod_selector).map_or(true, |s| s.matches(labels))
                }
                // Grants are few and small; every proxy resolving a route
                // or a certificate needs them.
                Object::Namespace(_) | Object::ReferenceGrant(_) => true,
                // The control plane evaluates anomaly rules; proxies enforce
                // the quarantines they impose, like AuthorizationPolicies.
                Object::AnomalyRule(_) => false,
                Object::Quarantine(q) => {
                    in_scope(q.metadata.namespace_or_default())
                        && selects(q.spec.selector.as_ref(), labels)
                }
                // Rate limits are enforced at the limited workload's inbound.
                Object::RateLimitPolicy(p) => {
                    in_scope(p.metadata.namespace_or_default())
                        && selects(p.spec.selector.as_ref(), labels)
                }
                // Egress is decided by the source's own outbound: the
                // ServiceEntries exported to its namespace, the Sidecars
                // that select it.
                Object::ServiceEntry(se) => se.exported_to(namespace),
                Object::Sidecar(s) => {
                    in_scope(s.metadata.namespace_or_default())
                        && s.spec
                            .workload_selector
                            .as_ref()
                            .is_none_or(|w| w.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
                }
                Object::EgressPolicy(p) => {
                    in_scope(p.metadata.namespace_or_default())
                        && selects(p.spec.selector.as_ref(), labels)
                }
                // A client proxy applies routes: producer routes (in their
                // Service's namespace) to every client, consumer routes to
                // clients of their own namespace.
                Object::HttpRoute(r) => {
                    route_for(r.metadata.namespace_or_default(), &r.spec.parent_refs, namespace)
                }
                Object::GrpcRoute(r) => {
                    route_for(r.metadata.namespace_or_default(), &r.spec.parent_refs, namespace)
                }
                // The edge's objects go to the ingress only (`for_gateway`).
                Object::Gateway(_) | Object::Ingress(_) => false,
            })
            .cloned()
            .collect();
        Snapshot { objects }
    }

    /// What the ingress (a workload in `namespace` with `labels`) applies:
    /// its own share as a workload, and every Gateway, Ingress and route
    /// attached to a Gateway.
    pub fn for_gateway(&self, namespace: &str, labels: &Labels) -> Snapshot {
        let mut share = self.for_workload(namespace, labels);
        let edge = self.objects.iter().filter(|object| match object {
            Object::Gateway(_) | Object::Ingress(_) => true,
            Object::HttpRoute(r) => at_edge(&r.spec.parent_refs),
            Object::GrpcRoute(r) => at_edge(&r.spec.parent_refs),
            _ => false,
        });
        for object in edge {
            if !share.objects.contains(object) {
                share.objects.push(object.clone());
            }
        }
        share
    }
}

/// Whether a route has a Gateway parent (kind Gateway, or no kind: the
/// Gateway API's default).
fn at_edge(parents: &[crate::resource::http_route::ParentRef]) -> bool {
    parents
        .iter()
        .any(|p| p.kind.as_deref().is_none_or(|k| k == "Gateway"))
}

/// Whether a client in `namespace` applies a route of namespace `own`: a
/// consumer route of its own namespace, or a producer route (one with a
/// parent Service in the route's own namespace).
fn route_for(
    own: &str,
    parents: &[crate::resource::http_route::ParentRef],
    namespace: &str,
) -> bool {
    let mesh = |p: &&crate::resource::http_route::ParentRef| p.kind.as_deref() == Some("Service");
    parents.iter().any(|p| mesh(&p))
        && (own == namespace
            || parents
                .iter()
                .filter(mesh)
                .any(|p| p.namespace.as_deref().unwrap_or(own) == own))
}
