//! Outbound opaque TCP: one mTLS connection (`palisade/tcp1`) per app
//! connection, the preamble naming the target port, then the relay.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Outbound;
use super::resolve::Resolved;
use crate::errors::{ConnectError, Error, RouteError};
use crate::http::client::connect_tcp;
use crate::outbound::connect::DEFAULT_PEER_CONNECT_TIMEOUT;
use crate::transport::relay::relay;
use crate::wire;

/// Relays `app` to the resolved destination, trying mesh endpoints in order
/// while they are unreachable.
pub async fn serve<S>(out: &Outbound, app: S, resolved: &Resolved) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut last = None;
    match resolved {
        Resolved::Mesh {
            endpoints,
            target_port,
            ..
        } => {
            for ep in endpoints {
                out.egress
                    .check(ep.dst, resolved.workload(ep), ep.identity.as_str())?;
                match out
                    .connector
                    .connect(ep.proxy, &ep.identity, mesh_identity::tls::ALPN_TCP)
                    .await
                {
                    Ok(mut tls) => {
                        tls.write_all(&wire::encode(*target_port))
                            .await
                            .map_err(|source| ConnectError::Preamble {
                                addr: ep.proxy,
                                source,
                            })?;
                        metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "true").increment(1);
                        let _ = relay(app, tls, out.idle_timeout).await;
                        return Ok(());
                    }
                    Err(e) if e.is_unreachable() && endpoints.len() > 1 => {
                        // A dead endpoint: counted, and the next one is tried.
                        metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "outbound", "reason" => "endpoint_failover").increment(1);
                        tracing::info!(endpoint = %ep.proxy, error = %e, "endpoint unreachable; trying the next");
                        last = Some(e);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(last.map_or_else(|| RouteError::NoEndpoints("-".into()).into(), Error::from))
        }
        Resolved::External(dst) => {
            out.egress.check(*dst, None, "-")?;
            let upstream = connect_tcp(*dst, DEFAULT_PEER_CONNECT_TIMEOUT).await?;
            metrics::counter!("mesh_tcp_connections_total", "direction" => "outbound", "tls" => "false").increment(1);
            let _ = relay(app, upstream, out.idle_timeout).await;
            Ok(())
        }
    }
}
