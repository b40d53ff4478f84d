//! `meshctl policy preview --config-dir NEW`: replays the flows the control
//! plane has seen (its `GET /flows`) against a proposed folder with the
//! proxies' evaluator, and lists every flow whose decision would change —
//! allowed now and denied by the folder, or the reverse — with the rule
//! responsible, before anything is pushed.
//!
//! A flow is replayed as its connection: source identity (and labels, when
//! the source is a registered workload), destination workload (namespace
//! from its identity, labels from its registration), port. Flows carry no
//! HTTP method or path: a folder whose rules read HTTP fields is flagged,
//! since its per-request decisions can differ from the connection's.

use std::fmt::Write as _;
use std::time::SystemTime;

use mesh_policy::{Evaluator, Labels, Peer, Request, Workload};
use serde::{Deserialize, Serialize};

/// One flow as `/flows` gives it, with what preview needs.
#[derive(Debug, Clone, Deserialize)]
pub struct SeenFlow {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub destination_workloads: Vec<String>,
    #[serde(default)]
    pub source_labels: Option<Labels>,
    #[serde(default)]
    pub destination_labels: Option<Labels>,
    pub port: u16,
    pub decision: String,
    pub policy: String,
    pub total: u64,
    pub last_seen: u64,
}

#[derive(Debug, Deserialize)]
struct Doc {
    flows: Vec<SeenFlow>,
}

pub fn parse(json: &str) -> Result<Vec<SeenFlow>, String> {
    serde_json::from_str::<Doc>(json)
        .map(|d| d.flows)
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub source: String,
    pub destination: String,
    pub destination_workloads: Vec<String>,
    pub port: u16,
    /// `allow → deny` or `deny → allow`.
    pub change: &'static str,
    /// What decided it as seen.
    pub was: String,
    /// What decides it under the folder.
    pub would_be: String,
    /// Calls seen in the window.
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub flows_replayed: usize,
    /// Flows whose destination is not a registered workload (no labels to
    /// evaluate with): left out, counted.
    pub flows_skipped: usize,
    pub changes: Vec<Change>,
    /// The folder has rules that read HTTP fields: per-request decisions
    /// may differ from the connection-level replay.
    pub reads_http: bool,
}

/// Replays `flows` last seen at or after `since` (Unix seconds) against
/// `evaluator` at `now`.
pub fn preview(flows: &[SeenFlow], evaluator: &Evaluator, since: u64, now: SystemTime) -> Preview {
    let mut out = Preview {
        flows_replayed: 0,
        flows_skipped: 0,
        changes: Vec::new(),
        reads_http: evaluator.reads_http(),
    };
    for f in flows.iter().filter(|f| f.last_seen >= since) {
        let (Some(dest_ns), Some(dest_labels)) = (
            crate::flows::namespace_of(&f.destination),
            f.destination_labels.as_ref(),
        ) else {
            out.flows_skipped += 1;
            continue;
        };
        let mesh_source = f.source.starts_with("spiffe://");
        let source_ns = crate::flows::namespace_of(&f.source);
        let source = match (source_ns.as_deref(), f.source_labels.as_ref()) {
            (Some(ns), Some(labels)) => Some(Workload {
                namespace: ns,
                labels,
            }),
            _ => None,
        };
        let d = evaluator.inbound(&Request {
            peer: if mesh_source {
                Peer::Mtls {
                    principal: &f.source,
                }
            } else {
                Peer::Plaintext
            },
            source_ip: if mesh_source {
                None
            } else {
                f.source.parse().ok()
            },
            source,
            destination: Some(Workload {
                namespace: &dest_ns,
                labels: dest_labels,
            }),
            destination_ip: None,
            destination_port: f.port,
            http: None,
            now,
        });
        out.flows_replayed += 1;
        // A dry-run denial was allowed: what counts is enforcement.
        let was_allowed = f.decision != "deny";
        if was_allowed == d.is_allowed() {
            continue;
        }
        out.changes.push(Change {
            source: f.source.clone(),
            destination: f.destination.clone(),
            destination_workloads: f.destination_workloads.clone(),
            port: f.port,
            change: if was_allowed {
                "allow → deny"
            } else {
                "deny → allow"
            },
            was: f.policy.clone(),
            would_be: d.decided_by.to_string(),
            total: f.total,
        });
    }
    out.changes.sort_by(|a, b| {
        (&a.destination, &a.source, a.port).cmp(&(&b.destination, &b.source, b.port))
    });
    out
}

