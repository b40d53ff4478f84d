//! `mesh-bench edge`: the ingress side by side with nginx, in one run.
//!
//! - Palisade: `mesh-proxy ingress` terminates the client's HTTPS (a
//!   `kubernetes.io/tls` Secret for `bench.example`, a Gateway and an
//!   HTTPRoute) and sends each request over pooled mesh mTLS to the
//!   backend's sidecar (`mesh-proxy run`), which hands it to the upstream.
//! - nginx: one nginx terminates the client's HTTPS with the same
//!   certificate and proxies with upstream TLS (client certificate,
//!   verified, keep-alive pool) to a second nginx that terminates that
//!   mTLS and hands the request to the same upstream.
//!
//! Both pairs run one worker each, pinned to the proxy CPU; the generator
//! runs on the other CPU. Access logs are off on every proxy (nginx logs
//! nothing per request here either). Two loads per repetition: keep-alive
//! HTTPS (N connections, closed loop) and a new TLS connection per request
//! (full handshakes: the client resumes no session), each with its req/s,
//! latency and the CPU the proxies spent per request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::certs::PalisadeIssuer;
use crate::compare;
use crate::load::{self, LoadReport, Reuse};
use crate::pairs::{self, ControlPlane, NAMESPACE, PeerConfig, ProxySpec, Setup};
use crate::procs::{self, Child, free_port, loopback};

/// The name the client asks for (SNI) and the certificate is for.
pub const EDGE_HOST: &str = "bench.example";

#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Where mesh-proxy and mesh-control-plane are (default: next to mesh-bench).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep-alive HTTPS connections of the closed loop.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Workers opening a new TLS connection per request.
    #[arg(long, default_value_t = 16)]
    pub new_connection_workers: usize,
    #[arg(long, default_value = "1s", value_parser = mesh_identity::duration::parse_duration_ms)]
    pub warmup: Duration,
    #[arg(long, default_value = "8s", value_parser = mesh_identity::duration::parse_duration_ms)]
    pub duration: Duration,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value_t = 1)]
    pub proxy_cpu: usize,
    #[arg(long, default_value_t = 0)]
    pub generator_cpu: usize,
    /// Where edge.md and edge.json go.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One load through one system.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub system: &'static str,
    pub load: &'static str,
    pub rep: usize,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// CPU the system's proxies spent per completed request.
    pub cpu_ms_per_request: f64,
}

struct System {
    name: &'static str,
    addr: SocketAddr,
    procs: Vec<Child>,
}

impl System {
    fn cpu_secs(&self) -> f64 {
        self.procs
            .iter()
            .map(|c| procs::tree_cpu_secs(c.pid()))
            .sum()
    }
}

/// A CA for the outside world's view of the edge, and `bench.example`'s
/// certificate from it: (CA PEM, chain PEM, key PEM).
fn edge_certificate() -> anyhow::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let leaf = CertificateParams::new(vec![EDGE_HOST.to_string()])?
        .signed_by(&key, &Issuer::new(ca, ca_key))?;
    Ok((ca_cert.pem(), leaf.pem(), key.serialize_pem()))
}

fn edge_policy(ingress_port: u16, upstream_port: u16, chain: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: bench-edge, namespace: {NAMESPACE}}}\n\
         spec: {{clusterIP: 10.96.0.95, selector: {{app: bench-edge}}, ports: [{{port: 80, targetPort: {upstream_port}}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: {NAMESPACE}}}\n\
         spec:\n  gatewayClassName: palisade\n  listeners:\n\
         \x20   - {{name: https, port: {ingress_port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: edge-tls}}]}}}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: edge, namespace: {NAMESPACE}}}\n\
         spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n    - backendRefs: [{{name: bench-edge, port: 80}}]\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: edge-tls, namespace: {NAMESPACE}}}\ntype: kubernetes.io/tls\n\
         data:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(chain),
        b64(key)
    )
}

