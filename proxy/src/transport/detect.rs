//! Protocol detection: a bounded, timed look at the first bytes, and a stream
//! that replays them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Bytes read for detection; enough for any HTTP/1 method and the h2 preface.
const DETECT_BYTES: usize = 24;

/// What the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (the `PRI * HTTP/2.0` preface).
    Http2,
    /// Anything else, or a client that said nothing in time (server-first
    /// protocols): relayed as opaque TCP.
    Opaque,
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"PATCH ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Classifies a prefix. `None`: not enough bytes to tell yet.
pub fn classify(prefix: &[u8]) -> Option<Protocol> {
    if prefix.is_empty() {
        return None;
    }
    let mut undecided = false;
    for m in METHODS.iter().chain(std::iter::once(&H2_PREFACE)) {
        let n = prefix.len().min(m.len());
        if prefix[..n] == m[..n] {
            if prefix.len() >= m.len() {
                return Some(if *m == H2_PREFACE {
                    Protocol::Http2
                } else {
                    Protocol::Http1
                });
            }
            undecided = true;
        }
    }
    if undecided {
        None
    } else {
        Some(Protocol::Opaque)
    }
}

/// Reads up to [`DETECT_BYTES`] within `timeout` and classifies them.
/// Returns the protocol and the bytes read (to be replayed).
pub async fn detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> io::Result<(Protocol, Vec<u8>)> {
    let mut buf = vec![0u8; DETECT_BYTES];
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[n..])).await {
            Ok(Ok(0)) => {
                buf.truncate(n);
                return Ok((Protocol::Opaque, buf));
            }
            Ok(Ok(k)) => {
                n += k;
                if let Some(p) = classify(&buf[..n]) {
                    buf.truncate(n);
                    return Ok((p, buf));
                }
                if n == buf.len() {
                    buf.truncate(n);
                    return Ok((Protocol::Opaque, buf));
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                buf.truncate(n);
                return Ok((Protocol::Opaque, buf));
            }
        }
    }
}

/// A stream that first yields `prefix`, then reads from `inner`.
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"DELETE /x"), Some(Protocol::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM"), Some(Protocol::Http2));
        assert_eq!(classify(b"GE"), None, "could still be GET");
        assert_eq!(classify(b"P"), None, "POST, PUT, PATCH or PRI");
        assert_eq!(classify(b"\x16\x03\x01"), Some(Protocol::Opaque));
        assert_eq!(classify(b"GETX"), Some(Protocol::Opaque));
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Protocol::Opaque));
        assert_eq!(classify(b""), None);
    }

    #[tokio::test]
    async fn rewind_replays_then_continues() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET / HTTP/1.1\r\nrest")
            .await
            .unwrap();
        drop(a);
        let mut b = b;
        let (p, prefix) = detect(&mut b, Duration::from_secs(1)).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        let mut r = Rewind::new(prefix, b);
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\nrest");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_opaque_after_timeout() {
        let (_a, mut b) = tokio::io::duplex(64);
        let (p, prefix) = detect(&mut b, Duration::from_millis(500)).await.unwrap();
        assert_eq!((p, prefix.len()), (Protocol::Opaque, 0));
    }
}
