//! NetworkPolicy → per-direction rule lists.

use super::cidr::Cidr;
use super::selector::Selector;
use super::{Common, Site};
use crate::resource::{
    IntOrString, LabelSelector, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, PolicyType,
};

/// Kubernetes' default protocol for a NetworkPolicy port.
const DEFAULT_PROTOCOL: &str = "TCP";

#[derive(Debug)]
pub(crate) struct NetPol {
    pub(crate) common: Common,
    pub(crate) pod_selector: Selector,
    /// `Some` when the policy isolates selected pods for ingress (even with no rules).
    pub(crate) ingress: Option<Vec<NpRule>>,
    pub(crate) egress: Option<Vec<NpRule>>,
}

#[derive(Debug)]
pub(crate) struct NpRule {
    /// `None`: any peer (Kubernetes: `from`/`to` empty or missing).
    pub(crate) peers: Option<Vec<NpPeer>>,
    /// `None`: any port.
    pub(crate) ports: Option<Vec<NpPort>>,
}

#[derive(Debug)]
pub(crate) enum NpPeer {
    /// `namespace: None` means the policy's own namespace.
    Pods {
        namespace: Option<Selector>,
        pods: Option<Selector>,
    },
    Block {
        cidr: Cidr,
        except: Vec<Cidr>,
    },
}

#[derive(Debug)]
pub(crate) struct NpPort {
    /// Palisade carries TCP only, so a UDP or SCTP entry never matches.
    pub(crate) tcp: bool,
    /// `None`: every port of the protocol.
    pub(crate) range: Option<(u16, u16)>,
}

pub(crate) fn compile(
    policy: &NetworkPolicy,
    common: Common,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<NetPol> {
    let start = errors.len();
    let spec = &policy.spec;
    let pod_selector = selector(&spec.pod_selector, "spec.podSelector", site, errors);

    // Kubernetes: without policyTypes, Ingress always applies and Egress
    // applies when the policy has egress rules.
    let has_egress_rules = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
    let (ingress_type, egress_type) = match &spec.policy_types {
        Some(types) => {
            if types.is_empty() {
                errors.push(site.field(
                    "spec.policyTypes",
                    "must not be empty; omit it to default to Ingress (and Egress with egress \
                     rules)",
                ));
            }
            (
                types.contains(&PolicyType::Ingress),
                types.contains(&PolicyType::Egress),
            )
        }
        None => (true, has_egress_rules),
    };

    let mut ingress = Vec::new();
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let path = format!("spec.ingress[{i}]");
        ingress.push(NpRule {
            peers: peers(rule.from.as_deref(), &format!("{path}.from"), site, errors),
            ports: ports(
                rule.ports.as_deref(),
                &format!("{path}.ports"),
                site,
                errors,
            ),
        });
    }
    let mut egress = Vec::new();
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let path = format!("spec.egress[{i}]");
        egress.push(NpRule {
            peers: peers(rule.to.as_deref(), &format!("{path}.to"), site, errors),
            ports: ports(
                rule.ports.as_deref(),
                &format!("{path}.ports"),
                site,
                errors,
            ),
        });
    }
    if errors.len() > start {
        return None;
    }
    Some(NetPol {
        common,
        pod_selector: pod_selector.unwrap_or_default(),
        ingress: ingress_type.then_some(ingress),
        egress: egress_type.then_some(egress),
    })
}

fn selector(
    selector: &LabelSelector,
    path: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Selector> {
    match Selector::compile(selector) {
        Ok(s) => Some(s),
        Err(problems) => {
            errors.extend(
                problems
                    .into_iter()
                    .map(|(field, message)| site.field(format!("{path}.{field}"), message)),
            );
            None
        }
    }
}

fn peers(
    peers: Option<&[NetworkPolicyPeer]>,
    path: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Vec<NpPeer>> {
    let peers = peers.filter(|p| !p.is_empty())?;
    let mut out = Vec::with_capacity(peers.len());
    for (i, peer) in peers.iter().enumerate() {
        let path = format!("{path}[{i}]");
        match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
            (Some(block), None, None) => {
                let cidr = match Cidr::parse(&block.cidr) {
                    Ok(c) => c,
                    Err(message) => {
                        errors.push(site.field(format!("{path}.ipBlock.cidr"), message));
                        continue;
                    }
                };
                let mut except = Vec::new();
                for (e, text) in block.except.iter().flatten().enumerate() {
                    let field = format!("{path}.ipBlock.except[{e}]");
                    match Cidr::parse(text) {
                        // Kubernetes validation: except entries lie inside cidr.
                        Ok(c) if cidr.covers(&c) => except.push(c),
                        Ok(_) => errors.push(site.field(
                            field,
                            format!("{text:?} is not inside cidr {:?}", block.cidr),
                        )),
                        Err(message) => errors.push(site.field(field, message)),
                    }
                }
                out.push(NpPeer::Block { cidr, except });
            }
            (Some(_), _, _) => errors.push(site.field(
                path,
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
            )),
            (None, None, None) => errors.push(site.field(
                path,
                "a peer needs podSelector, namespaceSelector or ipBlock",
            )),
            (None, pods, namespaces) => {
                let pods = pods
                    .as_ref()
                    .and_then(|s| selector(s, &format!("{path}.podSelector"), site, errors));
                let namespace = namespaces
                    .as_ref()
                    .and_then(|s| selector(s, &format!("{path}.namespaceSelector"), site, errors));
                out.push(NpPeer::Pods { namespace, pods });
            }
        }
    }
    Some(out)
}

fn ports(
    ports: Option<&[NetworkPolicyPort]>,
    path: &str,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Vec<NpPort>> {
    let ports = ports.filter(|p| !p.is_empty())?;
    let mut out = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let protocol = port.protocol.as_deref().unwrap_or(DEFAULT_PROTOCOL);
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            errors.push(site.field(
                format!("{path}.protocol"),
                format!("{protocol:?} is not TCP, UDP or SCTP"),
            ));
            continue;
        }
        let start = match &port.port {
            None => None,
            Some(IntOrString::Int(n)) => match u16::try_from(*n) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    errors.push(site.field(
                        format!("{path}.port"),
                        format!("{n} is not a port (1-65535)"),
                    ));
                    continue;
                }
            },
            // Resolving a name needs the pods' container ports, which the mesh
            // does not model; refusing is safer than guessing.
            Some(IntOrString::String(name)) => {
                errors.push(site.field(
                    format!("{path}.port"),
                    format!(
                        "named port {name:?} is not supported (Palisade does not model \
                         container ports); use the port number"
                    ),
                ));
                continue;
            }
        };
        let range = match (start, port.end_port) {
            (None, None) => None,
            (Some(p), None) => Some((p, p)),
            (None, Some(_)) => {
                errors.push(site.field(format!("{path}.endPort"), "needs `port`"));
                continue;
            }
            (Some(p), Some(end)) => match u16::try_from(end) {
                Ok(end) if end >= p => Some((p, end)),
                _ => {
                    errors.push(site.field(
                        format!("{path}.endPort"),
                        format!("{end} must be a port no lower than port {p}"),
                    ));
                    continue;
                }
            },
        };
        out.push(NpPort {
            tcp: protocol == "TCP",
            range,
        });
    }
    Some(out)
}
