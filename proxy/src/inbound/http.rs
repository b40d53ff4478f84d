//! Inbound HTTP/1.1: every request is authorized with its method, normalized
//! path, host and headers, then forwarded to the app over one upstream
//! connection per client connection. Denials get a 403 naming the rule.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_policy::{Headers, Http};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::Client;
use crate::drain::Drain;
use crate::policy::{self, LocalWorkload, PolicyRx};

/// Largest request head accepted; bigger heads get 431 from hyper.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client must finish sending a request head within this.
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the local app.
const DEFAULT_APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The verified SPIFFE ID of the caller, set by the proxy for the app.
pub const PEER_IDENTITY_HEADER: &str = "x-palisade-peer-identity";

type Body = BoxBody<Bytes, hyper::Error>;

/// What every request on one connection shares.
pub struct Context {
    pub client: Client,
    pub dst_ip: IpAddr,
    pub port: u16,
    pub target: SocketAddr,
    pub policy: PolicyRx,
    pub discovery: crate::discovery::DiscoveryRx,
    pub local: Arc<LocalWorkload>,
}

struct Conn {
    ctx: Context,
    upstream: Mutex<Option<SendRequest<Incoming>>>,
}

/// Serves HTTP/1.1 on an accepted (and already peer-authenticated) stream.
pub async fn serve<S>(stream: S, ctx: Context, drain: Drain)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        ctx,
        upstream: Mutex::new(None),
    });
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(DEFAULT_HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let served = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        _ = drain.signaled() => {
            // Finish the request in flight, then close with `Connection: close`.
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded; hyper frames the
/// body itself.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

impl Conn {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let resp = self.authorize_and_forward(req).await;
        let code = resp.status().as_u16();
        metrics::counter!("mesh_requests_total", "direction" => "inbound", "code" => code.to_string()).increment(1);
        metrics::histogram!("mesh_request_duration_seconds", "direction" => "inbound")
            .record(started.elapsed().as_secs_f64());
        resp
    }

    async fn authorize_and_forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        let ctx = &self.ctx;
        let raw_path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let raw_path = raw_path.as_str();
        // One normalized path, used for the decision and for forwarding.
        let path = match mesh_policy::normalize_path(raw_path) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(access = "inbound", src = %ctx.client.addr, client = ctx.client.name(), method = %req.method(), path = raw_path, status = 400, error = %e, "http");
                return text(StatusCode::BAD_REQUEST, format!("bad request: {e}\n"));
            }
        };
        // Identity comes only from the verified certificate: anything a
        // client sends in our identity header is dropped first.
        let headers = req.headers_mut();
        strip_untrusted(headers);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let decision = super::decide(
            &ctx.policy,
            &ctx.discovery,
            &ctx.local,
            &ctx.client,
            ctx.dst_ip,
            ctx.port,
            Some(Http {
                method: req.method().as_str(),
                path: &path,
                host: host.as_deref(),
                headers: Headers::Map(req.headers()),
                request_principal: None,
                remote_ip: None,
            }),
        );
        let Some(decision) = decision else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no policy yet\n".into());
        };
        policy::record("inbound", &decision);
        tracing::info!(
            access = "inbound",
            src = %ctx.client.addr,
            client = ctx.client.name(),
            method = %req.method(),
            path,
            host = host.as_deref().unwrap_or("-"),
            decision = decision.label(),
            policy = %decision.decided_by,
            dry_run = %decision.dry_run.as_ref().map(|d| d.decided_by.to_string()).unwrap_or_default(),
            "http"
        );
        if !decision.is_allowed() {
            return text(
                StatusCode::FORBIDDEN,
                format!("access denied: {}\n", decision.decided_by),
            );
        }
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        match Uri::try_from(format!("{path}{query}")) {
            Ok(u) => *req.uri_mut() = u,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "bad request: invalid path\n".into(),
                );
            }
        }
        if let Some(id) = &ctx.client.identity
            && let Ok(v) = HeaderValue::from_str(id.as_str())
        {
            req.headers_mut()
                .insert(HeaderName::from_static(PEER_IDENTITY_HEADER), v);
        }
        for h in HOP_BY_HOP {
            req.headers_mut().remove(h);
        }
        self.forward(req).await
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let mut upstream = self.upstream.lock().await;
        if upstream.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(self.ctx.target).await {
                Ok(s) => *upstream = Some(s),
                Err(e) => {
                    metrics::counter!("mesh_tcp_connection_errors_total", "direction" => "inbound", "reason" => "app_connect").increment(1);
                    tracing::warn!(target = %self.ctx.target, error = %e, "cannot connect to the app");
                    return text(StatusCode::BAD_GATEWAY, "upstream unavailable\n".into());
                }
            }
        }
        let Some(sender) = upstream.as_mut() else {
            return text(StatusCode::BAD_GATEWAY, "upstream unavailable\n".into());
        };
        if sender.ready().await.is_err() {
            *upstream = None;
            return text(
                StatusCode::BAD_GATEWAY,
                "upstream connection closed\n".into(),
            );
        }
        match sender.send_request(req).await {
            Ok(resp) => resp.map(|b| b.boxed()),
            Err(e) => {
                tracing::warn!(target = %self.ctx.target, error = %e, "upstream request failed");
                *upstream = None;
                text(StatusCode::BAD_GATEWAY, "upstream request failed\n".into())
            }
        }
    }
}

/// Removes identity headers a client could forge.
fn strip_untrusted(headers: &mut http::HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            k.as_str().starts_with("x-palisade-") || k.as_str() == "x-forwarded-client-cert"
        })
        .cloned()
        .collect();
    for k in forged {
        headers.remove(k);
    }
}

async fn connect(target: SocketAddr) -> std::io::Result<SendRequest<Incoming>> {
    let tcp = tokio::time::timeout(DEFAULT_APP_CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
