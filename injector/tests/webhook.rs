//! The webhook over real HTTPS: AdmissionReview JSON as the API server
//! sends it, posted to a running server; the patch applied to the pod the
//! review carried must parse as a k8s-openapi Pod with exactly the proxy,
//! init container, volumes and security settings of docs/kubernetes.md.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Pod};
use mesh_injector::Settings;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

struct Webhook {
    addr: SocketAddr,
    root: CertificateDer<'static>,
    _stop: tokio::sync::watch::Sender<bool>,
    dir: tempfile::TempDir,
}

fn write_identity(dir: &Path) -> CertificateDer<'static> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("tls.crt"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), ck.signing_key.serialize_pem()).unwrap();
    ck.cert.der().clone()
}

async fn start() -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let root = write_identity(dir.path());
    let tls =
        mesh_injector::server::tls_config(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(mesh_injector::server::serve(
        listener,
        tls,
        Arc::new(Settings::default()),
        stopped,
    ));
    Webhook {
        addr,
        root,
        _stop: stop,
        dir,
    }
}

/// One HTTPS request, verifying the webhook's certificate as the API server
/// does with the caBundle.
async fn request(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let tls = connect(addr, root).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mesh-injector.mesh-system.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

impl Webhook {
    async fn review(&self, review: &Value) -> Value {
        let (status, body) = request(
            self.addr,
            &self.root,
            "POST",
            "/inject",
            serde_json::to_vec(review).unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reviews")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The review's pod with the response's patch applied, as the API server
/// applies it.
fn patched(review: &Value, response: &Value) -> Value {
    let r = &response["response"];
    assert_eq!(r["allowed"], true, "{response}");
    assert_eq!(r["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

fn unchanged(response: &Value, uid: &str) {
    let r = &response["response"];
    assert_eq!(r["uid"], uid);
    assert_eq!(r["allowed"], true, "{response}");
    assert!(r.get("patch").is_none(), "no patch expected: {response}");
}

fn container<'a>(list: &'a [Container], name: &str) -> &'a Container {
    list.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) => format!("fieldRef:{}", f.field_ref.as_ref().unwrap().field_path),
                _ => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect()
}

#[tokio::test]
async fn a_bare_pod_gets_exactly_the_proxy_and_its_init_container() {
    let w = start().await;
    let review = fixture("pod-create.json");
    let response = w.review(&review).await;
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert_eq!(
        response["response"]["uid"],
        "7f0b2a9e-3c1d-4a8e-9b57-2d6f1e8c4a10"
    );
    let pod: Pod = serde_json::from_value(patched(&review, &response)).unwrap();
    let spec = pod.spec.unwrap();

    let inits = spec.init_containers.clone().unwrap();
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["palisade-init", "palisade-proxy"]
    );

    let init = container(&inits, "palisade-init");
    assert_eq!(
        init.image.as_deref(),
        Some(mesh_injector::settings::DEFAULT_PROXY_IMAGE)
    );
    assert_eq!(
        init.args.as_deref().unwrap(),
        [
            "init",
            "--inbound-port",
            "4143",
            "--outbound-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--skip-inbound-ports",
            "4191",
            "--skip-outbound-ports",
            "",
            "--skip-subnets",
            ""
        ]
    );
    let sc = init.security_context.as_ref().unwrap();
    let caps = sc.capabilities.as_ref().unwrap();
    // Only the two network capabilities iptables needs.
    assert_eq!(caps.add.as_deref().unwrap(), ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(caps.drop.as_deref().unwrap(), ["ALL"]);
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(
        init.restart_policy, None,
        "the init container runs to completion"
    );

    let proxy = container(&inits, "palisade-proxy");
    // A native sidecar: an init container that keeps running.
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert_eq!(proxy.args.as_deref().unwrap(), ["run"]);
    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(2102));
    assert_eq!(sc.run_as_group, Some(2102));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
        ["ALL"]
    );
    assert_eq!(sc.capabilities.as_ref().unwrap().add, None);
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let env = env(proxy);
    for (k, v) in [
        ("MESH_NAMESPACE", "fieldRef:metadata.namespace"),
        ("MESH_WORKLOAD", "fieldRef:metadata.name"),
        ("MESH_SERVICE_ACCOUNT", "fieldRef:spec.serviceAccountName"),
        (
            "MESH_CONTROL_PLANE",
            "mesh-control-plane.mesh-system.svc:8443",
        ),
        (
            "MESH_TRUST_BUNDLE",
            "/var/run/palisade/trust/trust-bundle.pem",
        ),
        ("MESH_TOKEN_FILE", "/var/run/palisade/token/token"),
        ("MESH_LABELS_FILE", "/var/run/palisade/podinfo/labels"),
        ("MESH_ADMIN", "0.0.0.0:4191"),
    ] {
        assert!(
            env.contains(&(k.to_owned(), v.to_owned())),
            "{k}={v} not in {env:?}"
        );
    }
    let startup = proxy
        .startup_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(startup.path.as_deref(), Some("/ready"));
    assert_eq!(serde_json::to_value(&startup.port).unwrap(), json!(4191));
    let res = proxy.resources.as_ref().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "100m");
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "128Mi");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "128Mi");
    assert!(
        !res.limits.as_ref().unwrap().contains_key("cpu"),
        "no CPU limit on the data path"
    );

    let volumes = spec.volumes.as_ref().unwrap();
    let names: Vec<_> = volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kube-api-access-7x2kq",
            "palisade-token",
            "palisade-trust-bundle",
            "palisade-podinfo",
            "palisade-init-run"
        ]
    );
    let token = volumes[1]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap()[0]
        .service_account_token
        .as_ref()
        .unwrap();
    assert_eq!(token.audience.as_deref(), Some("mesh-control-plane"));
    assert_eq!(token.expiration_seconds, Some(3600));
    assert_eq!(
        volumes[2].config_map.as_ref().unwrap().name,
        "palisade-trust-bundle"
    );
    let labels = &volumes[3]
        .downward_api
        .as_ref()
        .unwrap()
        .items
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        labels.field_ref.as_ref().unwrap().field_path,
        "metadata.labels"
    );

    // The app: its HTTP liveness probe goes through the proxy's admin port,
    // its TCP readiness probe is left alone; nothing else changes.
    assert_eq!(spec.containers.len(), 1);
    let app = &spec.containers[0];
    let live = app.liveness_probe.as_ref().unwrap();
    assert_eq!(
        live.http_get.as_ref().unwrap().path.as_deref(),
        Some("/app-health/web/livez")
    );
    assert_eq!(
        serde_json::to_value(&live.http_get.as_ref().unwrap().port).unwrap(),
        json!(4191)
    );
    assert_eq!(live.period_seconds, Some(10));
    assert!(app.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert_eq!(pod.metadata.labels.unwrap()["app"], "web");
}

