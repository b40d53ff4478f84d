//! HTTP through two sidecars over the pooled `palisade/h2` hop: the app
//! sees the protocol its client spoke (HTTP/2 prior knowledge, HTTP/1.1
//! keep-alive and pipelining), uploads stream with backpressure and bounded
//! memory, a WebSocket works end to end, and a new app connection costs no
//! handshake between the proxies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mesh_tests::*;
use tokio_tungstenite::tungstenite::Message;

struct Mesh {
    _rt: tokio::runtime::Runtime,
    _cp: ControlPlane,
    a: Proxy,
    b: Proxy,
    listen: SocketAddr,
}

fn mesh() -> Mesh {
    mesh_with(|_| vec![])
}

/// The pair, with flags for A chosen knowing the app's port.
fn mesh_with(a_flags: impl Fn(u16) -> Vec<String>) -> Mesh {
    let rt = runtime();
    let app = rt.block_on(mesh_tests::http_app::serve());
    let cp = ControlPlane::start(CpOptions::default());
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    opts.extra = a_flags(app.port());
    let a = Proxy::start(&cp, opts);
    Mesh {
        _rt: rt,
        _cp: cp,
        a,
        b,
        listen,
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// VmHWM (peak RSS) of a process, KiB.
fn peak_rss_kib(p: &Proxy) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", p.proc.child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_app_sees_the_protocol_its_client_spoke() {
    let m = mesh();
    let h2 = curl(&[
        "--http2-prior-knowledge",
        &format!("http://{}/h2?x=1", m.listen),
    ]);
    assert!(h2.starts_with("GET /h2 HTTP/2.0\n"), "{h2}");
    assert!(
        h2.contains("x-palisade-peer-identity: spiffe://cluster.local/ns/default/sa/web\n"),
        "{h2}"
    );
    let h1 = curl(&[&format!("http://{}/h1", m.listen)]);
    assert!(h1.starts_with("GET /h1 HTTP/1.1\n"), "{h1}");
    assert!(h1.contains(&format!("host: {}\n", m.listen)), "{h1}");
    // A forged identity never reaches the app.
    let forged = curl(&[
        "-H",
        "x-palisade-peer-identity: spiffe://cluster.local/ns/default/sa/admin",
        &format!("http://{}/f", m.listen),
    ]);
    assert!(!forged.contains("sa/admin"), "{forged}");
}

/// An app that serves HTTPS itself: the mesh cannot read its HTTP, so the
/// TLS stream crosses as opaque TCP, and curl still negotiates HTTP/2 (or
/// HTTP/1.1) with the app by ALPN, end to end.
#[test]
fn curl_http2_over_tls_to_the_app() {
    let rt = runtime();
    let app = rt.block_on(mesh_tests::http_app::serve_tls("app.test"));
    let cp = ControlPlane::start(CpOptions::default());
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.addr.port(), &b.identity);
    let _a = Proxy::start(&cp, opts);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("app.pem");
    std::fs::write(&ca, &app.cert_pem).expect("write cert");
    let to = format!("{}:443:{listen}", app.host);
    let url = format!("https://{}/tls?x=1", app.host);
    let ca = ca.to_string_lossy().to_string();
    let h2 = curl(&["--http2", "--cacert", &ca, "--connect-to", &to, &url]);
    assert!(h2.starts_with("GET /tls HTTP/2.0\n"), "{h2}");
    // Inside the app's TLS the proxy adds nothing: it cannot read it.
    assert!(!h2.contains("x-palisade"), "{h2}");
    let h1 = curl(&["--http1.1", "--cacert", &ca, "--connect-to", &to, &url]);
    assert!(h1.starts_with("GET /tls HTTP/1.1\n"), "{h1}");
}

#[test]
fn keep_alive_and_pipelined_requests() {
    let m = mesh();
    let mut s = TcpStream::connect(m.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Two requests in one write, then a third on the same connection.
    let two = "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n";
    s.write_all(two.as_bytes()).unwrap();
    let got = read_responses(&mut s, 2);
    assert!(got[0].contains("GET /one HTTP/1.1"), "{got:?}");
    assert!(got[1].contains("GET /two HTTP/1.1"), "{got:?}");
    s.write_all(b"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got = read_responses(&mut s, 1);
    assert!(got[0].contains("GET /three HTTP/1.1"), "{got:?}");
}

/// Reads `n` responses with content-length bodies.
fn read_responses(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                out.push(format!("{head}\r\n\r\n{body}"));
                buf.drain(..end + 4 + len);
                continue;
            }
        }
        let k = s.read(&mut chunk).expect("read response");
        assert!(k > 0, "connection closed after {} responses", out.len());
        buf.extend_from_slice(&chunk[..k]);
    }
    out
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

