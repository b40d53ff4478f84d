//! The configuration in force: the last view from the source that compiled,
//! its version, and why the latest one was refused, if it was.

use std::sync::Arc;
use std::time::SystemTime;

use mesh_policy::resource::{Service, TlsSecret};
use mesh_policy::{Evaluator, Snapshot};
use tokio::sync::watch;

use crate::registry::Workload;
use crate::source::{Config, Endpoints, Update};

/// The configuration in force.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    /// Derived from what the configuration holds: every replica reading
    /// the same source publishes the same version, and a change of content
    /// changes it (0: nothing loaded yet).
    pub version: u64,
    pub snapshot: Arc<Snapshot>,
    /// Services from the same source (discovery).
    pub services: Arc<Vec<Service>>,
    /// Workloads the source knows (not the ones that registered).
    pub workloads: Arc<Vec<Workload>>,
    /// Where the Services' endpoints come from.
    pub endpoints: Arc<Endpoints>,
    /// TLS Secrets, for the ingress only.
    pub secrets: Arc<Vec<TlsSecret>>,
    /// Why the latest load failed (the last good snapshot stays in force).
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub loaded_at: Option<SystemTime>,
}

/// Follows a source and publishes the [`PolicyState`] in force.
pub struct State {
    tx: watch::Sender<Arc<PolicyState>>,
    trust_domain: String,
    /// The source's last good configuration, and the objects the control
    /// plane adds to it (quarantines): what is published is both.
    last: std::sync::Mutex<Option<Config>>,
    generated: std::sync::Mutex<Vec<mesh_policy::resource::Object>>,
}

impl State {
    pub fn new(trust_domain: &str) -> Arc<Self> {
        Arc::new(Self {
            tx: watch::channel(Arc::new(PolicyState::default())).0,
            trust_domain: trust_domain.to_owned(),
            last: std::sync::Mutex::new(None),
            generated: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn current(&self) -> Arc<PolicyState> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<PolicyState>> {
        self.tx.subscribe()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Applies the source's current view now, then follows it in a task:
    /// when this returns, the first view is in force (or its error recorded).
    pub fn start(self: &Arc<Self>, mut updates: watch::Receiver<Update>) {
        let first = updates.borrow_and_update().clone();
        self.apply(&first);
        let state = self.clone();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let update = updates.borrow_and_update().clone();
                let s = state.clone();
                // Compiling a large configuration is CPU work; keep it off
                // the threads that serve proxies.
                let _ = tokio::task::spawn_blocking(move || s.apply(&update)).await;
            }
        });
    }

    /// Puts `update` in force, or records why it cannot be.
    pub fn apply(&self, update: &Update) {
        let checked = match update {
            // Compiled here too, so a snapshot no proxy could use is refused
            // at the source, with the file/object/field named.
            Update::Loaded(config) => Evaluator::compile(&config.snapshot, &self.trust_domain)
                .map(|_| config.clone())
                .map_err(|e| e.to_string()),
            Update::Failed(message) => Err(message.clone()),
        };
        match checked {
            Ok(config) => self.publish(&config),
            Err(message) => {
                tracing::error!(error = %message, "policy not loaded; the last good policy stays in force");
                metrics::counter!("mesh_policy_reloads_total", "result" => "error").increment(1);
                metrics::gauge!("mesh_policy_config_valid").set(0.0);
                self.tx.send_modify(|s| {
                    let mut next = (**s).clone();
                    next.error = Some(message);
                    *s = Arc::new(next);
                });
            }
        }
    }

    /// Replaces the objects the control plane adds to the source's (the
    /// quarantines in force) and publishes the result at once.
    pub fn set_generated(&self, objects: Vec<mesh_policy::resource::Object>) {
        if let Ok(mut g) = self.generated.lock() {
            *g = objects;
        }
        let last = self.last.lock().ok().and_then(|l| l.clone());
        if let Some(config) = last {
            self.publish(&config);
        }
    }

    fn publish(&self, source: &Config) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(source.clone());
        }
        let mut merged = source.clone();
        if let Ok(g) = self.generated.lock() {
            merged.snapshot.objects.extend(g.iter().cloned());
        }
        let config = &merged;
        let version = version_of(config);
        for w in &config.warnings {
            tracing::warn!(warning = %w, "policy object ignored");
        }
        tracing::info!(
            version,
            objects = config.snapshot.objects.len(),
            "policy loaded"
        );
        metrics::counter!("mesh_policy_reloads_total", "result" => "success").increment(1);
        metrics::gauge!("mesh_policy_config_valid").set(1.0);
        metrics::gauge!("mesh_policy_version").set(version as f64);
        self.tx.send_replace(Arc::new(PolicyState {
            version,
            snapshot: Arc::new(config.snapshot.clone()),
            services: Arc::new(config.services.clone()),
            workloads: Arc::new(config.workloads.clone()),
            endpoints: Arc::new(config.endpoints.clone()),
            secrets: Arc::new(config.secrets.clone()),
            error: None,
            warnings: config.warnings.clone(),
            loaded_at: Some(SystemTime::now()),
        }));
    }
}

/// The version of a configuration: an FNV-1a hash of its policy objects,
/// Services, workloads, listed endpoints and TLS Secrets as they are pushed, cut to 53 bits so that the
/// `mesh_policy_version` gauge shows it exactly; never 0.
pub fn version_of(config: &Config) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        config.snapshot.to_json(),
        serde_json::to_string(&config.services).unwrap_or_default(),
        serde_json::to_string(&config.workloads).unwrap_or_default(),
        serde_json::to_string(&config.endpoints).unwrap_or_default(),
        config
            .secrets
            .iter()
            .map(|s| format!("{}/{}\n{}\n{}", s.namespace, s.name, s.cert_pem, s.key_pem))
            .collect::<Vec<_>>()
            .join("\n"),
    ];
    for part in &parts {
        for b in part.bytes().chain([0]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (hash & ((1 << 53) - 1)).max(1)
}

#[cfg(test)]
mod tests;
