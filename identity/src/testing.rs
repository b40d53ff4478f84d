//! Test helpers: certificates with chosen flaws, signed by a chosen issuer.
//! Shared by unit tests, end-to-end tests and benches (feature `testing`).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
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
    /// Key usages in place of the default (`digitalSignature` for a leaf);
    /// an empty list leaves the extension out.
    pub key_usages: Option<Vec<KeyUsagePurpose>>,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    /// A leaf (not a CA) whose basic constraints carry this path length.
    pub path_len: Option<u8>,
    /// Extensions written as given, for shapes rcgen does not produce.
    pub custom: Vec<CustomExtension>,
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
            key_usages: None,
            extended_key_usages: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            path_len: None,
            custom: vec![],
        }
    }
}

/// An extension with its criticality, from its OID and DER content.
pub fn extension(oid: &[u64], critical: bool, content: Vec<u8>) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(oid, content);
    ext.set_criticality(critical);
    ext
}

/// Key usage `digitalSignature` alone, as a (possibly non-critical) extension.
pub fn digital_signature_usage(critical: bool) -> CustomExtension {
    // BIT STRING, 7 unused bits, bit 0 (digitalSignature) set.
    extension(&[2, 5, 29, 15], critical, vec![0x03, 0x02, 0x07, 0x80])
}

/// A subject alternative name with one URI, as a (possibly non-critical) extension.
pub fn uri_san(uri: &str, critical: bool) -> CustomExtension {
    let mut names = vec![0x86, u8::try_from(uri.len()).expect("short URI")];
    names.extend_from_slice(uri.as_bytes());
    let mut content = vec![0x30, u8::try_from(names.len()).expect("short URI")];
    content.extend(names);
    extension(&[2, 5, 29, 17], critical, content)
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

    /// An intermediate CA signed by this one, with `uri` as its SAN if given.
    pub fn intermediate(&self, name: &str, uri: Option<&str>) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        if let Some(u) = uri {
            p.subject_alt_names
                .push(SanType::URI(u.try_into().expect("ia5")));
        }
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
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
        } else if let Some(n) = spec.path_len {
            // rcgen writes a path length only for a CA: cA left at its
            // default (false), pathLenConstraint n.
            p.is_ca = IsCa::NoCa;
            p.custom_extensions
                .push(extension(&[2, 5, 29, 19], true, vec![0x30, 3, 2, 1, n]));
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        } else {
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        if let Some(usages) = &spec.key_usages {
            p.key_usages = usages.clone();
        }
        p.extended_key_usages = spec.extended_key_usages.clone();
        p.custom_extensions.extend(spec.custom.iter().cloned());
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
