use std::net::Ipv4Addr;

use super::spec::{self, Network};
use super::*;

const LAB: &str = r#"
name: shop
network: 10.250.0.0/24
pods:
  - name: web
    namespace: shop
    serviceAccount: web
    labels: {app: web}
    ip: 10.250.0.10
    app: mesh-echo 0.0.0.0:8080
    ports: [8080]
  - name: legacy
    ip: 10.250.0.40
    sidecar: false
    app: [sleep 1, sleep 2]
"#;

fn lab_dir(lab_yaml: &str, others: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("lab.yaml"), lab_yaml).unwrap();
    for (name, text) in others {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

#[test]
fn parses_a_lab() {
    let s = spec::parse(LAB).unwrap();
    spec::check(&s).unwrap();
    assert_eq!(s.name.as_deref(), Some("shop"));
    assert_eq!(s.network.gateway(), Ipv4Addr::new(10, 250, 0, 1));
    let web = &s.pods[0];
    assert!(web.sidecar, "pods are meshed unless they say otherwise");
    assert_eq!(web.app.list(), ["mesh-echo 0.0.0.0:8080"]);
    assert_eq!(web.app_uid, spec::DEFAULT_APP_UID);
    let legacy = &s.pods[1];
    assert!(!legacy.sidecar);
    assert_eq!(legacy.namespace, "default");
    assert_eq!(legacy.service_account, "default");
    assert_eq!(legacy.app.list(), ["sleep 1", "sleep 2"]);
}

#[test]
fn refuses_bad_labs() {
    let base = spec::parse(LAB).unwrap();
    type Edit = Box<dyn Fn(&mut spec::LabSpec)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "not a host address of 10.250.0.0/24",
            Box::new(|s| s.pods[0].ip = Ipv4Addr::new(10, 9, 0, 1)),
        ),
        (
            "bridge",
            Box::new(|s| s.pods[0].ip = Ipv4Addr::new(10, 250, 0, 1)),
        ),
        ("used twice", Box::new(|s| s.pods[1].ip = s.pods[0].ip)),
        ("used twice", Box::new(|s| s.pods[1].name = "web".into())),
        (
            "DNS label",
            Box::new(|s| s.pods[0].namespace = "Shop".into()),
        ),
        (
            "bypass the redirection",
            Box::new(|s| s.pods[0].app_uid = PROXY_UID),
        ),
        (
            "bypass the redirection",
            Box::new(|s| s.pods[0].app_uid = 0),
        ),
        ("at least one pod", Box::new(|s| s.pods.clear())),
        (
            "not a host address",
            Box::new(|s| s.pods[0].ip = Ipv4Addr::new(10, 250, 0, 255)),
        ),
    ];
    for (want, edit) in cases {
        let mut s = base.clone();
        edit(&mut s);
        let err = spec::check(&s).unwrap_err();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
    // Unknown fields are typos, not silently ignored.
    assert!(spec::parse(&LAB.replace("sidecar: false", "sidcar: false")).is_err());
    assert!(spec::parse(&LAB.replace("10.250.0.0/24", "10.250.0.1/24")).is_err());
}

#[test]
fn names_fit_interface_limits() {
    for ok in ["pal", "a", "lab123456"] {
        spec::check_name(ok).unwrap();
    }
    for bad in ["", "Pal", "1ab", "pal-x", "lab1234567", "pal_x"] {
        assert!(spec::check_name(bad).is_err(), "{bad}");
    }
    // The longest name still fits Linux's 15-byte interface names.
    let n = net::Names::new("lab123456");
    assert!(n.bridge().len() <= 15 && n.veth(199).len() <= 15);
    assert!(n.netns("web").starts_with(&n.prefix()));
}

#[test]
fn networks() {
    let n = Network::parse("10.250.0.0/24").unwrap();
    assert!(n.contains(Ipv4Addr::new(10, 250, 0, 77)));
    assert!(!n.contains(Ipv4Addr::new(10, 250, 1, 1)));
    assert!(n.overlaps(&Network::parse("10.0.0.0/8").unwrap()));
    assert!(n.overlaps(&Network::parse("10.250.0.128/25").unwrap()));
    assert!(!n.overlaps(&Network::parse("10.251.0.0/24").unwrap()));
    assert!(Network::parse("10.250.0.0").is_err());
    assert!(Network::parse("10.250.0.0/31").is_err());
}

