//! `mesh-bench compare`: the same scenarios through every pair, repetitions
//! interleaved across pairs (A B C A B C), CPU and memory from /proc.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::handshake::{self, Floor, Group};
use crate::load::{self, BulkReport, LoadReport, Reuse};
use crate::pairs::{self, ControlPlane, Kind, Pair, Setup};
use crate::procs::{self, Child};
use crate::tls_probe::{Observed, Tap};
use crate::{certs, machine, report};

/// Connections a peer is configured for beyond S6's (readiness and probes).
const CONN_HEADROOM: usize = 50;
/// The least connection cap a peer is configured with.
const MIN_PEER_CONNS: usize = 1024;

fn dur(s: &str) -> Result<Duration, String> {
    mesh_identity::duration::parse_duration_ms(s)
}

/// Flags of `mesh-bench compare`.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct CompareArgs {
    /// Pairs to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,palisade,haproxy,nginx,stunnel"
    )]
    pub pairs: Vec<Kind>,
    /// Scenarios to run, comma-separated (S5, idle RSS, is always taken;
    /// S6 is set by --s6-connections).
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "s1,s2,s3,s4x1,s4x4"
    )]
    #[serde(default = "all_scenarios")]
    pub scenarios: Vec<Scenario>,
    /// Run S3 and S4 without a proxy too (by default the direct baseline
    /// runs S1, which the added latency needs, and S2 only).
    #[arg(long)]
    #[serde(default)]
    pub direct_all: bool,
    /// Repetitions of each scenario per pair (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Where results go (latest.md, latest.json, latency.svg).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Where mesh-proxy and mesh-control-plane are (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where an earlier build's mesh-proxy is, for the `palisade-l7-base`
    /// pair (before and after a data-path change, in one run).
    #[arg(long)]
    #[serde(default)]
    pub baseline_bin_dir: Option<PathBuf>,
    /// CPU of the load generator.
    #[arg(long, default_value_t = 0)]
    pub generator_cpu: usize,
    /// CPU of both proxies, the upstream and the control plane.
    #[arg(long, default_value_t = 1)]
    pub proxy_cpu: usize,
    /// Unmeasured start of every run.
    #[arg(long, default_value = "500ms", value_parser = dur)]
    pub warmup: Duration,
    /// S1: fixed request rate.
    #[arg(long, default_value_t = 1000.0)]
    pub s1_rate: f64,
    #[arg(long, default_value_t = 16)]
    pub s1_connections: usize,
    #[arg(long, default_value = "4s", value_parser = dur)]
    pub s1_duration: Duration,
    /// S2: closed-loop connections.
    #[arg(long, default_value_t = 32)]
    pub s2_connections: usize,
    #[arg(long, default_value = "2s", value_parser = dur)]
    pub s2_duration: Duration,
    /// S3: concurrent clients, each opening a new connection per request.
    #[arg(long, default_value_t = 16)]
    pub s3_concurrency: usize,
    #[arg(long, default_value = "2s", value_parser = dur)]
    pub s3_duration: Duration,
    /// S4: per stream count (1 and 4).
    #[arg(long, default_value = "2s", value_parser = dur)]
    pub s4_duration: Duration,
    /// S6: idle mTLS connections held at once (0 skips S6). Each costs a
    /// proxy two descriptors; the hard RLIMIT_NOFILE bounds it.
    #[arg(long, default_value_t = 10_000)]
    pub s6_connections: usize,
    /// Handshake floor: time per variant.
    #[arg(long, default_value = "1s", value_parser = dur)]
    pub floor_duration: Duration,
    /// Wait (at most 3 minutes) until the 1-minute load average is at most this.
    #[arg(long)]
    pub max_load: Option<f64>,
    /// What Palisade build is measured, when not run from its git checkout
    /// (default: `git log -1` of the current directory).
    #[arg(long)]
    pub commit: Option<String>,
    /// A smoke run: one repetition, short runs, 500 idle connections.
    #[arg(long)]
    pub quick: bool,
}

impl CompareArgs {
    fn apply_quick(&mut self) {
        if self.quick {
            self.reps = 1;
            self.warmup = Duration::from_millis(300);
            self.s1_duration = Duration::from_secs(2);
            self.s2_duration = Duration::from_secs(1);
            self.s3_duration = Duration::from_secs(1);
            self.s4_duration = Duration::from_secs(1);
            self.s6_connections = self.s6_connections.min(500);
            self.floor_duration = Duration::from_millis(300);
        }
    }
}

