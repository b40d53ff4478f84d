//! What a running lab is made of, in `<state-dir>/<name>/state.json`:
//! written as `lab up` goes, so `lab status`, `lab down` and a crash
//! recovery know the processes and addresses.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LabError;

/// Where labs keep their state by default: /run is a tmpfs, so a reboot
/// (which also ends every namespace) forgets stale labs too.
pub const DEFAULT_STATE_DIR: &str = "/run/palisade-lab";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// The lab description's folder.
    pub source: PathBuf,
    pub network: String,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    pub trust_domain: String,
    pub control_plane: Option<ControlPlane>,
    pub pods: Vec<Pod>,
    /// Unix seconds.
    pub started_at: u64,
    /// Seconds `lab up` took until every pod was ready.
    pub up_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlPlane {
    pub pid: u32,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub veth: String,
    pub sidecar: bool,
    /// The proxy's admin (`/ready`, `/certs`, `/metrics`), reachable from
    /// the root namespace.
    pub admin: Option<SocketAddr>,
    pub proxy_pid: Option<u32>,
    /// `mesh-proxy run`'s arguments, to start it again (`lab start`).
    pub proxy_args: Vec<String>,
    pub app_uid: u32,
    pub apps: Vec<String>,
    pub app_env: Vec<(String, String)>,
    pub app_pids: Vec<u32>,
    pub ports: Vec<u16>,
}

/// A lab's files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path, name: &str) -> Self {
        Self {
            root: state_dir.join(name),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The control plane's `--config-dir`: a copy of the lab's YAML, which
    /// can be edited while the lab runs.
    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }
    /// Copies of the mesh binaries, executable by the proxy and app UIDs.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn trust_bundle(&self) -> PathBuf {
        self.data().join("trust-bundle.pem")
    }
    pub fn pod(&self, pod: &str) -> PathBuf {
        self.root.join("pods").join(pod)
    }
    pub fn control_plane_log(&self) -> PathBuf {
        self.root.join("control-plane.log")
    }
    pub fn proxy_log(&self, pod: &str) -> PathBuf {
        self.pod(pod).join("proxy.log")
    }
    /// The ingress's own access log (edge traffic, one JSON line each).
    pub fn edge_log(&self, pod: &str) -> PathBuf {
        self.pod(pod).join("edge-access.log")
    }
    pub fn app_log(&self, pod: &str) -> PathBuf {
        self.pod(pod).join("app.log")
    }
    pub fn token(&self, pod: &str) -> PathBuf {
        self.pod(pod).join("token")
    }
}

impl State {
    pub fn load(paths: &Paths) -> Result<Option<State>, LabError> {
        let file = paths.state();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LabError::Io {
                    what: format!("cannot read {}", file.display()),
                    error: e,
                });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LabError::State {
                file,
                message: e.to_string(),
            })
    }

    /// Writes atomically (temp file, rename): a crash leaves the old or the
    /// new state, never half of one.
    pub fn save(&self, paths: &Paths) -> Result<(), LabError> {
        let file = paths.state();
        let tmp = paths.root.join(".state.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::State {
            file: file.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| LabError::Io {
                what: format!("cannot write {}", file.display()),
                error: e,
            })
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }
}
