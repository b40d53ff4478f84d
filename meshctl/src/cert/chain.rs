//! Certificates as `cert inspect` shows them: PEM in, one summary per
//! certificate out. Everything shown comes from the certificates themselves,
//! never from what a proxy says about them.

use std::io::Read;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::InspectError;

/// Far larger than any certificate chain (a P-256 SVID chain is ~2 KB), small
/// enough that a wrong file or a hostile peer cannot exhaust memory.
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// What `cert inspect` shows about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject DN, empty for SVIDs (they are named by their URI SAN).
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex of the serial's DER bytes, as the proxy admin shows it.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    pub uri_sans: Vec<String>,
    pub key_algorithm: String,
}

/// Certificates from PEM text, in file order. `origin` names the input in errors.
pub fn from_pem(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, InspectError> {
    // Only CERTIFICATE blocks are taken; anything else (a private key pasted
    // into the same file) is skipped and never echoed.
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| InspectError::Pem {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(InspectError::NoCertificate {
            origin: origin.to_string(),
        });
    }
    Ok(certs)
}

/// Reads a PEM file (`-` is stdin), bounded by [`MAX_INPUT_BYTES`]. `what`
/// says what the file is for (e.g. "trust bundle") in errors; may be empty.
pub fn read_pem_file(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, InspectError> {
    let what = if what.is_empty() {
        String::new()
    } else {
        format!("{what} ")
    };
    let read_err = |error| InspectError::Read {
        what: what.clone(),
        path: path.to_path_buf(),
        error,
    };
    let mut buf = Vec::new();
    // One byte more than the limit tells "too large" from "exactly at the limit".
    let limit = MAX_INPUT_BYTES + 1;
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(read_err)?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut buf))
            .map_err(read_err)?;
    }
    let origin = format!("{what}{}", path.display());
    if buf.len() as u64 > MAX_INPUT_BYTES {
        return Err(InspectError::TooLarge { origin });
    }
    from_pem(&buf, &origin)
}

/// Summarizes certificate number `index` (0 = leaf) of a chain from `origin`.
pub fn describe(der: &[u8], index: usize, origin: &str) -> Result<CertInfo, InspectError> {
    let unparsable = |reason: String| InspectError::Unparsable {
        origin: origin.to_string(),
        number: index + 1,
        reason,
    };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| unparsable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(unparsable(format!(
            "{} bytes of trailing data after the certificate",
            rest.len()
        )));
    }
    let uri_sans = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some((*u).to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(unparsable(format!("subjectAltName: {e}"))),
    };
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: hex(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
        uri_sans,
        key_algorithm: key_algorithm(cert.public_key()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short name for the subject key, e.g. `ECDSA P-256` or `RSA 2048`.
fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> String {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| Oid::try_from(p).ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => "ECDSA P-256".into(),
            Some(c) if c == OID_NIST_EC_P384 => "ECDSA P-384".into(),
            Some(c) if c == OID_NIST_EC_P521 => "ECDSA P-521".into(),
            Some(c) => format!("ECDSA (curve {c})"),
            None => "ECDSA (unknown curve)".into(),
        };
    }
    if *alg == OID_PKCS1_RSAENCRYPTION {
        return match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => format!("RSA {}", bit_length(rsa.modulus)),
            _ => "RSA".into(),
        };
    }
    if *alg == OID_SIG_ED25519 {
        return "Ed25519".into();
    }
    format!("unknown ({alg})")
}

/// Bit length of a big-endian unsigned integer (DER may pad it with zeros).
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}
