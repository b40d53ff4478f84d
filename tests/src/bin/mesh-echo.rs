//! mesh-echo: a small demo and test app. Speaks just enough HTTP/1.1 to answer
//! `curl` with what it received (method, path, headers); anything that is not
//! HTTP is echoed back byte for byte.
//!
//! Usage: mesh-echo [LISTEN_ADDR] [--fail-every N] [--fail-while PATH]
//! [--delay-ms MS] (default 127.0.0.1:8080); the name in replies comes from
//! $ECHO_NAME. A flaky backend for the lab: `--fail-every 2` answers every
//! second HTTP request with 503, `--fail-while /run/x` every request while
//! that file exists (an outage a test can end), `--delay-ms 500` stalls
//! each answer. `--tls HOST,HOST` serves HTTPS instead, with a self-signed
//! certificate for those names (the lab's "internet": the answer names the
//! server name the client asked for).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// How this echo misbehaves, by flag.
#[derive(Default)]
struct Faults {
    fail_every: u64,
    fail_while: Option<std::path::PathBuf>,
    forward: Option<String>,
    delay: Duration,
    served: AtomicU64,
}

/// Requests with larger heads are refused; this is a demo app, not a server.
const MAX_HEAD: usize = 16 * 1024;
const METHODS: [&str; 7] = ["GET ", "POST", "PUT ", "HEAD", "DELE", "PATC", "OPTI"];