/// nginx terminating the client's HTTPS and proxying with upstream mTLS to
/// the backend nginx on `backend_port`.
fn nginx_edge_config(
    dir: &Path,
    listen: u16,
    backend_port: u16,
    client: &crate::certs::PeerCert,
    trust_bundle: &Path,
) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile 4096;\npid {d}/nginx-edge.pid;\nerror_log stderr warn;\n\
         events {{\n    worker_connections 2048;\n}}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    keepalive_requests 1000000;\n    keepalive_timeout 1h;\n    proxy_buffering off;\n\
         \x20   upstream backend {{\n        server 127.0.0.1:{backend_port};\n        keepalive 256;\n        keepalive_requests 1000000;\n        keepalive_timeout 1h;\n    }}\n\
         \x20   server {{\n        listen 127.0.0.1:{listen} ssl;\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_certificate {d}/edge-chain.pem;\n        ssl_certificate_key {d}/edge-key.pem;\n\
         \x20       location / {{\n            proxy_pass https://backend;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_ssl_protocols TLSv1.3;\n\
         \x20           proxy_ssl_certificate {chain};\n            proxy_ssl_certificate_key {key};\n            proxy_ssl_trusted_certificate {root};\n            proxy_ssl_verify on;\n            proxy_ssl_verify_depth 3;\n\
         \x20           proxy_ssl_name {hop};\n            proxy_ssl_server_name on;\n            proxy_ssl_session_reuse on;\n        }}\n    }}\n}}\n",
        chain = client.chain.display(),
        key = client.key.display(),
        root = trust_bundle.display(),
        hop = crate::certs::HOP_NAME,
    )
}

