//! Telling mesh mTLS from everything else on the inbound port: a bounded
//! look (peek, nothing consumed) at the TLS ClientHello, if there is one.

use tokio::net::TcpStream;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How much of a ClientHello is examined; hellos with post-quantum key
/// shares are about 1.5 KB.
const MAX_HELLO_PEEK: usize = 4096;
/// Every ALPN name between proxies starts with this (`palisade/tcp1`,
/// `palisade/h2`).
const MESH_ALPN_PREFIX: &[u8] = b"palisade/";

/// Looks at the first bytes: `Some(true)` for a mesh mTLS ClientHello,
/// `Some(false)` for anything else (plaintext, or TLS meant for the app),
/// `None` when the client closed.
pub async fn peek_mesh(tcp: &TcpStream) -> Option<bool> {
    let mut buf = vec![0u8; MAX_HELLO_PEEK];
    loop {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[0] != TLS_HANDSHAKE {
            return Some(false);
        }
        if let Some(mesh) = client_hello_is_mesh(&buf[..n]) {
            return Some(mesh);
        }
        if n == buf.len() {
            // A hello larger than we look at: let the mesh handshake judge it.
            return Some(true);
        }
        // Wait for more of the hello (peek returns at once while data is pending).
        tcp.readable().await.ok()?;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Whether a TLS ClientHello is a mesh connection: SNI
/// `mesh.palisade.internal` or ALPN offering a `palisade/` protocol. `None` while
/// more bytes are needed; a malformed hello counts as mesh, so the mesh
/// handshake refuses it (fail closed).
pub fn client_hello_is_mesh(b: &[u8]) -> Option<bool> {
    // Record: type(1)=0x16 version(2) length(2).
    if b.len() < 5 {
        return None;
    }
    let rec_len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if b.len() < 5 + rec_len {
        return None;
    }
    Some(parse_hello(&b[5..5 + rec_len]).unwrap_or(true))
}

fn parse_hello(h: &[u8]) -> Option<bool> {
    // Handshake: type(1)=1 length(3), then version(2) random(32).
    if *h.first()? != 1 {
        return None;
    }
    let mut i = 4 + 2 + 32;
    let sid = usize::from(*h.get(i)?);
    i += 1 + sid;
    let suites = usize::from(u16::from_be_bytes([*h.get(i)?, *h.get(i + 1)?]));
    i += 2 + suites;
    let comp = usize::from(*h.get(i)?);
    i += 1 + comp;
    let ext_len = usize::from(u16::from_be_bytes([*h.get(i)?, *h.get(i + 1)?]));
    i += 2;
    let end = (i + ext_len).min(h.len());
    while i + 4 <= end {
        let ty = u16::from_be_bytes([h[i], h[i + 1]]);
        let len = usize::from(u16::from_be_bytes([h[i + 2], h[i + 3]]));
        let body = h.get(i + 4..i + 4 + len)?;
        match ty {
            // server_name: list(2) [type(1) len(2) name]
            0 => {
                let name_len = usize::from(u16::from_be_bytes([*body.get(3)?, *body.get(4)?]));
                let name = body.get(5..5 + name_len)?;
                if name == mesh_identity::tls::MESH_SERVER_NAME.as_bytes() {
                    return Some(true);
                }
            }
            // application_layer_protocol_negotiation: list(2) [len(1) proto]
            16 => {
                let mut j = 2;
                while j < body.len() {
                    let n = usize::from(body[j]);
                    if body.get(j + 1..j + 1 + n)?.starts_with(MESH_ALPN_PREFIX) {
                        return Some(true);
                    }
                    j += 1 + n;
                }
            }
            _ => {}
        }
        i += 4 + len;
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(sni: Option<&str>, alpn: &[&[u8]]) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let n = name.len() as u16;
            ext.extend_from_slice(&[0, 0]);
            ext.extend_from_slice(&(n + 5).to_be_bytes());
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
        }
        if !alpn.is_empty() {
            let list: Vec<u8> = alpn
                .iter()
                .flat_map(|p| std::iter::once(p.len() as u8).chain(p.iter().copied()))
                .collect();
            ext.extend_from_slice(&[0, 16]);
            ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
            ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
            ext.extend_from_slice(&list);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn mesh_tls_is_told_from_other_tls() {
        assert_eq!(
            client_hello_is_mesh(&hello(Some("mesh.palisade.internal"), &[b"palisade/tcp1"])),
            Some(true)
        );
        assert_eq!(
            client_hello_is_mesh(&hello(None, &[b"h2", b"palisade/tcp1"])),
            Some(true)
        );
        assert_eq!(
            client_hello_is_mesh(&hello(None, &[b"palisade/h2"])),
            Some(true)
        );
        assert_eq!(
            client_hello_is_mesh(&hello(Some("example.com"), &[b"h2", b"http/1.1"])),
            Some(false)
        );
        assert_eq!(client_hello_is_mesh(&hello(None, &[])), Some(false));
        let h = hello(Some("example.com"), &[]);
        assert_eq!(client_hello_is_mesh(&h[..h.len() - 1]), None, "incomplete");
        // Malformed: counts as mesh, so the mesh handshake refuses it.
        assert_eq!(
            client_hello_is_mesh(&[0x16, 3, 1, 0, 3, 9, 9, 9]),
            Some(true)
        );
    }
}
