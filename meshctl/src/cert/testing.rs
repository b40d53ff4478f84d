//! A throwaway mesh CA for the cert tests: a generated root and issuer, and
//! SVIDs signed by that issuer with the key to serve them.

use std::path::PathBuf;

use mesh_identity::TrustBundle;
use mesh_identity::ca::{Ca, ISSUER_CERT_FILE, ISSUER_KEY_FILE, ROOT_CERT_FILE};
use mesh_identity::testing::{LeafSpec, TestCa};
use rustls_pki_types::CertificateDer;

pub const API: &str = "spiffe://cluster.local/ns/shop/sa/api";

pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub bundle: TrustBundle,
    pub issuer: TestCa,
    /// The root, as proxies and `--trust-bundle` read it.
    pub bundle_path: PathBuf,
}

impl Mesh {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = Ca::load_or_generate(&ca_dir, "cluster.local").unwrap();
        let cert = std::fs::read_to_string(ca_dir.join(ISSUER_CERT_FILE)).unwrap();
        let key = std::fs::read_to_string(ca_dir.join(ISSUER_KEY_FILE)).unwrap();
        Self {
            bundle: ca.bundle().clone(),
            issuer: TestCa::from_pem(&cert, &key),
            bundle_path: ca_dir.join(ROOT_CERT_FILE),
            dir,
        }
    }

    /// `[leaf, issuer]` for `spec`, and the leaf's PKCS#8 key.
    pub fn chain(&self, spec: &LeafSpec) -> (Vec<CertificateDer<'static>>, Vec<u8>) {
        let (leaf, key) = self.issuer.sign(spec);
        (vec![leaf, self.issuer.cert.clone()], key)
    }

    /// Writes `certs` as one PEM file in the test dir.
    pub fn write_pem(&self, name: &str, certs: &[CertificateDer<'_>]) -> PathBuf {
        let pem: String = certs
            .iter()
            .map(|c| mesh_identity::bundle::der_to_pem(c))
            .collect();
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }
}
