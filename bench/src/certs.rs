//! Certificates for the peer pairs, issued by the Palisade CA of the run, so
//! every pair presents the same kind of chain: ECDSA P-256 leaf → Palisade
//! issuer → Palisade root.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The name peers check on the hop. SVIDs carry no DNS name, but nginx
/// always checks one (`proxy_ssl_verify`), so peer certificates carry this
/// one next to their SPIFFE ID; it is also the SNI Palisade sends.
pub const HOP_NAME: &str = "mesh.palisade.internal";
/// Long enough for any run.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Backdated like Palisade's own certificates, for clock skew.
const SKEW: Duration = Duration::from_secs(60);

/// Files of one peer certificate.
#[derive(Debug, Clone)]
pub struct PeerCert {
    /// Leaf then issuer (PEM).
    pub chain: PathBuf,
    /// PKCS#8 private key (PEM).
    pub key: PathBuf,
    /// Chain and key in one file (HAProxy's `crt`).
    pub combined: PathBuf,
    pub spiffe_id: String,
}

/// The issuing CA of a control plane's data dir.
pub struct PalisadeIssuer {
    issuer: Issuer<'static, KeyPair>,
    issuer_pem: String,
}

impl PalisadeIssuer {
    /// Loads `DATA/ca/issuer-cert.pem` and `issuer-key.pem`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let ca = data_dir.join("ca");
        let cert_path = ca.join(mesh_identity::ca::ISSUER_CERT_FILE);
        let key_path = ca.join(mesh_identity::ca::ISSUER_KEY_FILE);
        let issuer_pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a usable key", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&issuer_pem, key)
            .with_context(|| format!("{} is not a usable CA certificate", cert_path.display()))?;
        Ok(Self { issuer, issuer_pem })
    }

    /// Issues a leaf for `spiffe_id` and writes its files as `dir/NAME-*.pem`.
    pub fn issue(&self, dir: &Path, name: &str, spiffe_id: &str) -> anyhow::Result<PeerCert> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![
            SanType::URI(spiffe_id.try_into()?),
            SanType::DnsName(HOP_NAME.try_into()?),
        ];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = SystemTime::now();
        p.not_before = (now - SKEW).into();
        p.not_after = (now + LIFETIME).into();
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer)?;
        let chain_pem = format!("{}{}", cert.pem(), first_pem_block(&self.issuer_pem));
        let key_pem = key.serialize_pem();
        let out = PeerCert {
            chain: dir.join(format!("{name}-chain.pem")),
            key: dir.join(format!("{name}-key.pem")),
            combined: dir.join(format!("{name}-combined.pem")),
            spiffe_id: spiffe_id.to_string(),
        };
        write_private(&out.chain, chain_pem.as_bytes())?;
        write_private(&out.key, key_pem.as_bytes())?;
        write_private(&out.combined, format!("{chain_pem}{key_pem}").as_bytes())?;
        Ok(out)
    }
}

/// The first PEM certificate block of `pem` (the issuer; not the root).
fn first_pem_block(pem: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    match pem.find(END) {
        Some(i) => format!("{}\n", &pem[..i + END.len()]),
        None => pem.to_string(),
    }
}

/// Writes a file readable by its owner only (it may hold a key).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn issues_a_chain_that_palisade_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ca = mesh_identity::Ca::load_or_generate(&data.join("ca"), "cluster.local").unwrap();
        let issuer = PalisadeIssuer::load(&data).unwrap();
        let id = "spiffe://cluster.local/ns/bench/sa/haproxy-b";
        let c = issuer.issue(dir.path(), "b", id).unwrap();
        let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&c.chain)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain.len(), 2);
        let provider = mesh_identity::tls::provider();
        let got = mesh_identity::verify::verify_svid(
            &chain[0],
            &chain[1..],
            ca.bundle(),
            "cluster.local",
            mesh_identity::verify::Usage::Server,
            rustls_pki_types::UnixTime::now(),
            &provider.signature_verification_algorithms,
        );
        // The extra DNS SAN is not a URI SAN: Palisade's verifier accepts it.
        assert_eq!(got.unwrap().as_str(), id);
    }
}
