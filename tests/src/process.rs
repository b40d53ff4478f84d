//! The real binaries as child processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_identity::token::TokenKey;

use crate::net::{free_port, http_get};
use crate::wait_for;

/// How long a process may take to become ready in tests.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// Path of a workspace binary, next to the test executable's directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// A child process that is killed when dropped, with its output in a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null());
        cmd.env("RUST_LOG", "info");
        let child = cmd.spawn().expect("spawn");
        Self { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for exit up to `deadline`; returns the exit status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        let end = std::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options for a control plane.
#[derive(Clone)]
pub struct CpOptions {
    pub cert_ttl: &'static str,
    pub max_cert_ttl: &'static str,
    pub trust_domain: &'static str,
    /// More flags, as given.
    pub extra: Vec<String>,
    /// Environment variables for the control plane (e.g. libfaketime's, for
    /// a clock that is ahead).
    pub env: Vec<(String, String)>,
}

impl Default for CpOptions {
    fn default() -> Self {
        Self {
            cert_ttl: "24h",
            max_cert_ttl: "7d",
            trust_domain: "cluster.local",
            extra: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running `mesh-control-plane` with its own data dir.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub opts: CpOptions,
    pub proc: Option<Proc>,
    /// The folder of the replica this one shares its source with.
    shared_config: Option<PathBuf>,
    /// The data directory of the replica this one shares it with.
    shared_data: Option<PathBuf>,
}

impl ControlPlane {
    pub fn start(opts: CpOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cp = Self {
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            opts,
            proc: None,
            shared_config: None,
            shared_data: None,
        };
        // A port from `free_port` can be taken by a parallel test before
        // the control plane binds it: then it starts again on fresh ports.
        for _ in 0..3 {
            match cp.launch() {
                Ok(()) => return cp,
                Err(logs) if logs.contains("cannot listen") => {
                    cp.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
                    cp.admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
                }
                Err(logs) => panic!("control plane exited:\n{logs}"),
            }
        }
        panic!("the control plane could not bind fresh ports three times");
    }

    /// A second replica of this control plane, as a Deployment runs them:
    /// the same CA and token key (its data dir starts as a copy of this
    /// one's), the same policy folder, its own ports.
    pub fn replica(&self) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&self.data_dir(), &dir.path().join("data"));
        let mut cp = Self {
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            opts: self.opts.clone(),
            proc: None,
            shared_config: Some(self.config_dir()),
            shared_data: None,
        };
        cp.restart();
        cp
    }

    /// A second replica on the same host sharing this one's data directory
    /// itself (CA, token key, registrations) and policy folder; its own
    /// ports and logs.
    pub fn replica_sharing_data(&self) -> Self {
        let mut cp = Self {
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: tempfile::tempdir().expect("tempdir"),
            opts: self.opts.clone(),
            proc: None,
            shared_config: Some(self.config_dir()),
            shared_data: Some(self.data_dir()),
        };
        cp.restart();
        cp
    }

    /// The watched policy folder (`--config-dir`).
    pub fn config_dir(&self) -> PathBuf {
        self.shared_config
            .clone()
            .unwrap_or_else(|| self.dir.path().join("config"))
    }

    /// Writes a policy file atomically (write, then rename), as editors and
    /// ConfigMap updates do.
    pub fn write_policy(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write policy");
        std::fs::rename(&tmp, self.config_dir().join(name)).expect("rename policy");
    }

    /// Waits until the control plane has loaded exactly `n` policy objects.
    pub fn wait_policy_objects(&self, n: usize) {
        wait_for("control plane loaded the policy", READY_DEADLINE, || {
            (self.status()["policy"]["objects"].as_array()?.len() == n).then_some(())
        });
    }

    pub fn remove_policy(&self, name: &str) {
        std::fs::remove_file(self.config_dir().join(name)).expect("remove policy");
    }

    /// `/status` of the control plane, parsed.
    pub fn status(&self) -> serde_json::Value {
        http_get(self.admin, "/status")
            .ok()
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.shared_data
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    pub fn trust_bundle(&self) -> PathBuf {
        self.data_dir().join("trust-bundle.pem")
    }

    /// Starts (again) on the same data dir and ports, and waits for /ready.
    pub fn restart(&mut self) {
        if let Err(logs) = self.launch() {
            panic!("control plane exited:\n{logs}");
        }
    }

    /// Starts and waits for /ready; `Err`: it exited first, with its log.
    fn launch(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(self.config_dir()).expect("config dir");
        let mut cmd = Command::new(bin("mesh-control-plane"));
        cmd.envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--config-dir")
            .arg(self.config_dir())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--admin")
            .arg(self.admin.to_string())
            .arg("--cert-ttl")
            .arg(self.opts.cert_ttl)
            .arg("--max-cert-ttl")
            .arg(self.opts.max_cert_ttl)
            .arg("--trust-domain")
            .arg(self.opts.trust_domain)
            .args(&self.opts.extra);
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.dir.path().join(format!("control-plane-{n}.log"));
        self.proc = Some(Proc::spawn(cmd, log));
        let admin = self.admin;
        wait_for("control plane /ready", READY_DEADLINE, || {
            if let Some(p) = self.proc.as_mut()
                && let Ok(Some(s)) = p.child.try_wait()
            {
                return Some(Err(format!("({s})\n{}", p.logs())));
            }
            matches!(http_get(admin, "/ready"), Ok((200, _))).then_some(Ok(()))
        })
    }

    /// Stops the control plane (the data dir stays).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Writes a join token file for `ns`/`sa` and returns its path.
    pub fn token_file(&self, ns: &str, sa: &str) -> PathBuf {
        let token = self.token(ns, sa, Duration::from_secs(3600));
        let p = self
            .dir
            .path()
            .join(format!("{ns}-{sa}-{}.token", crate::random_hex(4)));
        std::fs::write(&p, token).expect("write token");
        p
    }

    /// A join token, as `meshctl token create` makes it.
    pub fn token(&self, ns: &str, sa: &str, ttl: Duration) -> String {
        TokenKey::load_or_generate(&self.data_dir())
            .expect("token key")
            .create(ns, sa, ttl)
    }

    /// Every log line the control plane wrote so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        s
    }

    pub fn issuer_pem(&self) -> (String, String) {
        let ca = self.data_dir().join("ca");
        (
            std::fs::read_to_string(ca.join("issuer-cert.pem")).expect("issuer cert"),
            std::fs::read_to_string(ca.join("issuer-key.pem")).expect("issuer key"),
        )
    }
}

/// A running `mesh-proxy run`.
pub struct Proxy {
    pub proc: Proc,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub identity: String,
    pub token_file: PathBuf,
}

/// How to start a proxy.
#[derive(Clone)]
pub struct ProxyOptions<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    /// `(listen, peer_inbound, target_port, spiffe_id)`.
    pub routes: Vec<(SocketAddr, SocketAddr, u16, String)>,
    pub extra: Vec<String>,
}

