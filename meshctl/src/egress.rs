//! `meshctl egress report | suggest`: where workloads went outside the
//! mesh, from the proxies' admin `GET /egress` or from their access logs
//! (JSON lines with `"direction": "egress"`), and the EgressPolicy that
//! would allow exactly that.

pub mod cli;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::cert::admin::{AdminError, get_text};

/// Largest `/egress` document read.
const MAX_BYTES: usize = 4 << 20;

/// Connections to one destination with one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub namespace: String,
    pub workload: String,
    /// The name asked for, `-` when none.
    pub host: String,
    /// The address, for a connection without a name.
    #[serde(default)]
    pub ip: Option<String>,
    pub port: u16,
    pub protocol: String,
    pub decision: String,
    pub policy: String,
    pub connections: u64,
    /// RFC 3339.
    pub last_seen: String,
}

/// One line of a proxy's access log, when it is an egress line.
#[derive(Deserialize)]
struct LogLine {
    ts: String,
    direction: String,
    namespace: String,
    workload: String,
    dst: std::net::SocketAddr,
    host: String,
    port: u16,
    protocol: String,
    decision: String,
    policy: String,
    #[serde(default)]
    dry_run_policy: Option<String>,
}

fn parse_time(t: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// Whether `last_seen` is at or after `since` (no window: everything).
fn in_window(last_seen: &str, since: Option<SystemTime>) -> bool {
    since.is_none_or(|s| parse_time(last_seen).is_some_and(|t| t >= s))
}

/// The egress lines of a log (other lines, JSON or not, are skipped).
pub fn from_log(text: &str, since: Option<SystemTime>) -> Vec<Seen> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<LogLine>(l.trim()).ok())
        .filter(|l| l.direction == "egress" && in_window(&l.ts, since))
        .map(|l| Seen {
            ip: (l.host == "-").then(|| l.dst.ip().to_string()),
            namespace: l.namespace,
            workload: l.workload,
            host: l.host,
            port: l.port,
            protocol: l.protocol,
            decision: l.decision,
            policy: l.dry_run_policy.unwrap_or(l.policy),
            connections: 1,
            last_seen: l.ts,
        })
        .collect()
}

#[derive(Deserialize)]
struct AdminDoc {
    namespace: String,
    workload: String,
    destinations: Vec<AdminRow>,
}

#[derive(Deserialize)]
struct AdminRow {
    host: String,
    #[serde(default)]
    ip: Option<String>,
    port: u16,
    protocol: String,
    decision: String,
    policy: String,
    connections: u64,
    last_seen: String,
}

/// A proxy's `/egress` document.
pub fn from_admin(json: &str, since: Option<SystemTime>) -> Result<Vec<Seen>, String> {
    let doc: AdminDoc = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(doc
        .destinations
        .into_iter()
        .filter(|r| in_window(&r.last_seen, since))
        .map(|r| Seen {
            namespace: doc.namespace.clone(),
            workload: doc.workload.clone(),
            host: r.host,
            ip: r.ip,
            port: r.port,
            protocol: r.protocol,
            decision: r.decision,
            policy: r.policy,
            connections: r.connections,
            last_seen: r.last_seen,
        })
        .collect())
}

/// Fetches `/egress` from the admin at `url`.
pub async fn fetch(url: &str, timeout: Duration) -> Result<String, AdminError> {
    get_text(url, "/egress", MAX_BYTES, timeout).await
}

/// One destination of the report: its connections by decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub namespace: String,
    /// The host, or the address when the connection named none.
    pub destination: String,
    pub port: u16,
    pub protocol: String,
    pub workloads: BTreeSet<String>,
    pub connections: u64,
    pub allowed: u64,
    pub denied: u64,
    pub dry_run_denied: u64,
    pub policies: BTreeSet<String>,
    pub last_seen: String,
}

fn destination(s: &Seen) -> String {
    match (&s.ip, s.host.as_str()) {
        (Some(ip), "-") => ip.clone(),
        _ => s.host.clone(),
    }
}

