//! `meshctl lab up`: builds every pod (namespace, veth, redirection,
//! proxy, apps) and returns once each is ready.

use super::*;

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

pub(super) struct Builder<'a> {
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
                if pod.ingress.is_some() {
                    // The gateway listens on 443 and 80 as the proxy UID.
                    let ns = self.names.netns(&pod.name);
                    net::ip(&[
                        "netns",
                        "exec",
                        &ns,
                        "sysctl",
                        "-q",
                        "-w",
                        "net.ipv4.ip_unprivileged_port_start=0",
                    ])?;
                    // The proxy UID writes its access log itself.
                    let log = self.paths.edge_log(&pod.name);
                    std::fs::write(&log, "")
                        .and_then(|()| {
                            std::os::unix::fs::chown(&log, Some(PROXY_UID), Some(PROXY_UID))
                        })
                        .map_err(io(format!("cannot create {}", log.display())))?;
                } else {
                    self.init_redirection(pod)?;
                }
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
        for pod in &self.lab.spec.pods {
            if let Some(demo) = pod
                .ingress
                .as_ref()
                .and_then(|i| i.demo_certificate.as_ref())
            {
                super::edge_cert::write(demo, &p.config(), &p.root).map_err(|message| {
                    LabError::Spec {
                        file: self.lab.dir.join("lab.yaml"),
                        message,
                    }
                })?;
            }
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
            if let Some(dns) = self.lab.spec.dns {
                // `ip netns exec` mounts it over /etc/resolv.conf: the app
                // and its proxy resolve with the lab's name server.
                let conf = format!(
                    "# Written by meshctl lab up; removed by meshctl lab down.
nameserver {dns}
options timeout:1 attempts:2
"
                );
                std::fs::write(etc.join("resolv.conf"), conf)
                    .map_err(io(format!("cannot write {}/resolv.conf", etc.display())))?;
            }
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
            if pod.ingress.is_some() {
                "ingress"
            } else {
                "run"
            },
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
        let mut proxy_args = proxy_args;
        if let Some(ing) = &pod.ingress {
            // Its own log stream: edge events apart from the mesh's.
            proxy_args.extend([
                "--https-port".into(),
                ing.https_port.to_string(),
                "--http-port".into(),
                ing.http_port.to_string(),
                "--access-log".into(),
                self.paths.edge_log(&pod.name).display().to_string(),
            ]);
        }
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
pub(super) struct Watched {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Watched {
    pub(super) fn new(name: impl Into<String>, child: Child, log: PathBuf) -> Self {
        Self {
            name: name.into(),
            child,
            log,
        }
    }
}

/// Polls `ready` until `started + timeout`, failing at once when one of
/// `children` has exited (with its log's tail).
pub(super) fn wait_until(
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

/// Starts a pod's proxy as the proxy UID.
pub(super) fn start_proxy(pod: &state::Pod, paths: &Paths, bins: &Path) -> Result<Child, LabError> {
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
pub(super) fn start_apps(
    pod: &mut state::Pod,
    paths: &Paths,
    bins: &Path,
) -> Result<Vec<Child>, LabError> {
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

pub(super) fn free_port() -> Result<u16, LabError> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("cannot pick a port for the control plane's admin"))
}
