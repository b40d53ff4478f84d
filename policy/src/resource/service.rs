//! Service `v1`: a virtual IP and ports in front of the pods its selector
//! picks. Palisade reads `clusterIP`, `ports` and `selector`; in local mode
//! the endpoints are the registered workloads that match the selector.
//! Services are discovery, not policy: they load beside the snapshot.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Labels, ObjectMeta};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The virtual IP; absent or `None` for a headless Service (no VIP).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    /// Accepted for compatibility with Kubernetes manifests; Palisade
    /// treats every Service as ClusterIP.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    /// The pods' port; defaults to `port`. Named target ports are not
    /// supported (pods do not declare container ports in local mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl Service {
    /// The VIP, when the Service has one.
    pub fn vip(&self) -> Option<IpAddr> {
        self.spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None")
            .and_then(|ip| ip.parse().ok())
    }

    /// Checks the fields serde cannot: returns (field, message).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        if let Some(ip) = self.spec.cluster_ip.as_deref()
            && ip != "None"
            && !ip.is_empty()
            && ip.parse::<IpAddr>().is_err()
        {
            return Err((
                "spec.clusterIP".into(),
                format!("{ip:?} is not an IP address"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.spec.ports.iter().enumerate() {
            if p.port == 0 {
                return Err((
                    format!("spec.ports[{i}].port"),
                    "port 0 is not a port".into(),
                ));
            }
            if p.target_port == Some(0) {
                return Err((
                    format!("spec.ports[{i}].targetPort"),
                    "port 0 is not a port".into(),
                ));
            }
            if let Some(proto) = p.protocol.as_deref()
                && proto != "TCP"
            {
                return Err((
                    format!("spec.ports[{i}].protocol"),
                    format!("{proto:?} is not supported; Palisade proxies TCP"),
                ));
            }
            if !seen.insert(p.port) {
                return Err((
                    format!("spec.ports[{i}].port"),
                    format!("port {} is listed twice", p.port),
                ));
            }
        }
        Ok(())
    }
}
