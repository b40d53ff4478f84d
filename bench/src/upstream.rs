//! The upstream application behind every pair: an HTTP/1.1 server that
//! answers every request with 1 KiB (keep-alive), and a sink for bulk TCP.
//! Kept as cheap as possible so the proxies, not the upstream, are measured.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::http1::{Conn, HttpError};

/// The response body size of every scenario.
pub const BODY_LEN: usize = 1024;
/// Read size of the bulk sink: large reads keep its syscall count low.
const SINK_READ: usize = 256 * 1024;

/// The one response, built once.
pub fn response() -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY_LEN}\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', BODY_LEN));
    r
}

/// Serves HTTP on `http` and the bulk sink on `sink` until the process ends.
pub async fn serve(http: TcpListener, sink: TcpListener) -> anyhow::Result<()> {
    let resp: &'static [u8] = Box::leak(response().into_boxed_slice());
    let h = tokio::spawn(async move {
        loop {
            match http.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve_http(s, resp));
                }
                Err(e) => accept_error(e).await,
            }
        }
    });
    let k = tokio::spawn(async move {
        loop {
            match sink.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(drain(s));
                }
                Err(e) => accept_error(e).await,
            }
        }
    });
    let _ = tokio::join!(h, k);
    Ok(())
}

/// Out of descriptors (S6 near the limit): back off a moment rather than spin.
async fn accept_error(e: std::io::Error) {
    eprintln!("upstream: accept: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
}

async fn serve_http(s: TcpStream, resp: &'static [u8]) {
    let mut conn = Conn::new(s);
    loop {
        let head = match conn.read_message(false).await {
            Ok(h) => h,
            Err(HttpError::Closed) => return,
            Err(_) => return,
        };
        if conn.stream.write_all(resp).await.is_err() {
            return;
        }
        if head.close {
            let _ = conn.stream.shutdown().await;
            return;
        }
    }
}

async fn drain(mut s: TcpStream) {
    let mut buf = vec![0u8; SINK_READ];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Binds both listeners (a port conflict is an error at start, not later).
pub async fn bind(
    http: SocketAddr,
    sink: SocketAddr,
) -> anyhow::Result<(TcpListener, TcpListener)> {
    use anyhow::Context;
    let h = TcpListener::bind(http)
        .await
        .with_context(|| format!("cannot listen on {http}"))?;
    let s = TcpListener::bind(sink)
        .await
        .with_context(|| format!("cannot listen on {sink}"))?;
    Ok((h, s))
}
