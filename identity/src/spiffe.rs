//! SPIFFE IDs: `spiffe://<trust-domain>/<path>`, validated per the SPIFFE ID
//! specification, and the mesh's `/ns/<namespace>/sa/<service-account>` form.

use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID the specification allows, in bytes.
const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name (a DNS name).
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The trust domain used when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// Why a string is not a valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    #[error("SPIFFE ID has an empty trust domain")]
    EmptyTrustDomain,
    #[error(
        "trust domain may only contain lowercase letters, digits, '.', '-' and '_' (no port, userinfo or uppercase)"
    )]
    BadTrustDomainChar,
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error("SPIFFE ID path has an empty segment")]
    EmptySegment,
    #[error("SPIFFE ID path has a '.' or '..' segment")]
    DotSegment,
    #[error(
        "SPIFFE ID path may only contain letters, digits, '.', '-' and '_' (no query or fragment)"
    )]
    BadPathChar,
    #[error("SPIFFE ID path must not end with '/'")]
    TrailingSlash,
    #[error(
        "not a workload ID of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    NotWorkload,
}

/// A validated SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    // The full URI; `td_end` marks where the trust domain ends.
    uri: String,
    td_end: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(Self {
            uri: s.to_string(),
            td_end: SCHEME.len() + td.len(),
        })
    }

    /// The mesh workload ID `spiffe://<td>/ns/<namespace>/sa/<service-account>`.
    pub fn workload(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        // Each must be one path segment: a namespace "a/sa/b" would otherwise
        // forge another workload's ID.
        for part in [namespace, service_account] {
            if part.is_empty() {
                return Err(SpiffeIdError::EmptySegment);
            }
            if part.contains('/') {
                return Err(SpiffeIdError::NotWorkload);
            }
        }
        Self::parse(&format!(
            "{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.td_end]
    }

    /// The path, e.g. `/ns/default/sa/api` (empty for a trust domain ID).
    pub fn path(&self) -> &str {
        &self.uri[self.td_end..]
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// Namespace and service account when the path is `/ns/<ns>/sa/<sa>`.
    pub fn namespace_and_service_account(&self) -> Option<(&str, &str)> {
        let mut parts = self.path().strip_prefix('/')?.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The namespace of a workload ID.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace_and_service_account().map(|(ns, _)| ns)
    }

    /// The service account of a workload ID.
    pub fn service_account(&self) -> Option<&str> {
        self.namespace_and_service_account().map(|(_, sa)| sa)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    let ok = td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(SpiffeIdError::BadTrustDomainChar);
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    // The path starts with '/', so the first split item is empty and skipped.
    for seg in path.split('/').skip(1) {
        if seg.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        let ok = seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            return Err(SpiffeIdError::BadPathChar);
        }
    }
    Ok(())
}

/// Validates a trust domain name on its own (e.g. a `--trust-domain` flag).
pub fn validate_trust_domain_name(td: &str) -> Result<(), SpiffeIdError> {
    validate_trust_domain(td)
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
#[path = "spiffe/tests.rs"]
mod tests;
