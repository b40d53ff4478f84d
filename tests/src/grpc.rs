//! The gRPC test service (proto/echo.proto), run in the test process as the
//! app behind a proxy.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("palisade.test.v1");
}

use pb::Msg;
use pb::echo_server::{Echo, EchoServer};

/// Unary calls waiting in `sleep_ms` now: tests wait on this, not on time.
pub static SLEEPING: AtomicUsize = AtomicUsize::new(0);

/// Every RPC shape; metadata `x-test: <text>` on unary replies, and a
/// trailer `x-test-trailer` on failures.
#[derive(Default)]
pub struct EchoService;

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let deadline = req.metadata().get("grpc-timeout").cloned();
        let m = req.into_inner();
        if m.sleep_ms > 0 {
            // Counted down on drop too: a call cancelled by its deadline or
            // by a reset is dropped mid-sleep.
            struct Sleeping;
            impl Drop for Sleeping {
                fn drop(&mut self) {
                    SLEEPING.fetch_sub(1, Ordering::SeqCst);
                }
            }
            SLEEPING.fetch_add(1, Ordering::SeqCst);
            let _sleeping = Sleeping;
            tokio::time::sleep(Duration::from_millis(m.sleep_ms)).await;
        }
        if m.fail_code != 0 {
            let mut s = Status::new(
                tonic::Code::from(m.fail_code as i32),
                format!("failed: {}", m.text),
            );
            s.metadata_mut().insert(
                "x-test-trailer",
                "yes".parse().map_err(|_| Status::internal("metadata"))?,
            );
            return Err(s);
        }
        let mut resp = Response::new(Msg {
            text: m.text.clone(),
            ..Default::default()
        });
        if let Ok(v) = m.text.parse() {
            resp.metadata_mut().insert("x-test", v);
        }
        // What deadline reached the app, to show the proxies pass it on.
        if let Some(d) = deadline {
            resp.metadata_mut().insert("x-saw-grpc-timeout", d);
        }
        Ok(resp)
    }

    type ServerStreamStream = MsgStream;
    async fn server_stream(&self, req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
        let m = req.into_inner();
        let s = tokio_stream::iter((0..m.count).map(move |i| {
            Ok(Msg {
                text: format!("{}-{i}", m.text),
                ..Default::default()
            })
        }));
        Ok(Response::new(Box::pin(s)))
    }

    async fn client_stream(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut s = req.into_inner();
        let mut text = String::new();
        let mut count = 0;
        while let Some(m) = s.next().await {
            text.push_str(&m?.text);
            count += 1;
        }
        Ok(Response::new(Msg {
            text,
            count,
            ..Default::default()
        }))
    }

    type BidiStream = MsgStream;
    async fn bidi(&self, req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let s = req.into_inner().map(|m| {
            m.map(|m| Msg {
                text: format!("echo:{}", m.text),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
}

/// Serves the test service on a fresh loopback port until the runtime ends.
pub async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );
    addr
}
