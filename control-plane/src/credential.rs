//! What proves a workload's namespace and service account to
//! `Identity.Certify`: a join token (local mode), or a projected
//! ServiceAccount token checked with a TokenReview (Kubernetes mode).

use std::sync::Arc;

use mesh_identity::token::TokenKey;
use serde_json::{Value, json};

use crate::error::Error;
use crate::source::kubernetes::Api;

/// The audience a proxy's projected token must be minted for (DESIGN.md),
/// so a token for the mesh is useless against the API server and back.
pub const TOKEN_AUDIENCE: &str = "mesh-control-plane";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// A ServiceAccount token is a JWT of a few hundred bytes to a few KiB;
/// anything much larger is not one and is not sent to the API server.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Who a verified credential says the workload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
    /// The pod a Kubernetes token is bound to.
    pub pod: Option<String>,
}

/// How credentials are checked.
#[derive(Clone)]
pub enum Credentials {
    JoinTokens(Arc<TokenKey>),
    TokenReview(Api),
}

impl Credentials {
    pub async fn verify(&self, credential: &str) -> Result<Claims, Error> {
        match self {
            Self::JoinTokens(key) => {
                let c = key.verify(credential).map_err(Error::BadToken)?;
                Ok(Claims {
                    namespace: c.namespace,
                    service_account: c.service_account,
                    pod: None,
                })
            }
            Self::TokenReview(api) => review(api, credential).await,
        }
    }
}

/// Asks the API server about `token`. Anything but a clear yes is a no: an
/// API error refuses the certificate (fail closed), it never skips the check.
async fn review(api: &Api, token: &str) -> Result<Claims, Error> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Error::BadServiceAccountToken(
            "the credential is not a ServiceAccount token".into(),
        ));
    }
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": [TOKEN_AUDIENCE]},
    });
    let answer = api
        .json("POST", TOKEN_REVIEWS, Some(&request))
        .await
        .map_err(|e| Error::CredentialCheckUnavailable(format!("TokenReview failed: {e}")))?;
    claims(&answer["status"])
}

/// The claims of a TokenReview's status.
pub fn claims(status: &Value) -> Result<Claims, Error> {
    let refuse = |why: String| Err(Error::BadServiceAccountToken(why));
    if status["authenticated"] != true {
        let why = status["error"].as_str().unwrap_or("not authenticated");
        return refuse(format!("the API server refused the token: {why}"));
    }
    // The API server only authenticates for the audiences asked for; an
    // answer without ours (an API server that ignores audiences) is a no.
    let audiences = status["audiences"].as_array();
    if !audiences.is_some_and(|a| a.iter().any(|x| x == TOKEN_AUDIENCE)) {
        return refuse(format!(
            "the token is not for the audience {TOKEN_AUDIENCE} (mount a projected token with audience {TOKEN_AUDIENCE})"
        ));
    }
    let username = status["user"]["username"].as_str().unwrap_or("");
    let Some((namespace, service_account)) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
    else {
        return refuse(format!("{username:?} is not a ServiceAccount"));
    };
    // A bound token dies with its pod; an unbound (legacy Secret) token
    // lives forever and is refused.
    let Some(pod) = status["user"]["extra"][POD_NAME][0].as_str() else {
        return refuse(
            "the token is not bound to a pod (use the projected token the injector mounts)".into(),
        );
    };
    Ok(Claims {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod: Some(pod.to_owned()),
    })
}

#[cfg(test)]
mod tests;
