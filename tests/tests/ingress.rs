//! `mesh-proxy ingress` on loopback, with the real binaries: HTTPS from an
//! outside client is terminated with the certificate of a
//! `kubernetes.io/tls` Secret chosen by SNI, routed by a Gateway's
//! HTTPRoute or an Ingress rule, and re-encrypted with mesh mTLS to the
//! backend's sidecar, which sees the ingress's identity. Certificates are
//! replaced without a restart; unknown names are refused or get the
//! default certificate; edge policy decides by the client address from
//! trusted hops only; a forged identity header never reaches the app.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use mesh_tests::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A CA the test's clients trust, and leaf certificates it signs.
struct TestCa {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ingress test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A `kubernetes.io/tls` Secret for `hosts`.
    fn secret(&self, namespace: &str, name: &str, hosts: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
            b64(&leaf.pem()),
            b64(&key.serialize_pem())
        )
    }

    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut cfg = ClientConfig::builder_with_provider(mesh_identity::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// An HTTPS client connection (HTTP/1.1, kept alive).
struct Client {
    tls: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn connect(cfg: &Arc<ClientConfig>, addr: SocketAddr, sni: &str) -> std::io::Result<Client> {
        Self::connect_after(cfg, addr, sni, &[])
    }

    /// Sends `prefix` (a load balancer's PROXY header) before the handshake.
    fn connect_after(
        cfg: &Arc<ClientConfig>,
        addr: SocketAddr,
        sni: &str,
        prefix: &[u8],
    ) -> std::io::Result<Client> {
        let mut tcp = TcpStream::connect(addr)?;
        tcp.write_all(prefix)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
        let conn = ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        // Finish the handshake now, so a refusal shows here.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Client {
            tls: BufReader::new(tls),
        })
    }

    /// The certificate the server presented.
    fn server_cert(&self) -> CertificateDer<'static> {
        self.tls.get_ref().conn.peer_certificates().unwrap()[0].clone()
    }

    fn get(&mut self, host: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.raw(req.as_bytes())
    }

    /// Whether the server closed the connection (nothing more to read).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.tls.read(&mut b), Ok(0) | Err(_))
    }

    /// Sends `bytes` as they are and reads one response.
    fn raw(&mut self, bytes: &[u8]) -> Resp {
        self.tls.get_mut().write_all(bytes).unwrap();
        let mut line = String::new();
        self.tls.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            self.tls.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let find = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            self.tls.read_exact(&mut body).unwrap();
        } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                self.tls.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.tls.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

const INGRESS_ID: &str = "spiffe://cluster.local/ns/mesh-system/sa/ingress";

/// The shop: a frontend Service behind a Gateway with two HTTPS listener
/// hostnames (two certificates), admitting only the ingress's identity.
fn shop(cp: &ControlPlane, ca: &TestCa, app_port: u16, https_port: u16) {
    cp.write_policy(
        "secrets.yaml",
        &format!(
            "{}{}",
            ca.secret("mesh-system", "shop-tls", &["shop.example"]),
            ca.secret("mesh-system", "api-tls", &["api.example"])
        ),
    );
    cp.write_policy(
        "shop.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: frontend, namespace: shop}}\n\
             spec: {{clusterIP: 10.96.0.50, selector: {{app: frontend}}, ports: [{{port: 80, targetPort: {app_port}}}]}}\n\
             ---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: mesh-system}}\n\
             spec:\n  gatewayClassName: palisade\n  listeners:\n\
             \x20   - {{name: shop, hostname: shop.example, port: {https_port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: shop-tls}}]}}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n\
             \x20   - {{name: api, hostname: api.example, port: {https_port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: api-tls}}]}}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n\
             ---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: frontend, namespace: shop}}\n\
             spec:\n  parentRefs: [{{name: edge, namespace: mesh-system}}]\n  hostnames: [shop.example, api.example]\n\
             \x20 rules:\n    - backendRefs: [{{name: frontend, port: 80}}]\n\
             ---\n\
             apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: frontend, namespace: shop}}\n\
             spec:\n  selector: {{matchLabels: {{app: frontend}}}}\n  rules: [{{from: [{{source: {{principals: [cluster.local/ns/mesh-system/sa/ingress]}}}}]}}]\n\
             ---\n\
             apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: edge-deny, namespace: mesh-system}}\n\
             spec:\n  selector: {{matchLabels: {{app: ingress}}}}\n  action: DENY\n\
             \x20 rules:\n    - to: [{{operation: {{paths: [/admin/*]}}}}]\n    - from: [{{source: {{remoteIpBlocks: [203.0.113.0/24]}}}}]\n\
             ---\n\
             apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: edge-limit, namespace: mesh-system}}\n\
             spec:\n  selector: {{matchLabels: {{app: ingress}}}}\n  paths: [/limited*]\n  perClient: {{requestsPerSecond: 1, burst: 2}}\n"
        ),
    );
}

