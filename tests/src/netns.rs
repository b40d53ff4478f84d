//! Tests with network-namespace "pods": a lab (`meshctl lab up`) per test,
//! commands run inside pods, captures on the lab's bridge.
//!
//! These tests need root. Without it they skip loudly (a line starting with
//! `SKIPPED:` on stderr); with `MESH_REQUIRE_NETNS=1` (CI) a skip is a
//! failure instead.
//!
//! Tests run in parallel (nextest runs several at once), so every lab gets
//! its own index, which names it (`plt<index>`, the prefix of its
//! namespaces and links) and gives it its own subnets: pods in
//! `10.250.<index>.0/24`, Service VIPs in `10.251.<index>.0/24`. Indexes in
//! use: 0 (the example lab, 10.250.0.0/24), 2 (lab_up), 11-13 (lab_redirect),
//! 21-22 (lab_discovery), 31-36 (lab_policy). Pick a new one for a new test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::bin;
use crate::{Proc, http_get, wait_for};

/// Set to 1 to make a missing root a failure (CI).
pub const REQUIRE_ENV: &str = "MESH_REQUIRE_NETNS";
/// Where the test labs keep state: the default, so `meshctl lab status
/// --name plt<n>` works while a test runs.
pub const STATE_DIR: &str = "/run/palisade-lab";
/// The app UID inside pods (meshctl's default).
pub const APP_UID: u32 = 1000;
/// The proxy UID (DESIGN.md).
pub const PROXY_UID: u32 = 2102;

