//! RateLimitPolicy (`policy.palisade.dev/v1alpha1`): local rate limits on a
//! workload's inbound, enforced by its own proxy.
//!
//! ```yaml
//! apiVersion: policy.palisade.dev/v1alpha1
//! kind: RateLimitPolicy
//! metadata: {name: api-limits, namespace: shop}
//! spec:
//!   selector: {matchLabels: {app: api}}   # the limited workloads (all in the namespace when absent)
//!   ports: [8080]                          # target ports (all when absent)
//!   paths: ["/orders*"]                    # Istio patterns (all when absent)
//!   methods: ["POST"]                      # (all when absent)
//!   hosts: ["shop.example", "*.shop.example"]  # request Host (all when absent)
//!   routes: ["web/storefront"]             # at the ingress: the route taken (all when absent)
//!   total: {requestsPerSecond: 100, burst: 20}
//!   perClient: {requestsPerSecond: 10}     # per client identity (per IP for plaintext)
//!   overrides:                             # another per-client limit for some clients
//!   - principals: ["cluster.local/ns/batch/sa/loader"]
//!     requestsPerSecond: 50
//! ```
//!
//! Unknown fields are refused, as on every kind: a misspelt `perclient`
//! would otherwise leave a hot service unprotected.

use serde::{Deserialize, Serialize};

use super::{ObjectMeta, WorkloadSelector};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicy {
    pub api_version: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RateLimitPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Target ports the limits apply to; every port when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Normalized request paths (Istio patterns: exact, `prefix*`,
    /// `*suffix`); every path when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Request methods (exact, e.g. `POST`); every method when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Request hosts (`Host` / `:authority`, exact or `*.example.com`);
    /// every host when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The HTTPRoute, GRPCRoute or Ingress that took the request at the
    /// ingress, `[namespace/]name` (the policy's namespace when bare);
    /// every route when absent. A sidecar's inbound takes no route, so a
    /// policy naming routes limits only at the ingress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// One limit shared by every client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Limit>,
    /// A limit for each client identity (each source IP for a plaintext
    /// caller), independent of the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<Limit>,
    /// Per-client limits for named clients instead of `perClient`; the first
    /// that names a client applies to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// A GCRA limit: a sustained rate and how many requests may come at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limit {
    pub requests_per_second: u32,
    /// Requests allowed back to back; `requestsPerSecond` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    /// Client principals (`<trust domain>/ns/<ns>/sa/<sa>`, Istio patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Client namespaces (from the verified identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    pub requests_per_second: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}
