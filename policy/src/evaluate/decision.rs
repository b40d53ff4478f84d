//! The answer: allow or deny, and what decided it.

use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::resource::ObjectRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

/// Which check decided. Inbound runs them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    PeerAuthentication,
    NetworkPolicy,
    AuthorizationPolicy,
    EgressPolicy,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PeerAuthentication => "PeerAuthentication",
            Stage::NetworkPolicy => "NetworkPolicy",
            Stage::AuthorizationPolicy => "AuthorizationPolicy",
            Stage::EgressPolicy => "EgressPolicy",
        }
    }
}

/// What decided: rendered as DESIGN.md fixes it (`<kind> <namespace>/<name>
/// rule <n>` or `default deny`). Holds `Arc`s into the compiled policy, so
/// making one never allocates and it outlives a policy update.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// Nothing applied, so the default allowed (no ALLOW policy, not isolated).
    DefaultAllow,
    /// Something applied and nothing allowed: ALLOW policies exist but none
    /// matched, or mTLS is required by Palisade's default.
    DefaultDeny,
    /// A rule of an AuthorizationPolicy (index in `spec.rules`).
    Rule { object: Arc<ObjectRef>, rule: usize },
    /// A whole object: the NetworkPolicy that isolates the pod, or the
    /// PeerAuthentication whose mode refused plaintext.
    Object { object: Arc<ObjectRef> },
    /// A PeerAuthentication's `portLevelMtls` entry.
    Port { object: Arc<ObjectRef>, port: u16 },
}

impl DecidedBy {
    /// The object, when an object decided.
    pub fn object(&self) -> Option<&ObjectRef> {
        match self {
            DecidedBy::DefaultAllow | DecidedBy::DefaultDeny => None,
            DecidedBy::Rule { object, .. }
            | DecidedBy::Object { object }
            | DecidedBy::Port { object, .. } => Some(object),
        }
    }
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecidedBy::DefaultAllow => f.write_str("default allow"),
            DecidedBy::DefaultDeny => f.write_str("default deny"),
            DecidedBy::Rule { object, rule } => write!(f, "{object} rule {rule}"),
            DecidedBy::Object { object } => write!(f, "{object}"),
            DecidedBy::Port { object, port } => write!(f, "{object} port {port}"),
        }
    }
}

/// What dry-run objects would have done had they been enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunDeny {
    pub stage: Stage,
    pub decided_by: DecidedBy,
}

/// The evaluator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What is enforced.
    pub verdict: Verdict,
    pub stage: Stage,
    pub decided_by: DecidedBy,
    /// Set when the request is allowed but would be denied if the dry-run
    /// objects were enforced: report it, do not enforce it.
    pub dry_run: Option<DryRunDeny>,
    /// The AUDIT policy rule that matched, if any (never changes the verdict).
    pub audit: Option<DecidedBy>,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The `decision` label of `mesh_authz_decisions_total`:
    /// `allow`, `deny` or `dry_run_deny`.
    pub fn label(&self) -> &'static str {
        match (self.verdict, &self.dry_run) {
            (Verdict::Deny, _) => "deny",
            (Verdict::Allow, Some(_)) => "dry_run_deny",
            (Verdict::Allow, None) => "allow",
        }
    }

    pub(crate) fn new(verdict: Verdict, stage: Stage, decided_by: DecidedBy) -> Decision {
        Decision {
            verdict,
            stage,
            decided_by,
            dry_run: None,
            audit: None,
        }
    }
}

impl fmt::Display for Decision {
    /// `deny: AuthorizationPolicy shop/deny-admin rule 0`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.verdict.as_str(), self.decided_by)?;
        if let Some(dry) = &self.dry_run {
            write!(f, " (dry run would deny: {})", dry.decided_by)?;
        }
        Ok(())
    }
}

/// `meshctl policy check -o json` prints this:
/// `{"decision": "allow"|"deny", "label": ..., "stage": ..., "decided_by": ...,
///   "dry_run": null | {"stage": ..., "decided_by": ...}, "audit": null | ...}`.
impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Dry<'a>(&'a DryRunDeny);
        impl Serialize for Dry<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("decision", "deny")?;
                map.serialize_entry("stage", self.0.stage.as_str())?;
                map.serialize_entry("decided_by", &self.0.decided_by.to_string())?;
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("decision", self.verdict.as_str())?;
        map.serialize_entry("label", self.label())?;
        map.serialize_entry("stage", self.stage.as_str())?;
        map.serialize_entry("decided_by", &self.decided_by.to_string())?;
        map.serialize_entry("dry_run", &self.dry_run.as_ref().map(Dry))?;
        map.serialize_entry("audit", &self.audit.as_ref().map(ToString::to_string))?;
        map.end()
    }
}
