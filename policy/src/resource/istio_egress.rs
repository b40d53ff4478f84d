//! Istio's egress control, read as it is written: `ServiceEntry` (the
//! external services a namespace may reach) and the `Sidecar`'s
//! `outboundTrafficPolicy` (`REGISTRY_ONLY`: only those; `ALLOW_ANY`:
//! anything). Palisade maps them onto EgressPolicy's decision
//! (docs/egress.md):
//!
//! - a Sidecar with `outboundTrafficPolicy.mode: REGISTRY_ONLY` is an
//!   EgressPolicy with `default: deny` for the workloads it selects (its
//!   `workloadSelector`, all of its namespace without one, every namespace
//!   from the root namespace); `ALLOW_ANY` is `default: allow-all`;
//! - a ServiceEntry with `location: MESH_EXTERNAL` (the default) allows,
//!   for the namespaces in its `exportTo` (all by default, `.` its own),
//!   each of its `ports` to its `hosts` (by SNI / Host, DNS-checked) and its
//!   `addresses` (by address), as one rule per port, named
//!   `ServiceEntry <ns>/<name> rule <port index>`.
//!
//! Fields that only steer Istio's own proxies (`resolution`, `endpoints`,
//! `subjectAltNames`, a Sidecar's `egress` / `ingress` listeners) are
//! accepted and have no effect here; `location: MESH_INTERNAL` entries
//! describe workloads of the mesh, not egress, and are skipped with a
//! warning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// apiVersions accepted for ServiceEntry and Sidecar.
pub const ISTIO_NETWORKING_API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    pub api_version: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceEntrySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServiceEntryPort>,
    /// `MESH_EXTERNAL` (the default) or `MESH_INTERNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    // Accepted, not used here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alt_names: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntryPort {
    pub number: u32,
    /// HTTP, HTTPS, HTTP2, GRPC, TLS, TCP, MONGO, MYSQL, REDIS…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

impl ServiceEntry {
    /// Whether it describes something outside the mesh.
    pub fn is_external(&self) -> bool {
        self.spec
            .location
            .as_deref()
            .is_none_or(|l| l == "MESH_EXTERNAL")
    }

    /// Whether workloads of `namespace` see it (`exportTo`).
    pub fn exported_to(&self, namespace: &str) -> bool {
        let own = self.metadata.namespace_or_default();
        self.spec.export_to.is_empty()
            || self
                .spec
                .export_to
                .iter()
                .any(|e| e == "*" || (e == "." && own == namespace) || e == namespace)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    pub api_version: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SidecarSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<SidecarSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    // Accepted, not used here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// `REGISTRY_ONLY` or `ALLOW_ANY` (Istio's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<serde_json::Value>,
}