/// Whether this test can run: root and the tools it needs. Otherwise prints
/// `SKIPPED: <test>: …` and returns false, or panics under
/// `MESH_REQUIRE_NETNS=1`.
pub fn available(test: &str) -> bool {
    let why = if !is_root() {
        Some("needs root (network namespaces, iptables)".to_string())
    } else {
        ["ip", "iptables", "setpriv", "curl"]
            .into_iter()
            .find(|t| {
                Command::new(t)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_err()
            })
            .map(|t| format!("needs {t} (run scripts/setup.sh)"))
    };
    match why {
        None => true,
        Some(why) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{test}: {why}, and {REQUIRE_ENV}=1 makes a skip a failure")
        }
        Some(why) => {
            // Straight to the stream, not eprintln!: libtest captures the
            // macros' output of passing tests, and a skip must be seen.
            let line = format!("SKIPPED: {test}: {why}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            false
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command and returns its output; panics if it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare network namespace, deleted on drop (with any process in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Self {
        // A leftover of an earlier, killed run.
        let _ = run("ip", &["netns", "del", name]);
        run_ok("ip", &["netns", "add", name]);
        run_ok("ip", &["-n", name, "link", "set", "lo", "up"]);
        Self {
            name: name.to_owned(),
        }
    }

    /// Runs `program args…` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", &self.name, program];
        a.extend_from_slice(args);
        run("ip", &a)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in netns_pids(&self.name) {
            let _ = run("kill", &["-KILL", &pid.to_string()]);
        }
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// PIDs in a network namespace.
pub fn netns_pids(ns: &str) -> Vec<u32> {
    String::from_utf8_lossy(&run("ip", &["netns", "pids", ns]).stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// One pod of a test lab, written into lab.yaml.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: Vec<(String, String)>,
    /// Last octet of the pod's address in the lab's subnet.
    pub host: u8,
    pub app: Vec<String>,
    pub ports: Vec<u16>,
    pub sidecar: bool,
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
    /// The ingress gateway: (HTTPS port, HTTP port, demo certificate
    /// Secret `ns/name`, its hosts).
    pub ingress: Option<(u16, u16, String, Vec<String>)>,
}

impl Pod {
    /// A meshed pod `name` in `namespace`, service account and label `app`
    /// both `name`.
    pub fn new(name: &str, namespace: &str, host: u8) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            service_account: name.to_owned(),
            labels: vec![("app".into(), name.to_owned())],
            host,
            app: Vec::new(),
            ports: Vec::new(),
            sidecar: true,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            ingress: None,
        }
    }

    /// The lab's ingress gateway (mesh-system/ingress, label app=ingress)
    /// with a demo certificate `secret` for `hosts`.
    pub fn ingress(name: &str, host: u8, ports: (u16, u16), secret: &str, hosts: &[&str]) -> Self {
        let mut p = Self::new(name, "mesh-system", host)
            .service_account("ingress")
            .label("app", "ingress");
        p.ingress = Some((
            ports.0,
            ports.1,
            secret.to_owned(),
            hosts.iter().map(|h| h.to_string()).collect(),
        ));
        p
    }

    /// Serves `mesh-echo` (HTTP echo naming the pod) on each port.
    pub fn echo(mut self, ports: &[u16]) -> Self {
        for p in ports {
            self.app.push(format!("mesh-echo 0.0.0.0:{p}"));
            self.ports.push(*p);
        }
        self
    }

    /// Serves `mesh-echo` on `port` with extra flags (`--fail-every N`,
    /// `--delay-ms MS`): a flaky or slow backend.
    pub fn echo_with(mut self, port: u16, flags: &str) -> Self {
        self.app.push(format!("mesh-echo 0.0.0.0:{port} {flags}"));
        self.ports.push(port);
        self
    }

    /// Runs `command` (a lab binary, by name) as the app serving `port`.
    pub fn run(mut self, command: &str, port: u16) -> Self {
        self.app.push(command.to_owned());
        self.ports.push(port);
        self
    }

    /// Runs `command` as one more app process (no port to wait for: a
    /// UDP server, say).
    pub fn command(mut self, command: &str) -> Self {
        self.app.push(command.to_owned());
        self
    }

    pub fn no_sidecar(mut self) -> Self {
        self.sidecar = false;
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.retain(|(key, _)| key != k);
        self.labels.push((k.into(), v.into()));
        self
    }

    pub fn service_account(mut self, sa: &str) -> Self {
        self.service_account = sa.into();
        self
    }

    fn yaml(&self, index: u8) -> String {
        let list = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        let labels = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}: {v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = format!(
            "  - name: {}\n    namespace: {}\n    serviceAccount: {}\n    labels: {{{labels}}}\n    ip: 10.250.{index}.{}\n    sidecar: {}\n    ports: [{}]\n    skipInboundPorts: [{}]\n    skipOutboundPorts: [{}]\n",
            self.name,
            self.namespace,
            self.service_account,
            self.host,
            self.sidecar,
            list(&self.ports),
            list(&self.skip_inbound_ports),
            list(&self.skip_outbound_ports),
        );
        if let Some((https, http, secret, hosts)) = &self.ingress {
            s.push_str(&format!(
                "    ingress: {{httpsPort: {https}, httpPort: {http}, demoCertificate: {{secret: {secret}, hosts: [{}]}}}}\n",
                hosts.join(", ")
            ));
        }
        if !self.app.is_empty() {
            s.push_str("    app:\n");
            for a in &self.app {
                s.push_str(&format!("      - {a:?}\n"));
            }
        }
        s
    }
}

/// A lab for one test, taken down (and checked clean) on drop.
pub struct Lab {
    pub name: String,
    pub index: u8,
    pub dir: tempfile::TempDir,
    pub pods: Vec<Pod>,
    /// How long `meshctl lab up` took.
    pub up_time: Duration,
    down: bool,
}

/// What `lab up` is given besides pods: extra YAML files for the config dir.
pub struct LabSpec {
    pub index: u8,
    pub pods: Vec<Pod>,
    pub files: Vec<(String, String)>,
    /// Last octet of the pod every resolv.conf names (`dns:`).
    pub dns: Option<u8>,
}

impl LabSpec {
    pub fn new(index: u8) -> Self {
        assert!((1..=250).contains(&index), "lab index 1..=250");
        Self {
            index,
            pods: Vec::new(),
            files: Vec::new(),
            dns: None,
        }
    }

    /// Every pod resolves names with the pod at `host` (running mesh-dns).
    pub fn dns(mut self, host: u8) -> Self {
        self.dns = Some(host);
        self
    }

    pub fn pod(mut self, p: Pod) -> Self {
        self.pods.push(p);
        self
    }

    /// A YAML file for the control plane's config dir.
    pub fn file(mut self, name: &str, yaml: &str) -> Self {
        self.files.push((name.into(), yaml.into()));
        self
    }

    /// A Service `name` in `namespace` with VIP `10.251.<index>.<host>`,
    /// selecting `app: <selector>`, from `port` to the pods' `target_port`.
    pub fn service(
        self,
        name: &str,
        namespace: &str,
        host: u8,
        selector: &str,
        ports: (u16, u16),
    ) -> Self {
        self.service_selecting(name, namespace, host, ("app", selector), ports)
    }

    /// [`LabSpec::service`] selecting pods by another label.
    pub fn service_selecting(
        self,
        name: &str,
        namespace: &str,
        host: u8,
        (key, value): (&str, &str),
        (port, target_port): (u16, u16),
    ) -> Self {
        let index = self.index;
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
             spec:\n  clusterIP: 10.251.{index}.{host}\n  selector: {{{key}: {value}}}\n  \
             ports: [{{port: {port}, targetPort: {target_port}}}]\n"
        );
        self.file(&format!("svc-{namespace}-{name}.yaml"), &yaml)
    }

    /// Writes the lab folder and brings the lab up; panics with meshctl's
    /// output if it fails.
    pub fn up(self) -> Lab {
        let name = lab_name(self.index);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut yaml = format!(
            "name: {name}\nnetwork: 10.250.{}.0/24\ncontrolPlane: {{certTtl: 1h}}\n",
            self.index
        );
        if let Some(dns) = self.dns {
            yaml.push_str(&format!("dns: 10.250.{}.{dns}\n", self.index));
        }
        yaml.push_str("pods:\n");
        for p in &self.pods {
            yaml.push_str(&p.yaml(self.index));
        }
        std::fs::write(dir.path().join("lab.yaml"), yaml).expect("write lab.yaml");
        for (f, text) in &self.files {
            std::fs::write(dir.path().join(f), text).expect("write config file");
        }
        // A leftover of an earlier run that was killed before it cleaned up.
        let _ = meshctl(&["lab", "down", "--name", &name]);
        let (out, up_time) = lab_up(dir.path(), &name);
        assert!(
            out.status.success(),
            "meshctl lab up failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Lab {
            name,
            index: self.index,
            dir,
            pods: self.pods,
            up_time,
            down: false,
        }
    }
}

/// `plt<index>`: a lab name that is short enough for interface names.
pub fn lab_name(index: u8) -> String {
    format!("plt{index}")
}

/// `meshctl ARGS…` with the test binaries.
pub fn meshctl(args: &[&str]) -> Output {
    Command::new(bin("meshctl"))
        .args(args)
        .env("MESH_STATE_DIR", STATE_DIR)
        .stdin(Stdio::null())
        .output()
        .expect("run meshctl")
}

/// `meshctl lab up DIR --name NAME`, timed.
pub fn lab_up(dir: &Path, name: &str) -> (Output, Duration) {
    let bin_dir = bin("mesh-proxy")
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    let t = Instant::now();
    let out = meshctl(&[
        "lab",
        "up",
        &dir.display().to_string(),
        "--name",
        name,
        "--bin-dir",
        &bin_dir,
    ]);
    (out, t.elapsed())
}

impl Lab {
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    pub fn netns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.name)
    }

    pub fn ip(&self, pod: &str) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.index, self.pod(pod).host)
    }

    pub fn vip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.index, host)
    }

    pub fn bridge(&self) -> String {
        format!("{}-br0", self.name)
    }

    pub fn state_dir(&self) -> PathBuf {
        Path::new(STATE_DIR).join(&self.name)
    }

    /// The control plane's watched config dir.
    pub fn config_dir(&self) -> PathBuf {
        self.state_dir().join("config")
    }

    /// Writes a config file atomically (the control plane may read any time).
    pub fn write_config(&self, name: &str, yaml: &str) {
        let tmp = self.state_dir().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.config_dir().join(name)).expect("rename config");
    }

    /// Runs `argv` in `pod` as `uid`.
    pub fn exec_as(&self, pod: &str, uid: u32, argv: &[&str]) -> Output {
        let ns = self.netns(pod);
        let uid = uid.to_string();
        let mut a = vec![
            "netns",
            "exec",
            &ns,
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
            "--",
        ];
        a.extend_from_slice(argv);
        run("ip", &a)
    }

    /// `curl URL` from `pod` as `uid`: (HTTP status, body); status 0 when
    /// no HTTP answer came (refused, reset, timed out).
    pub fn curl_as(&self, pod: &str, uid: u32, url: &str) -> (u16, String) {
        let out = self.exec_as(
            pod,
            uid,
            &[
                "curl",
                "-s",
                "-m",
                "3",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                url,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// `curl URL` from `pod` as the app (its traffic is redirected).
    pub fn curl(&self, pod: &str, url: &str) -> (u16, String) {
        self.curl_as(pod, APP_UID, url)
    }

    /// `curl` until an HTTP answer comes (status not 0): a proxy is ready
    /// once it holds a certificate and a policy, and its discovery view may
    /// arrive a moment later.
    pub fn curl_answered(&self, pod: &str, url: &str) -> (u16, String) {
        wait_for(
            &format!("an HTTP answer to {url} from {pod}"),
            Duration::from_secs(10),
            || {
                let r = self.curl(pod, url);
                (r.0 != 0).then_some(r)
            },
        )
    }

    /// The proxy admin of a meshed pod.
    pub fn admin(&self, pod: &str) -> SocketAddr {
        SocketAddr::from((self.ip(pod), 4191))
    }

    /// A pod proxy's /metrics.
    pub fn metrics(&self, pod: &str) -> String {
        http_get(self.admin(pod), "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// `meshctl lab status -o json`.
    pub fn status(&self) -> serde_json::Value {
        let out = meshctl(&["lab", "status", "--name", &self.name, "-o", "json"]);
        assert!(
            out.status.success(),
            "lab status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// Packets counted by the rule of `chain` (nat table) in `pod` whose
    /// `iptables -S` form ends with `rule_suffix`. nat rules see the first
    /// packet of each connection only, so this counts connections.
    pub fn nat_counter(&self, pod: &str, chain: &str, rule_suffix: &str) -> u64 {
        let ns = self.netns(pod);
        let out = run_ok(
            "ip",
            &[
                "netns", "exec", &ns, "iptables", "-w", "-t", "nat", "-v", "-S", chain,
            ],
        );
        // -v -S: "-A CHAIN -p tcp … -c PKTS BYTES -j TARGET …" (older
        // versions: "[PKTS:BYTES] -A …").
        for line in out.lines() {
            let plain = strip_counters(line);
            if plain.ends_with(rule_suffix) {
                return counters(line).unwrap_or_else(|| panic!("no counters in {line:?}"));
            }
        }
        panic!("no rule ending with {rule_suffix:?} in {chain} of {pod}:\n{out}")
    }

    /// `meshctl lab stop POD`.
    pub fn stop_pod(&self, pod: &str) {
        let out = meshctl(&["lab", "stop", pod, "--name", &self.name]);
        assert!(
            out.status.success(),
            "lab stop {pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `meshctl lab start POD` (returns once the pod is ready).
    pub fn start_pod(&self, pod: &str) {
        let bin_dir = bin("mesh-proxy")
            .parent()
            .expect("bin dir")
            .display()
            .to_string();
        let out = meshctl(&[
            "lab",
            "start",
            pod,
            "--name",
            &self.name,
            "--bin-dir",
            &bin_dir,
        ]);
        assert!(
            out.status.success(),
            "lab start {pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A pod's log (`proxy` or `app`).
    pub fn log(&self, pod: &str, which: &str) -> String {
        crate::read(
            &self
                .state_dir()
                .join("pods")
                .join(pod)
                .join(format!("{which}.log")),
        )
    }

    /// Takes the lab down and checks that nothing is left.
    pub fn down(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        let out = meshctl(&["lab", "down", "--name", &self.name]);
        assert!(
            out.status.success(),
            "lab down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let left = leftovers(&self.name);
        assert!(left.is_empty(), "lab down left: {left:#?}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.down {
            self.down = true;
            let _ = meshctl(&["lab", "down", "--name", &self.name]);
        }
    }
}

/// Everything of lab `name` still on the machine: namespaces, links,
/// /etc/netns entries, state, live processes started for it, and our
/// chains in the root namespace.
pub fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    let mut left = Vec::new();
    for l in String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).lines() {
        if l.starts_with(&prefix) {
            left.push(format!("netns {l}"));
        }
    }
    for l in String::from_utf8_lossy(&run("ip", &["-o", "link", "show"]).stdout).lines() {
        if let Some(n) = l.split(": ").nth(1)
            && n.starts_with(&prefix)
        {
            left.push(format!("link {n}"));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/etc/netns") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                left.push(format!("{}", e.path().display()));
            }
        }
    }
    let state = Path::new(STATE_DIR).join(name);
    if state.exists() {
        left.push(format!("{}", state.display()));
    }
    // The lab's state dir as a path of its own: `plt3` must not match the
    // processes of lab `plt31`.
    let marker = state.display().to_string();
    let (inside, whole) = (format!("{marker}/"), format!("{marker} "));
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if (cmd.contains(&inside) || cmd.contains(&whole)) && alive(pid) {
                left.push(format!("process {pid}: {cmd}"));
            }
        }
    }
    for tool in ["iptables", "ip6tables"] {
        let out = run(tool, &["-w", "-t", "nat", "-S"]);
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if l.contains("PALISADE") {
                left.push(format!("root {tool}: {l}"));
            }
        }
    }
    left
}

/// Whether a PID is a live process (zombies are dead).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
        })
        .is_some_and(|st| st != 'Z' && st != 'X')
}

fn strip_counters(line: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.next() {
        if w.starts_with('[') && w.ends_with(']') {
            continue;
        }
        if w == "-c" {
            words.next();
            words.next();
            continue;
        }
        out.push(w);
    }
    out.join(" ")
}

fn counters(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    if let Some(first) = words.first()
        && let Some(inner) = first.strip_prefix('[').and_then(|w| w.strip_suffix(']'))
    {
        return inner.split(':').next()?.parse().ok();
    }
    let i = words.iter().position(|w| *w == "-c")?;
    words.get(i + 1)?.parse().ok()
}

/// `tcpdump` on an interface, writing a pcap; stopped (by PID) on drop.
pub struct Capture {
    proc: Proc,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts capturing TCP on `iface` and waits until tcpdump listens.
    pub fn start(iface: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("capture.pcap");
        let mut cmd = Command::new("tcpdump");
        // -Z root: tcpdump would otherwise drop to its own user before
        // creating the file, in a folder only root may write. Immediate
        // mode: without it packets wait in the kernel's buffer for up to a
        // second, and a stop before then loses them.
        cmd.args([
            "-Z",
            "root",
            "--immediate-mode",
            "-i",
            iface,
            "-U",
            "-n",
            "-s",
            "0",
            "-w",
        ])
        .arg(&file)
        .arg("tcp");
        let proc = Proc::spawn(cmd, dir.path().join("tcpdump.log"));
        let log = proc.log.clone();
        wait_for("tcpdump listening", Duration::from_secs(10), || {
            crate::read(&log).contains("listening on").then_some(())
        });
        Self {
            proc,
            file,
            _dir: dir,
        }
    }

    /// Stops tcpdump (SIGTERM, so it flushes) and returns the packets.
    pub fn stop(mut self) -> Vec<Packet> {
        self.proc.terminate();
        self.proc.wait_exit(Duration::from_secs(5));
        let mut raw = Vec::new();
        std::fs::File::open(&self.file)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .expect("read capture");
        let packets = parse_pcap(&raw);
        assert!(
            !packets.is_empty(),
            "nothing captured ({} bytes); tcpdump said:\n{}",
            raw.len(),
            self.proc.logs()
        );
        packets
    }
}

/// One captured IPv4 TCP segment.
#[derive(Debug, Clone)]
pub struct Packet {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// IPv4 TCP segments of an Ethernet pcap (microsecond or nanosecond).
pub fn parse_pcap(raw: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    if raw.len() < 24 {
        return out;
    }
    let le = matches!(
        raw[0..4],
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]
    );
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    assert_eq!(u32_at(&raw[20..24]), 1, "capture is not Ethernet");
    let mut i = 24;
    while i + 16 <= raw.len() {
        let len = u32_at(&raw[i + 8..i + 12]) as usize;
        let Some(frame) = raw.get(i + 16..i + 16 + len) else {
            break;
        };
        i += 16 + len;
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if ip[9] != 6 || ip.len() < ihl + 20 {
            continue;
        }
        let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let tcp = &ip[ihl..total];
        let off = usize::from(tcp[12] >> 4) * 4;
        out.push(Packet {
            src: SocketAddr::from((src_ip, u16::from_be_bytes([tcp[0], tcp[1]]))),
            dst: SocketAddr::from((dst_ip, u16::from_be_bytes([tcp[2], tcp[3]]))),
            payload: tcp.get(off..).unwrap_or_default().to_vec(),
        });
    }
    out
}
