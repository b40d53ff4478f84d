//! `lab status`: the pods, their identities and certificates, and the
//! traffic their proxies have seen, read from each proxy's admin, plus the
//! control plane's view.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use super::state::{Paths, State};
use super::{http, net, process};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub network: String,
    pub gateway: String,
    pub config_dir: String,
    pub up_seconds: Option<f64>,
    pub control_plane: Option<ControlPlane>,
    pub pods: Vec<Pod>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControlPlane {
    pub listen: String,
    pub admin: String,
    pub running: bool,
    pub ready: bool,
    pub policy_version: Option<u64>,
    pub policy_objects: usize,
    pub policy_error: Option<String>,
    pub connected_proxies: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub sidecar: bool,
    /// The pod is the ingress gateway.
    pub ingress: bool,
    /// Processes alive in the pod's namespace.
    pub processes: usize,
    pub ready: bool,
    pub identity: Option<String>,
    pub cert_not_after: Option<String>,
    pub cert_seconds_left: Option<i64>,
    pub traffic: Option<Traffic>,
}

/// Counters from the proxy's /metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Traffic {
    /// `mesh_tcp_connections_total{direction="inbound",tls="true"}`
    pub inbound_mtls: u64,
    /// `…{direction="inbound",tls="false"}`: plaintext clients admitted.
    pub inbound_plaintext: u64,
    /// `…{direction="outbound"}`
    pub outbound: u64,
    /// `mesh_authz_decisions_total{decision="allow"}`
    pub allowed: u64,
    /// `…{decision="deny"}`
    pub denied: u64,
    /// Denials by what decided them (`<kind> <ns>/<name> rule <n>`, `default deny`).
    pub denied_by: Vec<(String, u64)>,
    /// `mesh_retries_total{result="retried"}`: retries this proxy sent.
    pub retries: u64,
    /// `mesh_endpoint_ejections_total`: endpoints this proxy ejected.
    pub ejections: u64,
    /// `mesh_ratelimited_total{mode="enforced"}`: requests refused with 429.
    pub rate_limited: u64,
    /// At the edge (an ingress), apart from the mesh's counters above:
    /// `mesh_tcp_connections_total{direction="ingress"}`, TLS from outside.
    pub edge_connections: u64,
    /// `mesh_requests_total{direction="ingress"}` by status class.
    pub edge_requests: [u64; 3],
    /// `mesh_authz_decisions_total{direction="ingress",decision="deny"}`.
    pub edge_denied: u64,
    /// Connections leaving the mesh, `mesh_egress_connections_total`:
    /// (host, decision, count), by host.
    pub egress: Vec<(String, String, u64)>,
}

/// Collects the lab's status; unreachable parts are shown as such, never
/// an error.
pub fn collect(state: &State, paths: &Paths) -> Status {
    let control_plane = state.control_plane.as_ref().map(|cp| {
        let st = http::get_json(cp.admin, "/status");
        let policy = st.as_ref().map(|s| &s["policy"]);
        ControlPlane {
            listen: cp.listen.to_string(),
            admin: cp.admin.to_string(),
            running: process::alive(cp.pid),
            ready: matches!(http::get(cp.admin, "/ready"), Ok((200, _))),
            policy_version: policy.and_then(|p| p["version"].as_u64()),
            policy_objects: policy
                .and_then(|p| p["objects"].as_array())
                .map_or(0, Vec::len),
            policy_error: policy.and_then(|p| p["error"].as_str()).map(str::to_owned),
            connected_proxies: policy
                .and_then(|p| p["connected_proxies"].as_array())
                .map_or(0, Vec::len),
        }
    });
    let pods = state
        .pods
        .iter()
        .map(|p| {
            let processes = net::netns_pids(&p.netns).len();
            let mut pod = Pod {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                ip: p.ip.to_string(),
                sidecar: p.sidecar,
                ingress: p.proxy_args.first().is_some_and(|a| a == "ingress"),
                processes,
                ready: !p.sidecar && processes > 0,
                identity: None,
                cert_not_after: None,
                cert_seconds_left: None,
                traffic: None,
            };
            if let Some(admin) = p.admin {
                pod.ready = matches!(http::get(admin, "/ready"), Ok((200, _)));
                if let Some(certs) = http::get_json(admin, "/certs") {
                    pod.identity = certs["identity"].as_str().map(str::to_owned);
                    pod.cert_not_after = certs["not_after"].as_str().map(str::to_owned);
                    pod.cert_seconds_left = pod.cert_not_after.as_deref().and_then(seconds_until);
                }
                if let Ok((200, text)) = http::get(admin, "/metrics") {
                    pod.traffic = Some(traffic(&text));
                }
            }
            pod
        })
        .collect();
    Status {
        name: state.name.clone(),
        network: state.network.clone(),
        gateway: state.gateway.to_string(),
        config_dir: paths.config().display().to_string(),
        up_seconds: state.up_seconds,
        control_plane,
        pods,
    }
}

