//! Flow telemetry: every inbound decision is counted by (source, port,
//! decision, deciding policy) in a small table, and about once a second the
//! table is handed to the control plane over `Telemetry.Report` and started
//! afresh. Bounded: past [`MAX_FLOWS`] keys in one interval the rest are
//! counted as overflow, not named; a report the control plane cannot take
//! is dropped and counted, never queued without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mesh_policy::{DecidedBy, Decision};
use mesh_proto::telemetry::telemetry_client::TelemetryClient;
use mesh_proto::telemetry::{Flow, FlowReport};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Distinct flows one proxy keeps apart per interval.
pub const MAX_FLOWS: usize = 4096;
/// How often the table is reported.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: Arc<str>,
    port: u16,
    decision: &'static str,
    policy: DecidedBy,
}

#[derive(Default)]
struct Table {
    counts: HashMap<Key, u64>,
    overflow: u64,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Counts one inbound decision. `source`: the client's SPIFFE ID, or its
/// address for a plaintext client.
pub fn record(source: &Arc<str>, port: u16, d: &Decision) {
    let policy = match (&d.dry_run, d.is_allowed()) {
        (Some(dry), true) => dry.decided_by.clone(),
        _ => d.decided_by.clone(),
    };
    let key = Key {
        source: source.clone(),
        port,
        decision: d.label(),
        policy,
    };
    let Ok(mut t) = table().lock() else {
        return;
    };
    if let Some(n) = t.counts.get_mut(&key) {
        *n += 1;
    } else if t.counts.len() < MAX_FLOWS {
        t.counts.insert(key, 1);
    } else {
        t.overflow += 1;
    }
}

/// The flows counted since the last call, as a report; `None` when there
/// were none.
fn take() -> Option<FlowReport> {
    let (counts, overflow) = {
        let mut t = table().lock().ok()?;
        (
            std::mem::take(&mut t.counts),
            std::mem::take(&mut t.overflow),
        )
    };
    if counts.is_empty() && overflow == 0 {
        return None;
    }
    Some(FlowReport {
        flows: counts
            .into_iter()
            .map(|(k, count)| Flow {
                source: k.source.to_string(),
                port: u32::from(k.port),
                decision: k.decision.to_owned(),
                policy: k.policy.to_string(),
                count,
            })
            .collect(),
        overflow,
    })
}

/// Reports forever: one client stream at a time, reopened with backoff
/// when it breaks. Reports made while no stream is open are dropped and
/// counted in `mesh_flow_reports_dropped_total`.
pub async fn run_reporter(channel: Channel) {
    let mut delay = Duration::from_millis(500);
    loop {
        let (tx, rx) = mpsc::channel::<FlowReport>(4);
        let mut client = TelemetryClient::new(channel.clone());
        let reports =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
            );
        let call = client.report(reports);
        tokio::pin!(call);
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                r = &mut call => break r.err(),
                _ = tick.tick() => {
                    if let Some(report) = take() {
                        if tx.try_send(report).is_err() {
                            metrics::counter!("mesh_flow_reports_dropped_total").increment(1);
                        } else {
                            delay = Duration::from_millis(500);
                        }
                    }
                }
            }
        };
        if let Some(s) = ended {
            tracing::debug!(code = ?s.code(), error = %s.message(), "flow reports: stream ended");
        }
        // Flows counted meanwhile wait in the table for the next stream.
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_policy::{Stage, Verdict};

    fn decision(allowed: bool) -> Decision {
        Decision {
            verdict: if allowed {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            stage: Stage::AuthorizationPolicy,
            decided_by: if allowed {
                DecidedBy::DefaultAllow
            } else {
                DecidedBy::DefaultDeny
            },
            dry_run: None,
            audit: None,
        }
    }

    // One test owns the process-wide table.
    #[test]
    fn flows_are_counted_by_key_reported_once_and_bounded() {
        let a: Arc<str> = Arc::from("spiffe://cluster.local/ns/shop/sa/web");
        for _ in 0..3 {
            record(&a, 8080, &decision(true));
        }
        record(&a, 8080, &decision(false));
        let report = take().expect("flows");
        let mut got: Vec<(String, String, u64)> = report
            .flows
            .iter()
            .map(|f| (f.decision.clone(), f.policy.clone(), f.count))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("allow".into(), "default allow".into(), 3),
                ("deny".into(), "default deny".into(), 1)
            ]
        );
        assert!(take().is_none(), "a report is taken once");
        for i in 0..MAX_FLOWS + 10 {
            record(&Arc::from(format!("10.0.0.{i}")), 80, &decision(false));
        }
        let report = take().expect("flows");
        assert_eq!(report.flows.len(), MAX_FLOWS);
        assert_eq!(report.overflow, 10);
    }
}
