//! Hostile HTTP on raw sockets, against the outbound (the app-facing side):
//! each case is refused or closed on its own connection only, requests on
//! another connection keep flowing, and the proxy's memory stays bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mesh_tests::*;

/// Peak RSS a proxy may reach in these tests: the attacks must not make it
/// hold what they send.
const RSS_BOUND_KIB: u64 = 48 * 1024;

struct Mesh {
    _cp: ControlPlane,
    _app: EchoApp,
    a: Proxy,
    _b: Proxy,
    listen: SocketAddr,
}

fn mesh(extra: &[&str]) -> Mesh {
    let cp = ControlPlane::start(CpOptions::default());
    let app = EchoApp::start(cp.dir.path(), "api");
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    opts.extra = extra.iter().map(|s| s.to_string()).collect();
    let a = Proxy::start(&cp, opts);
    Mesh {
        _cp: cp,
        _app: app,
        a,
        _b: b,
        listen,
    }
}

fn peak_rss_kib(p: &Proxy) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", p.proc.child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sends `bytes`, then reads until the proxy closes (or 10 s pass).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn still_serving(m: &Mesh) {
    let (code, body) = http_get(m.listen, "/ok").expect("another connection");
    assert_eq!(code, 200, "{body}");
}

#[test]
fn request_smuggling_is_refused_with_400_and_the_connection_closed() {
    let m = mesh(&[]);
    let cases: [(&str, &[u8]); 7] = [
        (
            "Content-Length and Transfer-Encoding",
            b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "two equal Content-Lengths",
            b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        ),
        (
            "differing Content-Lengths",
            b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        ),
        (
            "a Content-Length that is not a number",
            b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc",
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
        ),
        (
            "obs-fold",
            b"GET /s HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        ),
        (
            "bad chunk size",
            b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (name, bytes) in cases {
        let (resp, closed) = exchange(m.listen, bytes);
        assert!(resp.starts_with("HTTP/1.1 400"), "{name}: {resp:?}");
        assert!(closed, "{name}: connection left open: {resp:?}");
        assert!(!resp.contains("/smuggled"), "{name}: {resp}");
        still_serving(&m);
    }
    // A pipelined clean request before an ambiguous one is served; the
    // ambiguous one is refused and nothing after it is read.
    let (resp, closed) = exchange(
        m.listen,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp:?}");
    assert!(closed && !resp.contains("/smuggled"), "{resp}");
}

#[test]
fn oversized_heads_and_targets_are_refused() {
    let m = mesh(&[]);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (resp, _) = exchange(m.listen, big.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp:?}");
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "b".repeat(9 * 1024)
    );
    let (resp, _) = exchange(m.listen, long.as_bytes());
    assert!(resp.starts_with("HTTP/1.1 414"), "{resp:?}");
    // An app CONNECT is not a tunnel.
    let (resp, _) = exchange(
        m.listen,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp:?}");
    still_serving(&m);
}

#[test]
fn a_slowloris_head_is_cut_off() {
    let m = mesh(&["--header-read-timeout", "1s"]);
    let mut s = TcpStream::connect(m.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    // Drip a header byte every 200 ms; the proxy closes at the timeout.
    let closed = loop {
        if s.write_all(b"x").is_err() {
            break true;
        }
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => break true,
            Err(_) if started.elapsed() > Duration::from_secs(8) => break false,
            Err(_) => {}
        }
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    };
    assert!(closed, "a header dripped for 8 s was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    still_serving(&m);
}

// HTTP/2 frames by hand: length(3) type(1) flags(1) stream(4) payload.
fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[ty, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const GOAWAY: u8 = 0x7;

/// Reads frames until GOAWAY or EOF; whether GOAWAY came.
fn saw_goaway(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let mut i = 0;
        while i + 9 <= buf.len() {
            let len =
                usize::from(buf[i]) << 16 | usize::from(buf[i + 1]) << 8 | usize::from(buf[i + 2]);
            if buf[i + 3] == GOAWAY {
                return true;
            }
            i += 9 + len;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn flood(m: &Mesh, frames: impl Iterator<Item = Vec<u8>>) -> bool {
    let mut s = TcpStream::connect(m.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    for f in frames {
        out.extend(f);
    }
    let _ = s.write_all(&out);
    saw_goaway(&mut s)
}

#[test]
fn h2_floods_get_goaway_and_others_keep_flowing() {
    let m = mesh(&[]);
    // PING flood.
    assert!(
        flood(&m, (0..500).map(|_| frame(0x6, 0, 0, &[0; 8]))),
        "PING flood: no GOAWAY"
    );
    still_serving(&m);
    // SETTINGS flood.
    assert!(
        flood(&m, (0..500).map(|_| frame(0x4, 0, 0, &[]))),
        "SETTINGS flood: no GOAWAY"
    );
    // Rapid reset: HEADERS then RST_STREAM, over and over (CVE-2023-44487).
    // HPACK: :method GET (0x82), :scheme http (0x86), :path / (0x84),
    // :authority "a" (0x41 0x01 'a').
    let headers = [0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
    let rapid = (0..2000u32).flat_map(|i| {
        let id = 2 * i + 1;
        [
            frame(0x1, 0x4 | 0x1, id, &headers),
            frame(0x3, 0, id, &[0, 0, 0, 8]),
        ]
    });
    assert!(flood(&m, rapid), "rapid reset: no GOAWAY");
    still_serving(&m);
    let metrics = m.a.metrics();
    for reason in ["h2_ping_flood", "h2_settings_flood"] {
        assert_eq!(
            metric(&metrics, "mesh_http_refused_total", &[("reason", reason)]),
            1.0,
            "{reason}: {metrics}"
        );
    }
    let kib = peak_rss_kib(&m.a);
    assert!(kib < RSS_BOUND_KIB, "peak RSS {kib} KiB");
}

#[test]
fn a_continuation_flood_is_bounded() {
    let m = mesh(&[]);
    // HEADERS without END_HEADERS, then endless CONTINUATION frames of
    // junk header bytes: the header list limit ends it.
    let mut frames = vec![frame(0x1, 0x1, 1, &[0x82, 0x86, 0x84])];
    let junk: Vec<u8> = std::iter::repeat_n([0x40, 0x01, b'x', 0x7f, 0x7f], 3300)
        .flatten()
        .collect();
    for chunk in junk.chunks(16 * 1024).cycle().take(100) {
        frames.push(frame(0x9, 0, 1, chunk));
    }
    let mut s = TcpStream::connect(m.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    for f in frames {
        out.extend(f);
    }
    let _ = s.write_all(&out);
    // The proxy ends it: GOAWAY (or a reset and close), never a hang.
    let mut buf = [0u8; 16384];
    let started = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("connection neither answered nor closed: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    still_serving(&m);
    let kib = peak_rss_kib(&m.a);
    assert!(kib < RSS_BOUND_KIB, "peak RSS {kib} KiB");
}
