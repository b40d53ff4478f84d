//! What the control plane refuses, and why: one enum, mapped to a gRPC status
//! in one place (`From<Error> for tonic::Status`), so every service answers
//! the same failure with the same code.

use mesh_identity::CaError;
use mesh_identity::token::TokenError;

/// A refused or failed gRPC request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client presented no certificate where one is required.
    #[error("{0} needs a workload certificate (mTLS)")]
    NoClientCertificate(&'static str),
    /// The certificate is valid but does not name a workload.
    #[error("{0} is not a workload identity")]
    NotAWorkload(String),
    /// The join token did not verify.
    #[error("credential refused: {}", token_reason(.0))]
    BadToken(TokenError),
    /// A ServiceAccount token the API server did not vouch for.
    #[error("credential refused: {0}")]
    BadServiceAccountToken(String),
    /// The credential could not be checked (the API server is unreachable
    /// or refused the TokenReview): refused, never waved through.
    #[error("{0}")]
    CredentialCheckUnavailable(String),
    /// The credential verified but names an identity that cannot exist.
    #[error("credential names an invalid identity: {0}")]
    BadIdentity(String),
    /// The CSR is malformed or asks for something it may not have.
    #[error("CSR refused: {0}")]
    BadCsr(String),
    /// The issuing CA has expired: nothing can be issued until it is replaced.
    #[error("{0}")]
    IssuerExpired(String),
    /// Kubernetes mode: the proxy names a pod the source does not have.
    #[error("{0}")]
    UnknownPod(String),
    /// A field of the request is out of bounds.
    #[error("{0}")]
    InvalidArgument(String),
    /// A bug or an exhausted resource inside the control plane.
    #[error("internal error: {0}")]
    Internal(String),
}

fn token_reason(e: &TokenError) -> &'static str {
    match e {
        TokenError::Expired => "join token expired",
        TokenError::BadSignature => {
            "join token signature is invalid (forged, or from another control plane)"
        }
        TokenError::Malformed => "join token is malformed",
    }
}

impl Error {
    /// The `result` label of `mesh_certs_issued_total` for this refusal.
    pub fn certify_result(&self) -> &'static str {
        match self {
            Self::BadToken(_)
            | Self::BadServiceAccountToken(_)
            | Self::BadIdentity(_)
            | Self::NoClientCertificate(_) => "bad_credential",
            Self::BadCsr(_) | Self::InvalidArgument(_) => "bad_csr",
            Self::NotAWorkload(_)
            | Self::UnknownPod(_)
            | Self::IssuerExpired(_)
            | Self::CredentialCheckUnavailable(_)
            | Self::Internal(_) => "error",
        }
    }
}

impl From<CaError> for Error {
    fn from(e: CaError) -> Self {
        match e {
            CaError::Csr(reason) => Self::BadCsr(reason.to_string()),
            CaError::IssuerExpired => Self::IssuerExpired(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::NoClientCertificate(_)
            | Error::BadToken(_)
            | Error::BadServiceAccountToken(_)
            | Error::BadIdentity(_) => Self::unauthenticated(message),
            Error::NotAWorkload(_) => Self::permission_denied(message),
            // The reflector may not have seen a new pod yet: the proxy retries.
            Error::UnknownPod(_) => Self::failed_precondition(message),
            Error::BadCsr(_) | Error::InvalidArgument(_) => Self::invalid_argument(message),
            Error::IssuerExpired(_) | Error::CredentialCheckUnavailable(_) => {
                Self::unavailable(message)
            }
            Error::Internal(_) => Self::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_refusal_has_its_grpc_code() {
        let cases = [
            (
                Error::NoClientCertificate("Policy.Watch"),
                Code::Unauthenticated,
            ),
            (Error::BadToken(TokenError::Expired), Code::Unauthenticated),
            (
                Error::NotAWorkload("spiffe://td/x".into()),
                Code::PermissionDenied,
            ),
            (Error::BadCsr("no key".into()), Code::InvalidArgument),
            (Error::IssuerExpired("expired".into()), Code::Unavailable),
            (Error::Internal("lock".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(tonic::Status::from(error).code(), code);
        }
    }

    #[test]
    fn token_refusals_say_why() {
        let status = tonic::Status::from(Error::BadToken(TokenError::BadSignature));
        assert!(
            status
                .message()
                .contains("forged, or from another control plane")
        );
    }
}
