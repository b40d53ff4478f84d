//! `meshctl lab`: a local mesh of "pods" made of Linux network namespaces on
//! one machine. Each pod gets its own namespace with a veth into a bridge,
//! the redirection from `mesh-proxy init`, a `mesh-proxy run` as UID 2102
//! and the app as another UID, so the app's traffic is meshed without the
//! app knowing. The control plane runs in the root namespace on the
//! bridge's address. `lab down` finds everything by name, so it also cleans
//! up after a crash. See docs/lab.md.

pub mod cli;
pub mod http;
pub mod net;
pub mod process;
pub mod spec;
pub mod state;
pub mod status;

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

fn require_root() -> Result<(), LabError> {
    // SAFETY: geteuid cannot fail and has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    Ok(())
}

fn require_tool(tool: &'static str, package: &'static str) -> Result<(), LabError> {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if found {
        Ok(())
    } else {
        Err(LabError::MissingTool { tool, package })
    }
}

/// The mesh binaries: `--bin-dir`, else meshctl's own folder (cargo puts
/// every workspace binary in one target folder).
fn bin_dir(opts: &Options) -> Result<PathBuf, LabError> {
    let dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    for binary in ["mesh-control-plane", "mesh-proxy"] {
        if !dir.join(binary).is_file() {
            return Err(LabError::MissingBinary {
                binary,
                dir: dir.clone(),
            });
        }
    }
    // Absolute, because processes start in other folders and namespaces.
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |error| LabError::Io { what, error }
}

/// What `lab up` built.
#[derive(Debug)]
pub struct Up {
    pub state: State,
    pub paths: Paths,
    pub elapsed: Duration,
}

/// Builds the lab described in `dir` and returns once every pod is ready.
/// On failure, whatever was built is removed again (unless
/// `keep_on_failure`).
pub fn up(dir: &Path, opts: &Options) -> Result<Up, LabError> {
    let started = Instant::now();
    require_root()?;
    let lab = spec::load(dir, opts.name.as_deref())?;
    require_tool("ip", "iproute2")?;
    require_tool("iptables", "iptables")?;
    require_tool("setpriv", "util-linux")?;
    let bins = bin_dir(opts)?;
    let names = Names::new(&lab.name);
    let paths = Paths::new(&opts.state_dir, &lab.name);

    if paths.state().exists() {
        return Err(LabError::AlreadyUp {
            name: lab.name.clone(),
            what: format!("{} exists", paths.state().display()),
        });
    }
    if let Some(ns) = net::netns_with_prefix(&names.prefix())?.first() {
        return Err(LabError::AlreadyUp {
            name: lab.name.clone(),
            what: format!("network namespace {ns} exists"),
        });
    }
    if let Some(link) = net::links_with_prefix(&names.prefix())?.first() {
        return Err(LabError::AlreadyUp {
            name: lab.name.clone(),
            what: format!("link {link} exists"),
        });
    }
    net::check_free(&lab.spec.network)?;

    let mut builder = Builder {
        lab: &lab,
        names,
        paths: paths.clone(),
        bins,
        timeout: opts.timeout,
        started,
        children: Vec::new(),
        state: State {
            name: lab.name.clone(),
            source: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
            network: lab.spec.network.to_string(),
            gateway: lab.spec.network.gateway(),
            bridge: Names::new(&lab.name).bridge(),
            trust_domain: lab
                .spec
                .trust_domain
                .clone()
                .unwrap_or_else(|| mesh_identity::DEFAULT_TRUST_DOMAIN.to_owned()),
            control_plane: None,
            pods: Vec::new(),
            started_at: unix_now(),
            up_seconds: None,
        },
    };
    match builder.build() {
        Ok(()) => {
            let elapsed = started.elapsed();
            builder.state.up_seconds = Some(elapsed.as_secs_f64());
            builder.state.save(&paths)?;
            Ok(Up {
                state: builder.state,
                paths,
                elapsed,
            })
        }
        Err(e) => {
            if !opts.keep_on_failure {
                let _ = down_named(&lab.name, &opts.state_dir);
            }
            Err(e)
        }
    }
}

