//! The flows the proxies report, aggregated with bounded memory: one entry
//! per (source, destination, port, decision, policy), its total, when it was
//! first and last seen, and its counts of the last [`WINDOW_SECS`] seconds
//! (the rate `/flows` shows and the anomaly rules read). An entry unseen for
//! [`FLOW_TTL`] ages out; past [`MAX_FLOWS`] the least recently seen go
//! first. Strings are shared between entries (one copy per identity and
//! policy name): 10,000 flows take 5.8 MB (control-plane/tests/flow_memory.rs).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Flows kept at once.
pub const MAX_FLOWS: usize = 50_000;
/// A flow unseen this long is forgotten.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// Seconds of per-second counts kept per flow.
pub const WINDOW_SECS: usize = 60;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The source's SPIFFE ID, or a plaintext client's address.
    pub source: Arc<str>,
    /// The destination's SPIFFE ID (the reporting proxy's own).
    pub destination: Arc<str>,
    pub port: u16,
    /// `allow`, `deny` or `dry_run_deny`.
    pub decision: &'static str,
    pub policy: Arc<str>,
}

#[derive(Debug, Clone)]
struct Stats {
    total: u64,
    first_seen: u64,
    last_seen: u64,
    /// Counts by second, `recent[s % WINDOW_SECS]` for second `s`, valid
    /// for the seconds after `last_seen - WINDOW_SECS`.
    recent: [u32; WINDOW_SECS],
}

impl Stats {
    fn add(&mut self, now: u64, n: u64) {
        // Clear the seconds skipped since the last count.
        let gap = now.saturating_sub(self.last_seen).min(WINDOW_SECS as u64);
        for s in 1..=gap {
            self.recent[((self.last_seen + s) % WINDOW_SECS as u64) as usize] = 0;
        }
        let slot = &mut self.recent[(now % WINDOW_SECS as u64) as usize];
        *slot = slot.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        self.total = self.total.saturating_add(n);
        self.last_seen = self.last_seen.max(now);
    }

    /// Counts in the `secs` seconds up to and including `now`.
    fn within(&self, now: u64, secs: u64) -> u64 {
        let secs = secs.min(WINDOW_SECS as u64);
        (0..secs)
            .filter_map(|back| now.checked_sub(back))
            .filter(|s| *s <= self.last_seen && self.last_seen - s < WINDOW_SECS as u64)
            .map(|s| u64::from(self.recent[(s % WINDOW_SECS as u64) as usize]))
            .sum()
    }
}

/// One flow as `/flows` serves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowView {
    pub source: String,
    pub destination: String,
    /// The workloads registered with the destination identity.
    pub destination_workloads: Vec<String>,
    /// The labels of a workload registered with each identity, when one is
    /// (what `meshctl policy preview` evaluates a flow with).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<mesh_policy::Labels>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_labels: Option<mesh_policy::Labels>,
    pub port: u16,
    pub decision: &'static str,
    pub policy: String,
    pub total: u64,
    /// Per second over the last 10 seconds.
    pub rate: f64,
    pub first_seen: u64,
    pub last_seen: u64,
}

#[derive(Default)]
struct Inner {
    flows: HashMap<FlowKey, Stats>,
    strings: HashSet<Arc<str>>,
    overflow: u64,
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// Ages out old flows; if still full, drops the least recently seen
    /// tenth, so a flood of new flows costs one sort per tenth, not one
    /// scan per flow.
    fn make_room(&mut self, now: u64) {
        let ttl = FLOW_TTL.as_secs();
        self.flows
            .retain(|_, s| now.saturating_sub(s.last_seen) < ttl);
        if self.flows.len() >= MAX_FLOWS {
            let mut seen: Vec<u64> = self.flows.values().map(|s| s.last_seen).collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 10];
            self.flows.retain(|_, s| s.last_seen > cut);
        }
        // Strings no flow uses any more.
        let used: HashSet<*const u8> = self
            .flows
            .keys()
            .flat_map(|k| [&k.source, &k.destination, &k.policy])
            .map(|a| a.as_ptr())
            .collect();
        self.strings.retain(|a| used.contains(&a.as_ptr()));
    }
}

