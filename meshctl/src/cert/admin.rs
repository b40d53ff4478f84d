//! Reads the certificate a running proxy holds from its admin `GET /certs`
//! (plain HTTP/1.1 on 127.0.0.1:4191 by default). The client itself
//! ([`Target`], [`get`]) also serves `meshctl policy get` (`GET /policy`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use tokio::net::TcpStream;

use super::chain::{self, MAX_INPUT_BYTES};

/// The admin path that serves the proxy's certificate (DESIGN.md).
const CERTS_PATH: &str = "/certs";
/// How much of an unexpected response body is quoted in an error.
const MAX_QUOTED_BODY: usize = 200;

/// Why the proxy admin did not give us a chain.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid --admin {url:?}: {reason} (expected e.g. http://127.0.0.1:4191)")]
    Url { url: String, reason: String },
    #[error(
        "cannot connect to the proxy admin at {addr}: {error} (is mesh-proxy running, and is {addr} its --admin address?)"
    )]
    Connect { addr: String, error: std::io::Error },
    #[error("no answer from the proxy admin at {addr} within {}s", .timeout.as_secs_f32())]
    Timeout { addr: String, timeout: Duration },
    #[error("HTTP exchange with the proxy admin at {addr} failed: {reason}")]
    Http { addr: String, reason: String },
    #[error(
        "the proxy at {addr} has no certificate yet: {reason} (it is starting, or cannot reach the control plane; see its log)"
    )]
    NoCertificate { addr: String, reason: String },
    #[error("{url} answered HTTP {status}: {body} (is this a mesh-proxy admin address?)")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered with more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} did not answer with a /certs document: {reason}")]
    Document { url: String, reason: String },
    #[error(transparent)]
    Chain(Box<super::InspectError>),
}

/// The parts of the `/certs` document meshctl uses. Identity, serial and
/// dates are deliberately ignored: they are read from the chain itself.
#[derive(Debug, Deserialize)]
struct CertsDocument {
    chain: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorDocument {
    error: String,
}

/// Where to send the request, resolved from the `--admin` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to, and the `Host` header.
    pub authority: String,
    pub path: String,
}

impl Target {
    /// `GET /certs` at `http://host:port[/prefix]` or a bare `host:port`.
    pub fn parse(url: &str) -> Result<Self, AdminError> {
        Self::endpoint(url, CERTS_PATH)
    }

    /// The admin `endpoint` (e.g. `/policy`) at `http://host:port[/prefix]`
    /// or a bare `host:port`; a URL that already ends in it is used as is.
    pub fn endpoint(url: &str, endpoint: &str) -> Result<Self, AdminError> {
        let bad = |reason: &str| AdminError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            None | Some("http") => {}
            Some("https") => return Err(bad("the proxy admin serves plain HTTP, use http://")),
            Some(_) => return Err(bad("only http:// is supported")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        // The admin has no well-known HTTP port; 80 is what a URL without one means.
        let port = uri.port_u16().unwrap_or(80);
        let prefix = uri.path().trim_end_matches('/');
        let path = if prefix.ends_with(endpoint) {
            prefix.to_string()
        } else {
            format!("{prefix}{endpoint}")
        };
        Ok(Self {
            authority: format!("{host}:{port}"),
            path,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// Fetches `/certs` from the admin at `url` and returns the chain, leaf first.
pub async fn fetch_chain(
    url: &str,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, AdminError> {
    let target = Target::parse(url)?;
    let (status, body) = get_within(&target, MAX_INPUT_BYTES as usize, timeout).await?;
    chain_from_response(&target, status, &body)
}

/// The body of `GET endpoint` at the admin `url` as text, when it answers
/// 200 (bounded by `limit` bytes and `timeout`); another status is an error
/// quoting the start of the body.
pub async fn get_text(
    url: &str,
    endpoint: &str,
    limit: usize,
    timeout: Duration,
) -> Result<String, AdminError> {
    let target = Target::endpoint(url, endpoint)?;
    let (status, body) = get_within(&target, limit, timeout).await?;
    if status != StatusCode::OK {
        return Err(AdminError::Status {
            url: target.url(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// [`get`], given up after `timeout`.
pub(crate) async fn get_within(
    target: &Target,
    limit: usize,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), AdminError> {
    tokio::time::timeout(timeout, get(target, limit))
        .await
        .map_err(|_| AdminError::Timeout {
            addr: target.authority.clone(),
            timeout,
        })?
}

/// One `GET` over a fresh connection, the body bounded by `limit` bytes.
/// The caller bounds the whole exchange in time.
pub(crate) async fn get(target: &Target, limit: usize) -> Result<(StatusCode, Bytes), AdminError> {
    let addr = &target.authority;
    let http_err = |reason: String| AdminError::Http {
        addr: addr.clone(),
        reason,
    };
    let stream = TcpStream::connect(addr.as_str())
        .await
        .map_err(|error| AdminError::Connect {
            addr: addr.clone(),
            error,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_err(e.to_string()))?;
    // The connection future drives the socket; it ends when `sender` is dropped.
    let driver = tokio::spawn(conn);
    let request = Request::get(target.path.as_str())
        .header(hyper::header::HOST, addr.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http_err(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http_err(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                AdminError::TooLarge {
                    url: target.url(),
                    limit,
                }
            } else {
                http_err(e.to_string())
            }
        })?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok((status, body))
}

/// Interprets the admin's answer per the `/certs` contract.
fn chain_from_response(
    target: &Target,
    status: StatusCode,
    body: &[u8],
) -> Result<Vec<CertificateDer<'static>>, AdminError> {
    let url = target.url();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // 503 is how the proxy says it has no certificate yet.
        let reason = serde_json::from_slice::<ErrorDocument>(body)
            .map(|d| d.error)
            .unwrap_or_else(|_| quote(body));
        return Err(AdminError::NoCertificate {
            addr: target.authority.clone(),
            reason,
        });
    }
    if status != StatusCode::OK {
        return Err(AdminError::Status {
            url,
            status: status.as_u16(),
            body: quote(body),
        });
    }
    let doc: CertsDocument = serde_json::from_slice(body).map_err(|e| AdminError::Document {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    if doc.chain.is_empty() {
        return Err(AdminError::Document {
            url,
            reason: "\"chain\" is empty".into(),
        });
    }
    let mut certs = Vec::with_capacity(doc.chain.len());
    for (i, pem) in doc.chain.iter().enumerate() {
        let origin = format!("{url} chain[{i}]");
        let parsed =
            chain::from_pem(pem.as_bytes(), &origin).map_err(|e| AdminError::Chain(Box::new(e)))?;
        certs.extend(parsed);
    }
    Ok(certs)
}

/// A short, printable excerpt of a response body for an error message.
pub(crate) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .trim()
        .chars()
        .take(MAX_QUOTED_BODY)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().count() > MAX_QUOTED_BODY {
        out.push('…');
    }
    if out.is_empty() {
        out = "(empty body)".into();
    }
    out
}

#[cfg(test)]
mod tests;
