//! The admin endpoint: `/live`, `/ready`, `/metrics` and `/status`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use mesh_admin::{Reply, Routes};
use mesh_identity::Store;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::registry::Registry;
use crate::state::State;

/// What the admin endpoint reports on.
pub struct Status {
    pub state: Arc<State>,
    pub registry: Arc<Registry>,
    pub flows: Arc<crate::flows::FlowStore>,
    pub anomalies: Arc<crate::anomaly::Engine>,
    pub metrics: PrometheusHandle,
    pub store: Arc<Store>,
    pub ca: Arc<crate::ca::LiveCa>,
    pub cert_ttl: Duration,
    pub max_cert_ttl: Duration,
}

impl Routes for Status {
    fn get(&self, path: &str) -> Reply {
        match path {
            "/live" => Reply::text(StatusCode::OK, "live\n"),
            "/ready" => match self.store.current() {
                Some(c) if c.is_valid_at(SystemTime::now()) => {
                    Reply::text(StatusCode::OK, "ready\n")
                }
                _ => Reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no valid serving certificate\n",
                ),
            },
            "/metrics" => Reply {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4",
                body: self.metrics.render(),
            },
            "/status" => {
                let cert = self.store.current();
                Reply::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "trust_domain": self.state.trust_domain(),
                        "identity": self.store.identity().as_str(),
                        "serving_certificate": cert.as_ref().map(|c| serde_json::json!({
                            "serial": c.serial,
                            "not_after": unix(c.not_after),
                        })),
                        "issuer_not_after": unix(self.ca.current().issuer_not_after()),
                        "trust_bundle_roots": self.ca.current().bundle().len(),
                        "ca_generation": self.ca.current().generation(),
                        "cert_ttl_seconds": self.cert_ttl.as_secs(),
                        "max_cert_ttl_seconds": self.max_cert_ttl.as_secs(),
                        "policy": policy_status(&self.state, &self.registry),
                    }),
                )
            }
            // The CA: roots, issuer, rotation phase, who holds which generation.
            "/ca" => {
                let mut doc = self.ca.status();
                if let Some(obj) = doc.as_object_mut() {
                    obj.insert(
                        "serving_generation".into(),
                        serde_json::json!(self.store.generation()),
                    );
                }
                Reply::json(StatusCode::OK, &doc)
            }
            // The live flow map: one page, its script inline, no CDN.
            "/map" => Reply {
                status: StatusCode::OK,
                content_type: "text/html; charset=utf-8",
                body: include_str!("map.html").to_owned(),
            },
            "/quarantines" => Reply::json(
                StatusCode::OK,
                &serde_json::json!({
                    "quarantines": self.anomalies.active(),
                    "events": self.anomalies.events(),
                    "learning_until": self.anomalies.learning(),
                    "now": crate::flows::unix_now(),
                }),
            ),
            "/flows" => {
                let workloads = self.registry.mesh();
                let names = |identity: &str| {
                    let of: Vec<_> = workloads
                        .iter()
                        .filter(|w| w.identity == identity)
                        .collect();
                    let mut n: Vec<String> = of
                        .iter()
                        .filter(|w| !w.workload.is_empty())
                        .map(|w| format!("{}/{}", w.namespace, w.workload))
                        .collect();
                    n.sort();
                    n.dedup();
                    (n, of.first().map(|w| w.labels.clone()))
                };
                Reply::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "flows": self.flows.view(crate::flows::unix_now(), names),
                        "overflow": self.flows.overflow(),
                    }),
                )
            }
            _ => Reply::not_found(),
        }
    }
}

/// The `policy` part of `/status`.
pub fn policy_status(state: &State, registry: &Registry) -> serde_json::Value {
    let st = state.current();
    serde_json::json!({
        "version": st.version,
        "objects": st.snapshot.objects.iter().map(|o| o.object_ref().to_string()).collect::<Vec<_>>(),
        "error": st.error,
        "warnings": st.warnings,
        "loaded_at": st.loaded_at.map(unix),
        "connected_proxies": registry.workloads(),
        // Local mode: connected to the other replicas sharing the data directory.
        "peer_proxies": registry.peers(),
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
