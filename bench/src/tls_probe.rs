//! Sees which TLS version and key-exchange group a pair really negotiates on
//! its hop: a transparent TCP relay placed on an extra route between the two
//! proxies reads the (plaintext) ClientHello and ServerHello as they pass.
//! Nothing is decrypted; the relay is on a route no scenario uses.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A ClientHello fits one record; bytes beyond this are not inspected.
const CAPTURE_LIMIT: usize = 5 + 16 * 1024;

const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_KEY_SHARE: u16 = 0x0033;
const EXT_PRE_SHARED_KEY: u16 = 0x0029;
/// ServerHello.random of a HelloRetryRequest (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// What one handshake on the hop showed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Groups the client offered, in its order of preference.
    pub offered: Vec<String>,
    /// Groups the client sent a key share for.
    pub client_key_shares: Vec<String>,
    /// The group the server chose.
    pub group: Option<String>,
    /// "TLS 1.3" etc.
    pub version: Option<String>,
    /// The server asked for another key share first (an extra round trip).
    pub hello_retry: bool,
    /// The client offered a session ticket (resumption).
    pub psk_offered: bool,
    /// The server accepted it: no certificates, no signatures.
    pub psk_accepted: bool,
}

pub fn group_name(id: u16) -> String {
    match id {
        0x0017 => "secp256r1".into(),
        0x0018 => "secp384r1".into(),
        0x0019 => "secp521r1".into(),
        0x001d => "X25519".into(),
        0x001e => "X448".into(),
        0x0100..=0x0104 => format!("ffdhe({id:#06x})"),
        0x0201 => "MLKEM768".into(),
        0x11eb => "SecP256r1MLKEM768".into(),
        0x11ec => "X25519MLKEM768".into(),
        _ => format!("{id:#06x}"),
    }
}

fn version_name(v: u16) -> String {
    match v {
        0x0304 => "TLS 1.3".into(),
        0x0303 => "TLS 1.2".into(),
        _ => format!("{v:#06x}"),
    }
}

/// A bounds-checked reader over handshake bytes.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// The body of the first handshake message of type `msg_type` in `bytes`
/// (TLS records as sent), or `None` until enough bytes have arrived.
fn handshake_body(bytes: &[u8], msg_type: u8) -> Option<&[u8]> {
    let mut c = Cur(bytes);
    if c.u8()? != 0x16 {
        return None;
    }
    c.u16()?;
    let record = c.vec16()?;
    let mut h = Cur(record);
    if h.u8()? != msg_type {
        return None;
    }
    let len = h.take(3)?;
    let len = (usize::from(len[0]) << 16) | (usize::from(len[1]) << 8) | usize::from(len[2]);
    h.take(len)
}

/// Reads the groups out of a ClientHello.
pub fn parse_client_hello(bytes: &[u8]) -> Option<Observed> {
    let mut c = Cur(handshake_body(bytes, 1)?);
    c.u16()?; // legacy_version
    c.take(32)?; // random
    c.vec8()?; // session id
    c.vec16()?; // cipher suites
    c.vec8()?; // compression
    let mut exts = Cur(c.vec16()?);
    let mut o = Observed::default();
    while let (Some(t), Some(data)) = (exts.u16(), exts.vec16()) {
        let mut d = Cur(data);
        match t {
            EXT_SUPPORTED_GROUPS => {
                let mut l = Cur(d.vec16()?);
                while let Some(g) = l.u16() {
                    o.offered.push(group_name(g));
                }
            }
            EXT_KEY_SHARE => {
                let mut l = Cur(d.vec16()?);
                while let Some(g) = l.u16() {
                    l.vec16()?;
                    o.client_key_shares.push(group_name(g));
                }
            }
            EXT_PRE_SHARED_KEY => o.psk_offered = true,
            _ => {}
        }
    }
    Some(o)
}

