//! Local mode: a folder of YAML, polled for changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::watch;

use super::{Config, Source, Update};

/// How often the config folder is checked. Polling a folder of a few files
/// costs microseconds, survives editors' atomic renames and ConfigMap
/// symlink swaps, and keeps changes well inside the one-second budget.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A watched folder (`--config-dir`), or none: then the configuration is
/// empty (mTLS STRICT, no authorization policies) and never changes.
pub struct Folder {
    dir: Option<PathBuf>,
}

impl Folder {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }
}

/// Reads the folder once.
pub fn read(dir: &Path) -> Update {
    match mesh_policy::load_dir(dir) {
        Ok(l) => Update::Loaded(Arc::new(Config {
            snapshot: l.snapshot,
            services: l.services,
            secrets: l.secrets,
            workloads: Vec::new(),
            endpoints: Default::default(),
            warnings: l.warnings,
        })),
        Err(e) => Update::Failed(e.to_string()),
    }
}

/// A fingerprint of the folder's YAML files: name, size, modification time
/// and inode. Any write, create, delete or rename changes it.
fn fingerprint(dir: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        // Follow symlinks (ConfigMap mounts) to see the target's changes.
        if let Ok(m) = std::fs::metadata(e.path()) {
            out.push((name, m.len(), m.mtime(), m.mtime_nsec(), m.ino()));
        }
    }
    out.sort();
    out
}

type Fingerprint = Vec<(String, u64, i64, i64, u64)>;

/// Re-reads `dir` on every change until nobody listens. The fingerprint is
/// taken before the read, so a write during the read causes another one.
async fn follow(dir: PathBuf, tx: watch::Sender<Update>, mut last: Fingerprint) {
    loop {
        tokio::time::sleep(DEFAULT_POLL_INTERVAL).await;
        if tx.is_closed() {
            return;
        }
        let d = dir.clone();
        let Ok(fp) = tokio::task::spawn_blocking(move || fingerprint(&d)).await else {
            continue;
        };
        if fp == last {
            continue;
        }
        last = fp;
        let d = dir.clone();
        if let Ok(update) = tokio::task::spawn_blocking(move || read(&d)).await {
            tx.send_replace(update);
        }
    }
}

impl Source for Folder {
    async fn start(self) -> anyhow::Result<watch::Receiver<Update>> {
        let Some(dir) = self.dir else {
            tracing::warn!(
                "no --config-dir: proxies get an empty policy (mTLS STRICT, no authorization policies)"
            );
            let (tx, rx) = watch::channel(Update::Loaded(Arc::default()));
            // Held open until nobody listens: a closed channel would read as
            // a source that stopped.
            tokio::spawn(async move { tx.closed().await });
            return Ok(rx);
        };
        if !dir.is_dir() {
            bail!("--config-dir {} is not a directory", dir.display());
        }
        let d = dir.clone();
        let (fp, first) = tokio::task::spawn_blocking(move || (fingerprint(&d), read(&d))).await?;
        let (tx, rx) = watch::channel(first);
        tokio::spawn(follow(dir, tx, fp));
        Ok(rx)
    }
}
