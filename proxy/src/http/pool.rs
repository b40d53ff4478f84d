//! Pooled, multiplexed mTLS HTTP/2 connections to peer proxies: one
//! connection per (peer proxy address, expected SPIFFE ID), shared by every
//! request to that peer, so a new application connection costs no handshake
//! while the pooled one is open. A connection that fails is replaced on the
//! next request; a request that never got onto a dead connection is sent on
//! its replacement. A connection with nothing in flight for the idle timeout
//! is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_identity::SpiffeId;

use super::Body;
use super::body::Observed;
use crate::errors::{ConnectError, Error, HttpError};
use crate::outbound::connect::MeshConnector;

/// Pooled connections with nothing in flight are closed after this: long
/// enough that steady traffic never reconnects, short enough that a pod
/// that stopped calling a peer gives the connection back.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// A failed connect is reported to the requests that waited for it, rather
/// than each trying again in turn: a dead peer costs one connect timeout.
const FAILURE_MEMORY: Duration = Duration::from_millis(500);
/// Keep-alive PINGs on pooled connections, so a peer that vanished without
/// a FIN is noticed and replaced.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One pooled connection.
#[derive(Clone)]
pub struct Pooled {
    send: SendRequest<Body>,
    in_flight: Arc<AtomicUsize>,
    /// Milliseconds since the pool's epoch when a request last ended.
    last_used: Arc<AtomicU64>,
    epoch: Instant,
}

#[derive(Default)]
struct SlotState {
    conn: Option<Pooled>,
    failure: Option<(Instant, Arc<ConnectError>)>,
}

type Slot = tokio::sync::Mutex<SlotState>;
/// The slots of one peer address, by the identity it must present.
type Slots = Vec<(SpiffeId, Arc<Slot>)>;

/// The pool. Keyed by address first, then identity: lookups allocate nothing.
pub struct MeshPool {
    connector: Arc<MeshConnector>,
    slots: Mutex<HashMap<SocketAddr, Slots>>,
    idle_timeout: Duration,
    epoch: Instant,
}

impl MeshPool {
    pub fn new(connector: Arc<MeshConnector>, idle_timeout: Duration) -> Self {
        Self {
            connector,
            slots: Mutex::new(HashMap::new()),
            idle_timeout,
            epoch: Instant::now(),
        }
    }

    fn slot(&self, addr: SocketAddr, identity: &SpiffeId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let list = slots.entry(addr).or_default();
        if let Some((_, s)) = list.iter().find(|(id, _)| id == identity) {
            return s.clone();
        }
        let s = Arc::new(Slot::default());
        list.push((identity.clone(), s.clone()));
        s
    }

    /// The open connection to the peer, connecting when there is none.
    pub async fn get(&self, addr: SocketAddr, identity: &SpiffeId) -> Result<Pooled, Error> {
        let asked = Instant::now();
        let slot = self.slot(addr, identity);
        let mut state = slot.lock().await;
        if let Some(p) = &state.conn
            && !p.send.is_closed()
        {
            return Ok(p.clone());
        }
        if let Some((at, e)) = &state.failure
            && *at >= asked.checked_sub(FAILURE_MEMORY).unwrap_or(asked)
            && *at >= asked
        {
            return Err(ConnectError::Recent(e.clone()).into());
        }
        match self.connect(addr, identity).await {
            Ok(p) => {
                state.conn = Some(p.clone());
                state.failure = None;
                Ok(p)
            }
            Err(e) => {
                let e = Arc::new(e);
                state.conn = None;
                state.failure = Some((Instant::now(), e.clone()));
                Err(ConnectError::Recent(e).into())
            }
        }
    }

    async fn connect(&self, addr: SocketAddr, identity: &SpiffeId) -> Result<Pooled, ConnectError> {
        let tls = self
            .connector
            .connect(addr, identity, mesh_identity::tls::ALPN_MESH_H2)
            .await
            .inspect_err(|_| {
                metrics::counter!("mesh_pool_connects_total", "result" => "failure").increment(1);
            })?;
        if tls.get_ref().1.alpn_protocol() != Some(mesh_identity::tls::ALPN_MESH_H2) {
            return Err(ConnectError::H2Handshake {
                addr,
                message: "the peer does not speak palisade/h2".into(),
            });
        }
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ConnectError::H2Handshake {
                addr,
                message: e.to_string(),
            })?;
        metrics::counter!("mesh_pool_connects_total", "result" => "success").increment(1);
        metrics::gauge!("mesh_pool_connections").increment(1.0);
        let pooled = Pooled {
            send,
            in_flight: Arc::new(AtomicUsize::new(0)),
            last_used: Arc::new(AtomicU64::new(0)),
            epoch: self.epoch,
        };
        pooled.touch();
        let watch = pooled.clone();
        let idle = self.idle_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            loop {
                let deadline = watch.epoch
                    + Duration::from_millis(watch.last_used.load(Ordering::Acquire))
                    + idle;
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(peer = %addr, error = %e, "pooled connection ended");
                        }
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        let quiet = watch.epoch + Duration::from_millis(watch.last_used.load(Ordering::Acquire)) + idle;
                        if watch.in_flight.load(Ordering::Acquire) == 0 && Instant::now() >= quiet {
                            tracing::debug!(peer = %addr, "pooled connection idle; closed");
                            break;
                        }
                    }
                }
            }
            metrics::gauge!("mesh_pool_connections").decrement(1.0);
        });
        Ok(pooled)
    }
}

impl Pooled {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_used.store(ms, Ordering::Release);
    }

    /// Sends `req` as a stream. `Err(Ok(req))`: the connection was gone
    /// before the request got onto it, so it can go on another.
    pub async fn send(
        &self,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, Result<http::Request<Body>, Error>> {
        use http_body_util::BodyExt;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        match self.send.clone().try_send_request(req).await {
            Ok(resp) => {
                let done = self.clone();
                Ok(resp.map(move |b| {
                    Observed::new(b, move |_| {
                        done.touch();
                        done.in_flight.fetch_sub(1, Ordering::AcqRel);
                    })
                    .boxed()
                }))
            }
            Err(mut e) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                match e.take_message() {
                    Some(req) => Err(Ok(req)),
                    None => Err(Err(HttpError::Upstream(e.into_error().to_string()).into())),
                }
            }
        }
    }
}

impl MeshPool {
    /// Sends `req` to the peer, on a new connection if the pooled one was gone.
    pub async fn send(
        &self,
        addr: SocketAddr,
        identity: &SpiffeId,
        pooled: Pooled,
        req: http::Request<Body>,
    ) -> Result<http::Response<Body>, Error> {
        match pooled.send(req).await {
            Ok(r) => Ok(r),
            Err(Err(e)) => Err(e),
            Err(Ok(req)) => {
                metrics::counter!("mesh_pool_replaced_total").increment(1);
                let fresh = self.get(addr, identity).await?;
                match fresh.send(req).await {
                    Ok(r) => Ok(r),
                    Err(Err(e)) => Err(e),
                    Err(Ok(_)) => Err(HttpError::Unavailable(format!(
                        "pooled connection to {addr} closed"
                    ))
                    .into()),
                }
            }
        }
    }
}
