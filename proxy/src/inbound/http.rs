//! Inbound HTTP: every request is authorized with its method, normalized
//! path, host and headers, then forwarded to the app. Denials get a 403 (or
//! gRPC PERMISSION_DENIED) naming the rule.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use mesh_policy::{Headers, Http};

use super::authorize::{Authorizer, Destination};
use super::identify::Client;
use crate::access;
use crate::errors::{AuthzError, Error, HttpError};
use crate::http::client::AppClient;
use crate::http::headers::{self as hdr, PEER_IDENTITY_HEADER};
use crate::http::{Body, server};
use crate::policy;

/// What every request on one connection shares.
pub struct Connection {
    pub client: Client,
    pub dst: Destination,
    pub authz: Authorizer,
    pub app: AppClient,
}

/// Serves HTTP/1.1 on an accepted (and already peer-authenticated) stream.
pub async fn serve<S>(
    stream: S,
    conn: Connection,
    limits: &server::Limits,
    drain: &crate::drain::Drain,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    server::serve(stream, server::Version::Http1, svc, limits, drain).await;
}

impl Connection {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let resp = match self.authorize_and_forward(req).await {
            Ok(r) => r,
            Err(e) => e.to_response(false),
        };
        let code = resp.status().as_u16();
        metrics::counter!("mesh_requests_total", "direction" => "inbound", "code" => code.to_string()).increment(1);
        metrics::histogram!("mesh_request_duration_seconds", "direction" => "inbound")
            .record(started.elapsed().as_secs_f64());
        resp
    }

    async fn authorize_and_forward(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, Error> {
        let raw_path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let method = req.method().as_str().to_string();
        // One normalized path, used for the decision and for forwarding.
        let path = match mesh_policy::normalize_path(&raw_path) {
            Ok(p) => p,
            Err(e) => {
                let line = self.line(&method, &raw_path, None);
                access::http_refused(&line, 400, &e);
                return Err(HttpError::BadRequest(e.to_string()).into());
            }
        };
        // Identity comes only from the verified certificate: anything a
        // client sends in our identity header is dropped first.
        hdr::strip_untrusted(req.headers_mut());
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let decision = self.authz.decide(
            &self.client,
            self.dst,
            Some(Http {
                method: &method,
                path: &path,
                host: host.as_deref(),
                headers: Headers::Map(req.headers()),
                request_principal: None,
                remote_ip: None,
            }),
        );
        let Some(decision) = decision else {
            return Err(AuthzError::NoPolicy.into());
        };
        policy::record("inbound", &decision);
        access::http(&self.line(&method, &path, host.as_deref()), &decision);
        if !decision.is_allowed() {
            return Err(AuthzError::Denied(decision.decided_by.to_string()).into());
        }
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        *req.uri_mut() = Uri::try_from(format!("{path}{query}"))
            .map_err(|_| HttpError::BadRequest("invalid path".into()))?;
        if let Some(id) = &self.client.identity
            && let Ok(v) = HeaderValue::from_str(id.as_str())
        {
            req.headers_mut()
                .insert(HeaderName::from_static(PEER_IDENTITY_HEADER), v);
        }
        hdr::strip_hop_by_hop(req.headers_mut());
        self.app.send(req).await.inspect_err(|e| {
            tracing::warn!(target = %self.app.target(), error = %e, "upstream request failed");
        })
    }

    fn line<'a>(
        &'a self,
        method: &'a str,
        path: &'a str,
        host: Option<&'a str>,
    ) -> access::Request<'a> {
        access::Request {
            src: self.client.addr,
            client: self.client.name(),
            method,
            path,
            host,
        }
    }
}
