//! What every Palisade binary shares at its edge: the plain-HTTP admin
//! endpoint (`/live`, `/ready`, `/metrics`, ...), the Prometheus recorder,
//! logging setup and SIGTERM handling.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::filter::Targets;

mod logs;
pub use logs::LogGuard;

/// Appends a whole line (ending in `\n`) to the log stream, batched with the
/// other log output: for streams of their own, such as the access log.
pub fn write_log_line(line: &[u8]) {
    use std::io::Write;
    let _ = logs::BatchWriter.write(line);
}

/// Admin requests must finish their headers quickly; the endpoint is local
/// and its clients are probes and operators, not slow networks.
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One admin response.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: format!("{value}\n"),
        }
    }

    pub fn not_found() -> Self {
        Self::text(StatusCode::NOT_FOUND, "not found\n")
    }
}

/// A reply that has to wait for something (the proxy's app probes).
pub type PendingReply = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>;

/// The routes of an admin endpoint. `GET` only; the path excludes the query.
pub trait Routes: Send + Sync + 'static {
    fn get(&self, path: &str) -> Reply;

    /// A path answered asynchronously, if this is one; others go to
    /// [`Routes::get`].
    fn get_async(&self, _path: &str) -> Option<PendingReply> {
        None
    }
}

/// Installs the process-wide Prometheus recorder.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install metrics recorder: {e}"))
}

/// Logs to stderr, in batches written by a background thread (see
/// [`LogGuard`]); `RUST_LOG` overrides the default level `info` with
/// comma-separated `target=level` directives and an optional bare default
/// level (e.g. `warn,mesh_proxy=debug`). A `RUST_LOG` that does not parse is
/// reported and the default used.
pub fn init_tracing() -> LogGuard {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, bad) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    logs::start();
    let _ = tracing_subscriber::fmt()
        .with_writer(|| logs::BatchWriter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(filter)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!(error = %e, "RUST_LOG ignored: it does not parse; logging at info");
    }
    LogGuard::new()
}

/// The filter for a `RUST_LOG` value, and why the value was refused if it was.
fn log_filter(value: Option<&str>) -> (Targets, Option<String>) {
    let default = || Targets::new().with_default(tracing::Level::INFO);
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (default(), Some(e.to_string())),
        },
        _ => (default(), None),
    }
}

/// Binds the admin address, with an error that names it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on admin address {addr}: {e}"))
}

/// Serves the admin endpoint until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    routes: Arc<dyn Routes>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(respond(&*routes, &req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(DEFAULT_HEADER_READ_TIMEOUT);
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn respond(routes: &dyn Routes, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = if req.method() == Method::GET || req.method() == Method::HEAD {
        match routes.get_async(req.uri().path()) {
            Some(pending) => pending.await,
            None => routes.get(req.uri().path()),
        }
    } else {
        Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
    };
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = reply.status;
    if let Ok(v) = header::HeaderValue::from_str(reply.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, only Ctrl-C can stop us.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::Level;

    #[test]
    fn rust_log_sets_levels_per_target() {
        let (f, bad) = log_filter(Some("warn,mesh_proxy=debug"));
        assert!(bad.is_none());
        assert!(f.would_enable("mesh_proxy::inbound", &Level::DEBUG));
        assert!(!f.would_enable("mesh_proxy::inbound", &Level::TRACE));
        assert!(f.would_enable("h2", &Level::WARN));
        assert!(!f.would_enable("h2", &Level::INFO));
    }

    #[test]
    fn unset_or_unparsable_rust_log_means_info() {
        for v in [None, Some(""), Some("  ")] {
            let (f, bad) = log_filter(v);
            assert!(bad.is_none(), "{v:?}");
            assert!(f.would_enable("mesh_proxy", &Level::INFO));
            assert!(!f.would_enable("mesh_proxy", &Level::DEBUG));
        }
        let (f, bad) = log_filter(Some("mesh_proxy=loud"));
        assert!(bad.is_some());
        assert!(f.would_enable("mesh_proxy", &Level::INFO));
        assert!(!f.would_enable("mesh_proxy", &Level::DEBUG));
    }
}