/// The scenarios that are repeated and interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Scenario {
    /// 1 KiB HTTP/1.1 at a fixed rate over keep-alive connections.
    S1,
    /// Closed loop, maximum throughput.
    S2,
    /// A new connection (and handshake) per request.
    S3,
    /// Bulk TCP, one stream.
    S4x1,
    /// Bulk TCP, four streams.
    S4x4,
}

fn all_scenarios() -> Vec<Scenario> {
    Scenario::ALL.to_vec()
}

impl Scenario {
    /// Scenarios the no-proxy baseline runs by default.
    fn needs_direct(self) -> bool {
        matches!(self, Scenario::S1 | Scenario::S2)
    }

    pub const ALL: [Scenario; 5] = [
        Scenario::S1,
        Scenario::S2,
        Scenario::S3,
        Scenario::S4x1,
        Scenario::S4x4,
    ];
}

/// One run of one scenario through one pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub scenario: Scenario,
    pub rep: usize,
    pub load: Option<LoadReport>,
    pub bulk: Option<BulkReport>,
    /// CPU seconds during the run, per process tree: "client" (A),
    /// "server" (B), "upstream".
    pub cpu_secs: BTreeMap<String, f64>,
    pub wall_secs: f64,
    /// TCP connections accepted machine-wide during the run.
    pub passive_opens: Option<u64>,
    pub loadavg_after: [f64; 3],
}

/// S6.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleConnections {
    pub requested: usize,
    pub held: usize,
    pub errors: u64,
    pub first_error: Option<String>,
    pub open_secs: f64,
    pub rss_before_kib: BTreeMap<String, u64>,
    pub rss_after_kib: BTreeMap<String, u64>,
    pub kib_per_connection: BTreeMap<String, f64>,
}

/// Everything one pair showed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairResult {
    pub kind: Kind,
    pub label: String,
    pub tls: Option<TlsSeen>,
    /// S5: RSS right after start and one request, per process tree.
    pub idle_rss_kib: BTreeMap<String, u64>,
    /// S5: PSS and anonymous memory at the same moment.
    #[serde(default)]
    pub idle_pss_kib: BTreeMap<String, u64>,
    #[serde(default)]
    pub idle_anon_kib: BTreeMap<String, u64>,
    /// Peak RSS at the end of S1–S4.
    pub hwm_kib: BTreeMap<String, u64>,
    pub runs: Vec<Run>,
    pub s6: Option<IdleConnections>,
    pub error: Option<String>,
}

/// A whole comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub started: String,
    pub wall_secs: f64,
    pub machine: machine::Machine,
    pub settings: CompareArgs,
    pub floor: Vec<Floor>,
    pub pairs: Vec<PairResult>,
    pub notes: Vec<String>,
}

/// The upstream process.
pub struct Upstream {
    child: Child,
    pub http: std::net::SocketAddr,
    pub sink: std::net::SocketAddr,
}

pub fn start_upstream(work: &std::path::Path, cpu: usize) -> anyhow::Result<Upstream> {
    let exe = std::env::current_exe().context("where is mesh-bench")?;
    let http = procs::loopback(procs::free_port()?);
    let sink = procs::loopback(procs::free_port()?);
    let mut child = procs::spawn(
        "upstream",
        Some(cpu),
        &exe,
        &[
            "upstream".into(),
            "--http".into(),
            http.to_string(),
            "--sink".into(),
            sink.to_string(),
        ],
        &[],
        work.join("upstream.log"),
    )?;
    procs::wait_for("the upstream", pairs::READY_DEADLINE, || {
        child.check_alive()?;
        Ok((procs::accepts(http) && procs::accepts(sink)).then_some(()))
    })?;
    Ok(Upstream { child, http, sink })
}

fn cpu_snapshot(pair: &Pair, upstream: &Upstream) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> = pair
        .pids()
        .into_iter()
        .map(|(r, p)| (r.to_string(), procs::tree_cpu_secs(p)))
        .collect();
    m.insert(
        "upstream".into(),
        procs::tree_cpu_secs(upstream.child.pid()),
    );
    m
}

fn memory(pair: &Pair) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut rss = BTreeMap::new();
    let mut hwm = BTreeMap::new();
    for (r, p) in pair.pids() {
        let (a, b) = procs::tree_memory_kib(p);
        rss.insert(r.to_string(), a);
        hwm.insert(r.to_string(), b);
    }
    (rss, hwm)
}

