use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

#[tokio::test]
async fn half_close_keeps_the_other_direction() {
    let (mut client, a) = duplex(1024);
    let (b, mut server) = duplex(1024);
    let task = tokio::spawn(relay(a, b, Duration::from_secs(5)));
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");
    // The client has finished sending; the response still flows back.
    server.write_all(b"response").await.unwrap();
    server.shutdown().await.unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"response");
    assert_eq!(task.await.unwrap().unwrap(), (7, 8));
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed() {
    let (_client, a) = duplex(1024);
    let (b, _server) = duplex(1024);
    let err = relay(a, b, Duration::from_secs(30)).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn traffic_in_one_direction_keeps_the_connection() {
    let (mut client, a) = duplex(1024);
    let (b, mut server) = duplex(1024);
    let task = tokio::spawn(relay(a, b, Duration::from_secs(30)));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.unwrap();
    }
    assert!(
        !task.is_finished(),
        "active connection must not hit the idle timeout"
    );
}

#[tokio::test]
async fn bytes_survive_a_writer_that_takes_less_than_was_read() {
    // Small pipes: the writer side takes a few hundred bytes at a time, so
    // most reads leave a remainder that must be written later, in order.
    let (mut client, a) = duplex(300);
    let (b, mut server) = duplex(700);
    let task = tokio::spawn(relay(a, b, Duration::from_secs(5)));
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        client
    });
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "relayed bytes differ from the bytes sent");
    drop(server);
    let _client = writer.await.unwrap();
    let (ab, ba) = task.await.unwrap().unwrap();
    assert_eq!((ab, ba), (1_000_000, 0));
}
