//! `meshctl token create`: join tokens for workloads outside Kubernetes.

pub mod cli;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_identity::token::{TOKEN_KEY_FILE, TokenKey};
use mesh_identity::{DEFAULT_TRUST_DOMAIN, SpiffeId};

/// A token that is valid for less than this would likely expire before a
/// proxy has even started; almost certainly a typo (`1` instead of `1h`).
const MIN_TTL: Duration = Duration::from_secs(10);

/// Why no token was created.
#[derive(Debug, thiserror::Error)]
pub enum TokenCreateError {
    #[error("invalid --{flag} {value:?}: {reason}")]
    Segment {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--ttl must be at least {}s, got {}s", MIN_TTL.as_secs(), .0.as_secs())]
    TtlTooShort(Duration),
    #[error(
        "data dir {0} does not exist or is not a directory (give the control plane's --data-dir)"
    )]
    NoDataDir(PathBuf),
    // Not a `#[source]`: the message already includes it, and anyhow's
    // chain would print it twice.
    #[error("cannot use the token signing key: {0}")]
    Key(mesh_identity::secret::SecretFileError),
}

/// A freshly created join token.
#[derive(Debug)]
pub struct Created {
    pub token: String,
    pub key_path: PathBuf,
    /// True when `token.key` did not exist and was generated now, so the
    /// operator can be told which data dir the control plane must use.
    pub generated_key: bool,
}

/// Creates a join token for `namespace`/`service_account` valid for `ttl`,
/// signed with `data_dir/token.key` (generated if absent).
pub fn create(
    data_dir: &Path,
    namespace: &str,
    service_account: &str,
    ttl: Duration,
) -> Result<Created, TokenCreateError> {
    validate_segment("namespace", namespace)?;
    validate_segment("service-account", service_account)?;
    if ttl < MIN_TTL {
        return Err(TokenCreateError::TtlTooShort(ttl));
    }
    // Checked here because TokenKey would otherwise fail with a bare
    // "No such file or directory" on the key path.
    if !data_dir.is_dir() {
        return Err(TokenCreateError::NoDataDir(data_dir.to_path_buf()));
    }
    let key_path = data_dir.join(TOKEN_KEY_FILE);
    let generated_key = !key_path.exists();
    let key = TokenKey::load_or_generate(data_dir).map_err(TokenCreateError::Key)?;
    Ok(Created {
        token: key.create(namespace, service_account, ttl),
        key_path,
        generated_key,
    })
}

/// Checks that `value` can be one path segment of a workload SPIFFE ID, so a
/// token is never issued for an identity the control plane cannot certify.
fn validate_segment(flag: &'static str, value: &str) -> Result<(), TokenCreateError> {
    let refuse = |reason: String| TokenCreateError::Segment {
        flag,
        value: value.to_string(),
        reason,
    };
    // A '/' would still parse as a (longer) SPIFFE ID path, naming some
    // other identity, so it is refused before building the ID.
    if value.contains('/') {
        return Err(refuse("must not contain '/'".into()));
    }
    // The trust domain does not matter for segment rules; the token does not
    // carry one.
    SpiffeId::workload(DEFAULT_TRUST_DOMAIN, value, "x")
        .map(|_| ())
        .map_err(|e| refuse(segment_reason(&e)))
}

/// Rephrases a SPIFFE ID error in terms of the single segment being checked.
fn segment_reason(e: &mesh_identity::SpiffeIdError) -> String {
    use mesh_identity::SpiffeIdError as E;
    match e {
        E::EmptySegment => "must not be empty".into(),
        E::DotSegment => "must not be '.' or '..'".into(),
        E::BadPathChar => "may only contain letters, digits, '.', '-' and '_'".into(),
        E::TooLong => "is too long for a SPIFFE ID".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