fn run_one(
    rt: &tokio::runtime::Runtime,
    args: &CompareArgs,
    scenario: Scenario,
    rep: usize,
    pair: &Pair,
    upstream: &Upstream,
) -> anyhow::Result<Run> {
    let before = cpu_snapshot(pair, upstream);
    let opens_before = procs::passive_opens();
    let t0 = Instant::now();
    let w = args.warmup;
    let (load, bulk) = match scenario {
        Scenario::S1 => (
            Some(rt.block_on(load::open_loop(
                pair.http,
                args.s1_connections,
                args.s1_rate,
                w,
                args.s1_duration,
            ))?),
            None,
        ),
        Scenario::S2 => (
            Some(rt.block_on(load::closed_loop(
                pair.http,
                args.s2_connections,
                Reuse::KeepAlive,
                w,
                args.s2_duration,
            ))?),
            None,
        ),
        Scenario::S3 => (
            Some(rt.block_on(load::closed_loop(
                pair.http,
                args.s3_concurrency,
                Reuse::NewConnection,
                w,
                args.s3_duration,
            ))?),
            None,
        ),
        Scenario::S4x1 | Scenario::S4x4 => {
            let streams = if scenario == Scenario::S4x1 { 1 } else { 4 };
            (
                None,
                Some(rt.block_on(load::bulk(pair.bulk, streams, w, args.s4_duration))?),
            )
        }
    };
    let wall_secs = t0.elapsed().as_secs_f64();
    let after = cpu_snapshot(pair, upstream);
    let cpu_secs = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect();
    Ok(Run {
        scenario,
        rep,
        load,
        bulk,
        cpu_secs,
        wall_secs,
        passive_opens: match (opens_before, procs::passive_opens()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        loadavg_after: procs::loadavg(),
    })
}

/// Sends two requests, one after the other, through the pair's probe
/// route with the relay in place, and returns what the hop negotiated: the
/// first shows the group; the second whether a reconnect resumes the
/// session (which S3's numbers depend on).
fn probe_tls(rt: &tokio::runtime::Runtime, pair: &Pair) -> Option<TlsSeen> {
    let (probe, listen, target) = (pair.probe?, pair.tap_listen?, pair.tap_target?);
    rt.block_on(async {
        let tap = Tap::start(listen, target).await.ok()?;
        let mut out: Vec<Observed> = Vec::new();
        for i in 1..=2 {
            let r = tokio::task::spawn_blocking(move || pairs::blocking_get(probe)).await;
            if !matches!(r, Ok(Ok(()))) {
                return None;
            }
            // The relay records a connection once both directions have
            // closed; proxies close the hop soon after the client does.
            let end = Instant::now() + Duration::from_secs(5);
            while tap.seen().len() < i && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            out = tap.seen();
        }
        let first = out.first()?.clone();
        Some(TlsSeen {
            resumed_on_reconnect: out.get(1).map(|o| o.psk_accepted),
            first,
        })
    })
}

/// The hop's TLS as observed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsSeen {
    pub first: Observed,
    /// A second connection resumed the first's session.
    pub resumed_on_reconnect: Option<bool>,
}

fn s6(rt: &tokio::runtime::Runtime, pair: &Pair, n: usize) -> IdleConnections {
    let (before, _) = memory(pair);
    let t0 = Instant::now();
    let (held, errors, first_error) =
        rt.block_on(load::hold(pair.http, n, 64, Duration::from_secs(120)));
    let open_secs = t0.elapsed().as_secs_f64();
    let (after, _) = memory(pair);
    let count = held.len();
    let per = after
        .iter()
        .map(|(k, v)| {
            let b = before.get(k).copied().unwrap_or(0);
            (k.clone(), (*v as f64 - b as f64) / (count.max(1) as f64))
        })
        .collect();
    drop(held);
    IdleConnections {
        requested: n,
        held: count,
        errors,
        first_error,
        open_secs,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: per,
    }
}

