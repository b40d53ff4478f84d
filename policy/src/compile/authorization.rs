//! AuthorizationPolicy → matchers.
//!
//! Validation follows Istio's where Istio refuses a policy, and goes further
//! where Istio would accept something that silently changes meaning (an empty
//! list, a `spiffe://` principal, a wildcard in the middle): for a security
//! policy a clear load error beats a rule that quietly matches everyone.

use super::cidr::{Cidr, CidrSet};
use super::matcher::{Case, StrSet, classify};
use super::selector::Selector;
use super::{Common, Site, parse_port};
use crate::resource::{
    Action, AuthorizationPolicy, Condition, Operation, Scalar, Source, TRUST_DOMAIN_ALIAS,
};

/// Above this many rules, a policy gets an index from exact principal and
/// exact source namespace to rules, so a policy listing thousands of callers
/// costs a lookup instead of a scan. Below it, scanning a few rules is
/// cheaper than hashing.
const RULE_INDEX_MIN_RULES: usize = 16;

#[derive(Debug)]
pub(crate) struct Authz {
    pub(crate) common: Common,
    /// `None`: every workload in scope (the namespace, or the mesh for the root namespace).
    pub(crate) selector: Option<Selector>,
    pub(crate) action: Action,
    pub(crate) rules: Vec<AuthzRule>,
    pub(crate) index: Option<RuleIndex>,
}

#[derive(Debug, Default)]
pub(crate) struct AuthzRule {
    /// Empty: any source (Istio: `from` not set).
    pub(crate) from: Vec<SourceMatch>,
    /// Empty: any operation.
    pub(crate) to: Vec<OperationMatch>,
    pub(crate) when: Vec<ConditionMatch>,
    /// The rule uses a field that only HTTP requests have.
    pub(crate) http_only: bool,
}

#[derive(Debug, Default)]
pub(crate) struct SourceMatch {
    pub(crate) principals: Option<StrSet>,
    pub(crate) not_principals: Option<StrSet>,
    pub(crate) request_principals: Option<StrSet>,
    pub(crate) not_request_principals: Option<StrSet>,
    pub(crate) namespaces: Option<StrSet>,
    pub(crate) not_namespaces: Option<StrSet>,
    pub(crate) ip_blocks: Option<CidrSet>,
    pub(crate) not_ip_blocks: Option<CidrSet>,
    pub(crate) remote_ip_blocks: Option<CidrSet>,
    pub(crate) not_remote_ip_blocks: Option<CidrSet>,
}

#[derive(Debug, Default)]
pub(crate) struct OperationMatch {
    pub(crate) hosts: Option<StrSet>,
    pub(crate) not_hosts: Option<StrSet>,
    pub(crate) ports: Option<Vec<u16>>,
    pub(crate) not_ports: Option<Vec<u16>>,
    pub(crate) methods: Option<StrSet>,
    pub(crate) not_methods: Option<StrSet>,
    pub(crate) paths: Option<StrSet>,
    pub(crate) not_paths: Option<StrSet>,
}

#[derive(Debug)]
pub(crate) enum ConditionKey {
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    RequestHeader(Box<str>),
    RequestPrincipal,
}

impl ConditionKey {
    pub(crate) fn http_only(&self) -> bool {
        matches!(
            self,
            ConditionKey::RequestHeader(_) | ConditionKey::RequestPrincipal
        )
    }
}

#[derive(Debug)]
pub(crate) enum ValueSet {
    Strings(StrSet),
    Blocks(CidrSet),
    Ports(Vec<u16>),
}

#[derive(Debug)]
pub(crate) struct ConditionMatch {
    pub(crate) key: ConditionKey,
    pub(crate) values: Option<ValueSet>,
    pub(crate) not_values: Option<ValueSet>,
}

/// Exact principal (or exact source namespace) → the rules that can only
/// match a caller with that principal (or from that namespace), plus the
/// rules that must always be checked. Every list is ascending, so merging
/// them visits candidate rules in order and "rule n" is the first match.
#[derive(Debug, Default)]
pub(crate) struct RuleIndex {
    pub(crate) by_principal: std::collections::HashMap<Box<str>, Vec<u32>>,
    pub(crate) by_namespace: std::collections::HashMap<Box<str>, Vec<u32>>,
    pub(crate) always: Vec<u32>,
}

