//! Network tools for tests: free ports, an echo app, a recording relay, a
//! minimal HTTP GET.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// An app that echoes every byte back, and half-closes when the client does.
pub struct Echo {
    pub addr: SocketAddr,
}

impl Echo {
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        let addr = l.local_addr().expect("addr");
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = c.shutdown(Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                if c.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { addr }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Sends `payload`, half-closes, and reads everything back.
pub fn round_trip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(payload)?;
    c.shutdown(Shutdown::Write)?;
    let mut out = Vec::new();
    c.read_to_end(&mut out)?;
    Ok(out)
}

/// A TCP relay that records every byte in both directions, for asserting
/// what crosses the wire between two proxies.
pub struct Recorder {
    pub addr: SocketAddr,
    pub to_server: Arc<Mutex<Vec<u8>>>,
    pub to_client: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    pub fn start(upstream: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = l.local_addr().expect("addr");
        let to_server = Arc::new(Mutex::new(Vec::new()));
        let to_client = Arc::new(Mutex::new(Vec::new()));
        let (ts, tc) = (to_server.clone(), to_client.clone());
        thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                pump(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    ts.clone(),
                );
                pump(server, client, tc.clone());
            }
        });
        Self {
            addr,
            to_server,
            to_client,
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    log.lock().expect("lock").extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// `GET path` over plain HTTP/1.1; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, "admin", &[])
}

/// One HTTP/1.1 request (the path is sent exactly as given, unnormalized);
/// returns (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes())?;
    let mut raw = String::new();
    c.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of a Prometheus sample `name{labels}` (labels as written, e.g.
/// `direction="inbound",reason="expired"`; order-insensitive), 0 if absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, r)) => (n, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            if ok { value.parse::<f64>().ok() } else { None }
        })
        .sum()
}

/// The TLS version the server chose, read from a recorded server-to-client
/// byte stream: the ServerHello's `supported_versions` extension
/// (0x0304 = TLS 1.3), or the legacy version field when absent.
pub fn server_hello_version(to_client: &[u8]) -> Option<u16> {
    // Record header: type 0x16 (handshake), version, length.
    if to_client.len() < 5 || to_client[0] != 0x16 {
        return None;
    }
    let rec_len = u16::from_be_bytes([to_client[3], to_client[4]]) as usize;
    let rec = to_client.get(5..5 + rec_len)?;
    // Handshake header: type 0x02 (ServerHello), 3-byte length.
    if rec.first() != Some(&0x02) {
        return None;
    }
    let body = rec.get(4..)?;
    let legacy = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    // version(2) random(32) session_id(1+n) cipher(2) compression(1) extensions(2+m)
    let sid_len = *body.get(34)? as usize;
    let mut i = 35 + sid_len + 3;
    let ext_len = u16::from_be_bytes([*body.get(i)?, *body.get(i + 1)?]) as usize;
    i += 2;
    let end = i + ext_len;
    while i + 4 <= end {
        let ty = u16::from_be_bytes([*body.get(i)?, *body.get(i + 1)?]);
        let len = u16::from_be_bytes([*body.get(i + 2)?, *body.get(i + 3)?]) as usize;
        if ty == 0x002b && len == 2 {
            return Some(u16::from_be_bytes([*body.get(i + 4)?, *body.get(i + 5)?]));
        }
        i += 4 + len;
    }
    Some(legacy)
}

/// True when every TLS record after the first (the ServerHello, or the
/// ClientHello) is application data (type 0x17) or change_cipher_spec
/// (0x14, a TLS 1.3 compatibility no-op): in TLS 1.3 everything after the
/// hellos is encrypted.
pub fn all_encrypted_after_hello(stream: &[u8]) -> bool {
    let mut i = 0;
    let mut first = true;
    while i + 5 <= stream.len() {
        let ty = stream[i];
        let len = u16::from_be_bytes([stream[i + 3], stream[i + 4]]) as usize;
        if !first && ty != 0x17 && ty != 0x14 {
            return false;
        }
        first = false;
        i += 5 + len;
    }
    i == stream.len()
}
