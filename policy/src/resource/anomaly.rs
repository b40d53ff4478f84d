//! AnomalyRule and Quarantine (`policy.palisade.dev/v1alpha1`): what the
//! control plane watches the flows for, and the cut-off it imposes when a
//! rule fires with `action: quarantine`.
//!
//! An AnomalyRule is read by the control plane only; a Quarantine is policy
//! like an AuthorizationPolicy: it compiles to a DENY (the source identity
//! everywhere, or everything into a segment but the identities it
//! excepts), carries `palisade.dev/expires-at`, and denials name it
//! (`Quarantine mesh-system/q-…`).

use serde::{Deserialize, Serialize};

use super::{ObjectMeta, WorkloadSelector};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnomalyRule {
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: AnomalyRuleSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnomalyRuleSpec {
    /// The destination workloads watched (in the rule's namespace); absent:
    /// every workload of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Fires when one source is denied `count` times within `window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_spike: Option<DenySpike>,
    /// Fires when a source never seen before calls a watched workload
    /// (after a learning period in which everything is new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_source: Option<NewSource>,
    /// `alert` (an event only) or `quarantine`.
    pub action: AnomalyAction,
    /// Required for `action: quarantine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantinePlan>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DenySpike {
    pub count: u64,
    /// `10s`, `1m`: at most 60s (the flow window).
    pub window: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSource {
    /// How long after the rule is loaded sources are learned, not flagged
    /// (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_period: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyAction {
    #[default]
    Alert,
    Quarantine,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuarantineScope {
    /// Deny the source identity everywhere in the mesh.
    #[default]
    Source,
    /// Deny everything into the watched workloads but the excepted
    /// identities.
    Segment,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantinePlan {
    #[serde(default)]
    pub scope: QuarantineScope,
    /// How long a quarantine lasts: `10m`, `1h`.
    pub duration: String,
    /// Segment scope: principals still admitted (`cluster.local/ns/x/sa/y`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quarantine {
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: QuarantineSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantineSpec {
    /// The rule that fired (`AnomalyRule ns/name`), or who imposed it.
    pub rule: String,
    #[serde(default)]
    pub scope: QuarantineScope,
    /// Source scope: the quarantined principal (`cluster.local/ns/x/sa/y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Segment scope: the workloads cut off (in the Quarantine's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Segment scope: principals still admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    /// What the rule saw: `12 denied calls in 10s to shop/api:8080 (default deny)`.
    #[serde(default)]
    pub evidence: String,
}
