//! X.509-SVID verification, and the rustls verifiers that apply it on both
//! sides of every mesh connection.
//!
//! rustls' built-in verifiers check DNS names, which SVIDs do not carry, so
//! chains are verified with webpki directly and the SPIFFE ID is checked here.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::sync::watch;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::bundle::TrustBundle;
use crate::spiffe::SpiffeId;

/// Why a peer's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("certificate has expired")]
    Expired,
    #[error("certificate is not valid yet")]
    NotYetValid,
    #[error("certificate does not chain to the trust bundle")]
    UnknownIssuer,
    #[error("a CA certificate was presented as a workload certificate")]
    CaAsLeaf,
    #[error("certificate is not usable for this purpose: {0}")]
    Usage(String),
    #[error("certificate chain is invalid: {0}")]
    Chain(String),
    #[error("certificate cannot be parsed")]
    Unparsable,
    #[error("certificate must have exactly one URI SAN, found {0}")]
    UriSanCount(usize),
    #[error("certificate URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(String),
    #[error("a workload certificate's SPIFFE ID must have a path (it names only the trust domain)")]
    LeafWithoutPath,
    #[error("certificate has no key usage extension (an SVID must carry it, critical)")]
    KeyUsageMissing,
    #[error("certificate's key usage extension is not marked critical")]
    KeyUsageNotCritical,
    #[error("a workload certificate must not have keyCertSign in its key usage")]
    LeafKeyCertSign,
    #[error("a workload certificate must not have cRLSign in its key usage")]
    LeafCrlSign,
    #[error("a workload certificate must have digitalSignature in its key usage")]
    NoDigitalSignature,
    #[error("a workload certificate must not carry a path length constraint")]
    LeafPathLen,
    #[error("certificate has an empty subject and a subject alternative name not marked critical")]
    SanNotCritical,
    #[error("a signing certificate's SPIFFE ID must not have a path")]
    SigningIdWithPath,
    #[error("peer is in trust domain {got}, expected {expected}")]
    WrongTrustDomain { expected: String, got: String },
    #[error("peer is {got}, expected {expected}")]
    WrongIdentity { expected: String, got: String },
}

impl VerifyError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::UnknownIssuer => "unknown_issuer",
            Self::CaAsLeaf => "ca_as_leaf",
            Self::Usage(_) => "bad_usage",
            Self::Chain(_) | Self::Unparsable => "bad_certificate",
            Self::UriSanCount(_) | Self::BadSpiffeId(_) => "bad_san",
            Self::LeafWithoutPath => "leaf_without_path",
            Self::KeyUsageMissing => "key_usage_missing",
            Self::KeyUsageNotCritical => "key_usage_not_critical",
            Self::LeafKeyCertSign => "leaf_key_cert_sign",
            Self::LeafCrlSign => "leaf_crl_sign",
            Self::NoDigitalSignature => "no_digital_signature",
            Self::LeafPathLen => "leaf_path_len",
            Self::SanNotCritical => "san_not_critical",
            Self::SigningIdWithPath => "signing_id_with_path",
            Self::WrongTrustDomain { .. } => "wrong_trust_domain",
            Self::WrongIdentity { .. } => "wrong_identity",
        }
    }
}

/// What a certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// The peer is a server (we are the client).
    Server,
    /// The peer is a client (we are the server).
    Client,
}

/// Verifies an SVID chain: chains to `bundle` at `now` for `usage`, the leaf is
/// not a CA, and it has exactly one URI SAN that is a SPIFFE ID in
/// `trust_domain`. Returns the peer's SPIFFE ID.
pub fn verify_svid(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    bundle: &TrustBundle,
    trust_domain: &str,
    usage: Usage,
    now: UnixTime,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<SpiffeId, VerifyError> {
    // Checked first so a CA certificate gets a precise error, whether or not it chains.
    let id = svid_identity(leaf)?;
    check_signing_certificates(intermediates)?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|_| VerifyError::Unparsable)?;
    let eku = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    ee.verify_for_usage(
        algs.all,
        bundle.anchors(),
        intermediates,
        now,
        eku,
        None,
        None,
    )
    .map_err(map_webpki)?;
    if id.trust_domain() != trust_domain {
        return Err(VerifyError::WrongTrustDomain {
            expected: trust_domain.to_string(),
            got: id.trust_domain().to_string(),
        });
    }
    Ok(id)
}

