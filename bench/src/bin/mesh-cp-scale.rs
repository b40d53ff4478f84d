//! mesh-cp-scale: control plane scale. Starts a real `mesh-control-plane`,
//! then N simulated proxies in this process, each with its own key,
//! certificate and mTLS `Policy.Watch` stream, and measures:
//! - certificates issued per second (`Identity.Certify`, CSRs prepared beforehand),
//! - control plane RSS per connected proxy,
//! - time from a policy file change until every proxy holds the new snapshot
//!   (p50 / p99 / max over proxies, per round).
//!
//! Usage: mesh-cp-scale --proxies 1000 [--rounds 5] [--control-plane BIN] [--out DIR]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use mesh_identity::credentials::{Certifier, CertifyError};
use mesh_identity::token::TokenKey;
use mesh_identity::{Issued, SpiffeId, Store, TrustBundle};
use mesh_proto::identity::CertifyRequest;
use mesh_proto::identity::identity_client::IdentityClient;
use mesh_proto::policy::WatchRequest;
use mesh_proto::policy::policy_client::PolicyClient;
use rustls_pki_types::CertificateDer;
use tokio::sync::{Mutex, Semaphore};
use tonic::transport::Channel;

/// Certify calls in flight at once: enough to keep both control plane cores busy.
const CERTIFY_CONCURRENCY: usize = 256;
/// Connections being set up at once.
const CONNECT_CONCURRENCY: usize = 128;
const NAMESPACE: &str = "scale";

