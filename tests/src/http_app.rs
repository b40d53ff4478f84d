//! An HTTP test app run in the test process behind a proxy: it speaks
//! HTTP/1.1 and HTTP/2 (prior knowledge), tells what it received, reads
//! uploads slowly, and echoes WebSocket messages.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::protocol::Role;

/// How long the slow reader waits after each body frame of an upload.
const SLOW_READ_PAUSE: Duration = Duration::from_micros(300);

/// An app serving HTTPS itself: its certificate (PEM) is for `host`, and it
/// offers ALPN `h2` and `http/1.1`.
pub struct TlsApp {
    pub addr: SocketAddr,
    pub host: String,
    pub cert_pem: String,
}

/// Serves HTTPS (HTTP/2 or HTTP/1.1 by ALPN) on a fresh loopback port until
/// the runtime ends, with a self-signed certificate for `host`.
pub async fn serve_tls(host: &str) -> TlsApp {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let mut cfg = rustls::ServerConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der.into())
        .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_connection(tls).await;
                }
            });
        }
    });
    TlsApp {
        addr,
        host: host.to_string(),
        cert_pem: cert.pem(),
    }
}

/// Serves on a fresh loopback port until the runtime ends.
pub async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_connection(tcp));
        }
    });
    addr
}

/// HTTP/1.1 or HTTP/2 (prior knowledge or ALPN), upgrades allowed.
async fn serve_connection<I>(io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(handle);
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    match req.uri().path() {
        "/upload" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            n += d.len() as u64;
                        }
                    }
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("body: {e}"))),
                }
                tokio::time::sleep(SLOW_READ_PAUSE).await;
            }
            Ok(text(StatusCode::OK, format!("received {n}\n")))
        }
        "/ws" => {
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    "not a websocket request\n".into(),
                ));
            };
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(up),
                    Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut r = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
            let h = r.headers_mut();
            h.insert("connection", "upgrade".parse().expect("static"));
            h.insert("upgrade", "websocket".parse().expect("static"));
            h.insert("sec-websocket-accept", accept.parse().expect("base64"));
            Ok(r)
        }
        _ => {
            let mut out = format!(
                "{} {} {:?}\n",
                req.method(),
                req.uri().path(),
                req.version()
            );
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Ok(text(StatusCode::OK, out))
        }
    }
}
