//! In Kubernetes mode every replica signs with the same CA, read from one
//! Secret in cert-manager's layout (`tls.crt` the issuing CA, `tls.key` its
//! key, `ca.crt` the root). It is written into the replica's CA directory
//! in the layout `Ca::load_or_generate` reads; no replica ever generates a
//! CA of its own, which would split the mesh into parts that do not trust
//! each other.

use std::path::Path;

use base64::Engine;
use mesh_identity::ca::{ISSUER_CERT_FILE, ISSUER_KEY_FILE, ROOT_CERT_FILE};
use mesh_identity::secret;

use super::Api;

/// The Secret `meshctl install` creates (deploy/20-rbac.yaml lets the
/// control plane read only this one in its namespace).
pub const DEFAULT_CA_SECRET: &str = "mesh-system/palisade-ca";

/// Why the CA could not be read. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("--ca-secret {0}: expected NAMESPACE/NAME")]
    Name(String),
    #[error("CA Secret {secret}: {message}")]
    Read { secret: String, message: String },
}

/// Reads `namespace/name` and writes its CA into `ca_dir`.
pub async fn fetch(api: &Api, secret_ref: &str, ca_dir: &Path) -> Result<(), CaSecretError> {
    let (namespace, name) = secret_ref
        .split_once('/')
        .filter(|(n, s)| !n.is_empty() && !s.is_empty() && !s.contains('/'))
        .ok_or_else(|| CaSecretError::Name(secret_ref.to_owned()))?;
    let read = |message: String| CaSecretError::Read {
        secret: secret_ref.to_owned(),
        message,
    };
    let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
    let secret = api.json("GET", &path, None).await.map_err(|e| {
        let hint = if e.status() == Some(http::StatusCode::NOT_FOUND) {
            " (meshctl install creates it; or supply a cert-manager Certificate with isCA: true)"
        } else {
            ""
        };
        read(format!("{e}{hint}"))
    })?;
    std::fs::create_dir_all(ca_dir).map_err(|e| read(format!("{}: {e}", ca_dir.display())))?;
    for (key, file, private) in [
        ("tls.crt", ISSUER_CERT_FILE, false),
        ("tls.key", ISSUER_KEY_FILE, true),
        ("ca.crt", ROOT_CERT_FILE, false),
    ] {
        let encoded = secret["data"][key]
            .as_str()
            .ok_or_else(|| read(format!("has no data.{key}")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| read(format!("data.{key} is not base64")))?;
        let target = ca_dir.join(file);
        let written = if private {
            // A restarted container finds the previous copy: replaced.
            let _ = std::fs::remove_file(&target);
            secret::write_new_secret(&target, &bytes)
        } else {
            secret::write_public_atomic(&target, &bytes)
        };
        written.map_err(|e| read(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::replay as serve;
    use super::*;

    #[tokio::test]
    async fn the_ca_comes_from_the_secret_and_a_broken_secret_is_refused() {
        let (addr, _replay) = serve("ca-secret.json").await;
        let api = Api::plain(&format!("http://{addr}")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");

        fetch(&api, DEFAULT_CA_SECRET, &ca_dir).await.unwrap();
        let ca = mesh_identity::Ca::load_or_generate(&ca_dir, "cluster.local").unwrap();
        // The Secret's root is what the mesh trusts: no CA of the replica's own.
        assert!(!ca_dir.join(mesh_identity::ca::ROOT_KEY_FILE).exists());
        assert_eq!(ca.bundle().len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join(ISSUER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);

        // Second answer: tls.key missing. Third: no Secret at all.
        let e = fetch(&api, DEFAULT_CA_SECRET, &ca_dir).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "CA Secret mesh-system/palisade-ca: has no data.tls.key"
        );
        let e = fetch(&api, DEFAULT_CA_SECRET, &ca_dir).await.unwrap_err();
        assert!(e.to_string().contains("HTTP 404"), "{e}");
        assert!(e.to_string().contains("meshctl install creates it"), "{e}");

        let e = fetch(&api, "palisade-ca", &ca_dir).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "--ca-secret palisade-ca: expected NAMESPACE/NAME"
        );
    }
}
