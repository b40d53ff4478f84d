//! The CA in force, followed live: the files under `DATA/ca/` are read again
//! when they change (a trust-anchor rotation by `meshctl ca rotate`, or an
//! operator replacing the plug-in CA), the new CA checked before it replaces
//! the old one, and a CA that does not load leaves the last good one in
//! force. Every certificate issued is recorded with its CA generation, so
//! `/ca` tells which proxies hold which bundle and issuer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_identity::ca::{self, Ca, CaError, Issued};
use mesh_identity::{Certifier, CertifyError, SpiffeId};
use serde::Serialize;
use tokio::sync::watch;

/// How often the CA directory is looked at.
const POLL: Duration = Duration::from_secs(1);
/// Most certificate holders remembered (one per workload address).
const MAX_HOLDERS: usize = 100_000;

/// Who holds a certificate of which generation.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub identity: String,
    /// The address the proxy certified from (`unknown` when not known).
    pub address: String,
    pub generation: String,
    pub issued_at: u64,
    pub not_after: u64,
}

/// The CA in force and what it issued.
pub struct LiveCa {
    dir: PathBuf,
    trust_domain: String,
    bundle_path: PathBuf,
    tx: watch::Sender<Arc<Ca>>,
    holders: Mutex<HashMap<(String, String), Holder>>,
    last_error: Mutex<Option<String>>,
}

impl LiveCa {
    /// `ca` was loaded from `dir`; `bundle_path` is rewritten with each new bundle.
    pub fn new(dir: PathBuf, trust_domain: &str, bundle_path: PathBuf, ca: Ca) -> Arc<Self> {
        publish_expiry(&ca);
        Arc::new(Self {
            dir,
            trust_domain: trust_domain.to_string(),
            bundle_path,
            tx: watch::channel(Arc::new(ca)).0,
            holders: Mutex::new(HashMap::new()),
            last_error: Mutex::new(None),
        })
    }

    pub fn current(&self) -> Arc<Ca> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Ca>> {
        self.tx.subscribe()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the files on disk are not in force, if they are not.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Follows the CA directory for ever.
    pub async fn follow(self: Arc<Self>) {
        let mut seen = digest(&self.dir);
        loop {
            tokio::time::sleep(POLL).await;
            let now = digest(&self.dir);
            if now == seen {
                continue;
            }
            seen = now;
            match self.reload() {
                Ok(generation) => {
                    metrics::counter!("mesh_ca_reloads_total", "result" => "ok").increment(1);
                    tracing::info!(%generation, dir = %self.dir.display(), "CA reloaded");
                }
                Err(e) => {
                    metrics::counter!("mesh_ca_reloads_total", "result" => "error").increment(1);
                    tracing::warn!(error = %e, dir = %self.dir.display(), "CA files changed but do not load; the last good CA stays in force");
                }
            }
        }
    }

    /// Loads and checks the CA on disk and puts it in force.
    pub fn reload(&self) -> Result<String, CaError> {
        let loaded = Ca::load(&self.dir).and_then(|ca| {
            ca.self_check(&self.trust_domain)?;
            Ok(ca)
        });
        let ca = match loaded {
            Ok(ca) => ca,
            Err(e) => {
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.to_string());
                }
                return Err(e);
            }
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
        let generation = ca.generation().to_string();
        if let Err(e) = mesh_identity::secret::write_public_atomic(
            &self.bundle_path,
            ca.bundle().to_pem().as_bytes(),
        ) {
            tracing::warn!(error = %e, path = %self.bundle_path.display(), "cannot write the trust bundle file");
        }
        publish_expiry(&ca);
        self.tx.send_replace(Arc::new(ca));
        Ok(generation)
    }

