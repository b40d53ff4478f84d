//! Who is calling: the SPIFFE ID of a verified mesh client, or nobody for a
//! plaintext one. Nothing a client sends (headers, preamble) changes this.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use mesh_identity::SpiffeId;
use mesh_policy::Peer;
use rustls::pki_types::CertificateDer;

/// The verified client of one inbound connection.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// `None` for a plaintext client.
    pub identity: Option<SpiffeId>,
    /// The identity, shared by every request's log line.
    pub label: Option<Arc<str>>,
    /// The identity as the `x-palisade-peer-identity` value the app gets.
    pub header: Option<HeaderValue>,
}

impl Client {
    /// The source a flow is counted by: the SPIFFE ID, or the address of a
    /// plaintext client.
    pub fn source(&self) -> Arc<str> {
        self.label
            .clone()
            .unwrap_or_else(|| Arc::from(self.addr.ip().to_string()))
    }

    /// A mesh client: its identity is the URI SAN of the certificate the
    /// handshake verified.
    pub fn mesh(addr: SocketAddr, certs: Option<&[CertificateDer<'_>]>) -> Self {
        let identity = mesh_identity::verify::peer_identity(certs);
        Self {
            addr,
            label: identity.as_ref().map(|i| Arc::from(i.as_str())),
            header: identity
                .as_ref()
                .and_then(|i| HeaderValue::from_str(i.as_str()).ok()),
            identity,
        }
    }

    pub fn plaintext(addr: SocketAddr) -> Self {
        Self {
            addr,
            identity: None,
            label: None,
            header: None,
        }
    }

    pub fn peer(&self) -> Peer<'_> {
        match &self.identity {
            Some(id) => Peer::Mtls {
                principal: id.as_str(),
            },
            None => Peer::Plaintext,
        }
    }

    /// For logs: the SPIFFE ID, or `-`.
    pub fn name(&self) -> &str {
        self.identity.as_ref().map_or("-", |i| i.as_str())
    }
}
