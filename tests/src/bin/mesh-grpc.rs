//! mesh-grpc: a gRPC upstream that stalls, and a gRPC client, for timeout
//! tests in the lab. Both speak gRPC over cleartext HTTP/2 with hyper
//! directly: tonic enforces `grpc-timeout` itself at both ends, and these
//! tests must see the proxy's deadline, not the libraries'.
//!
//! `mesh-grpc stall ADDR` answers every call to palisade.test.v1.Echo after
//! the request's `sleep_ms` (proto/echo.proto), ignoring `grpc-timeout`;
//! any other HTTP/2 request after its `x-sleep-ms` header.
//! `mesh-grpc call URL [--sleep-ms N] [--timeout-ms T] [--method M]` makes
//! one unary call (to `palisade.test.v1.Echo/M`, `Unary` unless given; with
//! `grpc-timeout: Tm` when given) and prints
//! `<grpc-status> <elapsed ms> <grpc-message>`; -1 when no answer came.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tests::grpc::pb::Msg;
use prost::Message;

const SERVICE: &str = "palisade.test.v1.Echo";

fn usage() -> ! {
    eprintln!(
        "usage: mesh-grpc stall ADDR | call URL [--sleep-ms N] [--timeout-ms T] [--method M]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = mesh_tests::runtime();
    match args.first().map(String::as_str) {
        Some("stall") => {
            let Some(addr) = args
                .get(1)
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            else {
                usage()
            };
            if let Err(e) = rt.block_on(stall(addr)) {
                eprintln!("mesh-grpc: {e}");
                std::process::exit(1);
            }
        }
        Some("call") => {
            let Some(url) = args.get(1) else { usage() };
            let mut sleep_ms = 0;
            let mut timeout = None;
            let mut method = "Unary".to_string();
            let mut rest = args[2..].iter();
            while let Some(flag) = rest.next() {
                let Some(value) = rest.next() else { usage() };
                let n = || value.parse::<u64>().unwrap_or_else(|_| usage());
                match flag.as_str() {
                    "--sleep-ms" => sleep_ms = n(),
                    "--timeout-ms" => timeout = Some(n()),
                    "--method" => method = value.clone(),
                    _ => usage(),
                }
            }
            let path = format!("/{SERVICE}/{method}");
            let (status, took, message) = rt
                .block_on(call(url, &path, sleep_ms, timeout))
                .unwrap_or_else(|e| ("-1".into(), Duration::ZERO, e));
            println!("{status} {} {message}", took.as_millis());
        }
        _ => usage(),
    }
}

/// A message in gRPC's length-prefixed framing.
fn frame(m: &Msg) -> Bytes {
    let body = m.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(&body);
    b.freeze()
}

async fn stall(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("mesh-grpc: stalling upstream on {addr}");
    loop {
        let (conn, _) = listener.accept().await?;
        let _ = conn.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let header = req
                        .headers()
                        .get("x-sleep-ms")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let sleep_ms = header.unwrap_or_else(|| {
                        (body.len() >= 5)
                            .then(|| Msg::decode(&body[5..]).ok())
                            .flatten()
                            .map_or(0, |m| m.sleep_ms)
                    });
                    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
                    let resp = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "0")
                        .body(Full::new(Bytes::new()))
                        .unwrap_or_default();
                    Ok::<_, Infallible>(resp)
                },
            );
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(conn), svc)
                .await;
        });
    }
}

/// The call's grpc-status, its time from sending the request (the
/// connection is made before: a deadline runs from the call), and its
/// grpc-message.
async fn call(
    url: &str,
    path: &str,
    sleep_ms: u64,
    timeout: Option<u64>,
) -> Result<(String, Duration, String), String> {
    let uri: http::Uri = format!("{url}{path}").parse().map_err(|e| format!("{e}"))?;
    let authority = uri.authority().ok_or("no host")?.to_string();
    let conn = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.set_nodelay(true);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(conn))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = timeout {
        req = req.header("grpc-timeout", format!("{t}m"));
    }
    let req = req
        .body(Full::new(frame(&Msg {
            text: "call".into(),
            sleep_ms,
            ..Default::default()
        })))
        .map_err(|e| e.to_string())?;
    send.ready().await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let mut status = parts.headers.get("grpc-status").cloned();
    let mut message = parts.headers.get("grpc-message").cloned();
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    if let Some(t) = collected.trailers() {
        status = status.or_else(|| t.get("grpc-status").cloned());
        message = message.or_else(|| t.get("grpc-message").cloned());
    }
    let took = started.elapsed();
    let _ = collected.to_bytes().remaining();
    let text = |v: Option<http::HeaderValue>| {
        v.and_then(|v| v.to_str().ok().map(str::to_string))
            .unwrap_or_default()
    };
    Ok((text(status), took, text(message)))
}
