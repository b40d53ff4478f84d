//! The mesh side of the inbound port: the mutual TLS handshake (the client
//! must present a valid SVID of our trust domain, or it is refused in the
//! handshake) and, for opaque TCP, the preamble that names the target port.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::wire;

/// Why a mesh connection was refused before anything reached the app.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{message}")]
    Handshake {
        /// `mesh_tls_handshake_failures_total{reason}`.
        reason: &'static str,
        message: String,
    },
    #[error("bad preamble: {0}")]
    Preamble(wire::PreambleError),
    #[error("handshake not finished in time")]
    Timeout,
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Handshake { reason, .. } => reason,
            Refused::Preamble(_) => "bad_preamble",
            Refused::Timeout => "timeout",
        }
    }

    /// Counts and logs the refusal.
    pub fn record(&self, peer: SocketAddr) {
        refused(self.reason(), peer, &self.to_string());
    }
}

/// Counts and logs a refused inbound connection.
pub fn refused(reason: &'static str, peer: SocketAddr, message: &str) {
    metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "inbound", "reason" => reason).increment(1);
    tracing::info!(%peer, reason, error = %message, "inbound connection refused");
}

/// What a mesh connection carries, by its ALPN.
pub enum Accepted {
    /// `palisade/h2`: the peer proxy's pooled HTTP/2 connection.
    Http2(TlsStream<TcpStream>),
    /// `palisade/tcp1`: one opaque connection for the port in the preamble.
    Tcp(TlsStream<TcpStream>, u16),
}

/// Terminates mesh mTLS and, for opaque TCP, reads the preamble, all
/// within `timeout`.
pub async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<Accepted, Refused> {
    let handshake = async {
        let mut tls = acceptor.accept(tcp).await.map_err(|e| {
            let (reason, message) = mesh_identity::verify::describe_handshake_error(&e);
            Refused::Handshake { reason, message }
        })?;
        if tls.get_ref().1.alpn_protocol() == Some(mesh_identity::tls::ALPN_MESH_H2) {
            return Ok(Accepted::Http2(tls));
        }
        let port = wire::read(&mut tls).await.map_err(Refused::Preamble)?;
        Ok(Accepted::Tcp(tls, port))
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| Refused::Timeout)?
}
