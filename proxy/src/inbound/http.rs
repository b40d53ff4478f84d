//! Inbound HTTP: every request is authorized with its method, normalized
//! path, host and headers, then forwarded to the app in the protocol the
//! calling app spoke. Requests arrive on a plaintext (or `palisade/tcp1`)
//! HTTP/1.1 connection, or as streams of a peer proxy's pooled
//! `palisade/h2` connection, whose headers name the target port and the
//! calling app's protocol. Denials get a 403 (gRPC: PERMISSION_DENIED)
//! naming the rule.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version as HttpVersion};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_policy::{Headers, Http};

use super::authorize::{Authorizer, Destination};
use super::identify::Client;
use crate::access::AccessLog;
use crate::errors::{AuthzError, Error, HttpError, RouteError};
use crate::http::client::AppClient;
use crate::http::headers::{
    self as hdr, ORIG_PROTO_HEADER, PEER_IDENTITY_HEADER, TARGET_PORT_HEADER,
};
use crate::http::ratelimit::{Limiters, RateLimitLayer};
use crate::http::server::{self, Version};
use crate::http::telemetry::Exchange;
use crate::http::{Body, guard};
use crate::policy;
use crate::transport::relay::relay;

/// What every inbound HTTP request shares.
pub struct Handler {
    pub authz: Authorizer,
    pub app: Arc<AppClient>,
    pub own_ports: Arc<HashSet<u16>>,
    pub access: Arc<AccessLog>,
    pub max_uri_bytes: usize,
    pub idle_timeout: Duration,
    /// RateLimitPolicy counters, kept across policy pushes.
    pub limits: Limiters,
}

/// How requests reach us on one connection.
#[derive(Debug, Clone, Copy)]
pub enum Hop {
    /// From the client itself, for one destination port, in its protocol.
    Direct { dst: Destination, version: Version },
    /// Streams of a peer proxy's pooled connection; each names its port.
    Mesh { local_ip: IpAddr },
}

/// Serves requests on an accepted, peer-authenticated stream.
pub async fn serve<S>(
    stream: S,
    client: Client,
    hop: Hop,
    handler: Arc<Handler>,
    limits: &server::Limits,
    drain: &crate::drain::Drain,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let version = match hop {
        Hop::Direct { version, .. } => version,
        Hop::Mesh { .. } => Version::Http2,
    };
    let client = Arc::new(client);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let client = client.clone();
        async move { Ok::<_, Infallible>(handler.handle(&client, hop, req).await) }
    });
    server::serve(stream, version, svc, limits, drain).await;
}

impl Handler {
    async fn handle(&self, client: &Client, hop: Hop, req: Request<Incoming>) -> Response<Body> {
        let grpc = guard::is_grpc(&req);
        let h1 = req.version() <= HttpVersion::HTTP_11;
        let mut ex = Exchange::start(
            "inbound",
            client.addr,
            client.label.clone(),
            &req,
            &self.access,
        );
        match self.route(client, hop, req, &mut ex).await {
            Ok(resp) => ex.finish(resp, None),
            Err(e) => {
                let e = ex.blame(e);
                let mut resp = e.to_response(grpc);
                if h1 && matches!(e, Error::Http(HttpError::BadRequest(_))) {
                    // After a framing error nothing on the connection can be trusted.
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                if !matches!(e, Error::Authz(_)) {
                    tracing::info!(peer = %client.addr, client = client.name(), error = %e, "inbound request refused");
                }
                ex.finish(resp, Some(e.to_string()))
            }
        }
    }

    async fn route(
        &self,
        client: &Client,
        hop: Hop,
        mut req: Request<Incoming>,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, Error> {
        guard::check(&req, self.max_uri_bytes)?;
        let (dst, app_version) = match hop {
            Hop::Direct { dst, version } => (dst, version),
            Hop::Mesh { local_ip } => {
                let port = req
                    .headers()
                    .get(TARGET_PORT_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u16>().ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| HttpError::BadRequest(format!("no {TARGET_PORT_HEADER}")))?;
                let version = match req.headers().get(ORIG_PROTO_HEADER).map(|v| v.as_bytes()) {
                    Some(b"HTTP/1.1") => Version::Http1,
                    _ => Version::Http2,
                };
                (Destination { ip: local_ip, port }, version)
            }
        };
        if self.own_ports.contains(&dst.port) {
            metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "loop").increment(1);
            return Err(RouteError::Loop(dst.port).into());
        }
        let upgrade = upgrade_protocol(&req);
        if req.method() == Method::CONNECT && upgrade.is_none() {
            return Err(HttpError::ConnectRefused.into());
        }
        // One normalized path, used for the decision and for forwarding.
        let raw_path = req.uri().path();
        let path = mesh_policy::normalize_path(raw_path)
            .map_err(|e| HttpError::BadRequest(e.to_string()))?;
        // What goes to the app: the request's own target when normalizing
        // left it as it was (no copy), else the normalized path and the query.
        let path_and_query = match req.uri().path_and_query() {
            Some(pq) if pq.path() == path => pq.clone(),
            pq => {
                let mut target = path.clone();
                if let Some(q) = pq.and_then(|pq| pq.query()) {
                    target.push('?');
                    target.push_str(q);
                }
                PathAndQuery::try_from(target)
                    .map_err(|_| HttpError::BadRequest("invalid path".into()))?
            }
        };
        // Identity comes only from the verified certificate: anything a
        // client sends in our headers is dropped first.
        hdr::strip_untrusted(req.headers_mut());
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let method = if upgrade.is_some() {
            Method::GET
        } else {
            req.method().clone()
        };
        let decision = self
            .authz
            .decide(
                client,
                dst,
                Some(Http {
                    method: method.as_str(),
                    path: &path,
                    host: authority.as_deref(),
                    headers: Headers::Map(req.headers()),
                    request_principal: None,
                    remote_ip: None,
                }),
            )
            .ok_or(AuthzError::NoPolicy)?;
        policy::record("inbound", &decision);
        crate::flows::record(&client.source(), dst.port, &decision);
        ex.decided(&decision);
        if !decision.is_allowed() {
            return Err(AuthzError::Denied(decision.decided_by.to_string()).into());
        }
        if let Some(v) = &client.header {
            req.headers_mut()
                .insert(HeaderName::from_static(PEER_IDENTITY_HEADER), v.clone());
        }
        hdr::strip_hop_by_hop(req.headers_mut());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let authority = authority.unwrap_or_else(|| format!("{}:{}", dst.ip, dst.port));
        parts.method = method.clone();
        parts.extensions = http::Extensions::new();
        match app_version {
            Version::Http1 => {
                parts.version = HttpVersion::HTTP_11;
                parts.uri = Uri::from(path_and_query);
                if !parts.headers.contains_key(header::HOST)
                    && let Ok(v) = HeaderValue::from_str(&authority)
                {
                    parts.headers.insert(header::HOST, v);
                }
            }
            Version::Http2 => {
                parts.version = HttpVersion::HTTP_2;
                parts.uri = hdr::h2_uri(&authority, path_and_query)?;
                parts.headers.remove(header::HOST);
            }
        }
        let body = ex.observe_request(body);
        let upgrade = match (upgrade, client_upgrade) {
            (Some(proto), Some(client)) => {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, proto);
                let status = match hop {
                    Hop::Mesh { .. } => StatusCode::OK,
                    Hop::Direct { .. } => StatusCode::SWITCHING_PROTOCOLS,
                };
                Some((client, status))
            }
            _ => None,
        };
        let app = ToApp {
            handler: self,
            port: dst.port,
            version: app_version,
            upgrade,
        };
        let limit = self.authz.rate_limit(
            &self.limits,
            client,
            dst.port,
            method.as_str(),
            &path,
            Some(&authority),
        );
        let stack = tower::Layer::layer(&RateLimitLayer::new(limit), app);
        crate::http::oneshot(stack, Request::from_parts(parts, body)).await
    }

