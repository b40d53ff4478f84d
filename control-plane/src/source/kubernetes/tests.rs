//! The Kubernetes source against recorded API server responses (list and
//! watch streams), replayed by a small HTTP server that says it is a
//! recording in every response (`x-palisade-recording`). No API server runs.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::watch;

use super::*;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Replays a recording: each request takes the first unused exchange with
/// its method and path; a watch with nothing left stays open and idle, as a
/// quiet watch does. Every request is logged for the test to inspect.
struct Replay {
    exchanges: Mutex<Vec<Option<Value>>>,
    requests: Mutex<Vec<String>>,
}

async fn serve(recording: &str) -> (SocketAddr, Arc<Replay>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/source/kubernetes/recorded")
        .join(recording);
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let replay = Arc::new(Replay {
        exchanges: Mutex::new(
            rec["exchanges"]
                .as_array()
                .unwrap()
                .iter()
                .cloned()
                .map(Some)
                .collect(),
        ),
        requests: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = replay.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let r = r.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(req, r.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, replay)
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    r: Arc<Replay>,
) -> Result<hyper::Response<Body>, Infallible> {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    );
    r.requests.lock().unwrap().push(line.clone());
    let found = {
        let mut ex = r.exchanges.lock().unwrap();
        ex.iter_mut()
            .find(|e| e.as_ref().is_some_and(|e| e["request"] == line))
            .and_then(Option::take)
    };
    let builder = hyper::Response::builder()
        .header("content-type", "application/json")
        .header(
            "x-palisade-recording",
            "replayed from a recording; not a Kubernetes API server",
        );
    let Some(ex) = found else {
        if line.contains("watch=1") {
            // An idle watch: headers, then nothing until the test ends.
            let (_keep, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(_keep);
            });
            let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            return Ok(builder.status(200).body(BodyExt::boxed(body)).unwrap());
        }
        let body = http_body_util::Full::new(Bytes::from(
            r#"{"kind":"Status","code":404,"message":"not in the recording"}"#,
        ));
        return Ok(builder.status(404).body(BodyExt::boxed(body)).unwrap());
    };
    let status = ex["status"].as_u64().unwrap() as u16;
    let text = match ex.get("events") {
        Some(events) => events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{e}\n"))
            .collect::<String>(),
        None => ex["body"].to_string(),
    };
    Ok(builder
        .status(status)
        .body(BodyExt::boxed(http_body_util::Full::new(Bytes::from(text))))
        .unwrap())
}

async fn start(recording: &str) -> (watch::Receiver<Update>, Arc<Replay>) {
    let (addr, replay) = serve(recording).await;
    let api = Api::plain(&format!("http://{addr}")).unwrap();
    let rx = Cluster::new(api, "cluster.local").start().await.unwrap();
    (rx, replay)
}

fn refs(config: &Config) -> BTreeSet<String> {
    config
        .snapshot
        .objects
        .iter()
        .map(|o| o.object_ref().to_string())
        .collect()
}

async fn until(rx: &mut watch::Receiver<Update>, ok: impl Fn(&Config) -> bool) -> Arc<Config> {
    let found = {
        let wait = rx.wait_for(|u| matches!(u, Update::Loaded(c) if ok(c)));
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(Ok(u)) => match &*u {
                Update::Loaded(c) => Some(c.clone()),
                Update::Failed(e) => panic!("{e}"),
            },
            _ => None,
        }
    };
    let last = format!("{:?}", *rx.borrow());
    found.unwrap_or_else(|| panic!("the source did not reach the expected view within 5s: {last}"))
}

fn file_view(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/source/kubernetes/recorded")
        .join(name);
    let l = mesh_policy::parse_yaml(name, &std::fs::read_to_string(path).unwrap()).unwrap();
    Config {
        snapshot: l.snapshot,
        services: l.services,
        workloads: Vec::new(),
        warnings: l.warnings,
    }
}

fn sorted(mut c: Config) -> Config {
    c.snapshot
        .objects
        .sort_by_key(|o| o.object_ref().to_string());
    c.workloads.clear();
    c
}

#[tokio::test]
async fn added_modified_deleted_and_bookmarks_end_in_the_view_a_folder_gives() {
    let (mut rx, replay) = start("watch-events.json").await;
    let end = until(&mut rx, |c| {
        let r = refs(c);
        !r.contains("AuthorizationPolicy shop/default-deny")
            && r.contains("AuthorizationPolicy shop/allow-web")
    })
    .await;
    // The same objects in a folder give exactly the same view: one parser.
    assert_eq!(
        sorted((*end).clone()),
        sorted(file_view("same-objects.yaml"))
    );
    // The watch resumed from the bookmark's resourceVersion, not from the list's.
    let requests = replay.requests.lock().unwrap().clone();
    assert!(requests.iter().any(|r| r.ends_with("authorizationpolicies?watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=250")), "{requests:#?}");
    // Istio's CRDs are not installed here (404): counted as empty, not an error.
    assert!(requests.iter().any(|r| r.contains("security.istio.io")));
}

#[tokio::test]
async fn a_gone_watch_lists_again() {
    let (mut rx, replay) = start("watch-gone.json").await;
    // 410 as an ERROR event: relist (after-relist); 410 as the watch's HTTP
    // status: relist again (allow-web).
    let end = until(&mut rx, |c| {
        refs(c).contains("AuthorizationPolicy shop/allow-web")
    })
    .await;
    assert!(!refs(&end).contains("AuthorizationPolicy shop/after-relist"));
    let lists = replay
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| {
            r.as_str() == "GET /apis/security.palisade.dev/v1/authorizationpolicies?limit=500"
        })
        .count();
    assert_eq!(lists, 3);
}

#[tokio::test]
async fn running_meshed_pods_are_workloads_with_their_labels_and_ips() {
    let (rx, _replay) = start("watch-events.json").await;
    let Update::Loaded(config) = rx.borrow().clone() else {
        panic!("not loaded")
    };
    // web-1 has no proxy, db-1 is Pending: only api-1.
    assert_eq!(config.workloads.len(), 1);
    let w = &config.workloads[0];
    assert_eq!(w.identity, "spiffe://cluster.local/ns/shop/sa/api");
    assert_eq!(w.workload, "api-1");
    assert_eq!(w.ips, ["10.244.1.7"]);
    assert_eq!(w.labels["app"], "api");
    assert_eq!(w.ports, [8080]);
}

#[tokio::test]
async fn no_api_server_means_no_start() {
    // A port nothing listens on: fail closed, with the reason.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = Api::plain(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = Cluster::new(api, "cluster.local")
        .with_initial_sync_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("did not list every kind in time"),
        "{e:#}"
    );
}

#[test]
fn a_bad_object_in_the_cluster_is_named_and_refused() {
    let mut objects = vec![BTreeMap::new(); KINDS.len()];
    let bad = serde_json::json!({"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "typo", "namespace": "shop"}, "spec": {"action": "PERMIT"}});
    objects[4].insert("shop/typo".to_owned(), bad);
    match translate(&objects, "cluster.local") {
        Update::Failed(e) => assert!(e.contains("AuthorizationPolicy shop/typo"), "{e}"),
        Update::Loaded(_) => panic!("accepted"),
    }
}