/// The seen connections, one row per (namespace, destination, port,
/// protocol), in that order.
pub fn report(seen: &[Seen]) -> Vec<Row> {
    let mut rows: BTreeMap<(String, String, u16, String), Row> = BTreeMap::new();
    for s in seen {
        let dest = destination(s);
        let key = (
            s.namespace.clone(),
            dest.clone(),
            s.port,
            s.protocol.clone(),
        );
        let r = rows.entry(key).or_insert_with(|| Row {
            namespace: s.namespace.clone(),
            destination: dest,
            port: s.port,
            protocol: s.protocol.clone(),
            ..Row::default()
        });
        r.workloads.insert(s.workload.clone());
        r.connections += s.connections;
        match s.decision.as_str() {
            "deny" => r.denied += s.connections,
            "dry_run_deny" => r.dry_run_denied += s.connections,
            _ => r.allowed += s.connections,
        }
        r.policies.insert(s.policy.clone());
        if s.last_seen > r.last_seen {
            r.last_seen = s.last_seen.clone();
        }
    }
    rows.into_values().collect()
}

pub fn report_table(rows: &[Row]) -> String {
    if rows.is_empty() {
        return "no egress connections seen\n".to_owned();
    }
    let header = [
        "NAMESPACE",
        "DESTINATION",
        "PORT",
        "PROTOCOL",
        "CONNECTIONS",
        "ALLOWED",
        "DENIED",
        "DRY-RUN DENIED",
        "WORKLOADS",
        "POLICY",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.clone(),
                r.destination.clone(),
                r.port.to_string(),
                r.protocol.clone(),
                r.connections.to_string(),
                r.allowed.to_string(),
                r.denied.to_string(),
                r.dry_run_denied.to_string(),
                r.workloads.iter().cloned().collect::<Vec<_>>().join(","),
                r.policies.iter().cloned().collect::<Vec<_>>().join("; "),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// `mode:` of a suggested policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Enforce,
    DryRun,
}

/// One EgressPolicy per namespace that allows exactly the destinations in
/// `seen` (whatever they were decided then): a rule per host and protocol
/// with the ports it was reached on, a rule per address and protocol for
/// connections without a name; everything else denied.
pub fn suggest(seen: &[Seen], name: &str, mode: Mode) -> String {
    // namespace → (destination, protocol) → (is address, ports): a rule
    // per protocol, so a host reached over TLS on 443 and HTTP on 80 is
    // not allowed HTTP on 443.
    type Dest = (bool, BTreeSet<u16>);
    let mut by_ns: BTreeMap<&str, BTreeMap<(String, String), Dest>> = BTreeMap::new();
    for s in seen {
        let address = s.host == "-";
        let Some(dest) = (if address {
            s.ip.clone()
        } else {
            Some(s.host.clone())
        }) else {
            continue;
        };
        let d = by_ns
            .entry(&s.namespace)
            .or_default()
            .entry((dest, s.protocol.clone()))
            .or_insert_with(|| (address, BTreeSet::new()));
        d.1.insert(s.port);
    }
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    let list = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(", ");
    let mut all = String::new();
    for (ns, dests) in by_ns {
        if !all.is_empty() {
            all.push_str("---\n");
        }
        let _ = write!(
            all,
            "# Allows exactly the destinations {ns} was seen reaching.\n\
             apiVersion: policy.palisade.dev/v1alpha1\n\
             kind: EgressPolicy\n\
             metadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  mode: {}\n  default: deny\n",
            match mode {
                Mode::Enforce => "enforce",
                Mode::DryRun => "dry-run",
            }
        );
        let mut rules = String::new();
        let out = &mut rules;
        for ((dest, protocol), (address, ports)) in dests {
            if address {
                let cidr = match dest.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V6(_)) => format!("{dest}/128"),
                    _ => format!("{dest}/32"),
                };
                let _ = writeln!(out, "    - cidrs: [{}]", q(&cidr));
            } else if let Err(e) = mesh_policy::Host::parse(&dest, false) {
                // Not something a rule can name: said, not allowed.
                let _ = writeln!(out, "    # left out: {e}");
                continue;
            } else {
                let _ = writeln!(out, "    - hosts: [{}]", q(&dest));
            }
            let _ = writeln!(
                out,
                "      ports: [{}]",
                list(&mut ports.iter().map(u16::to_string))
            );
            let _ = writeln!(out, "      protocols: [{protocol}]");
        }
        if rules.lines().any(|l| !l.trim_start().starts_with('#')) {
            all.push_str("  allow:\n");
        } else {
            all.push_str("  allow: []\n");
        }
        all.push_str(&rules);
    }
    if all.is_empty() {
        all.push_str("# No egress connections seen: nothing to suggest.\n");
    }
    all
}

#[cfg(test)]
mod tests;
