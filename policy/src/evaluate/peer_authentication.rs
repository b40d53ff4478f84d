//! PeerAuthentication: which mTLS mode applies to a workload's port.

use std::time::SystemTime;

use super::{DEFAULT_MTLS_MODE, DecidedBy, Evaluator, Workload};
use crate::compile::namespace_slice;
use crate::compile::peer_authentication::PeerAuth;
use crate::resource::{MtlsMode, ROOT_NAMESPACE};

impl Evaluator {
    /// Istio's precedence: workload selector (port-level over
    /// workload-level), then namespace-wide, then mesh-wide (root namespace);
    /// UNSET inherits from the next level. Within one level the first by namespace then name wins
    /// (Istio picks the oldest; files have no creation time), with the
    /// workload's own namespace before the root namespace.
    pub(super) fn peer_authentication(
        &self,
        workload: &Workload<'_>,
        port: u16,
        now: SystemTime,
        include_dry_run: bool,
    ) -> (MtlsMode, Option<DecidedBy>) {
        let all = &self.tables.peer_auth;
        let root = namespace_slice(all, ROOT_NAMESPACE, |p| &p.common);
        let own = if workload.namespace == ROOT_NAMESPACE {
            &[][..]
        } else {
            namespace_slice(all, workload.namespace, |p| &p.common)
        };
        let active = |p: &&PeerAuth| p.common.active(now, include_dry_run);
        let selected = own.iter().chain(root.iter()).filter(active).find(|p| {
            p.selector
                .as_ref()
                .is_some_and(|s| s.matches(workload.labels))
        });
        let namespace_wide = own.iter().filter(active).find(|p| p.selector.is_none());
        let mesh_wide = root.iter().filter(active).find(|p| p.selector.is_none());

        let mut mode = DEFAULT_MTLS_MODE;
        let mut by = None;
        for policy in [mesh_wide, namespace_wide, selected].into_iter().flatten() {
            if policy.mode != MtlsMode::Unset {
                mode = policy.mode;
                by = Some(DecidedBy::Object {
                    object: policy.common.object.clone(),
                });
            }
        }
        if let Some(policy) = selected
            && let Some(port_mode) = policy.port_mode(port).filter(|m| *m != MtlsMode::Unset)
        {
            mode = port_mode;
            by = Some(DecidedBy::Port {
                object: policy.common.object.clone(),
                port,
            });
        }
        (mode, by)
    }
}
