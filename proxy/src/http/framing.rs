//! HTTP/1.1 request framing as the client sent it, before the HTTP library
//! reads it. The library resolves ambiguous framing in ways RFC 9112 allows
//! (Transfer-Encoding wins over Content-Length; identical Content-Lengths
//! collapse) and hides that it did; a proxy must not let either through
//! (request smuggling, RFC 9112 §6.3, §11.2). This scanner follows the
//! request heads and bodies of one connection and records, per request in
//! order, whether its head was ambiguous; the server refuses those with 400
//! and closes the connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::transport::inspect::{Inspected, Inspector};

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    ContentLengthAndTransferEncoding,
    RepeatedContentLength,
}

impl Ambiguity {
    pub fn message(self) -> &'static str {
        match self {
            Ambiguity::ContentLengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            Ambiguity::RepeatedContentLength => "more than one Content-Length",
        }
    }
}

/// Verdicts of the heads seen so far, in request order (`None`: clean).
#[derive(Clone, Default)]
pub struct Verdicts(Arc<Mutex<VecDeque<Option<Ambiguity>>>>);

impl Verdicts {
    /// The verdict of the next request the server handles.
    pub fn next(&self) -> Option<Ambiguity> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .flatten()
    }

    fn push(&self, v: Option<Ambiguity>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(v);
    }
}

enum State {
    Head,
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    /// A tunnel, an unparsable head or body: the library refuses or
    /// tunnels it; nothing more to follow.
    Done,
}

/// Follows the framing of the bytes a client sends.
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    head: Vec<u8>,
    max_head: usize,
    verdicts: Verdicts,
}

impl Scanner {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Fixed(n) => {
                    let k = (*n).min(data.len() as u64);
                    *n -= k;
                    data = &data[k as usize..];
                    if *n == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkData(n) => {
                    let k = (*n).min(data.len() as u64);
                    *n -= k;
                    data = &data[k as usize..];
                    if *n == 0 {
                        self.state = State::ChunkEnd;
                    }
                }
                State::Head => {
                    let Some(i) = data.iter().position(|b| *b == b'\n') else {
                        self.head.extend_from_slice(data);
                        if self.head.len() > self.max_head {
                            self.state = State::Done;
                        }
                        return;
                    };
                    self.head.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    if self.head.len() > self.max_head {
                        self.state = State::Done;
                    } else if self.head.ends_with(b"\r\n\r\n") || self.head.ends_with(b"\n\n") {
                        self.end_of_head();
                    } else if self.head == b"\r\n" || self.head == b"\n" {
                        // Empty lines before a request line are ignored (RFC 9112 §2.2).
                        self.head.clear();
                    }
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(i) = data.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(data);
                        if self.line.len() > 4096 {
                            self.state = State::Done;
                        }
                        return;
                    };
                    self.line.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        State::ChunkEnd if line.is_empty() => State::ChunkSize,
                        State::ChunkSize => chunk_size(line),
                        State::Trailers if line.is_empty() => State::Head,
                        State::Trailers => State::Trailers,
                        _ => State::Done,
                    };
                }
            }
        }
    }

    fn end_of_head(&mut self) {
        let head = std::mem::take(&mut self.head);
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.lines();
        let request_line = lines.next().unwrap_or("");
        let mut lengths = Vec::new();
        let mut te = false;
        let mut upgrade = false;
        for l in lines {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "content-length" => lengths.push(value.trim().to_string()),
                "transfer-encoding" => te = true,
                "upgrade" => upgrade = true,
                _ => {}
            }
        }
        let verdict = if te && !lengths.is_empty() {
            Some(Ambiguity::ContentLengthAndTransferEncoding)
        } else if lengths.len() > 1 {
            Some(Ambiguity::RepeatedContentLength)
        } else {
            None
        };
        self.verdicts.push(verdict);
        self.state = if verdict.is_some() || upgrade || request_line.starts_with("CONNECT ") {
            // Refused (the connection closes) or a tunnel: nothing more to follow.
            State::Done
        } else if te {
            State::ChunkSize
        } else if let Some(n) = lengths.first().and_then(|v| v.parse::<u64>().ok()) {
            if n == 0 { State::Head } else { State::Fixed(n) }
        } else if lengths.is_empty() {
            State::Head
        } else {
            State::Done
        };
    }
}

fn chunk_size(line: &[u8]) -> State {
    let hex = line.split(|b| *b == b';').next().unwrap_or(b"");
    let hex = std::str::from_utf8(hex).unwrap_or("").trim();
    match u64::from_str_radix(hex, 16) {
        Ok(0) => State::Trailers,
        Ok(n) => State::ChunkData(n),
        Err(_) => State::Done,
    }
}

/// The client side of an HTTP/1.1 server connection, its framing followed.
pub fn follow<S>(inner: S, max_head: usize) -> (Inspected<S, Scanner>, Verdicts) {
    let verdicts = Verdicts::default();
    let scanner = Scanner {
        state: State::Head,
        line: Vec::new(),
        head: Vec::new(),
        max_head,
        verdicts: verdicts.clone(),
    };
    (Inspected::new(inner, scanner), verdicts)
}

impl Inspector for Scanner {
    fn inspect(&mut self, bytes: &[u8]) {
        self.feed(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(bytes: &[u8], split: usize) -> Vec<Option<Ambiguity>> {
        let v = Verdicts::default();
        let mut s = Scanner {
            state: State::Head,
            line: Vec::new(),
            head: Vec::new(),
            max_head: 64 * 1024,
            verdicts: v.clone(),
        };
        for chunk in bytes.chunks(split) {
            s.feed(chunk);
        }
        v.0.lock().unwrap().iter().copied().collect()
    }

    // Heads are found across bodies of every framing, split anywhere.
    #[test]
    fn follows_pipelined_requests_through_their_bodies() {
        let bytes = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        for split in [1, 3, 7, 1000] {
            assert_eq!(
                verdicts(bytes, split),
                [None, None, Some(Ambiguity::RepeatedContentLength)],
                "split {split}"
            );
        }
    }

    // RFC 9112 §6.3: both headers is a smuggling attempt, whatever the order.
    #[test]
    fn content_length_with_transfer_encoding_is_ambiguous() {
        for h in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "transfer-encoding: chunked\r\ncontent-length: 5",
        ] {
            let bytes = format!("POST / HTTP/1.1\r\n{h}\r\n\r\n0\r\n\r\n");
            assert_eq!(
                verdicts(bytes.as_bytes(), 4),
                [Some(Ambiguity::ContentLengthAndTransferEncoding)]
            );
        }
    }

    // A body that looks like a request is not a request.
    #[test]
    fn body_bytes_are_not_heads() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nab";
        assert_eq!(verdicts(bytes, 5).len(), 1);
    }
}
