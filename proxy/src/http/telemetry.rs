//! Per-request telemetry, the same on every side: `mesh_requests_total`,
//! `mesh_request_duration_seconds` and the access log line, taken when the
//! response body ends (so a stream counts its whole length and the gRPC
//! status from its trailers).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use http_body_util::BodyExt;
use hyper::body::Incoming;

use mesh_policy::DecidedBy;

use super::Body;
use super::body::{Cap, Capped, Observed, grpc_status};
use crate::access::{self, AccessLog, HttpLine};
use crate::handles::Handles;

/// What is known of one request while it is served.
pub struct Exchange {
    pub direction: &'static str,
    started: Instant,
    at: SystemTime,
    src: SocketAddr,
    /// The caller's SPIFFE ID (inbound), for the log.
    peer: Option<Arc<str>>,
    /// Method, Host and target, kept (shared, not copied) only when the
    /// access log is on.
    request: Option<Requested>,
    pub decision: &'static str,
    decided_by: Option<DecidedBy>,
    dry_run: Option<DecidedBy>,
    body: Arc<Notes>,
    log: Arc<AccessLog>,
    edge: Option<(Arc<EdgeTls>, std::net::IpAddr)>,
    cap: Option<Arc<Cap>>,
}

/// An ingress connection's TLS, for its requests' log lines.
#[derive(Debug, Default)]
pub struct EdgeTls {
    pub sni: Option<String>,
    pub version: &'static str,
    pub cipher: &'static str,
}

struct Requested {
    method: http::Method,
    host: Option<http::HeaderValue>,
    uri: http::Uri,
}

/// What the layers that serve a request note for its log line: how the
/// request body went (bytes, and whether the client broke it), the route
/// rule that took it and the retries sent.
#[derive(Default)]
pub struct Notes {
    bytes: AtomicU64,
    broken: AtomicBool,
    retries: AtomicU32,
    route: OnceLock<Arc<str>>,
    /// The SPIFFE ID of the last endpoint a try went to (noted at the edge).
    backend: std::sync::Mutex<Option<Arc<str>>>,
}

impl Notes {
    /// The route rule that took the request.
    pub fn routed(&self, name: &Arc<str>) {
        let _ = self.route.set(name.clone());
    }

    /// A try went to the endpoint with `identity`.
    pub fn sent_to(&self, identity: &mesh_identity::SpiffeId) {
        if let Ok(mut b) = self.backend.lock()
            && b.as_deref() != Some(identity.as_str())
        {
            *b = Some(Arc::from(identity.as_str()));
        }
    }

    /// `n` retries have been sent.
    pub fn retried(&self, n: u32) {
        self.retries.store(n, Ordering::Relaxed);
    }
}

impl Exchange {
    pub fn start<B>(
        direction: &'static str,
        src: SocketAddr,
        peer: Option<Arc<str>>,
        req: &http::Request<B>,
        log: &Arc<AccessLog>,
    ) -> Self {
        let request = log.enabled().then(|| Requested {
            method: req.method().clone(),
            host: req.headers().get(http::header::HOST).cloned(),
            uri: req.uri().clone(),
        });
        Self {
            direction,
            started: Instant::now(),
            at: SystemTime::now(),
            src,
            peer,
            request,
            decision: "-",
            decided_by: None,
            dry_run: None,
            body: Arc::default(),
            log: log.clone(),
            edge: None,
            cap: None,
        }
    }

    /// At the edge: the connection's TLS and the client address the
    /// request is decided by (the peer's, or from trusted hops).
    pub fn at_edge(&mut self, tls: &Arc<EdgeTls>, client_ip: std::net::IpAddr) {
        self.edge = Some((tls.clone(), client_ip));
    }

    /// Counts the request body's bytes, and notes a body whose framing the
    /// client broke (a bad chunk size, a reset).
    pub fn observe_request(&self, body: Incoming) -> Body {
        let seen = self.body.clone();
        let observed = Observed::new(body, move |end| {
            seen.bytes.store(end.bytes, Ordering::Relaxed);
            seen.broken.store(end.errored, Ordering::Relaxed);
        });
        match &self.cap {
            Some(cap) => Capped::new(observed, cap.clone()).boxed(),
            None => observed.boxed(),
        }
    }

