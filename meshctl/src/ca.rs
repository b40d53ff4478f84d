//! `meshctl ca status|rotate begin|switch|finish`: the mesh CA's roots and
//! issuer, who holds which generation (the control plane's admin `GET /ca`),
//! and a trust-anchor rotation in three steps with nothing restarted:
//!
//! 1. `begin`: a new root and issuer (generated, or the operator's plug-in
//!    CA) are put under `DATA/ca/next/` and the new root is published beside
//!    the old one; every proxy renews and trusts both.
//! 2. `switch`: once every holder has that bundle, the new issuer signs; every
//!    proxy renews and presents a certificate from the new root, still
//!    trusting the old one (peers that have not renewed yet still verify).
//! 3. `finish`: once every holder's certificate is from the new issuer, the
//!    old root is removed from the bundle; every proxy renews and trusts the
//!    new root only.
//!
//! Each step only changes files in the control plane's data directory (which
//! only its operator may write); the control plane checks the CA they make
//! before putting it in force and keeps the last good one otherwise.

pub mod cli;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_identity::Ca;
use mesh_identity::ca::{
    EXTRA_ROOTS_FILE, ISSUER_CERT_FILE, ISSUER_KEY_FILE, NEXT_DIR, PREVIOUS_DIR, ROOT_CERT_FILE,
    ROOT_KEY_FILE, read_certs,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::cert::admin::{AdminError, get_text};

const MAX_BYTES: usize = 16 << 20;
/// Warn when a root or the issuer ends within this long.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertInfo {
    pub sha256: String,
    pub subject: Option<String>,
    pub not_after: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub identity: String,
    pub address: String,
    pub generation: String,
    pub issued_at: u64,
    pub not_after: u64,
}

/// The control plane's `/ca` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub generation: String,
    pub roots: Vec<CertInfo>,
    pub issuer: Option<CertInfo>,
    pub phase: String,
    pub holders: Vec<Holder>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub serving_generation: Option<String>,
}

impl Status {
    /// Holders of a certificate of another generation than the one in force.
    pub fn lagging(&self) -> Vec<&Holder> {
        self.holders
            .iter()
            .filter(|h| h.generation != self.generation)
            .collect()
    }
}

pub async fn fetch(url: &str, timeout: Duration) -> Result<Status, anyhow::Error> {
    let text = get_text(url, "/ca", MAX_BYTES, timeout)
        .await
        .map_err(|e: AdminError| anyhow::anyhow!(e))?;
    serde_json::from_str(&text).with_context(|| format!("{url}: not a /ca document"))
}

pub fn table(s: &Status, now: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "generation {}  phase {}", s.generation, s.phase);
    if let Some(e) = &s.error {
        let _ = writeln!(
            out,
            "WARNING: the CA files on disk do not load ({e}); the CA above stays in force"
        );
    }
    let line = |out: &mut String, role: &str, c: &CertInfo| {
        let left = c.not_after.map(|t| t.saturating_sub(now));
        let _ = writeln!(
            out,
            "{role:<7} {}  sha256 {}  expires in {}{}",
            c.subject.as_deref().unwrap_or("?"),
            &c.sha256[..c.sha256.len().min(16)],
            left.map(days).unwrap_or_else(|| "?".into()),
            if left.is_some_and(|l| l < EXPIRY_WARNING.as_secs()) {
                "  WARNING: renew or rotate soon"
            } else {
                ""
            }
        );
    };
    for r in &s.roots {
        line(&mut out, "root", r);
    }
    if let Some(i) = &s.issuer {
        line(&mut out, "issuer", i);
    }
    let lagging = s.lagging();
    let _ = writeln!(
        out,
        "holders {} of {} on this generation",
        s.holders.len() - lagging.len(),
        s.holders.len()
    );
    for h in lagging {
        let _ = writeln!(
            out,
            "  {} at {} holds generation {} (issued {}s ago)",
            h.identity,
            h.address,
            h.generation,
            now.saturating_sub(h.issued_at)
        );
    }
    out
}

fn days(secs: u64) -> String {
    if secs >= 86_400 {
        format!("{}d", secs / 86_400)
    } else {
        format!("{}h{}m", secs / 3600, secs % 3600 / 60)
    }
}

/// What a rotation step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub step: &'static str,
    /// The CA generation the step put on disk.
    pub generation: String,
    pub roots: usize,
    pub message: String,
}

