//! The policy in force at this proxy: received from `Policy.Watch`, compiled
//! with mesh-policy (the one evaluator), published on a watch channel. The
//! last snapshot stays in force when the control plane goes away; a snapshot
//! that does not compile is refused and the previous one kept.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use mesh_policy::resource::ANNOTATION_EXPIRES_AT;
use mesh_policy::{Decision, Http, Peer, Request, Workload};
use mesh_policy::{Evaluator, Labels, Snapshot};
use mesh_proto::policy::WatchRequest;
use mesh_proto::policy::policy_client::PolicyClient;
use tokio::sync::watch;
use tonic::transport::Channel;

/// A compiled snapshot.
pub struct PolicyView {
    pub version: u64,
    pub evaluator: Evaluator,
    pub snapshot: Snapshot,
    pub received_at: SystemTime,
    /// The earliest `expires-at` still in the future when received: open
    /// connections are re-checked then.
    pub next_expiry: Option<SystemTime>,
    /// At the ingress only: the TLS Secrets its Gateways and Ingresses name.
    pub secrets: Vec<mesh_policy::resource::TlsSecret>,
}

/// What this proxy fronts.
#[derive(Debug, Clone)]
pub struct LocalWorkload {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<u16>,
}

impl LocalWorkload {
    pub fn as_workload(&self) -> Workload<'_> {
        Workload {
            namespace: &self.namespace,
            labels: &self.labels,
        }
    }
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("label {part:?} is not k=v"))?;
        if k.is_empty() {
            return Err(format!("label {part:?} has an empty key"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Parses a downward-API labels file (`--labels-file`): one `key="value"`
/// per line, the value quoted with backslash escapes.
pub fn parse_labels_file(text: &str) -> Result<Labels, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {n}: not key=\"value\""))?;
        if k.is_empty() {
            return Err(format!("line {n}: empty key"));
        }
        let v = unquote(v)
            .ok_or_else(|| format!("line {n}: the value of {k:?} is not a quoted string"))?;
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

/// `"..."` with `\"`, `\\`, `\n`, `\t` and `\r` escapes.
fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(match chars.next()? {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                _ => return None,
            }),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

pub type PolicyRx = watch::Receiver<Option<Arc<PolicyView>>>;

/// Compiles a received snapshot.
pub fn compile(version: u64, json: &str, trust_domain: &str) -> Result<PolicyView, String> {
    let snapshot = Snapshot::from_json(json).map_err(|e| e.to_string())?;
    let evaluator = Evaluator::compile(&snapshot, trust_domain).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    Ok(PolicyView {
        version,
        next_expiry: next_expiry(&snapshot, now),
        evaluator,
        snapshot,
        received_at: now,
        secrets: Vec::new(),
    })
}

/// The TLS Secrets of a snapshot (the ingress's), each checked; one that
/// does not parse is left out, named in the log (never its contents) and
/// counted in `mesh_ingress_certificate_errors_total`.
fn secrets(list: Vec<mesh_proto::policy::TlsSecret>) -> Vec<mesh_policy::resource::TlsSecret> {
    list.into_iter()
        .filter_map(|s| {
            let (ns, name) = (s.namespace.clone(), s.name.clone());
            match mesh_policy::resource::TlsSecret::new(&ns, &name, s.cert_pem, s.key_pem) {
                Ok(secret) => Some(secret),
                Err((field, message)) => {
                    metrics::counter!("mesh_ingress_certificate_errors_total").increment(1);
                    tracing::error!(secret = %format!("{ns}/{name}"), field, message, "TLS Secret refused");
                    None
                }
            }
        })
        .collect()
}

/// The earliest `palisade.dev/expires-at` after `now`.
pub fn next_expiry(snapshot: &Snapshot, now: SystemTime) -> Option<SystemTime> {
    snapshot
        .objects
        .iter()
        .filter_map(|o| o.metadata().annotations.get(ANNOTATION_EXPIRES_AT))
        .filter_map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(SystemTime::from)
        .filter(|t| *t > now)
        .min()
}

/// Keeps the policy current forever: watch, compile, publish; the last
/// snapshot stays in force while the stream is down.
pub async fn run_watch(
    channel: Channel,
    workload: LocalWorkload,
    inbound_port: u16,
    trust_domain: String,
    tx: watch::Sender<Option<Arc<PolicyView>>>,
) {
    let client = PolicyClient::new(channel);
    let req = WatchRequest {
        workload: workload.name.clone(),
        labels: workload.labels.clone().into_iter().collect(),
        ips: workload.ips.iter().map(|i| i.to_string()).collect(),
        ports: workload.ports.iter().map(|p| u32::from(*p)).collect(),
        inbound_port: u32::from(inbound_port),
    };
    let open = || {
        let mut client = client.clone();
        let req = req.clone();
        async move { client.watch(req).await }
    };
    crate::control::watch::run("policy", open, |msg: mesh_proto::policy::PolicySnapshot| {
        match compile(msg.version, &msg.snapshot_json, &trust_domain) {
            Ok(mut view) => {
                view.secrets = secrets(msg.secrets);
                tracing::info!(
                    version = msg.version,
                    objects = view.snapshot.objects.len(),
                    "policy received"
                );
                metrics::gauge!("mesh_policy_version").set(msg.version as f64);
                tx.send_replace(Some(Arc::new(view)));
            }
            Err(e) => {
                metrics::counter!("mesh_policy_errors_total").increment(1);
                tracing::error!(version = msg.version, error = %e, "policy refused; keeping the previous one");
            }
        }
    })
    .await;
}

/// The facts of one inbound connection or request.
pub struct Inbound<'a> {
    pub peer: Peer<'a>,
    /// The calling workload's namespace and labels, when discovery knows it.
    pub source: Option<(&'a str, &'a Labels)>,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub port: u16,
    pub http: Option<Http<'a>>,
}