#[tokio::test]
async fn a_pod_of_a_deployment_with_generate_name_is_injected_before_its_init_containers() {
    let w = start().await;
    let review = fixture("deployment-pod-create.json");
    let response = w.review(&review).await;
    let pod: Pod = serde_json::from_value(patched(&review, &response)).unwrap();
    assert_eq!(
        pod.metadata.generate_name.as_deref(),
        Some("api-6f8d9c7b5-")
    );
    let spec = pod.spec.unwrap();
    let inits: Vec<_> = spec
        .init_containers
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(inits, ["palisade-init", "palisade-proxy", "migrate"]);
    let volumes: Vec<_> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(volumes[..2], ["config", "kube-api-access-q9w4m"]);
    // Both HTTP probes rewritten; the startup probe's headers live on in
    // MESH_APP_PROBES, where the proxy sends them to the app.
    let api = &spec.containers[0];
    let ready = api
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/app-health/api/readyz"));
    let started = api
        .startup_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(started.path.as_deref(), Some("/app-health/api/startupz"));
    assert_eq!(started.http_headers, None);
}

#[tokio::test]
async fn a_dry_run_gets_the_same_patch() {
    let w = start().await;
    let mut review = fixture("pod-create.json");
    let real = w.review(&review).await;
    review["request"]["dryRun"] = json!(true);
    let dry = w.review(&review).await;
    assert_eq!(dry["response"]["patch"], real["response"]["patch"]);
}

#[tokio::test]
async fn an_injected_pod_is_left_alone() {
    let w = start().await;
    let mut review = fixture("pod-create.json");
    let injected = patched(&review, &w.review(&review).await);
    review["request"]["object"] = injected;
    review["request"]["uid"] = json!("second");
    unchanged(&w.review(&review).await, "second");
}