impl<'a> ProxyOptions<'a> {
    pub fn new(namespace: &'a str, service_account: &'a str) -> Self {
        Self {
            namespace,
            service_account,
            routes: vec![],
            extra: vec![],
        }
    }

    /// Adds a static route listening on a fresh port; returns that address.
    pub fn route(&mut self, peer: &Proxy, target_port: u16, id: &str) -> SocketAddr {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        self.routes
            .push((listen, peer.inbound, target_port, id.to_string()));
        listen
    }
}

impl Proxy {
    pub fn start(cp: &ControlPlane, opts: ProxyOptions<'_>) -> Self {
        // A port from `free_port` can be taken by a parallel test before the
        // proxy binds it; a proxy that exits at start for that is started
        // again on fresh ports.
        for _ in 0..3 {
            let mut p = Self::spawn(cp, opts.clone());
            let end = std::time::Instant::now() + READY_DEADLINE;
            let ready = loop {
                if matches!(http_get(p.admin, "/ready"), Ok((200, _))) {
                    break true;
                }
                if matches!(p.proc.child.try_wait(), Ok(Some(_))) {
                    break false;
                }
                assert!(
                    std::time::Instant::now() < end,
                    "timed out after {READY_DEADLINE:?} waiting for proxy /ready; its log:\n{}",
                    p.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                return p;
            }
            let logs = p.logs();
            assert!(
                logs.contains("cannot listen"),
                "proxy exited before it was ready:\n{logs}"
            );
        }
        panic!("proxy could not bind fresh ports three times");
    }

    /// Starts without waiting for readiness.
    pub fn spawn(cp: &ControlPlane, opts: ProxyOptions<'_>) -> Self {
        let inbound = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let outbound = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let token_file = cp.token_file(opts.namespace, opts.service_account);
        let mut cmd = Command::new(bin("mesh-proxy"));
        cmd.arg("run")
            .arg("--control-plane")
            .arg(cp.listen.to_string())
            .arg("--trust-bundle")
            .arg(cp.trust_bundle())
            .arg("--namespace")
            .arg(opts.namespace)
            .arg("--service-account")
            .arg(opts.service_account)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--trust-domain")
            .arg(cp.opts.trust_domain)
            .arg("--inbound")
            .arg(inbound.to_string())
            .arg("--outbound")
            .arg(outbound.to_string())
            .arg("--admin")
            .arg(admin.to_string());
        for (listen, peer, port, id) in &opts.routes {
            cmd.arg("--static-route")
                .arg(format!("{listen}={peer}/{port}@{id}"));
        }
        cmd.args(&opts.extra);
        let log = cp.dir.path().join(format!(
            "proxy-{}-{}-{}.out",
            opts.namespace,
            opts.service_account,
            crate::random_hex(4)
        ));
        Self {
            proc: Proc::spawn(cmd, log),
            inbound,
            admin,
            identity: format!(
                "spiffe://{}/ns/{}/sa/{}",
                cp.opts.trust_domain, opts.namespace, opts.service_account
            ),
            token_file,
        }
    }

    pub fn wait_ready(&self) {
        let end = std::time::Instant::now() + READY_DEADLINE;
        while !matches!(http_get(self.admin, "/ready"), Ok((200, _))) {
            // Say why, not only that it timed out.
            assert!(
                std::time::Instant::now() < end,
                "timed out after {READY_DEADLINE:?} waiting for proxy /ready; its log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).unwrap_or((0, String::new()))
    }

    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").1
    }

    /// The policy version in force, from /policy.
    pub fn policy_version(&self) -> Option<u64> {
        let (status, body) = self.admin_get("/policy");
        if status != 200 {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(&body).ok()?["version"].as_u64()
    }

    /// The serial of the certificate in force, from /certs.
    pub fn serial(&self) -> Option<String> {
        let (status, body) = self.admin_get("/certs");
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["serial"].as_str().map(str::to_string)
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }
}

/// The `mesh-echo` demo app as a process: HTTP requests are answered with
/// what was received, other bytes echoed.
/// A running `mesh-proxy ingress` on loopback.
pub struct Ingress {
    pub proc: Proc,
    pub admin: SocketAddr,
    /// `--https-port` on 127.0.0.1.
    pub https: SocketAddr,
    /// `--http-port` on 127.0.0.1 (the redirect).
    pub http: SocketAddr,
    pub access_log: PathBuf,
}

impl Ingress {
    /// Starts an ingress (identity mesh-system/ingress) and waits until it
    /// is ready; fresh ports are tried again if one was taken meanwhile.
    /// An `--https-port` in `extra` (a Gateway's listener port) is kept.
    pub fn start(cp: &ControlPlane, extra: &[&str]) -> Self {
        let chosen = extra
            .iter()
            .position(|a| *a == "--https-port")
            .and_then(|i| extra.get(i + 1))
            .and_then(|p| p.parse::<u16>().ok());
        for _ in 0..3 {
            let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let https = SocketAddr::from(([127, 0, 0, 1], chosen.unwrap_or_else(free_port)));
            let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let token_file = cp.token_file("mesh-system", "ingress");
            let access_log = cp
                .dir
                .path()
                .join(format!("ingress-access-{}.jsonl", crate::random_hex(4)));
            let mut cmd = Command::new(bin("mesh-proxy"));
            cmd.arg("ingress")
                .arg("--control-plane")
                .arg(cp.listen.to_string())
                .arg("--trust-bundle")
                .arg(cp.trust_bundle())
                .arg("--token-file")
                .arg(&token_file)
                .arg("--trust-domain")
                .arg(cp.opts.trust_domain)
                .arg("--labels")
                .arg("app=ingress")
                .arg("--admin")
                .arg(admin.to_string())
                .arg("--listen-ip")
                .arg("127.0.0.1")
                .args(
                    chosen
                        .is_none()
                        .then(|| ["--https-port".to_string(), https.port().to_string()])
                        .into_iter()
                        .flatten(),
                )
                .arg("--http-port")
                .arg(http.port().to_string())
                .arg("--access-log")
                .arg(&access_log)
                .args(extra);
            let log = cp
                .dir
                .path()
                .join(format!("ingress-{}.out", crate::random_hex(4)));
            let mut ingress = Self {
                proc: Proc::spawn(cmd, log),
                admin,
                https,
                http,
                access_log,
            };
            let end = std::time::Instant::now() + READY_DEADLINE;
            let ready = loop {
                // Ready, and the HTTPS listener is open.
                if matches!(http_get(admin, "/ready"), Ok((200, _)))
                    && std::net::TcpStream::connect(https).is_ok()
                {
                    break true;
                }
                if matches!(ingress.proc.child.try_wait(), Ok(Some(_)))
                    || ingress.proc.logs().contains("cannot listen")
                {
                    break false;
                }
                assert!(
                    std::time::Instant::now() < end,
                    "timed out after {READY_DEADLINE:?} waiting for the ingress; its log:\n{}",
                    ingress.proc.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                return ingress;
            }
            let logs = ingress.proc.logs();
            assert!(
                logs.contains("cannot listen"),
                "ingress exited before it was ready:\n{logs}"
            );
            ingress.proc.kill();
        }
        panic!("ingress could not bind fresh ports three times");
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").map_or(String::new(), |(_, b)| b)
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }
}

pub struct EchoApp {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl EchoApp {
    pub fn start(dir: &Path, name: &str) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(bin("mesh-echo"));
        cmd.arg(addr.to_string()).env("ECHO_NAME", name);
        let proc = Proc::spawn(
            cmd,
            dir.join(format!("{name}-{}.log", crate::random_hex(4))),
        );
        wait_for("mesh-echo listening", READY_DEADLINE, || {
            std::net::TcpStream::connect(addr).ok().map(|_| ())
        });
        Self { proc, addr }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy file");
        }
    }
}

/// Reads a file to a string, empty if missing.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
