//! The proxy's admin endpoint: `/live`, `/ready`, `/metrics`, `/certs`,
//! `/policy`, `/routes` (routes, rate limits and the endpoints requests
//! went to, with their latency and health), `/egress` (where the workload
//! went outside the mesh, by host, port, decision and policy), and the app's probes at
//! `/app-health/...` (`app_health.rs`).

use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;
use mesh_admin::{Reply, Routes};
use mesh_identity::Store;
use mesh_identity::bundle::der_to_pem;
use metrics_exporter_prometheus::PrometheusHandle;

pub struct Admin {
    pub store: Arc<Store>,
    pub policy: crate::policy::PolicyRx,
    pub discovery: crate::discovery::DiscoveryRx,
    pub metrics: PrometheusHandle,
    pub balancer: Arc<crate::http::balance::Balancer>,
    /// The app's probes, answered at `/app-health/...`.
    pub app_probes: Arc<crate::app_health::AppProbes>,
    /// Where the workload went outside the mesh.
    pub egress: Arc<crate::outbound::egress::Destinations>,
    pub local: Arc<crate::policy::LocalWorkload>,
}

impl Routes for Admin {
    fn get(&self, path: &str) -> Reply {
        match path {
            "/live" => Reply::text(StatusCode::OK, "live\n"),
            "/ready" => {
                if !crate::control::has_valid_certificate(&self.store) {
                    Reply::text(StatusCode::SERVICE_UNAVAILABLE, "no valid certificate\n")
                } else if self.policy.borrow().is_none() {
                    Reply::text(StatusCode::SERVICE_UNAVAILABLE, "no policy yet\n")
                } else if self.discovery.borrow().version == 0 {
                    Reply::text(StatusCode::SERVICE_UNAVAILABLE, "no discovery data yet\n")
                } else {
                    Reply::text(StatusCode::OK, "ready\n")
                }
            }
            "/policy" => self.policy(),
            "/metrics" => Reply {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4",
                body: self.metrics.render(),
            },
            "/certs" => self.certs(),
            "/routes" => self.routes(),
            "/egress" => Reply::json(StatusCode::OK, &self.egress.to_json(&self.local)),
            _ => Reply::not_found(),
        }
    }

    fn get_async(&self, path: &str) -> Option<mesh_admin::PendingReply> {
        let probes = &self.app_probes;
        (path.starts_with(crate::app_health::PATH_PREFIX) && probes.handles(path))
            .then(|| Box::pin(probes.clone().check(path.to_owned())) as mesh_admin::PendingReply)
    }
}

impl Admin {
    /// The policy snapshot in force and its version.
    fn policy(&self) -> Reply {
        let Some(view) = self.policy.borrow().clone() else {
            return Reply::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "no policy yet"}),
            );
        };
        let snapshot: serde_json::Value =
            serde_json::from_str(&view.snapshot.to_json()).unwrap_or(serde_json::Value::Null);
        Reply::json(
            StatusCode::OK,
            &serde_json::json!({
                "version": view.version,
                "received_at": rfc3339(view.received_at),
                "next_expiry": view.next_expiry.map(rfc3339),
                "snapshot": snapshot,
            }),
        )
    }

    /// The HTTPRoutes, GRPCRoutes and RateLimitPolicies of the snapshot in
    /// force, as sent, and the endpoints this proxy's requests went to:
    /// `{"version", "routes": [...], "grpc_routes": [...], "rate_limits": [...], "endpoints":
    /// [{"address", "rtt_ms", "in_flight", "state", "ejected_for_ms"}]}`.
    fn routes(&self) -> Reply {
        let view = self.policy.borrow().clone();
        let objects: Vec<serde_json::Value> = view
            .as_ref()
            .and_then(|v| serde_json::from_str::<serde_json::Value>(&v.snapshot.to_json()).ok())
            .and_then(|s| s.get("objects").and_then(|o| o.as_array()).cloned())
            .unwrap_or_default();
        let of_kind = |kind: &str| -> Vec<serde_json::Value> {
            objects
                .iter()
                .filter(|o| o.get("kind").and_then(|k| k.as_str()) == Some(kind))
                .cloned()
                .collect()
        };
        let endpoints: Vec<serde_json::Value> = self
            .balancer
            .endpoints()
            .into_iter()
            .map(|e| {
                serde_json::json!({
                    "address": e.address.to_string(),
                    "rtt_ms": (e.rtt.as_secs_f64() * 1e4).round() / 10.0,
                    "in_flight": e.in_flight,
                    "state": e.state,
                    "ejected_for_ms": e.ejected_for.map(|d| d.as_millis() as u64),
                })
            })
            .collect();
        Reply::json(
            StatusCode::OK,
            &serde_json::json!({
                "version": view.as_ref().map(|v| v.version),
                "routes": of_kind("HTTPRoute"),
                "grpc_routes": of_kind("GRPCRoute"),
                "rate_limits": of_kind("RateLimitPolicy"),
                "endpoints": endpoints,
            }),
        )
    }

    /// The certificate in force and the trust bundle: public material only.
    fn certs(&self) -> Reply {
        let Some(c) = self.store.current() else {
            return Reply::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": "no certificate yet"}),
            );
        };
        let mut chain = vec![der_to_pem(&c.leaf)];
        chain.extend(c.intermediates.iter().map(|i| der_to_pem(i)));
        let bundle: Vec<String> = self
            .store
            .current_bundle()
            .roots()
            .iter()
            .map(|r| der_to_pem(r))
            .collect();
        Reply::json(
            StatusCode::OK,
            &serde_json::json!({
                "identity": c.identity.as_str(),
                "serial": c.serial,
                "not_before": rfc3339(c.not_before),
                "not_after": rfc3339(c.not_after),
                "chain": chain,
                "trust_bundle": bundle,
            }),
        )
    }
}

/// RFC 3339 in UTC, second precision.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_584_204_900);
        assert_eq!(rfc3339(t), "2026-11-25T05:23:24Z");
    }
}