/// The SPIFFE ID of a leaf certificate, checked against the leaf rules of
/// the X.509-SVID specification (§3.1, §4.1, §4.3, §4.4, §5.2): not a CA and
/// no path length constraint; a critical key usage with `digitalSignature`
/// and neither `keyCertSign` nor `cRLSign`; an extended key usage, when
/// present, with both `serverAuth` and `clientAuth`; a critical SAN when the
/// subject is empty (RFC 5280 §4.1.2.6); exactly one URI SAN, a SPIFFE ID
/// with a path. Does not verify the chain.
pub fn svid_identity(leaf: &[u8]) -> Result<SpiffeId, VerifyError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|_| VerifyError::Unparsable)?;
    let mut uris = Vec::new();
    let mut san_critical = true;
    let mut key_usage = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(VerifyError::CaAsLeaf),
            ParsedExtension::BasicConstraints(bc) if bc.path_len_constraint.is_some() => {
                return Err(VerifyError::LeafPathLen);
            }
            ParsedExtension::KeyUsage(ku) => key_usage = Some((ext.critical, *ku)),
            ParsedExtension::ExtendedKeyUsage(eku) if !(eku.server_auth && eku.client_auth) => {
                return Err(VerifyError::Usage(
                    "extended key usage must include both serverAuth and clientAuth".into(),
                ));
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                san_critical = ext.critical;
                for name in &san.general_names {
                    if let GeneralName::URI(u) = name {
                        uris.push(*u);
                    }
                }
            }
            _ => {}
        }
    }
    match key_usage {
        None => return Err(VerifyError::KeyUsageMissing),
        Some((false, _)) => return Err(VerifyError::KeyUsageNotCritical),
        Some((_, ku)) if ku.key_cert_sign() => return Err(VerifyError::LeafKeyCertSign),
        Some((_, ku)) if ku.crl_sign() => return Err(VerifyError::LeafCrlSign),
        Some((_, ku)) if !ku.digital_signature() => return Err(VerifyError::NoDigitalSignature),
        Some(_) => {}
    }
    if cert.subject().iter().next().is_none() && !san_critical {
        return Err(VerifyError::SanNotCritical);
    }
    if uris.len() != 1 {
        return Err(VerifyError::UriSanCount(uris.len()));
    }
    let id = SpiffeId::parse(uris[0]).map_err(|e| VerifyError::BadSpiffeId(e.to_string()))?;
    if id.path().is_empty() {
        return Err(VerifyError::LeafWithoutPath);
    }
    Ok(id)
}

/// The signing-certificate rule path validation does not cover (§3.2): a
/// presented intermediate that carries a SPIFFE ID names a trust domain,
/// without a path. The CA flag and `keyCertSign` are checked by webpki.
fn check_signing_certificates(intermediates: &[CertificateDer<'_>]) -> Result<(), VerifyError> {
    for der in intermediates {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|_| VerifyError::Unparsable)?;
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            continue;
        };
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name
                && let Ok(id) = SpiffeId::parse(u)
                && !id.path().is_empty()
            {
                return Err(VerifyError::SigningIdWithPath);
            }
        }
    }
    Ok(())
}

fn map_webpki(e: webpki::Error) -> VerifyError {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => VerifyError::Expired,
        E::CertNotValidYet { .. } => VerifyError::NotYetValid,
        // A root or intermediate with a trusted name but another key is, for
        // the operator, a certificate from another CA.
        E::UnknownIssuer | E::InvalidSignatureForPublicKey => VerifyError::UnknownIssuer,
        E::CaUsedAsEndEntity => VerifyError::CaAsLeaf,
        E::RequiredEkuNotFoundContext(_) => VerifyError::Usage("missing extended key usage".into()),
        other => VerifyError::Chain(format!("{other:?}")),
    }
}

