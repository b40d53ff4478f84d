//! The lab ingress's demo certificate: `ingress.demoCertificate` in
//! lab.yaml makes `lab up` create a CA and a certificate for the hosts,
//! written as a `kubernetes.io/tls` Secret into the lab's config folder
//! (mode 0600, only the control plane reads it) and the CA as
//! `ingress-ca.pem` beside it, for `curl --cacert`. A real cluster gets its
//! Secrets from cert-manager instead.

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::spec::DemoCertificate;

/// The CA file curl trusts.
pub const CA_FILE: &str = "ingress-ca.pem";

/// Writes the Secret into `config` and the CA into `root`.
pub fn write(demo: &DemoCertificate, config: &Path, root: &Path) -> Result<(), String> {
    let sign = |e: rcgen::Error| format!("cannot make the demo certificate: {e}");
    let now = SystemTime::now();
    let since = time::OffsetDateTime::from(now - Duration::from_secs(300));
    let until = time::OffsetDateTime::from(now + Duration::from_secs(30 * 24 * 3600));
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "Palisade lab ingress CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ca.not_before = since;
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key).map_err(sign)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign)?;
    let mut leaf = CertificateParams::new(demo.hosts.clone()).map_err(sign)?;
    leaf.distinguished_name = DistinguishedName::new();
    if let Some(h) = demo.hosts.first() {
        leaf.distinguished_name.push(DnType::CommonName, h.clone());
    }
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = since;
    leaf.not_after = until;
    let leaf_cert = leaf
        .signed_by(&key, &Issuer::new(ca, ca_key))
        .map_err(sign)?;
    let (namespace, name) = demo.secret.split_once('/').ok_or_else(|| {
        format!(
            "demoCertificate.secret {:?} is not NAMESPACE/NAME",
            demo.secret
        )
    })?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let yaml = format!(
        "# Made by `meshctl lab up` (ingress.demoCertificate): a demo certificate for {}.\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        demo.hosts.join(", "),
        b64(&leaf_cert.pem()),
        b64(&key.serialize_pem())
    );
    let file = config.join(format!("zz-{name}-secret.yaml"));
    mesh_identity::secret::write_new_secret(&file, yaml.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let ca_file = root.join(CA_FILE);
    mesh_identity::secret::write_public_atomic(&ca_file, ca_cert.pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", ca_file.display()))
}
