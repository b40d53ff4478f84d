//! Namespace `v1`: only its labels matter to policy (namespaceSelector).

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub api_version: String,
    pub metadata: ObjectMeta,
}
