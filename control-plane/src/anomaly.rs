//! Anomaly rules and the quarantines they impose.
//!
//! Every accepted flow report is checked against the AnomalyRules in force
//! (of the destination's namespace, selecting its workload). A rule that
//! fires is an event: a JSON log line and `mesh_anomaly_events_total{rule,
//! action}`. With `action: quarantine` it also adds a Quarantine object to
//! the policy every proxy receives, within the report's second: the source
//! identity denied everywhere, or everything into the segment denied but
//! the excepted identities. A quarantine carries `palisade.dev/expires-at`
//! (the proxies lift it at that instant by themselves), is persisted under
//! the data directory (it survives a restart) and can be lifted early.
//!
//! Guard rails: the control plane, the ingress and `--protected-identity`
//! are never quarantined, nor a plaintext source (an address is not an
//! identity); at most `--max-quarantines` are active at once; a rule with
//! `palisade.dev/dry-run: "true"` only counts what it would have cut off.

pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_policy::resource::anomaly::{AnomalyAction, QuarantineScope};
use mesh_policy::resource::{AnomalyRule, Object};
use mesh_policy::{Labels, Trigger};
use serde::{Deserialize, Serialize};

use crate::flows::{FlowKey, FlowStore};
use crate::registry::Registry;
use crate::state::State;

/// Quarantines active at once, unless `--max-quarantines` says otherwise.
pub const DEFAULT_MAX_QUARANTINES: usize = 10;
/// A rule fires at most once per source within this (an alert is not
/// repeated every second while the spike lasts).
const REFIRE_AFTER: Duration = Duration::from_secs(60);
const STORE_FILE: &str = "quarantines.json";
/// Where `meshctl quarantine lift NAME` leaves its request.
pub const LIFT_DIR: &str = "quarantine-lifts";

/// One quarantine in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `q-…`: the Quarantine object's name.
    pub name: String,
    /// The namespace of the Quarantine object: the root (mesh-wide) for a
    /// source quarantine, the segment's for a segment one.
    pub namespace: String,
    /// `AnomalyRule ns/name`.
    pub rule: String,
    pub scope: QuarantineScope,
    /// The quarantined identity (source scope) or the source that set off a
    /// segment quarantine.
    pub source: String,
    /// Segment scope: the labels of the workloads cut off.
    #[serde(default)]
    pub selector: Option<Labels>,
    #[serde(default)]
    pub except: Vec<String>,
    pub evidence: String,
    pub created_at: u64,
    pub expires_at: u64,
}

impl Record {
    /// The Quarantine object proxies enforce.
    pub fn object(&self) -> Option<Object> {
        let expires = rfc3339(self.expires_at)?;
        let principal = self
            .source
            .strip_prefix("spiffe://")
            .unwrap_or(&self.source);
        let mut spec = serde_json::json!({
            "rule": self.rule,
            "scope": match self.scope { QuarantineScope::Source => "Source", QuarantineScope::Segment => "Segment" },
            "evidence": self.evidence,
        });
        match self.scope {
            QuarantineScope::Source => spec["source"] = principal.into(),
            QuarantineScope::Segment => {
                if let Some(labels) = &self.selector {
                    spec["selector"] = serde_json::json!({ "matchLabels": labels });
                }
                if !self.except.is_empty() {
                    spec["except"] = serde_json::json!(self.except);
                }
            }
        }
        let value = serde_json::json!({
            "apiVersion": mesh_policy::resource::POLICY_API_VERSION,
            "kind": "Quarantine",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "annotations": { mesh_policy::resource::ANNOTATION_EXPIRES_AT: expires },
            },
            "spec": spec,
        });
        serde_json::from_value(value).ok()
    }
}

fn rfc3339(unix: u64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).ok()?).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An alert or quarantine, as its JSON log line and `/quarantines` say.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub ts: u64,
    pub rule: String,
    /// `alert`, `quarantine`, `dry_run_quarantine` or `refused` (a guard
    /// rail kept it from cutting anything).
    pub action: &'static str,
    pub source: String,
    pub destination: String,
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