pub(crate) fn compile(
    policy: &AuthorizationPolicy,
    common: Common,
    site: &Site<'_>,
    trust_domain: &str,
    errors: &mut Vec<crate::Error>,
) -> Option<Authz> {
    let start = errors.len();
    let spec = &policy.spec;
    let action = spec.action.unwrap_or(Action::Allow);
    if action == Action::Custom {
        errors.push(site.field(
            "spec.action",
            "CUSTOM (external authorization) is not supported by Palisade; use ALLOW, DENY or \
             AUDIT",
        ));
    }
    if spec.provider.is_some() && action != Action::Custom {
        errors.push(site.field("spec.provider", "is only meaningful with action CUSTOM"));
    }
    for field in ["targetRef", "targetRefs"] {
        let set = match field {
            "targetRef" => spec.target_ref.is_some(),
            _ => spec.target_refs.is_some(),
        };
        if set {
            errors.push(site.field(
                format!("spec.{field}"),
                "is not supported; select workloads with spec.selector.matchLabels",
            ));
        }
    }
    let selector = Selector::of_workloads(spec.selector.as_ref());

    let mut rules = Vec::new();
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        let path = format!("spec.rules[{r}]");
        let mut out = AuthzRule::default();
        if let Some(from) = &rule.from {
            if from.is_empty() {
                errors.push(site.field(
                    format!("{path}.from"),
                    "must not be empty; omit `from` to match any source",
                ));
            }
            for (f, entry) in from.iter().enumerate() {
                let path = format!("{path}.from[{f}].source");
                match &entry.source {
                    None => errors.push(site.field(path, "is required in each `from` entry")),
                    Some(source) => {
                        let (m, http) = compile_source(source, &path, site, trust_domain, errors);
                        out.http_only |= http;
                        out.from.push(m);
                    }
                }
            }
        }
        if let Some(to) = &rule.to {
            if to.is_empty() {
                errors.push(site.field(
                    format!("{path}.to"),
                    "must not be empty; omit `to` to match any operation",
                ));
            }
            for (t, entry) in to.iter().enumerate() {
                let path = format!("{path}.to[{t}].operation");
                match &entry.operation {
                    None => errors.push(site.field(path, "is required in each `to` entry")),
                    Some(operation) => {
                        let (m, http) = compile_operation(operation, &path, site, errors);
                        out.http_only |= http;
                        out.to.push(m);
                    }
                }
            }
        }
        if let Some(when) = &rule.when {
            if when.is_empty() {
                errors.push(site.field(
                    format!("{path}.when"),
                    "must not be empty; omit `when` for no conditions",
                ));
            }
            for (w, condition) in when.iter().enumerate() {
                let path = format!("{path}.when[{w}]");
                if let Some(m) = compile_condition(condition, &path, site, trust_domain, errors) {
                    out.http_only |= m.key.http_only();
                    out.when.push(m);
                }
            }
        }
        rules.push(out);
    }
    if errors.len() > start {
        return None;
    }
    let index = (rules.len() >= RULE_INDEX_MIN_RULES).then(|| build_index(&rules));
    Some(Authz {
        common,
        selector,
        action,
        rules,
        index,
    })
}

/// A rule can be indexed when every `from` entry requires one of a list of
/// exact principals, or one of a list of exact source namespaces: then no
/// other caller can match it. Such a rule is listed under each of those keys.
fn build_index(rules: &[AuthzRule]) -> RuleIndex {
    enum Key<'a> {
        Principals(&'a [Box<str>]),
        Namespaces(&'a [Box<str>]),
    }
    fn exact(set: &Option<StrSet>) -> Option<&[Box<str>]> {
        set.as_ref().and_then(StrSet::exact_only)
    }
    let mut index = RuleIndex::default();
    for (i, rule) in rules.iter().enumerate() {
        let i = i as u32;
        let keys: Option<Vec<Key<'_>>> = if rule.from.is_empty() {
            None
        } else {
            rule.from
                .iter()
                .map(|s| {
                    exact(&s.principals)
                        .map(Key::Principals)
                        .or_else(|| exact(&s.namespaces).map(Key::Namespaces))
                })
                .collect()
        };
        let Some(keys) = keys else {
            index.always.push(i);
            continue;
        };
        for key in keys {
            let (map, values) = match key {
                Key::Principals(v) => (&mut index.by_principal, v),
                Key::Namespaces(v) => (&mut index.by_namespace, v),
            };
            for value in values {
                let rules = map.entry(value.clone()).or_default();
                if rules.last() != Some(&i) {
                    rules.push(i);
                }
            }
        }
    }
    index
}