#[test]
fn load_reads_services_and_keeps_lab_yaml_out_of_the_config() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
               spec: {clusterIP: 10.251.0.10, selector: {app: web}, ports: [{port: 8080}]}\n";
    let d = lab_dir(LAB, &[("services.yaml", svc), ("notes.txt", "not yaml")]);
    let lab = spec::load(d.path(), None).unwrap();
    assert_eq!(lab.name, "shop");
    assert_eq!(lab.services.len(), 1);
    let files: Vec<_> = lab
        .config_files
        .iter()
        .filter_map(|f| f.file_name())
        .collect();
    assert_eq!(files, ["services.yaml"]);

    // --name wins over the file.
    assert_eq!(spec::load(d.path(), Some("other")).unwrap().name, "other");

    let hosts = spec::hosts_file(&lab, &lab.spec.pods[0]);
    assert!(
        hosts.contains("10.251.0.10\tweb.shop web.shop.svc web.shop.svc.cluster.local web\n"),
        "{hosts}"
    );
    // A pod whose name is also a Service's: the short name is the Service's.
    assert!(hosts.contains("10.250.0.10\tweb.shop.pod\n"), "{hosts}");
    // Other namespaces see only qualified Service names.
    let other = spec::hosts_file(&lab, &lab.spec.pods[1]);
    assert!(other.contains("web.shop.svc.cluster.local\n"), "{other}");
    assert!(
        other.contains("10.250.0.40\tlegacy.default.pod legacy\n"),
        "{other}"
    );
}

