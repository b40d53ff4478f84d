//! The live flow map in a real browser: headless Chromium (Debian's
//! package, installed by scripts/setup.sh), driven over the DevTools
//! protocol, loads the control plane's `/map` while a mesh carries traffic.
//! The page shows the expected workloads and an allowed and a denied edge;
//! then, without a reload, an edge appears after new traffic. Screenshots
//! of both moments are saved (their paths printed).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use mesh_tests::*;
use tokio_tungstenite::tungstenite::Message;

const ALLOW: &str = "apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web, cluster.local/ns/shop/sa/newcomer]}}]}]
";

/// A headless Chromium with one page, and its DevTools connection.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    next: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole process group: /usr/bin/chromium is a script whose
        // browser and helpers would outlive it.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-crash-reporter",
                "--disable-breakpad",
                "--remote-debugging-port=0",
                "--window-size=1280,720",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("chromium (scripts/setup.sh installs it)");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        // Killed with its group if anything below fails.
        struct Group(u32);
        impl Drop for Group {
            fn drop(&mut self) {
                if self.0 != 0 {
                    let _ = Command::new("kill")
                        .args(["-s", "KILL", "--", &format!("-{}", self.0)])
                        .status();
                }
            }
        }
        let mut group = Group(child.id());
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Read stderr to its end (a closed pipe would stop the browser).
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(p) = l
                    .split("ws://127.0.0.1:")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = tx.send(p);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("chromium's DevTools port");
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let page = wait_for("the page target", Duration::from_secs(10), || {
            let list: serde_json::Value = serde_json::from_str(&targets(devtools)?).ok()?;
            list.as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        });
        let rt = runtime();
        let (ws, _) = rt
            .block_on(async {
                let tcp = tokio::net::TcpStream::connect(devtools).await?;
                tokio_tungstenite::client_async(page, tcp)
                    .await
                    .map_err(std::io::Error::other)
            })
            .expect("DevTools websocket");
        group.0 = 0;
        Browser {
            child,
            _profile: profile,
            rt,
            ws,
            next: 0,
        }
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        let ws = &mut self.ws;
        self.rt.block_on(async {
            let msg = serde_json::json!({"id": id, "method": method, "params": params});
            ws.send(Message::text(msg.to_string())).await.expect("send");
            loop {
                let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .expect("a DevTools answer in time")
                    .expect("open")
                    .expect("frame");
                if let Message::Text(t) = m {
                    let v: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                    if v["id"] == id {
                        return v["result"].clone();
                    }
                }
            }
        })
    }

    /// Evaluates `js` in the page: its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": js, "returnByValue": true}),
        )["result"]["value"]
            .clone()
    }

    fn edge(&mut self, source_sa: &str, kind: &str) -> bool {
        self.eval(&format!(
            "document.querySelectorAll('path.edge[data-source=\"spiffe://cluster.local/ns/shop/sa/{source_sa}\"][data-kind=\"{kind}\"]').length"
        )) == 1
    }

    fn screenshot(&mut self, path: &PathBuf) {
        let shot = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("PNG data"))
            .expect("base64");
        assert!(png.len() > 10_000, "a rendered page, not a blank one");
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

/// DevTools' `/json/list`. It answers a Host that is an address only, and
/// keeps the connection open: the body is read by its Content-Length.
fn targets(devtools: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(devtools).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(format!("GET /json/list HTTP/1.1\r\nHost: {devtools}\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = c.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })?
                .parse()
                .ok()?;
            if body.len() >= len {
                return Some(body[..len].to_owned());
            }
        }
    }
}

fn has_flow(cp: &ControlPlane, sa: &str) -> bool {
    http_get(cp.admin, "/flows")
        .map(|(_, b)| b.contains(&format!("/ns/shop/sa/{sa}\"")))
        .unwrap_or(false)
}

#[test]
fn the_map_shows_workloads_and_allowed_and_denied_edges_and_updates_live() {
    let cp = ControlPlane::start(CpOptions::default());
    cp.write_policy("allow.yaml", ALLOW);
    cp.wait_policy_objects(1);
    let app = EchoApp::start(cp.dir.path(), "api");
    let mut o = ProxyOptions::new("shop", "api");
    o.extra = vec!["--labels".into(), "app=api".into()];
    let api = Proxy::start(&cp, o);
    let mut routes = Vec::new();
    let mut proxies = Vec::new();
    for sa in ["web", "intruder", "newcomer"] {
        let mut o = ProxyOptions::new("shop", sa);
        routes.push(o.route(&api, app.port(), &api.identity));
        proxies.push(Proxy::start(&cp, o));
    }
    let status = |addr| http_request(addr, "GET", "/", "api", &[]).map(|r| r.0).ok();
    assert_eq!(status(routes[0]), Some(200));
    assert_eq!(status(routes[1]), Some(403));
    wait_for("both flows", Duration::from_secs(10), || {
        (has_flow(&cp, "web") && has_flow(&cp, "intruder")).then_some(())
    });

    let mut b = Browser::open(&format!("http://{}/map", cp.admin));
    wait_for("the map's nodes and edges", Duration::from_secs(10), || {
        (b.edge("web", "allowed") && b.edge("intruder", "denied")).then_some(())
    });
    assert_eq!(
        b.eval("document.querySelectorAll('rect[data-namespace=\"shop\"]').length"),
        1
    );
    assert_eq!(
        b.eval("document.querySelectorAll('g.node[data-id=\"spiffe://cluster.local/ns/shop/sa/api\"]').length"),
        1
    );
    // Each workload shows its certificate's time left (24 h certificates).
    let left = b.eval(
        "Number(document.querySelector('g.node[data-id=\"spiffe://cluster.local/ns/shop/sa/api\"] text.cert-left').getAttribute('data-seconds'))",
    );
    let left = left
        .as_i64()
        .expect("the api node shows its certificate's time left");
    assert!((23 * 3600..=24 * 3600).contains(&left), "{left} s left");
    assert!(!b.edge("newcomer", "allowed"), "not yet");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    b.screenshot(&shots.join("flow-map.png"));

    // New traffic: the open page shows the new edge, without a reload.
    assert_eq!(status(routes[2]), Some(200));
    wait_for("the new edge, live", Duration::from_secs(10), || {
        b.edge("newcomer", "allowed").then_some(())
    });
    b.screenshot(&shots.join("flow-map-live.png"));
}
