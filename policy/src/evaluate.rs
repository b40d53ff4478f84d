//! The one evaluator: the proxy, the control plane and `meshctl policy check`
//! all ask it, so an offline check gives the answer the running mesh gives.
//!
//! Inbound (at the destination's proxy): PeerAuthentication (is plaintext
//! allowed here?) → NetworkPolicy ingress of the destination →
//! AuthorizationPolicy. Outbound (at the source's proxy): NetworkPolicy
//! egress of the source. [`Evaluator::check`] runs both, as one connection
//! crosses both proxies.
//!
//! Evaluation never allocates: the compiled tables are sorted by namespace,
//! matchers are precompiled, and a decision names its rule through an `Arc`.

mod authorization;
mod decision;
mod edge;
mod egress;
mod network_policy;
mod peer_authentication;
mod rate_limit;
mod request;
mod route;

use std::net::IpAddr;
use std::time::SystemTime;

use crate::Error;
use crate::compile::{Tables, compile_snapshot};
use crate::load::SNAPSHOT_ORIGIN;
use crate::resource::{Action, Labels, MtlsMode, Snapshot};

pub use decision::{DecidedBy, Decision, DryRunDeny, Stage, Verdict};
pub use edge::{EdgeCertificate, EdgeListenerInfo, EdgeRequest};
pub use egress::{EgressDecision, EgressRequest};
pub use rate_limit::{RateLimitMatch, RateLimitRequest};
pub use request::{Headers, Http, Peer, Request, Workload};
pub use route::{RouteDecision, RouteRequest, idempotent};

/// mTLS mode when no PeerAuthentication applies. Istio defaults to
/// PERMISSIVE to ease migration; Palisade is stricter by default because
/// every meshed workload already has an identity, and a plaintext caller is
/// one the operator must opt in to (with a PERMISSIVE PeerAuthentication).
pub const DEFAULT_MTLS_MODE: MtlsMode = MtlsMode::Strict;

/// The trust domain when the caller names none (DESIGN.md: `--trust-domain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Compiled policy, ready to answer.
#[derive(Debug)]
pub struct Evaluator {
    trust_domain: Box<str>,
    tables: Tables,
    /// Whether a would-be pass can differ from the enforced one at all.
    any_dry_run: bool,
    any_audit: bool,
    /// Some AuthorizationPolicy rule reads a field only HTTP requests have.
    any_http: bool,
}

/// What is known about the other side of a NetworkPolicy check.
struct NpPeerInfo<'r> {
    namespace: Option<&'r str>,
    labels: Option<&'r Labels>,
    ip: Option<IpAddr>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// The request, digested once per evaluation.
struct Facts<'r> {
    principal: Option<&'r str>,
    source_namespace: Option<&'r str>,
    source_ip: Option<IpAddr>,
    remote_ip: Option<IpAddr>,
    destination_ip: Option<IpAddr>,
    port: u16,
    http: Option<&'r Http<'r>>,
}

/// The namespace in a SPIFFE path `<td>/ns/<ns>/sa/<sa>` (Istio derives
/// `source.namespace` from the principal, never from anything the caller says).
fn principal_namespace(principal: &str) -> Option<&str> {
    let (_, path) = principal.split_once('/')?;
    let rest = path.strip_prefix("ns/")?;
    let (namespace, rest) = rest.split_once('/')?;
    rest.starts_with("sa/").then_some(namespace)
}

