//! Join tokens: the local-mode credential that proves a workload's namespace
//! and service account to `Identity.Certify`.
//!
//! Format: `pal1.<base64url(JSON claims)>.<base64url(HMAC-SHA256)>`, signed
//! with a 256-bit key kept in the control plane's data dir (`token.key`).
//! Error messages never contain the token or the key.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{hmac, rand::SecureRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::secret::{self, SecretFileError};

const PREFIX: &str = "pal1";
const KEY_LEN: usize = 32;
/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 4096;
/// File name of the token signing key under the data dir.
pub const TOKEN_KEY_FILE: &str = "token.key";

/// What a join token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "sa")]
    pub service_account: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "exp")]
    pub expires_at: u64,
    /// Issue time, seconds since the Unix epoch.
    #[serde(rename = "iat")]
    pub issued_at: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("join token is malformed")]
    Malformed,
    #[error("join token signature is invalid (forged, or signed by another control plane)")]
    BadSignature,
    #[error("join token expired")]
    Expired,
}

/// The HMAC key that signs and verifies join tokens.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// Loads `DIR/token.key`, creating it (mode 0600) on first start.
    pub fn load_or_generate(data_dir: &Path) -> Result<Self, SecretFileError> {
        let path = data_dir.join(TOKEN_KEY_FILE);
        if !path.exists() {
            let mut bytes = [0u8; KEY_LEN];
            aws_lc_rs::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| SecretFileError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("system random generator failed"),
                })?;
            secret::write_new_secret(&path, &bytes)?;
        }
        let bytes = secret::read_secret(&path)?;
        if bytes.len() != KEY_LEN {
            return Err(SecretFileError::Io {
                path,
                source: std::io::Error::other(format!("token key must be {KEY_LEN} bytes")),
            });
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// Creates a token for `namespace`/`service_account` valid for `ttl`.
    pub fn create(&self, namespace: &str, service_account: &str, ttl: Duration) -> String {
        let now = unix_now();
        self.sign(&Claims {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            expires_at: now.saturating_add(ttl.as_secs()),
            issued_at: now,
        })
    }

    /// Signs arbitrary claims.
    pub fn sign(&self, claims: &Claims) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let body = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies signature and expiry and returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies at a given time (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (prefix, payload) = body.split_once('.').ok_or(TokenError::Malformed)?;
        if prefix != PREFIX || payload.is_empty() || sig.is_empty() {
            return Err(TokenError::Malformed);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        // Signature first: nothing of an unauthenticated payload is trusted.
        hmac::verify(&self.key, body.as_bytes(), &sig).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if now >= claims.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = TokenKey::from_bytes(&[7; 32]);
        let t = k.create("shop", "api", Duration::from_secs(60));
        let c = k.verify(&t).unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.service_account.as_str()),
            ("shop", "api")
        );
    }

    #[test]
    fn refusals() {
        let k = TokenKey::from_bytes(&[7; 32]);
        let other = TokenKey::from_bytes(&[8; 32]);
        let t = k.create("shop", "api", Duration::from_secs(60));
        // Signed by another key: forged.
        assert_eq!(other.verify(&t), Err(TokenError::BadSignature));
        // Payload swapped for another identity keeps the old signature: forged.
        let forged_claims =
            URL_SAFE_NO_PAD.encode(br#"{"ns":"shop","sa":"db","exp":99999999999,"iat":0}"#);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(k.verify(&forged), Err(TokenError::BadSignature));
        // Expired.
        let c = k.verify(&t).unwrap();
        assert_eq!(k.verify_at(&t, c.expires_at), Err(TokenError::Expired));
        // Garbage.
        for g in [
            "",
            "x",
            "pal1..",
            "a.b.c",
            "pal1.!!.??",
            &"a".repeat(10_000),
        ] {
            assert_eq!(k.verify(g), Err(TokenError::Malformed), "{g:.20}");
        }
    }
}