fn main() {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:8080".to_string();
    let mut faults = Faults::default();
    let mut tls: Option<Vec<String>> = None;
    while let Some(a) = args.next() {
        let mut number = |flag: &str| -> u64 {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => n,
                None => {
                    eprintln!("mesh-echo: {flag} needs a number");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--fail-every" => faults.fail_every = number("--fail-every"),
            "--fail-while" => match args.next() {
                Some(p) => faults.fail_while = Some(p.into()),
                None => {
                    eprintln!("mesh-echo: --fail-while needs a path");
                    std::process::exit(2);
                }
            },
            "--forward" => match args.next() {
                Some(a) => faults.forward = Some(a),
                None => {
                    eprintln!("mesh-echo: --forward needs HOST:PORT");
                    std::process::exit(2);
                }
            },
            "--delay-ms" => faults.delay = Duration::from_millis(number("--delay-ms")),
            "--tls" => match args.next() {
                Some(h) => tls = Some(h.split(',').map(str::to_owned).collect()),
                None => {
                    eprintln!("mesh-echo: --tls needs HOST[,HOST...]");
                    std::process::exit(2);
                }
            },
            other => addr = other.to_string(),
        }
    }
    let faults = Arc::new(faults);
    let name = std::env::var("ECHO_NAME").unwrap_or_else(|_| "echo".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mesh-echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("mesh-echo: {name} listening on {addr}");
    if let Some(hosts) = tls {
        let config = tls_config(hosts);
        for conn in listener.incoming().flatten() {
            let name = name.clone();
            let config = config.clone();
            thread::spawn(move || serve_tls(conn, &name, config));
        }
        return;
    }
    for conn in listener.incoming().flatten() {
        let name = name.clone();
        let faults = faults.clone();
        thread::spawn(move || serve(conn, &name, &faults));
    }
}

/// Sends `GET /` to `to` on the kept connection (made or made again as
/// needed) and returns the response's status, its body read and dropped.
fn forward(upstream: &mut Option<BufReader<TcpStream>>, to: &str) -> Option<u16> {
    for _ in 0..2 {
        let conn = match upstream {
            Some(c) => c,
            None => upstream.insert(BufReader::new(TcpStream::connect(to).ok()?)),
        };
        let sent = conn
            .get_mut()
            .write_all(format!("GET / HTTP/1.1\r\nhost: {to}\r\n\r\n").as_bytes());
        match sent.ok().and_then(|()| read_response(conn)) {
            Some(code) => return Some(code),
            None => *upstream = None,
        }
    }
    None
}

/// A response's status; its body (content-length or chunked) is consumed.
fn read_response(conn: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let code = line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        if conn.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
            if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    if !chunked {
        let mut body = vec![0u8; length.min(1 << 20)];
        conn.read_exact(&mut body).ok()?;
        return Some(code);
    }
    loop {
        let mut size = String::new();
        conn.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; n.min(1 << 20) + 2];
        conn.read_exact(&mut chunk).ok()?;
        if n == 0 {
            return Some(code);
        }
    }
}

fn serve(conn: TcpStream, name: &str, faults: &Faults) {
    let mut upstream = None;
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut conn = conn;
    let looks_http = reader
        .fill_buf()
        .map(|b| b.len() >= 4 && METHODS.iter().any(|m| b.starts_with(m.as_bytes())))
        .unwrap_or(false);
    if !looks_http {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = conn.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
    loop {
        let mut head = Vec::new();
        let mut content_length = 0usize;
        let mut chunked = false;
        let mut close = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if head.len() + line.len() > MAX_HEAD {
                let _ = conn.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                return;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.trim().eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
                if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
            let end = line == "\r\n" || line == "\n";
            head.push(line);
            if end {
                break;
            }
        }
        let body = if chunked {
            match read_chunked(&mut reader) {
                Some(b) => b,
                None => return,
            }
        } else {
            let mut body = vec![0u8; content_length.min(1 << 20)];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        let request_line = head
            .first()
            .map(|l| l.trim_end().to_string())
            .unwrap_or_default();
        let mut text = format!("{name} received {request_line:?} from {peer}\n");
        for h in head.iter().skip(1) {
            if !h.trim().is_empty() {
                text.push_str("  ");
                text.push_str(h.trim_end());
                text.push('\n');
            }
        }
        if !body.is_empty() {
            text.push_str(&format!("  body: {} bytes\n", body.len()));
        }
        let request_line_http10 = request_line.ends_with("HTTP/1.0");
        let close = close || request_line_http10;
        let n = faults.served.fetch_add(1, Ordering::Relaxed) + 1;
        if !faults.delay.is_zero() {
            thread::sleep(faults.delay);
        }
        let failing = (faults.fail_every > 0 && n.is_multiple_of(faults.fail_every))
            || faults.fail_while.as_ref().is_some_and(|p| p.exists());
        let forwarded = faults
            .forward
            .as_deref()
            .map(|to| forward(&mut upstream, to).unwrap_or(502));
        let (status, text) = if let Some(code) = forwarded {
            (
                if code == 200 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                },
                format!("{name} forwarded: upstream answered {code}\n"),
            )
        } else if failing {
            (
                "503 Service Unavailable",
                format!("{name} failing request {n}\n"),
            )
        } else {
            ("200 OK", text)
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{text}",
            text.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
        if close {
            let _ = conn.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// A chunked body (RFC 9112 §7.1), at most 1 MiB; `None` if it is broken.
fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = size.trim_end();
        let size = size.split(';').next().unwrap_or(size);
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            // Trailers, then the empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).ok()? == 0 || line.trim_end().is_empty() {
                    return Some(body);
                }
            }
        }
        if body.len() + n > 1 << 20 {
            return None;
        }
        let start = body.len();
        body.resize(start + n + 2, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        body.truncate(start + n);
    }
}

/// A self-signed certificate for `hosts`.
fn tls_config(hosts: Vec<String>) -> Arc<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(hosts)
        .and_then(|p| p.self_signed(&key))
        .expect("self-signed certificate");
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], der)
        })
        .expect("TLS settings");
    Arc::new(config)
}

/// One HTTPS request: the answer names the server name asked for.
fn serve_tls(conn: TcpStream, name: &str, config: Arc<rustls::ServerConfig>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(tls) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut stream = rustls::StreamOwned::new(tls, conn);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let sni = stream.conn.server_name().unwrap_or("-").to_owned();
    let body = format!("{name} received {line:?} over TLS for {sni}\n");
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
    stream.conn.send_close_notify();
    let _ = stream.flush();
}
