//! `Identity.Certify`: a credential (a join token, or a ServiceAccount token
//! checked with a TokenReview) proves namespace and service account; the CA
//! signs the CSR for exactly that identity.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mesh_identity::SpiffeId;
use mesh_proto::identity::identity_server::Identity;
use mesh_proto::identity::{CertifyRequest, CertifyResponse};
use tonic::{Request, Response, Status};

use crate::ca::LiveCa;
use crate::credential::Credentials;
use crate::error::Error;

/// The Identity service.
pub struct IdentityService {
    ca: Arc<LiveCa>,
    credentials: Credentials,
    trust_domain: String,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl IdentityService {
    pub fn new(
        ca: Arc<LiveCa>,
        credentials: Credentials,
        trust_domain: String,
        default_ttl: Duration,
        max_ttl: Duration,
    ) -> Self {
        Self {
            ca,
            credentials,
            trust_domain,
            default_ttl,
            max_ttl,
        }
    }

    /// The lifetime to issue: the request's, or the default, clamped to the
    /// maximum (clamped, not refused: a workload asking too much still runs).
    fn ttl(&self, requested_secs: u64) -> Duration {
        let want = if requested_secs == 0 {
            self.default_ttl
        } else {
            Duration::from_secs(requested_secs)
        };
        want.min(self.max_ttl)
    }

    async fn certify_inner(
        &self,
        req: &CertifyRequest,
        address: Option<String>,
    ) -> Result<CertifyResponse, Error> {
        let claims = self.credentials.verify(&req.credential).await?;
        let id = SpiffeId::workload(
            &self.trust_domain,
            &claims.namespace,
            &claims.service_account,
        )
        .map_err(|e| Error::BadIdentity(e.to_string()))?;
        let issued = self.ca.sign(
            &req.csr_der,
            &id,
            self.ttl(req.requested_ttl_seconds),
            address,
        )?;
        tracing::info!(identity = %id, "certificate issued");
        Ok(CertifyResponse {
            leaf_der: issued.leaf.to_vec(),
            intermediates_der: issued.intermediates.iter().map(|c| c.to_vec()).collect(),
            trust_bundle_der: issued.bundle.roots().iter().map(|c| c.to_vec()).collect(),
            valid_until_unix: issued
                .not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let address = request.remote_addr().map(|a| a.ip().to_string());
        let result = self.certify_inner(request.get_ref(), address).await;
        let label = match &result {
            Ok(_) => "issued",
            Err(e) => e.certify_result(),
        };
        metrics::counter!("mesh_certs_issued_total", "result" => label).increment(1);
        if let Err(e) = &result {
            tracing::warn!(reason = %e, "certificate request refused");
        }
        result.map(Response::new).map_err(Status::from)
    }
}
