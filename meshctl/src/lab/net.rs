//! The lab's network: one bridge in the root namespace, one network
//! namespace per pod with a veth into the bridge. Built with iproute2's
//! `ip`, and found again by name prefix, so `lab down` needs no state.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::LabError;
use super::spec::Network;

/// Per-netns files `ip netns exec` bind-mounts over /etc (here: hosts).
const ETC_NETNS: &str = "/etc/netns";

/// The lab's names, all derived from its name.
#[derive(Debug, Clone)]
pub struct Names {
    pub lab: String,
}

impl Names {
    pub fn new(lab: &str) -> Self {
        Self {
            lab: lab.to_owned(),
        }
    }
    /// Everything the lab creates starts with this.
    pub fn prefix(&self) -> String {
        format!("{}-", self.lab)
    }
    pub fn bridge(&self) -> String {
        format!("{}-br0", self.lab)
    }
    pub fn netns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.lab)
    }
    /// The host side of pod `index`'s veth (interface names are capped at
    /// 15 bytes, pod names are not).
    pub fn veth(&self, index: usize) -> String {
        format!("{}-v{index}", self.lab)
    }
    pub fn etc_dir(&self, pod: &str) -> PathBuf {
        PathBuf::from(ETC_NETNS).join(self.netns(pod))
    }
}

/// Runs `ip ARGS…`; its stderr becomes the error.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LabError::MissingTool {
                tool: "ip",
                package: "iproute2",
            },
            _ => LabError::Io {
                what: "cannot run ip".into(),
                error: e,
            },
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(LabError::Command {
        command: format!("ip {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// Refuses a network that overlaps an address or route already on the
/// host: the lab must never shadow a real network (or another lab).
pub fn check_free(net: &Network) -> Result<(), LabError> {
    let routes = ip(&["-4", "-o", "route", "show"])?;
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let in_use = routes
        .lines()
        .filter_map(|l| Some((l.split_whitespace().next()?, l)))
        .chain(
            addrs
                .lines()
                .filter_map(|l| Some((l.split_whitespace().nth(3)?, l))),
        )
        .find(|(block, _)| parse_block(block).is_some_and(|b| b.overlaps(net)));
    match in_use {
        Some((_, line)) => Err(LabError::NetworkInUse {
            network: net.to_string(),
            by: line.trim().to_owned(),
        }),
        None => Ok(()),
    }
}

/// `10.0.0.0/8`, `10.0.0.5/24` or a bare address; `default` is not a block
/// a lab can collide with.
fn parse_block(s: &str) -> Option<Network> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?),
        None => (s.parse::<Ipv4Addr>().ok()?, 32),
    };
    let prefix = prefix.min(32);
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Some(Network {
        base: Ipv4Addr::from(u32::from(addr) & mask),
        prefix,
    })
}

/// The bridge, with the gateway address, up.
pub fn create_bridge(names: &Names, net: &Network) -> Result<(), LabError> {
    let br = names.bridge();
    let gw = format!("{}/{}", net.gateway(), net.prefix);
    ip(&["link", "add", &br, "type", "bridge"])?;
    ip(&["addr", "add", &gw, "dev", &br])?;
    ip(&["link", "set", &br, "up"])?;
    Ok(())
}

/// One pod's namespace: `eth0` (a veth into the bridge) with the pod's
/// address, lo up, default route via the bridge.
pub fn create_pod(
    names: &Names,
    index: usize,
    pod: &str,
    addr: Ipv4Addr,
    net: &Network,
) -> Result<(), LabError> {
    let ns = names.netns(pod);
    let veth = names.veth(index);
    let cidr = format!("{addr}/{}", net.prefix);
    let gw = net.gateway().to_string();
    ip(&["netns", "add", &ns])?;
    ip(&[
        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    ip(&["link", "set", &veth, "master", &names.bridge()])?;
    ip(&["link", "set", &veth, "up"])?;
    ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &ns, "route", "add", "default", "via", &gw])?;
    // As container runtimes set for pods: an app may listen on any port
    // (the lab's "internet" serves 53, 80 and 443 as an unprivileged user).
    ip(&[
        "netns",
        "exec",
        &ns,
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start",
    ])?;
    Ok(())
}

/// Network namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Result<Vec<String>, LabError> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// Links in the root namespace whose name starts with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Result<Vec<String>, LabError> {
    Ok(ip(&["-o", "link", "show"])?
        .lines()
        // "7: pal-v0@if2: <BROADCAST,…"
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// PIDs of every process inside a network namespace.
pub fn netns_pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// `/etc/netns/<lab>-*` directories.
pub fn etc_dirs_with_prefix(prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(ETC_NETNS)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