/// The operator's own root and issuer for `begin` (a plug-in CA).
#[derive(Debug, Clone, Default)]
pub struct PlugIn {
    pub root_cert: Option<PathBuf>,
    pub root_key: Option<PathBuf>,
    pub issuer_cert: Option<PathBuf>,
    pub issuer_key: Option<PathBuf>,
}

/// Step 1: the new CA under `ca/next/`, its root published beside the old.
pub fn begin(data_dir: &Path, trust_domain: &str, plug_in: &PlugIn) -> anyhow::Result<Step> {
    let ca_dir = data_dir.join("ca");
    Ca::load(&ca_dir).with_context(|| format!("no CA in force at {}", ca_dir.display()))?;
    let next = ca_dir.join(NEXT_DIR);
    if next.exists() {
        bail!(
            "a rotation is already under way ({} exists): `meshctl ca rotate switch` goes on",
            next.display()
        );
    }
    if ca_dir.join(PREVIOUS_DIR).exists() {
        bail!("the last rotation is not finished: `meshctl ca rotate finish` first");
    }
    let staging = ca_dir.join("next.tmp");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    create_private_dir(&staging)?;
    match plug_in {
        PlugIn {
            root_cert: None,
            root_key: None,
            issuer_cert: None,
            issuer_key: None,
        } => mesh_identity::ca::generate(&staging, trust_domain)?,
        PlugIn {
            root_cert: Some(root),
            issuer_cert: Some(cert),
            issuer_key: Some(key),
            root_key,
        } => {
            copy_public(root, &staging.join(ROOT_CERT_FILE))?;
            copy_public(cert, &staging.join(ISSUER_CERT_FILE))?;
            copy_secret(key, &staging.join(ISSUER_KEY_FILE))?;
            if let Some(k) = root_key {
                copy_secret(k, &staging.join(ROOT_KEY_FILE))?;
            }
        }
        _ => bail!(
            "a plug-in CA needs --root-cert, --issuer-cert and --issuer-key (--root-key is optional)"
        ),
    }
    let new = Ca::load(&staging).context("the new CA does not load")?;
    new.self_check(trust_domain)
        .context("the new CA cannot issue SVIDs that verify against its root")?;
    std::fs::rename(&staging, &next)
        .with_context(|| format!("cannot move the new CA to {}", next.display()))?;
    // Published: the control plane now trusts (and hands out) both roots.
    let mut extra = extra_roots(&ca_dir)?;
    for r in read_certs(&next.join(ROOT_CERT_FILE))? {
        if !extra.contains(&r) {
            extra.push(r);
        }
    }
    write_extra_roots(&ca_dir, &extra)?;
    step(
        "begin",
        &ca_dir,
        "rotation begun: the new root is published beside the old one; when `meshctl ca status` \
         shows every holder on this generation, run `meshctl ca rotate switch`",
    )
}

/// Step 2: the new issuer signs; the old root stays trusted.
pub fn switch(data_dir: &Path) -> anyhow::Result<Step> {
    let ca_dir = data_dir.join("ca");
    let next = ca_dir.join(NEXT_DIR);
    if !next.exists() {
        bail!("no rotation under way: `meshctl ca rotate begin` first");
    }
    Ca::load(&next).context("the new CA under ca/next no longer loads")?;
    let previous = ca_dir.join(PREVIOUS_DIR);
    create_private_dir(&previous)?;
    for name in [
        ROOT_CERT_FILE,
        ROOT_KEY_FILE,
        ISSUER_CERT_FILE,
        ISSUER_KEY_FILE,
    ] {
        let from = ca_dir.join(name);
        if from.exists() {
            // Copied, not moved: the CA on disk stays complete at every instant.
            std::fs::copy(&from, previous.join(name))
                .with_context(|| format!("cannot keep a copy of {}", from.display()))?;
        }
    }
    // Both roots stay trusted: the old one as an extra root.
    let mut extra = extra_roots(&ca_dir)?;
    for r in read_certs(&previous.join(ROOT_CERT_FILE))? {
        if !extra.contains(&r) {
            extra.push(r);
        }
    }
    write_extra_roots(&ca_dir, &extra)?;
    // The key first, its certificate right after: the control plane refuses
    // the pair for the instant they disagree and keeps the CA in force.
    for name in [ISSUER_KEY_FILE, ISSUER_CERT_FILE, ROOT_CERT_FILE] {
        std::fs::rename(next.join(name), ca_dir.join(name))
            .with_context(|| format!("cannot put the new {name} in place"))?;
    }
    if next.join(ROOT_KEY_FILE).exists() {
        std::fs::rename(next.join(ROOT_KEY_FILE), ca_dir.join(ROOT_KEY_FILE))?;
    } else if ca_dir.join(ROOT_KEY_FILE).exists() {
        std::fs::remove_file(ca_dir.join(ROOT_KEY_FILE))?;
    }
    std::fs::remove_dir_all(&next)?;
    step(
        "switch",
        &ca_dir,
        "issuer switched: proxies renew from the new issuer and still trust the old root; when \
         every holder is on this generation, run `meshctl ca rotate finish`",
    )
}