/// Decides an inbound connection or request. Without a policy: deny (the
/// proxy never serves before it has one, so this only guards races).
pub fn decide_inbound(
    view: Option<&PolicyView>,
    local: &LocalWorkload,
    f: Inbound<'_>,
) -> Option<Decision> {
    let view = view?;
    // Unknown to discovery: no source workload; the evaluator takes the
    // namespace from the principal and treats the labels as unknown, so no
    // pod selector (not even NotIn / DoesNotExist) matches it: fail closed.
    let source = f
        .source
        .map(|(namespace, labels)| Workload { namespace, labels });
    Some(view.evaluator.inbound(&Request {
        peer: f.peer,
        source_ip: Some(f.source_ip),
        source,
        destination: Some(local.as_workload()),
        destination_ip: Some(f.destination_ip),
        destination_port: f.port,
        http: f.http,
        now: SystemTime::now(),
    }))
}

/// Decides an outbound connection from the local workload (NetworkPolicy egress).
pub fn decide_outbound(
    view: Option<&PolicyView>,
    local: &LocalWorkload,
    destination_ip: Option<IpAddr>,
    destination: Option<(&str, &Labels)>,
    port: u16,
) -> Option<Decision> {
    let view = view?;
    Some(view.evaluator.outbound(&Request {
        peer: Peer::Plaintext,
        source_ip: local.ips.first().copied(),
        source: Some(local.as_workload()),
        destination: destination.map(|(namespace, labels)| Workload { namespace, labels }),
        destination_ip,
        destination_port: port,
        http: None,
        now: SystemTime::now(),
    }))
}

/// Counts a decision in `mesh_authz_decisions_total`.
pub fn record(direction: &'static str, d: &Decision) {
    type Key = (&'static str, &'static str, mesh_policy::DecidedBy);
    thread_local! {
        static DECISIONS: crate::handles::Handles<Key, metrics::Counter> = Default::default();
    }
    let by = match (&d.dry_run, d.is_allowed()) {
        (Some(dry), true) => &dry.decided_by,
        _ => &d.decided_by,
    };
    DECISIONS.with(|h| {
        h.get((direction, d.label(), by.clone()), |(direction, label, by)| {
            metrics::counter!("mesh_authz_decisions_total", "direction" => *direction, "decision" => *label, "policy" => by.to_string())
        })
    })
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_downward_api_labels_file_parses() {
        let text = "app=\"web\"\npod-template-hash=\"5d8f9\"\n\nteam.example.com/owner=\"a \\\"b\\\" \\\\c\"\n";
        let labels = parse_labels_file(text).unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels["pod-template-hash"], "5d8f9");
        assert_eq!(labels["team.example.com/owner"], "a \"b\" \\c");
        assert_eq!(labels.len(), 3);
        assert!(parse_labels_file("").unwrap().is_empty());
    }

    #[test]
    fn a_broken_labels_file_is_refused_naming_the_line() {
        for (text, line) in [
            ("app=\"web\"\nbroken\n", "line 2"),
            ("app=web\n", "line 1"),
            ("=\"x\"\n", "line 1"),
            ("app=\"we\"b\"\n", "line 1"),
            ("app=\"web\\q\"\n", "line 1"),
            ("app=\"web\n", "line 1"),
        ] {
            let e = parse_labels_file(text).unwrap_err();
            assert!(e.contains(line), "{text:?}: {e}");
        }
    }
}
