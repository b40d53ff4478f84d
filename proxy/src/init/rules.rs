//! The redirection rules, as text: what `mesh-proxy init` feeds to
//! `iptables-restore --noflush`, and what `--dry-run` prints.
//!
//! Rules are written in the canonical form `iptables -t nat -S` prints them
//! in (`-p tcp -m tcp --dport`, `/32` on host addresses), so an installed
//! rule set can be compared line by line with what was generated.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Our chain for traffic arriving at the pod, jumped to from PREROUTING.
pub const INBOUND_CHAIN: &str = "PALISADE_INBOUND";
/// Our chain for traffic the pod sends, jumped to from OUTPUT.
pub const OUTPUT_CHAIN: &str = "PALISADE_OUTPUT";

/// The built-in chains we jump from, and where to.
pub const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTPUT_CHAIN)];

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    pub fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn loopback(self) -> Cidr {
        match self {
            Family::V4 => Cidr {
                addr: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            Family::V6 => Cidr {
                addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// An address block, `10.0.0.0/8` or `fd00::/8`; a bare address is a host.
/// Host bits are cleared, as iptables does, so the rule text matches what
/// `iptables -S` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4 block never holds an IPv6
    /// address, nor the other way round).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }

    pub fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR block (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from((u32::from(a) & mask).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What to redirect: one pod's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirection {
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub proxy_uid: u32,
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
    pub skip_subnets: Vec<Cidr>,
}

impl Redirection {
    /// The rules of our two chains, in order, as `-A CHAIN …` lines.
    pub fn chain_rules(&self, family: Family) -> Vec<String> {
        let mut rules = Vec::new();
        let inbound = |r: &str| format!("-A {INBOUND_CHAIN} {r}");
        let output = |r: &str| format!("-A {OUTPUT_CHAIN} {r}");

        // Peers' mTLS already targets the inbound port; leave it un-NATed.
        rules.push(inbound(&format!(
            "-p tcp -m tcp --dport {} -j RETURN",
            self.inbound_port
        )));
        for p in dedup(&self.skip_inbound_ports) {
            rules.push(inbound(&format!("-p tcp -m tcp --dport {p} -j RETURN")));
        }
        rules.push(inbound(&format!(
            "-p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        )));

        // The proxy's own connections (to peers, the control plane and the
        // local app) must go where they were sent, or they would loop back
        // into the proxy.
        rules.push(output(&format!(
            "-m owner --uid-owner {} -j RETURN",
            self.proxy_uid
        )));
        // Traffic inside the pod (to 127.0.0.0/8, or to the pod's own IP,
        // which the kernel routes over lo) is not east-west traffic.
        rules.push(output("-o lo -j RETURN"));
        rules.push(output(&format!("-d {} -j RETURN", family.loopback())));
        let mut seen = Vec::new();
        for c in self.skip_subnets.iter().filter(|c| c.family() == family) {
            if !seen.contains(c) {
                seen.push(*c);
                rules.push(output(&format!("-d {c} -j RETURN")));
            }
        }
        for p in dedup(&self.skip_outbound_ports) {
            rules.push(output(&format!("-p tcp -m tcp --dport {p} -j RETURN")));
        }
        rules.push(output(&format!(
            "-p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        )));
        rules
    }

    /// The `iptables-restore --noflush` input that installs our chains.
    /// Declaring a chain (`:NAME`) creates it or, if it exists, flushes it,
    /// so re-running replaces the rules instead of adding a second copy.
    /// `missing_jumps` are the jumps from the built-in chains that are not
    /// installed yet (they live in chains we do not own, so they are added
    /// only when absent).
    pub fn restore_input(&self, family: Family, missing_jumps: &[(&str, &str)]) -> String {
        let mut s = String::from("*nat\n");
        s.push_str(&format!(":{INBOUND_CHAIN} - [0:0]\n"));
        s.push_str(&format!(":{OUTPUT_CHAIN} - [0:0]\n"));
        for r in self.chain_rules(family) {
            s.push_str(&r);
            s.push('\n');
        }
        for (from, to) in missing_jumps {
            s.push_str(&jump_rule(from, to));
            s.push('\n');
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// `-A PREROUTING -p tcp -j PALISADE_INBOUND`.
pub fn jump_rule(from: &str, to: &str) -> String {
    format!("-A {from} -p tcp -j {to}")
}

/// The arguments of a jump rule (without `-A CHAIN`), for `-C` / `-D`.
pub fn jump_args(to: &str) -> Vec<String> {
    ["-p", "tcp", "-j", to].map(String::from).to_vec()
}

/// Ports in first-seen order without repeats: a port given twice would
/// otherwise become two identical rules.
fn dedup(ports: &[u16]) -> Vec<u16> {
    let mut out = Vec::new();
    for p in ports {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}
