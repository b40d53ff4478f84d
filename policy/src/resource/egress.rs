//! EgressPolicy (`policy.palisade.dev/v1alpha1`): where a namespace's
//! workloads may go outside the mesh, enforced by their own proxy's
//! outbound, by the name the client asks for (TLS SNI, HTTP `Host`) and by
//! address.
//!
//! ```yaml
//! apiVersion: policy.palisade.dev/v1alpha1
//! kind: EgressPolicy
//! metadata: {name: payments, namespace: shop}
//! spec:
//!   selector: {matchLabels: {app: checkout}}  # the workloads (all in the namespace when absent)
//!   mode: enforce                             # or dry-run: counted and logged, never refused
//!   default: deny                             # outside destinations no rule allows: deny | allow-all
//!   allow:
//!   - hosts: [api.stripe.com, "*.stripe.com"]
//!     ports: [443]
//!     protocols: [TLS]                        # TLS, HTTP, TCP (all when absent)
//!   - cidrs: [192.0.2.0/24]
//!     ports: [5432]
//! ```
//!
//! Unknown fields are refused, as on every kind.

use serde::{Deserialize, Serialize};

use super::{ObjectMeta, WorkloadSelector};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPolicy {
    pub api_version: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: EgressPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mode: EgressMode,
    /// What happens to a destination outside the mesh that no rule allows.
    #[serde(default)]
    pub default: EgressDefault,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<EgressAllow>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EgressMode {
    #[default]
    #[serde(rename = "enforce")]
    Enforce,
    /// Decided, counted and logged as a would-be denial; nothing refused.
    #[serde(rename = "dry-run")]
    DryRun,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EgressDefault {
    #[default]
    #[serde(rename = "deny")]
    Deny,
    #[serde(rename = "allow-all")]
    AllowAll,
}

/// One allowed set of destinations: a destination matches when its name
/// is one of `hosts` or its address is in one of `cidrs`, and its port and
/// protocol are listed (every one when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressAllow {
    /// Exact names or `*.example.com` (one or more labels), lowercase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Address blocks (`203.0.113.0/24`, `2001:db8::/32`, an address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<EgressProtocol>,
}

/// How the proxy saw the connection: a TLS ClientHello (the name is its
/// SNI), an HTTP/1.1 request (the name is its `Host`), or other bytes
/// (no name: only `cidrs` can match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EgressProtocol {
    #[serde(rename = "TLS")]
    Tls,
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "TCP")]
    Tcp,
}

impl EgressProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressProtocol::Tls => "TLS",
            EgressProtocol::Http => "HTTP",
            EgressProtocol::Tcp => "TCP",
        }
    }
}
