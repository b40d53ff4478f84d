//! NetworkPolicy, as Kubernetes defines it: ingress at the destination,
//! egress at the source.

use std::time::SystemTime;

use super::{DecidedBy, Direction, Evaluator, NpPeerInfo, Workload};
use crate::compile::namespace_slice;
use crate::compile::network_policy::{NetPol, NpPeer, NpPort, NpRule};
use crate::compile::selector::NamespaceLabels;

impl Evaluator {
    /// Kubernetes: a pod is isolated in a direction when any policy selecting
    /// it has that policy type; then the union of their rules must allow the
    /// traffic. Returns what denied (the first isolating policy), or `None`.
    pub(super) fn network_policy(
        &self,
        pod: &Workload<'_>,
        direction: Direction,
        peer: &NpPeerInfo<'_>,
        port: u16,
        now: SystemTime,
        include_dry_run: bool,
    ) -> Option<DecidedBy> {
        let mut isolated_by = None;
        for policy in namespace_slice(&self.tables.netpol, pod.namespace, |n| &n.common) {
            if !policy.common.active(now, include_dry_run)
                || !policy.pod_selector.matches(pod.labels)
            {
                continue;
            }
            let rules = match direction {
                Direction::Ingress => policy.ingress.as_deref(),
                Direction::Egress => policy.egress.as_deref(),
            };
            let Some(rules) = rules else { continue };
            if rules
                .iter()
                .any(|r| self.np_rule_matches(policy, r, peer, port))
            {
                return None;
            }
            if isolated_by.is_none() {
                isolated_by = Some(DecidedBy::Object {
                    object: policy.common.object.clone(),
                });
            }
        }
        isolated_by
    }

    pub(super) fn np_rule_matches(
        &self,
        policy: &NetPol,
        rule: &NpRule,
        peer: &NpPeerInfo<'_>,
        port: u16,
    ) -> bool {
        let port_ok = rule.ports.as_ref().is_none_or(|ports| {
            ports.iter().any(|p: &NpPort| {
                p.tcp
                    && p.range
                        .is_none_or(|(low, high)| low <= port && port <= high)
            })
        });
        port_ok
            && rule
                .peers
                .as_ref()
                .is_none_or(|peers| peers.iter().any(|p| self.np_peer_matches(policy, p, peer)))
    }

    pub(super) fn np_peer_matches(
        &self,
        policy: &NetPol,
        np_peer: &NpPeer,
        peer: &NpPeerInfo<'_>,
    ) -> bool {
        match np_peer {
            // Kubernetes: an ipBlock matches by address only; pods and
            // external hosts alike.
            NpPeer::Block { cidr, except } => peer
                .ip
                .is_some_and(|ip| cidr.contains(ip) && !except.iter().any(|e| e.contains(ip))),
            NpPeer::Pods { namespace, pods } => {
                // Without a namespace the peer is outside the mesh (or
                // unknown): only ipBlock peers can match it.
                let Some(peer_namespace) = peer.namespace else {
                    return false;
                };
                let namespace_ok = match namespace {
                    // Kubernetes: podSelector alone selects in the policy's namespace.
                    None => peer_namespace == policy.common.object.namespace,
                    Some(selector) => selector.matches(&NamespaceLabels {
                        name: peer_namespace,
                        labels: self.tables.namespaces.get(peer_namespace),
                    }),
                };
                // Kubernetes: both selectors in one peer are ANDed. Unknown
                // pod labels satisfy only a selector that selects every pod.
                namespace_ok
                    && pods.as_ref().is_none_or(|selector| match peer.labels {
                        Some(labels) => selector.matches(labels),
                        None => selector.is_empty(),
                    })
            }
        }
    }
}
