//! The mesh CA: a root and an intermediate issuer (ECDSA P-256), generated on
//! first start under the data dir or supplied by the operator, and the signing
//! of workload CSRs into X.509-SVIDs.
//!
//! Files under `DATA/ca/`:
//! - `root-cert.pem`, `root-key.pem` (the key is optional when supplied by an operator),
//! - `issuer-cert.pem` (the issuing intermediate, optionally followed by further
//!   intermediates up to, not including, the root), `issuer-key.pem`,
//! - `extra-roots.pem` (optional): more trusted roots, for root rotation with overlap.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SecureRandom;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::bundle::TrustBundle;
use crate::secret::{self, SecretFileError};
use crate::spiffe::SpiffeId;

/// notBefore of issued certificates is backdated by this much, so peers whose
/// clocks run behind the control plane's (by two minutes, say: a VM resumed,
/// NTP not yet synced) accept a fresh certificate at once.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Lifetime of a generated root: roots are rotated by hand, rarely.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of a generated intermediate issuer.
const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest CSR accepted, far above any real P-256 CSR.
const MAX_CSR_LEN: usize = 16 * 1024;

pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const ROOT_KEY_FILE: &str = "root-key.pem";
pub const ISSUER_CERT_FILE: &str = "issuer-cert.pem";
pub const ISSUER_KEY_FILE: &str = "issuer-key.pem";
pub const EXTRA_ROOTS_FILE: &str = "extra-roots.pem";
/// Every file a CA is made of: a change to any is a new CA.
pub const CA_FILES: [&str; 5] = [
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    ISSUER_CERT_FILE,
    ISSUER_KEY_FILE,
    EXTRA_ROOTS_FILE,
];
/// Under the CA directory during a rotation (`meshctl ca rotate`): the CA
/// being introduced (after `begin`), then the one being retired (after `switch`).
pub const NEXT_DIR: &str = "next";
pub const PREVIOUS_DIR: &str = "previous";

/// Why the CA could not start or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "CA directory {dir} is incomplete: {missing} is missing (supply issuer-cert.pem, issuer-key.pem and root-cert.pem, or none to generate a new CA)"
    )]
    Incomplete { dir: PathBuf, missing: &'static str },
    #[error("CSR refused: {0}")]
    Csr(CsrRefusal),
    #[error("CA cannot issue: the issuer certificate has expired")]
    IssuerExpired,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Why a CSR was refused. The certificate's identity comes from the
/// credential; a CSR asking for anything else is refused, not corrected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrRefusal {
    #[error("CSR is too large")]
    TooLarge,
    #[error("CSR could not be parsed or its signature is invalid")]
    Invalid,
    #[error("CSR has an extension the CA does not accept")]
    UnsupportedExtension,
    #[error("CSR key must be ECDSA P-256")]
    KeyAlgorithm,
    #[error("CSR asks for a CA certificate")]
    CaRequested,
    #[error("CSR has more than one URI SAN")]
    MultipleUris,
    #[error("CSR has a DNS, IP or e-mail SAN; SVIDs carry exactly one URI SAN")]
    NonUriSan,
    #[error("CSR asks for {requested}, but the credential proves {proven}")]
    IdentityMismatch { requested: String, proven: String },
}

/// A certificate issued to a workload.
#[derive(Debug, Clone)]
pub struct Issued {
    pub leaf: CertificateDer<'static>,
    /// Intermediates, issuer first.
    pub intermediates: Vec<CertificateDer<'static>>,
    pub bundle: TrustBundle,
    pub not_after: SystemTime,
}

