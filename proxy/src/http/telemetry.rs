//! Per-request telemetry, the same on every side: `mesh_requests_total`,
//! `mesh_request_duration_seconds` and the access log line, taken when the
//! response body ends (so a stream counts its whole length and the gRPC
//! status from its trailers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::Body;
use super::body::{Observed, grpc_status};
use crate::access::{self, AccessLog, HttpLine};

/// What is known of one request while it is served.
pub struct Exchange {
    pub direction: &'static str,
    started: Instant,
    at: SystemTime,
    src: SocketAddr,
    peer: String,
    /// Method, authority and path, kept only when the access log is on.
    request: Option<(String, String, String)>,
    pub decision: &'static str,
    pub policy: String,
    pub dry_run: String,
    bytes_in: Arc<AtomicU64>,
    request_broken: Arc<AtomicBool>,
    log: Arc<AccessLog>,
}

impl Exchange {
    pub fn start<B>(
        direction: &'static str,
        src: SocketAddr,
        peer: &str,
        req: &http::Request<B>,
        log: &Arc<AccessLog>,
    ) -> Self {
        let request = log.enabled().then(|| {
            let authority = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default();
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            (
                req.method().as_str().to_string(),
                authority,
                path.to_string(),
            )
        });
        Self {
            direction,
            started: Instant::now(),
            at: SystemTime::now(),
            src,
            peer: peer.to_string(),
            request,
            decision: "-",
            policy: String::new(),
            dry_run: String::new(),
            bytes_in: Arc::new(AtomicU64::new(0)),
            request_broken: Arc::new(AtomicBool::new(false)),
            log: log.clone(),
        }
    }

    /// Counts the request body's bytes, and notes a body whose framing the
    /// client broke (a bad chunk size, a reset).
    pub fn observe_request(&self, body: Incoming) -> Body {
        let n = self.bytes_in.clone();
        let broken = self.request_broken.clone();
        Observed::new(body, move |end| {
            n.store(end.bytes, Ordering::Relaxed);
            broken.store(end.errored, Ordering::Relaxed);
        })
        .boxed()
    }

    /// An upstream failure caused by the client's own broken request body
    /// (a bad chunk size) is the client's error: 400, and the connection
    /// closes.
    pub fn blame(&self, e: crate::errors::Error) -> crate::errors::Error {
        use crate::errors::{Error, HttpError};
        if self.request_broken.load(Ordering::Relaxed)
            && matches!(e, Error::Http(HttpError::Upstream(_)))
        {
            return HttpError::BadRequest("malformed request body".into()).into();
        }
        e
    }

    /// Records the decision that let the request through or refused it.
    pub fn decided(&mut self, d: &mesh_policy::Decision) {
        self.decision = d.label();
        self.policy = d.decided_by.to_string();
        self.dry_run = access::dry_run_rule(d);
    }

    /// Wraps the response so the request is counted and logged when it ends.
    pub fn finish(self, resp: http::Response<Body>, error: Option<String>) -> http::Response<Body> {
        let status = resp.status().as_u16();
        let head_grpc = grpc_status(resp.headers());
        resp.map(move |b| {
            Observed::new(b, move |end| {
                let grpc = end.grpc_status.or(head_grpc);
                let elapsed = self.started.elapsed();
                let grpc_label = grpc.map(|g| g.to_string()).unwrap_or_default();
                metrics::counter!("mesh_requests_total", "direction" => self.direction, "code" => status.to_string(), "grpc_status" => grpc_label).increment(1);
                metrics::histogram!("mesh_request_duration_seconds", "direction" => self.direction)
                    .record(elapsed.as_secs_f64());
                if let Some((method, authority, path)) = &self.request {
                    self.log.http(&HttpLine {
                        ts: access::timestamp(self.at),
                        direction: self.direction,
                        src: self.src,
                        peer_identity: &self.peer,
                        method,
                        authority,
                        path,
                        status,
                        grpc_status: grpc,
                        duration_ms: elapsed.as_secs_f64() * 1000.0,
                        bytes_in: self.bytes_in.load(Ordering::Relaxed),
                        bytes_out: end.bytes,
                        decision: self.decision,
                        policy: &self.policy,
                        dry_run: &self.dry_run,
                        error: error.as_deref().unwrap_or(""),
                    });
                }
            })
            .boxed()
        })
    }
}
