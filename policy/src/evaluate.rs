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

mod decision;
mod request;

use std::net::IpAddr;
use std::time::SystemTime;

use crate::Error;
use crate::compile::authorization::{
    Authz, AuthzRule, ConditionKey, ConditionMatch, OperationMatch, SourceMatch, ValueSet,
};
use crate::compile::cidr::CidrSet;
use crate::compile::matcher::StrSet;
use crate::compile::network_policy::{NetPol, NpPeer, NpPort, NpRule};
use crate::compile::peer_authentication::PeerAuth;
use crate::compile::selector::NamespaceLabels;
use crate::compile::{Tables, compile_snapshot, namespace_slice};
use crate::load::SNAPSHOT_ORIGIN;
use crate::resource::{Action, Labels, MtlsMode, ROOT_NAMESPACE, Snapshot};

pub use decision::{DecidedBy, Decision, DryRunDeny, Stage, Verdict};
pub use request::{Headers, Http, Peer, Request, Workload};

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
            .any(|a| a.rules.iter().any(|r| r.http_only));
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
        let Some(destination) = request.destination.as_ref() else {
            return Decision::new(
                Verdict::Deny,
                Stage::AuthorizationPolicy,
                DecidedBy::DefaultDeny,
            );
        };
        let facts = self.facts(request);
        let mut decision = self.inbound_pass(destination, request, &facts, false);
        if decision.is_allowed() && self.any_dry_run {
            let would = self.inbound_pass(destination, request, &facts, true);
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
    ) -> Decision {
        let now = request.now;
        // 1. PeerAuthentication: may a plaintext caller reach this port?
        if facts.principal.is_none() {
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

    /// Policies that may apply to a workload: the root namespace's, then its own.
    fn authz_in_scope<'s>(&'s self, namespace: &str) -> impl Iterator<Item = &'s Authz> + use<'s> {
        let root = namespace_slice(&self.tables.authz, ROOT_NAMESPACE, |a| &a.common);
        let own = if namespace == ROOT_NAMESPACE {
            &[][..]
        } else {
            namespace_slice(&self.tables.authz, namespace, |a| &a.common)
        };
        root.iter().chain(own.iter())
    }

    fn authorize(
        &self,
        destination: &Workload<'_>,
        facts: &Facts<'_>,
        now: SystemTime,
        include_dry_run: bool,
    ) -> Decision {
        let applies = |a: &Authz| {
            a.common.active(now, include_dry_run)
                && a.selector
                    .as_ref()
                    .is_none_or(|s| s.matches(destination.labels))
        };
        // Istio: DENY policies are evaluated first; any match denies.
        for policy in self.authz_in_scope(destination.namespace) {
            if policy.action == Action::Deny
                && applies(policy)
                && let Some(rule) = first_match(policy, facts, true)
            {
                return Decision::new(
                    Verdict::Deny,
                    Stage::AuthorizationPolicy,
                    DecidedBy::Rule {
                        object: policy.common.object.clone(),
                        rule,
                    },
                );
            }
        }
        // Istio: no ALLOW policy for the workload ⇒ allow; otherwise a
        // request must match one of them.
        let mut any_allow = false;
        for policy in self.authz_in_scope(destination.namespace) {
            if policy.action == Action::Allow && applies(policy) {
                any_allow = true;
                if let Some(rule) = first_match(policy, facts, false) {
                    return Decision::new(
                        Verdict::Allow,
                        Stage::AuthorizationPolicy,
                        DecidedBy::Rule {
                            object: policy.common.object.clone(),
                            rule,
                        },
                    );
                }
            }
        }
        if any_allow {
            Decision::new(
                Verdict::Deny,
                Stage::AuthorizationPolicy,
                DecidedBy::DefaultDeny,
            )
        } else {
            Decision::new(
                Verdict::Allow,
                Stage::AuthorizationPolicy,
                DecidedBy::DefaultAllow,
            )
        }
    }

    fn audit(
        &self,
        destination: &Workload<'_>,
        facts: &Facts<'_>,
        now: SystemTime,
    ) -> Option<DecidedBy> {
        self.authz_in_scope(destination.namespace)
            .filter(|a| {
                a.action == Action::Audit
                    && a.common.active(now, false)
                    && a.selector
                        .as_ref()
                        .is_none_or(|s| s.matches(destination.labels))
            })
            .find_map(|a| {
                first_match(a, facts, true).map(|rule| DecidedBy::Rule {
                    object: a.common.object.clone(),
                    rule,
                })
            })
    }

    /// Istio's precedence: workload selector (port-level over
    /// workload-level), then namespace-wide, then mesh-wide (root namespace);
    /// UNSET inherits from the next level. Within one level the first by namespace then name wins
    /// (Istio picks the oldest; files have no creation time), with the
    /// workload's own namespace before the root namespace.
    fn peer_authentication(
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

    /// Kubernetes: a pod is isolated in a direction when any policy selecting
    /// it has that policy type; then the union of their rules must allow the
    /// traffic. Returns what denied (the first isolating policy), or `None`.
    fn network_policy(
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

    fn np_rule_matches(
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

    fn np_peer_matches(&self, policy: &NetPol, np_peer: &NpPeer, peer: &NpPeerInfo<'_>) -> bool {
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

/// The first rule of `policy` that matches, as its index.
///
/// `lenient_http` selects Istio's treatment of HTTP-only fields on plain TCP
/// (https://istio.io/latest/docs/tasks/security/authorization/authz-tcp/):
/// an ALLOW rule using them "becomes invalid" and never matches, while a DENY
/// rule ignores them and so matches more broadly ("due to its restrictive
/// nature it denies all the traffic"): failing closed in both cases.
fn first_match(policy: &Authz, facts: &Facts<'_>, lenient_http: bool) -> Option<usize> {
    let matches = |i: usize| rule_matches(&policy.rules[i], facts, lenient_http);
    match &policy.index {
        None => (0..policy.rules.len()).find(|&i| matches(i)),
        Some(index) => {
            fn lookup<'a>(
                map: &'a std::collections::HashMap<Box<str>, Vec<u32>>,
                key: Option<&str>,
            ) -> &'a [u32] {
                key.and_then(|k| map.get(k)).map_or(&[], Vec::as_slice)
            }
            let lists = [
                lookup(&index.by_principal, facts.principal),
                lookup(&index.by_namespace, facts.source_namespace),
                index.always.as_slice(),
            ];
            // Merge the ascending lists so the lowest matching rule wins; a
            // rule listed under both the principal and the namespace is
            // checked once.
            let mut at = [0usize; 3];
            let mut last = None;
            loop {
                let mut next: Option<(usize, u32)> = None;
                for (k, list) in lists.iter().enumerate() {
                    if let Some(&v) = list.get(at[k])
                        && next.is_none_or(|(_, best)| v < best)
                    {
                        next = Some((k, v));
                    }
                }
                let (k, i) = next?;
                at[k] += 1;
                if last == Some(i) {
                    continue;
                }
                last = Some(i);
                if matches(i as usize) {
                    return Some(i as usize);
                }
            }
        }
    }
}

/// Istio: within a rule `from`, `to` and `when` are ANDed; the entries of
/// `from` (and of `to`) are ORed; all `when` conditions must hold.
fn rule_matches(rule: &AuthzRule, facts: &Facts<'_>, lenient_http: bool) -> bool {
    if facts.http.is_none() && rule.http_only && !lenient_http {
        return false;
    }
    (rule.from.is_empty() || rule.from.iter().any(|s| source_matches(s, facts)))
        && (rule.to.is_empty() || rule.to.iter().any(|o| operation_matches(o, facts)))
        && rule.when.iter().all(|c| condition_matches(c, facts))
}

/// A positive field: set, and the value is present and in the list.
#[inline]
fn is_in(set: &Option<StrSet>, value: Option<&str>) -> bool {
    set.as_ref()
        .is_none_or(|s| value.is_some_and(|v| s.matches(v)))
}

/// A not-field: the value is not in the list (an absent value is not in it,
/// as in Istio: `notPrincipals` matches a plaintext caller).
#[inline]
fn not_in(set: &Option<StrSet>, value: Option<&str>) -> bool {
    set.as_ref()
        .is_none_or(|s| !value.is_some_and(|v| s.matches(v)))
}

#[inline]
fn ip_in(set: &Option<CidrSet>, ip: Option<IpAddr>) -> bool {
    set.as_ref()
        .is_none_or(|s| ip.is_some_and(|ip| s.contains(ip)))
}

#[inline]
fn ip_not_in(set: &Option<CidrSet>, ip: Option<IpAddr>) -> bool {
    set.as_ref()
        .is_none_or(|s| !ip.is_some_and(|ip| s.contains(ip)))
}

/// An HTTP-only field on plain TCP is skipped here; the ALLOW case never
/// gets this far (see [`first_match`]).
#[inline]
fn http_field(facts: &Facts<'_>, check: impl FnOnce(&Http<'_>) -> bool) -> bool {
    facts.http.is_none_or(check)
}

/// Istio: the fields of one source are ANDed; values inside a field are ORed.
fn source_matches(s: &SourceMatch, f: &Facts<'_>) -> bool {
    is_in(&s.principals, f.principal)
        && not_in(&s.not_principals, f.principal)
        && is_in(&s.namespaces, f.source_namespace)
        && not_in(&s.not_namespaces, f.source_namespace)
        && ip_in(&s.ip_blocks, f.source_ip)
        && ip_not_in(&s.not_ip_blocks, f.source_ip)
        && ip_in(&s.remote_ip_blocks, f.remote_ip)
        && ip_not_in(&s.not_remote_ip_blocks, f.remote_ip)
        && http_field(f, |h| {
            is_in(&s.request_principals, h.request_principal)
                && not_in(&s.not_request_principals, h.request_principal)
        })
}

fn operation_matches(o: &OperationMatch, f: &Facts<'_>) -> bool {
    o.ports.as_ref().is_none_or(|p| p.contains(&f.port))
        && o.not_ports.as_ref().is_none_or(|p| !p.contains(&f.port))
        && http_field(f, |h| {
            is_in(&o.hosts, h.host)
                && not_in(&o.not_hosts, h.host)
                && is_in(&o.methods, Some(h.method))
                && not_in(&o.not_methods, Some(h.method))
                && is_in(&o.paths, Some(h.path))
                && not_in(&o.not_paths, Some(h.path))
        })
}

fn value_matches(
    set: &ValueSet,
    key: &ConditionKey,
    f: &Facts<'_>,
    http: Option<&Http<'_>>,
) -> bool {
    match (key, set) {
        (ConditionKey::SourceIp, ValueSet::Blocks(b)) => {
            f.source_ip.is_some_and(|ip| b.contains(ip))
        }
        (ConditionKey::RemoteIp, ValueSet::Blocks(b)) => {
            f.remote_ip.is_some_and(|ip| b.contains(ip))
        }
        (ConditionKey::DestinationIp, ValueSet::Blocks(b)) => {
            f.destination_ip.is_some_and(|ip| b.contains(ip))
        }
        (ConditionKey::DestinationPort, ValueSet::Ports(p)) => p.contains(&f.port),
        (ConditionKey::SourceNamespace, ValueSet::Strings(s)) => {
            f.source_namespace.is_some_and(|v| s.matches(v))
        }
        (ConditionKey::SourcePrincipal, ValueSet::Strings(s)) => {
            f.principal.is_some_and(|v| s.matches(v))
        }
        (ConditionKey::RequestPrincipal, ValueSet::Strings(s)) => http
            .and_then(|h| h.request_principal)
            .is_some_and(|v| s.matches(v)),
        (ConditionKey::RequestHeader(name), ValueSet::Strings(s)) => {
            http.is_some_and(|h| h.headers.any(name, |v| s.matches(v)))
        }
        // Compilation pairs each key with its kind of value set.
        _ => false,
    }
}

fn condition_matches(c: &ConditionMatch, f: &Facts<'_>) -> bool {
    if c.key.http_only() && f.http.is_none() {
        // Only reachable for DENY/AUDIT on TCP: Istio ignores the condition.
        return true;
    }
    let http = f.http;
    c.values
        .as_ref()
        .is_none_or(|v| value_matches(v, &c.key, f, http))
        && c.not_values
            .as_ref()
            .is_none_or(|v| !value_matches(v, &c.key, f, http))
}
