//! Captures the certificate chain a mesh port presents in a TLS 1.3
//! handshake, the way a peer proxy would see it.
//!
//! The verifier records the chain and accepts it without judging it: this is
//! inspection, and judging happens afterwards against `--trust-bundle`. No
//! application data is ever sent, so accepting anything cannot leak anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_identity::tls::{ALPN_H2, ALPN_TCP, mesh_server_name};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why no chain was captured.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid --connect {addr:?}: expected HOST:PORT, e.g. 10.0.0.7:4143")]
    Addr { addr: String },
    #[error("cannot connect to {addr}: {error}")]
    Tcp { addr: String, error: std::io::Error },
    #[error(
        "no TLS handshake with {addr} within {}s (is it a TLS port, e.g. a proxy inbound 4143 or the control plane 8443?)",
        .timeout.as_secs_f32()
    )]
    Timeout { addr: String, timeout: Duration },
    #[error(
        "TLS handshake with {addr} failed before it presented a certificate: {reason} (is it a Palisade mesh port speaking TLS 1.3, e.g. a proxy inbound 4143 or the control plane 8443?)"
    )]
    Handshake { addr: String, reason: String },
    #[error(
        "{addr} presented a certificate but did not prove it holds the certificate's key: {reason}"
    )]
    KeyNotProven { addr: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

/// A server certificate verifier that only records what it was shown.
#[derive(Debug)]
struct RecordingVerifier {
    presented: Mutex<Option<Vec<CertificateDer<'static>>>>,
    /// Set once the server's CertificateVerify signature checked out, i.e.
    /// the peer holds the key of the certificate it presented.
    key_proven: AtomicBool,
    provider: Arc<CryptoProvider>,
}

impl RecordingVerifier {
    fn take(&self) -> Option<Vec<CertificateDer<'static>>> {
        // A poisoned lock still holds a complete chain: it is only ever
        // replaced whole.
        self.presented
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The config offers TLS 1.3 only, so this is never reached.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let valid = rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )?;
        self.key_proven.store(true, Ordering::Release);
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Checks `HOST:PORT` shape up front, for a clearer error than the resolver's.
fn check_addr(addr: &str) -> Result<(), ConnectError> {
    let bad = || ConnectError::Addr {
        addr: addr.to_string(),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

/// Completes a TLS 1.3 handshake with `addr` as a mesh client without a
/// certificate would, and returns the chain the peer presented, leaf first.
pub async fn presented_chain(
    addr: &str,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    check_addr(addr)?;
    let provider = mesh_identity::tls::provider();
    let verifier = Arc::new(RecordingVerifier {
        presented: Mutex::new(None),
        key_proven: AtomicBool::new(false),
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConnectError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    // Offer what mesh ports accept, or a proxy refuses us before it sends
    // its certificate.
    config.alpn_protocols = vec![ALPN_TCP.to_vec(), ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(config));

    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|error| ConnectError::Tcp {
                addr: addr.to_string(),
                error,
            })?;
        // The peer will usually refuse us after the handshake for lacking a
        // client certificate; by then the chain is already recorded.
        Ok::<_, ConnectError>(connector.connect(mesh_server_name(), tcp).await)
    };
    let outcome = tokio::time::timeout(timeout, handshake).await;
    let handshake_result = match outcome {
        Err(_) => {
            // A peer that proved its key and then stalled has shown all we need.
            return match verifier.take() {
                Some(chain) if verifier.key_proven.load(Ordering::Acquire) => Ok(chain),
                _ => Err(ConnectError::Timeout {
                    addr: addr.to_string(),
                    timeout,
                }),
            };
        }
        Ok(result) => result?,
    };
    let chain = verifier.take();
    let key_proven = verifier.key_proven.load(Ordering::Acquire);
    match (chain, handshake_result) {
        (Some(chain), Ok(_stream)) => Ok(chain),
        (Some(chain), Err(_)) if key_proven => Ok(chain),
        (Some(_), Err(e)) => Err(ConnectError::KeyNotProven {
            addr: addr.to_string(),
            reason: e.to_string(),
        }),
        (None, Err(e)) => Err(ConnectError::Handshake {
            addr: addr.to_string(),
            reason: e.to_string(),
        }),
        (None, Ok(_stream)) => Err(ConnectError::Handshake {
            addr: addr.to_string(),
            reason: "no certificate was presented".into(),
        }),
    }
}

#[cfg(test)]
mod tests;