impl Preview {
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} flows replayed, {} left out (destination not registered), {} would change",
            self.flows_replayed,
            self.flows_skipped,
            self.changes.len()
        );
        for c in &self.changes {
            let dest = if c.destination_workloads.is_empty() {
                c.destination.clone()
            } else {
                c.destination_workloads.join(",")
            };
            let _ = writeln!(
                s,
                "  {}  {} → {}:{}  ({} calls)\n      was: {}\n      would be: {}",
                c.change, c.source, dest, c.port, c.total, c.was, c.would_be
            );
        }
        if self.reads_http {
            s.push_str(
                "note: the folder has rules that read HTTP fields; flows are replayed as \
                 connections (no method or path), so per-request decisions may differ\n",
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(source: &str, decision: &str, policy: &str) -> SeenFlow {
        SeenFlow {
            source: source.into(),
            destination: "spiffe://cluster.local/ns/shop/sa/api".into(),
            destination_workloads: vec!["shop/api-0".into()],
            source_labels: Some([("app".to_string(), "web".to_string())].into()),
            destination_labels: Some([("app".to_string(), "api".to_string())].into()),
            port: 8080,
            decision: decision.into(),
            policy: policy.into(),
            total: 7,
            last_seen: 100,
        }
    }

    #[test]
    fn a_default_deny_lists_exactly_the_flows_it_would_cut() {
        let folder = "apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]
";
        let loaded = mesh_policy::parse_yaml("new.yaml", folder).unwrap();
        let ev = Evaluator::compile(&loaded.snapshot, "cluster.local").unwrap();
        let flows = [
            flow(
                "spiffe://cluster.local/ns/shop/sa/web",
                "allow",
                "default allow",
            ),
            flow(
                "spiffe://cluster.local/ns/shop/sa/batch",
                "allow",
                "default allow",
            ),
            flow(
                "spiffe://cluster.local/ns/shop/sa/old",
                "allow",
                "default allow",
            ),
        ];
        let mut old = flows[2].clone();
        old.last_seen = 10;
        let p = preview(
            &[flows[0].clone(), flows[1].clone(), old],
            &ev,
            50,
            SystemTime::now(),
        );
        assert_eq!(
            p.flows_replayed, 2,
            "the flow outside the window is not replayed"
        );
        assert_eq!(p.changes.len(), 1);
        assert_eq!(
            p.changes[0].source,
            "spiffe://cluster.local/ns/shop/sa/batch"
        );
        assert_eq!(p.changes[0].change, "allow → deny");
        assert_eq!(p.changes[0].would_be, "default deny");
        // And the reverse: a flow denied today that the folder allows.
        let denied = flow(
            "spiffe://cluster.local/ns/shop/sa/web",
            "deny",
            "default deny",
        );
        let p = preview(&[denied], &ev, 0, SystemTime::now());
        assert_eq!(p.changes[0].change, "deny → allow");
        assert_eq!(p.changes[0].would_be, "AuthorizationPolicy shop/api rule 0");
        let mut unknown = flow(
            "spiffe://cluster.local/ns/shop/sa/x",
            "allow",
            "default allow",
        );
        unknown.destination_labels = None;
        assert_eq!(
            preview(&[unknown], &ev, 0, SystemTime::now()).flows_skipped,
            1
        );
    }
}