#[test]
fn load_refuses_broken_policy_and_vips_in_the_pod_network() {
    let d = lab_dir(LAB, &[("bad.yaml", "kind: [\n")]);
    let err = spec::load(d.path(), None).unwrap_err().to_string();
    assert!(err.contains("bad.yaml"), "{err}");

    let svc =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.250.0.99}\n";
    let d = lab_dir(LAB, &[("svc.yaml", svc)]);
    let err = spec::load(d.path(), None).unwrap_err().to_string();
    assert!(err.contains("inside the pod network"), "{err}");

    let d = tempfile::tempdir().unwrap();
    let err = spec::load(d.path(), None).unwrap_err().to_string();
    assert!(
        err.contains("lab.yaml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn listening_sockets() {
    let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0A00FA0A:102F 00000000:0000 0A 00000000:00000000 00:00000000 00000000  2102        0 2 1 0000000000000000 100 0 0 10 0\n\
   2: 0A00FA0A:9C40 0A00FA0B:102F 01 00000000:00000000 00:00000000 00000000  2102        0 3 1 0000000000000000 100 0 0 10 0\n";
    assert_eq!(parse_listening(text), [8080, 4143]);
}

#[test]
fn prometheus_samples() {
    let text = "# TYPE mesh_tcp_connections_total counter\n\
        mesh_tcp_connections_total{direction=\"inbound\",tls=\"true\"} 5\n\
        mesh_tcp_connections_total{direction=\"inbound\",tls=\"false\"} 2\n\
        mesh_tcp_connections_total{direction=\"outbound\",tls=\"true\"} 7\n\
        mesh_authz_decisions_total{direction=\"inbound\",decision=\"allow\",policy=\"AuthorizationPolicy shop/api rule 0\"} 4\n\
        mesh_authz_decisions_total{direction=\"inbound\",decision=\"deny\",policy=\"default deny\"} 3\n\
        mesh_authz_decisions_total{direction=\"outbound\",decision=\"deny\",policy=\"a \\\"quoted\\\", name\"} 1\n\
        mesh_retries_total{result=\"retried\"} 6\n\
        mesh_retries_total{result=\"budget_exhausted\"} 2\n\
        mesh_endpoint_ejections_total 3\n\
        mesh_ratelimited_total{policy=\"RateLimitPolicy shop/api\",mode=\"enforced\"} 9\n\
        mesh_ratelimited_total{policy=\"RateLimitPolicy shop/trial\",mode=\"dry_run\"} 4\n";
    let t = status::traffic(text);
    assert_eq!((t.retries, t.ejections, t.rate_limited), (6, 3, 9));
    assert_eq!((t.inbound_mtls, t.inbound_plaintext, t.outbound), (5, 2, 7));
    assert_eq!((t.allowed, t.denied), (4, 4));
    assert_eq!(
        t.denied_by,
        [
            ("a \"quoted\", name".to_string(), 1),
            ("default deny".to_string(), 3)
        ]
    );
    assert!(http::samples("garbage{x=1} y\nfoo{a=\"b\"", "garbage").is_empty());
}

#[test]
fn egress_by_host_in_the_status() {
    let text = "mesh_egress_connections_total{namespace=\"shop\",host=\"exfil.example\",decision=\"deny\"} 2\n\
        mesh_egress_connections_total{namespace=\"shop\",host=\"api.partner.example\",decision=\"allow\"} 5\n\
        mesh_egress_connections_total{namespace=\"shop\",host=\"exfil.example\",decision=\"dry_run_deny\"} 1\n";
    let t = status::traffic(text);
    assert_eq!(
        t.egress,
        [
            ("api.partner.example".to_string(), "allow".to_string(), 5),
            ("exfil.example".to_string(), "deny".to_string(), 2),
            ("exfil.example".to_string(), "dry_run_deny".to_string(), 1),
        ]
    );
}

#[test]
fn status_renders_without_a_running_lab() {
    let s = status::Status {
        name: "pal".into(),
        network: "10.250.0.0/24".into(),
        gateway: "10.250.0.1".into(),
        config_dir: "/run/palisade-lab/pal/config".into(),
        up_seconds: Some(3.25),
        control_plane: None,
        pods: vec![status::Pod {
            name: "legacy".into(),
            namespace: "default".into(),
            ip: "10.250.0.40".into(),
            sidecar: false,
            ingress: false,
            processes: 1,
            ready: true,
            identity: None,
            cert_not_after: None,
            cert_seconds_left: None,
            traffic: None,
        }],
    };
    let out = status::render(&s);
    assert!(
        out.contains("up in 3.2s") || out.contains("up in 3.3s"),
        "{out}"
    );
    assert!(out.contains("(no sidecar)"), "{out}");
    assert!(out.contains("control plane: not started"), "{out}");
}

#[test]
fn resolve_name_prefers_the_flag() {
    let d = lab_dir(LAB, &[]);
    assert_eq!(resolve_name(Some("x1"), Some(d.path())).unwrap(), "x1");
    assert_eq!(resolve_name(None, Some(d.path())).unwrap(), "shop");
    assert_eq!(resolve_name(None, None).unwrap(), spec::DEFAULT_NAME);
    assert!(resolve_name(Some("Bad-Name"), None).is_err());
}

#[test]
fn binaries_are_staged_where_every_uid_can_run_them() {
    use std::os::unix::fs::PermissionsExt;
    // A build folder private to root (a checkout under /root, a `mktemp -d`
    // clone) must not lock the proxy and app UIDs out of the binaries.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let from = private.path().join("bin");
    std::fs::create_dir(&from).unwrap();
    for name in ["mesh-control-plane", "mesh-proxy"] {
        std::fs::write(from.join(name), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(from.join(name), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let lab = tempfile::tempdir().unwrap();
    let to = stage_binaries(&from, &lab.path().join("bin")).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&to), 0o755);
    for name in ["mesh-control-plane", "mesh-proxy"] {
        assert_eq!(mode(&to.join(name)), 0o755, "{name}");
    }
    // Optional binaries that were not built are skipped, not an error.
    assert!(!to.join("mesh-echo").exists());
}

/// The ingress's counters are shown apart: its outside clients are not
/// mesh traffic, and its denials are edge policy's.
#[test]
fn edge_traffic_is_counted_apart_from_the_mesh() {
    let text = r#"mesh_tcp_connections_total{direction="ingress",tls="true"} 7
mesh_tcp_connections_total{direction="outbound",tls="true"} 2
mesh_requests_total{direction="ingress",code="200",grpc_status=""} 9
mesh_requests_total{direction="ingress",code="403",grpc_status=""} 2
mesh_requests_total{direction="ingress",code="503",grpc_status=""} 1
mesh_requests_total{direction="outbound",code="200",grpc_status=""} 9
mesh_authz_decisions_total{direction="ingress",decision="allow",policy="default allow"} 10
mesh_authz_decisions_total{direction="ingress",decision="deny",policy="AuthorizationPolicy mesh-system/edge rule 0"} 2
mesh_authz_decisions_total{direction="inbound",decision="deny",policy="default deny"} 1
"#;
    let t = status::traffic(text);
    assert_eq!(t.edge_connections, 7);
    assert_eq!(t.edge_requests, [9, 2, 1]);
    assert_eq!(t.edge_denied, 2);
    assert_eq!((t.allowed, t.denied), (0, 1));
    assert_eq!(t.denied_by, vec![("default deny".to_string(), 1)]);
    let s = status::Status {
        name: "pal".into(),
        network: "10.250.0.0/24".into(),
        gateway: "10.250.0.1".into(),
        config_dir: "/run/palisade-lab/pal/config".into(),
        up_seconds: None,
        control_plane: None,
        pods: vec![status::Pod {
            name: "ingress".into(),
            namespace: "mesh-system".into(),
            ip: "10.250.0.5".into(),
            sidecar: true,
            ingress: true,
            processes: 1,
            ready: true,
            identity: None,
            cert_not_after: None,
            cert_seconds_left: None,
            traffic: Some(t),
        }],
    };
    let out = status::render(&s);
    assert!(
        out.contains("ingress: 7 TLS connections, 12 requests (9 1xx-3xx, 2 4xx, 1 5xx), 2 denied by edge policy"),
        "{out}"
    );
}
