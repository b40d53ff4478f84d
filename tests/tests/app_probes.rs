//! What the injector's settings ask of the proxy, with the real binary: the
//! app's rewritten HTTP probes answered on the admin port at `/app-health/`
//! (the app probed over loopback, its status passed on, HTTPS included),
//! and workload labels read from a downward-API labels file.

use std::io::{Read, Write};
use std::net::TcpListener;

use mesh_tests::http_app::serve_tls;
use mesh_tests::*;

/// An app whose probe path answers `status`, one connection at a time.
fn answering(status: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    port
}

/// The probe list as mesh-injector writes it (injector/src/probes.rs).
fn probe(container: &str, kind: &str, port: u16, scheme: &str) -> String {
    let field = match kind {
        "livez" => "livenessProbe",
        "readyz" => "readinessProbe",
        _ => "startupProbe",
    };
    format!(
        r#"{{"path":"/app-health/{container}/{kind}","container":"{container}","kind":"{field}","port":{port},"original":{{"path":"/healthz","port":{port},"scheme":"{scheme}"}}}}"#
    )
}

#[test]
fn rewritten_probes_reach_the_app_and_labels_come_from_the_file() {
    let cp = ControlPlane::start(CpOptions::default());
    let rt = runtime();
    let tls = rt.block_on(serve_tls("app.local"));
    let closed = free_port();
    let probes = format!(
        "[{},{},{},{}]",
        probe("web", "livez", answering(200), "HTTP"),
        probe("web", "readyz", answering(503), "HTTP"),
        probe("web", "startupz", closed, "HTTP"),
        probe("tls", "readyz", tls.addr.port(), "HTTPS"),
    );
    let labels = cp.dir.path().join("labels");
    std::fs::write(&labels, "app=\"web\"\nversion=\"v2\"\n").unwrap();
    let mut opts = ProxyOptions::new("default", "web");
    opts.extra = vec![
        "--app-probes".into(),
        probes,
        "--labels-file".into(),
        labels.display().to_string(),
        "--labels".into(),
        "version=v3".into(),
    ];
    let p = Proxy::start(&cp, opts);

    // The app's answer is passed on: 200 stays 200, 503 stays 503.
    assert_eq!(p.admin_get("/app-health/web/livez").0, 200);
    assert_eq!(p.admin_get("/app-health/web/readyz").0, 503);
    // Nothing listening: the probe fails (503), saying why.
    let (code, body) = p.admin_get("/app-health/web/startupz");
    assert_eq!(code, 503);
    assert!(body.contains(&format!("port {closed}")), "{body}");
    // An HTTPS probe: the app's certificate is not verified, as the kubelet does.
    assert_eq!(p.admin_get("/app-health/tls/readyz").0, 200);
    // A path the injector did not list is not probed.
    assert_eq!(p.admin_get("/app-health/other/livez").0, 404);
    let m = p.metrics();
    assert!(metric(&m, "mesh_app_probes_total", &[("result", "success")]) >= 2.0);
    assert!(metric(&m, "mesh_app_probes_total", &[("result", "unreachable")]) >= 1.0);

    // The labels file's labels, with --labels winning on the same key.
    wait_for(
        "the proxy registered with its labels",
        READY_DEADLINE,
        || {
            let s = cp.status();
            let w = s["policy"]["connected_proxies"]
                .as_array()?
                .first()?
                .clone();
            (w["labels"]["app"] == "web" && w["labels"]["version"] == "v3").then_some(())
        },
    );
}

#[test]
fn a_broken_probe_list_or_labels_file_stops_the_start_naming_it() {
    let cp = ControlPlane::start(CpOptions::default());
    for (flag, value, says) in [
        (
            "--app-probes",
            "[{\"path\":\"/ready\",\"port\":80}]".to_string(),
            "MESH_APP_PROBES",
        ),
        (
            "--labels-file",
            "/nonexistent/labels".to_string(),
            "--labels-file",
        ),
    ] {
        let mut opts = ProxyOptions::new("default", "web");
        opts.extra = vec![flag.into(), value];
        let mut p = Proxy::spawn(&cp, opts);
        let status = p.proc.wait_exit(READY_DEADLINE);
        assert!(
            status.is_some_and(|s| !s.success()),
            "{flag}: the proxy did not stop"
        );
        assert!(p.logs().contains(says), "{flag}: {}", p.logs());
    }
}
