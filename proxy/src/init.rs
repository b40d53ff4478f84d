//! `mesh-proxy init`: installs a pod's traffic redirection in the current
//! network namespace, so unmodified apps are meshed without knowing it.
//!
//! nat table, two chains of our own:
//! - `PALISADE_INBOUND` (from PREROUTING): TCP arriving at the pod goes to the
//!   proxy's inbound port, except skip-ports and the inbound port itself;
//! - `PALISADE_OUTPUT` (from OUTPUT): TCP the pod sends goes to the proxy's
//!   outbound port, except the proxy's own UID (no loop), traffic that stays
//!   in the pod (loopback), skip-subnets and skip-ports.
//!
//! The kernel records the original destination in conntrack; the proxy reads
//! it back with `SO_ORIGINAL_DST` (see `orig_dst.rs`). Installing is
//! idempotent (the chains are replaced, the jumps added once), and
//! `--remove` deletes exactly the chains and jumps installed here.
//! IPv6 gets the same rules through ip6tables when it is installed.

pub mod rules;

#[cfg(test)]
mod tests;

use std::process::{Command, ExitCode, Stdio};
use std::str::FromStr;

use clap::Parser;

pub use rules::{Cidr, Family, Redirection};

/// The proxy's inbound listener (DESIGN.md ports).
pub const DEFAULT_INBOUND_PORT: u16 = 4143;
/// The proxy's outbound listener (DESIGN.md ports).
pub const DEFAULT_OUTPUT_PORT: u16 = 4140;
/// The UID the proxy runs as; its traffic is never redirected.
pub const DEFAULT_PROXY_UID: u32 = 2102;
/// A stale jump is deleted at most this many times: more copies than this
/// means something else keeps adding it, and looping forever would hide that.
const MAX_JUMP_COPIES: usize = 16;

/// Install (or remove) the pod's traffic redirection (iptables)
#[derive(Debug, Clone, Parser)]
#[command(
    long_about = "Install (or remove) the pod's traffic redirection in the current \
    network namespace, with iptables (nat table; ip6tables too when installed).\n\n\
    Inbound TCP goes to the proxy's inbound port, outbound TCP to its outbound port. \
    Not redirected: connections of the proxy's UID (so the proxy does not loop into \
    itself), traffic that stays in the pod (lo, 127.0.0.0/8), and the skip-ports and \
    skip-subnets given. The rules live in two chains of our own, PALISADE_INBOUND (from \
    PREROUTING) and PALISADE_OUTPUT (from OUTPUT): re-running replaces them, --remove \
    deletes exactly them and the two jumps. Needs root (CAP_NET_ADMIN) in the pod's \
    network namespace; run it before the app starts, e.g. as an init container.\n\n\
    Examples:\n  \
    mesh-proxy init --skip-inbound-ports 4191 --dry-run\n  \
    ip netns exec pod1 mesh-proxy init --skip-outbound-ports 5432 --skip-subnets 10.96.0.0/12\n  \
    mesh-proxy init --remove"
)]
pub struct InitArgs {
    /// Where inbound TCP is redirected (the proxy's --inbound port).
    #[arg(long, env = "MESH_INBOUND_PORT", default_value_t = DEFAULT_INBOUND_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub inbound_port: u16,

    /// Where outbound TCP is redirected (the proxy's --outbound port).
    #[arg(long, env = "MESH_OUTBOUND_PORT", default_value_t = DEFAULT_OUTPUT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub outbound_port: u16,

    /// The UID the proxy runs as; its own connections are not redirected.
    #[arg(long, env = "MESH_PROXY_UID", default_value_t = DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,

    /// Inbound destination ports that reach the app directly, P,P,…
    #[arg(
        long,
        env = "MESH_SKIP_INBOUND_PORTS",
        value_name = "P,…",
        default_value = ""
    )]
    pub skip_inbound_ports: PortList,

    /// Outbound destination ports that bypass the proxy, P,P,…
    #[arg(
        long,
        env = "MESH_SKIP_OUTBOUND_PORTS",
        value_name = "P,…",
        default_value = ""
    )]
    pub skip_outbound_ports: PortList,

    /// Outbound destinations that bypass the proxy, CIDR,CIDR,… (IPv4 and IPv6)
    #[arg(
        long,
        env = "MESH_SKIP_SUBNETS",
        value_name = "CIDR,…",
        default_value = ""
    )]
    pub skip_subnets: CidrList,

    /// Print the rules (iptables-restore input) and change nothing.
    #[arg(long, env = "MESH_DRY_RUN")]
    pub dry_run: bool,

    /// Remove the chains and jumps installed by init (nothing else).
    #[arg(long, env = "MESH_REMOVE")]
    pub remove: bool,

    /// Leave IPv6 alone even when ip6tables is installed.
    #[arg(long, env = "MESH_IPV4_ONLY")]
    pub ipv4_only: bool,
}