#[derive(Default)]
struct Inner {
    active: BTreeMap<String, Record>,
    /// (rule, source) → when it last fired.
    fired: HashMap<(String, String), u64>,
    /// Rule → when its learning period ends (newSource rules): sources
    /// first seen before then are learned, not flagged.
    learning_until: HashMap<String, u64>,
    /// The latest events, newest last (bounded).
    events: Vec<Event>,
}

const MAX_EVENTS: usize = 200;

pub struct Engine {
    state: Arc<State>,
    flows: Arc<FlowStore>,
    registry: Arc<Registry>,
    data_dir: PathBuf,
    /// Never quarantined (full SPIFFE IDs).
    protected: Vec<String>,
    max_active: usize,
    webhook: Option<webhook::Webhook>,
    inner: Mutex<Inner>,
}

/// A name for the quarantine of `source` by `rule`, stable across replicas.
fn quarantine_name(rule: &str, source: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rule.bytes().chain([0]).chain(source.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("q-{:012x}", h & 0xffff_ffff_ffff)
}

impl Engine {
    pub fn new(
        state: Arc<State>,
        flows: Arc<FlowStore>,
        registry: Arc<Registry>,
        data_dir: PathBuf,
        protected: Vec<String>,
        max_active: usize,
        webhook: Option<webhook::Webhook>,
    ) -> Arc<Self> {
        let engine = Arc::new(Self {
            state,
            flows,
            registry,
            data_dir,
            protected,
            max_active,
            webhook,
            inner: Mutex::new(Inner::default()),
        });
        engine.load();
        engine
    }

    /// The quarantines persisted by an earlier run, those not expired.
    fn load(&self) {
        let path = self.data_dir.join(STORE_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let records: Vec<Record> = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "quarantines not restored: the file does not parse");
                return;
            }
        };
        let now = unix(SystemTime::now());
        if let Ok(mut inner) = self.inner.lock() {
            for r in records.into_iter().filter(|r| r.expires_at > now) {
                inner.active.insert(r.name.clone(), r);
            }
        }
        self.publish();
    }

    /// Writes the active quarantines and pushes them to the proxies.
    fn publish(&self) {
        let records: Vec<Record> = match self.inner.lock() {
            Ok(i) => i.active.values().cloned().collect(),
            Err(_) => return,
        };
        metrics::gauge!("mesh_quarantines_active").set(records.len() as f64);
        match serde_json::to_vec_pretty(&records) {
            Ok(bytes) => {
                if let Err(e) = mesh_identity::secret::write_public_atomic(
                    &self.data_dir.join(STORE_FILE),
                    &bytes,
                ) {
                    tracing::error!(error = %e, "quarantines not persisted");
                }
            }
            Err(e) => tracing::error!(error = %e, "quarantines not persisted"),
        }
        self.state
            .set_generated(records.iter().filter_map(Record::object).collect());
    }

    /// The quarantines in force.
    pub fn active(&self) -> Vec<Record> {
        self.inner
            .lock()
            .map(|i| i.active.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The latest events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .map(|i| i.events.clone())
            .unwrap_or_default()
    }

    /// The newSource rules seen so far and when each one's learning ends.
    pub fn learning(&self) -> BTreeMap<String, u64> {
        self.inner
            .lock()
            .map(|i| {
                i.learning_until
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lifts a quarantine now; false when there is none of that name.
    pub fn lift(&self, name: &str) -> bool {
        let lifted = self
            .inner
            .lock()
            .map(|mut i| i.active.remove(name))
            .ok()
            .flatten();
        match lifted {
            Some(r) => {
                tracing::warn!(quarantine = %r.name, rule = %r.rule, source = %r.source, "quarantine lifted");
                self.publish();
                true
            }
            None => false,
        }
    }

    /// Drops the quarantines that expired and takes the lift requests
    /// `meshctl quarantine lift` left in the data directory: every second.
    pub async fn maintain(self: Arc<Self>) {
        let dir = self.data_dir.join(LIFT_DIR);
        loop {
            let now = unix(SystemTime::now());
            let expired: Vec<String> = self
                .inner
                .lock()
                .map(|i| {
                    i.active
                        .values()
                        .filter(|r| r.expires_at <= now)
                        .map(|r| r.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            for name in expired {
                tracing::warn!(quarantine = %name, "quarantine expired");
                self.lift(&name);
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !self.lift(&name) {
                        tracing::warn!(quarantine = %name, "lift requested for no active quarantine");
                    }
                    let _ = std::fs::remove_file(e.path());
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The labels of the workloads registered with `identity`.
    fn labels_of(&self, identity: &str) -> Vec<Labels> {
        let mut out: Vec<Labels> = self
            .registry
            .mesh()
            .into_iter()
            .filter(|w| w.identity == identity)
            .map(|w| w.labels)
            .collect();
        out.extend(
            self.state
                .current()
                .workloads
                .iter()
                .filter(|w| w.identity == identity)
                .map(|w| w.labels.clone()),
        );
        out
    }

    /// Checks the rules against one report of `destination`.
    pub fn on_report(&self, destination: &str, touched: &[FlowKey], now: u64) {
        let Some(ns) = mesh_identity::SpiffeId::parse(destination)
            .ok()
            .and_then(|i| i.namespace().map(str::to_owned))
        else {
            return;
        };
        let ns = ns.as_str();
        let snapshot = self.state.current().snapshot.clone();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        let rules: Vec<&AnomalyRule> = snapshot
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::AnomalyRule(r) if r.metadata.namespace_or_default() == ns => Some(r),
                _ => None,
            })
            .filter(|r| {
                r.metadata
                    .annotations
                    .get(mesh_policy::resource::ANNOTATION_EXPIRES_AT)
                    .and_then(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .is_none_or(|t| SystemTime::from(t) > at)
            })
            .collect();
        if rules.is_empty() {
            return;
        }
        let labels = self.labels_of(destination);
        for rule in rules {
            let wanted = rule
                .spec
                .selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref());
            let selected = wanted.is_none_or(|w| {
                labels
                    .iter()
                    .any(|l| w.iter().all(|(k, v)| l.get(k) == Some(v)))
            });
            if !selected {
                continue;
            }
            let Ok(trigger) = mesh_policy::trigger_of(rule) else {
                continue;
            };
            let rule_ref = format!("AnomalyRule {ns}/{}", rule.metadata.name);
            for key in touched.iter().filter(|k| &*k.destination == destination) {
                if let Some(evidence) = self.fires(&trigger, &rule_ref, key, now) {
                    self.fire(rule, &rule_ref, key, evidence, now);
                }
            }
        }
    }

    /// Whether `trigger` fires for `key` now: the evidence if it does.
    fn fires(&self, trigger: &Trigger, rule: &str, key: &FlowKey, now: u64) -> Option<String> {
        match trigger {
            Trigger::DenySpike { count, window } => {
                if key.decision != "deny" {
                    return None;
                }
                let secs = window.as_secs();
                let seen = self.flows.source_within(&key.source, "deny", now, secs);
                (seen >= *count).then(|| {
                    format!(
                        "{seen} denied calls in {secs}s (threshold {count}); latest to {}:{} ({})",
                        key.destination, key.port, key.policy
                    )
                })
            }
            Trigger::NewSource { learning_period } => {
                let until = {
                    let mut inner = self.inner.lock().ok()?;
                    *inner
                        .learning_until
                        .entry(rule.to_owned())
                        .or_insert(now + learning_period.as_secs())
                };
                if now < until {
                    return None;
                }
                // First seen in this report's second: never before.
                (!self.flows.seen_before(&key.source, &key.destination, now)).then(|| {
                    format!(
                        "first call ever seen from this source to {}:{} ({}, {})",
                        key.destination, key.port, key.decision, key.policy
                    )
                })
            }
        }
    }

    fn fire(&self, rule: &AnomalyRule, rule_ref: &str, key: &FlowKey, evidence: String, now: u64) {
        let source = key.source.to_string();
        {
            let Ok(mut inner) = self.inner.lock() else {
                return;
            };
            let k = (rule_ref.to_owned(), source.clone());
            if inner
                .fired
                .get(&k)
                .is_some_and(|t| now < t + REFIRE_AFTER.as_secs())
            {
                return;
            }
            inner.fired.insert(k, now);
            if inner.fired.len() > 10_000 {
                inner.fired.retain(|_, t| now < *t + REFIRE_AFTER.as_secs());
            }
        }
        let dry_run = rule
            .metadata
            .annotations
            .get(mesh_policy::resource::ANNOTATION_DRY_RUN)
            .is_some_and(|v| v == "true");
        let mut event = Event {
            ts: now,
            rule: rule_ref.to_owned(),
            action: "alert",
            source: source.clone(),
            destination: key.destination.to_string(),
            evidence: evidence.clone(),
            quarantine: None,
            refused: None,
        };
        if rule.spec.action == AnomalyAction::Quarantine
            && let Some(plan) = &rule.spec.quarantine
        {
            let name = quarantine_name(rule_ref, &source);
            let refusal = self.refusal(&source, plan.scope);
            match (dry_run, refusal) {
                (true, _) => event.action = "dry_run_quarantine",
                (false, Some(why)) => {
                    event.action = "refused";
                    event.refused = Some(why);
                }
                (false, None) => {
                    let duration =
                        mesh_policy::quarantine_duration(rule).unwrap_or(Duration::from_secs(600));
                    let ns = rule.metadata.namespace_or_default().to_owned();
                    let record = Record {
                        name: name.clone(),
                        namespace: match plan.scope {
                            QuarantineScope::Source => {
                                mesh_policy::resource::ROOT_NAMESPACE.to_owned()
                            }
                            QuarantineScope::Segment => ns,
                        },
                        rule: rule_ref.to_owned(),
                        scope: plan.scope,
                        source: source.clone(),
                        selector: rule
                            .spec
                            .selector
                            .as_ref()
                            .and_then(|s| s.match_labels.clone()),
                        // The protected identities (the control plane,
                        // the ingress) keep reaching a cut-off segment.
                        except: plan
                            .except
                            .iter()
                            .cloned()
                            .chain(
                                self.protected
                                    .iter()
                                    .filter_map(|p| p.strip_prefix("spiffe://").map(str::to_owned)),
                            )
                            .collect(),
                        evidence: evidence.clone(),
                        created_at: now,
                        expires_at: now + duration.as_secs(),
                    };
                    let added = self.inner.lock().map(|mut i| {
                        if i.active.len() >= self.max_active && !i.active.contains_key(&name) {
                            false
                        } else {
                            i.active.insert(name.clone(), record);
                            true
                        }
                    });
                    if added.unwrap_or(false) {
                        event.action = "quarantine";
                        event.quarantine = Some(name);
                        self.publish();
                    } else {
                        event.action = "refused";
                        event.refused = Some(format!(
                            "{} quarantines are active (--max-quarantines)",
                            self.max_active
                        ));
                    }
                }
            }
        }
        metrics::counter!("mesh_anomaly_events_total", "rule" => rule_ref.to_owned(), "action" => event.action).increment(1);
        let line = serde_json::to_string(&event).unwrap_or_default();
        tracing::warn!(target: "anomaly", event = %line, "anomaly rule fired");
        if let Some(w) = &self.webhook {
            w.send(line.clone());
        }
        if let Ok(mut inner) = self.inner.lock() {
            inner.events.push(event);
            if inner.events.len() > MAX_EVENTS {
                let extra = inner.events.len() - MAX_EVENTS;
                inner.events.drain(..extra);
            }
        }
    }

    /// Why `source` may not be quarantined, if it may not.
    fn refusal(&self, source: &str, scope: QuarantineScope) -> Option<String> {
        if scope == QuarantineScope::Segment {
            return None;
        }
        if !source.starts_with("spiffe://") {
            return Some("a plaintext source is an address, not an identity".into());
        }
        if self.protected.iter().any(|p| p == source) {
            return Some(format!("{source} is protected"));
        }
        None
    }
}
