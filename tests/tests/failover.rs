//! Two control plane replicas serve one mesh, as the Deployment's two do:
//! they share the CA and read the same source. Proxies given both fail over
//! when the one they use dies, and no request fails on the way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh_tests::*;

/// Keep-alive connections the load runs on, and the rate of each.
const CONNECTIONS: u64 = 10;
const RATE_PER_CONNECTION: u64 = 100;

/// Requests at `CONNECTIONS × RATE_PER_CONNECTION` per second through
/// `listen` until `stop` is set; counts answered 200s and everything else.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(rt: &tokio::runtime::Runtime, listen: SocketAddr) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..CONNECTIONS)
            .map(|_| {
                let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
                rt.spawn(async move {
                    let mut tick =
                        tokio::time::interval(Duration::from_millis(1000 / RATE_PER_CONNECTION));
                    let mut conn = None;
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        if conn.is_none() {
                            conn = connect(listen).await;
                        }
                        let answered = match conn.as_mut() {
                            Some(c) => get(c).await,
                            None => false,
                        };
                        if answered {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                })
            })
            .collect();
        Load {
            ok,
            failed,
            stop,
            tasks,
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn finish(self, rt: &tokio::runtime::Runtime) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = rt.block_on(t);
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>;

async fn connect(listen: SocketAddr) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(listen).await.ok()?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(send)
}

/// One GET, answered 200 with its whole body, within 5 s.
async fn get(send: &mut Sender) -> bool {
    let req = http::Request::get("/failover")
        .header("host", "api")
        .body(Empty::new());
    let Ok(req) = req else { return false };
    let exchange = async {
        send.ready().await.ok()?;
        let resp = send.send_request(req).await.ok()?;
        let status = resp.status();
        resp.into_body().collect().await.ok()?;
        Some(status == 200)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), exchange).await,
        Ok(Some(true))
    )
}

/// `mesh_control_plane_connects_total{address,result="success"}` at a proxy.
fn connects_to(p: &Proxy, cp: &ControlPlane) -> f64 {
    metric(
        &p.metrics(),
        "mesh_control_plane_connects_total",
        &[("address", &cp.listen.to_string()), ("result", "success")],
    )
}

#[test]
fn proxies_fail_over_to_the_other_replica_without_a_failed_request() {
    let mut first = ControlPlane::start(CpOptions::default());
    let second = first.replica();
    // Same source, same version on both replicas (derived from the content).
    let version = |cp: &ControlPlane| cp.status()["policy"]["version"].as_u64();
    assert!(version(&first).is_some());
    assert_eq!(version(&first), version(&second));

    let app = EchoApp::start(first.dir.path(), "api");
    let both = |mut o: ProxyOptions<'static>| {
        o.extra.push("--control-plane".into());
        o.extra.push(second.listen.to_string());
        o
    };
    let b = Proxy::start(&first, both(ProxyOptions::new("default", "api")));
    let mut opts = both(ProxyOptions::new("default", "web"));
    let listen = opts.route(&b, app.port(), &b.identity);
    let a = Proxy::start(&first, opts);
    // Both proxies are on the first replica (listed first).
    for p in [&a, &b] {
        assert!(connects_to(p, &first) >= 1.0);
        assert_eq!(connects_to(p, &second), 0.0);
    }

    let rt = runtime();
    let load = Load::start(&rt, listen);
    wait_for("the load under way", Duration::from_secs(10), || {
        (load.counts().0 >= 2000).then_some(())
    });
    first.stop();
    let killed = Instant::now();
    // Both proxies' streams (Policy.Watch, Discovery.Watch) are now on the
    // second replica, which counts them as connected.
    let on_second = || {
        connects_to(&a, &second) >= 1.0
            && connects_to(&b, &second) >= 1.0
            && second.status()["policy"]["connected_proxies"]
                .as_array()
                .is_some_and(|p| p.len() == 2)
    };
    while !on_second() {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the proxies did not move to the second replica: connects a {} b {}, second replica's proxies {}\nproxy a log:\n{}",
            connects_to(&a, &second),
            connects_to(&b, &second),
            second.status()["policy"]["connected_proxies"],
            a.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reconnected = killed.elapsed();
    // Keep the load on for a while after the failover.
    let at_failover = load.counts().0;
    wait_for(
        "the load after the failover",
        Duration::from_secs(10),
        || (load.counts().0 >= at_failover + 2000).then_some(()),
    );
    let (ok, failed) = load.finish(&rt);
    println!(
        "failover: reconnected to the second replica {reconnected:?} after the first died; {ok} requests answered, {failed} failed"
    );
    assert_eq!(failed, 0, "requests failed across the failover");
    assert!(
        reconnected < Duration::from_secs(2),
        "reconnect took {reconnected:?}"
    );

    // A proxy that only knows the second replica gets its certificate
    // there, and it verifies against a peer certified by the first.
    let mut opts = ProxyOptions::new("default", "web");
    let listen = opts.route(&b, app.port(), &b.identity);
    let c = Proxy::start(&second, opts);
    assert!(connects_to(&c, &second) >= 1.0);
    let rt_ok = rt.block_on(async {
        let mut send = connect(listen).await?;
        Some(get(&mut send).await)
    });
    assert_eq!(
        rt_ok,
        Some(true),
        "a request across the replicas' certificates"
    );
}

