//! App probes under STRICT mTLS: the injector rewrites each app container's
//! `httpGet` probe to the proxy's admin port at
//! `/app-health/<container>/<livez|readyz|startupz>` and lists the original
//! probes in `MESH_APP_PROBES` (JSON, injector/src/probes.rs). The admin
//! endpoint answers such a path by making the original probe request to the
//! app where inbound traffic goes (`--app-addr`, loopback by default, never
//! redirected) and passing on its status, as the kubelet would have seen
//! it. Only the listed paths are probed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_admin::Reply;
use serde::Deserialize;

/// The admin paths the injector rewrites probes to.
pub const PATH_PREFIX: &str = "/app-health/";
/// A probe gets this long; the kubelet's own `timeoutSeconds` (1 s by
/// default) usually ends it first.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// More probes than this is not a pod (three per container).
const MAX_PROBES: usize = 256;

/// One rewritten probe as the injector lists it.
#[derive(Debug, Deserialize)]
struct Listed {
    path: String,
    port: i64,
    #[serde(default)]
    original: HttpGet,
}

/// The parts of the original `httpGet` the probe request needs.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpGet {
    path: Option<String>,
    scheme: Option<String>,
    #[serde(default)]
    http_headers: Vec<ProbeHeader>,
}

#[derive(Debug, Deserialize)]
struct ProbeHeader {
    name: String,
    value: String,
}

/// One probe, checked.
#[derive(Debug)]
struct Probe {
    path: String,
    port: u16,
    https: bool,
    target: http::uri::PathAndQuery,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The probes of this pod, from `MESH_APP_PROBES`.
#[derive(Debug)]
pub struct AppProbes {
    /// Where the app is reached (`--app-addr`).
    app: std::net::IpAddr,
    probes: Vec<Probe>,
}

impl AppProbes {
    /// Parses and checks `MESH_APP_PROBES`; an error names the probe and
    /// the field.
    pub fn parse(app: std::net::IpAddr, json: &str) -> Result<Self, String> {
        let listed: Vec<Listed> =
            serde_json::from_str(json).map_err(|e| format!("not a list of probes: {e}"))?;
        if listed.len() > MAX_PROBES {
            return Err(format!("more than {MAX_PROBES} probes"));
        }
        let mut probes = Vec::with_capacity(listed.len());
        for l in listed {
            let name = l.path.clone();
            let bad = |what: String| format!("probe {name:?}: {what}");
            if !l.path.starts_with(PATH_PREFIX) || l.path.len() == PATH_PREFIX.len() {
                return Err(bad(format!("path must start with {PATH_PREFIX}")));
            }
            let port = u16::try_from(l.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("port {} is not 1-65535", l.port)))?;
            let https = match l.original.scheme.as_deref().map(str::to_ascii_uppercase) {
                None => false,
                Some(s) if s == "HTTP" => false,
                Some(s) if s == "HTTPS" => true,
                Some(s) => return Err(bad(format!("scheme {s:?} is not HTTP or HTTPS"))),
            };
            let raw = l.original.path.unwrap_or_else(|| "/".to_owned());
            let raw = if raw.starts_with('/') {
                raw
            } else {
                format!("/{raw}")
            };
            let target = http::uri::PathAndQuery::try_from(raw.as_str())
                .map_err(|_| bad(format!("path {raw:?} is not a request target")))?;
            let mut headers = Vec::new();
            for h in l.original.http_headers {
                let n = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| bad(format!("header name {:?}", h.name)))?;
                let v = HeaderValue::from_str(&h.value)
                    .map_err(|_| bad(format!("header {:?} has an invalid value", h.name)))?;
                headers.push((n, v));
            }
            if probes.iter().any(|p: &Probe| p.path == l.path) {
                return Err(bad("listed twice".into()));
            }
            probes.push(Probe {
                path: l.path,
                port,
                https,
                target,
                headers,
            });
        }
        Ok(Self { app, probes })
    }

    /// No probes (the pod has no rewritten ones).
    pub fn none(app: std::net::IpAddr) -> Self {
        Self {
            app,
            probes: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Whether `path` is one of the listed probes.
    pub fn handles(&self, path: &str) -> bool {
        self.probes.iter().any(|p| p.path == path)
    }

    /// Probes the app for `path` (one of the listed ones): its status when
    /// it answers, 503 when it does not.
    pub async fn check(self: Arc<Self>, path: String) -> Reply {
        let Some(probe) = self.probes.iter().find(|p| p.path == path) else {
            return Reply::not_found();
        };
        match tokio::time::timeout(PROBE_TIMEOUT, probe.send(self.app)).await {
            Ok(Ok(status)) => {
                metrics::counter!("mesh_app_probes_total", "result" => if status.is_success() || status.is_redirection() { "success" } else { "failure" }).increment(1);
                Reply::text(status, format!("app answered {}\n", status.as_u16()))
            }
            Ok(Err(e)) => {
                metrics::counter!("mesh_app_probes_total", "result" => "unreachable").increment(1);
                Reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("app probe on port {} failed: {e}\n", probe.port),
                )
            }
            Err(_) => {
                metrics::counter!("mesh_app_probes_total", "result" => "timeout").increment(1);
                Reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("app probe on port {} timed out\n", probe.port),
                )
            }
        }
    }
}

