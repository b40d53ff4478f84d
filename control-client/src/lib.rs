//! The client side of the control plane, shared by the proxy, meshctl and the
//! benchmarks: a gRPC channel over TLS that verifies the server is the control
//! plane's SPIFFE ID and presents the workload's certificate once it has one,
//! and the certifier that asks `Identity.Certify` for certificates.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use mesh_identity::credentials::{Certifier, CertifyError};
use mesh_identity::{Issued, Store, TrustBundle};
use mesh_proto::identity::CertifyRequest;
use mesh_proto::identity::identity_client::IdentityClient;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Connecting to the control plane must not take longer than this.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One Certify call; the control plane signs in well under a millisecond.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A token file larger than this is not a token.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// A lazily connected, automatically reconnecting gRPC channel to the control plane.
pub fn channel(store: &Store, address: &str) -> anyhow::Result<Channel> {
    let expected = mesh_identity::control_plane_identity(store.identity().trust_domain())?;
    let tls = mesh_identity::tls::client_config(store, expected, &[mesh_identity::tls::ALPN_H2])?;
    let connector = TlsConnector::from(tls);
    let addr = address.to_string();
    let endpoint = Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
        .timeout(DEFAULT_REQUEST_TIMEOUT);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let addr = addr.clone();
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                let _ = tcp.set_nodelay(true);
                let tls = connector
                    .connect(mesh_identity::tls::mesh_server_name(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })),
    )
}

/// Gets certificates from `Identity.Certify`, proving our identity with the
/// token file (re-read every time, so a rotated token is picked up).
pub struct ControlPlaneCertifier {
    client: IdentityClient<Channel>,
    token_file: PathBuf,
    ttl: Duration,
}

impl ControlPlaneCertifier {
    pub fn new(channel: Channel, token_file: PathBuf, ttl: Duration) -> Self {
        Self {
            client: IdentityClient::new(channel),
            token_file,
            ttl,
        }
    }

    async fn read_token(&self) -> Result<String, CertifyError> {
        let f = &self.token_file;
        let meta = tokio::fs::metadata(f)
            .await
            .map_err(|e| CertifyError::Key(format!("token file {}: {e}", f.display())))?;
        if meta.len() > MAX_TOKEN_FILE {
            return Err(CertifyError::Key(format!(
                "token file {} is too large",
                f.display()
            )));
        }
        let bytes = tokio::fs::read(f)
            .await
            .map_err(|e| CertifyError::Key(format!("token file {}: {e}", f.display())))?;
        let token = String::from_utf8(bytes)
            .map_err(|_| CertifyError::Key(format!("token file {} is not text", f.display())))?;
        Ok(token.trim().to_string())
    }
}

impl Certifier for ControlPlaneCertifier {
    async fn certify(&self, csr_der: Vec<u8>) -> Result<Issued, CertifyError> {
        let result = self.certify_inner(csr_der).await;
        let label = if result.is_ok() { "success" } else { "failure" };
        metrics::counter!("mesh_identity_cert_renewals_total", "result" => label).increment(1);
        result
    }
}

impl ControlPlaneCertifier {
    async fn certify_inner(&self, csr_der: Vec<u8>) -> Result<Issued, CertifyError> {
        let credential = self.read_token().await?;
        let resp = self
            .client
            .clone()
            .certify(CertifyRequest {
                csr_der,
                credential,
                requested_ttl_seconds: self.ttl.as_secs(),
            })
            .await
            .map_err(|s| CertifyError::Remote(format!("{}: {}", code_name(s.code()), s.message())))?
            .into_inner();
        let bundle = TrustBundle::new(
            resp.trust_bundle_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
        )
        .map_err(|e| CertifyError::BadIssued(e.to_string()))?;
        Ok(Issued {
            leaf: CertificateDer::from(resp.leaf_der),
            intermediates: resp
                .intermediates_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            bundle,
            not_after: UNIX_EPOCH
                + Duration::from_secs(u64::try_from(resp.valid_until_unix).unwrap_or(0)),
        })
    }
}

fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "control plane unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        _ => "error",
    }
}