#[derive(Parser)]
#[command(
    name = "mesh-cp-scale",
    about = "Control plane scale: certificates/s, RSS per proxy, policy push latency to N proxies"
)]
struct Args {
    /// Simulated proxies.
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    /// Policy changes to time.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The control plane binary (default: next to this one).
    #[arg(long)]
    control_plane: Option<PathBuf>,
    /// Where to write cp-scale-N.json.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

struct Sim {
    /// When each proxy received its latest snapshot.
    arrivals: Vec<Mutex<Option<Instant>>>,
    received: AtomicUsize,
}

struct SharedCertifier {
    client: IdentityClient<Channel>,
    token: String,
}

impl Certifier for SharedCertifier {
    async fn certify(&self, csr_der: Vec<u8>) -> Result<Issued, CertifyError> {
        let r = self
            .client
            .clone()
            .certify(CertifyRequest {
                csr_der,
                credential: self.token.clone(),
                requested_ttl_seconds: 0,
            })
            .await
            .map_err(|s| CertifyError::Remote(s.message().to_string()))?
            .into_inner();
        Ok(Issued {
            leaf: CertificateDer::from(r.leaf_der),
            intermediates: r
                .intermediates_der
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            bundle: TrustBundle::new(
                r.trust_bundle_der
                    .into_iter()
                    .map(CertificateDer::from)
                    .collect(),
            )
            .map_err(|e| CertifyError::BadIssued(e.to_string()))?,
            not_after: std::time::SystemTime::now(),
        })
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = mesh_bench::procs::raise_nofile();
    // One socket per proxy here, one per proxy in the control plane (which
    // inherits the raised limit), plus a margin for everything else.
    let needed = args.proxies + 500;
    if (nofile as usize) < needed {
        bail!(
            "RLIMIT_NOFILE is {nofile}; {} proxies need about {needed}",
            args.proxies
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let n = args.proxies;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config)?;
    let cp_bin = match args.control_plane {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("mesh-control-plane"),
    };
    let listen = "127.0.0.1:18843";
    let admin = "127.0.0.1:18990";
    let log = std::fs::File::create(dir.path().join("cp.log"))?;
    let mut cp = std::process::Command::new(&cp_bin)
        .args(["--data-dir"])
        .arg(&data)
        .arg("--config-dir")
        .arg(&config)
        .args(["--listen", listen, "--admin", admin])
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", cp_bin.display()))?;
    let cp_pid = cp.id();
    let result = scenario(n, args.rounds, &data, &config, listen, cp_pid, &args.out).await;
    let _ = cp.kill();
    let _ = cp.wait();
    result
}

async fn scenario(
    n: usize,
    rounds: usize,
    data: &std::path::Path,
    config: &std::path::Path,
    listen: &str,
    cp_pid: u32,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let bundle_path = data.join("trust-bundle.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bundle_path.exists() || std::net::TcpStream::connect(listen).is_err() {
        if Instant::now() > deadline {
            bail!("control plane did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bundle = TrustBundle::from_pem(&std::fs::read(&bundle_path)?)?;
    let key = TokenKey::load_or_generate(data)?;
    let provider = mesh_identity::tls::provider();
    let (rss0, _) = mesh_bench::procs::memory_kib(cp_pid).unwrap_or((0, 0));

    // 1. Issuance throughput: CSRs prepared first, so only the control plane is timed.
    let boot = Store::new(
        SpiffeId::workload("cluster.local", NAMESPACE, "boot")?,
        bundle.clone(),
        provider.clone(),
    );
    let shared = mesh_control_client::channel(&boot, listen)?;
    let mut csrs = Vec::with_capacity(n);
    for i in 0..n {
        let id = SpiffeId::workload("cluster.local", NAMESPACE, &format!("p{i}"))?;
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        csrs.push((
            mesh_identity::credentials::csr_for(&id, &kp)?,
            key.create(NAMESPACE, &format!("p{i}"), Duration::from_secs(3600)),
        ));
    }
    let sem = Arc::new(Semaphore::new(CERTIFY_CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (csr, token) in csrs {
        let mut client = IdentityClient::new(shared.clone());
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            client
                .certify(CertifyRequest {
                    csr_der: csr,
                    credential: token,
                    requested_ttl_seconds: 0,
                })
                .await
                .is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap_or(false) {
            ok += 1;
        }
    }
    let issue_secs = started.elapsed().as_secs_f64();
    let certs_per_sec = ok as f64 / issue_secs;
    eprintln!("issued {ok}/{n} certificates in {issue_secs:.2}s: {certs_per_sec:.0}/s");

    // 2. N proxies, each with its own certificate and Policy.Watch stream.
    let sim = Arc::new(Sim {
        arrivals: (0..n).map(|_| Mutex::new(None)).collect(),
        received: AtomicUsize::new(0),
    });
    let sem = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let connect_started = Instant::now();
    let mut setups = Vec::with_capacity(n);
    for i in 0..n {
        let (sem, sim, shared, bundle, provider) = (
            sem.clone(),
            sim.clone(),
            shared.clone(),
            bundle.clone(),
            provider.clone(),
        );
        let token = key.create(NAMESPACE, &format!("p{i}"), Duration::from_secs(3600));
        let listen = listen.to_string();
        setups.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.ok()?;
            let store = Store::new(
                SpiffeId::workload("cluster.local", NAMESPACE, &format!("p{i}")).ok()?,
                bundle,
                provider,
            );
            let certifier = SharedCertifier {
                client: IdentityClient::new(shared),
                token,
            };
            store.certify_once(&certifier).await.ok()?;
            let channel = mesh_control_client::channel(&store, &listen).ok()?;
            let mut stream = PolicyClient::new(channel)
                .watch(WatchRequest {
                    workload: format!("p{i}"),
                    labels: [("app".to_string(), format!("p{}", i % 10))].into(),
                    ips: vec![format!("10.99.{}.{}", i / 250, i % 250 + 1)],
                    ports: vec![8080],
                    inbound_port: 4143,
                })
                .await
                .ok()?
                .into_inner();
            // The first snapshot: connected.
            stream.message().await.ok()??;
            sim.received.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            tokio::spawn(async move {
                let _store = store;
                while let Ok(Some(_)) = stream.message().await {
                    *sim.arrivals[i].lock().await = Some(Instant::now());
                    sim.received.fetch_add(1, Ordering::Relaxed);
                }
            });
            Some(())
        }));
    }
    let mut connected = 0;
    for s in setups {
        if matches!(s.await, Ok(Some(()))) {
            connected += 1;
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    eprintln!("{connected}/{n} proxies watching after {connect_secs:.1}s");
    if connected < n {
        bail!("only {connected} of {n} proxies connected (see the control plane log)");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss1, _) = mesh_bench::procs::memory_kib(cp_pid).unwrap_or((0, 0));
    let rss_per_proxy_kib = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    eprintln!(
        "control plane RSS {} MiB → {} MiB: {rss_per_proxy_kib:.1} KiB per proxy",
        rss0 / 1024,
        rss1 / 1024
    );

    // 3. Push latency: change the policy, time until every proxy has it.
    let mut round_results = Vec::new();
    for r in 0..rounds {
        for a in &sim.arrivals {
            *a.lock().await = None;
        }
        let yaml = format!(
            "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: round-{r}\n  namespace: {NAMESPACE}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [\"cluster.local/ns/{NAMESPACE}/sa/p{r}\"]}}}}]\n"
        );
        let tmp = config.join(format!(".round-{r}.tmp"));
        std::fs::write(&tmp, yaml)?;
        let t0 = Instant::now();
        std::fs::rename(&tmp, config.join(format!("round-{r}.yaml")))?;
        let deadline = t0 + Duration::from_secs(60);
        loop {
            let mut all = true;
            for a in &sim.arrivals {
                if a.lock().await.is_none() {
                    all = false;
                    break;
                }
            }
            if all || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut lat = Vec::with_capacity(n);
        for a in &sim.arrivals {
            if let Some(t) = *a.lock().await {
                lat.push(t.duration_since(t0).as_secs_f64() * 1000.0);
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99, max) = (
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
        );
        eprintln!(
            "round {r}: {}/{n} updated; p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms",
            lat.len()
        );
        round_results.push(serde_json::json!({"round": r, "updated": lat.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max}));
    }
    let mut p99s: Vec<f64> = round_results
        .iter()
        .filter_map(|r| r["p99_ms"].as_f64())
        .collect();
    p99s.sort_by(|a, b| a.total_cmp(b));
    let mut p50s: Vec<f64> = round_results
        .iter()
        .filter_map(|r| r["p50_ms"].as_f64())
        .collect();
    p50s.sort_by(|a, b| a.total_cmp(b));
    let summary = serde_json::json!({
        "proxies": n,
        "certs_per_second": certs_per_sec,
        "connect_seconds": connect_secs,
        "cp_rss_before_kib": rss0,
        "cp_rss_after_kib": rss1,
        "cp_rss_per_proxy_kib": rss_per_proxy_kib,
        "push_p50_ms_median": percentile(&p50s, 0.5),
        "push_p99_ms_median": percentile(&p99s, 0.5),
        "rounds": round_results,
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("cp-scale-{n}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!("wrote {}", path.display());
    Ok(())
}
