//! The secrets an install needs: the mesh CA (root and issuer, from
//! mesh-identity, as the control plane generates it) and the webhook's
//! serving certificate with its own small CA (the caBundle the API server
//! verifies the injector with).

use std::path::Path;
use std::time::{Duration, SystemTime};

use mesh_identity::ca::{Ca, ISSUER_CERT_FILE, ISSUER_KEY_FILE, ROOT_CERT_FILE};
use mesh_identity::secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::{Error, NAMESPACE};

/// The webhook certificate outlives any sensible upgrade interval: it only
/// proves the injector to the API server, and `meshctl install
/// --secrets-dir` with a fresh directory rotates it.
const DEFAULT_WEBHOOK_CERT_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
const WEBHOOK_DIR: &str = "webhook";
const WEBHOOK_CA_FILE: &str = "ca.pem";
const WEBHOOK_CERT_FILE: &str = "tls.crt";
const WEBHOOK_KEY_FILE: &str = "tls.key";

/// PEM texts. Holds private keys: never logged (see the Debug impl).
pub struct Material {
    pub root_pem: String,
    pub issuer_cert_pem: String,
    pub issuer_key_pem: String,
    pub webhook_ca_pem: String,
    pub webhook_cert_pem: String,
    pub webhook_key_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material { <certificates and private keys> }")
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Material(format!("{what}: {e}"))
}

fn read(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|e| failed(&path.display().to_string(), e))?;
    String::from_utf8(bytes).map_err(|_| failed(&path.display().to_string(), "not PEM text"))
}

fn read_key(path: &Path) -> Result<String, Error> {
    let bytes = secret::read_secret(path).map_err(|e| failed("secret", e))?;
    String::from_utf8(bytes).map_err(|_| failed(&path.display().to_string(), "not PEM text"))
}

impl Material {
    /// Reads what `dir` holds and generates what it lacks, writing keys
    /// mode 0600 (the control plane's own CA layout under `dir/ca`).
    pub fn load_or_generate(dir: &Path, trust_domain: &str) -> Result<Self, Error> {
        let ca_dir = dir.join("ca");
        Ca::load_or_generate(&ca_dir, trust_domain).map_err(|e| failed("mesh CA", e))?;
        let web = dir.join(WEBHOOK_DIR);
        if !web.join(WEBHOOK_KEY_FILE).exists() {
            generate_webhook(&web)?;
        }
        Ok(Self {
            root_pem: read(&ca_dir.join(ROOT_CERT_FILE))?,
            issuer_cert_pem: read(&ca_dir.join(ISSUER_CERT_FILE))?,
            issuer_key_pem: read_key(&ca_dir.join(ISSUER_KEY_FILE))?,
            webhook_ca_pem: read(&web.join(WEBHOOK_CA_FILE))?,
            webhook_cert_pem: read(&web.join(WEBHOOK_CERT_FILE))?,
            webhook_key_pem: read_key(&web.join(WEBHOOK_KEY_FILE))?,
        })
    }

    /// Empty material, where only object names matter (uninstall).
    pub fn placeholder() -> Self {
        Self {
            root_pem: String::new(),
            issuer_cert_pem: String::new(),
            issuer_key_pem: String::new(),
            webhook_ca_pem: String::new(),
            webhook_cert_pem: String::new(),
            webhook_key_pem: String::new(),
        }
    }
}

fn generate_webhook(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| failed(&dir.display().to_string(), e))?;
    let sign = |e: rcgen::Error| failed("webhook certificate", e);
    let now = SystemTime::now();
    let until = time::OffsetDateTime::from(now + DEFAULT_WEBHOOK_CERT_LIFETIME);
    let since = time::OffsetDateTime::from(now - Duration::from_secs(300));

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "Palisade webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = since;
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key).map_err(sign)?;

    let service = format!("mesh-injector.{NAMESPACE}.svc");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign)?;
    let mut leaf =
        CertificateParams::new(vec![service.clone(), format!("{service}.cluster.local")])
            .map_err(sign)?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, service);
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = since;
    leaf.not_after = until;
    let leaf_cert = leaf
        .signed_by(&key, &Issuer::new(ca, ca_key))
        .map_err(sign)?;

    let write_err = |e| failed(&dir.display().to_string(), e);
    secret::write_public_atomic(&dir.join(WEBHOOK_CA_FILE), ca_cert.pem().as_bytes())
        .map_err(write_err)?;
    secret::write_public_atomic(&dir.join(WEBHOOK_CERT_FILE), leaf_cert.pem().as_bytes())
        .map_err(write_err)?;
    secret::write_new_secret(&dir.join(WEBHOOK_KEY_FILE), key.serialize_pem().as_bytes())
        .map_err(write_err)?;
    Ok(())
}