impl Probe {
    async fn send(&self, app: std::net::IpAddr) -> Result<StatusCode, String> {
        let addr = std::net::SocketAddr::new(app, self.port);
        let tcp = crate::http::client::connect_tcp(addr, PROBE_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if self.https {
            let tls = tokio_rustls::TlsConnector::from(probe_tls()?)
                .connect(rustls_pki_types::ServerName::from(app), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            self.request(addr, tls).await
        } else {
            self.request(addr, tcp).await
        }
    }

    async fn request<S>(&self, addr: std::net::SocketAddr, stream: S) -> Result<StatusCode, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::get(self.target.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
        req.headers_mut().insert(http::header::HOST, host);
        req.headers_mut().insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("palisade-app-probe"),
        );
        for (n, v) in &self.headers {
            req.headers_mut().insert(n.clone(), v.clone());
        }
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // The body is read and dropped, as the kubelet does.
        let _ = resp.into_body().collect().await;
        Ok(status)
    }
}

/// TLS for an HTTPS probe: like the kubelet, the app's certificate is not
/// verified (the probe asks whether the app answers, not who it is).
fn probe_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = mesh_identity::tls::provider();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    // The value as injector/src/probes.rs writes it (k8s-openapi's
    // HTTPGetAction: camelCase, the port as written).
    const LISTED: &str = r#"[
        {"path":"/app-health/web/livez","container":"web","kind":"livenessProbe","port":8080,
         "original":{"path":"/healthz","port":"http","scheme":"HTTP",
                     "httpHeaders":[{"name":"x-probe","value":"1"}]}},
        {"path":"/app-health/web/readyz","container":"web","kind":"readinessProbe","port":8443,
         "original":{"path":"ready","port":8443,"scheme":"HTTPS"}}
    ]"#;

    #[test]
    fn the_injectors_list_parses() {
        let p = AppProbes::parse(LOOPBACK, LISTED).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.handles("/app-health/web/livez"));
        assert!(!p.handles("/app-health/web/startupz"));
        let live = &p.probes[0];
        assert_eq!(
            (live.port, live.https, live.target.as_str()),
            (8080, false, "/healthz")
        );
        assert_eq!(live.headers.len(), 1);
        let ready = &p.probes[1];
        assert_eq!((ready.https, ready.target.as_str()), (true, "/ready"));
    }

    #[test]
    fn a_bad_list_is_refused_naming_the_probe() {
        let one = |probe: &str| AppProbes::parse(LOOPBACK, &format!("[{probe}]")).unwrap_err();
        assert!(
            AppProbes::parse(LOOPBACK, "{")
                .unwrap_err()
                .contains("not a list")
        );
        let e = one(r#"{"path":"/ready","port":80}"#);
        assert!(
            e.contains("\"/ready\"") && e.contains("/app-health/"),
            "{e}"
        );
        let e = one(r#"{"path":"/app-health/a/livez","port":0}"#);
        assert!(e.contains("port 0"), "{e}");
        let e = one(r#"{"path":"/app-health/a/livez","port":70000}"#);
        assert!(e.contains("port 70000"), "{e}");
        let e = one(r#"{"path":"/app-health/a/livez","port":80,"original":{"scheme":"TCP"}}"#);
        assert!(e.contains("scheme"), "{e}");
        let e = one(
            r#"{"path":"/app-health/a/livez","port":80,"original":{"httpHeaders":[{"name":"bad name","value":"x"}]}}"#,
        );
        assert!(e.contains("header name"), "{e}");
        let twice = r#"[{"path":"/app-health/a/livez","port":80},{"path":"/app-health/a/livez","port":81}]"#;
        assert!(
            AppProbes::parse(LOOPBACK, twice)
                .unwrap_err()
                .contains("twice")
        );
    }
}
