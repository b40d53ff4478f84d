//! AnomalyRules (checked; the control plane evaluates them) and
//! Quarantines (compiled to DENY rules that name the Quarantine).

use std::time::Duration;

use super::authorization::{self, Authz};
use super::http_route::parse_duration;
use super::{Common, Site};
use crate::Error;
use crate::resource::anomaly::{AnomalyAction, AnomalyRule, Quarantine, QuarantineScope};
use crate::resource::{
    Action, AuthorizationPolicy, AuthorizationPolicySpec, Rule, RuleFrom, Source,
};

/// The flows keep 60 s of per-second counts: a window cannot be longer.
pub const MAX_WINDOW: Duration = Duration::from_secs(60);
/// The longest quarantine a rule may impose.
pub const MAX_QUARANTINE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The learning period of a `newSource` rule that names none.
pub const DEFAULT_LEARNING_PERIOD: Duration = Duration::from_secs(300);

/// What the control plane needs of a rule, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    DenySpike { count: u64, window: Duration },
    NewSource { learning_period: Duration },
}

/// A principal as policies write it: `td/ns/NS/sa/SA` (no `spiffe://`).
fn check_principal(p: &str) -> Result<(), String> {
    let ok = !p.starts_with("spiffe://")
        && p.split('/').count() == 5
        && p.split('/').nth(1) == Some("ns")
        && p.split('/').nth(3) == Some("sa")
        && p.split('/').all(|part| !part.is_empty() && part != "*");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{p:?} is not a principal (trust-domain/ns/NAMESPACE/sa/SERVICE_ACCOUNT)"
        ))
    }
}

/// Checks a rule; returns its trigger.
pub(crate) fn check_rule(
    rule: &AnomalyRule,
    site: &Site<'_>,
    errors: &mut Vec<Error>,
) -> Option<Trigger> {
    let start = errors.len();
    let spec = &rule.spec;
    let trigger = match (&spec.deny_spike, &spec.new_source) {
        (Some(d), None) => {
            if d.count == 0 || d.count > 1_000_000 {
                errors.push(site.field("spec.denySpike.count", "1 to 1000000"));
            }
            match parse_duration(&d.window) {
                Ok(w) if w >= Duration::from_secs(1) && w <= MAX_WINDOW => {
                    Some(Trigger::DenySpike {
                        count: d.count,
                        window: w,
                    })
                }
                Ok(_) => {
                    errors.push(site.field("spec.denySpike.window", "1s to 60s"));
                    None
                }
                Err(m) => {
                    errors.push(site.field("spec.denySpike.window", m));
                    None
                }
            }
        }
        (None, Some(n)) => match n.learning_period.as_deref().map(parse_duration) {
            None => Some(Trigger::NewSource {
                learning_period: DEFAULT_LEARNING_PERIOD,
            }),
            Some(Ok(p)) => Some(Trigger::NewSource { learning_period: p }),
            Some(Err(m)) => {
                errors.push(site.field("spec.newSource.learningPeriod", m));
                None
            }
        },
        _ => {
            errors.push(site.field("spec", "exactly one of denySpike or newSource"));
            None
        }
    };
    match (spec.action, &spec.quarantine) {
        (AnomalyAction::Quarantine, None) => errors.push(site.field(
            "spec.quarantine",
            "required with action: quarantine (scope, duration)",
        )),
        (AnomalyAction::Alert, Some(_)) => {
            errors.push(site.field("spec.quarantine", "only with action: quarantine"))
        }
        (_, Some(q)) => {
            match parse_duration(&q.duration) {
                Ok(d) if d >= Duration::from_secs(1) && d <= MAX_QUARANTINE => {}
                Ok(_) => errors.push(site.field("spec.quarantine.duration", "1s to 7 days")),
                Err(m) => errors.push(site.field("spec.quarantine.duration", m)),
            }
            for (i, p) in q.except.iter().enumerate() {
                if let Err(m) = check_principal(p) {
                    errors.push(site.field(format!("spec.quarantine.except[{i}]"), m));
                }
            }
            if q.scope == QuarantineScope::Source && !q.except.is_empty() {
                errors.push(site.field(
                    "spec.quarantine.except",
                    "only for scope: Segment (a source quarantine cuts one identity)",
                ));
            }
        }
        (AnomalyAction::Alert, None) => {}
    }
    if errors.len() > start { None } else { trigger }
}

/// The DENY a Quarantine imposes: the source everywhere (a Quarantine of
/// the root namespace applies mesh-wide), or everything into its
/// segment but the excepted principals.
pub(crate) fn compile_quarantine(
    q: &Quarantine,
    common: Common,
    site: &Site<'_>,
    trust_domain: &str,
    errors: &mut Vec<Error>,
) -> Option<Authz> {
    let start = errors.len();
    let spec = &q.spec;
    let (selector, source) = match spec.scope {
        QuarantineScope::Source => {
            if spec.selector.is_some() || !spec.except.is_empty() {
                errors.push(site.field(
                    "spec",
                    "a Source quarantine names only spec.source (no selector, no except)",
                ));
            }
            match &spec.source {
                Some(p) => {
                    if let Err(m) = check_principal(p) {
                        errors.push(site.field("spec.source", m));
                    }
                    (
                        None,
                        Source {
                            principals: Some(vec![p.clone()]),
                            ..Source::default()
                        },
                    )
                }
                None => {
                    errors.push(site.field("spec.source", "required for scope: Source"));
                    return None;
                }
            }
        }
        QuarantineScope::Segment => {
            if spec.source.is_some() {
                errors.push(site.field("spec.source", "only for scope: Source"));
            }
            for (i, p) in spec.except.iter().enumerate() {
                if let Err(m) = check_principal(p) {
                    errors.push(site.field(format!("spec.except[{i}]"), m));
                }
            }
            let source = if spec.except.is_empty() {
                Source::default()
            } else {
                Source {
                    not_principals: Some(spec.except.clone()),
                    ..Source::default()
                }
            };
            (spec.selector.clone(), source)
        }
    };
    if errors.len() > start {
        return None;
    }
    let rule = if source == Source::default() {
        Rule::default()
    } else {
        Rule {
            from: Some(vec![RuleFrom {
                source: Some(source),
            }]),
            ..Rule::default()
        }
    };
    let policy = AuthorizationPolicy {
        api_version: crate::resource::SECURITY_API_VERSIONS[0].to_owned(),
        metadata: q.metadata.clone(),
        spec: AuthorizationPolicySpec {
            selector,
            action: Some(Action::Deny),
            rules: Some(vec![rule]),
            ..AuthorizationPolicySpec::default()
        },
    };
    authorization::compile(&policy, common, site, trust_domain, errors)
}

/// The trigger of a rule that loaded (its checks passed).
pub fn trigger_of(rule: &AnomalyRule) -> Result<Trigger, String> {
    let site = Site {
        file: "<rule>",
        object: format!("AnomalyRule {}", rule.metadata.name),
    };
    let mut errors = Vec::new();
    check_rule(rule, &site, &mut errors).ok_or_else(|| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// A rule's quarantine duration, checked at load.
pub fn quarantine_duration(rule: &AnomalyRule) -> Option<Duration> {
    rule.spec
        .quarantine
        .as_ref()
        .and_then(|q| parse_duration(&q.duration).ok())
}
