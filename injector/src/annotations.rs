//! The annotations (and the one label) a user meshes a pod with, parsed and
//! checked: a typo is a refused pod with the annotation named, never a pod
//! that silently runs without the exception it asked for.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::Error;

/// `enabled` meshes the pod (as a pod label or annotation, or as a namespace
/// label); `disabled` keeps it out even in an enabled namespace.
pub const INJECT: &str = "palisade.dev/inject";
pub const SKIP_INBOUND_PORTS: &str = "palisade.dev/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "palisade.dev/skip-outbound-ports";
pub const SKIP_SUBNETS: &str = "palisade.dev/skip-subnets";
pub const PROXY_CPU: &str = "palisade.dev/proxy-cpu";
pub const PROXY_MEMORY: &str = "palisade.dev/proxy-memory";

/// Namespaces never meshed: the cluster's own, and the mesh's (the control
/// plane cannot depend on itself for its certificate).
pub const NEVER_INJECTED: [&str; 2] = ["kube-system", "mesh-system"];

/// What a pod asks for with [`INJECT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Enabled,
    Disabled,
    /// Not said: the namespace decides.
    Unset,
}

/// The pod's choice: an annotation wins over a label (annotations are what
/// users write in templates; the label exists for the webhook's selector).
pub fn choice(
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Choice, Error> {
    let value = annotations
        .and_then(|a| a.get(INJECT))
        .or_else(|| labels.and_then(|l| l.get(INJECT)));
    match value.map(String::as_str) {
        None => Ok(Choice::Unset),
        Some("enabled") => Ok(Choice::Enabled),
        Some("disabled") => Ok(Choice::Disabled),
        Some(other) => Err(Error::Annotation {
            annotation: INJECT,
            message: format!("{other:?} is not \"enabled\" or \"disabled\""),
        }),
    }
}

/// What the pod's annotations change in its proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
    pub skip_subnets: Vec<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

impl Overrides {
    pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> Result<Self, Error> {
        let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
        Ok(Self {
            skip_inbound_ports: ports(SKIP_INBOUND_PORTS, get(SKIP_INBOUND_PORTS))?,
            skip_outbound_ports: ports(SKIP_OUTBOUND_PORTS, get(SKIP_OUTBOUND_PORTS))?,
            skip_subnets: subnets(get(SKIP_SUBNETS))?,
            cpu: quantity(PROXY_CPU, get(PROXY_CPU))?,
            memory: quantity(PROXY_MEMORY, get(PROXY_MEMORY))?,
        })
    }
}

fn items(text: Option<&str>) -> impl Iterator<Item = &str> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn ports(annotation: &'static str, text: Option<&str>) -> Result<Vec<u16>, Error> {
    items(text)
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::Annotation {
                    annotation,
                    message: format!("{p:?} is not a port (1-65535); write ports as P,P,…"),
                })
        })
        .collect()
}

fn subnets(text: Option<&str>) -> Result<Vec<String>, Error> {
    items(text)
        .map(|cidr| {
            let bad = || Error::Annotation {
                annotation: SKIP_SUBNETS,
                message: format!(
                    "{cidr:?} is not a CIDR (e.g. 10.96.0.0/12 or fd00::/8); write CIDR,CIDR,…"
                ),
            };
            let (ip, len) = cidr.split_once('/').ok_or_else(bad)?;
            let ip: IpAddr = ip.parse().map_err(|_| bad())?;
            let len: u8 = len.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(bad());
            }
            Ok(cidr.to_owned())
        })
        .collect()
}

/// A Kubernetes resource quantity (`250m`, `1`, `64Mi`, `1e3`), checked so a
/// typo is refused here and not by the API server with a less clear message.
fn quantity(annotation: &'static str, text: Option<&str>) -> Result<Option<String>, Error> {
    let Some(text) = text.map(str::trim) else {
        return Ok(None);
    };
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| text.strip_suffix(s))
        .or_else(|| {
            text.split_once(['e', 'E'])
                .filter(|(_, exp)| !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit()))
                .map(|(n, _)| n)
        })
        .unwrap_or(text);
    let digits = number.strip_prefix('+').unwrap_or(number);
    let valid = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && digits.bytes().any(|b| b.is_ascii_digit());
    if !valid {
        return Err(Error::Annotation {
            annotation,
            message: format!("{text:?} is not a resource quantity (e.g. 100m, 1, 128Mi)"),
        });
    }
    Ok(Some(text.to_owned()))
}

#[cfg(test)]
mod tests;