/// One reported flow, as the gRPC service hands it over (checked).
pub struct Reported<'a> {
    pub source: &'a str,
    pub port: u16,
    pub decision: &'static str,
    pub policy: &'a str,
    pub count: u64,
}

/// The aggregated flows.
#[derive(Default)]
pub struct FlowStore {
    inner: Mutex<Inner>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FlowStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds one proxy's report (`destination`: its verified identity) at
    /// second `now`; returns the keys it touched, for the anomaly rules.
    pub fn ingest(
        &self,
        destination: &str,
        flows: &[Reported<'_>],
        overflow: u64,
        now: u64,
    ) -> Vec<FlowKey> {
        let Ok(mut inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner.overflow = inner.overflow.saturating_add(overflow);
        let destination = inner.intern(destination);
        let mut touched = Vec::with_capacity(flows.len());
        for f in flows {
            let key = FlowKey {
                source: inner.intern(f.source),
                destination: destination.clone(),
                port: f.port,
                decision: f.decision,
                policy: inner.intern(f.policy),
            };
            if !inner.flows.contains_key(&key) && inner.flows.len() >= MAX_FLOWS {
                inner.make_room(now);
            }
            inner
                .flows
                .entry(key.clone())
                .or_insert_with(|| Stats {
                    total: 0,
                    first_seen: now,
                    last_seen: now,
                    recent: [0; WINDOW_SECS],
                })
                .add(now, f.count);
            touched.push(key);
        }
        metrics::gauge!("mesh_flows_active").set(inner.flows.len() as f64);
        touched
    }

    /// Counts of `key` in the last `secs` seconds up to `now`.
    pub fn count_within(&self, key: &FlowKey, now: u64, secs: u64) -> u64 {
        self.inner
            .lock()
            .ok()
            .and_then(|i| i.flows.get(key).map(|s| s.within(now, secs)))
            .unwrap_or(0)
    }

    /// Every flow of `source` with `decision`, counted over the last `secs`.
    pub fn source_within(&self, source: &str, decision: &str, now: u64, secs: u64) -> u64 {
        let Ok(inner) = self.inner.lock() else {
            return 0;
        };
        inner
            .flows
            .iter()
            .filter(|(k, _)| &*k.source == source && k.decision == decision)
            .map(|(_, s)| s.within(now, secs))
            .sum()
    }

    /// Whether `source` was seen calling `destination` before second `before`.
    pub fn seen_before(&self, source: &str, destination: &str, before: u64) -> bool {
        self.inner.lock().is_ok_and(|i| {
            i.flows.iter().any(|(k, s)| {
                &*k.source == source && &*k.destination == destination && s.first_seen < before
            })
        })
    }

    /// Every flow, ordered by destination, source, port; `workloads` gives
    /// the names of the workloads of an identity and the labels of one.
    pub fn view(
        &self,
        now: u64,
        workloads: impl Fn(&str) -> (Vec<String>, Option<mesh_policy::Labels>),
    ) -> Vec<FlowView> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let ttl = FLOW_TTL.as_secs();
        let mut out: Vec<FlowView> = inner
            .flows
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.last_seen) < ttl)
            .map(|(k, s)| {
                let (destination_workloads, destination_labels) = workloads(&k.destination);
                (
                    k,
                    s,
                    destination_workloads,
                    destination_labels,
                    workloads(&k.source).1,
                )
            })
            .map(
                |(k, s, destination_workloads, destination_labels, source_labels)| FlowView {
                    source: k.source.to_string(),
                    destination: k.destination.to_string(),
                    destination_workloads,
                    source_labels,
                    destination_labels,
                    port: k.port,
                    decision: k.decision,
                    policy: k.policy.to_string(),
                    total: s.total,
                    rate: s.within(now, 10) as f64 / 10.0,
                    first_seen: s.first_seen,
                    last_seen: s.last_seen,
                },
            )
            .collect();
        out.sort_by(|a, b| {
            (&a.destination, &a.source, a.port, a.decision, &a.policy).cmp(&(
                &b.destination,
                &b.source,
                b.port,
                b.decision,
                &b.policy,
            ))
        });
        out
    }

    /// Flows the proxies could not keep apart (their tables were full).
    pub fn overflow(&self) -> u64 {
        self.inner.lock().map(|i| i.overflow).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.flows.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
