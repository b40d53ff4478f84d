//! Recorded Kubernetes API responses, replayed by a small HTTP server that
//! says it is a recording in every response (`x-palisade-recording`). Each
//! request takes the first unused exchange with its method and path; a
//! watch with nothing left stays open and idle, as a quiet watch does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Replays a recording: each request takes the first unused exchange with
/// its method and path; a watch with nothing left stays open and idle, as a
/// quiet watch does. Every request is logged for the test to inspect.
pub struct Replay {
    exchanges: Mutex<Vec<Option<Value>>>,
    requests: Mutex<Vec<String>>,
    bodies: Mutex<Vec<Value>>,
}

impl Replay {
    /// Every request line received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Every JSON request body received, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Serves the recording at `path` on a loopback port.
pub async fn serve(path: &Path) -> (SocketAddr, Arc<Replay>) {
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let replay = Arc::new(Replay {
        exchanges: Mutex::new(
            rec["exchanges"]
                .as_array()
                .unwrap()
                .iter()
                .cloned()
                .map(Some)
                .collect(),
        ),
        requests: Mutex::new(Vec::new()),
        bodies: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = replay.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let r = r.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(req, r.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, replay)
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    r: Arc<Replay>,
) -> Result<hyper::Response<Body>, Infallible> {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    );
    r.requests.lock().unwrap().push(line.clone());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        r.bodies.lock().unwrap().push(v);
    }
    let found = {
        let mut ex = r.exchanges.lock().unwrap();
        ex.iter_mut()
            .find(|e| e.as_ref().is_some_and(|e| e["request"] == line))
            .and_then(Option::take)
    };
    let builder = hyper::Response::builder()
        .header("content-type", "application/json")
        .header(
            "x-palisade-recording",
            "replayed from a recording; not a Kubernetes API server",
        );
    let Some(ex) = found else {
        if line.contains("watch=1") {
            // An idle watch: headers, then nothing until the test ends.
            let (_keep, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(_keep);
            });
            let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            return Ok(builder.status(200).body(BodyExt::boxed(body)).unwrap());
        }
        let body = http_body_util::Full::new(Bytes::from(
            r#"{"kind":"Status","code":404,"message":"not in the recording"}"#,
        ));
        return Ok(builder.status(404).body(BodyExt::boxed(body)).unwrap());
    };
    let status = ex["status"].as_u64().unwrap() as u16;
    let text = match ex.get("events") {
        Some(events) => events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{e}\n"))
            .collect::<String>(),
        None => ex["body"].to_string(),
    };
    Ok(builder
        .status(status)
        .body(BodyExt::boxed(http_body_util::Full::new(Bytes::from(text))))
        .unwrap())
}

/// An API that nothing answers: a loopback port bound and released, so a
/// connection is refused at once.
pub fn unreachable() -> crate::Api {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    crate::Api::plain(&format!("http://127.0.0.1:{port}")).unwrap_or_else(|e| panic!("{e}"))
}
