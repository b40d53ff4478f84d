//! Connections leaving the mesh, decided by EgressPolicy before a byte is
//! forwarded: the first bytes give the name the client asks for
//! (`peek`: TLS SNI, HTTP `Host`), the evaluator decides by name, address,
//! port and protocol, and a connection allowed by name goes only to an
//! address that name resolves to (`dns`). Refused: HTTP gets a 403 naming
//! the rule, anything else a reset. Every connection is counted
//! (`mesh_egress_connections_total{namespace,host,decision}`, at most
//! `--egress-host-labels` hosts, the rest as `other`) and written to the
//! access log; dry-run denials are counted and logged as such.
//!
//! NetworkPolicy egress (by address) is decided first, as before; a
//! workload no EgressPolicy selects is relayed without a look at its bytes.

pub mod dns;
pub mod peek;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mesh_policy::resource::egress::EgressProtocol;
use mesh_policy::{DecidedBy, Decision, EgressRequest, Verdict};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Outbound;
use crate::access::{self, EgressLine};
use crate::errors::{AuthzError, Error};
use crate::http::client::connect_tcp;
use crate::outbound::connect::DEFAULT_PEER_CONNECT_TIMEOUT;
use crate::transport::relay::relay;

/// Hosts named in `mesh_egress_connections_total` before the rest fold
/// into `host="other"`.
pub const DEFAULT_HOST_LABELS: usize = 256;

/// The label every host past the limit shares.
pub const OTHER_HOST: &str = "other";

/// What the egress decision needs besides the policy.
pub struct Gate {
    pub names: dns::Names,
    pub hosts: HostLabels,
    pub seen: Arc<Destinations>,
}

/// Distinct destinations kept for `/egress` before new ones are only
/// counted as dropped.
pub const MAX_DESTINATIONS: usize = 1024;

