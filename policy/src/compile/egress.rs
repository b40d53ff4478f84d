//! EgressPolicy → allow rules ready to match a connection leaving the mesh
//! at the source's outbound.
//!
//! Checked here, with the field in every error: hostnames valid (lowercase,
//! an optional leading `*.`), CIDRs valid, ports not 0, every rule naming a
//! destination, and no rule naming hosts for TCP only (a name is seen only
//! in TLS or HTTP).

use std::net::IpAddr;

use super::cidr::Cidr;
use super::edge::Host;
use super::selector::Selector;
use super::{Common, Site};
use crate::resource::egress::{EgressDefault, EgressMode, EgressPolicy, EgressProtocol};

#[derive(Debug)]
pub(crate) struct Egress {
    pub(crate) common: Common,
    pub(crate) selector: Option<Selector>,
    pub(crate) default: EgressDefault,
    pub(crate) rules: Vec<AllowRule>,
}

#[derive(Debug)]
pub(crate) struct AllowRule {
    pub(crate) hosts: Vec<Host>,
    pub(crate) cidrs: Vec<Cidr>,
    pub(crate) ports: Vec<u16>,
    pub(crate) protocols: Vec<EgressProtocol>,
}

impl AllowRule {
    /// Whether the rule takes a connection to `ip`:`port`, seen as
    /// `protocol`, for the name `host` (SNI or Host, lowercase):
    /// `Some(false)` by its address, `Some(true)` by its name only (the
    /// name must then resolve to `ip`).
    pub(crate) fn takes(
        &self,
        host: Option<&str>,
        ip: IpAddr,
        port: u16,
        protocol: EgressProtocol,
    ) -> Option<bool> {
        if !(self.ports.is_empty() || self.ports.contains(&port))
            || !(self.protocols.is_empty() || self.protocols.contains(&protocol))
        {
            return None;
        }
        if self.cidrs.iter().any(|c| c.contains(ip)) {
            return Some(false);
        }
        host.is_some_and(|h| self.hosts.iter().any(|p| p.matches(h)))
            .then_some(true)
    }
}

pub(crate) fn compile(
    policy: &EgressPolicy,
    mut common: Common,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Egress> {
    let start = errors.len();
    let spec = &policy.spec;
    common.dry_run |= spec.mode == EgressMode::DryRun;
    let selector = Selector::of_workloads(spec.selector.as_ref());
    let mut rules = Vec::new();
    for (i, r) in spec.allow.iter().enumerate() {
        let path = format!("spec.allow[{i}]");
        let mut hosts = Vec::new();
        for (j, h) in r.hosts.iter().enumerate() {
            match Host::parse(h, false) {
                Ok(h) => hosts.push(h),
                Err(e) => errors.push(site.field(format!("{path}.hosts[{j}]"), e)),
            }
        }
        let mut cidrs = Vec::new();
        for (j, c) in r.cidrs.iter().enumerate() {
            match Cidr::parse(c) {
                Ok(c) => cidrs.push(c),
                Err(e) => errors.push(site.field(format!("{path}.cidrs[{j}]"), e)),
            }
        }
        for (j, port) in r.ports.iter().enumerate() {
            if *port == 0 {
                errors.push(site.field(format!("{path}.ports[{j}]"), "0 is not a port"));
            }
        }
        if r.hosts.is_empty() && r.cidrs.is_empty() {
            errors.push(site.field(&path, "names no destination; give hosts or cidrs"));
        }
        if !r.hosts.is_empty()
            && !r.protocols.is_empty()
            && r.protocols.iter().all(|p| *p == EgressProtocol::Tcp)
        {
            errors.push(site.field(
                format!("{path}.protocols"),
                "a host is seen only in TLS (SNI) or HTTP (Host); plain TCP carries no name, \
                 so allow it by cidrs",
            ));
        }
        rules.push(AllowRule {
            hosts,
            cidrs,
            ports: r.ports.clone(),
            protocols: r.protocols.clone(),
        });
    }
    if errors.len() > start {
        return None;
    }
    Some(Egress {
        common,
        selector,
        default: spec.default,
        rules,
    })
}

/// A ServiceEntry's allow rules, for the namespaces it is exported to.
#[derive(Debug)]
pub(crate) struct Exported {
    pub(crate) common: Common,
    pub(crate) namespace: String,
    /// Empty or `*`: every namespace; `.`: its own.
    pub(crate) export_to: Vec<String>,
    pub(crate) rules: Vec<AllowRule>,
}

impl Exported {
    pub(crate) fn exported_to(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || (e == "." && self.namespace == namespace) || e == namespace)
    }
}