    /// Limits the request body to `max` bytes as it streams; the caller
    /// waits on the returned cap beside the request and answers 413 when
    /// it is hit.
    pub fn cap_request_body(&mut self, max: u64) -> Arc<Cap> {
        let cap = Cap::new(max);
        self.cap = Some(cap.clone());
        cap
    }

    /// An upstream failure caused by the client's own broken request body
    /// (a bad chunk size) is the client's error: 400, and the connection
    /// closes.
    pub fn blame(&self, e: crate::errors::Error) -> crate::errors::Error {
        use crate::errors::{Error, HttpError};
        if self.body.broken.load(Ordering::Relaxed)
            && matches!(e, Error::Http(HttpError::Upstream(_)))
        {
            return HttpError::BadRequest("malformed request body".into()).into();
        }
        e
    }

    /// Records the decision that let the request through or refused it.
    pub fn decided(&mut self, d: &mesh_policy::Decision) {
        self.decision = d.label();
        self.decided_by = Some(d.decided_by.clone());
        self.dry_run = d.dry_run.as_ref().map(|r| r.decided_by.clone());
    }

    /// Where the layers serving the request note what the log line says.
    pub fn notes(&self) -> Arc<Notes> {
        self.body.clone()
    }

    /// Wraps the response so the request is counted and logged when it ends.
    pub fn finish(self, resp: http::Response<Body>, error: Option<String>) -> http::Response<Body> {
        let status = resp.status().as_u16();
        let head_grpc = grpc_status(resp.headers());
        resp.map(move |b| {
            Observed::new(b, move |end| {
                let grpc = end.grpc_status.or(head_grpc);
                let elapsed = self.started.elapsed();
                count(self.direction, status, grpc, elapsed);
                if let Some(r) = &self.request {
                    let backend = self.body.backend.lock().ok().and_then(|b| b.clone());
                    let edge = self.edge.as_ref().map(|(tls, ip)| access::EdgeFields {
                        client_ip: ip.to_string(),
                        sni: tls.sni.as_deref().unwrap_or(""),
                        tls_version: tls.version,
                        cipher: tls.cipher,
                        backend_identity: backend.as_deref().unwrap_or(""),
                    });
                    let authority = r
                        .host
                        .as_ref()
                        .and_then(|h| h.to_str().ok())
                        .or_else(|| r.uri.authority().map(|a| a.as_str()))
                        .unwrap_or_default();
                    let policy = self
                        .decided_by
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    let dry_run = self
                        .dry_run
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    self.log.http(&HttpLine {
                        ts: access::timestamp(self.at),
                        direction: self.direction,
                        src: self.src,
                        peer_identity: self.peer.as_deref().unwrap_or("-"),
                        method: r.method.as_str(),
                        authority,
                        path: r.uri.path_and_query().map_or("/", |p| p.as_str()),
                        status,
                        grpc_status: grpc,
                        duration_ms: elapsed.as_secs_f64() * 1000.0,
                        bytes_in: self.body.bytes.load(Ordering::Relaxed),
                        bytes_out: end.bytes,
                        decision: self.decision,
                        policy: &policy,
                        dry_run: &dry_run,
                        route: self.body.route.get().map_or("", |r| r),
                        retries: self.body.retries.load(Ordering::Relaxed),
                        error: error.as_deref().unwrap_or(""),
                        edge,
                    });
                }
            })
            .boxed()
        })
    }
}

/// `mesh_requests_total` and `mesh_request_duration_seconds` for one
/// finished request.
fn count(direction: &'static str, status: u16, grpc: Option<u16>, elapsed: std::time::Duration) {
    thread_local! {
        static REQUESTS: Handles<(&'static str, u16, Option<u16>), metrics::Counter> = Default::default();
        static DURATIONS: Handles<&'static str, metrics::Histogram> = Default::default();
    }
    REQUESTS
        .with(|h| {
            h.get((direction, status, grpc), |(direction, status, grpc)| {
                let grpc = grpc.map(|g| g.to_string()).unwrap_or_default();
                metrics::counter!("mesh_requests_total", "direction" => *direction, "code" => status.to_string(), "grpc_status" => grpc)
            })
        })
        .increment(1);
    DURATIONS
        .with(|h| {
            h.get(direction, |direction| {
                metrics::histogram!("mesh_request_duration_seconds", "direction" => *direction)
            })
        })
        .record(elapsed.as_secs_f64());
}
