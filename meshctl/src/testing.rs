//! Test helpers shared by the modules that talk to a proxy admin.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-shot fake proxy admin on a real socket: answers the first request
/// with `response` (raw HTTP/1.1) and hands back the request head it received.
pub async fn admin_answering(response: Vec<u8>) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before sending a request");
            head.extend_from_slice(&buf[..n]);
        }
        // The client may stop reading once it has had enough.
        let _ = socket.write_all(&response).await;
        let _ = socket.shutdown().await;
        String::from_utf8(head).unwrap()
    });
    (addr, task)
}

/// A complete HTTP/1.1 response with a JSON body.
pub fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