#[tokio::test]
async fn opted_out_and_system_pods_are_left_alone() {
    let w = start().await;
    let mut out = fixture("pod-create.json");
    out["request"]["object"]["metadata"]["annotations"]["palisade.dev/inject"] = json!("disabled");
    unchanged(
        &w.review(&out).await,
        "7f0b2a9e-3c1d-4a8e-9b57-2d6f1e8c4a10",
    );
    for ns in ["kube-system", "mesh-system"] {
        let mut sys = fixture("pod-create.json");
        sys["request"]["namespace"] = json!(ns);
        sys["request"]["object"]["metadata"]["namespace"] = json!(ns);
        unchanged(
            &w.review(&sys).await,
            "7f0b2a9e-3c1d-4a8e-9b57-2d6f1e8c4a10",
        );
    }
}

#[tokio::test]
async fn a_bad_annotation_refuses_the_pod_naming_it() {
    let w = start().await;
    let mut review = fixture("pod-create.json");
    review["request"]["object"]["metadata"]["annotations"]["palisade.dev/proxy-memory"] =
        json!("lots");
    let r = &w.review(&review).await["response"];
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("annotation palisade.dev/proxy-memory"),
        "{r}"
    );
}

#[tokio::test]
async fn malformed_reviews_get_an_admission_review_error() {
    let w = start().await;
    let cases: [&[u8]; 4] = [
        b"{not json",
        br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
        br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"x"}}"#,
        b"",
    ];
    for body in cases {
        let (status, reply) = request(w.addr, &w.root, "POST", "/inject", body.to_vec()).await;
        assert_eq!(status, 200);
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply["kind"], "AdmissionReview");
        assert_eq!(reply["response"]["allowed"], false, "{reply}");
        assert_eq!(reply["response"]["status"]["reason"], "InvalidRequest");
    }
    // The server is still there.
    let (status, _) = request(w.addr, &w.root, "GET", "/ready", Vec::new()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn other_operations_and_kinds_pass_through() {
    let w = start().await;
    let mut update = fixture("pod-create.json");
    update["request"]["operation"] = json!("UPDATE");
    unchanged(
        &w.review(&update).await,
        "7f0b2a9e-3c1d-4a8e-9b57-2d6f1e8c4a10",
    );
    let mut delete = fixture("pod-create.json");
    delete["request"]["operation"] = json!("DELETE");
    delete["request"]["object"] = Value::Null;
    unchanged(
        &w.review(&delete).await,
        "7f0b2a9e-3c1d-4a8e-9b57-2d6f1e8c4a10",
    );
}

#[test]
fn the_binary_refuses_a_missing_key_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    write_identity(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-injector"))
        .env("MESH_LISTEN", "127.0.0.1:0")
        .env("MESH_TLS_CERT", dir.path().join("tls.crt"))
        .env("MESH_TLS_KEY", dir.path().join("missing.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn the_binary_serves_with_flags_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_identity(dir.path());
    // A free port: bound, read, released, then given to the binary.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-injector"))
        .env("MESH_LISTEN", addr.to_string())
        .env("MESH_TLS_CERT", dir.path().join("tls.crt"))
        .env("MESH_TLS_KEY", dir.path().join("tls.key"))
        .env("MESH_PROXY_IMAGE", "registry.example/palisade/proxy:test")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mesh-injector did not listen within 10s"
        );
        assert!(child.try_wait().unwrap().is_none(), "mesh-injector exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let review = fixture("pod-create.json");
    let (status, body) = request(
        addr,
        &root,
        "POST",
        "/inject",
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let pod: Pod =
        serde_json::from_value(patched(&review, &serde_json::from_slice(&body).unwrap())).unwrap();
    let inits = pod.spec.unwrap().init_containers.unwrap();
    assert_eq!(
        inits[1].image.as_deref(),
        Some("registry.example/palisade/proxy:test")
    );
    let _ = child.kill().await;
}

/// A TLS connection to the webhook, verified against `root` as the API
/// server verifies it with the caBundle.
async fn connect(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn handshake(addr: SocketAddr, root: &CertificateDer<'static>) -> bool {
    connect(addr, root).await.is_ok()
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let w = start().await;
    assert!(handshake(w.addr, &w.root).await);
    // cert-manager (or a new install) replaces the Secret; the kubelet
    // updates the mounted files.
    let new_root = write_identity(w.dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !handshake(w.addr, &new_root).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still the old certificate after 5s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !handshake(w.addr, &w.root).await,
        "the old certificate is no longer served"
    );
}
