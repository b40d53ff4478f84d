//! gRPC through two sidecars (client → proxy A → pooled `palisade/h2` →
//! proxy B → app): every RPC shape, statuses, metadata and trailers arrive
//! intact, deadlines are passed on, many streams share one pooled
//! connection, and an L7 rule on a gRPC method answers PERMISSION_DENIED
//! naming the rule.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_tests::grpc::pb::Msg;
use mesh_tests::grpc::pb::echo_client::EchoClient;
use mesh_tests::*;
use tonic::transport::Channel;

fn msg(text: &str) -> Msg {
    Msg {
        text: text.into(),
        ..Default::default()
    }
}

async fn client(listen: SocketAddr) -> EchoClient<Channel> {
    let ch = Channel::from_shared(format!("http://{listen}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to proxy A");
    EchoClient::new(ch)
}

/// VmRSS of a proxy, KiB.
fn rss_kib(p: &Proxy) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", p.proc.child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Mesh {
    _cp: ControlPlane,
    a: Proxy,
    b: Proxy,
    listen: SocketAddr,
}

fn mesh(app: SocketAddr, policy: Option<&str>) -> Mesh {
    let cp = ControlPlane::start(CpOptions::default());
    if let Some(p) = policy {
        cp.write_policy("policy.yaml", p);
        cp.wait_policy_objects(1);
    }
    let b = Proxy::start(&cp, ProxyOptions::new("default", "api"));
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let a = Proxy::start(&cp, opts);
    Mesh {
        _cp: cp,
        a,
        b,
        listen,
    }
}