    /// Signs a CSR with the CA in force and records who holds what.
    pub fn sign(
        &self,
        csr: &[u8],
        identity: &SpiffeId,
        ttl: Duration,
        address: Option<String>,
    ) -> Result<Issued, CaError> {
        let ca = self.current();
        let issued = ca.sign_csr(csr, identity, ttl)?;
        let address = address.unwrap_or_else(|| "unknown".to_string());
        let now = unix(SystemTime::now());
        if let Ok(mut holders) = self.holders.lock() {
            let key = (identity.to_string(), address.clone());
            if holders.len() >= MAX_HOLDERS && !holders.contains_key(&key) {
                // Full: expired holders go first (a sweep only at the bound).
                holders.retain(|_, h| h.not_after > now);
            }
            if holders.len() < MAX_HOLDERS || holders.contains_key(&key) {
                holders.insert(
                    key,
                    Holder {
                        identity: identity.to_string(),
                        address,
                        generation: ca.generation().to_string(),
                        issued_at: now,
                        not_after: unix(issued.not_after),
                    },
                );
            }
        }
        Ok(issued)
    }

    /// Every holder of a certificate still valid, by identity and address.
    pub fn holders(&self) -> Vec<Holder> {
        let now = unix(SystemTime::now());
        let mut list: Vec<Holder> = self
            .holders
            .lock()
            .map(|h| h.values().filter(|h| h.not_after > now).cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| (&a.identity, &a.address).cmp(&(&b.identity, &b.address)));
        list
    }

    /// The `/ca` document: roots, issuer, generation and holders.
    pub fn status(&self) -> serde_json::Value {
        let ca = self.current();
        let roots: Vec<serde_json::Value> =
            ca.bundle().roots().iter().map(|r| describe(r)).collect();
        serde_json::json!({
            "generation": ca.generation(),
            "dir": self.dir.display().to_string(),
            "roots": roots,
            "issuer": ca.issuer_cert().map(|c| describe(c)),
            "phase": phase(&self.dir),
            "holders": self.holders(),
            "error": self.last_error(),
        })
    }
}

/// Where a rotation stands, from the files `meshctl ca rotate` leaves.
fn phase(dir: &Path) -> &'static str {
    if dir.join(ca::NEXT_DIR).exists() {
        "begun"
    } else if dir.join(ca::PREVIOUS_DIR).join(ca::ROOT_CERT_FILE).exists() {
        "switched"
    } else {
        "steady"
    }
}

fn describe(der: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "sha256": ca::fingerprint(der),
        "subject": ca::subject_of(der),
        "not_after": ca::not_after_of(der).map(unix),
    })
}

fn publish_expiry(ca: &Ca) {
    let earliest_root = ca
        .bundle()
        .roots()
        .iter()
        .filter_map(|r| ca::not_after_of(r))
        .min();
    if let Some(t) = earliest_root {
        metrics::gauge!("mesh_ca_expiry_timestamp_seconds", "role" => "root").set(unix(t) as f64);
    }
    metrics::gauge!("mesh_ca_expiry_timestamp_seconds", "role" => "issuer")
        .set(unix(ca.issuer_not_after()) as f64);
    metrics::gauge!("mesh_ca_roots").set(ca.bundle().len() as f64);
}

/// The contents of the CA files, to notice a change (a few KiB).
fn digest(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ca::CA_FILES {
        match std::fs::read(dir.join(name)) {
            Ok(b) => {
                all.extend_from_slice(&(b.len() as u64).to_be_bytes());
                all.extend(b);
            }
            Err(_) => all.extend_from_slice(&u64::MAX.to_be_bytes()),
        }
    }
    all
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The control plane's own certificate, from the CA in force.
pub struct OwnCertifier {
    pub ca: Arc<LiveCa>,
    pub identity: SpiffeId,
    pub ttl: Duration,
}

impl Certifier for OwnCertifier {
    async fn certify(&self, csr_der: Vec<u8>) -> Result<Issued, CertifyError> {
        self.ca
            .sign(
                &csr_der,
                &self.identity,
                self.ttl,
                Some("control-plane".into()),
            )
            .map_err(|e| CertifyError::Remote(e.to_string()))
    }
}
