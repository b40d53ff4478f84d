//! `meshctl flows`: the flows the control plane aggregated from the
//! proxies' reports (its admin `GET /flows`): who called whom on which
//! port, how it was decided and by what, how often.

pub mod cli;

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cert::admin::{AdminError, get_text};

/// Largest `/flows` document read (50,000 flows of a few hundred bytes).
const MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub destination_workloads: Vec<String>,
    pub port: u16,
    pub decision: String,
    pub policy: String,
    pub total: u64,
    pub rate: f64,
    pub first_seen: u64,
    pub last_seen: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Doc {
    flows: Vec<Flow>,
}

/// The namespace of a workload SPIFFE ID (`spiffe://td/ns/NS/sa/SA`).
pub(crate) fn namespace_of(id: &str) -> Option<String> {
    mesh_identity::SpiffeId::parse(id)
        .ok()
        .and_then(|i| i.namespace().map(str::to_owned))
}

/// What `--namespace` and `--denied` keep: flows from or to the namespace,
/// and flows that were denied (enforced or in dry-run).
pub fn filter(flows: Vec<Flow>, namespace: Option<&str>, denied: bool) -> Vec<Flow> {
    flows
        .into_iter()
        .filter(|f| {
            namespace.is_none_or(|ns| {
                namespace_of(&f.source).as_deref() == Some(ns)
                    || namespace_of(&f.destination).as_deref() == Some(ns)
            })
        })
        .filter(|f| !denied || f.decision != "allow")
        .collect()
}

pub fn parse(json: &str) -> Result<Vec<Flow>, String> {
    serde_json::from_str::<Doc>(json)
        .map(|d| d.flows)
        .map_err(|e| e.to_string())
}

/// Fetches `/flows` from the control plane's admin at `url`.
pub async fn fetch(url: &str, timeout: Duration) -> Result<String, AdminError> {
    get_text(url, "/flows", MAX_BYTES, timeout).await
}

/// A short name for an identity: `ns/sa` for a SPIFFE ID, else as it is.
fn short(id: &str) -> String {
    match id
        .strip_prefix("spiffe://")
        .and_then(|r| r.split_once("/ns/"))
        .and_then(|(_, r)| r.split_once("/sa/"))
    {
        Some((ns, sa)) => format!("{ns}/{sa}"),
        None => id.to_owned(),
    }
}

pub fn table(flows: &[Flow]) -> String {
    let mut rows = vec![[
        "SOURCE".to_string(),
        "DESTINATION".into(),
        "PORT".into(),
        "DECISION".into(),
        "POLICY".into(),
        "TOTAL".into(),
        "RATE/S".into(),
    ]];
    for f in flows {
        let dest = if f.destination_workloads.is_empty() {
            short(&f.destination)
        } else {
            f.destination_workloads.join(",")
        };
        rows.push([
            short(&f.source),
            dest,
            f.port.to_string(),
            f.decision.clone(),
            f.policy.clone(),
            f.total.to_string(),
            format!("{:.1}", f.rate),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if flows.is_empty() {
        out.push_str("(no flows)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"flows": [
      {"source": "spiffe://cluster.local/ns/shop/sa/web", "destination": "spiffe://cluster.local/ns/shop/sa/api",
       "destination_workloads": ["shop/api-0"], "port": 8080, "decision": "allow", "policy": "AuthorizationPolicy shop/api rule 0",
       "total": 12, "rate": 1.2, "first_seen": 1, "last_seen": 2},
      {"source": "spiffe://cluster.local/ns/lab/sa/intruder", "destination": "spiffe://cluster.local/ns/pay/sa/ledger",
       "port": 9000, "decision": "deny", "policy": "default deny", "total": 40, "rate": 4.0, "first_seen": 1, "last_seen": 2}
    ], "overflow": 0}"#;

    #[test]
    fn flows_filter_by_namespace_and_denial_and_print() {
        let flows = parse(DOC).unwrap();
        assert_eq!(filter(flows.clone(), Some("shop"), false).len(), 1);
        assert_eq!(filter(flows.clone(), Some("pay"), false).len(), 1);
        assert_eq!(filter(flows.clone(), Some("lab"), true).len(), 1);
        assert_eq!(filter(flows.clone(), Some("shop"), true).len(), 0);
        let t = table(&flows);
        assert!(t.contains("shop/web"), "{t}");
        assert!(t.contains("shop/api-0"), "{t}");
        assert!(t.contains("pay/ledger"), "{t}");
        assert!(t.contains("default deny"), "{t}");
        assert!(parse("{\"flows\": 3}").is_err());
    }
}
