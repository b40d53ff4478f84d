//! EgressPolicy at the source's outbound: may this connection leave the
//! mesh? Policies of the workload's namespace and of the root namespace
//! whose selector takes the workload apply. A destination one of their
//! rules allows (by name, address, port and protocol) is allowed, naming
//! the rule; otherwise a policy whose `default` is `deny` denies it, naming
//! that policy; with only `allow-all` defaults it passes. No policy: the
//! workload's egress is unrestricted (and `meshctl policy lint` says so).
//!
//! `mode: dry-run` policies take part only in the would-be pass, as
//! dry-run objects everywhere else do: their denials are counted and logged,
//! never enforced.

use std::net::IpAddr;
use std::time::SystemTime;

use super::{DecidedBy, Decision, DryRunDeny, Evaluator, Stage, Verdict, Workload};
use crate::compile::egress::Egress;
use crate::compile::namespace_slice;
use crate::resource::ROOT_NAMESPACE;
use crate::resource::egress::{EgressDefault, EgressProtocol};

/// A connection leaving the mesh, as the source's outbound saw it.
#[derive(Debug, Clone, Copy)]
pub struct EgressRequest<'a> {
    pub source: Workload<'a>,
    /// The name the client asked for: TLS SNI or HTTP `Host`, lowercase,
    /// without a port; `None` when the bytes carry none.
    pub host: Option<&'a str>,
    /// The address it connected to.
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: EgressProtocol,
    pub now: SystemTime,
}

/// The answer, and whether the enforced pass allowed by name only: the
/// proxy must then check that the name resolves to the address the client
/// connected to (a client naming an allowed host while connecting to
/// another address is fronting a domain).
#[derive(Debug, Clone)]
pub struct EgressDecision {
    pub decision: Decision,
    pub by_name: bool,
}

impl Evaluator {
    /// Whether any EgressPolicy is in the snapshot (outside connections
    /// then need a look at their first bytes).
    pub fn has_egress_policies(&self) -> bool {
        !self.tables.egress.is_empty()
    }

    pub fn egress(&self, r: &EgressRequest<'_>) -> EgressDecision {
        let (mut decision, by_name) = self.egress_pass(r, false);
        let any_dry_run = self.tables.egress.iter().any(|e| e.common.dry_run)
            || self.tables.service_entries.iter().any(|e| e.common.dry_run);
        if decision.is_allowed() && any_dry_run {
            let (would, _) = self.egress_pass(r, true);
            if !would.is_allowed() {
                decision.dry_run = Some(DryRunDeny {
                    stage: would.stage,
                    decided_by: would.decided_by,
                });
            }
        }
        EgressDecision { decision, by_name }
    }

    fn egress_pass(&self, r: &EgressRequest<'_>, include_dry_run: bool) -> (Decision, bool) {
        let own = namespace_slice(&self.tables.egress, r.source.namespace, |e| &e.common);
        let root = if r.source.namespace == ROOT_NAMESPACE {
            &[][..]
        } else {
            namespace_slice(&self.tables.egress, ROOT_NAMESPACE, |e| &e.common)
        };
        let applies = |e: &&Egress| {
            e.common.active(r.now, include_dry_run)
                && e.selector
                    .as_ref()
                    .is_none_or(|s| s.matches(r.source.labels))
        };
        let mut denying = None;
        let mut passing = None;
        // The ServiceEntries exported here, looked at once, after the
        // first applicable policy's own rules.
        let mut by_entry: Option<Option<(Decision, bool)>> = None;
        for e in own.iter().chain(root).filter(applies) {
            for (i, rule) in e.rules.iter().enumerate() {
                if let Some(by_name) = rule.takes(r.host, r.ip, r.port, r.protocol) {
                    let by = DecidedBy::Rule {
                        object: e.common.object.clone(),
                        rule: i,
                    };
                    return (
                        Decision::new(Verdict::Allow, Stage::EgressPolicy, by),
                        by_name,
                    );
                }
            }
            if by_entry.is_none() {
                by_entry = Some(self.service_entry_allows(r, include_dry_run));
            }
            if let Some(Some(found)) = &by_entry {
                return found.clone();
            }
            let slot = match e.default {
                EgressDefault::Deny => &mut denying,
                EgressDefault::AllowAll => &mut passing,
            };
            slot.get_or_insert_with(|| e.common.object.clone());
        }
        let decision = match (denying, passing) {
            (Some(object), _) => Decision::new(
                Verdict::Deny,
                Stage::EgressPolicy,
                DecidedBy::Object { object },
            ),
            (None, Some(object)) => Decision::new(
                Verdict::Allow,
                Stage::EgressPolicy,
                DecidedBy::Object { object },
            ),
            (None, None) => {
                Decision::new(Verdict::Allow, Stage::EgressPolicy, DecidedBy::DefaultAllow)
            }
        };
        (decision, false)
    }

    /// The first rule of a ServiceEntry exported to the source's namespace
    /// that takes the connection.
    fn service_entry_allows(
        &self,
        r: &EgressRequest<'_>,
        include_dry_run: bool,
    ) -> Option<(Decision, bool)> {
        self.tables
            .service_entries
            .iter()
            .filter(|se| {
                se.common.active(r.now, include_dry_run) && se.exported_to(r.source.namespace)
            })
            .find_map(|se| {
                se.rules.iter().enumerate().find_map(|(i, rule)| {
                    rule.takes(r.host, r.ip, r.port, r.protocol).map(|by_name| {
                        let by = DecidedBy::Rule {
                            object: se.common.object.clone(),
                            rule: i,
                        };
                        (
                            Decision::new(Verdict::Allow, Stage::EgressPolicy, by),
                            by_name,
                        )
                    })
                })
            })
    }
}
