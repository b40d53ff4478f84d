//! The webhook's HTTPS server: `POST /inject` answers AdmissionReviews;
//! `GET /live` and `GET /ready` serve the injector's own probes on the same
//! port, so the Deployment needs no second listener.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::{Settings, review};

/// The path the MutatingWebhookConfiguration calls (DESIGN.md).
pub const INJECT_PATH: &str = "/inject";
/// Largest review read. A pod object is at most the API server's 3 MiB
/// request limit, wrapped once more in the review.
pub const DEFAULT_MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;
/// The API server waits 10 s for a webhook by default; a client slower than
/// that at the handshake or headers is not the API server.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A body must arrive within this, so a slow sender cannot hold a task.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::tls::{TlsError, tls_config};

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    settings: Arc<Settings>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = mesh_admin::stopped(&mut shutdown) => return,
        };
        let acceptor = acceptor.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(DEFAULT_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(move |req| handle(req, settings.clone()));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(DEFAULT_HEADER_READ_TIMEOUT);
            if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    settings: Arc<Settings>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = match (req.method(), req.uri().path()) {
        (&Method::POST, INJECT_PATH) => {
            let body = Limited::new(req.into_body(), DEFAULT_MAX_REVIEW_BYTES);
            match tokio::time::timeout(DEFAULT_BODY_TIMEOUT, body.collect()).await {
                Ok(Ok(body)) => {
                    let json = review::answer_json(&body.to_bytes(), &settings);
                    reply(StatusCode::OK, "application/json", json)
                }
                Ok(Err(e)) => reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    format!("cannot read the review: {e}\n").into_bytes(),
                ),
                Err(_) => reply(
                    StatusCode::REQUEST_TIMEOUT,
                    "text/plain",
                    b"body too slow\n".to_vec(),
                ),
            }
        }
        (&Method::GET, "/live" | "/ready") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (_, INJECT_PATH) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"POST an AdmissionReview\n".to_vec(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    };
    Ok(reply)
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
