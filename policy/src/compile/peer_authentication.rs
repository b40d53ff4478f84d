//! PeerAuthentication → a mode per workload and port.

use super::selector::Selector;
use super::{Common, Site, parse_port};
use crate::resource::{MtlsMode, PeerAuthentication};

#[derive(Debug)]
pub(crate) struct PeerAuth {
    pub(crate) common: Common,
    pub(crate) selector: Option<Selector>,
    /// UNSET when the policy says nothing at workload level.
    pub(crate) mode: MtlsMode,
    /// Sorted by port.
    pub(crate) ports: Vec<(u16, MtlsMode)>,
}

impl PeerAuth {
    pub(crate) fn port_mode(&self, port: u16) -> Option<MtlsMode> {
        self.ports
            .binary_search_by_key(&port, |(p, _)| *p)
            .ok()
            .map(|i| self.ports[i].1)
    }
}

pub(crate) fn compile(
    policy: &PeerAuthentication,
    common: Common,
    site: &Site<'_>,
    errors: &mut Vec<crate::Error>,
) -> Option<PeerAuth> {
    let start = errors.len();
    let spec = &policy.spec;
    let selector = Selector::of_workloads(spec.selector.as_ref());
    let mut ports = Vec::new();
    if let Some(levels) = &spec.port_level_mtls {
        // Istio applies port-level settings only to a selected workload: a
        // port number means nothing across a whole namespace.
        if selector.is_none() {
            errors.push(site.field(
                "spec.portLevelMtls",
                "needs spec.selector: port-level mTLS applies to selected workloads only",
            ));
        }
        for (key, mtls) in levels {
            match parse_port(key) {
                Some(port) => ports.push((port, mtls.mode.unwrap_or(MtlsMode::Unset))),
                None => errors.push(site.field(
                    format!("spec.portLevelMtls[{key}]"),
                    format!("{key:?} is not a port"),
                )),
            }
        }
    }
    ports.sort_unstable_by_key(|(p, _)| *p);
    if errors.len() > start {
        return None;
    }
    Some(PeerAuth {
        common,
        selector,
        mode: spec
            .mtls
            .as_ref()
            .and_then(|m| m.mode)
            .unwrap_or(MtlsMode::Unset),
        ports,
    })
}
