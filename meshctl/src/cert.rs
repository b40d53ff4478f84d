//! `meshctl cert inspect`: what certificate a proxy holds or a mesh port
//! presents, read from the certificates themselves.

pub mod admin;

pub mod chain;
pub mod cli;
pub mod connect;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_identity::TrustBundle;
use mesh_identity::verify::{self, Usage};
use rustls_pki_types::{CertificateDer, UnixTime};

pub use admin::AdminError;
pub use chain::CertInfo;
pub use connect::ConnectError;
pub use report::{Output, Report, TimeLeft, Verification};

/// Where the certificate chain comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A proxy admin base URL; `GET /certs` is read from it.
    Admin(String),
    /// A `HOST:PORT` to complete a TLS handshake with.
    Connect(String),
    /// A PEM file, leaf first; `-` is stdin.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct InspectOptions {
    pub source: Source,
    /// Roots to verify the chain against.
    pub trust_bundle: Option<PathBuf>,
    /// Bound on the network exchange of `Admin` and `Connect`.
    pub timeout: Duration,
}

/// Why a chain could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {what}{path}: {error}")]
    Read {
        /// What the file is meant to be, e.g. "trust bundle ", or empty.
        what: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{origin} is larger than {} bytes; is it really a PEM certificate file?",
        chain::MAX_INPUT_BYTES
    )]
    TooLarge { origin: String },
    #[error(
        "{origin}: no certificate found (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)"
    )]
    NoCertificate { origin: String },
    #[error("{origin}: invalid PEM: {reason}")]
    Pem { origin: String, reason: String },
    #[error("{origin}: certificate #{number} is not a valid X.509 certificate: {reason}")]
    Unparsable {
        origin: String,
        /// 1 is the leaf.
        number: usize,
        reason: String,
    },
    #[error("trust bundle {path}: {reason}")]
    TrustBundle { path: PathBuf, reason: String },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// Fetches or reads the chain named by `opts.source` and reports on it.
pub async fn inspect(opts: &InspectOptions) -> Result<Report, InspectError> {
    // Loaded first, so a wrong path fails before any network exchange.
    let bundle = match &opts.trust_bundle {
        Some(path) => Some((path.as_path(), load_trust_bundle(path)?)),
        None => None,
    };
    let (origin, certs) = match &opts.source {
        Source::File(path) => (path.display().to_string(), chain::read_pem_file(path, "")?),
        Source::Admin(url) => {
            let certs = admin::fetch_chain(url, opts.timeout).await?;
            (format!("proxy admin {url}"), certs)
        }
        Source::Connect(addr) => {
            let certs = connect::presented_chain(addr, opts.timeout).await?;
            (format!("certificate presented by {addr}"), certs)
        }
    };
    let bundle = bundle.as_ref().map(|(p, b)| (*p, b));
    build_report(&certs, &origin, bundle, SystemTime::now())
}

/// Reports on `certs` (leaf first) at `now`, verifying against `bundle` if given.
pub fn build_report(
    certs: &[CertificateDer<'_>],
    origin: &str,
    bundle: Option<(&Path, &TrustBundle)>,
    now: SystemTime,
) -> Result<Report, InspectError> {
    let Some((leaf_der, rest)) = certs.split_first() else {
        return Err(InspectError::NoCertificate {
            origin: origin.to_string(),
        });
    };
    let leaf = chain::describe(leaf_der, 0, origin)?;
    let issuers = rest
        .iter()
        .enumerate()
        .map(|(i, der)| chain::describe(der, i + 1, origin))
        .collect::<Result<Vec<_>, _>>()?;
    let identity = verify::svid_identity(leaf_der)
        .map(|id| id.to_string())
        .map_err(|e| match e {
            // Inspecting a root or issuer file is legitimate; say what it is.
            mesh_identity::VerifyError::CaAsLeaf => "a CA certificate, not a workload SVID".into(),
            other => other.to_string(),
        });
    let verification = bundle.map(|(path, bundle)| Verification {
        trust_bundle: path.to_path_buf(),
        result: verify_chain(leaf_der, rest, bundle, now)
            .map_err(|e| explain_failure(e, certs, bundle)),
    });
    Ok(Report {
        leaf,
        issuers,
        identity,
        verification,
        now: now.into(),
    })
}

/// Verifies as a mesh client would verify a server: chain, time, usage, and
/// the trust domain of the leaf's own SPIFFE ID (there is no expected
/// identity to compare with here).
fn verify_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<(), mesh_identity::VerifyError> {
    let id = verify::svid_identity(leaf)?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let provider = mesh_identity::tls::provider();
    verify::verify_svid(
        leaf,
        intermediates,
        bundle,
        id.trust_domain(),
        Usage::Server,
        UnixTime::since_unix_epoch(since_epoch),
        &provider.signature_verification_algorithms,
    )
    .map(|_| ())
}

/// The verifier's reason, plus a hint when the chain ends at a CA that has
/// the name of a trusted root but another key: two control planes that each
/// generated their own CA look exactly like that, and webpki then reports
/// only a bad signature.
fn explain_failure(
    e: mesh_identity::VerifyError,
    certs: &[CertificateDer<'_>],
    bundle: &TrustBundle,
) -> String {
    let reason = e.to_string();
    // mesh-identity reports a trusted name with another key as UnknownIssuer.
    if !matches!(
        e,
        mesh_identity::VerifyError::Chain(_) | mesh_identity::VerifyError::UnknownIssuer
    ) {
        return reason;
    }
    let subject_of = |der: &[u8]| {
        x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, c)| c.subject().as_raw().to_vec())
    };
    let top_issuer = certs.last().and_then(|der| {
        x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, c)| c.issuer().as_raw().to_vec())
    });
    let named_like_a_root = top_issuer.is_some_and(|issuer| {
        bundle
            .roots()
            .iter()
            .any(|r| subject_of(r).as_deref() == Some(issuer.as_slice()))
    });
    if named_like_a_root {
        format!(
            "{reason}: it was signed by a CA with the name of a trusted root but a different key \
             (a different CA, e.g. another control plane's data dir)"
        )
    } else {
        reason
    }
}

fn load_trust_bundle(path: &Path) -> Result<TrustBundle, InspectError> {
    let certs = chain::read_pem_file(path, "trust bundle")?;
    TrustBundle::new(certs).map_err(|e| InspectError::TrustBundle {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
