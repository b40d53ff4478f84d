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
    let selector = spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .filter(|labels| !labels.is_empty())
        .map(Selector::from_match_labels);
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
