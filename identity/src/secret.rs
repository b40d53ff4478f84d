//! Secret files (private keys, token keys): written with mode 0600 and refused
//! when group- or world-readable.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error(
        "{path}: secret file is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretFileError + '_ {
    move |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a secret file after checking that only its owner can read it.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    check_permissions(path)?;
    fs::read(path).map_err(io(path))
}

/// Fails when `path` is group- or world-accessible.
pub fn check_permissions(path: &Path) -> Result<(), SecretFileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Writes a secret file with mode 0600, creating it only if absent, so an
/// existing key is never overwritten.
pub fn write_new_secret(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes a public file (certificates, trust bundle) atomically: readers see
/// either the old or the new contents, never a partial file.
pub fn write_public_atomic(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(contents).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_0600_and_open_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_new_secret(&p, b"secret").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret(&p).unwrap(), b"secret");
        // An existing key is never overwritten.
        assert!(write_new_secret(&p, b"other").is_err());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_secret(&p).unwrap_err().to_string();
        assert!(err.contains("readable by group or others"), "{err}");
        assert!(!err.contains("secret\""), "{err}");
    }
}