    /// Sends an upgrade to the app on a connection of its own; after the
    /// app's `101` (and only then) both sides become one byte tunnel.
    async fn upgrade(
        &self,
        port: u16,
        req: Request<Body>,
        client: hyper::upgrade::OnUpgrade,
        status: StatusCode,
    ) -> Result<Response<Body>, Error> {
        let mut resp = self.app.send_upgrade(port, req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            hdr::strip_hop_by_hop(resp.headers_mut());
            return Ok(resp.map(|b| b.boxed()));
        }
        let app = hyper::upgrade::on(&mut resp);
        let idle = self.idle_timeout;
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = tokio::join!(client, app) {
                let _ = relay(TokioIo::new(a), TokioIo::new(b), idle).await;
            }
        });
        let (mut parts, _) = resp.into_parts();
        let proto = parts.headers.get(header::UPGRADE).cloned();
        hdr::strip_hop_by_hop(&mut parts.headers);
        parts.status = status;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(p) = proto {
                parts.headers.insert(header::UPGRADE, p);
            }
        }
        Ok(Response::from_parts(parts, crate::http::empty()))
    }
}

/// The innermost inbound service: the request goes to the app on the
/// port it asked for, in the calling app's protocol, or as an upgrade on
/// a connection of its own.
struct ToApp<'a> {
    handler: &'a Handler,
    port: u16,
    version: Version,
    upgrade: Option<(hyper::upgrade::OnUpgrade, StatusCode)>,
}

type AppFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = crate::http::Result> + Send + 'a>>;

impl<'a> tower::Service<Request<Body>> for ToApp<'a> {
    type Response = Response<Body>;
    type Error = Error;
    type Future = AppFuture<'a>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> AppFuture<'a> {
        let (handler, port, version) = (self.handler, self.port, self.version);
        match self.upgrade.take() {
            Some((client, status)) => Box::pin(handler.upgrade(port, req, client, status)),
            None => Box::pin(async move {
                let mut resp = handler.app.send(port, version, req).await?;
                hdr::strip_hop_by_hop(resp.headers_mut());
                Ok(resp)
            }),
        }
    }
}

/// The protocol a request asks to switch to: the `:protocol` of an HTTP/2
/// extended CONNECT (RFC 8441), or an HTTP/1.1 `Upgrade` with
/// `Connection: upgrade`.
pub fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(p) = req.extensions().get::<hyper::ext::Protocol>() {
        return HeaderValue::from_str(p.as_str()).ok();
    }
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants && req.version() == HttpVersion::HTTP_11 {
        return req.headers().get(header::UPGRADE).cloned();
    }
    None
}
