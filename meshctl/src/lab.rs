//! `meshctl lab`: a local mesh of "pods" made of Linux network namespaces on
//! one machine. Each pod gets its own namespace with a veth into a bridge,
//! the redirection from `mesh-proxy init`, a `mesh-proxy run` as UID 2102
//! and the app as another UID, so the app's traffic is meshed without the
//! app knowing. The control plane runs in the root namespace on the
//! bridge's address. `lab down` finds everything by name, so it also cleans
//! up after a crash. See docs/lab.md.

pub mod cli;
mod down;
pub mod edge_cert;
pub mod http;
pub mod net;
mod pod;
mod preflight;
pub mod process;
pub mod spec;
pub mod state;
pub mod status;
mod up;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use net::Names;
use spec::{Lab, PodSpec};
use state::{Paths, State};

pub use down::{Down, down};
use down::{down_named, stop_all};
pub use pod::{start_pod, stop_pod};
use preflight::*;
use up::*;
pub use up::{Up, listening_ports, parse_listening, up};

/// The proxy's UID (DESIGN.md): `mesh-proxy init` exempts its traffic.
pub const PROXY_UID: u32 = 2102;
/// Control plane gRPC, on the bridge's address.
pub const CONTROL_PLANE_PORT: u16 = 8443;
/// Proxy ports (DESIGN.md).
pub const PROXY_INBOUND_PORT: u16 = 4143;
pub const PROXY_OUTBOUND_PORT: u16 = 4140;
pub const PROXY_ADMIN_PORT: u16 = 4191;
/// `lab up` gives up when the pods are not ready within this; the issue's
/// target is well under it on a fresh machine.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Join tokens the lab issues: a lab runs for a session, not for weeks;
/// the proxies re-read them at every renewal.
const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Lab certificates are short-lived, so renewal is visible in `lab status`.
const DEFAULT_CERT_TTL: &str = "1h";
/// A lab proxy stops within a second: `lab down` and `lab stop` should not
/// wait for long-lived test connections.
const PROXY_DRAIN_TIMEOUT: &str = "1s";
const POLL: Duration = Duration::from_millis(25);

/// Why a lab command failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{}: {message}", file.display())]
    Spec { file: PathBuf, message: String },
    #[error("meshctl lab needs root (network namespaces, veths, iptables): run it with sudo")]
    NotRoot,
    #[error("{tool} not found: run scripts/setup.sh (installs {package})")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{binary} not found in {}: build the binaries (cargo build --bins) or pass --bin-dir", dir.display())]
    MissingBinary { binary: &'static str, dir: PathBuf },
    #[error("{command}: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("{}: {message}", file.display())]
    State { file: PathBuf, message: String },
    #[error(
        "the lab network {network} overlaps `{by}` on this host; pick another `network:` in lab.yaml (or run meshctl lab down if it is an old lab)"
    )]
    NetworkInUse { network: String, by: String },
    #[error("lab {name} is already up ({what}); run meshctl lab down --name {name} first")]
    AlreadyUp { name: String, what: String },
    #[error("lab {name} is not up (no state in {})", dir.display())]
    NotUp { name: String, dir: PathBuf },
    #[error("lab {lab} has no pod {pod}")]
    NoPod { lab: String, pod: String },
    #[error("{what} within {timeout:?}; last lines of {}:\n{tail}", log.display())]
    NotReady {
        what: String,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("{what}; last lines of {}:\n{tail}", log.display())]
    Exited {
        what: String,
        log: PathBuf,
        tail: String,
    },
    #[error("cannot issue a join token for {pod}: {message}")]
    Token { pod: String, message: String },
}

/// Settings shared by the lab commands.
#[derive(Debug, Clone)]
pub struct Options {
    /// Lab name; `None`: lab.yaml's, else `pal`.
    pub name: Option<String>,
    /// Parent of every lab's state folder.
    pub state_dir: PathBuf,
    /// Where mesh-control-plane, mesh-proxy and the demo apps are; `None`:
    /// next to meshctl.
    pub bin_dir: Option<PathBuf>,
    pub timeout: Duration,
    /// Leave a lab that failed to come up in place, for a look at it.
    pub keep_on_failure: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            name: None,
            state_dir: PathBuf::from(state::DEFAULT_STATE_DIR),
            bin_dir: None,
            timeout: DEFAULT_READY_TIMEOUT,
            keep_on_failure: false,
        }
    }
}

/// The lab's name for `down`/`status`: `--name`, else DIR's lab.yaml, else
/// the default.
pub fn resolve_name(name: Option<&str>, dir: Option<&Path>) -> Result<String, LabError> {
    let name = match (name, dir) {
        (Some(n), _) => n.to_owned(),
        (None, Some(dir)) => {
            let file = dir.join(spec::LAB_FILE);
            let text = std::fs::read_to_string(&file).map_err(|e| LabError::Spec {
                file: file.clone(),
                message: format!("cannot read it: {e}"),
            })?;
            spec::parse(&text)
                .map_err(|message| LabError::Spec { file, message })?
                .name
                .unwrap_or_else(|| spec::DEFAULT_NAME.to_owned())
        }
        (None, None) => spec::DEFAULT_NAME.to_owned(),
    };
    spec::check_name(&name).map_err(|message| LabError::Spec {
        file: PathBuf::from("--name"),
        message,
    })?;
    Ok(name)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |error| LabError::Io { what, error }
}

/// Creates a folder (and its parents) with exactly `mode`: the umask must
/// not lock the proxies out.
fn make_dir(dir: &Path, mode: u32) -> Result<(), LabError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
        .map_err(io(format!("cannot create {}", dir.display())))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Loads a running lab's state.
pub fn load_state(name: &str, opts: &Options) -> Result<(State, Paths), LabError> {
    let paths = Paths::new(&opts.state_dir, name);
    match State::load(&paths)? {
        Some(s) => Ok((s, paths)),
        None => Err(LabError::NotUp {
            name: name.to_owned(),
            dir: paths.root.clone(),
        }),
    }
}