/// Where the workload went: each distinct (host, or address when there
/// was no name; port, protocol, decision, policy), with its count and when
/// it was first and last seen. Served at the admin's `/egress`, read by
/// `meshctl egress report` and `suggest`.
#[derive(Default)]
pub struct Destinations {
    table: Mutex<std::collections::HashMap<DestinationKey, DestinationStats>>,
    dropped: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DestinationKey {
    host: Option<String>,
    /// Only for a connection without a name.
    ip: Option<std::net::IpAddr>,
    port: u16,
    protocol: &'static str,
    decision: &'static str,
    policy: DecidedBy,
}

#[derive(Debug, Clone, Copy)]
struct DestinationStats {
    connections: u64,
    first_seen: SystemTime,
    last_seen: SystemTime,
}

impl Destinations {
    fn note(&self, key: DestinationKey, now: SystemTime) {
        let Ok(mut t) = self.table.lock() else {
            return;
        };
        if let Some(s) = t.get_mut(&key) {
            s.connections += 1;
            s.last_seen = now;
        } else if t.len() < MAX_DESTINATIONS {
            t.insert(
                key,
                DestinationStats {
                    connections: 1,
                    first_seen: now,
                    last_seen: now,
                },
            );
        } else {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// `/egress`: `{"destinations": [...], "dropped": N}`.
    pub fn to_json(&self, local: &crate::policy::LocalWorkload) -> serde_json::Value {
        let mut rows: Vec<serde_json::Value> = self
            .table
            .lock()
            .map(|t| {
                t.iter()
                    .map(|(k, s)| {
                        serde_json::json!({
                            "host": k.host.as_deref().unwrap_or("-"),
                            "ip": k.ip.map(|ip| ip.to_string()),
                            "port": k.port,
                            "protocol": k.protocol,
                            "decision": k.decision,
                            "policy": k.policy.to_string(),
                            "connections": s.connections,
                            "first_seen": access::timestamp(s.first_seen),
                            "last_seen": access::timestamp(s.last_seen),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by_key(|r| r.to_string());
        serde_json::json!({
            "namespace": local.namespace,
            "workload": local.name,
            "destinations": rows,
            "dropped": self.dropped.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

/// The bounded set of host label values.
pub struct HostLabels {
    max: usize,
    seen: Mutex<HashSet<Arc<str>>>,
}

impl HostLabels {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// `host` itself while fewer than `max` hosts have been named, or
    /// already was; `other` past that.
    pub fn label(&self, host: &str) -> Arc<str> {
        let Ok(mut seen) = self.seen.lock() else {
            return Arc::from(OTHER_HOST);
        };
        if let Some(h) = seen.get(host) {
            return h.clone();
        }
        if seen.len() >= self.max {
            return Arc::from(OTHER_HOST);
        }
        let h: Arc<str> = Arc::from(host);
        seen.insert(h.clone());
        h
    }
}

/// A connection from the app to `dst`, outside the mesh.
pub async fn serve(out: &Outbound, mut app: TcpStream, dst: SocketAddr) -> Result<(), Error> {
    out.egress.check(dst, None, "-")?;
    let view = out.egress.policy.borrow().clone();
    let Some(view) = view.filter(|v| v.evaluator.has_egress_policies()) else {
        return relay_to(out, app, dst, Vec::new()).await;
    };
    let seen = peek::peek(&mut app, out.detect_timeout)
        .await
        .map_err(|e| Error::Http(crate::errors::HttpError::BadRequest(e.to_string())))?;
    let local = &out.egress.local;
    let decided = view.evaluator.egress(&EgressRequest {
        source: local.as_workload(),
        host: seen.host.as_deref(),
        ip: dst.ip(),
        port: dst.port(),
        protocol: seen.protocol,
        now: SystemTime::now(),
    });
    drop(view);
    let mut decision = decided.decision;
    let mut reason: Option<String> = seen.malformed.map(str::to_owned);
    if decided.by_name
        && decision.is_allowed()
        && let Some(host) = seen.host.as_deref()
    {
        let refused = match out.gate.names.resolves_to(host, dst.ip()).await {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "{host} does not resolve to {} (domain fronting)",
                dst.ip()
            )),
            Err(e) => Some(format!("cannot resolve {e}")),
        };
        if let Some(why) = refused {
            decision = denied_by(decision.decided_by);
            reason = Some(why);
        }
    }
    record(out, &seen, dst, &decision, reason.as_deref());
    if decision.is_allowed() {
        let mut prefix = seen.prefix;
        // One request per plaintext connection: the next one, maybe for
        // another Host, comes on a new connection and is decided again.
        if seen.protocol == EgressProtocol::Http
            && seen.host.is_some()
            && decision.decided_by != DecidedBy::DefaultAllow
        {
            peek::close_after_first(&mut prefix);
        }
        return relay_to(out, app, dst, prefix).await;
    }
    refuse(app, seen.protocol, &decision, reason.as_deref()).await;
    Err(AuthzError::Denied(decision.decided_by.to_string()).into())
}

fn denied_by(decided_by: DecidedBy) -> Decision {
    Decision {
        verdict: Verdict::Deny,
        stage: mesh_policy::Stage::EgressPolicy,
        decided_by,
        dry_run: None,
        audit: None,
    }
}

fn record(
    out: &Outbound,
    seen: &peek::Seen,
    dst: SocketAddr,
    decision: &Decision,
    reason: Option<&str>,
) {
    let local = &out.egress.local;
    let host = seen.host.as_deref();
    count(&out.gate.hosts, &local.namespace, host, decision.label());
    crate::policy::record("egress", decision);
    let protocol = seen.protocol.as_str();
    let now = SystemTime::now();
    let by = match &decision.dry_run {
        Some(dry) => &dry.decided_by,
        None => &decision.decided_by,
    };
    out.gate.seen.note(
        DestinationKey {
            host: host.map(str::to_owned),
            ip: host.is_none().then_some(dst.ip()),
            port: dst.port(),
            protocol,
            decision: decision.label(),
            policy: by.clone(),
        },
        now,
    );
    if !decision.is_allowed() || decision.dry_run.is_some() {
        tracing::info!(access = "egress", %dst, host = host.unwrap_or("-"), protocol, decision = decision.label(), policy = %decision.decided_by, dry_run = %by, reason = reason.unwrap_or("-"), "tcp");
    }
    if !out.access.enabled() {
        return;
    }
    let policy = decision.decided_by.to_string();
    let dry_run_policy = decision.dry_run.as_ref().map(|d| d.decided_by.to_string());
    out.access.egress(&EgressLine {
        ts: access::timestamp(now),
        direction: "egress",
        namespace: &local.namespace,
        workload: &local.name,
        dst,
        host: host.unwrap_or("-"),
        port: dst.port(),
        protocol,
        decision: decision.label(),
        policy,
        dry_run_policy,
        reason,
    });
}

/// One connection in `mesh_egress_connections_total`.
fn count(hosts: &HostLabels, namespace: &str, host: Option<&str>, decision: &'static str) {
    thread_local! {
        static COUNTERS: crate::handles::Handles<(Arc<str>, &'static str), metrics::Counter> =
            Default::default();
    }
    let label = hosts.label(host.unwrap_or("-"));
    COUNTERS
        .with(|h| {
            h.get((label, decision), |(label, decision)| {
                metrics::counter!(
                    "mesh_egress_connections_total",
                    "namespace" => namespace.to_owned(),
                    "host" => label.to_string(),
                    "decision" => *decision
                )
            })
        })
        .increment(1);
}

async fn relay_to(
    out: &Outbound,
    app: TcpStream,
    dst: SocketAddr,
    prefix: Vec<u8>,
) -> Result<(), Error> {
    let mut upstream = connect_tcp(dst, DEFAULT_PEER_CONNECT_TIMEOUT).await?;
    if !prefix.is_empty() {
        upstream
            .write_all(&prefix)
            .await
            .map_err(|source| crate::errors::ConnectError::Preamble { addr: dst, source })?;
    }
    metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "false")
        .increment(1);
    let _ = relay(app, upstream, out.idle_timeout).await;
    Ok(())
}

/// HTTP: a 403 naming the rule, then close. TLS and anything else: a
/// reset, before any byte reached the destination.
async fn refuse(mut app: TcpStream, protocol: EgressProtocol, d: &Decision, reason: Option<&str>) {
    if protocol == EgressProtocol::Http {
        let body = match reason {
            Some(r) => format!("egress denied: {} ({r})\n", d.decided_by),
            None => format!("egress denied: {}\n", d.decided_by),
        };
        let head = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = app.write_all(head.as_bytes()).await;
        let _ = app.write_all(body.as_bytes()).await;
        let _ = app.shutdown().await;
        return;
    }
    reset(app);
}

/// Closes with RST: the client sees a reset, not an orderly end.
fn reset(app: TcpStream) {
    #[allow(deprecated)] // SO_LINGER 0 is exactly what a reset needs here.
    let _ = app.set_linger(Some(std::time::Duration::ZERO));
    drop(app);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_bounded() {
        let l = HostLabels::new(3);
        assert_eq!(&*l.label("a.example"), "a.example");
        assert_eq!(&*l.label("b.example"), "b.example");
        assert_eq!(&*l.label("c.example"), "c.example");
        assert_eq!(&*l.label("d.example"), OTHER_HOST);
        // Those already named keep their label.
        assert_eq!(&*l.label("a.example"), "a.example");
        for i in 0..10_000 {
            l.label(&format!("h{i}.example"));
        }
        assert_eq!(l.seen.lock().unwrap().len(), 3);
    }

    /// 10,000 distinct hostnames: the metric holds at most the limit's
    /// series per (namespace, decision), plus `other`, and counts every
    /// connection.
    #[test]
    fn the_metric_stays_bounded_under_ten_thousand_hostnames() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let hosts = HostLabels::new(DEFAULT_HOST_LABELS);
        metrics::with_local_recorder(&recorder, || {
            for i in 0..10_000 {
                let decision = if i % 2 == 0 { "allow" } else { "deny" };
                count(&hosts, "shop", Some(&format!("h{i}.example")), decision);
            }
        });
        let text = handle.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mesh_egress_connections_total{"))
            .collect();
        // The first 256 hosts each under the one decision they had, and
        // `other` under both.
        assert_eq!(series.len(), DEFAULT_HOST_LABELS + 2, "{}", series.len());
        let total: f64 = series
            .iter()
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert_eq!(total, 10_000.0);
        assert!(text.contains(&format!("host=\"{OTHER_HOST}\"")));
    }
}