struct Builder<'a> {
    lab: &'a Lab,
    names: Names,
    paths: Paths,
    bins: PathBuf,
    timeout: Duration,
    started: Instant,
    /// Our children, to tell an early exit from a slow start (a dead child
    /// stays a zombie until we wait for it).
    children: Vec<Watched>,
    state: State,
}

impl Builder<'_> {
    fn build(&mut self) -> Result<(), LabError> {
        self.prepare_dirs()?;
        self.bins = stage_binaries(&self.bins, &self.paths.bin())?;
        self.state.save(&self.paths)?;
        self.network()?;
        self.control_plane()?;
        for i in 0..self.lab.spec.pods.len() {
            let pod = &self.lab.spec.pods[i];
            if pod.sidecar {
                self.issue_token(pod)?;
                self.init_redirection(pod)?;
                let child = start_proxy(&self.state.pods[i], &self.paths, &self.bins)?;
                self.state.pods[i].proxy_pid = Some(child.id());
                self.children.push(Watched::new(
                    format!("the proxy of {}", pod.name),
                    child,
                    self.paths.proxy_log(&pod.name),
                ));
            }
        }
        self.state.save(&self.paths)?;
        for i in 0..self.state.pods.len() {
            if self.state.pods[i].sidecar {
                let pod = self.state.pods[i].clone();
                self.wait_ready(&pod)?;
            }
        }
        // Apps start once their proxy serves, so their first connections
        // are meshed, not refused (Istio's holdApplicationUntilProxyStarts).
        for i in 0..self.state.pods.len() {
            let children = start_apps(&mut self.state.pods[i], &self.paths, &self.bins)?;
            let log = self.paths.app_log(&self.state.pods[i].name);
            for c in children {
                self.children.push(Watched::new(
                    format!("the app of {}", self.state.pods[i].name),
                    c,
                    log.clone(),
                ));
            }
        }
        self.state.save(&self.paths)?;
        for i in 0..self.state.pods.len() {
            let pod = self.state.pods[i].clone();
            self.wait_ports(&pod)?;
        }
        Ok(())
    }

    fn prepare_dirs(&self) -> Result<(), LabError> {
        let p = &self.paths;
        // The proxies (UID 2102) read their token and the trust bundle
        // under the lab's folder, so every folder on the way must let them
        // through, whatever the caller's umask.
        if let Some(parent) = p.root.parent()
            && !parent.exists()
        {
            make_dir(parent, 0o755)?;
        }
        make_dir(&p.root, 0o755)?;
        make_dir(&p.config(), 0o755)?;
        // They may pass through the data dir, not list it; the keys in it
        // are 0600.
        make_dir(&p.data(), 0o711)?;
        for f in &self.lab.config_files {
            let Some(name) = f.file_name() else { continue };
            std::fs::copy(f, p.config().join(name))
                .map_err(io(format!("cannot copy {}", f.display())))?;
        }
        Ok(())
    }

    fn network(&mut self) -> Result<(), LabError> {
        let net = self.lab.spec.network;
        net::create_bridge(&self.names, &net)?;
        for (i, pod) in self.lab.spec.pods.iter().enumerate() {
            net::create_pod(&self.names, i, &pod.name, pod.ip, &net)?;
            let etc = self.names.etc_dir(&pod.name);
            std::fs::create_dir_all(&etc)
                .map_err(io(format!("cannot create {}", etc.display())))?;
            std::fs::write(etc.join("hosts"), spec::hosts_file(self.lab, pod))
                .map_err(io(format!("cannot write {}/hosts", etc.display())))?;
            let dir = self.paths.pod(&pod.name);
            if let Some(pods) = dir.parent() {
                make_dir(pods, 0o755)?;
            }
            make_dir(&dir, 0o755)?;
            self.state.pods.push(self.pod_state(i, pod));
        }
        self.state.save(&self.paths)
    }

    fn pod_state(&self, index: usize, pod: &PodSpec) -> state::Pod {
        let admin = SocketAddr::from((pod.ip, PROXY_ADMIN_PORT));
        let labels: Vec<String> = pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let cp = SocketAddr::from((self.lab.spec.network.gateway(), CONTROL_PLANE_PORT));
        let proxy_args = [
            "run",
            "--control-plane",
            &cp.to_string(),
            "--trust-bundle",
            &self.paths.trust_bundle().display().to_string(),
            "--trust-domain",
            &self.state.trust_domain,
            "--namespace",
            &pod.namespace,
            "--service-account",
            &pod.service_account,
            "--workload",
            &pod.name,
            "--labels",
            &labels.join(","),
            "--token-file",
            &self.paths.token(&pod.name).display().to_string(),
            "--inbound",
            &format!("0.0.0.0:{PROXY_INBOUND_PORT}"),
            "--outbound",
            &format!("127.0.0.1:{PROXY_OUTBOUND_PORT}"),
            "--admin",
            &admin.to_string(),
            // Delivering to the pod's address (not 127.0.0.1) makes the
            // proxy know, and register, the pod's IP.
            "--app-addr",
            &pod.ip.to_string(),
            "--drain-timeout",
            PROXY_DRAIN_TIMEOUT,
        ]
        .map(String::from)
        .to_vec();
        let ns = self.names.netns(&pod.name);
        state::Pod {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            ip: pod.ip,
            netns: ns,
            veth: self.names.veth(index),
            sidecar: pod.sidecar,
            admin: pod.sidecar.then_some(admin),
            proxy_pid: None,
            proxy_args: if pod.sidecar { proxy_args } else { Vec::new() },
            app_uid: pod.app_uid,
            apps: pod.app.list(),
            app_env: vec![
                ("POD_NAME".into(), pod.name.clone()),
                ("POD_NAMESPACE".into(), pod.namespace.clone()),
                ("POD_IP".into(), pod.ip.to_string()),
                ("ECHO_NAME".into(), pod.name.clone()),
                ("LAB_NAME".into(), self.lab.name.clone()),
            ],
            app_pids: Vec::new(),
            ports: pod.ports.clone(),
        }
    }

    fn control_plane(&mut self) -> Result<(), LabError> {
        let listen = SocketAddr::from((self.lab.spec.network.gateway(), CONTROL_PLANE_PORT));
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let cert_ttl = self
            .lab
            .spec
            .control_plane
            .cert_ttl
            .clone()
            .unwrap_or_else(|| DEFAULT_CERT_TTL.to_owned());
        let log = self.paths.control_plane_log();
        let program = self.bins.join("mesh-control-plane");
        let child = process::spawn(process::Spawn {
            netns: None,
            uid: None,
            program: &program.display().to_string(),
            args: vec![
                "--data-dir".into(),
                self.paths.data().display().to_string(),
                "--config-dir".into(),
                self.paths.config().display().to_string(),
                "--listen".into(),
                listen.to_string(),
                "--admin".into(),
                admin.to_string(),
                "--trust-domain".into(),
                self.state.trust_domain.clone(),
                "--cert-ttl".into(),
                cert_ttl,
            ],
            env: vec![("RUST_LOG".into(), "info".into())],
            log: &log,
            bin_dir: &self.bins,
        })?;
        self.state.control_plane = Some(state::ControlPlane {
            pid: child.id(),
            listen,
            admin,
        });
        self.children
            .push(Watched::new("the control plane", child, log.clone()));
        self.state.save(&self.paths)?;
        self.wait("the control plane is not ready", &log, || {
            matches!(http::get(admin, "/ready"), Ok((200, _)))
        })
    }

    fn issue_token(&self, pod: &PodSpec) -> Result<(), LabError> {
        let created = crate::token::create(
            &self.paths.data(),
            &pod.namespace,
            &pod.service_account,
            TOKEN_TTL,
        )
        .map_err(|e| LabError::Token {
            pod: pod.name.clone(),
            message: format!("{e:#}"),
        })?;
        let file = self.paths.token(&pod.name);
        std::fs::write(&file, format!("{}\n", created.token))
            .map_err(io(format!("cannot write {}", file.display())))?;
        // Only the proxy may read its token.
        std::os::unix::fs::chown(&file, Some(PROXY_UID), Some(PROXY_UID))
            .and_then(|()| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)))
            .map_err(io(format!(
                "cannot hand {} to UID {PROXY_UID}",
                file.display()
            )))
    }

    fn init_redirection(&self, pod: &PodSpec) -> Result<(), LabError> {
        let ns = self.names.netns(&pod.name);
        let proxy = self.bins.join("mesh-proxy").display().to_string();
        let join = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        // The admin stays reachable from the root namespace (lab status).
        let mut skip_in = vec![PROXY_ADMIN_PORT];
        skip_in.extend(&pod.skip_inbound_ports);
        let args = [
            "netns",
            "exec",
            &ns,
            &proxy,
            "init",
            "--inbound-port",
            &PROXY_INBOUND_PORT.to_string(),
            "--outbound-port",
            &PROXY_OUTBOUND_PORT.to_string(),
            "--proxy-uid",
            &PROXY_UID.to_string(),
            "--skip-inbound-ports",
            &join(&skip_in),
            "--skip-outbound-ports",
            &join(&pod.skip_outbound_ports),
            "--skip-subnets",
            &pod.skip_subnets.join(","),
        ];
        net::ip(&args).map(|_| ())
    }

    fn wait_ready(&mut self, pod: &state::Pod) -> Result<(), LabError> {
        let Some(admin) = pod.admin else {
            return Ok(());
        };
        let log = self.paths.proxy_log(&pod.name);
        self.wait(
            &format!("the proxy of {} is not ready", pod.name),
            &log,
            || matches!(http::get(admin, "/ready"), Ok((200, _))),
        )
    }

    fn wait_ports(&mut self, pod: &state::Pod) -> Result<(), LabError> {
        if pod.ports.is_empty() {
            return Ok(());
        }
        let log = self.paths.app_log(&pod.name);
        let ports = pod.ports.clone();
        let ns = pod.netns.clone();
        self.wait(
            &format!(
                "the app of {} is not listening on {:?}",
                pod.name, pod.ports
            ),
            &log,
            || {
                let listening = listening_ports(&ns);
                ports.iter().all(|p| listening.contains(p))
            },
        )
    }

    fn wait(
        &mut self,
        what: &str,
        log: &Path,
        ready: impl FnMut() -> bool,
    ) -> Result<(), LabError> {
        wait_until(
            what,
            self.started,
            self.timeout,
            &mut self.children,
            log,
            ready,
        )
    }
}