/// Reads the chosen group and version out of a ServerHello (or HRR) into `o`.
pub fn parse_server_hello(bytes: &[u8], o: &mut Observed) -> Option<()> {
    let mut c = Cur(handshake_body(bytes, 2)?);
    c.u16()?;
    let random = c.take(32)?;
    o.hello_retry = random == HRR_RANDOM;
    c.vec8()?;
    c.u16()?; // cipher suite
    c.u8()?; // compression
    let mut exts = Cur(c.vec16()?);
    while let (Some(t), Some(data)) = (exts.u16(), exts.vec16()) {
        let mut d = Cur(data);
        match t {
            EXT_KEY_SHARE => o.group = Some(group_name(d.u16()?)),
            EXT_SUPPORTED_VERSIONS => o.version = Some(version_name(d.u16()?)),
            EXT_PRE_SHARED_KEY => o.psk_accepted = true,
            _ => {}
        }
    }
    Some(())
}

/// The relay: forwards every accepted connection to `target` and records
/// what the handshakes showed.
pub struct Tap {
    pub addr: SocketAddr,
    pub observed: Arc<Mutex<Vec<Observed>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        let l = TcpListener::bind(listen).await?;
        let addr = l.local_addr()?;
        let observed = Arc::new(Mutex::new(Vec::new()));
        let obs = observed.clone();
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                let obs = obs.clone();
                tokio::spawn(async move {
                    if let Ok(up) = TcpStream::connect(target).await {
                        relay(down, up, obs).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            observed,
            task,
        })
    }

    /// Complete observations so far, in the order connections closed.
    pub fn seen(&self) -> Vec<Observed> {
        self.observed
            .lock()
            .map(|v| v.iter().filter(|o| o.group.is_some()).cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(down: TcpStream, up: TcpStream, out: Arc<Mutex<Vec<Observed>>>) {
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let c2s = async move {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match dr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if seen.len() < CAPTURE_LIMIT {
                seen.extend_from_slice(&buf[..n]);
            }
            if uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = uw.shutdown().await;
        seen
    };
    let s2c = async move {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if seen.len() < CAPTURE_LIMIT {
                seen.extend_from_slice(&buf[..n]);
            }
            if dw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = dw.shutdown().await;
        seen
    };
    let (client_bytes, server_bytes) = tokio::join!(c2s, s2c);
    let mut o = parse_client_hello(&client_bytes).unwrap_or_default();
    let _ = parse_server_hello(&server_bytes, &mut o);
    if let Ok(mut v) = out.lock() {
        v.push(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real rustls ClientHello and ServerHello, parsed back.
    #[test]
    fn reads_groups_from_a_real_handshake() {
        use crate::handshake::{Group, palisade_configs};
        let cfgs = palisade_configs(Group::X25519).unwrap();
        let mut c = rustls::ClientConnection::new(
            cfgs.client.clone(),
            mesh_identity::tls::mesh_server_name(),
        )
        .unwrap();
        let mut s = rustls::ServerConnection::new(cfgs.server.clone()).unwrap();
        let mut ch = Vec::new();
        c.write_tls(&mut ch).unwrap();
        let mut o = parse_client_hello(&ch).unwrap();
        assert_eq!(o.offered, vec!["X25519"]);
        assert_eq!(o.client_key_shares, vec!["X25519"]);
        s.read_tls(&mut &ch[..]).unwrap();
        s.process_new_packets().unwrap();
        let mut sh = Vec::new();
        s.write_tls(&mut sh).unwrap();
        parse_server_hello(&sh, &mut o).unwrap();
        assert_eq!(o.group.as_deref(), Some("X25519"));
        assert_eq!(o.version.as_deref(), Some("TLS 1.3"));
        assert!(!o.hello_retry);
        assert!(!o.psk_offered && !o.psk_accepted);
    }

    #[test]
    fn garbage_and_truncation_are_not_hellos() {
        assert!(parse_client_hello(b"GET / HTTP/1.1\r\n\r\n").is_none());
        assert!(parse_client_hello(&[0x16, 3, 1, 0, 200, 1, 0]).is_none());
        let mut o = Observed::default();
        assert!(parse_server_hello(&[0x16, 3, 3], &mut o).is_none());
        assert_eq!(group_name(0x11ec), "X25519MLKEM768");
    }
}
