//! The client side of the control plane, shared by the proxy, meshctl and the
//! benchmarks: a gRPC channel over TLS that verifies the server is the control
//! plane's SPIFFE ID and presents the workload's certificate once it has one,
//! and the certifier that asks `Identity.Certify` for certificates. The
//! channel takes several control plane addresses and fails over between them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Connecting to a single control plane address (TCP and TLS) must not take
/// longer than this.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// With several addresses, each gets this long before the next is tried: a
/// replica on a dead node answers nothing, and the proxy should be on another
/// one well within the 2 s a failover may take (docs/kubernetes.md).
const DEFAULT_FAILOVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One Certify call; the control plane signs in well under a millisecond.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A token file larger than this is not a token.
const MAX_TOKEN_FILE: u64 = 64 * 1024;
/// More control plane addresses than this is a mistake, not a mesh.
const MAX_ADDRESSES: usize = 16;

/// Splits `--control-plane` values (each may hold several comma-separated
/// `HOST:PORT`s) into the list of addresses, in order, without duplicates.
pub fn addresses<S: AsRef<str>>(values: &[S]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        for a in value.as_ref().split(',').map(str::trim) {
            if a.is_empty() {
                continue;
            }
            let valid = a.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            }) && a.parse::<http::uri::Authority>().is_ok();
            if !valid {
                anyhow::bail!("control plane address {a:?} is not HOST:PORT");
            }
            if !out.iter().any(|o| o == a) {
                out.push(a.to_owned());
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("no control plane address given");
    }
    if out.len() > MAX_ADDRESSES {
        anyhow::bail!("more than {MAX_ADDRESSES} control plane addresses");
    }
    Ok(out)
}

/// A lazily connected, automatically reconnecting gRPC channel to the control
/// plane. `address` is one `HOST:PORT` or several, comma-separated: replicas
/// serving the same mesh (one CA, one source). The channel connects to the
/// first that answers, in order, and stays there; when that connection breaks
/// it tries the one it was on first, then the others. Every replica presents
/// the control plane's SPIFFE ID from the mesh's CA, so any of them is
/// verified the same way.
pub fn channel(store: &Store, address: &str) -> anyhow::Result<Channel> {
    let addresses = Arc::new(addresses(&[address])?);
    let expected = mesh_identity::control_plane_identity(store.identity().trust_domain())?;
    let tls = mesh_identity::tls::client_config(store, expected, &[mesh_identity::tls::ALPN_H2])?;
    let connector = TlsConnector::from(tls);
    let per_address = if addresses.len() == 1 {
        DEFAULT_CONNECT_TIMEOUT
    } else {
        DEFAULT_FAILOVER_CONNECT_TIMEOUT
    };
    // The URI only names the :authority of requests; where the channel
    // connects is the connector's choice below.
    let endpoint =
        Endpoint::from_shared(format!("http://{}", addresses[0]))?.timeout(DEFAULT_REQUEST_TIMEOUT);
    // The address of the last connection that worked: tried first next time.
    let current = Arc::new(AtomicUsize::new(0));
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let addresses = addresses.clone();
            let current = current.clone();
            async move {
                let first = current.load(Ordering::Relaxed);
                let mut last_error = None;
                for i in (0..addresses.len()).map(|n| (first + n) % addresses.len()) {
                    let address = &addresses[i];
                    match tokio::time::timeout(per_address, connect(&connector, address)).await {
                        Ok(Ok(tls)) => {
                            current.store(i, Ordering::Relaxed);
                            metrics::counter!("mesh_control_plane_connects_total", "address" => address.clone(), "result" => "success").increment(1);
                            if addresses.len() > 1 {
                                tracing::info!(address = %address, "connected to the control plane");
                            }
                            return Ok(TokioIo::new(tls));
                        }
                        Ok(Err(e)) => last_error = Some(e),
                        Err(_) => {
                            last_error = Some(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no answer within {per_address:?}"),
                            ))
                        }
                    }
                    metrics::counter!("mesh_control_plane_connects_total", "address" => address.clone(), "result" => "failure").increment(1);
                    if addresses.len() > 1 {
                        tracing::warn!(address = %address, error = ?last_error.as_ref().map(|e| e.to_string()), "control plane unreachable; trying the next address");
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no control plane address")
                }))
            }
        })),
    )
}

async fn connect(
    connector: &TlsConnector,
    address: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let _ = tcp.set_nodelay(true);
    connector
        .connect(mesh_identity::tls::mesh_server_name(), tcp)
        .await
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

#[cfg(test)]
mod tests {
    use super::addresses;

    #[test]
    fn addresses_are_split_checked_and_kept_in_order() {
        assert_eq!(addresses(&["cp:8443"]).unwrap(), ["cp:8443"]);
        assert_eq!(
            addresses(&["a:1, b:2", "a:1", "[::1]:3"]).unwrap(),
            ["a:1", "b:2", "[::1]:3"]
        );
        // A list with nothing in it is a mistake, not "no control plane".
        assert!(addresses(&[" , "]).is_err());
        assert!(addresses::<&str>(&[]).is_err());
        for bad in ["cp", "cp:", ":1", "cp:0", "cp:70000", "a b:1", "cp:8443/x"] {
            assert!(addresses(&[bad]).is_err(), "{bad}");
        }
        let many: Vec<String> = (1..=17).map(|p| format!("cp:{p}")).collect();
        assert!(addresses(&many).is_err());
    }
}