impl Evaluator {
    /// Compiles a snapshot. `trust_domain` is the mesh's: `cluster.local` in
    /// a policy stands for it. Errors name `<snapshot>`, the object and field.
    pub fn compile(snapshot: &Snapshot, trust_domain: &str) -> Result<Evaluator, Error> {
        let tables = compile_snapshot(snapshot, trust_domain, SNAPSHOT_ORIGIN)?;
        let any_dry_run = tables.authz.iter().any(|a| a.common.dry_run)
            || tables.peer_auth.iter().any(|p| p.common.dry_run)
            || tables.netpol.iter().any(|n| n.common.dry_run);
        let any_audit = tables.authz.iter().any(|a| a.action == Action::Audit);
        let any_http = tables
            .authz
            .iter()
            .any(|a| a.rules.iter().any(|r| r.http_only))
            || !tables.rate_limits.is_empty();
        Ok(Evaluator {
            trust_domain: trust_domain.into(),
            tables,
            any_dry_run,
            any_audit,
            any_http,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The cross-namespace references (route backends, Gateway
    /// certificates) that no ReferenceGrant allows at `now`: those
    /// backends answer 500, those certificates are not served.
    pub fn refused_references(
        &self,
        now: std::time::SystemTime,
    ) -> Vec<crate::compile::reference_grant::RefusedReference> {
        crate::compile::reference_grant::refused(&self.tables, now)
    }

    /// Whether any AuthorizationPolicy rule in this snapshot reads an
    /// HTTP-only field (methods, paths, hosts, request principals, request
    /// headers...). When none does, a connection's decision is the same for
    /// every request on it, so a proxy may decide once per connection and
    /// relay opaque bytes. Expired and dry-run objects count too.
    pub fn reads_http(&self) -> bool {
        self.any_http
    }

    /// The inbound decision at the destination's proxy (per connection for
    /// TCP, per request for HTTP). A request without a destination workload
    /// is denied: the proxy always knows whom it fronts.
    pub fn inbound(&self, request: &Request<'_>) -> Decision {
        self.inbound_with(request, true)
    }

    /// A request at the edge, as the ingress (`request.destination`)
    /// decides it: its clients come from outside the mesh, so
    /// PeerAuthentication has no say; NetworkPolicy ingress (`ipBlock`s on
    /// the connection's address) and AuthorizationPolicy (`ipBlocks`,
    /// `remoteIpBlocks` on the client address from trusted hops, hosts,
    /// paths...) decide as they do inbound.
    pub fn edge(&self, request: &Request<'_>) -> Decision {
        self.inbound_with(request, false)
    }

    fn inbound_with(&self, request: &Request<'_>, peer_auth: bool) -> Decision {
        let Some(destination) = request.destination.as_ref() else {
            return Decision::new(
                Verdict::Deny,
                Stage::AuthorizationPolicy,
                DecidedBy::DefaultDeny,
            );
        };
        let facts = self.facts(request);
        let mut decision = self.inbound_pass(destination, request, &facts, false, peer_auth);
        if decision.is_allowed() && self.any_dry_run {
            let would = self.inbound_pass(destination, request, &facts, true, peer_auth);
            if !would.is_allowed() {
                decision.dry_run = Some(DryRunDeny {
                    stage: would.stage,
                    decided_by: would.decided_by,
                });
            }
        }
        if self.any_audit {
            decision.audit = self.audit(destination, &facts, request.now);
        }
        decision
    }

    /// The outbound decision at the source's proxy: NetworkPolicy egress of
    /// `request.source`. Without a source workload nothing can be checked
    /// here (the caller is not meshed) and the result is allow.
    pub fn outbound(&self, request: &Request<'_>) -> Decision {
        let Some(source) = request.source.as_ref() else {
            return Decision::new(
                Verdict::Allow,
                Stage::NetworkPolicy,
                DecidedBy::DefaultAllow,
            );
        };
        let peer = NpPeerInfo {
            namespace: request.destination.as_ref().map(|d| d.namespace),
            labels: request.destination.as_ref().map(|d| d.labels),
            ip: request.destination_ip,
        };
        let pass = |include_dry_run| match self.network_policy(
            source,
            Direction::Egress,
            &peer,
            request.destination_port,
            request.now,
            include_dry_run,
        ) {
            Some(denied_by) => Decision::new(Verdict::Deny, Stage::NetworkPolicy, denied_by),
            None => Decision::new(
                Verdict::Allow,
                Stage::NetworkPolicy,
                DecidedBy::DefaultAllow,
            ),
        };
        let mut decision = pass(false);
        if decision.is_allowed() && self.any_dry_run {
            let would = pass(true);
            if !would.is_allowed() {
                decision.dry_run = Some(DryRunDeny {
                    stage: would.stage,
                    decided_by: would.decided_by,
                });
            }
        }
        decision
    }

    /// Both sides of one connection, as `meshctl policy check` and the
    /// control plane ask it: the source's egress, then the destination's
    /// inbound checks. Either side unknown: only the other side is checked.
    pub fn check(&self, request: &Request<'_>) -> Decision {
        let outbound = self.outbound(request);
        if !outbound.is_allowed() {
            return outbound;
        }
        if request.destination.is_none() {
            return outbound;
        }
        let mut inbound = self.inbound(request);
        if inbound.is_allowed() && inbound.dry_run.is_none() {
            inbound.dry_run = outbound.dry_run;
        }
        inbound
    }

    /// The mTLS mode enforced for `workload` on `port` at `now`, and what set
    /// it (`None`: Palisade's default, [`DEFAULT_MTLS_MODE`]).
    pub fn mtls_mode(
        &self,
        workload: &Workload<'_>,
        port: u16,
        now: SystemTime,
    ) -> (MtlsMode, Option<DecidedBy>) {
        self.peer_authentication(workload, port, now, false)
    }

    fn facts<'r>(&self, request: &'r Request<'r>) -> Facts<'r> {
        let principal = match request.peer {
            Peer::Mtls { principal } => {
                Some(principal.strip_prefix("spiffe://").unwrap_or(principal))
            }
            Peer::Plaintext => None,
        };
        let http = request.http.as_ref();
        Facts {
            principal,
            source_namespace: principal.and_then(principal_namespace),
            source_ip: request.source_ip,
            remote_ip: http.and_then(|h| h.remote_ip).or(request.source_ip),
            destination_ip: request.destination_ip,
            port: request.destination_port,
            http,
        }
    }

    fn inbound_pass(
        &self,
        destination: &Workload<'_>,
        request: &Request<'_>,
        facts: &Facts<'_>,
        include_dry_run: bool,
        peer_auth: bool,
    ) -> Decision {
        let now = request.now;
        // 1. PeerAuthentication: may a plaintext caller reach this port?
        if peer_auth && facts.principal.is_none() {
            let (mode, by) =
                self.peer_authentication(destination, facts.port, now, include_dry_run);
            if mode == MtlsMode::Strict {
                return Decision::new(
                    Verdict::Deny,
                    Stage::PeerAuthentication,
                    by.unwrap_or(DecidedBy::DefaultDeny),
                );
            }
        }
        // 2. NetworkPolicy ingress of the destination. The caller's namespace
        // comes from discovery, or else from its verified identity.
        let source = request.source.as_ref();
        let peer = NpPeerInfo {
            namespace: source.map(|s| s.namespace).or(facts.source_namespace),
            labels: source.map(|s| s.labels),
            ip: request.source_ip,
        };
        if let Some(denied_by) = self.network_policy(
            destination,
            Direction::Ingress,
            &peer,
            facts.port,
            now,
            include_dry_run,
        ) {
            return Decision::new(Verdict::Deny, Stage::NetworkPolicy, denied_by);
        }
        // 3. AuthorizationPolicy.
        self.authorize(destination, facts, now, include_dry_run)
    }
}