/// Istio's port protocol as the egress decision sees the connection.
fn istio_protocol(p: Option<&str>) -> Option<EgressProtocol> {
    Some(match p?.to_ascii_uppercase().as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => EgressProtocol::Http,
        "HTTPS" | "TLS" => EgressProtocol::Tls,
        _ => EgressProtocol::Tcp,
    })
}

pub(crate) fn compile_service_entry(
    se: &crate::resource::ServiceEntry,
    common: Common,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Exported> {
    let start = errors.len();
    let spec = &se.spec;
    let mut hosts = Vec::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        match Host::parse(h, false) {
            Ok(h) => hosts.push(h),
            Err(e) => errors.push(site.field(format!("spec.hosts[{i}]"), e)),
        }
    }
    let mut cidrs = Vec::new();
    for (i, a) in spec.addresses.iter().enumerate() {
        match Cidr::parse(a) {
            Ok(c) => cidrs.push(c),
            Err(e) => errors.push(site.field(format!("spec.addresses[{i}]"), e)),
        }
    }
    if spec.ports.is_empty() {
        errors.push(site.field("spec.ports", "at least one port is required"));
    }
    let mut rules = Vec::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let Some(port) = u16::try_from(p.number).ok().filter(|n| *n != 0) else {
            errors.push(site.field(
                format!("spec.ports[{i}].number"),
                format!("{} is not a port", p.number),
            ));
            continue;
        };
        let protocol = istio_protocol(p.protocol.as_deref());
        let by_name = protocol != Some(EgressProtocol::Tcp);
        if !by_name && cidrs.is_empty() {
            errors.push(site.field(
                format!("spec.ports[{i}].protocol"),
                "plain TCP carries no name to match spec.hosts by: give spec.addresses",
            ));
            continue;
        }
        rules.push(AllowRule {
            hosts: if by_name { hosts.clone() } else { Vec::new() },
            cidrs: cidrs.clone(),
            ports: vec![port],
            protocols: protocol.into_iter().collect(),
        });
    }
    if errors.len() > start {
        return None;
    }
    Some(Exported {
        namespace: common.object.namespace.clone(),
        common,
        export_to: spec.export_to.clone(),
        rules,
    })
}

/// A Sidecar's `outboundTrafficPolicy` as a default for the workloads it
/// selects; `None` when it sets none (then it says nothing about egress).
pub(crate) fn compile_sidecar(
    s: &crate::resource::Sidecar,
    common: Common,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<Egress> {
    let mode = s.spec.outbound_traffic_policy.as_ref()?.mode.as_deref();
    let default = match mode {
        Some("REGISTRY_ONLY") => EgressDefault::Deny,
        None | Some("ALLOW_ANY") => EgressDefault::AllowAll,
        Some(other) => {
            errors.push(site.field(
                "spec.outboundTrafficPolicy.mode",
                format!("{other:?} is not REGISTRY_ONLY or ALLOW_ANY"),
            ));
            return None;
        }
    };
    let selector = s
        .spec
        .workload_selector
        .as_ref()
        .filter(|w| !w.labels.is_empty())
        .map(|w| Selector::from_match_labels(&w.labels));
    Some(Egress {
        common,
        selector,
        default,
        rules: Vec::new(),
    })
}
