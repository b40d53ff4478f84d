//! ReferenceGrant, as in the Gateway API's `gateway.networking.k8s.io/v1beta1`:
//! the owner of a namespace lets objects of another namespace refer to
//! objects of its own. A route's `backendRefs` to a Service of another
//! namespace, and a Gateway's `certificateRefs` to a Secret of another
//! namespace, are followed only when a ReferenceGrant in the target's
//! namespace allows them; without one the reference is refused
//! (`RefNotPermitted`), never followed.

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// The apiVersions a ReferenceGrant is written in (v1beta1 is the standard
/// channel's; v1alpha2 the older one, same fields).
pub const REFERENCE_GRANT_API_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1beta1",
    "gateway.networking.k8s.io/v1alpha2",
];

/// The Gateway API allows at most 16 entries in `from` and in `to`.
pub const MAX_ENTRIES: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrant {
    pub api_version: String,
    pub metadata: ObjectMeta,
    pub spec: ReferenceGrantSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantSpec {
    /// Who may refer: (group, kind, namespace) of the referring objects.
    pub from: Vec<GrantFrom>,
    /// What they may refer to, in the grant's own namespace.
    pub to: Vec<GrantTo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantFrom {
    /// `""` is the core group; required, as in the Gateway API.
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantTo {
    pub group: String,
    pub kind: String,
    /// One object by name; absent: every object of the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
