//! What `lab up` checks before it changes anything: root, the tools it
//! runs, and the mesh binaries (staged where the proxy and app UIDs can
//! run them).

use super::*;

pub(super) fn require_root() -> Result<(), LabError> {
    // SAFETY: geteuid cannot fail and has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    Ok(())
}

pub(super) fn require_tool(tool: &'static str, package: &'static str) -> Result<(), LabError> {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if found {
        Ok(())
    } else {
        Err(LabError::MissingTool { tool, package })
    }
}

/// The mesh binaries: `--bin-dir`, else meshctl's own folder (cargo puts
/// every workspace binary in one target folder).
pub(super) fn bin_dir(opts: &Options) -> Result<PathBuf, LabError> {
    let dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    for binary in ["mesh-control-plane", "mesh-proxy"] {
        if !dir.join(binary).is_file() {
            return Err(LabError::MissingBinary {
                binary,
                dir: dir.clone(),
            });
        }
    }
    // Absolute, because processes start in other folders and namespaces.
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// The mesh binaries the lab runs, copied into the lab's own folder (0755):
/// the proxies (UID 2102) and apps (another UID) must be able to execute
/// them, and the folder they were built in may be private to root (a
/// checkout under /root, a `mktemp -d` clone).
pub(super) const LAB_BINARIES: [&str; 6] = [
    "mesh-control-plane",
    "mesh-proxy",
    "meshctl",
    "mesh-echo",
    "mesh-grpc",
    "mesh-dns",
];

pub(super) fn stage_binaries(from: &Path, to: &Path) -> Result<PathBuf, LabError> {
    make_dir(to, 0o755)?;
    for name in LAB_BINARIES {
        let src = from.join(name);
        if !src.is_file() {
            // mesh-echo, mesh-grpc, mesh-dns and meshctl are conveniences for apps; the lab
            // checked the ones it needs in bin_dir().
            continue;
        }
        let dst = to.join(name);
        std::fs::copy(&src, &dst)
            .and_then(|_| std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)))
            .map_err(io(format!(
                "cannot copy {} to {}",
                src.display(),
                dst.display()
            )))?;
    }
    Ok(to.to_path_buf())
}
