//! What a rule or selector reaches, read from the objects as written:
//! the questions the lint asks of each AuthorizationPolicy, NetworkPolicy and
//! PeerAuthentication.

use mesh_policy::resource::{
    IntOrString, IpBlock, LabelSelector, MtlsMode, NetworkPolicy, NetworkPolicyPeer,
    NetworkPolicyPort, PolicyType, Rule, Source, WorkloadSelector,
};

/// Istio: no selector, or one without labels, selects every workload.
pub(super) fn selects_all(selector: Option<&WorkloadSelector>) -> bool {
    selector
        .and_then(|s| s.match_labels.as_ref())
        .is_none_or(|labels| labels.is_empty())
}

pub(super) fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|l| l.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

pub(super) fn is_none_or_empty<T>(list: &Option<Vec<T>>) -> bool {
    list.as_ref().is_none_or(|l| l.is_empty())
}

/// Kubernetes' policyTypes defaults: Ingress always, Egress when the policy
/// has egress rules. Returns (isolates ingress, isolates egress).
pub(super) fn isolates(policy: &NetworkPolicy) -> (bool, bool) {
    let spec = &policy.spec;
    match &spec.policy_types {
        Some(types) => (
            types.contains(&PolicyType::Ingress),
            types.contains(&PolicyType::Egress),
        ),
        None => (true, !is_none_or_empty(&spec.egress)),
    }
}

/// Why an ALLOW rule matches every request, or `None` when it does not.
/// A rule limited by `to` (ports, paths) or `when` is not reported: opening
/// one port to everyone is a deliberate, common choice.
pub(super) fn allows_everything(rule: &Rule) -> Option<&'static str> {
    if rule.to.is_some() || rule.when.is_some() {
        return None;
    }
    match &rule.from {
        None => Some("has no from, to or when: it allows every request"),
        Some(from)
            if from
                .iter()
                .all(|f| f.source.as_ref().is_none_or(any_source)) =>
        {
            Some("allows any caller (its sources only hold wildcards) with any request")
        }
        Some(_) => None,
    }
}

/// A source that every mTLS caller satisfies: only positive fields, each
/// holding `*` or an address block covering everything.
pub(super) fn any_source(source: &Source) -> bool {
    let wildcard = |list: &Option<Vec<String>>| {
        list.as_ref()
            .is_none_or(|values| values.iter().any(|v| v == "*"))
    };
    let everywhere = |list: &Option<Vec<String>>| {
        list.as_ref()
            .is_none_or(|blocks| blocks.iter().any(|b| is_everywhere(b)))
    };
    let narrowing = [
        &source.not_principals,
        &source.not_namespaces,
        &source.not_ip_blocks,
        &source.not_remote_ip_blocks,
        &source.request_principals,
        &source.not_request_principals,
    ];
    narrowing.iter().all(|l| l.is_none())
        && wildcard(&source.principals)
        && wildcard(&source.namespaces)
        && everywhere(&source.ip_blocks)
        && everywhere(&source.remote_ip_blocks)
}

/// `0.0.0.0/0` or `::/0`, however it is spelled.
pub(super) fn is_everywhere(block: &str) -> bool {
    let Some((address, bits)) = block.trim().split_once('/') else {
        return false;
    };
    bits.trim() == "0" && address.trim().parse::<std::net::IpAddr>().is_ok()
}

/// How an egress rule reaches any destination, or `None`.
pub(super) fn any_destination(to: Option<&[NetworkPolicyPeer]>) -> Option<String> {
    match to {
        None | Some([]) => Some("every destination".to_owned()),
        Some(peers) => peers.iter().find_map(|p| match &p.ip_block {
            Some(IpBlock { cidr, except })
                if is_everywhere(cidr) && except.as_ref().is_none_or(|e| e.is_empty()) =>
            {
                Some(format!("any address ({cidr} without except)"))
            }
            _ => None,
        }),
    }
}

pub(super) fn port_list(ports: &[NetworkPolicyPort]) -> String {
    ports
        .iter()
        .map(|p| {
            let port = match &p.port {
                None => "all".to_owned(),
                Some(IntOrString::Int(n)) => n.to_string(),
                Some(IntOrString::String(s)) => s.clone(),
            };
            let range = p.end_port.map(|end| format!("-{end}")).unwrap_or_default();
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            format!("{port}{range}/{protocol}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn admits_plaintext(mode: MtlsMode) -> bool {
    matches!(mode, MtlsMode::Permissive | MtlsMode::Disable)
}
