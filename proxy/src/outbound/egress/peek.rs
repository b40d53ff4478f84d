//! The name a connection leaving the mesh asks for, read from its first
//! bytes before anything is forwarded: the TLS ClientHello's server name
//! (parsed by rustls), or the `Host` of an HTTP/1.1 request head (parsed by
//! httparse). The bytes read are kept, to be replayed to the destination
//! once the connection is allowed.
//!
//! A client that says nothing within the detect timeout speaks a
//! server-first protocol: it is plain TCP, with no name. HTTP/2 with prior
//! knowledge is HTTP without a name here (its `:authority` sits in an
//! HPACK-compressed frame): only address rules can allow it.

use std::io;
use std::time::Duration;

use mesh_policy::resource::egress::EgressProtocol;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::transport::detect::{self, Protocol};

/// Most bytes read while looking for the name: a ClientHello (even a
/// post-quantum one) or a request head fits well within.
pub const MAX_PEEK: usize = 16 * 1024;

/// Headers an HTTP/1.1 request head may carry for the Host to be found.
const MAX_HEADERS: usize = 100;

/// What the first bytes said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub protocol: EgressProtocol,
    /// Lowercase, without a port or a trailing dot.
    pub host: Option<String>,
    /// The bytes read, to be sent on first.
    pub prefix: Vec<u8>,
    /// Why the bytes are not what they claim to be (a broken ClientHello,
    /// a malformed head, two Hosts): the connection is refused.
    pub malformed: Option<&'static str>,
}

/// What a prefix is so far.
enum Step {
    More,
    Done(EgressProtocol, Option<String>, Option<&'static str>),
}

fn step(buf: &[u8]) -> Step {
    if buf.is_empty() {
        return Step::More;
    }
    // A TLS handshake record: content type 22.
    if buf[0] == 0x16 {
        return tls(buf);
    }
    match detect::classify(buf) {
        None => Step::More,
        Some(Protocol::Http1) => http1(buf),
        Some(Protocol::Http2) => Step::Done(EgressProtocol::Http, None, None),
        Some(Protocol::Opaque) => Step::Done(EgressProtocol::Tcp, None, None),
    }
}

fn tls(buf: &[u8]) -> Step {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = buf;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Step::Done(EgressProtocol::Tls, None, Some("malformed TLS record")),
        }
    }
    match acceptor.accept() {
        Ok(None) => Step::More,
        Ok(Some(accepted)) => {
            let host = accepted
                .client_hello()
                .server_name()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
            Step::Done(EgressProtocol::Tls, host, None)
        }
        Err(_) => Step::Done(EgressProtocol::Tls, None, Some("malformed TLS ClientHello")),
    }
}

fn http1(buf: &[u8]) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Step::More,
        Err(_) => Step::Done(
            EgressProtocol::Http,
            None,
            Some("malformed HTTP request head"),
        ),
        Ok(httparse::Status::Complete(_)) => {
            let mut hosts = req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("host"));
            let (Some(host), None) = (hosts.next(), hosts.next()) else {
                // RFC 9112 §3.2: exactly one Host.
                return Step::Done(
                    EgressProtocol::Http,
                    None,
                    Some("an HTTP/1.1 request needs exactly one Host"),
                );
            };
            let name =
                |a: &http::uri::Authority| a.host().trim_end_matches('.').to_ascii_lowercase();
            let Some(authority) = std::str::from_utf8(host.value)
                .ok()
                .and_then(|v| v.trim().parse::<http::uri::Authority>().ok())
                .filter(|a| !a.as_str().contains('@'))
            else {
                return Step::Done(EgressProtocol::Http, None, Some("invalid Host"));
            };
            // An absolute-form target (RFC 9112 §3.2.2) names the host a
            // server goes by: it must be the Host's.
            let target = req
                .path
                .and_then(|p| p.parse::<http::Uri>().ok())
                .and_then(|u| u.authority().cloned());
            if target.is_some_and(|t| name(&t) != name(&authority)) {
                return Step::Done(
                    EgressProtocol::Http,
                    None,
                    Some("the request target names another host than Host"),
                );
            }
            Step::Done(EgressProtocol::Http, Some(name(&authority)), None)
        }
    }
}

/// Adds `Connection: close` to the first request head of `prefix` (an
/// HTTP/1.1 head `peek` parsed), so the server answers that one request
/// and closes (RFC 9112 §9.6): every request on a plaintext egress
/// connection is then decided by its own Host, on a connection of its own.
/// Returns whether the head was found.
pub fn close_after_first(prefix: &mut Vec<u8>) -> bool {
    let at = |needle: &[u8]| prefix.windows(needle.len()).position(|w| w == needle);
    let insert = match (at(b"\r\n\r\n"), at(b"\n\n")) {
        // Before the empty line that ends the head.
        (Some(i), lf) if lf.is_none_or(|l| i < l) => Some((i + 2, &b"Connection: close\r\n"[..])),
        (_, Some(l)) => Some((l + 1, &b"Connection: close\n"[..])),
        _ => None,
    };
    match insert {
        Some((i, header)) => {
            prefix.splice(i..i, header.iter().copied());
            true
        }
        None => false,
    }
}