/// One of our children, watched while we wait: a dead child stays a
/// zombie until waited for, so only `try_wait` tells an early exit from a
/// slow start.
struct Watched {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Watched {
    fn new(name: impl Into<String>, child: Child, log: PathBuf) -> Self {
        Self {
            name: name.into(),
            child,
            log,
        }
    }
}

/// Polls `ready` until `started + timeout`, failing at once when one of
/// `children` has exited (with its log's tail).
fn wait_until(
    what: &str,
    started: Instant,
    timeout: Duration,
    children: &mut [Watched],
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), LabError> {
    loop {
        if ready() {
            return Ok(());
        }
        for w in children.iter_mut() {
            if let Ok(Some(status)) = w.child.try_wait() {
                return Err(LabError::Exited {
                    what: format!("{} exited ({status})", w.name),
                    log: w.log.clone(),
                    tail: process::tail(&w.log, 20),
                });
            }
        }
        if started.elapsed() > timeout {
            return Err(LabError::NotReady {
                what: what.to_owned(),
                timeout,
                log: log.to_path_buf(),
                tail: process::tail(log, 20),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The mesh binaries the lab runs, copied into the lab's own folder (0755):
/// the proxies (UID 2102) and apps (another UID) must be able to execute
/// them, and the folder they were built in may be private to root (a
/// checkout under /root, a `mktemp -d` clone).
const LAB_BINARIES: [&str; 4] = ["mesh-control-plane", "mesh-proxy", "meshctl", "mesh-echo"];

fn stage_binaries(from: &Path, to: &Path) -> Result<PathBuf, LabError> {
    make_dir(to, 0o755)?;
    for name in LAB_BINARIES {
        let src = from.join(name);
        if !src.is_file() {
            // mesh-echo and meshctl are conveniences for apps; the lab
            // checked the ones it needs in bin_dir().
            continue;
        }
        let dst = to.join(name);
        std::fs::copy(&src, &dst)
            .and_then(|_| std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)))
            .map_err(io(format!(
                "cannot copy {} to {}",
                src.display(),
                dst.display()
            )))?;
    }
    Ok(to.to_path_buf())
}

/// Creates a folder (and its parents) with exactly `mode`: the umask must
/// not lock the proxies out.
fn make_dir(dir: &Path, mode: u32) -> Result<(), LabError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
        .map_err(io(format!("cannot create {}", dir.display())))
}

/// Starts a pod's proxy as the proxy UID.
fn start_proxy(pod: &state::Pod, paths: &Paths, bins: &Path) -> Result<Child, LabError> {
    let program = bins.join("mesh-proxy").display().to_string();
    process::spawn(process::Spawn {
        netns: Some(&pod.netns),
        uid: Some(PROXY_UID),
        program: &program,
        args: pod.proxy_args.clone(),
        env: vec![("RUST_LOG".into(), "info".into())],
        log: &paths.proxy_log(&pod.name),
        bin_dir: bins,
    })
}

/// Starts each of a pod's app commands (`sh -c`) as the app UID and records
/// their PIDs.
fn start_apps(pod: &mut state::Pod, paths: &Paths, bins: &Path) -> Result<Vec<Child>, LabError> {
    let mut children = Vec::new();
    pod.app_pids.clear();
    for cmd in &pod.apps {
        let child = process::spawn(process::Spawn {
            netns: Some(&pod.netns),
            uid: Some(pod.app_uid),
            program: "sh",
            args: vec!["-c".into(), cmd.clone()],
            env: pod.app_env.clone(),
            log: &paths.app_log(&pod.name),
            bin_dir: bins,
        })?;
        pod.app_pids.push(child.id());
        children.push(child);
    }
    Ok(children)
}

/// TCP ports in LISTEN state inside a network namespace: /proc/PID/net
/// shows the namespace of PID, so any process in it will do.
pub fn listening_ports(netns: &str) -> Vec<u16> {
    let Some(pid) = net::netns_pids(netns).into_iter().next() else {
        return Vec::new();
    };
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        ports.extend(parse_listening(&text));
    }
    ports
}

/// Local ports of LISTEN (state 0A) sockets in /proc/net/tcp text.
pub fn parse_listening(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            (state == "0A").then_some(())?;
            u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
        })
        .collect()
}