impl InitArgs {
    pub fn redirection(&self) -> Redirection {
        Redirection {
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            proxy_uid: self.proxy_uid,
            skip_inbound_ports: self.skip_inbound_ports.0.clone(),
            skip_outbound_ports: self.skip_outbound_ports.0.clone(),
            skip_subnets: self.skip_subnets.0.clone(),
        }
    }
}

/// `P,P,…`; empty means none (an injector may set `MESH_SKIP_…=""`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

impl FromStr for PortList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        split_list(s)
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
            })
            .collect::<Result<_, _>>()
            .map(PortList)
    }
}

/// `CIDR,CIDR,…`; empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

impl CidrList {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

impl FromStr for CidrList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        split_list(s)
            .map(Cidr::from_str)
            .collect::<Result<_, _>>()
            .map(CidrList)
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// Why init could not do its job, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{tool} not found: install it with scripts/setup.sh (apt-get install iptables)")]
    Missing { tool: &'static str },
    #[error(
        "{command}: permission denied; run mesh-proxy init as root (CAP_NET_ADMIN) in the pod's network namespace"
    )]
    Permission { command: String },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run {command}: {error}")]
    Spawn {
        command: String,
        error: std::io::Error,
    },
}

/// The iptables commands init needs, behind a trait so rule handling can be
/// tested without root.
pub trait Iptables {
    /// Whether the family's tools are installed.
    fn available(&self, family: Family) -> bool;
    /// Runs `iptables -w -t nat ARGS…`; `Ok(false)` when it ran and said no
    /// (`-C` of an absent rule, `-S` of an absent chain).
    fn nat(&self, family: Family, args: &[String]) -> Result<bool, InitError>;
    /// Feeds `input` to `iptables-restore -w --noflush` (one atomic commit).
    fn restore(&self, family: Family, input: &str) -> Result<(), InitError>;
}

/// The real tools, found on PATH.
pub struct SystemIptables;