/// The traffic counters `lab status` shows, from Prometheus text.
pub fn traffic(text: &str) -> Traffic {
    let n = |v: f64| v.max(0.0) as u64;
    let conns = "mesh_tcp_connections_total";
    let authz = "mesh_authz_decisions_total";
    let mut denied_by: Vec<(String, u64)> = Vec::new();
    for s in http::samples(text, authz) {
        if s.label("decision") == Some("deny") && s.label("direction") != Some("ingress") {
            let by = s.label("policy").unwrap_or("?").to_owned();
            match denied_by.iter_mut().find(|(p, _)| *p == by) {
                Some((_, c)) => *c += n(s.value),
                None => denied_by.push((by, n(s.value))),
            }
        }
    }
    denied_by.sort();
    let edge_denied = http::sum(
        text,
        authz,
        &[("direction", "ingress"), ("decision", "deny")],
    );
    let mut edge_requests = [0u64; 3];
    for s in http::samples(text, "mesh_requests_total") {
        if s.label("direction") != Some("ingress") {
            continue;
        }
        let class = match s.label("code").and_then(|c| c.bytes().next()) {
            Some(b'5') => 2,
            Some(b'4') => 1,
            _ => 0,
        };
        edge_requests[class] += n(s.value);
    }
    let mut egress: Vec<(String, String, u64)> =
        http::samples(text, "mesh_egress_connections_total")
            .iter()
            .map(|s| {
                (
                    s.label("host").unwrap_or("-").to_owned(),
                    s.label("decision").unwrap_or("-").to_owned(),
                    n(s.value),
                )
            })
            .collect();
    egress.sort();
    Traffic {
        egress,
        edge_connections: n(http::sum(text, conns, &[("direction", "ingress")])),
        edge_requests,
        edge_denied: n(edge_denied),
        inbound_mtls: n(http::sum(
            text,
            conns,
            &[("direction", "inbound"), ("tls", "true")],
        )),
        inbound_plaintext: n(http::sum(
            text,
            conns,
            &[("direction", "inbound"), ("tls", "false")],
        )),
        outbound: n(http::sum(text, conns, &[("direction", "outbound")])),
        allowed: n(http::sum(text, authz, &[("decision", "allow")])
            - http::sum(
                text,
                authz,
                &[("direction", "ingress"), ("decision", "allow")],
            )),
        denied: n(http::sum(text, authz, &[("decision", "deny")]) - edge_denied),
        denied_by,
        retries: n(http::sum(
            text,
            "mesh_retries_total",
            &[("result", "retried")],
        )),
        ejections: n(http::sum(text, "mesh_endpoint_ejections_total", &[])),
        rate_limited: n(http::sum(
            text,
            "mesh_ratelimited_total",
            &[("mode", "enforced")],
        )),
    }
}

fn seconds_until(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    let now = time::OffsetDateTime::from(SystemTime::now());
    Some((t - now).whole_seconds())
}

