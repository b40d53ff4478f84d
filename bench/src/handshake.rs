//! The handshake floor: how many mutual TLS 1.3 handshakes the cryptography
//! alone allows on one core, with Palisade's own TLS configs (SVIDs, SPIFFE
//! verification on both sides), client and server in one thread, bytes
//! passed in memory: no sockets, no scheduler, no proxy.
//!
//! S3 (new connections per second through a pair) is stated as a fraction
//! of this: a pair on one core does exactly these two handshakes per
//! connection, plus everything else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mesh_identity::local::LocalCertifier;
use mesh_identity::{Ca, SpiffeId, Store};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};
use serde::{Deserialize, Serialize};

/// A pump that has not finished a handshake after this many rounds is stuck.
const MAX_ROUNDS: usize = 32;

/// Which key exchange to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Group {
    /// What the OpenSSL 3.0 peers negotiate.
    X25519,
    /// The post-quantum hybrid rustls may prefer.
    X25519MlKem768,
    /// Whatever the build's default provider negotiates (what the proxy does).
    ProviderDefault,
}

/// One floor measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Floor {
    pub group_requested: Group,
    /// The group the handshakes actually used.
    pub group: String,
    pub resumed: bool,
    pub handshakes: u64,
    pub secs: f64,
    pub per_sec: f64,
    /// Wall time per handshake pair (client + server).
    pub ms_per_handshake: f64,
    /// CPU time of the measuring thread per handshake pair: unlike the
    /// wall-clock rate, this does not drop when other work shares the core.
    #[serde(default)]
    pub cpu_ms_per_handshake: f64,
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Palisade's client and server configs for two workloads of one CA.
pub struct Configs {
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
    _dir: tempfile::TempDir,
}

fn provider(group: Group) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let only: Option<&'static dyn SupportedKxGroup> = match group {
        Group::X25519 => Some(rustls::crypto::aws_lc_rs::kx_group::X25519),
        Group::X25519MlKem768 => Some(rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768),
        Group::ProviderDefault => None,
    };
    if let Some(g) = only {
        p.kx_groups = vec![g];
    }
    Arc::new(p)
}

/// Builds Palisade's TLS configs (`mesh_identity::tls`) for a client and a
/// server workload, certified by a fresh CA, offering only `group`.
pub fn palisade_configs(group: Group) -> anyhow::Result<Configs> {
    let dir = tempfile::tempdir()?;
    let td = mesh_identity::DEFAULT_TRUST_DOMAIN;
    let ca = Arc::new(Ca::load_or_generate(&dir.path().join("ca"), td)?);
    let client_id = SpiffeId::workload(td, "bench", "client")?;
    let server_id = SpiffeId::workload(td, "bench", "server")?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut stores = Vec::new();
    for id in [&client_id, &server_id] {
        let store = Store::new(id.clone(), ca.bundle().clone(), provider(group));
        let certifier = LocalCertifier::new(ca.clone(), id.clone(), Duration::from_secs(3600));
        rt.block_on(store.certify_once(&certifier))
            .with_context(|| format!("certifying {id}"))?;
        stores.push(store);
    }
    let client =
        mesh_identity::tls::client_config(&stores[0], server_id, &[mesh_identity::tls::ALPN_TCP])?;
    let server =
        mesh_identity::tls::server_config(&stores[1], true, &[mesh_identity::tls::ALPN_TCP])?;
    Ok(Configs {
        client,
        server,
        _dir: dir,
    })
}

/// Moves every pending TLS byte between the two ends until neither has
/// anything to send. Returns whether both finished the handshake.
fn pump(
    c: &mut ClientConnection,
    s: &mut ServerConnection,
    buf: &mut Vec<u8>,
) -> anyhow::Result<()> {
    for _ in 0..MAX_ROUNDS {
        let mut moved = false;
        while c.wants_write() {
            buf.clear();
            c.write_tls(buf)?;
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd)?;
                s.process_new_packets()?;
            }
            moved = true;
        }
        while s.wants_write() {
            buf.clear();
            s.write_tls(buf)?;
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd)?;
                c.process_new_packets()?;
            }
            moved = true;
        }
        if !moved && !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    anyhow::bail!("handshake did not complete in {MAX_ROUNDS} rounds")
}

/// Runs handshakes back to back on the calling thread for `duration` (at
/// most `max` of them). `resume`: for reference, the same configs with TLS
/// 1.3 session resumption turned on (tickets and a client cache). Mesh TLS
/// itself never resumes (a resumed session skips certificate verification).
pub fn floor(group: Group, resume: bool, duration: Duration, max: u64) -> anyhow::Result<Floor> {
    let mut cfgs = palisade_configs(group)?;
    let client = if resume {
        let mut c = (*cfgs.client).clone();
        c.resumption = rustls::client::Resumption::default();
        let mut s = (*cfgs.server).clone();
        s.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
        s.send_tls13_tickets = 2;
        cfgs.server = Arc::new(s);
        Arc::new(c)
    } else {
        cfgs.client.clone()
    };
    let name = mesh_identity::tls::mesh_server_name();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut negotiated = String::from("-");
    // One handshake before timing: with resumption, the first is full.
    let mut once = || -> anyhow::Result<(String, bool)> {
        let mut c = ClientConnection::new(client.clone(), name.clone())?;
        let mut s = ServerConnection::new(cfgs.server.clone())?;
        pump(&mut c, &mut s, &mut buf)?;
        let g = c
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()))
            .unwrap_or_else(|| "-".into());
        Ok((g, c.handshake_kind() == Some(HandshakeKind::Resumed)))
    };
    once()?;
    let cpu_start = thread_cpu();
    let start = Instant::now();
    let end = start + duration;
    let mut n = 0u64;
    let mut resumed = 0u64;
    while n < max && Instant::now() < end {
        let (g, r) = once()?;
        negotiated = g;
        resumed += u64::from(r);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = thread_cpu().saturating_sub(cpu_start).as_secs_f64();
    let per_sec = n as f64 / secs.max(1e-9);
    Ok(Floor {
        group_requested: group,
        group: negotiated,
        // All of them, or it is not a resumption measurement.
        resumed: resumed == n && n > 0,
        handshakes: n,
        secs,
        per_sec,
        ms_per_handshake: 1000.0 / per_sec.max(1e-9),
        cpu_ms_per_handshake: cpu * 1000.0 / (n.max(1) as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_resumed_handshakes_complete() {
        let f = floor(Group::X25519, false, Duration::from_millis(50), 5).unwrap();
        assert_eq!(f.group, "X25519");
        assert!(!f.resumed);
        assert!(f.handshakes >= 1);
        let r = floor(Group::X25519, true, Duration::from_millis(50), 5).unwrap();
        assert!(r.resumed, "{r:?}");
    }
}