#[test]
fn every_rpc_shape_crosses_the_mesh_intact() {
    let rt = runtime();
    let app = rt.block_on(mesh_tests::grpc::serve());
    let m = mesh(app, None);
    rt.block_on(async {
        let mut c = client(m.listen).await;
        // Unary: the message and the response metadata.
        let r = c.unary(msg("hello")).await.expect("unary");
        assert_eq!(r.metadata().get("x-test").unwrap(), "hello");
        assert_eq!(r.into_inner().text, "hello");
        // A failure: code, message and trailer metadata, all from the app.
        let e = c
            .unary(Msg {
                text: "nope".into(),
                fail_code: 5,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(e.message(), "failed: nope");
        assert_eq!(e.metadata().get("x-test-trailer").unwrap(), "yes");
        // Server streaming: every message, in order.
        let mut s = c
            .server_stream(Msg {
                text: "s".into(),
                count: 200,
                ..Default::default()
            })
            .await
            .expect("server stream")
            .into_inner();
        let mut got = Vec::new();
        while let Some(m) = s.message().await.expect("stream message") {
            got.push(m.text);
        }
        assert_eq!(got, (0..200).map(|i| format!("s-{i}")).collect::<Vec<_>>());
        // Client streaming.
        let up = tokio_stream::iter((0..50).map(|i| msg(&format!("{i},"))));
        let r = c
            .client_stream(up)
            .await
            .expect("client stream")
            .into_inner();
        assert_eq!(r.count, 50);
        assert_eq!(r.text, (0..50).map(|i| format!("{i},")).collect::<String>());
        // Bidirectional: each reply arrives before the next message is sent.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut replies = c
            .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("bidi")
            .into_inner();
        for i in 0..20 {
            tx.send(msg(&format!("b{i}"))).await.unwrap();
            let r = replies.message().await.unwrap().expect("reply");
            assert_eq!(r.text, format!("echo:b{i}"));
        }
        drop(tx);
        assert!(replies.message().await.unwrap().is_none());
        // The deadline reaches the app, and is honoured.
        let mut req = tonic::Request::new(msg("quick"));
        req.set_timeout(Duration::from_secs(7));
        let r = c.unary(req).await.expect("within the deadline");
        let saw = r
            .metadata()
            .get("x-saw-grpc-timeout")
            .expect("grpc-timeout passed on");
        assert!(
            saw.to_str().unwrap().ends_with(['S', 'm', 'u', 'n']),
            "{saw:?}"
        );
        // Set as the header alone (no client-side timer), so the status
        // that comes back is the app's, through both proxies.
        let mut req = tonic::Request::new(Msg {
            text: "slow".into(),
            sleep_ms: 5_000,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("grpc-timeout", "300m".parse().unwrap());
        let started = Instant::now();
        let e = c.unary(req).await.unwrap_err();
        // The client's own timer and the app's deadline race; either way
        // the call ends at the deadline ...
        assert!(
            matches!(
                e.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // ... and the app stops working on it: the deadline or the reset
        // crossed both proxies (it would otherwise sleep 5 s).
        let deadline = Instant::now() + Duration::from_secs(2);
        while mesh_tests::grpc::SLEEPING.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            assert!(
                Instant::now() < deadline,
                "the app still works on a call past its deadline"
            );
            tokio::task::yield_now().await;
        }
    });
    // gRPC status is a label of the request metrics.
    assert!(
        metric(
            &m.b.metrics(),
            "mesh_requests_total",
            &[("direction", "inbound"), ("grpc_status", "5")]
        ) >= 1.0,
        "{}",
        m.b.metrics()
    );
}

#[test]
fn a_thousand_concurrent_streams_share_one_pooled_connection() {
    let rt = runtime();
    let app = rt.block_on(mesh_tests::grpc::serve());
    let m = mesh(app, None);
    let sleep_ms = 2_000;
    let (ok, rss) = rt.block_on(async {
        // Ten app connections (each may open 100 streams), one pooled
        // connection between the proxies.
        let mut clients = Vec::new();
        for _ in 0..10 {
            let mut c = client(m.listen).await;
            c.unary(msg("warm")).await.expect("warm-up call");
            clients.push(c);
        }
        let before = (rss_kib(&m.a), rss_kib(&m.b));
        let mut calls = Vec::new();
        for c in clients {
            for i in 0..100 {
                let mut c = c.clone();
                calls.push(tokio::spawn(async move {
                    let r = c
                        .unary(Msg {
                            text: format!("c{i}"),
                            sleep_ms,
                            ..Default::default()
                        })
                        .await;
                    r.map(|r| r.into_inner().text == format!("c{i}"))
                        .unwrap_or(false)
                }));
            }
        }
        // All 1,000 in flight at once: the memory of open streams.
        let deadline = Instant::now() + Duration::from_secs(10);
        while mesh_tests::grpc::SLEEPING.load(std::sync::atomic::Ordering::SeqCst) < 1000 {
            assert!(
                Instant::now() < deadline,
                "1,000 calls never were in flight at once"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let during = (rss_kib(&m.a), rss_kib(&m.b));
        let mut ok = 0;
        for c in calls {
            if c.await.unwrap_or(false) {
                ok += 1;
            }
        }
        (ok, (before, during))
    });
    assert_eq!(ok, 1000);
    let ((a0, b0), (a1, b1)) = rss;
    let per_stream = |x0: u64, x1: u64| x1.saturating_sub(x0) as f64 / 1000.0;
    println!(
        "RSS with 1,000 open streams: A {a0} -> {a1} KiB ({:.1} KiB per stream, its app side included), B {b0} -> {b1} KiB ({:.1} KiB per stream)",
        per_stream(a0, a1),
        per_stream(b0, b1)
    );
    assert!(
        per_stream(b0, b1) <= 16.0,
        "B holds more than 16 KiB per open stream"
    );
    let accepted = metric(
        &m.b.metrics(),
        "mesh_tcp_connections_total",
        &[("direction", "inbound"), ("tls", "true")],
    );
    assert_eq!(accepted, 1.0, "mesh connections accepted by B");
    let connects = metric(
        &m.a.metrics(),
        "mesh_pool_connects_total",
        &[("result", "success")],
    );
    assert_eq!(connects, 1.0, "pooled connections opened by A");
}

const METHOD_POLICY: &str = r#"
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: echo-unary-only, namespace: default}
spec:
  action: ALLOW
  rules:
  - to:
    - operation:
        paths: ["/palisade.test.v1.Echo/Unary"]
"#;

#[test]
fn an_l7_rule_on_a_grpc_method_is_enforced_per_call() {
    let rt = runtime();
    let app = rt.block_on(mesh_tests::grpc::serve());
    let m = mesh(app, Some(METHOD_POLICY));
    rt.block_on(async {
        let mut c = client(m.listen).await;
        assert_eq!(
            c.unary(msg("allowed"))
                .await
                .expect("allowed")
                .into_inner()
                .text,
            "allowed"
        );
        let e = c
            .server_stream(Msg {
                text: "x".into(),
                count: 1,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert_eq!(e.message(), "access denied: default deny");
        // The same connection keeps serving allowed calls.
        assert!(c.unary(msg("again")).await.is_ok());
    });
    wait_for(
        "the access log line of the denied call",
        Duration::from_secs(5),
        || {
            m.b.logs()
                .lines()
                .any(|l| {
                    l.contains("\"path\":\"/palisade.test.v1.Echo/ServerStream\"")
                        && l.contains("\"decision\":\"deny\"")
                        && l.contains("\"grpc_status\":7")
                })
                .then_some(())
        },
    );
}

#[test]
fn sigterm_lets_grpc_calls_in_flight_finish_on_both_proxies() {
    use std::sync::atomic::Ordering;
    let rt = runtime();
    let app = rt.block_on(mesh_tests::grpc::serve());
    let mut m = mesh(app, None);
    let mut c = rt.block_on(client(m.listen));
    let call = rt.spawn(async move {
        c.unary(Msg {
            text: "long".into(),
            sleep_ms: 1_500,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().text)
    });
    wait_for("the call to reach the app", Duration::from_secs(5), || {
        (mesh_tests::grpc::SLEEPING.load(Ordering::SeqCst) > 0).then_some(())
    });
    // Both proxies drain while the call is in flight: the client's
    // connection to A and A's pooled connection to B get GOAWAY.
    m.a.proc.terminate();
    m.b.proc.terminate();
    let got = rt.block_on(call).unwrap();
    assert_eq!(got.expect("the call in flight finishes"), "long");
    for (name, p) in [("A", &mut m.a), ("B", &mut m.b)] {
        let status = p.proc.wait_exit(Duration::from_secs(12));
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} exits cleanly after draining"
        );
    }
}
