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

use super::Outbound;
use super::resolve::{self, Resolved};
use crate::errors::{Error, HttpError, RouteError};
use crate::http::headers::{self as hdr, ORIG_PROTO_HEADER, TARGET_PORT_HEADER};
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
        let resolved = match dest {
            Dest::Route(r) => r.clone(),
            Dest::Transparent(dst) => {
                Arc::new(resolve::transparent(self.discovery.borrow().clone(), *dst)?)
            }
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
        let mut req = Some(Request::from_parts(parts, ex.observe_request(body)));
        let mut last = None;
        let mut resp = None;
        for ep in endpoints {
            self.egress
                .check(ep.dst, resolved.workload(ep), ep.identity.as_str())?;
            match self.pool.get(ep.proxy, &ep.identity).await {
                Ok(pooled) => {
                    let Some(r) = req.take() else { break };
                    resp = Some(self.pool.send(ep.proxy, &ep.identity, pooled, r).await?);
                    break;
                }
                Err(Error::Connect(e)) if e.is_unreachable() => {
                    // A dead endpoint: counted, and the next one is tried.
                    metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "outbound", "reason" => "endpoint_failover").increment(1);
                    tracing::info!(endpoint = %ep.proxy, error = %e, "endpoint unreachable; trying the next");
                    last = Some(Error::Connect(e));
                }
                Err(e) => return Err(e),
            }
        }
        let Some(mut resp) = resp else {
            return Err(last.unwrap_or_else(|| RouteError::NoEndpoints("-".into()).into()));
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
}
