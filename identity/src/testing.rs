//! Test helpers: certificates with chosen flaws, signed by a chosen issuer.
//! Shared by unit tests, end-to-end tests and benches (feature `testing`).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;

/// What a test certificate looks like.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub is_ca: bool,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl LeafSpec {
    /// A well-formed one-hour SVID for `uri`.
    pub fn svid(uri: &str) -> Self {
        let now = SystemTime::now();
        Self {
            uris: vec![uri.to_string()],
            dns: vec![],
            is_ca: false,
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(3600),
        }
    }
}

/// A self-signed CA that has nothing to do with the mesh.
pub struct TestCa {
    pub cert: CertificateDer<'static>,
    pub issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("self-sign");
        Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(p, key),
        }
    }

    /// Loads an issuer from PEM (e.g. the control plane's `ca/issuer-*.pem`).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Self {
        let key = KeyPair::from_pem(key_pem).expect("issuer key");
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).expect("issuer cert");
        let cert = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .expect("issuer cert pem");
        Self { cert, issuer }
    }

    /// Signs a leaf per `spec`; returns the certificate and its key (PKCS#8 DER).
    pub fn sign(&self, spec: &LeafSpec) -> (CertificateDer<'static>, Vec<u8>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        for u in &spec.uris {
            p.subject_alt_names
                .push(SanType::URI(u.as_str().try_into().expect("ia5")));
        }
        for d in &spec.dns {
            p.subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into().expect("ia5")));
        }
        if spec.is_ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        } else {
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = spec.not_before.into();
        p.not_after = spec.not_after.into();
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        (cert.der().clone(), key.serialize_der())
    }
}

/// A CSR with arbitrary SANs and CA flag, for testing refusals.
pub fn csr_with(uris: &[&str], dns: &[&str], is_ca: bool) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    for u in uris {
        p.subject_alt_names
            .push(SanType::URI((*u).try_into().expect("ia5")));
    }
    for d in dns {
        p.subject_alt_names
            .push(SanType::DnsName((*d).try_into().expect("ia5")));
    }
    if is_ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p.serialize_request(&key).expect("csr").der().to_vec()
}
