//! Secret `v1` of type `kubernetes.io/tls` (the layout cert-manager writes):
//! `tls.crt` (the certificate chain, PEM) and `tls.key` (its private key,
//! PEM), base64 in `data` or plain in `stringData`. Only the ingress
//! serves them: they load beside the policy, never inside the snapshot that
//! every proxy receives, and their key is never shown (its `Debug` says
//! `<redacted>`).

use std::fmt;

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// The Secret type Palisade reads.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A TLS Secret, checked: the chain and key parse as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSecret {
    pub namespace: String,
    pub name: String,
    /// The certificate chain, PEM, leaf first.
    pub cert_pem: String,
    /// The private key, PEM. Never logged, shown or put in an error.
    pub key_pem: String,
}

impl fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSecret")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

/// What reading a Secret document gives.
pub enum ParsedSecret {
    Tls(TlsSecret),
    /// Another type (Opaque, a token...): not Palisade's; skipped.
    Other(String),
}

/// Reads a `kind: Secret` document (apiVersion, metadata checked by the
/// caller). Errors are (field, message) and never quote the data.
pub fn parse(namespace: &str, name: &str, doc: &Value) -> Result<ParsedSecret, (String, String)> {
    let secret_type = doc.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    if secret_type != TLS_SECRET_TYPE {
        return Ok(ParsedSecret::Other(secret_type.to_owned()));
    }
    let field = |key: &str| -> Result<String, (String, String)> {
        if let Some(v) = doc.get("stringData").and_then(|d| d.get(key)) {
            return v
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| (format!("stringData[{key}]"), "must be a string".to_owned()));
        }
        let Some(v) = doc.get("data").and_then(|d| d.get(key)) else {
            return Err((
                format!("data[{key}]"),
                "required for a kubernetes.io/tls Secret".to_owned(),
            ));
        };
        let text = v
            .as_str()
            .ok_or_else(|| (format!("data[{key}]"), "must be a base64 string".to_owned()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| (format!("data[{key}]"), "is not valid base64".to_owned()))?;
        String::from_utf8(bytes).map_err(|_| (format!("data[{key}]"), "is not PEM text".to_owned()))
    };
    let cert_pem = field("tls.crt")?;
    let key_pem = field("tls.key")?;
    TlsSecret::new(namespace, name, cert_pem, key_pem).map(ParsedSecret::Tls)
}

impl TlsSecret {
    /// Checks that the chain and key parse as PEM. Errors are (field,
    /// message) and never quote the data.
    pub fn new(
        namespace: &str,
        name: &str,
        cert_pem: String,
        key_pem: String,
    ) -> Result<TlsSecret, (String, String)> {
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                (
                    "tls.crt".to_owned(),
                    "is not a PEM certificate chain".to_owned(),
                )
            })?;
        if certs.is_empty() {
            return Err(("tls.crt".to_owned(), "holds no PEM certificate".to_owned()));
        }
        // The parser's error could quote the key; say only that it is wrong.
        if PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).is_err() {
            return Err((
                "tls.key".to_owned(),
                "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned(),
            ));
        }
        Ok(TlsSecret {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            cert_pem,
            key_pem,
        })
    }
    /// The certificate chain, DER, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .filter_map(Result::ok)
            .collect()
    }

    /// The private key, DER (checked when the Secret was read).
    pub fn key(&self) -> Option<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).ok()
    }
}
