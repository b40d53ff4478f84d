//! Mesh connections to peer proxies: TCP, then mutual TLS 1.3 verifying that
//! the peer is exactly the SPIFFE ID discovery (or the route) says it must
//! be. Public so that every side that originates mesh traffic uses it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_identity::{SpiffeId, Store};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::errors::ConnectError;
use crate::http::client::connect_tcp;

/// Connecting to a peer proxy: peers are in the same cluster, so a slow
/// connect means it is gone.
pub const DEFAULT_PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Client configs by (expected peer identity, ALPN).
type Configs = HashMap<(SpiffeId, &'static [u8]), Arc<rustls::ClientConfig>>;

/// Opens verified mTLS connections to peer proxies.
pub struct MeshConnector {
    store: Arc<Store>,
    handshake_timeout: Duration,
    /// One client config per (expected peer identity, ALPN) (mesh TLS does
    /// not resume sessions: every handshake verifies the peer).
    configs: Mutex<Configs>,
}

impl MeshConnector {
    pub fn new(store: Arc<Store>, handshake_timeout: Duration) -> Self {
        Self {
            store,
            handshake_timeout,
            configs: Mutex::new(HashMap::new()),
        }
    }

    fn connector(
        &self,
        identity: &SpiffeId,
        alpn: &'static [u8],
    ) -> Result<TlsConnector, ConnectError> {
        let mut configs = self
            .configs
            .lock()
            .map_err(|_| ConnectError::Tls("config cache poisoned".into()))?;
        let key = (identity.clone(), alpn);
        if let Some(c) = configs.get(&key) {
            return Ok(TlsConnector::from(c.clone()));
        }
        let cfg = mesh_identity::tls::client_config(&self.store, identity.clone(), &[alpn])
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        configs.insert(key, cfg.clone());
        Ok(TlsConnector::from(cfg))
    }

    /// Opens mTLS to `peer` offering `alpn` and verifies it is `identity`.
    pub async fn connect(
        &self,
        peer: SocketAddr,
        identity: &SpiffeId,
        alpn: &'static [u8],
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        let connector = self.connector(identity, alpn)?;
        let tcp = connect_tcp(peer, DEFAULT_PEER_CONNECT_TIMEOUT).await?;
        match tokio::time::timeout(
            self.handshake_timeout,
            connector.connect(mesh_identity::tls::mesh_server_name(), tcp),
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                let (reason, message) = mesh_identity::verify::describe_handshake_error(&e);
                metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "outbound", "reason" => reason).increment(1);
                Err(ConnectError::Handshake {
                    addr: peer,
                    reason,
                    message,
                })
            }
            Err(_) => {
                metrics::counter!("mesh_tls_handshake_failures_total", "direction" => "outbound", "reason" => "timeout").increment(1);
                Err(ConnectError::HandshakeTimeout { addr: peer })
            }
        }
    }
}