fn free_port() -> Result<u16, LabError> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("cannot pick a port for the control plane's admin"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `lab down` removed.
#[derive(Debug, Default)]
pub struct Down {
    pub processes: usize,
    pub netns: Vec<String>,
    pub links: Vec<String>,
    pub state_removed: bool,
}

impl Down {
    pub fn is_empty(&self) -> bool {
        self.processes == 0 && self.netns.is_empty() && self.links.is_empty() && !self.state_removed
    }
}

/// Removes every namespace, link, file and process of lab `name`, whether
/// or not its state survived.
pub fn down(name: &str, opts: &Options) -> Result<Down, LabError> {
    require_root()?;
    down_named(name, &opts.state_dir)
}

fn down_named(name: &str, state_dir: &Path) -> Result<Down, LabError> {
    let names = Names::new(name);
    let paths = Paths::new(state_dir, name);
    let mut report = Down::default();

    // Processes first: a namespace with a process in it outlives its name.
    let namespaces = net::netns_with_prefix(&names.prefix())?;
    // The control plane runs in the root namespace; it is ours if it was
    // started on this lab's data dir.
    let data = paths.data().display().to_string();
    report.processes = stop_all(|| {
        let mut pids: Vec<u32> = namespaces
            .iter()
            .flat_map(|ns| net::netns_pids(ns))
            .collect();
        pids.extend(process::with_argument(&data));
        pids
    });

    for ns in namespaces {
        net::ip(&["netns", "del", &ns])?;
        report.netns.push(ns);
    }
    // The veths went with their namespaces; the bridge (and any veth whose
    // namespace was lost) are left.
    for link in net::links_with_prefix(&names.prefix())? {
        // A veth disappears with its peer; it may be gone by now.
        if let Err(e) = net::ip(&["link", "del", &link])
            && net::links_with_prefix(&link)?.contains(&link)
        {
            return Err(e);
        }
        report.links.push(link);
    }
    for dir in net::etc_dirs_with_prefix(&names.prefix()) {
        std::fs::remove_dir_all(&dir).map_err(io(format!("cannot remove {}", dir.display())))?;
    }
    if paths.root.exists() {
        std::fs::remove_dir_all(&paths.root)
            .map_err(io(format!("cannot remove {}", paths.root.display())))?;
        report.state_removed = true;
    }
    Ok(report)
}

/// Rounds of stopping before `stop_all` gives up: each round catches what
/// the previous one's processes started (a shell loop's next `curl`) before
/// they died.
const STOP_ROUNDS: usize = 5;

/// Stops every process `find` lists, again and again until it lists none;
/// returns how many were stopped.
fn stop_all(mut find: impl FnMut() -> Vec<u32>) -> usize {
    let mut stopped = std::collections::BTreeSet::new();
    for _ in 0..STOP_ROUNDS {
        let mut pids: Vec<u32> = find().into_iter().filter(|p| process::alive(*p)).collect();
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        process::stop(&pids);
        stopped.extend(pids);
    }
    stopped.len()
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

/// Stops every process of one pod (its proxy and apps): the pod leaves the
/// mesh, as a scaled-down replica does. Its namespace and rules stay.
pub fn stop_pod(name: &str, pod: &str, opts: &Options) -> Result<(), LabError> {
    require_root()?;
    let (mut state, paths) = load_state(name, opts)?;
    let p = state
        .pods
        .iter_mut()
        .find(|p| p.name == pod)
        .ok_or_else(|| LabError::NoPod {
            lab: name.to_owned(),
            pod: pod.to_owned(),
        })?;
    let ns = p.netns.clone();
    stop_all(|| net::netns_pids(&ns));
    p.proxy_pid = None;
    p.app_pids.clear();
    state.save(&paths)
}

/// Starts a stopped pod again (proxy, then apps) and waits until it is
/// ready, as a scaled-up replica.
pub fn start_pod(name: &str, pod: &str, opts: &Options) -> Result<(), LabError> {
    require_root()?;
    let (mut state, paths) = load_state(name, opts)?;
    // The copies `lab up` made, which every UID can execute.
    let bins = if paths.bin().join("mesh-proxy").is_file() {
        paths.bin()
    } else {
        bin_dir(opts)?
    };
    let i = state
        .pods
        .iter()
        .position(|p| p.name == pod)
        .ok_or_else(|| LabError::NoPod {
            lab: name.to_owned(),
            pod: pod.to_owned(),
        })?;
    if !net::netns_pids(&state.pods[i].netns).is_empty() {
        return Err(LabError::AlreadyUp {
            name: name.to_owned(),
            what: format!("pod {pod} has running processes; meshctl lab stop {pod} first"),
        });
    }
    let started = Instant::now();
    let mut children = Vec::new();
    if state.pods[i].sidecar {
        let child = start_proxy(&state.pods[i], &paths, &bins)?;
        state.pods[i].proxy_pid = Some(child.id());
        children.push(Watched::new("the proxy", child, paths.proxy_log(pod)));
        state.save(&paths)?;
        if let Some(admin) = state.pods[i].admin {
            let log = paths.proxy_log(pod);
            wait_until(
                "the proxy is not ready",
                started,
                opts.timeout,
                &mut children,
                &log,
                || matches!(http::get(admin, "/ready"), Ok((200, _))),
            )?;
        }
    }
    for c in start_apps(&mut state.pods[i], &paths, &bins)? {
        children.push(Watched::new("the app", c, paths.app_log(pod)));
    }
    state.save(&paths)?;
    let (ns, ports) = (state.pods[i].netns.clone(), state.pods[i].ports.clone());
    let log = paths.app_log(pod);
    wait_until(
        "the app is not listening",
        started,
        opts.timeout,
        &mut children,
        &log,
        || {
            let l = listening_ports(&ns);
            ports.iter().all(|p| l.contains(p))
        },
    )
}
