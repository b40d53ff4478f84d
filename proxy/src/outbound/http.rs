//! Outbound HTTP: the app's HTTP/1.1 or HTTP/2 is served here and every
//! request goes as a stream on the pooled `palisade/h2` connection to the
//! chosen endpoint's proxy, carrying the target port and the app's protocol
//! in headers (docs/wire.md). Endpoints are chosen per request, so one app
//! connection is balanced across a Service. An HTTP/1.1 upgrade
//! (WebSocket) travels as an extended CONNECT stream (RFC 8441).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version as HttpVersion};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use std::time::{Duration, Instant};

use super::Outbound;
use super::resolve::{self, Resolved};
use crate::errors::{Error, HttpError, RouteError};
use crate::http::balance::Outcome;
use crate::http::headers::{self as hdr, ORIG_PROTO_HEADER, TARGET_PORT_HEADER};
use crate::http::retry::{self, Budget, Replay};
use crate::http::route::{self, RouteTarget};
use crate::http::server::{self, Version};
use crate::http::telemetry::Exchange;
use crate::http::{Body, guard};
use crate::inbound::http::upgrade_protocol;
use crate::transport::relay::relay;

/// Where the requests of one app connection go.
#[derive(Clone)]
pub enum Dest {
    /// A static route: resolved once for the connection.
    Route(Arc<Resolved>),
    /// A redirected connection: resolved per request, so each request can
    /// go to another endpoint.
    Transparent(SocketAddr),
}

/// Serves the app's requests on `stream`.
pub async fn serve<S>(
    out: Arc<Outbound>,
    stream: S,
    version: Version,
    dest: Dest,
    src: SocketAddr,
    drain: &crate::drain::Drain,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = out.http.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let out = out.clone();
        let dest = dest.clone();
        async move { Ok::<_, Infallible>(out.handle(&dest, src, req).await) }
    });
    server::serve(stream, version, svc, &limits, drain).await;
}

