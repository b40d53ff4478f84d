//! A Service's endpoints from its EndpointSlices (`discovery.k8s.io/v1`),
//! resolved to meshed Pods: the endpoints discovery hands to proxies, each
//! with the identity its proxy must present.
//!
//! Conditions follow kube-proxy: the ready endpoints of a Service are used;
//! when it has none, the ones still serving while they terminate are. Only
//! `IPv4` and `IPv6` slices are read (an `FQDN` slice names no address a
//! proxy could verify). An address that is not a meshed Pod the control
//! plane knows has no proxy identity, so it is left out (fail closed),
//! named in a warning and counted in `mesh_endpointslice_endpoints_dropped`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_json::Value;

use crate::registry::Workload;
use crate::source::{ServiceEndpoint, ServiceEndpoints};

/// The label that ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Services' endpoints, and one warning for each slice (or endpoint)
/// not used.
#[derive(Debug, Default)]
pub struct Resolved {
    pub services: Vec<ServiceEndpoints>,
    pub warnings: Vec<String>,
    /// Endpoints left out because no meshed Pod is at their address.
    pub unmeshed: usize,
    /// Endpoints left out because their ports disagree with the others'
    /// of the same Service (one target port per Service port, see below).
    pub port_mismatch: usize,
}

/// One usable address of a slice, before the Service's endpoints are chosen.
struct Candidate<'a> {
    slice: String,
    ip: IpAddr,
    pod: Option<&'a str>,
    ready: bool,
    serving: bool,
    terminating: bool,
    /// The slice's TCP ports: name (`""` unnamed) → number (`None`: the
    /// slice does not restrict the port).
    ports: BTreeMap<String, Option<u16>>,
}

/// Resolves `slices` against `pods` (the meshed Pods the control plane
/// knows, terminating ones included: a terminating endpoint is still a Pod).
pub fn resolve<'a>(slices: impl Iterator<Item = &'a Value>, pods: &[Workload]) -> Resolved {
    let mut out = Resolved::default();
    let pods = index(pods);
    let mut by_service: BTreeMap<(String, String), Vec<Candidate>> = BTreeMap::new();
    for slice in slices {
        let s = |p: &str| slice.pointer(p).and_then(Value::as_str);
        let namespace = s("/metadata/namespace").unwrap_or_default();
        let name = format!(
            "EndpointSlice {namespace}/{}",
            s("/metadata/name").unwrap_or_default()
        );
        let Some(service) = slice
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .and_then(Value::as_str)
        else {
            // Not a Service's slice (no label): nothing to serve.
            continue;
        };
        match s("/addressType") {
            Some("IPv4" | "IPv6") => {}
            other => {
                out.warnings.push(format!(
                    "{name}: addressType {} is not used (only IPv4 and IPv6 addresses can be mesh endpoints)",
                    other.unwrap_or("(none)")
                ));
                continue;
            }
        }
        let ports = slice_ports(slice);
        let list = by_service
            .entry((namespace.to_owned(), service.to_owned()))
            .or_default();
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            // The addresses are fungible; kube-proxy uses the first.
            let Some(ip) = endpoint
                .pointer("/addresses/0")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                out.warnings.push(format!(
                    "{name}: an endpoint without a valid address is not used"
                ));
                continue;
            };
            let condition = |c: &str| endpoint.pointer(&format!("/conditions/{c}"))?.as_bool();
            // Unknown readiness counts as ready; unknown serving follows
            // ready; unknown terminating is not terminating (the API's rules).
            let ready = condition("ready").unwrap_or(true);
            let pod = (endpoint.pointer("/targetRef/kind").and_then(Value::as_str) == Some("Pod"))
                .then(|| endpoint.pointer("/targetRef/name").and_then(Value::as_str))
                .flatten();
            list.push(Candidate {
                slice: name.clone(),
                ip,
                pod,
                ready,
                serving: condition("serving").unwrap_or(ready),
                terminating: condition("terminating").unwrap_or(false),
                ports: ports.clone(),
            });
        }
    }
    for ((namespace, service), candidates) in by_service {
        // Only a meshed Pod has an identity a proxy can verify; the others
        // are left out before readiness is weighed, so an unmeshed ready
        // address never hides a meshed terminating one.
        let mut meshed: Vec<(ServiceEndpoint, &Candidate)> = Vec::new();
        for c in candidates
            .iter()
            .filter(|c| c.ready || (c.serving && c.terminating))
        {
            match meshed_pod(&pods, &namespace, c) {
                Some(w) => meshed.push((
                    ServiceEndpoint {
                        ip: c.ip.to_string(),
                        identity: w.identity.clone(),
                        workload: w.workload.clone(),
                        inbound_port: w.inbound_port,
                    },
                    c,
                )),
                None => {
                    out.unmeshed += 1;
                    out.warnings.push(format!(
                        "{}: endpoint {}{} is not a meshed pod the control plane knows (no proxy identity); it is not a mesh endpoint of Service {namespace}/{service}",
                        c.slice,
                        c.ip,
                        c.pod.map(|p| format!(" (pod {p})")).unwrap_or_default(),
                    ));
                }
            }
        }
        // kube-proxy: the ready endpoints take the traffic; terminating
        // ones that still serve take it only when nothing ready is left.
        let any_ready = meshed.iter().any(|(_, c)| c.ready);
        meshed.retain(|(_, c)| c.ready == any_ready);
        // The same address in two slices (a slice being rewritten) is one endpoint.
        let mut seen = Vec::new();
        meshed.retain(|(_, c)| {
            let fresh = !seen.contains(&c.ip);
            seen.push(c.ip);
            fresh
        });
        let endpoints = meshed;
        // Proxies hold one target port per Service port for all of a
        // Service's endpoints, so the endpoints must agree on their ports:
        // the largest group that does is kept, the others are left out
        // rather than sent to a port their pods may not serve.
        let mut groups: BTreeMap<&BTreeMap<String, Option<u16>>, usize> = BTreeMap::new();
        for (_, c) in &endpoints {
            *groups.entry(&c.ports).or_default() += 1;
        }
        let Some(ports) = groups
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(p, _)| (*p).clone())
        else {
            out.services.push(ServiceEndpoints {
                namespace,
                service,
                ..Default::default()
            });
            continue;
        };
        let mut kept = Vec::new();
        for (e, c) in endpoints {
            if c.ports == ports {
                kept.push(e);
            } else {
                out.port_mismatch += 1;
                out.warnings.push(format!(
                    "{}: endpoint {} serves ports {}, other endpoints of Service {namespace}/{service} serve {}; it is not used",
                    c.slice,
                    c.ip,
                    show(&c.ports),
                    show(&ports)
                ));
            }
        }
        out.services.push(ServiceEndpoints {
            namespace,
            service,
            endpoints: kept,
            target_ports: ports
                .into_iter()
                .filter_map(|(name, port)| Some((name, port?)))
                .collect(),
        });
    }
    out
}

