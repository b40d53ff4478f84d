//! The lab description, `DIR/lab.yaml`: the pods and how they are wired.
//! Services and policy are the other YAML files of DIR (see `docs/lab.md`).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::LabError;

/// The lab description's file name inside DIR.
pub const LAB_FILE: &str = "lab.yaml";
/// Lab name when neither lab.yaml nor `--name` gives one.
pub const DEFAULT_NAME: &str = "pal";
/// The longest lab name: it prefixes interface names (`<name>-br0`,
/// `<name>-v<n>`), and Linux caps those at 15 bytes.
const MAX_NAME_LEN: usize = 9;
/// Pods per lab: the host side of each veth is `<name>-v<index>`.
const MAX_PODS: usize = 200;
/// The UID apps run as: anything but root and the proxy's UID, so the
/// redirection applies to them.
pub const DEFAULT_APP_UID: u32 = 1000;

/// `lab.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabSpec {
    /// Prefix of the lab's network namespaces and links.
    #[serde(default)]
    pub name: Option<String>,
    /// The pods' subnet; the bridge takes its first address.
    pub network: Network,
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub control_plane: ControlPlaneSpec,
    /// The name server every pod's resolv.conf names (a pod of the lab
    /// running `mesh-dns`, say); the host's resolv.conf when absent.
    #[serde(default)]
    pub dns: Option<Ipv4Addr>,
    pub pods: Vec<PodSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneSpec {
    /// Workload certificate lifetime (`--cert-ttl`), e.g. `1h`.
    #[serde(default)]
    pub cert_ttl: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    /// Shell commands run in the pod as `appUid` (each with `sh -c`).
    #[serde(default)]
    pub app: Commands,
    /// Ports the app listens on; `lab up` waits until they are open.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `false`: no proxy and no redirection (a workload outside the mesh).
    #[serde(default = "yes")]
    pub sidecar: bool,
    #[serde(default = "default_app_uid")]
    pub app_uid: u32,
    #[serde(default)]
    pub skip_inbound_ports: Vec<u16>,
    #[serde(default)]
    pub skip_outbound_ports: Vec<u16>,
    #[serde(default)]
    pub skip_subnets: Vec<String>,
    /// The pod is the ingress gateway (`mesh-proxy ingress`): no app, no
    /// redirection; it listens on these ports of its address.
    #[serde(default)]
    pub ingress: Option<IngressPod>,
}

/// `ingress:` of a pod.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressPod {
    /// HTTPS for Ingress objects (Gateway listeners bring their own ports).
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// Plain HTTP that redirects to HTTPS; 0: off.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Made at `lab up`: a CA and a certificate for `hosts`, as the
    /// `kubernetes.io/tls` Secret `secret` (NAMESPACE/NAME).
    #[serde(default)]
    pub demo_certificate: Option<DemoCertificate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoCertificate {
    pub secret: String,
    pub hosts: Vec<String>,
}

fn default_https_port() -> u16 {
    443
}
fn default_http_port() -> u16 {
    80
}

/// One command or a list of them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Commands {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Commands {
    pub fn list(&self) -> Vec<String> {
        match self {
            Commands::None => Vec::new(),
            Commands::One(c) => vec![c.clone()],
            Commands::Many(v) => v.clone(),
        }
    }
}

fn default_namespace() -> String {
    "default".into()
}
fn default_service_account() -> String {
    "default".into()
}
fn default_app_uid() -> u32 {
    DEFAULT_APP_UID
}
fn yes() -> bool {
    true
}

/// An IPv4 subnet, `10.250.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR block like 10.250.0.0/24"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{s:?}: prefix must be 8..=30"))?;
        let base = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        if base != addr {
            return Err(format!(
                "{s:?}: host bits set; did you mean {base}/{prefix}?"
            ));
        }
        Ok(Self { base, prefix })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.base)
    }

    /// The bridge's address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) | !mask(self.prefix))
    }

    /// Whether two blocks share any address.
    pub fn overlaps(&self, other: &Network) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.base) & mask(p) == u32::from(other.base) & mask(p)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Network::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A Service's name and VIP, for the pods' hosts files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    pub name: String,
    pub namespace: String,
    pub vip: std::net::IpAddr,
}

