//! App HTTP probes under STRICT mTLS. The kubelet probes in plaintext from
//! the node; the pod's inbound redirection would hand those probes to the
//! proxy, which refuses plaintext. As Istio does, each `httpGet` probe of an
//! app container is rewritten to the proxy's admin port at
//! `/app-health/<container>/<livez|readyz|startupz>`, and the proxy is told
//! (in `MESH_APP_PROBES`) where the app really answers: it makes the probe
//! request to the app over loopback, which is never redirected. The
//! original probe is kept there whole, so `uninject` restores it exactly.
//! `tcpSocket`, `grpc` and `exec` probes are left as they are.

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::sidecar::ADMIN_PORT;

/// The proxy's environment variable listing the rewritten probes (JSON).
pub const APP_PROBES_ENV: &str = "MESH_APP_PROBES";
pub const PATH_PREFIX: &str = "/app-health/";

/// Which of a container's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "livenessProbe")]
    Liveness,
    #[serde(rename = "readinessProbe")]
    Readiness,
    #[serde(rename = "startupProbe")]
    Startup,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Liveness, Kind::Readiness, Kind::Startup];

    /// The field name in a Container.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Liveness => "livenessProbe",
            Kind::Readiness => "readinessProbe",
            Kind::Startup => "startupProbe",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Kind::Liveness => "livez",
            Kind::Readiness => "readyz",
            Kind::Startup => "startupz",
        }
    }

    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
            Kind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// One rewritten probe, as the proxy reads it from `MESH_APP_PROBES`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppProbe {
    /// The admin path the kubelet now asks.
    pub path: String,
    pub container: String,
    pub kind: Kind,
    /// The app's port, resolved when the probe named it.
    pub port: i32,
    /// The probe's `httpGet` as the user wrote it.
    pub original: HTTPGetAction,
}

impl AppProbe {
    /// The `httpGet` the kubelet is given instead.
    pub fn rewritten(&self) -> HTTPGetAction {
        HTTPGetAction {
            path: Some(self.path.clone()),
            port: IntOrString::Int(ADMIN_PORT),
            scheme: Some("HTTP".to_owned()),
            ..Default::default()
        }
    }
}

/// The app containers' HTTP probes to rewrite, with their container index.
pub fn plan(containers: &[Container]) -> Vec<(usize, AppProbe)> {
    let mut out = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        for kind in Kind::ALL {
            let Some(get) = kind.of(c).and_then(|p| p.http_get.as_ref()) else {
                continue;
            };
            // A probe on a port the container does not declare cannot be
            // resolved; it is left alone (and fails as it would unmeshed).
            let Some(port) = resolve(c, &get.port) else {
                continue;
            };
            out.push((
                i,
                AppProbe {
                    path: format!("{PATH_PREFIX}{}/{}", c.name, kind.suffix()),
                    container: c.name.clone(),
                    kind,
                    port,
                    original: get.clone(),
                },
            ));
        }
    }
    out
}

fn resolve(c: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(p) => Some(*p),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

/// The proxy's `MESH_APP_PROBES` value, or none without probes.
pub fn env_value(probes: &[AppProbe]) -> Option<String> {
    // Plain data (strings, integers, maps) always serializes.
    (!probes.is_empty()).then(|| serde_json::to_string(probes).unwrap_or_default())
}
