//! `meshctl policy get --admin URL`: the policy snapshot a running proxy
//! enforces, from its admin `GET /policy`:
//!
//! `{"version": N, "received_at": "RFC 3339", "next_expiry": "RFC 3339" | null,
//!   "snapshot": {"objects": [...]}}`, or 503 `{"error": ...}` before the
//! proxy has received one.

use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::cert::AdminError;
use crate::cert::admin::{Target, get_within, quote};

/// The admin path that serves the snapshot (DESIGN.md).
const POLICY_PATH: &str = "/policy";

/// Largest `/policy` answer read. A snapshot is at most the control plane's
/// whole folder (files of up to 8 MiB each, usually a few KiB in all) in
/// JSON; 32 MiB leaves room for a large mesh while a wrong address that
/// streams forever cannot exhaust the operator's memory.
pub const MAX_SNAPSHOT_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PolicyGetError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(
        "the proxy at {addr} has no policy yet: {reason} (it is starting, or cannot reach the control plane; see its log)"
    )]
    NoPolicy { addr: String, reason: String },
    #[error("{url} did not answer with a /policy document: {reason}")]
    Document { url: String, reason: String },
}

/// What `/policy` says, plus the body as sent (printed by `-o json`).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    pub version: u64,
    pub received_at: String,
    pub next_expiry: Option<String>,
    pub objects: Vec<ObjectLine>,
    pub raw: String,
    /// Why this meshctl's mesh-policy refuses the snapshot, if it does (a
    /// proxy newer than meshctl may hold kinds it does not know). The
    /// listing does not depend on it.
    pub refused: Option<String>,
}

/// One object of the snapshot, as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLine {
    pub kind: String,
    /// `namespace/name`, or just `name` for cluster-scoped kinds.
    pub name: String,
    pub dry_run: bool,
    pub expires_at: Option<String>,
}

#[derive(Deserialize)]
struct Document {
    version: u64,
    received_at: String,
    next_expiry: Option<String>,
    snapshot: SnapshotObjects,
}

#[derive(Deserialize)]
struct SnapshotObjects {
    #[serde(default)]
    objects: Vec<Value>,
}

#[derive(Deserialize)]
struct ErrorDocument {
    error: String,
}

/// Fetches `/policy` from the proxy admin at `url` within `timeout`.
pub async fn fetch(url: &str, timeout: Duration) -> Result<PolicyDocument, PolicyGetError> {
    let target = Target::endpoint(url, POLICY_PATH)?;
    let (status, body) = get_within(&target, MAX_SNAPSHOT_BYTES, timeout).await?;
    from_response(&target, status, &body)
}

/// Interprets the admin's answer per the `/policy` contract.
fn from_response(
    target: &Target,
    status: StatusCode,
    body: &[u8],
) -> Result<PolicyDocument, PolicyGetError> {
    let url = target.url();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // 503 is how the proxy says it has not received a snapshot yet.
        let reason = serde_json::from_slice::<ErrorDocument>(body)
            .map(|d| d.error)
            .unwrap_or_else(|_| quote(body));
        return Err(PolicyGetError::NoPolicy {
            addr: target.authority.clone(),
            reason,
        });
    }
    if status != StatusCode::OK {
        return Err(AdminError::Status {
            url,
            status: status.as_u16(),
            body: quote(body),
        }
        .into());
    }
    let bad = |reason: String| PolicyGetError::Document {
        url: url.clone(),
        reason,
    };
    let raw = std::str::from_utf8(body)
        .map_err(|_| bad("the body is not UTF-8".to_owned()))?
        .to_owned();
    let doc: Document = serde_json::from_str(&raw).map_err(|e| bad(e.to_string()))?;
    let objects = doc
        .snapshot
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            line(o).ok_or_else(|| bad(format!("snapshot.objects[{i}] has no kind or name")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let snapshot = serde_json::json!({ "objects": doc.snapshot.objects }).to_string();
    let refused = mesh_policy::Snapshot::from_json(&snapshot)
        .err()
        .map(|e| e.to_string());
    Ok(PolicyDocument {
        version: doc.version,
        received_at: doc.received_at,
        next_expiry: doc.next_expiry,
        objects,
        raw,
        refused,
    })
}

/// Reads only what the listing needs, so kinds this meshctl does not know
/// are still listed.
fn line(object: &Value) -> Option<ObjectLine> {
    let kind = object.get("kind")?.as_str()?.to_owned();
    let metadata = object.get("metadata")?;
    let name = metadata.get("name")?.as_str()?;
    let annotation = |key: &str| {
        metadata
            .get("annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    };
    let name = if kind == "Namespace" {
        name.to_owned()
    } else {
        let namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or(mesh_policy::resource::DEFAULT_NAMESPACE);
        format!("{namespace}/{name}")
    };
    Some(ObjectLine {
        kind,
        name,
        dry_run: annotation(mesh_policy::resource::ANNOTATION_DRY_RUN) == Some("true"),
        expires_at: annotation(mesh_policy::resource::ANNOTATION_EXPIRES_AT).map(str::to_owned),
    })
}

impl PolicyDocument {
    /// The body exactly as the proxy sent it, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut out = self.raw.trim_end().to_owned();
        out.push('\n');
        out
    }

    /// Header lines, then one line per object; an expiry that has passed at
    /// `now` is marked, since the proxy no longer applies that object.
    pub fn to_table(&self, now: SystemTime) -> String {
        let mut out = String::new();
        let next = self.next_expiry.as_deref().unwrap_or("none");
        for (label, value) in [
            ("version", self.version.to_string()),
            ("received at", self.received_at.clone()),
            ("next expiry", next.to_owned()),
            ("objects", self.objects.len().to_string()),
        ] {
            out.push_str(&format!("{:<13}{value}\n", format!("{label}:")));
        }
        if self.objects.is_empty() {
            return out;
        }
        let rows: Vec<[String; 4]> = self
            .objects
            .iter()
            .map(|o| {
                let expires = match &o.expires_at {
                    None => "-".to_owned(),
                    Some(at) if expired(at, now) => format!("{at} (expired)"),
                    Some(at) => at.clone(),
                };
                let dry_run = if o.dry_run { "yes" } else { "-" };
                [o.kind.clone(), o.name.clone(), dry_run.to_owned(), expires]
            })
            .collect();
        let header = ["KIND", "NAMESPACE/NAME", "DRY-RUN", "EXPIRES-AT"].map(str::to_owned);
        let width = |c: usize| {
            rows.iter()
                .chain([&header])
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths = [width(0), width(1), width(2)];
        out.push('\n');
        for row in [&header].into_iter().chain(rows.iter()) {
            out.push_str(&format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}\n",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            ));
        }
        out
    }
}

/// Whether an RFC 3339 instant is at or before `now`; unreadable ones are
/// shown as they are, unmarked.
fn expired(at: &str, now: SystemTime) -> bool {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|at| SystemTime::from(at) <= now)
}

#[cfg(test)]
mod tests;