fn client_tls(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    // X25519 (what both servers support) in one round trip, and no
    // resumption: a new connection is a full handshake.
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(mesh_identity::tls::provider_x25519_only())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

async fn tls_connect(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(load::CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connect to {addr} timed out"))??;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(EDGE_HOST)?;
    Ok(tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?)
}

fn start_palisade(setup: &Setup, dir: &Path, ingress_port: u16) -> anyhow::Result<System> {
    let (mut backend, backend_admin) = pairs::start_proxy(
        setup,
        dir,
        &ProxySpec {
            bin: &setup.bin_dir.join("mesh-proxy"),
            role: "edge-backend",
            service_account: "bench-edge-backend",
            inbound: loopback(free_port()?),
            routes: vec![],
            extra: vec![
                "--labels".into(),
                "app=bench-edge".into(),
                "--access-log".into(),
                "off".into(),
            ],
            env: &[],
        },
    )?;
    pairs::wait_ready(&mut backend, backend_admin)?;
    let cp = &setup.control_plane;
    let key = mesh_identity::token::TokenKey::load_or_generate(&cp.data_dir)?;
    let token = dir.join("ingress.token");
    std::fs::write(
        &token,
        key.create("mesh-system", "ingress", Duration::from_secs(24 * 3600)),
    )?;
    let admin = loopback(free_port()?);
    let args: Vec<String> = [
        "ingress",
        "--control-plane",
        &cp.listen.to_string(),
        "--trust-bundle",
        &cp.trust_bundle().display().to_string(),
        "--token-file",
        &token.display().to_string(),
        "--labels",
        "app=ingress",
        "--admin",
        &admin.to_string(),
        "--workers",
        "1",
        "--listen-ip",
        "127.0.0.1",
        "--https-port",
        &ingress_port.to_string(),
        "--http-port",
        "0",
        "--access-log",
        "off",
        "--drain-timeout",
        "1s",
    ]
    .map(String::from)
    .to_vec();
    let mut ingress = procs::spawn(
        "mesh-proxy ingress",
        setup.cpu,
        &setup.bin_dir.join("mesh-proxy"),
        &args,
        &[],
        dir.join("ingress.log"),
    )?;
    pairs::wait_ready(&mut ingress, admin)?;
    Ok(System {
        name: "palisade",
        addr: loopback(ingress_port),
        procs: vec![ingress, backend],
    })
}

fn start_nginx(setup: &Setup, dir: &Path, chain: &str, key: &str) -> anyhow::Result<System> {
    let nginx = pairs::which("nginx").context("nginx is not installed")?;
    let dir = dir.join("nginx");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("edge-chain.pem"), chain)?;
    std::fs::write(dir.join("edge-key.pem"), key)?;
    let tb = setup.control_plane.trust_bundle();
    let client = setup.issuer.issue(
        &dir,
        "client",
        &format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/nginx-edge"),
    )?;
    let server = setup.issuer.issue(
        &dir,
        "server",
        &format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/nginx-edge-backend"),
    )?;
    let (listen, backend_port) = (free_port()?, free_port()?);
    let backend_cfg = pairs::nginx_http_config(&PeerConfig {
        dir: &dir,
        role: "server",
        cert: &server,
        trust_bundle: &tb,
        routes: vec![("http", backend_port, setup.upstream_http.port())],
        max_conns: 1024,
    });
    std::fs::write(dir.join("nginx-backend.conf"), backend_cfg)?;
    std::fs::write(
        dir.join("nginx-edge.conf"),
        nginx_edge_config(&dir, listen, backend_port, &client, &tb),
    )?;
    let mut procs_v = Vec::new();
    for (name, conf) in [
        ("backend", "nginx-backend.conf"),
        ("edge", "nginx-edge.conf"),
    ] {
        let args = vec![
            "-e".into(),
            "stderr".into(),
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            dir.join(conf).display().to_string(),
        ];
        procs_v.push(procs::spawn(
            &format!("nginx ({name})"),
            setup.cpu,
            &nginx,
            &args,
            &[],
            dir.join(format!("{name}.log")),
        )?);
    }
    Ok(System {
        name: "nginx",
        addr: loopback(listen),
        procs: procs_v,
    })
}

fn measure(
    rt: &tokio::runtime::Runtime,
    sys: &System,
    cfg: &Arc<rustls::ClientConfig>,
    args: &EdgeArgs,
    reuse: Reuse,
    rep: usize,
) -> anyhow::Result<Run> {
    let (cfg, addr) = (cfg.clone(), sys.addr);
    let connect = move || tls_connect(cfg.clone(), addr);
    let workers = match reuse {
        Reuse::KeepAlive => args.connections,
        Reuse::NewConnection => args.new_connection_workers,
    };
    let before = sys.cpu_secs();
    let r: LoadReport = rt.block_on(load::closed_loop_with(
        connect,
        workers,
        reuse,
        args.warmup,
        args.duration,
    ))?;
    let cpu = sys.cpu_secs() - before;
    let load = match reuse {
        Reuse::KeepAlive => "keep-alive",
        Reuse::NewConnection => "new TLS connection",
    };
    Ok(Run::of(sys.name, load, rep, &r, cpu))
}

/// Median of `v` (0 when empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

impl Run {
    /// One measured load, with the CPU (seconds) its proxies spent.
    pub(crate) fn of(
        system: &'static str,
        load: &'static str,
        rep: usize,
        r: &LoadReport,
        cpu: f64,
    ) -> Run {
        Run {
            system,
            load,
            rep,
            throughput: r.throughput,
            p50_ms: r.latency.p50_ms,
            p99_ms: r.latency.p99_ms,
            errors: r.errors,
            cpu_ms_per_request: if r.completed > 0 {
                cpu * 1000.0 / r.completed as f64
            } else {
                0.0
            },
        }
    }
}

/// The upstream, the control plane and the setup a side-by-side run
/// starts from, in `work`; `policy(upstream)` goes into the control
/// plane's folder as `name`.
pub(crate) fn side_by_side(
    bin_dir: &Path,
    work: &Path,
    proxy_cpu: usize,
    name: &str,
    policy: impl FnOnce(SocketAddr) -> String,
) -> anyhow::Result<(compare::Upstream, Setup)> {
    let upstream = compare::start_upstream(work, proxy_cpu)?;
    let control_plane = ControlPlane::start(bin_dir, work, Some(proxy_cpu))?;
    let issuer = PalisadeIssuer::load(&control_plane.data_dir)?;
    std::fs::write(work.join("cp-policy").join(name), policy(upstream.http))?;
    let setup = Setup {
        work: work.to_path_buf(),
        bin_dir: bin_dir.to_path_buf(),
        baseline_bin_dir: None,
        upstream_http: upstream.http,
        upstream_sink: upstream.sink,
        cpu: Some(proxy_cpu),
        control_plane,
        issuer,
        max_conns: 1024,
    };
    Ok((upstream, setup))
}

/// Runs the comparison; returns the markdown table.
pub fn run(args: EdgeArgs) -> anyhow::Result<String> {
    procs::pin_current_thread(args.generator_cpu).context("cannot pin the generator")?;
    procs::raise_nofile();
    let bin_dir = compare::bin_dir_or_default(args.bin_dir.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let work = tempfile::Builder::new()
        .prefix("mesh-bench-edge-")
        .tempdir()?;
    let (ca, chain, key) = edge_certificate()?;
    let ingress_port = free_port()?;
    let (upstream, setup) = side_by_side(
        &bin_dir,
        work.path(),
        args.proxy_cpu,
        "bench-edge.yaml",
        |up| edge_policy(ingress_port, up.port(), &chain, &key),
    )?;
    let cfg = client_tls(&ca)?;
    let mut systems = vec![start_palisade(&setup, work.path(), ingress_port)?];
    match start_nginx(&setup, work.path(), &chain, &key) {
        Ok(s) => systems.push(s),
        Err(e) => eprintln!("nginx skipped: {e:#}"),
    }
    for sys in &systems {
        // The route, discovery and certificate arrive a moment after ready.
        let (cfg, addr) = (cfg.clone(), sys.addr);
        procs::wait_for(
            &format!("an HTTPS request through {}", sys.name),
            pairs::READY_DEADLINE,
            || {
                let r = rt.block_on(load::closed_loop_with(
                    {
                        let cfg = cfg.clone();
                        move || tls_connect(cfg.clone(), addr)
                    },
                    1,
                    Reuse::NewConnection,
                    Duration::ZERO,
                    Duration::from_millis(200),
                ));
                Ok(r.ok()
                    .filter(|r| r.recorded > 0 && r.errors == 0)
                    .map(|_| ()))
            },
        )?;
    }
    let mut runs = Vec::new();
    for rep in 1..=args.reps {
        // Alternate the order each repetition: neither system always runs
        // on a warmer (or hotter) machine.
        let order: Vec<&System> = if rep % 2 == 1 {
            systems.iter().collect()
        } else {
            systems.iter().rev().collect()
        };
        for sys in order {
            for reuse in [Reuse::KeepAlive, Reuse::NewConnection] {
                let r = measure(&rt, sys, &cfg, &args, reuse, rep)?;
                eprintln!(
                    "rep {rep} {:<8} {:<18} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  {:.3} CPU ms/req  errors {}",
                    r.system,
                    r.load,
                    r.throughput,
                    r.p50_ms,
                    r.p99_ms,
                    r.cpu_ms_per_request,
                    r.errors
                );
                runs.push(r);
            }
        }
    }
    let mut md = String::from(
        "| load | system | req/s (median) | p50 ms | p99 ms | proxy CPU ms/req | errors |\n|---|---|---|---|---|---|---|\n",
    );
    let mut ratios = Vec::new();
    for load_name in ["keep-alive", "new TLS connection"] {
        let mut medians = Vec::new();
        for sys in &systems {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| r.system == sys.name && r.load == load_name)
                .collect();
            let m = |f: fn(&Run) -> f64| median(of.iter().map(|r| f(r)).collect());
            let (tput, p50, p99, cpu) = (
                m(|r| r.throughput),
                m(|r| r.p50_ms),
                m(|r| r.p99_ms),
                m(|r| r.cpu_ms_per_request),
            );
            let errors: u64 = of.iter().map(|r| r.errors).sum();
            md.push_str(&format!(
                "| {load_name} | {} | {tput:.0} | {p50:.3} | {p99:.3} | {cpu:.3} | {errors} |\n",
                sys.name
            ));
            medians.push((sys.name, tput, p99));
        }
        if let [(_, pt, pp), (_, nt, np)] = medians[..] {
            ratios.push(format!(
                "{load_name}: Palisade / nginx req/s {:.2}×, p99 {:.2}×",
                pt / nt.max(f64::MIN_POSITIVE),
                pp / np.max(f64::MIN_POSITIVE)
            ));
        }
    }
    for r in &ratios {
        md.push_str(&format!("\n{r}"));
    }
    md.push('\n');
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("edge.md"), &md)?;
        std::fs::write(out.join("edge.json"), serde_json::to_string_pretty(&runs)?)?;
    }
    for mut s in systems {
        for c in &mut s.procs {
            c.stop();
        }
    }
    drop(upstream);
    Ok(md)
}