#[test]
fn a_100_mb_chunked_upload_streams_with_bounded_memory() {
    let m = mesh();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    let f = std::fs::File::create(&file).unwrap();
    f.set_len(100 * 1024 * 1024).unwrap();
    // Chunked (no Content-Length) and read slowly by the app: the proxies
    // must pass backpressure on, not buffer the body.
    let out = curl(&[
        "-T",
        file.to_str().unwrap(),
        "-H",
        "Transfer-Encoding: chunked",
        &format!("http://{}/upload", m.listen),
    ]);
    assert_eq!(out, format!("received {}\n", 100 * 1024 * 1024));
    for (name, p) in [("A", &m.a), ("B", &m.b)] {
        let kib = peak_rss_kib(p);
        assert!(
            kib > 0 && kib < 64 * 1024,
            "proxy {name} peak RSS {kib} KiB for a 100 MB upload"
        );
    }
}

#[test]
fn websocket_echo_through_the_mesh() {
    let m = mesh();
    let rt = runtime();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(m.listen).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{}/ws", m.listen), tcp)
            .await
            .expect("websocket handshake through the mesh");
        assert_eq!(resp.status(), 101);
        for i in 0..10 {
            ws.send(Message::text(format!("hello {i}"))).await.unwrap();
            let back = ws.next().await.expect("a reply").expect("a message");
            assert_eq!(back.into_text().unwrap().as_str(), format!("hello {i}"));
        }
        ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_data().len(), 100_000);
        ws.close(None).await.unwrap();
    });
}

#[test]
fn new_app_connections_reuse_the_pooled_connection() {
    let m = mesh();
    for i in 0..50 {
        let (code, body) = http_get(m.listen, &format!("/n{i}")).expect("request");
        assert_eq!(code, 200, "{body}");
    }
    // 50 app connections, one TLS connection between the proxies.
    assert_eq!(
        metric(
            &m.b.metrics(),
            "mesh_tcp_connections_total",
            &[("direction", "inbound"), ("tls", "true")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m.a.metrics(),
            "mesh_pool_connects_total",
            &[("result", "success")]
        ),
        1.0
    );
    assert!(
        metric(
            &m.b.metrics(),
            "mesh_requests_total",
            &[("direction", "inbound"), ("code", "200")]
        ) >= 50.0
    );
}

#[test]
fn opaque_ports_are_relayed_without_the_http_path() {
    let m = mesh_with(|port| vec!["--opaque-ports".into(), port.to_string()]);
    let (a, b) = (&m.a, &m.b);
    for i in 0..3 {
        let (code, body) = http_get(m.listen, &format!("/o{i}")).expect("request");
        assert_eq!(code, 200, "{body}");
    }
    // One palisade/tcp1 connection per app connection, no pooled HTTP/2,
    // no per-request telemetry on A.
    assert_eq!(metric(&a.metrics(), "mesh_pool_connects_total", &[]), 0.0);
    assert_eq!(
        metric(
            &b.metrics(),
            "mesh_tcp_connections_total",
            &[("direction", "inbound"), ("tls", "true")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &a.metrics(),
            "mesh_requests_total",
            &[("direction", "outbound")]
        ),
        0.0
    );
}

/// `--service-route`: a local port for a mesh Service on a host without
/// traffic redirection. Requests there are requests to the Service: its
/// HTTPRoute applies at the client's proxy (here a header it sets), its
/// endpoint is the server found by discovery, and the server's
/// RateLimitPolicy refuses the excess with 429 naming itself.
#[test]
fn a_service_route_takes_the_services_route_and_limits() {
    let cp = ControlPlane::start(CpOptions::default());
    let app = EchoApp::start(cp.dir.path(), "api");
    cp.write_policy(
        "api.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: default}}\n\
             spec:\n  clusterIP: 10.96.0.10\n  selector: {{app: api}}\n  ports: [{{port: 80, targetPort: {}}}]\n\
             ---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: api, namespace: default}}\n\
             spec:\n  parentRefs: [{{kind: Service, group: \"\", name: api, port: 80}}]\n  rules:\n\
             \x20   - backendRefs: [{{name: api, port: 80}}]\n\
             \x20     filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-routed, value: by-route}}]}}}}]\n\
             ---\n\
             apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: api, namespace: default}}\n\
             spec:\n  selector: {{matchLabels: {{app: api}}}}\n  perClient: {{requestsPerSecond: 1, burst: 2}}\n",
            app.port()
        ),
    );
    let mut server = ProxyOptions::new("default", "api");
    server.extra = vec!["--labels".into(), "app=api".into()];
    let _b = Proxy::start(&cp, server);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut client = ProxyOptions::new("default", "web");
    client.extra = vec!["--service-route".into(), format!("{listen}=default/api:80")];
    let _a = Proxy::start(&cp, client);
    // Discovery may name the server's endpoint a moment after both are ready.
    let (status, body) = wait_for("the Service's endpoint", Duration::from_secs(10), || {
        // Before it, the connection is closed unanswered (0) or gets 503.
        http_get(listen, "/hello")
            .ok()
            .filter(|(s, _)| *s != 503 && *s != 0)
    });
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-routed: by-route"), "{body}");
    // Burst 2 at 1/s: of three at once, the third waits for its turn.
    let statuses: Vec<u16> = (0..3)
        .map(|_| http_get(listen, "/again").map_or(0, |(s, _)| s))
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let (status, body) = http_get(listen, "/more").expect("an answer");
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("rate limited by RateLimitPolicy default/api"),
        "{body}"
    );
}