/// Step 3: the old root leaves the bundle.
pub fn finish(data_dir: &Path) -> anyhow::Result<Step> {
    let ca_dir = data_dir.join("ca");
    let previous = ca_dir.join(PREVIOUS_DIR);
    if !previous.join(ROOT_CERT_FILE).exists() {
        bail!("no switched rotation to finish: `meshctl ca rotate begin` and `switch` come first");
    }
    let old = read_certs(&previous.join(ROOT_CERT_FILE))?;
    let extra: Vec<_> = extra_roots(&ca_dir)?
        .into_iter()
        .filter(|r| !old.contains(r))
        .collect();
    write_extra_roots(&ca_dir, &extra)?;
    // The retired CA's keys go; its certificates stay for the record.
    for name in [ROOT_KEY_FILE, ISSUER_KEY_FILE] {
        let key = previous.join(name);
        if key.exists() {
            std::fs::remove_file(&key)?;
        }
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    std::fs::rename(&previous, ca_dir.join(format!("retired-{stamp}")))?;
    step(
        "finish",
        &ca_dir,
        "rotation finished: the old root is no longer trusted",
    )
}

fn step(name: &'static str, ca_dir: &Path, message: &str) -> anyhow::Result<Step> {
    let ca = Ca::load(ca_dir).with_context(|| format!("after {name}, the CA does not load"))?;
    Ok(Step {
        step: name,
        generation: ca.generation().to_string(),
        roots: ca.bundle().len(),
        message: message.to_string(),
    })
}

/// Whether the control plane's view allows the next step: the CA on disk is
/// the one in force, and every holder has a certificate of it.
pub fn ready_for_next_step(status: &Status, data_dir: &Path) -> anyhow::Result<()> {
    if let Some(e) = &status.error {
        bail!("the control plane did not take the CA on disk: {e}");
    }
    let on_disk = Ca::load(&data_dir.join("ca"))?.generation().to_string();
    if on_disk != status.generation {
        bail!(
            "the control plane has generation {} in force, the files say {on_disk}: wait a second and retry",
            status.generation
        );
    }
    let lagging = status.lagging();
    if !lagging.is_empty() {
        let names: Vec<String> = lagging
            .iter()
            .take(5)
            .map(|h| format!("{} at {}", h.identity, h.address))
            .collect();
        bail!(
            "{} holder(s) still have a certificate of another generation ({}{}); they renew within a second of each step, unless they cannot reach the control plane. --force goes on regardless (their connections fail once the old root is gone)",
            lagging.len(),
            names.join(", "),
            if lagging.len() > 5 { ", …" } else { "" }
        );
    }
    Ok(())
}

fn extra_roots(ca_dir: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let path = ca_dir.join(EXTRA_ROOTS_FILE);
    if !path.exists() {
        return Ok(vec![]);
    }
    Ok(read_certs(&path)?)
}

fn write_extra_roots(ca_dir: &Path, roots: &[CertificateDer<'static>]) -> anyhow::Result<()> {
    let path = ca_dir.join(EXTRA_ROOTS_FILE);
    if roots.is_empty() {
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        return Ok(());
    }
    let pem: String = roots
        .iter()
        .map(|r| mesh_identity::bundle::der_to_pem(r))
        .collect();
    mesh_identity::secret::write_public_atomic(&path, pem.as_bytes())?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn copy_public(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    mesh_identity::secret::write_public_atomic(to, &bytes)?;
    Ok(())
}

fn copy_secret(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = mesh_identity::secret::read_secret(from)?;
    mesh_identity::secret::write_new_secret(to, &bytes)?;
    Ok(())
}