struct Edge {
    _rt: tokio::runtime::Runtime,
    cp: ControlPlane,
    ca: TestCa,
    app: EchoApp,
    _backend: Proxy,
}

fn edge() -> Edge {
    let rt = runtime();
    let cp = ControlPlane::start(CpOptions::default());
    let app = EchoApp::start(cp.dir.path(), "frontend");
    let ca = TestCa::new();
    let mut backend = ProxyOptions::new("shop", "frontend");
    backend.extra = vec!["--labels".into(), "app=frontend".into()];
    let backend = Proxy::start(&cp, backend);
    Edge {
        _rt: rt,
        cp,
        ca,
        app,
        _backend: backend,
    }
}

/// The shop behind an ingress whose Gateway listener is a fresh port:
/// the edge, the ingress (started with `extra` flags) and its address.
fn shop_edge(extra: &[&str]) -> (Edge, Ingress, SocketAddr) {
    let e = edge();
    let port = free_port();
    shop(&e.cp, &e.ca, e.app.port(), port);
    let port_arg = port.to_string();
    let mut args = vec!["--https-port", port_arg.as_str()];
    args.extend_from_slice(extra);
    let ingress = Ingress::start(&e.cp, &args);
    (e, ingress, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A connection once the ingress serves `sni` (its certificates arrive
/// with the policy, a moment after it is ready).
fn connect_when_served(cfg: &Arc<ClientConfig>, addr: SocketAddr, sni: &str) -> Client {
    wait_for(
        &format!("a certificate for {sni}"),
        // Generous: the whole suite runs beside it on two cores.
        Duration::from_secs(20),
        || Client::connect(cfg, addr, sni).ok(),
    )
}

/// The first answer that is not 503/404 (discovery and policy reach the
/// ingress a moment after it is ready).
fn first_answer(client: &mut impl FnMut() -> Resp) -> Resp {
    wait_for(
        "the frontend through the ingress",
        Duration::from_secs(10),
        || {
            let r = client();
            // 500: the Service is not in discovery yet.
            (r.status != 503 && r.status != 404 && r.status != 500).then_some(r)
        },
    )
}

#[test]
fn https_is_terminated_routed_and_re_encrypted_to_the_backend() {
    let e = edge();
    // The ingress takes its listener port from the Gateway: reserve it.
    let port = free_port();
    shop(&e.cp, &e.ca, e.app.port(), port);
    let ingress = Ingress::start(&e.cp, &["--https-port", &port.to_string()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = e.ca.client();
    let mut c = connect_when_served(&cfg, addr, "shop.example");
    let r = first_answer(&mut || c.get("shop.example", "/hello", &[]));
    assert_eq!(r.status, 200, "{}", r.body);
    // The app sees the ingress's identity (set by its sidecar from the mTLS
    // certificate), the client's address, and no forged identity.
    assert!(
        r.body
            .contains(&format!("x-palisade-peer-identity: {INGRESS_ID}")),
        "{}",
        r.body
    );
    assert!(r.body.contains("x-forwarded-proto: https"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-for: 127.0.0.1"), "{}", r.body);
    assert!(r.body.contains("traceparent: 00-"), "{}", r.body);
    let forged = c.get(
        "shop.example",
        "/forged",
        &[
            (
                "x-palisade-peer-identity",
                "spiffe://cluster.local/ns/shop/sa/admin",
            ),
            ("x-forwarded-for", "6.6.6.6"),
        ],
    );
    assert_eq!(forged.status, 200, "{}", forged.body);
    assert!(!forged.body.contains("sa/admin"), "{}", forged.body);
    assert!(!forged.body.contains("6.6.6.6"), "{}", forged.body);

    // HTTP/2 from the outside client (ALPN h2): the HTTP/1.1 app still
    // gets HTTP/1.1.
    let ca_file = e.cp.dir.path().join("edge-ca.pem");
    std::fs::write(&ca_file, e.ca.cert.pem()).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2", "--cacert"])
        .arg(&ca_file)
        .arg("--resolve")
        .arg(format!("shop.example:{port}:127.0.0.1"))
        .arg("-w")
        .arg("\n%{http_version} %{http_code}")
        .arg(format!("https://shop.example:{port}/via-h2"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n2 200"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("GET /via-h2 HTTP/1.1"), "{text}");

    // A host served with another certificate than the connection's: 421.
    let r = c.get("api.example", "/", &[]);
    assert_eq!(r.status, 421, "{}", r.body);
    // No route for the path's host: 404. The edge policy: 403 naming it,
    // and a client's own X-Forwarded-For (no trusted hops) changes nothing.
    let mut api = Client::connect(&cfg, addr, "api.example").expect("api.example handshake");
    assert_eq!(api.get("api.example", "/x", &[]).status, 200);
    let r = c.get("shop.example", "/admin/users", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body
            .contains("AuthorizationPolicy mesh-system/edge-deny rule 0"),
        "{}",
        r.body
    );
    let r = c.get(
        "shop.example",
        "/spoof",
        &[("x-forwarded-for", "203.0.113.9")],
    );
    assert_eq!(
        r.status, 200,
        "a spoofed X-Forwarded-For decided: {}",
        r.body
    );

    // An unknown server name is refused in the handshake (no default).
    assert!(Client::connect(&cfg, addr, "unknown.example").is_err());
    assert!(metric(&ingress.metrics(), "mesh_ingress_unknown_sni_total", &[]) >= 1.0);

    // The edge's own log: client, SNI, TLS, route, backend identity.
    let log = wait_for("the ingress access log", Duration::from_secs(5), || {
        let text = read(&ingress.access_log);
        text.contains("/forged").then_some(text)
    });
    let line: serde_json::Value =
        // The one that got through (earlier tries may have come before
        // discovery named the Service).
        serde_json::from_str(
            log.lines()
                .find(|l| l.contains("\"path\":\"/hello\"") && l.contains("\"status\":200"))
                .unwrap_or_else(|| panic!("no /hello answered 200:\n{log}")),
        )
        .unwrap();
    assert_eq!(line["direction"], "ingress", "{line}");
    assert_eq!(line["sni"], "shop.example", "{line}");
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert_eq!(line["tls_version"], "TLSv1.3", "{line}");
    assert_eq!(line["route"], "HTTPRoute shop/frontend rule 0", "{line}");
    assert_eq!(
        line["backend_identity"], "spiffe://cluster.local/ns/shop/sa/frontend",
        "{line}"
    );

    // The plain HTTP port only redirects.
    let (status, _) = http_get(ingress.http, "/cart").unwrap();
    assert_eq!(status, 308);
}

#[test]
fn a_replaced_certificate_serves_new_connections_while_open_ones_continue() {
    let (e, _ingress, addr) = shop_edge(&[]);
    let cfg = e.ca.client();
    let mut open = connect_when_served(&cfg, addr, "shop.example");
    let r = first_answer(&mut || open.get("shop.example", "/before", &[]));
    assert_eq!(r.status, 200);
    let old = open.server_cert();

    // cert-manager renews: the Secret gets a new certificate and key.
    e.cp.write_policy(
        "secrets.yaml",
        &format!(
            "{}{}",
            e.ca.secret("mesh-system", "shop-tls", &["shop.example"]),
            e.ca.secret("mesh-system", "api-tls", &["api.example"])
        ),
    );
    let renewed = std::time::Instant::now();
    let new = wait_for(
        "a new connection with the new certificate",
        Duration::from_secs(5),
        || {
            let c = Client::connect(&cfg, addr, "shop.example").ok()?;
            (c.server_cert() != old).then(|| c.server_cert())
        },
    );
    let took = renewed.elapsed();
    println!("renewed certificate served to new connections after {took:?}");
    assert_ne!(new, old);
    // The open connection keeps working, on the certificate it was made with.
    assert_eq!(open.get("shop.example", "/after", &[]).status, 200);
    assert_eq!(open.server_cert(), old);
}

#[test]
fn the_default_certificate_and_trusted_hops() {
    let (e, ingress, addr) = shop_edge(&[
        "--default-certificate",
        "mesh-system/shop-tls",
        "--trusted-hops",
        "1",
        "--hsts-max-age",
        "31536000",
    ]);
    let cfg = e.ca.client();
    // An unknown name gets the default certificate (shop.example's), so a
    // client that checks names refuses it, and one asking for shop.example
    // through it works.
    let mut c = connect_when_served(&cfg, addr, "shop.example");
    let err = Client::connect(&cfg, addr, "unknown.example")
        .err()
        .expect("a name mismatch");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    let r = first_answer(&mut || {
        c.get(
            "shop.example",
            "/ok",
            &[("x-forwarded-for", "198.51.100.1")],
        )
    });
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    // One trusted hop: the client it names is what is decided by, and
    // the chain grows.
    assert!(
        r.body.contains("x-forwarded-for: 198.51.100.1, 127.0.0.1"),
        "{}",
        r.body
    );
    let r = c.get(
        "shop.example",
        "/blocked",
        &[("x-forwarded-for", "203.0.113.9")],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body
            .contains("AuthorizationPolicy mesh-system/edge-deny rule 1"),
        "{}",
        r.body
    );
    // Rate limits per client address: each client behind the trusted hop
    // has its own; beyond its burst of 2 at 1/s, one is refused, naming
    // the policy.
    let limited =
        |c: &mut Client, ip: &str| c.get("shop.example", "/limited", &[("x-forwarded-for", ip)]);
    let answers: Vec<Resp> = (0..5).map(|_| limited(&mut c, "198.51.100.7")).collect();
    let codes: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(codes[..2], [200, 200], "{codes:?}");
    let r = answers
        .into_iter()
        .find(|r| r.status == 429)
        .unwrap_or_else(|| panic!("{codes:?}"));
    assert!(
        r.body
            .contains("rate limited by RateLimitPolicy mesh-system/edge-limit"),
        "{}",
        r.body
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        limited(&mut c, "198.51.100.8").status,
        200,
        "another client's own limit"
    );
    drop(ingress);
}

/// The Ingress example of docs/ingress.md, as written, through the binary:
/// its host rule, its Exact path and its TLS Secret.
#[test]
fn the_documented_ingress_serves_as_written() {
    let e = edge();
    let auth = EchoApp::start(e.cp.dir.path(), "auth");
    let mut opts = ProxyOptions::new("shop", "auth");
    opts.extra = vec!["--labels".into(), "app=auth".into()];
    let _auth_proxy = Proxy::start(&e.cp, opts);
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ingress.md"))
        .unwrap();
    let example: String = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("kind: Ingress"))
        .unwrap()
        .to_owned();
    e.cp.write_policy(
        "ingress.yaml",
        &format!(
            "{}apiVersion: v1\nkind: Service\nmetadata: {{name: frontend, namespace: shop}}\n\
             spec: {{clusterIP: 10.96.0.60, selector: {{app: frontend}}, ports: [{{port: 80, targetPort: {}}}]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: auth, namespace: shop}}\n\
             spec: {{clusterIP: 10.96.0.61, selector: {{app: auth}}, ports: [{{name: http, port: 80, targetPort: {}}}]}}\n---\n{example}",
            e.ca.secret("shop", "shop-tls", &["shop.example"]),
            e.app.port(),
            auth.port()
        ),
    );
    let ingress = Ingress::start(&e.cp, &[]);
    let cfg = e.ca.client();
    let mut c = connect_when_served(&cfg, ingress.https, "shop.example");
    let r = first_answer(&mut || c.get("shop.example", "/login", &[]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("auth received"), "{}", r.body);
    let r = first_answer(&mut || c.get("shop.example", "/login/more", &[]));
    assert!(r.body.starts_with("frontend received"), "{}", r.body);
}

/// VmHWM and VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Slowloris (Debian's slowhttptest, 300 connections dripping headers),
/// oversized heads and request smuggling against the ingress: each is cut
/// off or refused, and meanwhile other clients' new connections are served
/// and the gateway's memory stays bounded.
#[test]
fn hostile_clients_are_refused_without_disturbing_others() {
    let e = edge();
    let port = free_port();
    shop(&e.cp, &e.ca, e.app.port(), port);
    let ingress = Ingress::start(
        &e.cp,
        &[
            "--https-port",
            &port.to_string(),
            // slowhttptest sends no server name: it gets the default.
            "--default-certificate",
            "mesh-system/shop-tls",
            "--header-read-timeout",
            "2s",
        ],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = e.ca.client();
    let mut c = connect_when_served(&cfg, addr, "shop.example");
    assert_eq!(
        first_answer(&mut || c.get("shop.example", "/warm", &[])).status,
        200
    );

    // Oversized head: 431. Smuggling: 400 and the connection closed.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: shop.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    assert_eq!(c.raw(big.as_bytes()).status, 431);
    assert!(c.closed(), "the connection stayed open after a 431");
    let mut s = connect_when_served(&cfg, addr, "shop.example");
    let r = s.raw(b"POST /s HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        s.closed(),
        "the connection stayed open after a smuggling attempt"
    );

    let pid = ingress.proc.child.id();
    let (_, before) = rss_kib(pid);
    let attack = std::process::Command::new("slowhttptest")
        .args([
            "-H", "-c", "300", "-r", "150", "-i", "1", "-l", "6", "-x", "8", "-p", "3",
        ])
        .arg("-u")
        .arg(format!("https://127.0.0.1:{port}/"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("slowhttptest (scripts/setup.sh installs it)");
    let started = std::time::Instant::now();
    let (mut served, mut tried, mut peak) = (0, 0, 0);
    while started.elapsed() < Duration::from_secs(6) {
        tried += 1;
        if let Ok(mut other) = Client::connect(&cfg, addr, "shop.example")
            && other.get("shop.example", "/during", &[]).status == 200
        {
            served += 1;
        }
        peak = peak.max(rss_kib(pid).1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = attack.wait_with_output().expect("slowhttptest ends");
    let report = String::from_utf8_lossy(&out.stdout);
    println!(
        "slowloris: {served}/{tried} other clients served; ingress RSS {before} KiB before, {peak} KiB peak"
    );
    assert_eq!(served, tried, "other clients failed during the attack");
    assert!(tried >= 20, "{tried}");
    assert!(
        peak < before + 32 * 1024,
        "RSS grew from {before} to {peak} KiB"
    );
    // The dripping connections were cut off by the header timeout.
    assert!(report.contains("closed"), "{report}");
    let mut after = connect_when_served(&cfg, addr, "shop.example");
    assert_eq!(after.get("shop.example", "/after", &[]).status, 200);
}

/// A PROXY protocol v2 header (HAProxy's specification, §2.2) for a TCP
/// connection from `client` to `to`; `local`: the balancer's own check.
fn proxy_header(client: SocketAddr, to: SocketAddr, local: bool) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(if local { 0x20 } else { 0x21 });
    let (SocketAddr::V4(c), SocketAddr::V4(t)) = (client, to) else {
        panic!("IPv4 only here");
    };
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&t.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&t.port().to_be_bytes());
    h
}

/// Behind a TCP load balancer that speaks PROXY protocol v2, the client
/// its header names is the one decided by (edge AuthorizationPolicy,
/// forwarding headers); a connection from the balancer without a valid
/// header is closed; RateLimitPolicies limit by request host and by the
/// route taken.
#[test]
fn a_balancers_proxy_header_names_the_client_and_limits_go_by_host_and_route() {
    let e = edge();
    let port = free_port();
    shop(&e.cp, &e.ca, e.app.port(), port);
    e.cp.write_policy(
        "limits.yaml",
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: by-host, namespace: mesh-system}\n\
         spec:\n  selector: {matchLabels: {app: ingress}}\n  hosts: [api.example]\n  total: {requestsPerSecond: 1, burst: 1}\n---\n\
         apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: by-route, namespace: mesh-system}\n\
         spec:\n  selector: {matchLabels: {app: ingress}}\n  routes: [shop/frontend]\n  paths: [/by-route*]\n  total: {requestsPerSecond: 1, burst: 1}\n---\n\
         apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: other-route, namespace: mesh-system}\n\
         spec:\n  selector: {matchLabels: {app: ingress}}\n  routes: [shop/elsewhere]\n  paths: [/other*]\n  total: {requestsPerSecond: 1, burst: 1}\n",
    );
    let ingress = Ingress::start(
        &e.cp,
        &[
            "--https-port",
            &port.to_string(),
            "--proxy-protocol-from",
            "127.0.0.0/8",
        ],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = e.ca.client();
    let via = |client: &str, sni: &str| {
        let client: SocketAddr = client.parse().unwrap();
        wait_for(
            &format!("a certificate for {sni}"),
            Duration::from_secs(10),
            || Client::connect_after(&cfg, addr, sni, &proxy_header(client, addr, false)).ok(),
        )
    };
    let mut c = via("198.51.100.3:40000", "shop.example");
    let r = first_answer(&mut || c.get("shop.example", "/hello", &[]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("x-forwarded-for: 198.51.100.3\n"),
        "the app is told the balancer's client: {}",
        r.body
    );
    let mut blocked = via("203.0.113.9:40000", "shop.example");
    let r = blocked.get("shop.example", "/x", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body
            .contains("AuthorizationPolicy mesh-system/edge-deny rule 1"),
        "{}",
        r.body
    );
    // The balancer's own health check (LOCAL): the connection's address.
    let mut check = Client::connect_after(
        &cfg,
        addr,
        "shop.example",
        &proxy_header("10.0.0.1:1".parse().unwrap(), addr, true),
    )
    .expect("a LOCAL header is accepted");
    let r = check.get("shop.example", "/health", &[]);
    assert!(
        r.body.contains("x-forwarded-for: 127.0.0.1\n"),
        "{}",
        r.body
    );
    // From the balancer without a header: closed, counted.
    assert!(Client::connect(&cfg, addr, "shop.example").is_err());
    wait_for("the refusal counted", Duration::from_secs(5), || {
        (metric(
            &ingress.metrics(),
            "mesh_ingress_proxy_protocol_errors_total",
            &[],
        ) >= 1.0)
            .then_some(())
    });

    // Limits by host: api.example's one request a second; shop.example
    // is not counted against it.
    let mut api = via("198.51.100.4:40000", "api.example");
    let first = api.get("api.example", "/a", &[]);
    assert_eq!(first.status, 200, "{}", first.body);
    let r = api.get("api.example", "/b", &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.body
            .contains("rate limited by RateLimitPolicy mesh-system/by-host"),
        "{}",
        r.body
    );
    assert_eq!(c.get("shop.example", "/c", &[]).status, 200);
    // By route: the route that took the request counts; a policy naming
    // another route limits nothing here.
    let codes: Vec<u16> = (0..2)
        .map(|_| c.get("shop.example", "/by-route", &[]).status)
        .collect();
    assert_eq!(codes, [200, 429]);
    let codes: Vec<u16> = (0..3)
        .map(|_| c.get("shop.example", "/other", &[]).status)
        .collect();
    assert_eq!(codes, [200, 200, 200]);
}

/// `--max-request-body-bytes` holds for bodies that announce no length:
/// a chunked body is counted as it streams and cut off with 413; one
/// under the limit arrives whole.
#[test]
fn bodies_without_a_length_are_limited_as_they_stream() {
    let (e, _ingress, addr) = shop_edge(&["--max-request-body-bytes", "1024"]);
    let cfg = e.ca.client();
    let mut c = connect_when_served(&cfg, addr, "shop.example");
    assert_eq!(
        first_answer(&mut || c.get("shop.example", "/warm", &[])).status,
        200
    );
    let chunked = |chunks: usize, size: usize| {
        let mut req =
            b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for _ in 0..chunks {
            req.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            req.extend(std::iter::repeat_n(b'x', size));
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        req
    };
    let r = c.raw(&chunked(2, 300));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("body: 600 bytes"), "{}", r.body);
    // Announced too large: refused at once.
    let r = c.raw(b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 2048\r\n\r\n");
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(c.closed());
    // Streamed past the limit: cut off.
    let mut c = connect_when_served(&cfg, addr, "shop.example");
    let r = c.raw(&chunked(4, 512));
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(c.closed(), "the connection stayed open after a 413");
    // Others are served meanwhile.
    let mut other = connect_when_served(&cfg, addr, "shop.example");
    assert_eq!(other.get("shop.example", "/after", &[]).status, 200);
}

/// An endpoint whose sidecar is not the identity discovery names (here a
/// registration claims the frontend lives where another workload's proxy
/// listens): the ingress refuses the handshake and answers 503; the
/// request never reaches anyone.
#[test]
fn a_backend_with_another_identity_gets_503() {
    let rt = runtime();
    let cp = ControlPlane::start(CpOptions::default());
    let app = EchoApp::start(cp.dir.path(), "frontend");
    let ca = TestCa::new();
    let impostor = Proxy::start(&cp, ProxyOptions::new("shop", "impostor"));
    // The frontend's own credential registers an endpoint at the
    // impostor's inbound port.
    let bundle =
        mesh_identity::TrustBundle::from_pem(&std::fs::read(cp.trust_bundle()).unwrap()).unwrap();
    let frontend =
        mesh_identity::SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/frontend").unwrap();
    let store = Arc::new(mesh_identity::Store::new(
        frontend,
        bundle,
        mesh_identity::tls::provider(),
    ));
    let cp_addr = cp.listen.to_string();
    let token = cp.token_file("shop", "frontend");
    let inbound_port = u32::from(impostor.inbound.port());
    let app_port = u32::from(app.port());
    let (registered_tx, registered) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let channel = mesh_control_client::channel(&store, &cp_addr).unwrap();
        let certifier = mesh_control_client::ControlPlaneCertifier::new(
            channel.clone(),
            token,
            Duration::from_secs(3600),
        );
        store.certify_once(&certifier).await.unwrap();
        // A new connection, with the certificate.
        let channel = mesh_control_client::channel(&store, &cp_addr).unwrap();
        let mut client = mesh_proto::policy::policy_client::PolicyClient::new(channel);
        let mut stream = client
            .watch(mesh_proto::policy::WatchRequest {
                workload: "frontend-0".into(),
                labels: [("app".to_string(), "frontend".to_string())].into(),
                ips: vec!["127.0.0.1".into()],
                ports: vec![app_port],
                inbound_port,
            })
            .await
            .unwrap()
            .into_inner();
        let _ = registered_tx.send(());
        // Registered while the stream is open.
        while let Ok(Some(_)) = stream.message().await {}
    });
    registered
        .recv_timeout(Duration::from_secs(10))
        .expect("the registration");
    let port = free_port();
    shop(&cp, &ca, app.port(), port);
    let ingress = Ingress::start(&cp, &["--https-port", &port.to_string()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = ca.client();
    let mut c = connect_when_served(&cfg, addr, "shop.example");
    let refused = wait_for("the impostor refused", Duration::from_secs(10), || {
        let r = c.get("shop.example", "/secret", &[]);
        assert_ne!(
            r.status, 200,
            "the request reached a wrong identity: {}",
            r.body
        );
        let failures = metric(
            &ingress.metrics(),
            "mesh_tls_handshake_failures_total",
            &[("reason", "wrong_identity")],
        );
        (r.status == 503 && failures >= 1.0).then_some(r)
    });
    // The outside client learns nothing of the mesh behind the border;
    // the ingress's log says what happened.
    assert_eq!(refused.body, "Service Unavailable (handshake)\n");
    wait_for("the refusal logged", Duration::from_secs(5), || {
        ingress
            .logs()
            .contains("peer is spiffe://cluster.local/ns/shop/sa/impostor, expected spiffe://cluster.local/ns/shop/sa/frontend")
            .then_some(())
    });
}

/// A route of namespace `web` whose backend is the shop's frontend: refused
/// (500, RefNotPermitted) until a ReferenceGrant in `shop` allows it, and
/// again once the grant is removed; the grant takes effect without a restart.
#[test]
fn a_backend_in_another_namespace_needs_a_reference_grant() {
    let (e, ingress, addr) = shop_edge(&[]);
    let cfg = e.ca.client();
    let mut c = connect_when_served(&cfg, addr, "api.example");
    // The shop serves first: a 500 after this is the refusal, not discovery
    // still on its way.
    assert_eq!(
        first_answer(&mut || c.get("api.example", "/cross", &[])).status,
        200
    );
    e.cp.write_policy(
        "cross.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: cross, namespace: web}\n\
         spec:\n  parentRefs: [{name: edge, namespace: mesh-system}]\n  hostnames: [api.example]\n\
         \x20 rules:\n    - matches: [{path: {type: PathPrefix, value: /cross}}]\n      backendRefs: [{name: frontend, namespace: shop, port: 80}]\n",
    );
    let refused = wait_for("the cross route", Duration::from_secs(10), || {
        let r = c.get("api.example", "/cross", &[]);
        // Before the route arrives, the shop's catch-all route answers.
        (!r.body.starts_with("frontend received")).then_some(r)
    });
    assert_eq!(refused.status, 500, "{}", refused.body);
    // The client learns nothing of the mesh's namespaces; the ingress's
    // log says why.
    assert!(!refused.body.contains("shop/frontend"), "{}", refused.body);
    wait_for(
        "the refusal in the access log",
        Duration::from_secs(5),
        || {
            read(&ingress.access_log)
                .lines()
                .any(|l| {
                    l.contains("\"path\":\"/cross\"")
                        && l.contains("\"route\":\"HTTPRoute web/cross rule 0\"")
                        && l.contains("RefNotPermitted")
                })
                .then_some(())
        },
    );
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                 metadata: {name: web-to-frontend, namespace: shop}\n\
                 spec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\n\
                 \x20 to: [{group: \"\", kind: Service, name: frontend}]\n";
    e.cp.write_policy("grant.yaml", grant);
    let served = wait_for("the grant", Duration::from_secs(10), || {
        let r = c.get("api.example", "/cross/x", &[]);
        (r.status == 200).then_some(r)
    });
    assert!(
        served.body.starts_with("frontend received \"GET /cross/x"),
        "{}",
        served.body
    );
    e.cp.remove_policy("grant.yaml");
    wait_for("the grant removed", Duration::from_secs(10), || {
        (c.get("api.example", "/cross", &[]).status == 500).then_some(())
    });
}
