//! Egress authorization: NetworkPolicy egress of the local workload, for
//! each destination before anything is sent to it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::access;
use crate::discovery::KnownWorkload;
use crate::errors::AuthzError;
use crate::policy::{self, LocalWorkload, PolicyRx};

#[derive(Clone)]
pub struct Egress {
    pub policy: PolicyRx,
    pub local: Arc<LocalWorkload>,
}

impl Egress {
    /// Decides a connection to `dst` (a workload when known), counted and logged.
    pub fn check(
        &self,
        dst: SocketAddr,
        workload: Option<&KnownWorkload>,
        server: &str,
    ) -> Result<(), AuthzError> {
        let view = self.policy.borrow().clone();
        let decision = policy::decide_outbound(
            view.as_deref(),
            &self.local,
            Some(dst.ip()),
            workload.map(|w| (w.namespace.as_str(), &w.labels)),
            dst.port(),
        )
        .ok_or(AuthzError::NoPolicy)?;
        policy::record("outbound", &decision);
        access::outbound(dst, server, &decision);
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(AuthzError::Denied(decision.decided_by.to_string()))
        }
    }
}
