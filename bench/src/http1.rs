//! Just enough HTTP/1.1 for the generator and the upstream: fixed requests,
//! `Content-Length` bodies, keep-alive. Everything read is bounded.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The request every scenario sends: keep-alive is HTTP/1.1's default.
pub const REQUEST: &[u8] = b"GET /1k HTTP/1.1\r\nHost: upstream\r\n\r\n";
/// The same request on a connection that is used once (S3).
pub const REQUEST_CLOSE: &[u8] = b"GET /1k HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n";

/// Longest header block accepted, either side.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest body accepted, either side: the scenarios move 1 KiB.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("header block larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("status {0}")]
    Status(u16),
}

/// A parsed header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the header block, including the blank line.
    pub len: usize,
    /// Status code (responses) or 0 (requests).
    pub status: u16,
    pub content_length: usize,
    /// `Connection: close` was sent.
    pub close: bool,
}

/// Parses a header block at the start of `buf`; `Ok(None)` if it is not
/// complete yet.
pub fn parse_head(buf: &[u8], response: bool) -> Result<Option<Head>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let status = if response {
        let mut parts = first.split(' ');
        if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
            return Err(HttpError::Malformed("status line"));
        }
        parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or(HttpError::Malformed("status code"))?
    } else {
        if !first.ends_with("HTTP/1.1") && !first.ends_with("HTTP/1.0") {
            return Err(HttpError::Malformed("request line"));
        }
        0
    };
    let mut content_length = 0;
    let mut close = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .parse::<usize>()
                .map_err(|_| HttpError::Malformed("content-length"))?;
            if content_length > MAX_BODY {
                return Err(HttpError::BodyTooLarge);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed("chunked bodies are not used here"));
        }
    }
    Ok(Some(Head {
        len: end + 4,
        status,
        content_length,
        close,
    }))
}

/// A read buffer that keeps bytes past the current message (pipelining).
#[derive(Debug)]
pub struct Conn<S> {
    pub stream: S,
    buf: Vec<u8>,
    filled: usize,
}

impl<S: AsyncRead + Unpin> Conn<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: vec![0; 16 * 1024],
            filled: 0,
        }
    }

    /// Reads one message (head and body) and returns its head. The bytes are
    /// consumed; the body is not kept.
    pub async fn read_message(&mut self, response: bool) -> Result<Head, HttpError> {
        let head = loop {
            if let Some(h) = parse_head(&self.buf[..self.filled], response)? {
                break h;
            }
            self.fill().await?;
        };
        let total = head.len + head.content_length;
        if self.buf.len() < total {
            self.buf.resize(total, 0);
        }
        while self.filled < total {
            self.fill().await?;
        }
        self.buf.copy_within(total..self.filled, 0);
        self.filled -= total;
        Ok(head)
    }

    /// Reads a response and checks it is a 200.
    pub async fn read_ok(&mut self) -> Result<Head, HttpError> {
        let head = self.read_message(true).await?;
        if head.status != 200 {
            return Err(HttpError::Status(head.status));
        }
        Ok(head)
    }

    async fn fill(&mut self) -> Result<(), HttpError> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= MAX_HEAD + MAX_BODY {
                return Err(HttpError::BodyTooLarge);
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        self.filled += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses_and_requests() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n\r\nxx";
        let h = parse_head(r, true).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length, 1024);
        assert_eq!(h.len, r.len() - 2);
        assert!(!h.close);
        let h = parse_head(REQUEST_CLOSE, false).unwrap().unwrap();
        assert!(h.close);
        assert_eq!(h.len, REQUEST_CLOSE.len());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n", true).unwrap().is_none());
    }

    #[test]
    fn refuses_what_it_does_not_bound() {
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1], true).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", true).is_err());
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                true
            )
            .is_err()
        );
        assert!(parse_head(b"SSH-2.0\r\n\r\n", true).is_err());
    }

    #[tokio::test]
    async fn reads_pipelined_messages() {
        let mut two = Vec::new();
        for _ in 0..2 {
            two.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
        }
        let mut c = Conn::new(&two[..]);
        assert_eq!(c.read_ok().await.unwrap().content_length, 3);
        assert_eq!(c.read_ok().await.unwrap().content_length, 3);
        assert!(matches!(c.read_ok().await, Err(HttpError::Closed)));
    }
}