/// Runs the comparison and writes the reports.
pub fn run(mut args: CompareArgs) -> anyhow::Result<Results> {
    args.apply_quick();
    let started_at = Instant::now();
    let mut notes = Vec::new();
    procs::pin_current_thread(args.generator_cpu)
        .context("cannot pin the generator (is taskset/sched_setaffinity allowed?)")?;
    let nofile = procs::raise_nofile();
    // Per idle connection a proxy holds two descriptors (app side and mTLS
    // side); keep headroom for listeners, logs and the runtime, and for the
    // peers' own accounting (HAProxy refuses to start when 2 × maxconn plus
    // its extras exceeds the limit).
    let fd_cap = ((nofile as usize).saturating_sub(300) / 2).saturating_sub(CONN_HEADROOM);
    if args.s6_connections > fd_cap {
        notes.push(format!(
            "S6 asked for {} idle connections, but RLIMIT_NOFILE here is {nofile} (hard limit) and each proxied connection costs a proxy 2 descriptors: measured {fd_cap} instead.",
            args.s6_connections
        ));
        args.s6_connections = fd_cap;
    }
    let bin_dir = bin_dir_or_default(args.bin_dir.clone())?;
    for b in ["mesh-proxy", "mesh-control-plane"] {
        anyhow::ensure!(
            bin_dir.join(b).is_file(),
            "{} not found in {}: build it (cargo build --release -p mesh-proxy -p mesh-control-plane) or pass --bin-dir",
            b,
            bin_dir.display()
        );
    }
    anyhow::ensure!(
        pairs::which("taskset").is_some(),
        "taskset (util-linux) is needed to pin processes"
    );
    let mut kinds = Vec::new();
    for k in &args.pairs {
        if kinds.contains(k) {
            continue;
        }
        match k.program() {
            Some(p) if pairs::which(p).is_none() => {
                notes.push(format!("{} skipped: {p} is not installed", k.label()));
            }
            _ => kinds.push(*k),
        }
    }
    if let Some(max) = args.max_load {
        let end = Instant::now() + Duration::from_secs(180);
        while procs::loadavg()[0] > max && Instant::now() < end {
            eprintln!(
                "waiting for the load average ({:.2}) to fall to {max}",
                procs::loadavg()[0]
            );
            std::thread::sleep(Duration::from_secs(5));
        }
    }
    let mut machine = machine::Machine::collect(&bin_dir);
    if let Some(c) = &args.commit {
        machine.versions.insert("palisade commit".into(), c.clone());
    }
    eprintln!(
        "machine: {} × {}, load {:.2} {:.2} {:.2}",
        machine.cpus,
        machine.cpu_model,
        machine.load_before[0],
        machine.load_before[1],
        machine.load_before[2]
    );

    eprintln!("handshake floor (in-process, one core) ...");
    let mut floor = Vec::new();
    for (g, resume) in [
        (Group::ProviderDefault, false),
        (Group::X25519, false),
        (Group::X25519MlKem768, false),
        (Group::ProviderDefault, true),
    ] {
        let f = handshake::floor(g, resume, args.floor_duration, 1_000_000)?;
        eprintln!(
            "  {:<16} {:<8} {:>8.0} handshakes/s ({:.3} ms each, client+server)",
            f.group,
            if f.resumed { "resumed" } else { "full" },
            f.per_sec,
            f.ms_per_handshake
        );
        floor.push(f);
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let work = tempfile::Builder::new().prefix("mesh-bench-").tempdir()?;
    let upstream = start_upstream(work.path(), args.proxy_cpu)?;
    let control_plane = ControlPlane::start(&bin_dir, work.path(), Some(args.proxy_cpu))?;
    let issuer = certs::PalisadeIssuer::load(&control_plane.data_dir)?;
    let setup = Setup {
        work: work.path().to_path_buf(),
        bin_dir: bin_dir.clone(),
        baseline_bin_dir: args.baseline_bin_dir.clone(),
        upstream_http: upstream.http,
        upstream_sink: upstream.sink,
        cpu: Some(args.proxy_cpu),
        control_plane,
        issuer,
        // A peer's connection cap must never be what limits S1-S3 (an L7
        // peer holds the generator's connections and its pooled ones).
        max_conns: (args.s6_connections + CONN_HEADROOM).max(MIN_PEER_CONNS),
    };

    let mut results: Vec<PairResult> = Vec::new();
    let mut running: Vec<Option<Pair>> = Vec::new();
    for k in &kinds {
        eprintln!("starting {} ...", k.label());
        let mut pr = PairResult {
            kind: *k,
            label: k.label().into(),
            tls: None,
            idle_rss_kib: BTreeMap::new(),
            idle_pss_kib: BTreeMap::new(),
            idle_anon_kib: BTreeMap::new(),
            hwm_kib: BTreeMap::new(),
            runs: vec![],
            s6: None,
            error: None,
        };
        match pairs::start(*k, &setup) {
            Ok(p) => {
                pr.idle_rss_kib = memory(&p).0;
                for (role, pid) in p.pids() {
                    let (pss, anon) = procs::tree_pss_anon_kib(pid);
                    pr.idle_pss_kib.insert(role.to_string(), pss);
                    pr.idle_anon_kib.insert(role.to_string(), anon);
                }
                pr.tls = probe_tls(&rt, &p);
                running.push(Some(p));
            }
            Err(e) => {
                eprintln!("  {} failed to start: {e:#}", k.label());
                pr.error = Some(format!("{e:#}"));
                running.push(None);
            }
        }
        results.push(pr);
    }

    for scenario in Scenario::ALL {
        if !args.scenarios.contains(&scenario) {
            continue;
        }
        for rep in 0..args.reps {
            for (i, slot) in running.iter_mut().enumerate() {
                let Some(pair) = slot.as_mut() else { continue };
                if pair.kind == Kind::Direct && !args.direct_all && !scenario.needs_direct() {
                    continue;
                }
                if let Err(e) = pair.check_alive() {
                    results[i].error = Some(format!("{e:#}"));
                    *slot = None;
                    continue;
                }
                match run_one(&rt, &args, scenario, rep, pair, &upstream) {
                    Ok(run) => {
                        eprintln!(
                            "  {:?} rep {} {:<18} {}",
                            scenario,
                            rep + 1,
                            pair.kind.label(),
                            report::one_line(&run)
                        );
                        results[i].runs.push(run);
                    }
                    Err(e) => {
                        eprintln!(
                            "  {:?} rep {} {} failed: {e:#}",
                            scenario,
                            rep + 1,
                            pair.kind.label()
                        );
                        results[i]
                            .error
                            .get_or_insert(format!("{scenario:?}: {e:#}"));
                    }
                }
            }
        }
    }
    for (i, slot) in running.iter_mut().enumerate() {
        if let Some(p) = slot.as_mut() {
            results[i].hwm_kib = memory(p).1;
            p.stop();
        }
    }
    drop(running);

    // S6 on fresh processes, so memory freed by earlier scenarios is not
    // reused and hidden.
    if args.s6_connections > 0 {
        for r in results.iter_mut() {
            if r.kind == Kind::Direct || r.error.is_some() {
                continue;
            }
            eprintln!(
                "S6: {} idle connections through {} ...",
                args.s6_connections,
                r.kind.label()
            );
            match pairs::start(r.kind, &setup) {
                Ok(mut p) => {
                    let s = s6(&rt, &p, args.s6_connections);
                    eprintln!(
                        "  held {} in {:.1}s: {}",
                        s.held,
                        s.open_secs,
                        s.kib_per_connection
                            .iter()
                            .map(|(k, v)| format!("{k} {v:.1} KiB/conn"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    r.s6 = Some(s);
                    p.stop();
                }
                Err(e) => r.error = Some(format!("S6 start: {e:#}")),
            }
        }
    }
    machine.load_after = procs::loadavg();
    let results = Results {
        started: machine.started.clone(),
        wall_secs: started_at.elapsed().as_secs_f64(),
        machine,
        settings: args.clone(),
        floor,
        pairs: results,
        notes,
    };
    drop(setup);
    drop(upstream);
    report::write(&results, &args.out)?;
    Ok(results)
}

/// `--bin-dir`, or the folder of this binary (where cargo puts the others).
pub fn bin_dir_or_default(bin_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match bin_dir {
        Some(d) => Ok(d),
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .context("binary directory"),
    }
}

/// `mesh-bench pair`: starts one pair with its upstream (and control plane)
/// pinned as in `compare`, prints where it listens and its PIDs, and keeps
/// it up for `hold` (for profiling with perf or callgrind), then stops it.
pub fn serve_pair(
    kind: Kind,
    bin_dir: Option<PathBuf>,
    proxy_cpu: usize,
    hold: Duration,
) -> anyhow::Result<()> {
    let bin_dir = bin_dir_or_default(bin_dir)?;
    let work = tempfile::Builder::new().prefix("mesh-bench-").tempdir()?;
    let upstream = start_upstream(work.path(), proxy_cpu)?;
    let control_plane = ControlPlane::start(&bin_dir, work.path(), Some(proxy_cpu))?;
    let issuer = certs::PalisadeIssuer::load(&control_plane.data_dir)?;
    let setup = Setup {
        work: work.path().to_path_buf(),
        bin_dir,
        baseline_bin_dir: None,
        upstream_http: upstream.http,
        upstream_sink: upstream.sink,
        cpu: Some(proxy_cpu),
        control_plane,
        issuer,
        max_conns: 1000,
    };
    let mut pair = pairs::start(kind, &setup)?;
    let pids: BTreeMap<&str, u32> = pair.pids().into_iter().collect();
    println!(
        "{}",
        serde_json::json!({
            "pair": kind.name(),
            "http": pair.http.to_string(),
            "bulk": pair.bulk.to_string(),
            "pids": pids,
            "upstream_pid": upstream.child.pid(),
            "work": work.path().display().to_string(),
            "until_secs": hold.as_secs(),
        })
    );
    let end = Instant::now() + hold;
    while Instant::now() < end {
        pair.check_alive()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    pair.stop();
    Ok(())
}
