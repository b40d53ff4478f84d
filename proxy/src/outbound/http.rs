//! Outbound HTTP: the app's HTTP/1.1 or HTTP/2 is served here and every
//! request goes as a stream on the pooled `palisade/h2` connection to the
//! chosen endpoint's proxy, carrying the target port and the app's protocol
//! in headers (docs/wire.md). Endpoints are chosen per request, so one app
//! connection is balanced across a Service. An HTTP/1.1 upgrade
//! (WebSocket) travels as an extended CONNECT stream (RFC 8441).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version as HttpVersion};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::ServiceBuilder;

use super::Outbound;
use super::resolve::{self, MeshEndpoint, Resolved};
use crate::errors::{Error, HttpError, RouteError};
use crate::http::balance::{Balance, Endpoints};
use crate::http::headers::{self as hdr, ORIG_PROTO_HEADER, TARGET_PORT_HEADER};
use crate::http::pool::Pooled;
use crate::http::retry::{RetryLayer, RetryTarget, Retrying};
use crate::http::route::{Logical, NewRoute, RouteTarget, Router};
use crate::http::server::{self, Version};
use crate::http::telemetry::{Exchange, Notes};
use crate::http::timeout::{Timeout, TimeoutLayer};
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
    async fn handle(
        self: &Arc<Self>,
        dest: &Dest,
        src: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<Body> {
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
        self: &Arc<Self>,
        dest: &Dest,
        req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        self.forward_with(Some(dest), None, req, ex).await
    }

    /// A request the ingress has picked the route for: it goes to the
    /// rule's backend over the pooled mTLS connections, through the same
    /// stack (timeouts, retries, balancing) as a routed mesh request.
    pub async fn forward_edge(
        self: &Arc<Self>,
        route: RouteTarget,
        req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        self.forward_with(None, Some(route), req, ex).await
    }

    async fn forward_with(
        self: &Arc<Self>,
        dest: Option<&Dest>,
        chosen: Option<RouteTarget>,
        mut req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        guard::check(&req, self.http.max_uri_bytes)?;
        let upgrade = upgrade_protocol(&req);
        if req.method() == Method::CONNECT && upgrade.is_none() {
            return Err(HttpError::ConnectRefused.into());
        }
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        hdr::strip_hop_by_hop(req.headers_mut());
        let req = req.map(|body| ex.observe_request(body));
        // A request to a Service may take one of its routes (never an
        // upgrade: a tunnel is not retried or split).
        let view = self.discovery.borrow().clone();
        let policy = self.egress.policy.borrow().clone();
        let policy = policy.as_deref();
        let service = match dest {
            // Only a Service that has routes is looked at further.
            Some(Dest::Transparent(dst)) if upgrade.is_none() => {
                resolve::service_at(&view, *dst, |ns, name| {
                    policy.is_some_and(|p| p.evaluator.has_routes(ns, name))
                })
            }
            _ => None,
        };
        let edge = chosen.is_some();
        let logical = match (chosen, &service, policy) {
            (Some(route), _, _) => Some(Logical::Chosen(Box::new(route))),
            (None, Some(service), Some(policy)) => Some(Logical::Service {
                policy,
                client_namespace: &self.egress.local.namespace,
                service,
            }),
            _ => None,
        };
        let notes = ex.notes();
        let routes = MeshRoutes {
            out: self.clone(),
            dest,
            view,
            upgrade: upgrade.clone(),
            notes: notes.clone(),
            edge,
        };
        let mut resp = crate::http::oneshot(Router::new(logical, &notes, routes), req).await?;
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
        Ok(Response::from_parts(parts, crate::http::empty()))
    }
}

/// Builds the outbound stack for the route a request takes: the backend
/// resolved to its endpoints, then `ToMesh → Timeout → Retry → Timeout →
/// Balance` over the pooled connections to their proxies.
struct MeshRoutes<'a> {
    out: Arc<Outbound>,
    /// `None` at the edge: every request there has a route.
    dest: Option<&'a Dest>,
    view: Arc<crate::discovery::DiscoveryView>,
    upgrade: Option<HeaderValue>,
    notes: Arc<Notes>,
    /// At the edge, the endpoint's identity is noted for the log line.
    edge: bool,
}

type MeshStack = ToMesh<Timeout<Retrying<Timeout<Balance<MeshEndpoints>>>>>;