/// Converts a verification failure into the rustls error that aborts the handshake.
fn to_rustls(e: VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(match e {
        VerifyError::Expired => CertificateError::Expired,
        VerifyError::NotYetValid => CertificateError::NotValidYet,
        VerifyError::UnknownIssuer => CertificateError::UnknownIssuer,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    })
}

/// A short, stable label for a failed handshake, for metrics.
pub fn handshake_failure_reason(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::UnknownIssuer => "unknown_issuer",
            CertificateError::Other(OtherError(inner)) => inner
                .downcast_ref::<VerifyError>()
                .map(VerifyError::reason)
                .unwrap_or("bad_certificate"),
            _ => "bad_certificate",
        },
        rustls::Error::AlertReceived(_) => "peer_alert",
        rustls::Error::NoApplicationProtocol => "alpn",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => "not_tls",
        _ => "other",
    }
}

/// Why a TLS handshake (as an I/O error from tokio-rustls) failed: a metric
/// label and a message an operator can act on.
pub fn describe_handshake_error(e: &std::io::Error) -> (&'static str, String) {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return ("io", e.to_string());
    };
    let reason = handshake_failure_reason(tls);
    let message = match tls {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner
            .downcast_ref::<VerifyError>()
            .map(|v| format!("peer certificate refused: {v}"))
            .unwrap_or_else(|| tls.to_string()),
        rustls::Error::NoCertificatesPresented => {
            "peer presented no certificate (not a mesh proxy?)".to_string()
        }
        other => other.to_string(),
    };
    (reason, message)
}

/// The handshake-signature half of a verifier, shared by both sides: TLS 1.3
/// signatures checked with the provider's algorithms; TLS 1.2 refused (mesh
/// connections are TLS 1.3 only). Expects a `provider: Arc<CryptoProvider>` field.
macro_rules! tls13_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls13RequiredForQuic,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Verifies the server side of a mesh connection: a valid SVID whose SPIFFE
/// ID is exactly the one the route or discovery data says the destination has.
#[derive(Debug)]
pub struct SvidServerVerifier {
    bundle: watch::Receiver<TrustBundle>,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl SvidServerVerifier {
    pub fn new(
        bundle: watch::Receiver<TrustBundle>,
        expected: SpiffeId,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            bundle,
            expected,
            provider,
        }
    }
}

impl ServerCertVerifier for SvidServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self.bundle.borrow().clone();
        let id = verify_svid(
            end_entity,
            intermediates,
            &bundle,
            self.expected.trust_domain(),
            Usage::Server,
            now,
            &self.provider.signature_verification_algorithms,
        )
        .map_err(to_rustls)?;
        if id != self.expected {
            return Err(to_rustls(VerifyError::WrongIdentity {
                expected: self.expected.to_string(),
                got: id.to_string(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    tls13_signatures!();
}

/// Verifies the client side of a mesh connection: a valid SVID in the local
/// trust domain. Authorization of the identity happens after the handshake.
#[derive(Debug)]
pub struct SvidClientVerifier {
    bundle: watch::Receiver<TrustBundle>,
    trust_domain: String,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl SvidClientVerifier {
    /// `mandatory`: refuse clients without a certificate (the proxy inbound);
    /// otherwise they are admitted unauthenticated (the control plane, where
    /// proxies without a certificate yet call `Identity.Certify`).
    pub fn new(
        bundle: watch::Receiver<TrustBundle>,
        trust_domain: &str,
        mandatory: bool,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            bundle,
            trust_domain: trust_domain.to_string(),
            mandatory,
            provider,
        }
    }
}

impl ClientCertVerifier for SvidClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.bundle.borrow().clone();
        verify_svid(
            end_entity,
            intermediates,
            &bundle,
            &self.trust_domain,
            Usage::Client,
            now,
            &self.provider.signature_verification_algorithms,
        )
        .map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_signatures!();
}

/// The verified SPIFFE ID of the peer of an established connection.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = certs?.first()?;
    svid_identity(leaf).ok()
}

#[cfg(test)]
#[path = "verify/tests.rs"]
mod tests;