/// Principals are written as `<trust domain>/ns/<ns>/sa/<sa>`; `cluster.local`
/// stands for the mesh's own trust domain.
pub(crate) fn principal_set(
    values: &[String],
    path: &str,
    site: &Site<'_>,
    trust_domain: &str,
    errors: &mut Vec<crate::Error>,
) -> Option<StrSet> {
    let mut rewritten = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        if value.starts_with("spiffe://") {
            errors.push(site.field(
                format!("{path}[{i}]"),
                format!(
                    "{value:?}: write principals without the spiffe:// prefix, e.g. \
                     \"cluster.local/ns/default/sa/api\""
                ),
            ));
            continue;
        }
        let alias = value
            .strip_prefix(TRUST_DOMAIN_ALIAS)
            .filter(|rest| rest.starts_with('/'));
        rewritten.push(match alias {
            Some(rest) => format!("{trust_domain}{rest}"),
            None => value.clone(),
        });
    }
    string_set(&rewritten, path, Case::Sensitive, site, errors)
}

pub(crate) fn string_set(
    values: &[String],
    path: &str,
    case: Case,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<StrSet> {
    if values.is_empty() {
        errors.push(site.field(
            path,
            "must not be empty; an empty list would match nothing or everything",
        ));
        return None;
    }
    let mut set = StrSet::new(case);
    let start = errors.len();
    for (i, value) in values.iter().enumerate() {
        match classify(value) {
            Ok(pattern) => set.push(pattern),
            Err(message) => errors.push(site.field(format!("{path}[{i}]"), message)),
        }
    }
    (errors.len() == start).then(|| set.finish())
}

fn cidr_set(
    values: &[String],
    path: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<CidrSet> {
    if values.is_empty() {
        errors.push(site.field(path, "must not be empty"));
        return None;
    }
    let start = errors.len();
    let mut blocks = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        match Cidr::parse(value) {
            Ok(c) => blocks.push(c),
            Err(message) => errors.push(site.field(format!("{path}[{i}]"), message)),
        }
    }
    (errors.len() == start).then_some(CidrSet(blocks))
}

fn port_list(
    values: &[Scalar],
    path: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Vec<u16>> {
    if values.is_empty() {
        errors.push(site.field(path, "must not be empty"));
        return None;
    }
    let start = errors.len();
    let mut ports = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        match parse_port(value.as_str()) {
            Some(p) => ports.push(p),
            None => errors.push(site.field(
                format!("{path}[{i}]"),
                format!("{:?} is not a port", value.as_str()),
            )),
        }
    }
    (errors.len() == start).then_some(ports)
}

fn compile_source(
    source: &Source,
    path: &str,
    site: &Site<'_>,
    td: &str,
    errors: &mut Vec<crate::Error>,
) -> (SourceMatch, bool) {
    if source == &Source::default() {
        errors.push(site.field(path, "must not be empty; omit `from` to match any source"));
    }
    let strings = |v: &Option<Vec<String>>, field: &str, errors: &mut Vec<crate::Error>| {
        v.as_ref()
            .and_then(|v| string_set(v, &format!("{path}.{field}"), Case::Sensitive, site, errors))
    };
    let principals = |v: &Option<Vec<String>>, field: &str, errors: &mut Vec<crate::Error>| {
        v.as_ref()
            .and_then(|v| principal_set(v, &format!("{path}.{field}"), site, td, errors))
    };
    let blocks = |v: &Option<Vec<String>>, field: &str, errors: &mut Vec<crate::Error>| {
        v.as_ref()
            .and_then(|v| cidr_set(v, &format!("{path}.{field}"), site, errors))
    };
    let m = SourceMatch {
        principals: principals(&source.principals, "principals", errors),
        not_principals: principals(&source.not_principals, "notPrincipals", errors),
        request_principals: strings(&source.request_principals, "requestPrincipals", errors),
        not_request_principals: strings(
            &source.not_request_principals,
            "notRequestPrincipals",
            errors,
        ),
        namespaces: strings(&source.namespaces, "namespaces", errors),
        not_namespaces: strings(&source.not_namespaces, "notNamespaces", errors),
        ip_blocks: blocks(&source.ip_blocks, "ipBlocks", errors),
        not_ip_blocks: blocks(&source.not_ip_blocks, "notIpBlocks", errors),
        remote_ip_blocks: blocks(&source.remote_ip_blocks, "remoteIpBlocks", errors),
        not_remote_ip_blocks: blocks(&source.not_remote_ip_blocks, "notRemoteIpBlocks", errors),
    };
    let http = source.request_principals.is_some() || source.not_request_principals.is_some();
    (m, http)
}

fn compile_operation(
    operation: &Operation,
    path: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> (OperationMatch, bool) {
    if operation == &Operation::default() {
        errors.push(site.field(path, "must not be empty; omit `to` to match any operation"));
    }
    let strings =
        |v: &Option<Vec<String>>, field: &str, case: Case, errors: &mut Vec<crate::Error>| {
            v.as_ref()
                .and_then(|v| string_set(v, &format!("{path}.{field}"), case, site, errors))
        };
    for (field, values) in [
        ("paths", &operation.paths),
        ("notPaths", &operation.not_paths),
    ] {
        for (i, value) in values.iter().flatten().enumerate() {
            if value.contains('{') {
                errors.push(site.field(
                    format!("{path}.{field}[{i}]"),
                    format!("{value:?}: path templates ({{*}}, {{**}}) are not supported"),
                ));
            } else if !(value.starts_with('/') || value.starts_with('*')) {
                errors.push(site.field(
                    format!("{path}.{field}[{i}]"),
                    format!("{value:?}: a path starts with `/` (or `*` for a suffix match)"),
                ));
            }
        }
    }
    let ports = |v: &Option<Vec<Scalar>>, field: &str, errors: &mut Vec<crate::Error>| {
        v.as_ref()
            .and_then(|v| port_list(v, &format!("{path}.{field}"), site, errors))
    };
    let m = OperationMatch {
        hosts: strings(&operation.hosts, "hosts", Case::Insensitive, errors),
        not_hosts: strings(&operation.not_hosts, "notHosts", Case::Insensitive, errors),
        ports: ports(&operation.ports, "ports", errors),
        not_ports: ports(&operation.not_ports, "notPorts", errors),
        methods: strings(&operation.methods, "methods", Case::Sensitive, errors),
        not_methods: strings(
            &operation.not_methods,
            "notMethods",
            Case::Sensitive,
            errors,
        ),
        paths: strings(&operation.paths, "paths", Case::Sensitive, errors),
        not_paths: strings(&operation.not_paths, "notPaths", Case::Sensitive, errors),
    };
    let http = [
        &operation.hosts,
        &operation.not_hosts,
        &operation.methods,
        &operation.not_methods,
        &operation.paths,
        &operation.not_paths,
    ]
    .iter()
    .any(|f| f.is_some());
    (m, http)
}

fn compile_condition(
    condition: &Condition,
    path: &str,
    site: &Site<'_>,
    td: &str,
    errors: &mut Vec<crate::Error>,
) -> Option<ConditionMatch> {
    let key = match condition.key.as_str() {
        "source.ip" => ConditionKey::SourceIp,
        "remote.ip" => ConditionKey::RemoteIp,
        "source.namespace" => ConditionKey::SourceNamespace,
        "source.principal" => ConditionKey::SourcePrincipal,
        "destination.ip" => ConditionKey::DestinationIp,
        "destination.port" => ConditionKey::DestinationPort,
        "request.auth.principal" => ConditionKey::RequestPrincipal,
        other => match other
            .strip_prefix("request.headers[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            // RFC 9110 token characters: anything else can never be a header name.
            Some(name)
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) =>
            {
                ConditionKey::RequestHeader(name.to_ascii_lowercase().into_boxed_str())
            }
            _ => {
                errors.push(site.field(
                    format!("{path}.key"),
                    format!(
                        "{other:?} is not a supported condition key (supported: source.ip, \
                         remote.ip, source.namespace, source.principal, destination.ip, \
                         destination.port, request.headers[NAME], request.auth.principal)"
                    ),
                ));
                return None;
            }
        },
    };
    if condition.values.is_none() && condition.not_values.is_none() {
        errors.push(site.field(path, "needs `values` or `notValues`"));
        return None;
    }
    let start = errors.len();
    let compile_values =
        |values: &Option<Vec<Scalar>>, field: &str, errors: &mut Vec<crate::Error>| {
            let values = values.as_ref()?;
            let field_path = format!("{path}.{field}");
            let strings: Vec<String> = values.iter().map(|v| v.0.clone()).collect();
            match key {
                ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                    cidr_set(&strings, &field_path, site, errors).map(ValueSet::Blocks)
                }
                ConditionKey::DestinationPort => {
                    port_list(values, &field_path, site, errors).map(ValueSet::Ports)
                }
                ConditionKey::SourcePrincipal => {
                    principal_set(&strings, &field_path, site, td, errors).map(ValueSet::Strings)
                }
                _ => string_set(&strings, &field_path, Case::Sensitive, site, errors)
                    .map(ValueSet::Strings),
            }
        };
    let values = compile_values(&condition.values, "values", errors);
    let not_values = compile_values(&condition.not_values, "notValues", errors);
    (errors.len() == start).then_some(ConditionMatch {
        key,
        values,
        not_values,
    })
}
