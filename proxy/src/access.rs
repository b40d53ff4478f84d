//! The access log. Connection decisions are log lines (`tcp`); every HTTP
//! request, on every side, is one JSON line in the access log stream
//! (`--access-log`: `-` for stderr with the other logs, a file, or `off`),
//! written when its response ends so streams are measured whole.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use mesh_policy::Decision;
use serde::Serialize;

/// Where the JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Off,
    Stderr,
    File(PathBuf),
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "off" => Target::Off,
            "-" => Target::Stderr,
            "" => return Err("expected off, - or a file path".into()),
            path => Target::File(PathBuf::from(path)),
        })
    }
}

/// Most lines queued for the file writer; a stalled disk drops lines
/// (counted) rather than growing the proxy.
const MAX_QUEUED_LINES: usize = 16 * 1024;

enum Sink {
    Off,
    Stderr,
    File(mpsc::SyncSender<Vec<u8>>),
}

/// The access log stream.
pub struct AccessLog {
    sink: Sink,
}

impl AccessLog {
    pub fn open(target: &Target) -> std::io::Result<Self> {
        let sink = match target {
            Target::Off => Sink::Off,
            Target::Stderr => Sink::Stderr,
            Target::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(MAX_QUEUED_LINES);
                std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || write_file(file, rx))?;
                Sink::File(tx)
            }
        };
        Ok(Self { sink })
    }

    pub fn off() -> Self {
        Self { sink: Sink::Off }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Writes one request's line.
    pub fn http(&self, line: &HttpLine<'_>) {
        self.write(line)
    }

    /// Writes one connection leaving the mesh.
    pub fn egress(&self, line: &EgressLine<'_>) {
        self.write(line)
    }

    fn write<T: Serialize>(&self, line: &T) {
        if !self.enabled() {
            return;
        }
        let mut buf = Vec::with_capacity(256);
        if serde_json::to_writer(&mut buf, line).is_err() {
            return;
        }
        buf.push(b'\n');
        match &self.sink {
            Sink::Off => {}
            Sink::Stderr => mesh_admin::write_log_line(&buf),
            Sink::File(tx) => {
                if tx.try_send(buf).is_err() {
                    metrics::counter!("mesh_access_log_dropped_total").increment(1);
                }
            }
        }
    }
}

/// One connection from the local workload to a destination outside the
/// mesh (`meshctl egress report` reads these).
#[derive(Debug, Serialize)]
pub struct EgressLine<'a> {
    pub ts: String,
    pub direction: &'static str,
    pub namespace: &'a str,
    pub workload: &'a str,
    pub dst: SocketAddr,
    /// The name asked for (SNI, Host), `-` when none.
    pub host: &'a str,
    pub port: u16,
    pub protocol: &'static str,
    /// `allow`, `deny` or `dry_run_deny`.
    pub decision: &'static str,
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Writes queued lines, a batch per wake-up.
fn write_file(file: std::fs::File, rx: mpsc::Receiver<Vec<u8>>) {
    let mut out = std::io::BufWriter::new(file);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(&more);
        }
        let _ = out.flush();
    }
}

/// One HTTP request, as logged.
#[derive(Serialize)]
pub struct HttpLine<'a> {
    pub ts: String,
    pub direction: &'static str,
    pub src: SocketAddr,
    pub peer_identity: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u16>,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub decision: &'static str,
    pub policy: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub dry_run: &'a str,
    /// `HTTPRoute ns/name rule N`, when a route took the request.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub route: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub error: &'a str,
    /// At the edge: the TLS connection and the client behind it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeFields<'a>>,
}

/// What the ingress's log line adds: the client address (from trusted
/// hops), the TLS server name, version and cipher suite, and the identity
/// of the backend endpoint the request went to.
#[derive(Serialize)]
pub struct EdgeFields<'a> {
    pub client_ip: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub sni: &'a str,
    pub tls_version: &'a str,
    pub cipher: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub backend_identity: &'a str,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(t: SystemTime) -> String {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128)
        .ok()
        .and_then(|t| {
            t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
                .ok()?
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn dry_run(d: &Decision) -> String {
    d.dry_run
        .as_ref()
        .map(|d| d.decided_by.to_string())
        .unwrap_or_default()
}

/// A connection-level decision.
pub fn tcp(
    direction: &'static str,
    src: SocketAddr,
    client: &str,
    port: u16,
    tls: bool,
    d: &Decision,
) {
    tracing::info!(
        access = direction,
        %src,
        client,
        port,
        tls,
        decision = d.label(),
        policy = %d.decided_by,
        dry_run = %dry_run(d),
        "tcp"
    );
}

/// An egress decision. Denials are logged at `info`; allowed ones, which
/// HTTP makes once per request, at `debug` (they are counted either way).
pub fn outbound(dst: SocketAddr, server: &str, d: &Decision) {
    if d.is_allowed() {
        tracing::debug!(access = "outbound", %dst, server, decision = d.label(), policy = %d.decided_by, "tcp");
    } else {
        tracing::info!(access = "outbound", %dst, server, decision = d.label(), policy = %d.decided_by, "tcp");
    }
}

/// A plaintext client refused by STRICT PeerAuthentication.
pub fn refused_plaintext(src: SocketAddr, port: u16, policy: &str) {
    tracing::info!(access = "inbound", %src, client = "-", port, tls = false, decision = "deny", policy, "tcp");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("off".parse::<Target>().unwrap(), Target::Off);
        assert_eq!("-".parse::<Target>().unwrap(), Target::Stderr);
        assert_eq!(
            "/var/log/a.json".parse::<Target>().unwrap(),
            Target::File("/var/log/a.json".into())
        );
        assert!("".parse::<Target>().is_err());
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_584_204_123);
        assert_eq!(timestamp(t), "2026-11-25T05:23:24.123Z");
    }
}