impl Outbound {
    async fn handle(&self, dest: &Dest, src: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let grpc = guard::is_grpc(&req);
        let h1 = req.version() <= HttpVersion::HTTP_11;
        let mut ex = Exchange::start("outbound", src, None, &req, &self.access);
        match self.forward(dest, req, &mut ex).await {
            Ok(resp) => ex.finish(resp, None),
            Err(e) => {
                let e = ex.blame(e);
                let mut resp = e.to_response(grpc);
                if h1 && matches!(e, Error::Http(HttpError::BadRequest(_))) {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                tracing::info!(%src, reason = e.reason(), error = %e, "outbound request failed");
                ex.finish(resp, Some(e.to_string()))
            }
        }
    }

    async fn forward(
        &self,
        dest: &Dest,
        mut req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        guard::check(&req, self.http.max_uri_bytes)?;
        let upgrade = upgrade_protocol(&req);
        if req.method() == Method::CONNECT && upgrade.is_none() {
            return Err(HttpError::ConnectRefused.into());
        }
        // A request to a Service may take one of its routes (never an
        // upgrade: a tunnel is not retried or split).
        let view = self.discovery.borrow().clone();
        let policy = self.egress.policy.borrow().clone();
        let policy = policy.as_deref();
        let service = match dest {
            // Only a Service that has routes is looked at further.
            Dest::Transparent(dst) if upgrade.is_none() => {
                resolve::service_at(&view, *dst, |ns, name| {
                    policy.is_some_and(|p| p.evaluator.has_routes(ns, name))
                })
            }
            _ => None,
        };
        let route = match (&service, policy) {
            (Some(svc), Some(p)) => route::select(p, &self.egress.local.namespace, svc, &req)?,
            _ => None,
        };
        let resolved = match (&route, dest) {
            (Some(r), _) => {
                ex.routed(&r.name);
                let Some(backend) = &r.backend else {
                    return Err(RouteError::NoBackend(format!(
                        "{} has no backend with a weight above 0",
                        r.name
                    ))
                    .into());
                };
                route::apply(&r.request_headers, req.headers_mut());
                Arc::new(
                    resolve::service(view, &backend.namespace, &backend.name, backend.port)
                        .map_err(|e| match e {
                            Error::Route(RouteError::NoBackend(m)) => {
                                Error::Route(RouteError::NoBackend(format!("{}: {m}", r.name)))
                            }
                            other => other,
                        })?,
                )
            }
            (None, Dest::Route(r)) => r.clone(),
            (None, Dest::Transparent(dst)) => Arc::new(resolve::transparent(view, *dst)?),
        };
        let Resolved::Mesh {
            endpoints,
            target_port,
            ..
        } = &*resolved
        else {
            return Err(RouteError::NoEndpoints("outside the mesh".into()).into());
        };
        // Only the proxy speaks our headers.
        hdr::strip_untrusted(req.headers_mut());
        let orig = if req.version() == HttpVersion::HTTP_2 {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        };
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| {
                endpoints
                    .first()
                    .map_or_else(String::new, |e| e.dst.to_string())
            });
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        hdr::strip_hop_by_hop(req.headers_mut());
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = hdr::h2_uri(&authority, path)?;
        parts.version = HttpVersion::HTTP_2;
        parts.headers.remove(header::HOST);
        parts
            .headers
            .insert(TARGET_PORT_HEADER, HeaderValue::from(*target_port));
        parts
            .headers
            .insert(ORIG_PROTO_HEADER, HeaderValue::from_static(orig));
        parts.extensions = http::Extensions::new();
        if let Some(p) = &upgrade {
            parts.method = Method::CONNECT;
            let proto = p
                .to_str()
                .map_err(|_| HttpError::BadRequest("invalid Upgrade".into()))?;
            parts.extensions.insert(hyper::ext::Protocol::from(proto));
        }
        let body = ex.observe_request(body);
        let mut resp = match &route {
            // No route: the caller's own gRPC deadline still holds.
            None => match grpc_timeout(&parts.headers) {
                None => {
                    self.send(&resolved, Request::from_parts(parts, body), None, &mut None)
                        .await?
                }
                Some(after) => tokio::time::timeout(
                    after,
                    self.send(&resolved, Request::from_parts(parts, body), None, &mut None),
                )
                .await
                .map_err(|_| Error::from(HttpError::GrpcTimeout(after)))??,
            },
            Some(r) => self.send_routed(&resolved, parts, body, r, ex).await?,
        };
        hdr::strip_hop_by_hop(resp.headers_mut());
        let (Some(proto), Some(client_upgrade)) = (upgrade, client_upgrade) else {
            return Ok(resp);
        };
        if resp.status() != StatusCode::OK {
            return Ok(resp);
        }
        // The peer's app answered 101: both sides become one byte tunnel.
        let peer = hyper::upgrade::on(&mut resp);
        let idle = self.idle_timeout;
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = tokio::join!(client_upgrade, peer) {
                let _ = relay(TokioIo::new(a), TokioIo::new(b), idle).await;
            }
        });
        let (mut parts, _) = resp.into_parts();
        parts.status = StatusCode::SWITCHING_PROTOCOLS;
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
        Ok(Response::from_parts(
            parts,
            http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
        ))
    }

    /// Sends `req` to the endpoint the balancer picks (power of two
    /// choices over latency, ejected endpoints left out); one that cannot be
    /// reached costs a connect, and another is picked. Each endpoint is
    /// checked against the workload's egress policy. `avoid`: the endpoint
    /// a retry's previous try went to; `used` is set to the one this try
    /// went to.
    async fn send(
        &self,
        resolved: &Resolved,
        req: Request<Body>,
        avoid: Option<SocketAddr>,
        used: &mut Option<SocketAddr>,
    ) -> Result<Response<Body>, Error> {
        let Resolved::Mesh { endpoints, .. } = resolved else {
            return Err(RouteError::NoEndpoints("outside the mesh".into()).into());
        };
        let mut req = Some(req);
        let mut last = None;
        // A single endpoint (a pod, a static route) is not balanced.
        if let [ep] = endpoints.as_slice() {
            *used = Some(ep.dst);
            self.egress
                .check(ep.dst, resolved.workload(ep), ep.identity.as_str())?;
            let pooled = self.pool.get(ep.proxy, &ep.identity).await?;
            let Some(r) = req.take() else {
                return Err(RouteError::NoEndpoints("-".into()).into());
            };
            return self.pool.send(ep.proxy, &ep.identity, pooled, r).await;
        }
        let mut unreachable: Vec<usize> = Vec::new();
        let avoid = avoid.and_then(|a| endpoints.iter().position(|e| e.dst == a));
        while let Some((i, mut call)) = self.balancer.pick(endpoints, |i| {
            unreachable.contains(&i)
                || (Some(i) == avoid && unreachable.len() + 2 <= endpoints.len())
        }) {
            let ep = &endpoints[i];
            *used = Some(ep.dst);
            self.egress
                .check(ep.dst, resolved.workload(ep), ep.identity.as_str())?;
            match self.pool.get(ep.proxy, &ep.identity).await {
                Ok(pooled) => {
                    let Some(r) = req.take() else { break };
                    call.sent();
                    let sent = self.pool.send(ep.proxy, &ep.identity, pooled, r).await;
                    call.finish(match &sent {
                        Ok(resp) => Outcome::of_status(retry::effective_status(resp)),
                        Err(e) => Outcome::of_status(retryable_status(e)),
                    });
                    return sent;
                }
                Err(Error::Connect(e)) if e.is_unreachable() => {
                    // A dead endpoint: counted, and another is picked.
                    call.unreachable();
                    metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "outbound", "reason" => "endpoint_failover").increment(1);
                    tracing::info!(endpoint = %ep.proxy, error = %e, "endpoint unreachable; trying another");
                    last = Some(Error::Connect(e));
                    unreachable.push(i);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RouteError::NoEndpoints("-".into()).into()))
    }

    /// A routed request: the rule's request timeout (or a shorter
    /// `grpc-timeout`) over every try, its per-try timeout, and retries
    /// within the backend's budget.
    async fn send_routed(
        &self,
        resolved: &Resolved,
        parts: http::request::Parts,
        body: Body,
        route: &RouteTarget,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        let grpc = grpc_timeout(&parts.headers);
        let overall = match (route.timeouts.request, grpc) {
            (Some(r), Some(g)) if g < r => Some(("grpc-timeout", g)),
            (Some(r), _) => Some(("timeouts.request", r)),
            (None, Some(g)) => Some(("grpc-timeout", g)),
            (None, None) => None,
        };
        let deadline = overall.map(|(_, d)| Instant::now() + d);
        let tries = self.tries(resolved, parts, body, route, deadline, ex);
        match overall {
            None => tries.await,
            Some((which, after)) => tokio::time::timeout(after, tries).await.map_err(|_| {
                Error::from(HttpError::RouteTimeout {
                    which,
                    after,
                    route: route.name.clone(),
                })
            })?,
        }
    }

    async fn tries(
        &self,
        resolved: &Resolved,
        parts: http::request::Parts,
        body: Body,
        route: &RouteTarget,
        deadline: Option<Instant>,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        let policy = route
            .retry
            .as_ref()
            .filter(|_| retry::idempotent(&parts.method) || route.method_named);
        let budget = self.budget(route);
        budget.deposit();
        let mut replay = match policy {
            Some(_) => Replay::prepare(body).await,
            None => Replay::Once(body),
        };
        let attempts = match policy {
            Some(p) if replay.replayable() => p.attempts,
            _ => 0,
        };
        let mut attempt = 0;
        // Each retry starts at another endpoint than the try that failed.
        let mut last_endpoint = None;
        loop {
            let avoid = last_endpoint.take();
            let mut req =
                Request::from_parts(copy_parts(&parts), replay.take().unwrap_or_else(empty));
            if let Some(deadline) = deadline {
                // The app downstream gets what is left, not the whole budget.
                let left = deadline.saturating_duration_since(Instant::now());
                if req.headers().contains_key(GRPC_TIMEOUT)
                    && let Ok(v) = HeaderValue::from_str(&format!("{}m", left.as_millis().max(1)))
                {
                    req.headers_mut().insert(GRPC_TIMEOUT, v);
                }
            }
            let tried = match route.timeouts.backend_request {
                Some(t) => {
                    tokio::time::timeout(t, self.send(resolved, req, avoid, &mut last_endpoint))
                        .await
                        .unwrap_or_else(|_| {
                            Err(HttpError::RouteTimeout {
                                which: "timeouts.backendRequest",
                                after: t,
                                route: route.name.clone(),
                            }
                            .into())
                        })
                }
                None => self.send(resolved, req, avoid, &mut last_endpoint).await,
            };
            let Some(p) = policy else { return tried };
            let status = match &tried {
                Ok(resp) => retry::effective_status(resp),
                Err(e) => retryable_status(e),
            };
            if !p.codes.contains(&status) {
                if attempt > 0 {
                    metrics::counter!("mesh_retries_total", "result" => "succeeded").increment(1);
                }
                return tried;
            }
            if attempt >= attempts {
                if attempt > 0 {
                    metrics::counter!("mesh_retries_total", "result" => "exhausted").increment(1);
                }
                return tried;
            }
            if !budget.withdraw() {
                metrics::counter!("mesh_retries_total", "result" => "budget_exhausted")
                    .increment(1);
                return tried;
            }
            drop(tried);
            metrics::counter!("mesh_retries_total", "result" => "retried").increment(1);
            tokio::time::sleep(retry::backoff(p.backoff, attempt)).await;
            attempt += 1;
            ex.retries = attempt;
        }
    }

    /// The retry budget of a route's backend.
    fn budget(&self, route: &RouteTarget) -> Arc<Budget> {
        let key = route.backend.as_ref().map_or_else(String::new, |b| {
            format!("{}/{}:{}", b.namespace, b.name, b.port)
        });
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        budgets
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Budget::new(
                    retry::DEFAULT_BUDGET_RATIO,
                    retry::DEFAULT_BUDGET_MIN_PER_SECOND,
                ))
            })
            .clone()
    }
}

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// `grpc-timeout` (gRPC over HTTP/2: an integer of at most 8 digits and a
/// unit, H M S m u n).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    if n.is_empty() || n.len() > 8 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What a failed try counts as for a route's retry codes.
fn retryable_status(e: &Error) -> u16 {
    match e {
        Error::Connect(_) | Error::Http(HttpError::Unavailable(_)) => 503,
        Error::Route(RouteError::NoEndpoints(_)) => 503,
        Error::Http(HttpError::RouteTimeout { .. }) | Error::Http(HttpError::Timeout(_)) => 504,
        Error::Http(HttpError::Upstream(_)) => 502,
        // Refusals (authorization, bad requests) are not retried.
        _ => 0,
    }
}

fn copy_parts(p: &http::request::Parts) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = p.method.clone();
    parts.uri = p.uri.clone();
    parts.version = p.version;
    parts.headers = p.headers.clone();
    parts
}

fn empty() -> Body {
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        let h = |v: &'static str| {
            let mut m = http::HeaderMap::new();
            m.insert(GRPC_TIMEOUT, HeaderValue::from_static(v));
            grpc_timeout(&m)
        };
        assert_eq!(h("100m"), Some(Duration::from_millis(100)));
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "100", "123456789m", "10x", "-1m", "1.5S"] {
            assert_eq!(h(bad), None, "{bad:?}");
        }
    }
}