/// Reads until the first bytes say what they are (at most [`MAX_PEEK`],
/// within `timeout`).
pub async fn peek<S: AsyncRead + Unpin>(stream: &mut S, timeout: Duration) -> io::Result<Seen> {
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
        let ended = match read {
            Ok(Ok(0)) | Err(_) => true,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                false
            }
            Ok(Err(e)) => return Err(e),
        };
        match step(&buf) {
            Step::Done(protocol, host, malformed) => {
                return Ok(Seen {
                    protocol,
                    host,
                    prefix: buf,
                    malformed,
                });
            }
            Step::More if ended || buf.len() >= MAX_PEEK => {
                // Nothing said (a server-first protocol), or a start that
                // never completes: no name.
                let (protocol, malformed) = match buf.first() {
                    None => (EgressProtocol::Tcp, None),
                    Some(0x16) => (EgressProtocol::Tls, Some("incomplete TLS ClientHello")),
                    Some(_) => (EgressProtocol::Http, Some("incomplete HTTP request head")),
                };
                return Ok(Seen {
                    protocol,
                    host: None,
                    prefix: buf,
                    malformed,
                });
            }
            Step::More => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first flight of a real rustls client for `sni`.
    fn client_hello(sni: &str) -> Vec<u8> {
        let cfg = rustls::ClientConfig::builder_with_provider(mesh_identity::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    async fn seen(bytes: &[u8]) -> Seen {
        let mut r = bytes;
        peek(&mut r, Duration::from_millis(200)).await.unwrap()
    }

    #[tokio::test]
    async fn the_server_name_of_a_client_hello() {
        let hello = client_hello("API.Stripe.com");
        let s = seen(&hello).await;
        assert_eq!(s.protocol, EgressProtocol::Tls);
        assert_eq!(s.host.as_deref(), Some("api.stripe.com"));
        assert_eq!(s.malformed, None);
        assert_eq!(s.prefix, hello, "every byte read is replayed");
        // Cut short: incomplete, refused.
        let s = seen(&hello[..hello.len() / 2]).await;
        assert_eq!(
            (s.protocol, s.malformed),
            (EgressProtocol::Tls, Some("incomplete TLS ClientHello"))
        );
        // A handshake record that is not a ClientHello.
        let mut bad = hello.clone();
        bad[5] = 2; // ServerHello
        assert!(seen(&bad).await.malformed.is_some());
        // An address as the "name": rustls sends no SNI for it.
        let s = seen(&client_hello("203.0.113.9")).await;
        assert_eq!((s.protocol, s.host), (EgressProtocol::Tls, None));
    }

    #[tokio::test]
    async fn the_host_of_a_request_head() {
        let s =
            seen(b"GET /x HTTP/1.1\r\nHost: Status.Example.com:8080\r\nAccept: */*\r\n\r\n").await;
        assert_eq!(s.protocol, EgressProtocol::Http);
        assert_eq!(s.host.as_deref(), Some("status.example.com"));
        assert_eq!(s.malformed, None);
        let two = seen(b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n").await;
        assert_eq!(
            two.malformed,
            Some("an HTTP/1.1 request needs exactly one Host")
        );
        let none = seen(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").await;
        assert!(none.malformed.is_some());
        let userinfo = seen(b"GET / HTTP/1.1\r\nHost: allowed.example@evil.example\r\n\r\n").await;
        assert_eq!(userinfo.malformed, Some("invalid Host"));
        let fronted =
            seen(b"GET http://evil.example/ HTTP/1.1\r\nHost: allowed.example\r\n\r\n").await;
        assert_eq!(
            fronted.malformed,
            Some("the request target names another host than Host")
        );
        let absolute = seen(b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
        assert_eq!(absolute.host.as_deref(), Some("a.example"));
        let bad = seen(b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n").await;
        assert_eq!(bad.malformed, Some("malformed HTTP request head"));
        let partial = seen(b"GET / HTTP/1.1\r\nHost: a.example\r\n").await;
        assert_eq!(partial.malformed, Some("incomplete HTTP request head"));
        // A head that never ends within the limit.
        let mut endless = b"GET / HTTP/1.1\r\n".to_vec();
        while endless.len() <= MAX_PEEK {
            endless.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(seen(&endless).await.malformed.is_some());
    }

    #[test]
    fn the_first_request_asks_the_server_to_close() {
        let mut p = b"GET /a HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nHost: b.example\r\n\r\n".to_vec();
        assert!(close_after_first(&mut p));
        assert_eq!(
            p,
            b"GET /a HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: b.example\r\n\r\n"
        );
        // A body after the head is left as it is.
        let mut p = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n\n\nab".to_vec();
        assert!(close_after_first(&mut p));
        assert!(p.ends_with(b"Connection: close\r\n\r\n\n\nab"));
        let mut bare = b"GET / HTTP/1.1\nHost: a\n\n".to_vec();
        assert!(close_after_first(&mut bare));
        assert_eq!(bare, b"GET / HTTP/1.1\nHost: a\nConnection: close\n\n");
        assert!(!close_after_first(&mut b"GET / HTTP/1.1\r\n".to_vec()));
    }

    #[tokio::test]
    async fn other_bytes_and_silence_are_tcp() {
        let s = seen(b"\x00\x00\x00\x08\x04\xd2\x16\x2f").await;
        assert_eq!(
            (s.protocol, s.host, s.malformed),
            (EgressProtocol::Tcp, None, None)
        );
        let s = seen(b"").await;
        assert_eq!((s.protocol, s.host), (EgressProtocol::Tcp, None));
        let h2 = seen(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert_eq!((h2.protocol, h2.host), (EgressProtocol::Http, None));
        // A server-first client says nothing in time.
        let (mut client, _server) = tokio::io::duplex(64);
        let s = peek(&mut client, Duration::from_millis(50)).await.unwrap();
        assert_eq!(
            (s.protocol, s.host, s.malformed),
            (EgressProtocol::Tcp, None, None)
        );
    }
}