/// Local mode, two replicas on one data directory (as two control planes
/// on one host share it): each proxy's registration is a lease file there,
/// so a proxy connected to one replica is in the other's discovery. A
/// client connected only to the second reaches a server connected only to
/// the first through the Service; when the first replica dies, the
/// server's lease expires and the second stops handing it out.
#[test]
fn replicas_sharing_a_data_directory_agree_on_discovery() {
    const LEASE: Duration = Duration::from_secs(2);
    let mut first = ControlPlane::start(CpOptions {
        extra: vec!["--registration-lease".into(), "2s".into()],
        ..Default::default()
    });
    let app = EchoApp::start(first.dir.path(), "api");
    first.write_policy(
        "api.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: default}}\n\
             spec:\n  clusterIP: 10.96.0.10\n  selector: {{app: api}}\n  ports: [{{port: 80, targetPort: {}}}]\n",
            app.port()
        ),
    );
    let second = first.replica_sharing_data();
    // The second read the folder at start; the first follows the write.
    let version = |cp: &ControlPlane| cp.status()["policy"]["version"].as_u64();
    wait_for("both replicas on the same source", READY_DEADLINE, || {
        (version(&first).is_some() && version(&first) == version(&second)).then_some(())
    });

    // The server knows only the first replica, the client only the second.
    let mut server = ProxyOptions::new("default", "api");
    server.extra = vec![
        "--workload".into(),
        "api-1".into(),
        "--labels".into(),
        "app=api".into(),
    ];
    let b = Proxy::start(&first, server);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut client = ProxyOptions::new("default", "web");
    client.extra = vec!["--service-route".into(), format!("{listen}=default/api:80")];
    let a = Proxy::start(&second, client);
    assert_eq!(connects_to(&b, &second), 0.0);
    assert_eq!(connects_to(&a, &first), 0.0);

    // The second replica has the server from its lease, not a connection.
    let peer = wait_for(
        "the server in the second replica's peers",
        READY_DEADLINE,
        || {
            let st = second.status();
            let peers = st["policy"]["peer_proxies"].as_array()?.clone();
            peers.into_iter().find(|p| p["workload"] == "api-1")
        },
    );
    assert_eq!(peer["identity"], b.identity.as_str());
    assert_eq!(peer["labels"]["app"], "api");
    assert!(
        second.status()["policy"]["connected_proxies"]
            .as_array()
            .is_some_and(|c| c.iter().all(|p| p["workload"] != "api-1")),
        "the server is connected to the first replica only"
    );
    // So the client, through the second replica's discovery, reaches it.
    let (status, body) = wait_for(
        "the Service's endpoint via the second replica",
        Duration::from_secs(10),
        || {
            http_get(listen, "/across-replicas")
                .ok()
                .filter(|(s, _)| *s != 503 && *s != 0)
        },
    );
    assert_eq!(status, 200, "{body}\nclient log:\n{}", a.logs());

    // The first replica dies without a word (SIGKILL): nobody renews the
    // server's lease, and the second replica drops it once it expires.
    let lease_file = || {
        std::fs::read_dir(first.data_dir().join("registrations"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".lease"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(lease_file() >= 1, "the server's lease is a file");
    first.stop();
    let killed = Instant::now();
    wait_for(
        "the server's lease to expire at the second replica",
        LEASE * 3,
        || {
            second.status()["policy"]["peer_proxies"]
                .as_array()
                .is_some_and(|p| p.is_empty())
                .then_some(())
        },
    );
    let expired = killed.elapsed();
    println!("lease expired at the second replica {expired:?} after the first died");
    // Not before its lease ran out: it was valid until then.
    assert!(expired >= LEASE / 3, "dropped after {expired:?}");
    // The client now has no endpoint for the Service: refused, not misrouted.
    let (status, _) = wait_for("no endpoint left", Duration::from_secs(5), || {
        http_get(listen, "/after").ok().filter(|(s, _)| *s != 200)
    });
    assert!(status == 503 || status == 0, "status {status}");
}
