//! The gRPC services (Identity, Policy, Discovery) and their listener: TCP
//! accept, TLS 1.3 handshake with the control plane's own SVID (client
//! certificates optional, verified when present), then tonic.

pub mod discovery;
pub mod identity;
pub mod policy;
pub mod telemetry;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mesh_identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::error::Error;

/// A TLS handshake must finish within this; slow or silent clients are
/// dropped without holding anything else up.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for tonic; beyond this, accepting pauses.
const INCOMING_QUEUE: usize = 1024;

/// Who is on the other end of a gRPC connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified SPIFFE ID, when the client presented a certificate.
    pub identity: Option<SpiffeId>,
}

/// The verified workload identity of a request's client, or why there is none.
pub fn client_identity<T>(
    request: &tonic::Request<T>,
    service: &'static str,
) -> Result<SpiffeId, Error> {
    request
        .extensions()
        .get::<Peer>()
        .and_then(|p| p.identity.clone())
        .ok_or(Error::NoClientCertificate(service))
}

/// A TLS connection handed to tonic, carrying its peer.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for TlsConn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections and yields handshaken TLS connections. Each
/// handshake runs in its own task under a deadline.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(DEFAULT_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let identity = mesh_identity::verify::peer_identity(
                            stream.get_ref().1.peer_certificates(),
                        );
                        let _ = tx
                            .send(Ok(TlsConn {
                                stream,
                                peer: Peer { addr, identity },
                            }))
                            .await;
                    }
                    Ok(Err(e)) => {
                        let (reason, message) = mesh_identity::verify::describe_handshake_error(&e);
                        metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "control_plane", "reason" => reason).increment(1);
                        tracing::debug!(%addr, reason, error = %message, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "control_plane", "reason" => "timeout").increment(1);
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