/// The mesh certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    intermediates: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
    issuer_not_after: SystemTime,
    /// See [`Ca::generation`]; computed once at load.
    generation: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("roots", &self.bundle.len())
            .field("issuer_not_after", &self.issuer_not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `ca_dir`, generating a new root and issuer there on
    /// first start. Keys are written with mode 0600 and refused when group- or
    /// world-readable.
    pub fn load_or_generate(ca_dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        std::fs::create_dir_all(ca_dir).map_err(|e| file_err(ca_dir, e))?;
        let issuer_cert = ca_dir.join(ISSUER_CERT_FILE);
        let issuer_key = ca_dir.join(ISSUER_KEY_FILE);
        let root_cert = ca_dir.join(ROOT_CERT_FILE);
        let any = [&issuer_cert, &issuer_key, &root_cert]
            .iter()
            .any(|p| p.exists());
        if !any {
            generate(ca_dir, trust_domain)?;
        }
        Self::load(ca_dir)
    }

    /// Loads the CA from the files in `ca_dir` (never generates): the
    /// issuer's key must be the one its certificate names.
    pub fn load(ca_dir: &Path) -> Result<Self, CaError> {
        let issuer_cert = ca_dir.join(ISSUER_CERT_FILE);
        let issuer_key = ca_dir.join(ISSUER_KEY_FILE);
        let root_cert = ca_dir.join(ROOT_CERT_FILE);
        for (p, name) in [
            (&issuer_cert, ISSUER_CERT_FILE),
            (&issuer_key, ISSUER_KEY_FILE),
            (&root_cert, ROOT_CERT_FILE),
        ] {
            if !p.exists() {
                return Err(CaError::Incomplete {
                    dir: ca_dir.to_path_buf(),
                    missing: name,
                });
            }
        }
        let root_key = ca_dir.join(ROOT_KEY_FILE);
        if root_key.exists() {
            secret::check_permissions(&root_key)?;
        }
        let key_pem = String::from_utf8(secret::read_secret(&issuer_key)?)
            .map_err(|_| file_reason(&issuer_key, "not a PEM private key"))?;
        // The parse error from the key would not contain key bytes, but keep the message generic.
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|_| file_reason(&issuer_key, "not a usable PEM private key"))?;
        let chain = read_certs(&issuer_cert)?;
        let Some(issuer_der) = chain.first().cloned() else {
            return Err(file_reason(&issuer_cert, "contains no certificate"));
        };
        let mut roots = read_certs(&root_cert)?;
        let extra = ca_dir.join(EXTRA_ROOTS_FILE);
        if extra.exists() {
            for r in read_certs(&extra)? {
                // During a rotation a root may be listed in both files.
                if !roots.contains(&r) {
                    roots.push(r);
                }
            }
        }
        let bundle =
            TrustBundle::new(roots).map_err(|e| file_reason(&root_cert, &e.to_string()))?;
        let issuer_not_after = not_after_of(&issuer_der)
            .ok_or_else(|| file_reason(&issuer_cert, "issuer certificate cannot be parsed"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|_| file_reason(&issuer_cert, "issuer certificate cannot be parsed"))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(file_reason(
                &issuer_key,
                "this key is not the one issuer-cert.pem certifies",
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&issuer_der, key)
            .map_err(|e| file_reason(&issuer_cert, &e.to_string()))?;
        let generation = generation(&bundle, Some(issuer_der.as_ref()));
        Ok(Self {
            issuer,
            intermediates: chain,
            bundle,
            issuer_not_after,
            generation,
        })
    }

    /// The roots workloads trust.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The issuing intermediate's certificate.
    pub fn issuer_cert(&self) -> Option<&CertificateDer<'static>> {
        self.intermediates.first()
    }

    /// The intermediates sent with every leaf, issuer first.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }

    /// This CA's generation: a digest of the roots it publishes and the
    /// issuer it signs with. A workload whose certificate and bundle are of
    /// another generation renews.
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// Issues a throwaway certificate and verifies it against the bundle:
    /// the issuer chains to a published root and signs usable SVIDs.
    pub fn self_check(&self, trust_domain: &str) -> Result<(), CaError> {
        let id = SpiffeId::workload(trust_domain, "mesh-system", "ca-self-check")
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let csr =
            crate::credentials::csr_for(&id, &key).map_err(|e| CaError::Sign(e.to_string()))?;
        let issued = self.sign_csr(&csr, &id, Duration::from_secs(60))?;
        let provider = crate::tls::provider();
        crate::verify::verify_svid(
            &issued.leaf,
            &issued.intermediates,
            &issued.bundle,
            trust_domain,
            crate::verify::Usage::Client,
            rustls_pki_types::UnixTime::now(),
            &provider.signature_verification_algorithms,
        )
        .map(|_| ())
        .map_err(|e| CaError::Sign(format!("an SVID from this issuer does not verify: {e}")))
    }

    /// When the issuing intermediate expires.
    pub fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after
    }

    /// Signs a CSR for `identity` (taken from the authenticated credential).
    /// The lifetime is `ttl`, clamped to the issuer's expiry.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        if csr_der.len() > MAX_CSR_LEN {
            return Err(CaError::Csr(CsrRefusal::TooLarge));
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| {
                    CaError::Csr(match e {
                        rcgen::Error::UnsupportedExtension => CsrRefusal::UnsupportedExtension,
                        _ => CsrRefusal::Invalid,
                    })
                })?;
        check_csr(&csr, identity).map_err(CaError::Csr)?;
        let now = SystemTime::now();
        if now >= self.issuer_not_after {
            return Err(CaError::IssuerExpired);
        }
        let not_after = (now + ttl).min(self.issuer_not_after);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(identity.as_str().try_into().map_err(
                |_| CaError::Sign("identity is not an IA5 string".into()),
            )?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(random_serial()?);
        params.not_before = to_offset(now - DEFAULT_CLOCK_SKEW);
        params.not_after = to_offset(not_after);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(Issued {
            leaf: cert.der().clone(),
            intermediates: self.intermediates.clone(),
            bundle: self.bundle.clone(),
            // DER times have second precision; report what the certificate says.
            not_after: truncate_to_secs(not_after),
        })
    }
}