/// Ports as `name=number`, for warnings (`*`: any port).
fn show(ports: &BTreeMap<String, Option<u16>>) -> String {
    let list: Vec<String> = ports
        .iter()
        .map(|(name, port)| {
            let port = port.map_or("*".to_owned(), |p| p.to_string());
            if name.is_empty() {
                port
            } else {
                format!("{name}={port}")
            }
        })
        .collect();
    format!("[{}]", list.join(", "))
}

/// The slice's TCP ports by name.
fn slice_ports(slice: &Value) -> BTreeMap<String, Option<u16>> {
    slice["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["protocol"].as_str().unwrap_or("TCP") == "TCP")
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["port"].as_u64().and_then(|n| u16::try_from(n).ok()),
            )
        })
        .collect()
}

/// The meshed Pods by namespace and address.
type Pods<'a> = HashMap<(&'a str, IpAddr), Vec<&'a Workload>>;

fn index(pods: &[Workload]) -> Pods<'_> {
    let mut out: Pods = HashMap::new();
    for w in pods {
        for ip in w.ips.iter().filter_map(|i| i.parse::<IpAddr>().ok()) {
            out.entry((w.namespace.as_str(), ip)).or_default().push(w);
        }
    }
    out
}

/// The meshed Pod at the candidate's address in `namespace` (and the one
/// the slice's `targetRef` names, when it names one).
fn meshed_pod<'a>(pods: &Pods<'a>, namespace: &str, c: &Candidate) -> Option<&'a Workload> {
    pods.get(&(namespace, c.ip))?
        .iter()
        .copied()
        .find(|w| c.pod.is_none_or(|p| p == w.workload))
}

#[cfg(test)]
mod tests;
