//! Who is calling: the SPIFFE ID of a verified mesh client, or nobody for a
//! plaintext one. Nothing a client sends (headers, preamble) changes this.

use std::net::SocketAddr;

use mesh_identity::SpiffeId;
use mesh_policy::Peer;
use rustls::pki_types::CertificateDer;

/// The verified client of one inbound connection.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// `None` for a plaintext client.
    pub identity: Option<SpiffeId>,
}

impl Client {
    /// A mesh client: its identity is the URI SAN of the certificate the
    /// handshake verified.
    pub fn mesh(addr: SocketAddr, certs: Option<&[CertificateDer<'_>]>) -> Self {
        Self {
            addr,
            identity: mesh_identity::verify::peer_identity(certs),
        }
    }

    pub fn plaintext(addr: SocketAddr) -> Self {
        Self {
            addr,
            identity: None,
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