fn check_csr(csr: &CertificateSigningRequestParams, identity: &SpiffeId) -> Result<(), CsrRefusal> {
    if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(CsrRefusal::KeyAlgorithm);
    }
    if !matches!(csr.params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
        return Err(CsrRefusal::CaRequested);
    }
    let mut uris = Vec::new();
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::URI(u) => uris.push(u.as_str().to_string()),
            _ => return Err(CsrRefusal::NonUriSan),
        }
    }
    if uris.len() > 1 {
        return Err(CsrRefusal::MultipleUris);
    }
    if let Some(u) = uris.first()
        && u != identity.as_str()
    {
        return Err(CsrRefusal::IdentityMismatch {
            requested: u.clone(),
            proven: identity.to_string(),
        });
    }
    Ok(())
}

/// The generation of a bundle and an issuer (see [`Ca::generation`]): 16
/// hex digits of a SHA-256 over the roots and the issuer certificate.
pub fn generation(bundle: &TrustBundle, issuer: Option<&[u8]>) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for root in bundle.roots() {
        ctx.update(&(root.len() as u64).to_be_bytes());
        ctx.update(root);
    }
    ctx.update(b"issuer");
    ctx.update(issuer.unwrap_or_default());
    ctx.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of a DER certificate, lowercase hex: how roots and issuers are named.
pub fn fingerprint(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a new root and issuer into `ca_dir` (which must not hold a CA).
pub fn generate(ca_dir: &Path, trust_domain: &str) -> Result<(), CaError> {
    let now = SystemTime::now();
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name
        .push(DnType::OrganizationName, "Palisade");
    root.distinguished_name.push(
        DnType::CommonName,
        format!("Palisade root CA {trust_domain}"),
    );
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    root.serial_number = Some(random_serial()?);
    root.not_before = to_offset(now - DEFAULT_CLOCK_SKEW);
    root.not_after = to_offset(now + ROOT_LIFETIME);
    let root_cert = root
        .self_signed(&root_key)
        .map_err(|e| CaError::Sign(e.to_string()))?;

    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let mut inter = CertificateParams::default();
    inter.distinguished_name = DistinguishedName::new();
    inter
        .distinguished_name
        .push(DnType::OrganizationName, "Palisade");
    inter.distinguished_name.push(
        DnType::CommonName,
        format!("Palisade issuer {trust_domain}"),
    );
    // The issuer signs leaves only.
    inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    inter.serial_number = Some(random_serial()?);
    inter.not_before = to_offset(now - DEFAULT_CLOCK_SKEW);
    inter.not_after = to_offset(now + ISSUER_LIFETIME);
    inter.use_authority_key_identifier_extension = true;
    let root_issuer = Issuer::new(root, root_key);
    let inter_cert = inter
        .signed_by(&issuer_key, &root_issuer)
        .map_err(|e| CaError::Sign(e.to_string()))?;

    secret::write_new_secret(
        &ca_dir.join(ROOT_KEY_FILE),
        root_issuer.key().serialize_pem().as_bytes(),
    )?;
    secret::write_new_secret(
        &ca_dir.join(ISSUER_KEY_FILE),
        issuer_key.serialize_pem().as_bytes(),
    )?;
    secret::write_public_atomic(&ca_dir.join(ROOT_CERT_FILE), root_cert.pem().as_bytes())?;
    secret::write_public_atomic(&ca_dir.join(ISSUER_CERT_FILE), inter_cert.pem().as_bytes())?;
    Ok(())
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_reason(path, &format!("invalid PEM: {e}")))?;
    Ok(certs)
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CaError::Sign("system random generator failed".into()))?;
    // Positive, and never shortened to fewer bytes by DER's minimal encoding
    // of a leading zero.
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn truncate_to_secs(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The subject of a DER certificate, as text.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}

/// notAfter of a DER certificate.
pub fn not_after_of(der: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let ts = cert.validity().not_after.timestamp();
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).ok()?))
}

fn file_err(path: &Path, e: std::io::Error) -> CaError {
    CaError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn file_reason(path: &Path, reason: &str) -> CaError {
    CaError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
#[path = "ca/tests.rs"]
mod tests;
