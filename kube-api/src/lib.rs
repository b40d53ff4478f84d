//! A small Kubernetes API client: GET (list, and watch as a stream of
//! lines) and POST, over HTTP/1.1 with TLS to the API server, or plain HTTP
//! (`kubectl proxy`, or a test's recorded-response server). One connection
//! per request: a watch holds its connection for minutes, and the control
//! plane keeps only a handful of them.

#[cfg(any(test, feature = "testing"))]
pub mod replay;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// Where a pod finds its ServiceAccount credentials (Kubernetes' layout).
pub const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A request that is not a watch must finish within this.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest line of a watch stream: one object. The API server refuses
/// objects above 1.5 MiB (etcd's limit), so 4 MiB is never a real object.
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// Largest response body read whole (a page of a list).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Why an API call failed. Never carries the bearer token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Kubernetes API {url}: {message}")]
    Transport { url: String, message: String },
    #[error("Kubernetes API {url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: StatusCode,
        message: String,
    },
    #[error("in-cluster configuration: {0}")]
    Config(String),
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How to reach the API server.
#[derive(Clone)]
pub struct Api {
    base: Uri,
    token: Option<Arc<String>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: only whether there is one.
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Api {
    /// `url` without credentials (`http://127.0.0.1:PORT`, for a recording).
    pub fn plain(url: &str) -> Result<Self, ApiError> {
        let base: Uri = url
            .parse()
            .map_err(|e| ApiError::Config(format!("{url:?} is not a URL: {e}")))?;
        Ok(Self {
            base,
            token: None,
            tls: None,
        })
    }

    /// The API server as a pod sees it: `KUBERNETES_SERVICE_HOST` and
    /// `_PORT`, the ServiceAccount token and CA under [`IN_CLUSTER_DIR`].
    pub fn in_cluster() -> Result<Self, ApiError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            ApiError::Config("KUBERNETES_SERVICE_HOST is not set (not running in a pod?)".into())
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let dir = Path::new(IN_CLUSTER_DIR);
        let token = std::fs::read_to_string(dir.join("token"))
            .map_err(|e| ApiError::Config(format!("{}/token: {e}", dir.display())))?;
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("ca.crt"))
            .and_then(|it| it.collect())
            .map_err(|e| ApiError::Config(format!("{}/ca.crt: {e}", dir.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| ApiError::Config(format!("{}/ca.crt: {e}", dir.display())))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let base = format!("https://{host}:{port}")
            .parse()
            .map_err(|e| ApiError::Config(format!("API server address: {e}")))?;
        Ok(Self {
            base,
            token: Some(Arc::new(token.trim().to_owned())),
            tls: Some(Arc::new(tls)),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.to_string().trim_end_matches('/'))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, ApiError> {
        let url = self.url(path);
        let transport = |message: String| ApiError::Transport {
            url: url.clone(),
            message,
        };
        let host = self
            .base
            .host()
            .unwrap_or("localhost")
            .trim_matches(['[', ']']);
        let port = self
            .base
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| transport(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .header(header::ACCEPT, "application/json");
        if !body.is_empty() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;
        macro_rules! exchange {
            ($io:expr) => {{
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new($io))
                    .await
                    .map_err(|e| transport(e.to_string()))?;
                tokio::spawn(conn);
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| transport(e.to_string()))?
            }};
        }
        let resp = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| transport(format!("server name: {e}")))?;
                let io = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| transport(format!("TLS: {e}")))?;
                exchange!(io)
            }
            None => exchange!(tcp),
        };
        Ok(resp)
    }

    /// A JSON response, read whole; non-2xx statuses are errors with the
    /// API's message.
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        let url = self.url(path);
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let work = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| ApiError::Transport {
                    url: url.clone(),
                    message: e.to_string(),
                })?
                .to_bytes();
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::Transport {
                    url: url.clone(),
                    message: format!("response is not JSON: {e}"),
                })?;
            if !status.is_success() {
                return Err(ApiError::Status {
                    url: url.clone(),
                    status,
                    message: value["message"].as_str().unwrap_or("").to_owned(),
                });
            }
            Ok(value)
        };
        tokio::time::timeout(DEFAULT_REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| ApiError::Transport {
                url: url.clone(),
                message: format!("no answer within {DEFAULT_REQUEST_TIMEOUT:?}"),
            })?
    }

    /// A watch: the response's lines, one JSON event each.
    pub async fn lines(&self, path: &str) -> Result<Lines, ApiError> {
        let url = self.url(path);
        let resp = tokio::time::timeout(
            DEFAULT_REQUEST_TIMEOUT,
            self.send("GET", path, Bytes::new()),
        )
        .await
        .map_err(|_| ApiError::Transport {
            url: url.clone(),
            message: "no answer to the watch".into(),
        })??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(ApiError::Status {
                url,
                status,
                message,
            });
        }
        Ok(Lines {
            body: resp.into_body(),
            buf: BytesMut::new(),
            url,
        })
    }
}

/// The lines of a streaming response.
pub struct Lines {
    body: Incoming,
    buf: BytesMut,
    url: String,
}

impl Lines {
    /// The next line, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(at + 1).freeze();
                return Ok(Some(line.slice(..at)));
            }
            if self.buf.len() > MAX_LINE_BYTES {
                return Err(ApiError::Transport {
                    url: self.url.clone(),
                    message: format!("a watch event is longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            match self.body.frame().await {
                None => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let rest = self.buf.split().freeze();
                    return Ok(Some(rest));
                }
                Some(Err(e)) => {
                    return Err(ApiError::Transport {
                        url: self.url.clone(),
                        message: e.to_string(),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