/// A lab read from DIR and checked.
#[derive(Debug, Clone)]
pub struct Lab {
    pub dir: PathBuf,
    pub name: String,
    pub spec: LabSpec,
    pub services: Vec<ServiceName>,
    /// The YAML files that become the control plane's `--config-dir`.
    pub config_files: Vec<PathBuf>,
}

/// Reads `DIR/lab.yaml` and the Services among DIR's other YAML files, and
/// checks them. `name` (from `--name`) overrides the file's.
pub fn load(dir: &Path, name: Option<&str>) -> Result<Lab, LabError> {
    let file = dir.join(LAB_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| LabError::Spec {
        file: file.clone(),
        message: format!("cannot read it: {e}"),
    })?;
    let spec = parse(&text).map_err(|message| LabError::Spec {
        file: file.clone(),
        message,
    })?;
    let name = name
        .map(str::to_owned)
        .or_else(|| spec.name.clone())
        .unwrap_or_else(|| DEFAULT_NAME.to_owned());
    check_name(&name).map_err(|message| LabError::Spec {
        file: file.clone(),
        message,
    })?;
    check(&spec).map_err(|message| LabError::Spec {
        file: file.clone(),
        message,
    })?;

    let mut config_files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LabError::Spec {
        file: dir.to_path_buf(),
        message: format!("cannot read the folder: {e}"),
    })?;
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let yaml = n.ends_with(".yaml") || n.ends_with(".yml");
        if yaml && !n.starts_with('.') && n != LAB_FILE && n != "lab.yml" && e.path().is_file() {
            config_files.push(e.path());
        }
    }
    config_files.sort();

    // The control plane would refuse a broken folder; say so before
    // building anything, naming the file and object.
    let services = services_of(&config_files)?;
    for s in &services {
        if let std::net::IpAddr::V4(v4) = s.vip
            && spec.network.contains(v4)
        {
            return Err(LabError::Spec {
                file: file.clone(),
                message: format!(
                    "Service {}/{} has clusterIP {} inside the pod network {}; use another block (e.g. 10.251.0.0/24)",
                    s.namespace, s.name, s.vip, spec.network
                ),
            });
        }
    }
    Ok(Lab {
        dir: dir.to_path_buf(),
        name,
        spec,
        services,
        config_files,
    })
}

/// Parses lab.yaml text.
pub fn parse(text: &str) -> Result<LabSpec, String> {
    let mut options = serde_saphyr::Options::default();
    // YAML 1.2 booleans: `sidecar: no` must not be read as a string-y false.
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())
}