fn left(secs: i64) -> String {
    if secs <= 0 {
        "expired".into()
    } else if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// The table `lab status` prints.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let up = s
        .up_seconds
        .map(|u| format!(", up in {u:.1}s"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "lab {}: network {} (bridge {}){up}",
        s.name, s.network, s.gateway
    );
    match &s.control_plane {
        Some(cp) => {
            let state = match (cp.running, cp.ready) {
                (true, true) => "ready",
                (true, false) => "NOT READY",
                (false, _) => "NOT RUNNING",
            };
            let _ = writeln!(
                out,
                "control plane {} (admin {}): {state}, policy v{} ({} objects), {} proxies connected",
                cp.listen,
                cp.admin,
                cp.policy_version.map_or("?".into(), |v| v.to_string()),
                cp.policy_objects,
                cp.connected_proxies
            );
            if let Some(e) = &cp.policy_error {
                let _ = writeln!(out, "  policy error (last good policy in force): {e}");
            }
        }
        None => {
            let _ = writeln!(out, "control plane: not started");
        }
    }
    let _ = writeln!(out, "config: {} (edit to change policy live)", s.config_dir);
    let _ = writeln!(out);

    let header = [
        "POD",
        "NAMESPACE",
        "IP",
        "READY",
        "IDENTITY",
        "CERT LEFT",
        "IN mTLS",
        "IN PLAIN",
        "OUT",
        "ALLOW",
        "DENY",
        "RETRY",
        "EJECT",
        "429",
    ];
    let rows: Vec<Vec<String>> = s
        .pods
        .iter()
        .map(|p| {
            let t = p.traffic.clone().unwrap_or_default();
            let dash = || "-".to_string();
            let ready = match (p.sidecar, p.ready) {
                (_, true) => "yes".to_string(),
                (true, false) if p.processes == 0 => "stopped".to_string(),
                _ => "no".to_string(),
            };
            let num = |v: u64| if p.sidecar { v.to_string() } else { dash() };
            vec![
                p.name.clone(),
                p.namespace.clone(),
                p.ip.clone(),
                ready,
                if p.sidecar {
                    p.identity.clone().unwrap_or_else(dash)
                } else {
                    "(no sidecar)".into()
                },
                p.cert_seconds_left.map(left).unwrap_or_else(dash),
                num(t.inbound_mtls),
                num(t.inbound_plaintext),
                num(t.outbound),
                num(t.allowed),
                num(t.denied),
                num(t.retries),
                num(t.ejections),
                num(t.rate_limited),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }

    let denials: Vec<(&str, &str, u64)> = s
        .pods
        .iter()
        .flat_map(|p| {
            p.traffic
                .iter()
                .flat_map(|t| t.denied_by.iter())
                .map(move |(by, c)| (p.name.as_str(), by.as_str(), *c))
        })
        .collect();
    let edges: Vec<&Pod> = s.pods.iter().filter(|p| p.ingress).collect();
    if !edges.is_empty() {
        let _ = writeln!(
            out,
            "\nedge traffic (outside clients at the ingress, not counted above):"
        );
        for p in edges {
            let t = p.traffic.clone().unwrap_or_default();
            let [ok, client, server] = t.edge_requests;
            let _ = writeln!(
                out,
                "  {}: {} TLS connections, {} requests ({ok} 1xx-3xx, {client} 4xx, {server} 5xx), {} denied by edge policy",
                p.name,
                t.edge_connections,
                ok + client + server,
                t.edge_denied
            );
        }
    }
    let egress: Vec<(&str, &(String, String, u64))> = s
        .pods
        .iter()
        .flat_map(|p| {
            p.traffic
                .iter()
                .flat_map(|t| t.egress.iter())
                .map(move |e| (p.name.as_str(), e))
        })
        .collect();
    if !egress.is_empty() {
        let _ = writeln!(out, "\negress outside the mesh (connections by host):");
        for (pod, (host, decision, c)) in egress {
            let decision = match decision.as_str() {
                "allow" => "allowed",
                "deny" => "denied",
                "dry_run_deny" => "denied in dry-run only",
                other => other,
            };
            let _ = writeln!(out, "  {pod}: {host}: {c} {decision}");
        }
    }
    if !denials.is_empty() {
        let _ = writeln!(out, "\ndenied connections and requests:");
        for (pod, by, c) in denials {
            let _ = writeln!(out, "  {pod}: {c} by {by}");
        }
    }
    out
}