impl Iptables for SystemIptables {
    fn available(&self, family: Family) -> bool {
        Command::new(family.iptables())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn nat(&self, family: Family, args: &[String]) -> Result<bool, InitError> {
        let tool = family.iptables();
        let command = format!("{tool} -w -t nat {}", args.join(" "));
        let out = Command::new(tool)
            .args(["-w", "-t", "nat"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_error(tool, command.clone(), e))?;
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        check_permission(&command, &stderr)?;
        // iptables exits 1 for "no such rule" and 1 or 2 for "no such chain";
        // anything it says beyond that is for the caller's next step to hit.
        if matches!(out.status.code(), Some(1 | 2)) {
            Ok(false)
        } else {
            Err(InitError::Failed {
                command,
                status: out.status.to_string(),
                stderr,
            })
        }
    }

    fn restore(&self, family: Family, input: &str) -> Result<(), InitError> {
        use std::io::Write;
        let tool = family.restore();
        let command = format!("{tool} -w --noflush");
        let mut child = Command::new(tool)
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(tool, command.clone(), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means the tool exited early; its stderr says why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| InitError::Spawn {
            command: command.clone(),
            error: e,
        })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        check_permission(&command, &stderr)?;
        Err(InitError::Failed {
            command,
            status: out.status.to_string(),
            stderr,
        })
    }
}

fn spawn_error(tool: &'static str, command: String, e: std::io::Error) -> InitError {
    if e.kind() == std::io::ErrorKind::NotFound {
        InitError::Missing { tool }
    } else {
        InitError::Spawn { command, error: e }
    }
}

fn check_permission(command: &str, stderr: &str) -> Result<(), InitError> {
    if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") {
        return Err(InitError::Permission {
            command: command.to_string(),
        });
    }
    Ok(())
}

/// The families to act on: IPv4 always (its absence is an error), IPv6 when
/// ip6tables is installed and not turned off.
pub fn families(ipt: &dyn Iptables, ipv4_only: bool) -> Result<Vec<Family>, InitError> {
    if !ipt.available(Family::V4) {
        return Err(InitError::Missing { tool: "iptables" });
    }
    let mut f = vec![Family::V4];
    if !ipv4_only && ipt.available(Family::V6) {
        f.push(Family::V6);
    }
    Ok(f)
}

/// Installs (or replaces) the redirection for one family.
pub fn install(ipt: &dyn Iptables, family: Family, r: &Redirection) -> Result<(), InitError> {
    let mut missing = Vec::new();
    for (from, to) in rules::JUMPS {
        let mut check = vec!["-C".to_string(), from.to_string()];
        check.extend(rules::jump_args(to));
        if !ipt.nat(family, &check)? {
            missing.push((from, to));
        }
    }
    ipt.restore(family, &r.restore_input(family, &missing))
}

/// The commands that remove the redirection for one family, given which of
/// our chains exist. Jumps go first: a chain that is still referenced cannot
/// be deleted.
pub fn removal_commands(existing_chains: &[&str]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for (from, to) in rules::JUMPS {
        let mut d = vec!["-D".to_string(), from.to_string()];
        d.extend(rules::jump_args(to));
        cmds.push(d);
    }
    for chain in [rules::INBOUND_CHAIN, rules::OUTPUT_CHAIN] {
        if existing_chains.contains(&chain) {
            cmds.push(vec!["-F".into(), chain.into()]);
            cmds.push(vec!["-X".into(), chain.into()]);
        }
    }
    cmds
}

/// Removes the redirection for one family; removing what is not there is
/// not an error.
pub fn remove(ipt: &dyn Iptables, family: Family) -> Result<(), InitError> {
    for (from, to) in rules::JUMPS {
        let mut d = vec!["-D".to_string(), from.to_string()];
        d.extend(rules::jump_args(to));
        // `-D` deletes one copy; someone may have added the jump twice.
        for _ in 0..MAX_JUMP_COPIES {
            if !ipt.nat(family, &d)? {
                break;
            }
        }
    }
    for chain in [rules::INBOUND_CHAIN, rules::OUTPUT_CHAIN] {
        if ipt.nat(family, &["-S".into(), chain.into()])? {
            for op in ["-F", "-X"] {
                let args = [op.to_string(), chain.to_string()];
                if !ipt.nat(family, &args)? {
                    return Err(InitError::Failed {
                        command: format!("{} -w -t nat {op} {chain}", family.iptables()),
                        status: "refused".into(),
                        stderr: format!("chain {chain} exists but could not be {op}'d"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// What `--dry-run` prints: the exact restore input per family (with both
/// jumps, as on a namespace that has none yet), or the removal commands.
pub fn dry_run(args: &InitArgs, families: &[Family]) -> String {
    let r = args.redirection();
    let mut out = String::new();
    for &f in families {
        if args.remove {
            out.push_str(&format!("# {}: removal\n", f.name()));
            for cmd in removal_commands(&[rules::INBOUND_CHAIN, rules::OUTPUT_CHAIN]) {
                out.push_str(&format!("{} -w -t nat {}\n", f.iptables(), cmd.join(" ")));
            }
        } else {
            out.push_str(&format!(
                "# {}: {} -w --noflush (jumps are added only when missing)\n",
                f.name(),
                f.restore()
            ));
            out.push_str(&r.restore_input(f, &rules::JUMPS));
        }
    }
    if !families.contains(&Family::V6) {
        out.push_str("# IPv6: not touched (ip6tables not installed, or --ipv4-only)\n");
    }
    out
}

/// Runs `mesh-proxy init` against `ipt`; returns what to print on stdout.
pub fn run_with(ipt: &dyn Iptables, args: &InitArgs) -> Result<String, InitError> {
    if args.dry_run {
        // A dry run changes nothing, so it needs no iptables at all; it
        // prints IPv6 rules only where they would be installed.
        let mut f = vec![Family::V4];
        if !args.ipv4_only && ipt.available(Family::V6) {
            f.push(Family::V6);
        }
        return Ok(dry_run(args, &f));
    }
    let families = families(ipt, args.ipv4_only)?;
    let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
    if args.remove {
        for &f in &families {
            remove(ipt, f)?;
        }
        return Ok(format!(
            "removed {} and {} ({})\n",
            rules::INBOUND_CHAIN,
            rules::OUTPUT_CHAIN,
            names.join(", ")
        ));
    }
    let r = args.redirection();
    for &f in &families {
        install(ipt, f, &r)?;
    }
    Ok(format!(
        "installed ({}): inbound TCP -> :{}, outbound TCP -> :{}, uid {} and loopback excluded\n",
        names.join(", "),
        r.inbound_port,
        r.outbound_port,
        r.proxy_uid
    ))
}

/// `mesh-proxy init` with the system's iptables.
pub fn main(args: &InitArgs) -> ExitCode {
    match run_with(&SystemIptables, args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh-proxy init: {e}");
            ExitCode::FAILURE
        }
    }
}