/// Checks what serde cannot: unique names and addresses, addresses inside
/// the network and not the bridge's.
pub fn check(spec: &LabSpec) -> Result<(), String> {
    let net = spec.network;
    if spec.pods.is_empty() {
        return Err("pods: a lab needs at least one pod".into());
    }
    if spec.pods.len() > MAX_PODS {
        return Err(format!("pods: at most {MAX_PODS} pods"));
    }
    let mut names = HashSet::new();
    let mut ips = HashSet::new();
    for (i, p) in spec.pods.iter().enumerate() {
        let at = format!("pods[{i}] ({})", p.name);
        check_dns_label(&p.name).map_err(|m| format!("pods[{i}].name: {m}"))?;
        check_dns_label(&p.namespace).map_err(|m| format!("{at}.namespace: {m}"))?;
        check_dns_label(&p.service_account).map_err(|m| format!("{at}.serviceAccount: {m}"))?;
        if !names.insert(&p.name) {
            return Err(format!("{at}: pod name {:?} is used twice", p.name));
        }
        if !net.contains(p.ip) || p.ip == net.base || p.ip == net.broadcast() {
            return Err(format!("{at}.ip: {} is not a host address of {net}", p.ip));
        }
        if p.ip == net.gateway() {
            return Err(format!("{at}.ip: {} is the bridge's address", p.ip));
        }
        if !ips.insert(p.ip) {
            return Err(format!("{at}.ip: {} is used twice", p.ip));
        }
        if let Some(ing) = &p.ingress {
            if !p.sidecar {
                return Err(format!(
                    "{at}.ingress: the ingress is a proxy; remove sidecar: false"
                ));
            }
            if ing.https_port == 0 || ing.https_port == ing.http_port {
                return Err(format!(
                    "{at}.ingress: httpsPort must be a port other than httpPort"
                ));
            }
        }
        if p.app_uid == 0 || p.app_uid == super::PROXY_UID {
            return Err(format!(
                "{at}.appUid: {} would bypass the redirection; use another UID (e.g. {DEFAULT_APP_UID})",
                p.app_uid
            ));
        }
        for (k, v) in &p.labels {
            if k.is_empty() || k.contains([',', '=']) || v.contains([',', '=']) {
                return Err(format!("{at}.labels: {k}={v}: ',' and '=' are not allowed"));
            }
        }
        for port in p
            .ports
            .iter()
            .chain(&p.skip_inbound_ports)
            .chain(&p.skip_outbound_ports)
        {
            if *port == 0 {
                return Err(format!("{at}: port 0"));
            }
        }
        for s in &p.skip_subnets {
            if s.contains([',', ' ']) || s.is_empty() {
                return Err(format!("{at}.skipSubnets: {s:?} is not one CIDR block"));
            }
        }
    }
    Ok(())
}

/// Lab names prefix interface names: short, lowercase, starting with a letter.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "lab name {name:?}: 1-{MAX_NAME_LEN} lowercase letters and digits, starting with a letter"
        ))
    }
}

fn check_dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} must be a DNS label (a-z, 0-9, '-')"))
    }
}

/// The Services of the config files, through the mesh's own loader, so a
/// folder the control plane would refuse is refused here first.
fn services_of(files: &[PathBuf]) -> Result<Vec<ServiceName>, LabError> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| LabError::Spec {
            file: f.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        let loaded = mesh_policy::parse_yaml(&f.display().to_string(), &text).map_err(|e| {
            LabError::Spec {
                file: f.clone(),
                message: e.to_string(),
            }
        })?;
        for s in loaded.services {
            if let Some(vip) = s.vip() {
                out.push(ServiceName {
                    namespace: s
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(default_namespace),
                    name: s.metadata.name.clone(),
                    vip,
                });
            }
        }
    }
    Ok(out)
}

/// `/etc/hosts` for one pod: every Service by `name.namespace`,
/// `name.namespace.svc`, `name.namespace.svc.cluster.local` (and the short
/// name within the pod's own namespace), as cluster DNS would answer, and
/// every pod by `pod.namespace.pod` (and its short name, unless a Service
/// already answers to it).
pub fn hosts_file(lab: &Lab, pod: &PodSpec) -> String {
    let mut s = String::from("# Written by meshctl lab up; removed by meshctl lab down.\n");
    s.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut short_names = HashSet::new();
    for svc in &lab.services {
        let (n, ns) = (&svc.name, &svc.namespace);
        let short = if *ns == pod.namespace {
            short_names.insert(n.as_str());
            format!(" {n}")
        } else {
            String::new()
        };
        s.push_str(&format!(
            "{}\t{n}.{ns} {n}.{ns}.svc {n}.{ns}.svc.cluster.local{short}\n",
            svc.vip
        ));
    }
    for p in &lab.spec.pods {
        let short = if short_names.contains(p.name.as_str()) {
            String::new()
        } else {
            format!(" {}", p.name)
        };
        s.push_str(&format!(
            "{}\t{}.{}.pod{short}\n",
            p.ip, p.name, p.namespace
        ));
    }
    s
}
