//! `meshctl quarantine list|lift`: the quarantines the anomaly rules
//! imposed (the control plane's admin `GET /quarantines`), and lifting one
//! before its expiry. A lift is a request left in the control plane's data
//! directory (`quarantine-lifts/NAME`): only who may write there, the
//! operator of the control plane, can lift; the control plane takes it
//! within a second.

pub mod cli;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cert::admin::{AdminError, get_text};

const MAX_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantine {
    pub name: String,
    pub namespace: String,
    pub rule: String,
    pub scope: String,
    pub source: String,
    #[serde(default)]
    pub except: Vec<String>,
    pub evidence: String,
    pub created_at: u64,
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub quarantines: Vec<Quarantine>,
    #[serde(default)]
    pub events: Vec<serde_json::Value>,
}

pub fn parse(json: &str) -> Result<Doc, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

pub async fn fetch(url: &str, timeout: Duration) -> Result<String, AdminError> {
    get_text(url, "/quarantines", MAX_BYTES, timeout).await
}

pub fn table(list: &[Quarantine], now: u64) -> String {
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("no quarantine in force\n");
        return out;
    }
    for q in list {
        let _ = writeln!(
            out,
            "{}  {} {}  by {}  lifts in {}s\n    evidence: {}",
            q.name,
            q.scope,
            q.source,
            q.rule,
            q.expires_at.saturating_sub(now),
            q.evidence
        );
    }
    out
}

/// Leaves the lift request for `name` in `data_dir`.
pub fn request_lift(data_dir: &Path, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        anyhow::bail!("{name:?} is not a quarantine name (see `meshctl quarantine list`)");
    }
    let dir = data_dir.join("quarantine-lifts");
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(dir.join(name), b"")
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.join(name).display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lift_requests_name_a_quarantine_only() {
        let dir = tempfile::tempdir().unwrap();
        request_lift(dir.path(), "q-0123456789ab").unwrap();
        assert!(dir.path().join("quarantine-lifts/q-0123456789ab").exists());
        for bad in ["", "../x", "Q-1", "a/b"] {
            assert!(request_lift(dir.path(), bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_list_parses_and_prints() {
        let doc = parse(r#"{"quarantines": [{"name": "q-1", "namespace": "mesh-system", "rule": "AnomalyRule shop/probe",
            "scope": "Source", "source": "spiffe://cluster.local/ns/lab/sa/intruder", "evidence": "9 denied calls in 10s",
            "created_at": 100, "expires_at": 160}], "events": []}"#).unwrap();
        let t = table(&doc.quarantines, 130);
        assert!(
            t.contains("q-1") && t.contains("lifts in 30s") && t.contains("9 denied"),
            "{t}"
        );
        assert!(parse("{}").is_err());
    }
}