impl NewRoute for MeshRoutes<'_> {
    type Service = MeshStack;

    fn new_route(&self, route: Option<&RouteTarget>) -> Result<MeshStack, Error> {
        let resolved = match (route, self.dest) {
            (Some(r), _) => {
                let Some(backend) = &r.backend else {
                    return Err(RouteError::NoBackend(format!(
                        "{} has no backend with a weight above 0",
                        r.name
                    ))
                    .into());
                };
                // A Service of another namespace without a ReferenceGrant:
                // its share of requests gets 500, as the Gateway API says.
                if let Some(why) = backend.refusal(std::time::SystemTime::now()) {
                    return Err(RouteError::NoBackend(format!("{}: {why}", r.name)).into());
                }
                Arc::new(
                    resolve::service(
                        self.view.clone(),
                        &backend.namespace,
                        &backend.name,
                        &backend.port,
                    )
                    .map_err(|e| match e {
                        Error::Route(RouteError::NoBackend(m)) => {
                            Error::Route(RouteError::NoBackend(format!("{}: {m}", r.name)))
                        }
                        other => other,
                    })?,
                )
            }
            (None, Some(Dest::Route(r))) => r.clone(),
            (None, Some(Dest::Transparent(dst))) => {
                Arc::new(resolve::transparent(self.view.clone(), *dst)?)
            }
            (None, None) => return Err(RouteError::NoRoute("-".into()).into()),
        };
        let Resolved::Mesh { target_port, .. } = &*resolved else {
            return Err(RouteError::NoEndpoints("outside the mesh".into()).into());
        };
        let name = route.map(|r| &r.name);
        // Every routed request counts towards its backend's budget.
        let retry = route.and_then(|r| {
            Some(RetryTarget {
                policy: r.retry.clone(),
                method_named: r.method_named,
                budget: self.out.budgets.of(r.backend.as_ref()?),
                notes: self.notes.clone(),
            })
        });
        let endpoints = MeshEndpoints {
            out: self.out.clone(),
            resolved: resolved.clone(),
            notes: self.edge.then(|| self.notes.clone()),
        };
        let stack = ServiceBuilder::new()
            .layer(TimeoutLayer::request(
                name,
                route.and_then(|r| r.timeouts.request),
            ))
            .layer(RetryLayer::new(retry))
            .layer(TimeoutLayer::per_try(
                name,
                route.and_then(|r| r.timeouts.backend_request),
            ))
            .service(Balance::new(self.out.balancer.clone(), endpoints));
        Ok(ToMesh {
            inner: stack,
            target_port: *target_port,
            resolved,
            upgrade: self.upgrade.clone(),
        })
    }
}

/// The endpoints of a resolved destination, reached through the pool and
/// checked against the workload's egress policy first.
#[derive(Clone)]
struct MeshEndpoints {
    out: Arc<Outbound>,
    resolved: Arc<Resolved>,
    /// Where the identity of the endpoint a request went to is noted (the
    /// ingress's log line).
    notes: Option<Arc<Notes>>,
}

impl Endpoints for MeshEndpoints {
    type Endpoint = MeshEndpoint;
    type Conn = Pooled;

    fn endpoints(&self) -> &[MeshEndpoint] {
        match &*self.resolved {
            Resolved::Mesh { endpoints, .. } => endpoints,
            Resolved::External(_) => &[],
        }
    }

    async fn connect(&self, i: usize) -> Result<Pooled, Error> {
        let ep = self
            .endpoints()
            .get(i)
            .ok_or_else(|| RouteError::NoEndpoints("-".into()))?;
        self.out
            .egress
            .check(ep.dst, self.resolved.workload(ep), ep.identity.as_str())?;
        self.out.pool.get(ep.proxy, &ep.identity).await
    }

    async fn send(&self, i: usize, conn: Pooled, req: Request<Body>) -> crate::http::Result {
        let ep = self
            .endpoints()
            .get(i)
            .ok_or_else(|| RouteError::NoEndpoints("-".into()))?;
        if let Some(n) = &self.notes {
            n.sent_to(&ep.identity);
        }
        self.out.pool.send(ep.proxy, &ep.identity, conn, req).await
    }
}

/// Puts a request in its mesh form (docs/wire.md): an HTTP/2 request with
/// the target port and the app's protocol in headers, an upgrade as an
/// extended CONNECT; only the proxy speaks Palisade's headers.
struct ToMesh<S> {
    inner: S,
    target_port: u16,
    resolved: Arc<Resolved>,
    upgrade: Option<HeaderValue>,
}

impl<S> ToMesh<S> {
    fn rewrite(&self, req: Request<Body>) -> Result<Request<Body>, Error> {
        let (mut parts, body) = req.into_parts();
        hdr::strip_untrusted(&mut parts.headers);
        let orig = if parts.version == HttpVersion::HTTP_2 {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        };
        let authority = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| match &*self.resolved {
                Resolved::Mesh { endpoints, .. } => endpoints
                    .first()
                    .map_or_else(String::new, |e| e.dst.to_string()),
                Resolved::External(a) => a.to_string(),
            });
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
            .insert(TARGET_PORT_HEADER, HeaderValue::from(self.target_port));
        parts
            .headers
            .insert(ORIG_PROTO_HEADER, HeaderValue::from_static(orig));
        parts.extensions = http::Extensions::new();
        if let Some(p) = &self.upgrade {
            parts.method = Method::CONNECT;
            let proto = p
                .to_str()
                .map_err(|_| HttpError::BadRequest("invalid Upgrade".into()))?;
            parts.extensions.insert(hyper::ext::Protocol::from(proto));
        }
        Ok(Request::from_parts(parts, body))
    }
}

impl<S> tower::Service<Request<Body>> for ToMesh<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Error>,
{
    type Response = Response<Body>;
    type Error = Error;
    type Future = Either<Ready<crate::http::Result>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match self.rewrite(req) {
            Ok(req) => Either::Right(self.inner.call(req)),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}
