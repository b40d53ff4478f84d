//! Registrations shared by the replicas of one local mesh: each proxy
//! connected to a replica is a lease file in `DATA_DIR/registrations/`,
//! renewed while it stays connected and removed when it leaves. Every
//! replica reads the others' leases, so replicas sharing a data directory
//! publish the same workloads whichever one a proxy is connected to.
//!
//! A lease is written whole (to a temporary name, then renamed), so a
//! reader never sees half of one. A lease past its expiry is ignored (its
//! replica died without removing it) and removed a lease-time later; a file
//! that does not read as a lease is skipped with a warning, never trusted.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Workload;

/// How long a registration outlives its replica. Long enough that a busy
/// replica renews well within it (at a third of it), short enough that a
/// dead replica's proxies leave the other replicas' discovery soon after.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// The directory under the data directory.
pub const DIR: &str = "registrations";
/// A lease is one workload: a few KB at the most (64 labels of 317 bytes).
const MAX_LEASE_BYTES: u64 = 64 * 1024;
/// Leases read per scan; a directory with more is a mistake, not a mesh.
const MAX_LEASES: usize = 20_000;
const SUFFIX: &str = ".lease";

/// What a lease file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Lease {
    replica: String,
    /// Unix time in milliseconds (replicas sharing a directory share a clock,
    /// or keep theirs in sync).
    expires_at_ms: u64,
    workload: Workload,
}

/// This replica's side of the registrations directory.
pub struct Leases {
    dir: PathBuf,
    replica: String,
    ttl: Duration,
    /// Files already warned about, by name, with the modification time they
    /// had: one warning per version of a bad file, not one per scan.
    warned: Mutex<HashMap<PathBuf, SystemTime>>,
}

impl Leases {
    /// Opens (creating, mode 0700) the registrations directory under
    /// `data_dir`. A directory others may write to is refused: whoever can
    /// write a lease can add endpoints to every replica's discovery.
    pub fn open(data_dir: &Path, ttl: Duration) -> anyhow::Result<Self> {
        let dir = data_dir.join(DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let mode = std::fs::metadata(&dir)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
            .mode();
        if mode & 0o022 != 0 {
            anyhow::bail!(
                "{} is writable by group or others (mode {:o}); make it 0700",
                dir.display(),
                mode & 0o777
            );
        }
        Ok(Self {
            dir,
            replica: replica_id(),
            ttl,
            warned: Mutex::new(HashMap::new()),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{}-{id}{SUFFIX}", self.replica))
    }

    /// Writes (or renews) the lease of registration `id`.
    pub fn write(&self, id: u64, workload: &Workload) -> std::io::Result<()> {
        let lease = Lease {
            replica: self.replica.clone(),
            expires_at_ms: unix_ms(SystemTime::now() + self.ttl),
            workload: workload.clone(),
        };
        let text = serde_json::to_vec(&lease).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".{}-{id}.tmp", self.replica));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
        }
        std::fs::rename(&tmp, self.path(id))
    }

    /// Removes the lease of registration `id` (its proxy left).
    pub fn remove(&self, id: u64) {
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Removes every lease of this replica: a clean stop leaves none behind
    /// for the others to time out.
    pub fn remove_all(&self) {
        let own = format!("{}-", self.replica);
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_str().is_some_and(|n| n.starts_with(&own)) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// The live leases of the other replicas.
    pub fn peers(&self) -> Vec<Workload> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            tracing::warn!(dir = %self.dir.display(), "cannot read the registrations directory");
            return Vec::new();
        };
        let now = unix_ms(SystemTime::now());
        let grace = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let own = format!("{}-", self.replica);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for entry in entries.flatten().take(MAX_LEASES) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.ends_with(SUFFIX) || name.starts_with(&own) {
                continue;
            }
            let path = entry.path();
            seen.push(path.clone());
            match read(&path) {
                Ok(lease) if lease.expires_at_ms >= now => out.push(lease.workload),
                Ok(lease) => {
                    // Its replica stopped renewing it; once it is well past
                    // its expiry any replica may clear it away.
                    if now.saturating_sub(lease.expires_at_ms) > grace {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                Err(why) => self.warn_once(&path, &why),
            }
        }
        if let Ok(mut warned) = self.warned.lock() {
            warned.retain(|p, _| seen.contains(p));
        }
        out
    }

    fn warn_once(&self, path: &Path, why: &str) {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        let Ok(mut warned) = self.warned.lock() else {
            return;
        };
        if warned.get(path) == Some(&modified) {
            return;
        }
        warned.insert(path.to_owned(), modified);
        metrics::counter!("mesh_registration_lease_errors_total", "reason" => "unreadable")
            .increment(1);
        tracing::warn!(file = %path.display(), error = %why, "registration lease skipped");
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// One lease file, bounded in size.
fn read(path: &Path) -> Result<Lease, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    f.take(MAX_LEASE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_LEASE_BYTES {
        return Err(format!("larger than {MAX_LEASE_BYTES} bytes"));
    }
    let lease: Lease = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    mesh_identity::SpiffeId::parse(&lease.workload.identity)
        .map_err(|e| format!("identity {:?}: {e}", lease.workload.identity))?;
    if let Some(ip) = lease
        .workload
        .ips
        .iter()
        .find(|i| i.parse::<std::net::IpAddr>().is_err())
    {
        return Err(format!("{ip:?} is not an IP address"));
    }
    Ok(lease)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A name for this process among the replicas: unique enough that two
/// replicas (on one host or several) never write the same lease.
fn replica_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(unix_ms(SystemTime::now()));
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests;
