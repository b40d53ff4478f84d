//! AuthorizationPolicy, as Istio evaluates it: DENY policies first, then
//! ALLOW (none for the workload: allow; otherwise one must match); AUDIT
//! rules are reported, never enforced.

use std::net::IpAddr;
use std::time::SystemTime;

use super::{DecidedBy, Decision, Evaluator, Facts, Http, Stage, Verdict, Workload};
use crate::compile::authorization::{
    Authz, AuthzRule, ConditionKey, ConditionMatch, OperationMatch, SourceMatch, ValueSet,
};
use crate::compile::cidr::CidrSet;
use crate::compile::matcher::StrSet;
use crate::compile::namespace_slice;
use crate::resource::{Action, ROOT_NAMESPACE};

impl Evaluator {
    /// Policies that may apply to a workload: the root namespace's, then its own.
    pub(super) fn authz_in_scope<'s>(
        &'s self,
        namespace: &str,
    ) -> impl Iterator<Item = &'s Authz> + use<'s> {
        let root = namespace_slice(&self.tables.authz, ROOT_NAMESPACE, |a| &a.common);
        let own = if namespace == ROOT_NAMESPACE {
            &[][..]
        } else {
            namespace_slice(&self.tables.authz, namespace, |a| &a.common)
        };
        root.iter().chain(own.iter())
    }

    pub(super) fn authorize(
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

    pub(super) fn audit(
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
