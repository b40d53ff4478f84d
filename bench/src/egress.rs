//! `mesh-bench egress`: what EgressPolicy costs a connection leaving the
//! mesh, side by side in one run. One `mesh-proxy run` per system, each
//! with an `--egress-route` to the upstream (a destination outside the
//! mesh), one worker pinned to the proxy CPU:
//!
//! - `open`: no EgressPolicy selects the proxy: its connections are relayed
//!   without a look at their bytes (what every egress connection cost
//!   before EgressPolicy);
//! - `policy`: an EgressPolicy selects it (default deny, the upstream
//!   allowed by address): every connection's first bytes are read for the
//!   HTTP Host, decided, counted and logged before they are forwarded;
//! - `policy-dns`: the upstream allowed by name (`Host: upstream`, resolved
//!   by the proxy against mesh-dns and checked against the address): the
//!   name path, with its cache.
//!
//! Loads per repetition: keep-alive (N connections, closed loop; the
//! decision is per connection, so it is paid once) and a new connection
//! per request (every request pays the look and the decision). Reported:
//! req/s, latency, and the proxy's CPU per request, with each policy
//! system's CPU against `open`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::compare;
use crate::edge::{Run, median, side_by_side};
use crate::load::{self, LoadReport, Reuse};
use crate::pairs::{self, NAMESPACE, ProxySpec, Setup};
use crate::procs::{self, Child, free_port, loopback};
use anyhow::Context;

#[derive(Debug, Clone, clap::Args)]
pub struct EgressArgs {
    /// Where mesh-proxy, mesh-control-plane and mesh-dns are (default: next to mesh-bench).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    #[arg(long, default_value_t = 16)]
    pub new_connection_workers: usize,
    #[arg(long, default_value = "1s", value_parser = mesh_identity::duration::parse_duration_ms)]
    pub warmup: Duration,
    #[arg(long, default_value = "6s", value_parser = mesh_identity::duration::parse_duration_ms)]
    pub duration: Duration,
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value_t = 1)]
    pub proxy_cpu: usize,
    #[arg(long, default_value_t = 0)]
    pub generator_cpu: usize,
    /// Where egress.md and egress.json go.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

struct System {
    name: &'static str,
    addr: SocketAddr,
    admin: SocketAddr,
    proc: Child,
}

fn policy(upstream_port: u16) -> String {
    format!(
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {{name: bench-egress, namespace: {NAMESPACE}}}\n\
         spec:\n  selector: {{matchLabels: {{app: bench-egress-policy}}}}\n  default: deny\n  allow:\n  - cidrs: [127.0.0.1/32]\n    ports: [{upstream_port}]\n\
         ---\napiVersion: policy.palisade.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {{name: bench-egress-dns, namespace: {NAMESPACE}}}\n\
         spec:\n  selector: {{matchLabels: {{app: bench-egress-dns}}}}\n  default: deny\n  allow:\n  - hosts: [upstream]\n    ports: [{upstream_port}]\n"
    )
}

fn start(
    setup: &Setup,
    dir: &Path,
    name: &'static str,
    app: &str,
    dns: Option<SocketAddr>,
) -> anyhow::Result<System> {
    let listen = loopback(free_port()?);
    let mut extra = vec![
        "--labels".into(),
        format!("app={app}"),
        "--egress-route".into(),
        format!("{listen}={}", setup.upstream_http),
        "--access-log".into(),
        "off".into(),
    ];
    if let Some(d) = dns {
        extra.push("--dns-servers".into());
        extra.push(d.to_string());
    }
    let (mut proc, admin) = pairs::start_proxy(
        setup,
        dir,
        &ProxySpec {
            bin: &setup.bin_dir.join("mesh-proxy"),
            role: name,
            service_account: "bench-egress",
            inbound: loopback(free_port()?),
            routes: vec![],
            extra,
            env: &[("RUST_LOG", "warn")],
        },
    )?;
    pairs::wait_ready(&mut proc, admin)?;
    Ok(System {
        name,
        addr: listen,
        admin,
        proc,
    })
}

fn measure(
    rt: &tokio::runtime::Runtime,
    sys: &System,
    args: &EgressArgs,
    reuse: Reuse,
    rep: usize,
) -> anyhow::Result<Run> {
    let workers = match reuse {
        Reuse::KeepAlive => args.connections,
        Reuse::NewConnection => args.new_connection_workers,
    };
    let before = procs::tree_cpu_secs(sys.proc.pid());
    let r: LoadReport = rt.block_on(load::closed_loop(
        sys.addr,
        workers,
        reuse,
        args.warmup,
        args.duration,
    ))?;
    let cpu = procs::tree_cpu_secs(sys.proc.pid()) - before;
    let load = match reuse {
        Reuse::KeepAlive => "keep-alive",
        Reuse::NewConnection => "new connection",
    };
    Ok(Run::of(sys.name, load, rep, &r, cpu))
}

/// Runs the comparison; returns the markdown table.
pub fn run(args: EgressArgs) -> anyhow::Result<String> {
    procs::pin_current_thread(args.generator_cpu).context("cannot pin the generator")?;
    procs::raise_nofile();
    let bin_dir = compare::bin_dir_or_default(args.bin_dir.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let work = tempfile::Builder::new()
        .prefix("mesh-bench-egress-")
        .tempdir()?;
    let (upstream, setup) = side_by_side(
        &bin_dir,
        work.path(),
        args.proxy_cpu,
        "bench-egress.yaml",
        |up| policy(up.port()),
    )?;
    // The name `upstream` (the generator's Host) resolves to the upstream.
    let dns_addr = loopback(free_port()?);
    let mut dns = procs::spawn(
        "mesh-dns",
        Some(args.proxy_cpu),
        &bin_dir.join("mesh-dns"),
        &[dns_addr.to_string(), "upstream=127.0.0.1".into()],
        &[],
        work.path().join("dns.log"),
    )
    .ok();
    let mut systems = vec![
        start(&setup, work.path(), "open", "bench-egress-open", None)?,
        start(&setup, work.path(), "policy", "bench-egress-policy", None)?,
    ];
    if dns.is_some() {
        systems.push(start(
            &setup,
            work.path(),
            "policy-dns",
            "bench-egress-dns",
            Some(dns_addr),
        )?);
    } else {
        eprintln!("mesh-dns not in {}: policy-dns skipped", bin_dir.display());
    }
    for sys in &systems {
        // The policy reaches the proxies a moment after they are ready:
        // wait until the policy systems count their connections.
        procs::wait_for(
            &format!("a request through {}", sys.name),
            pairs::READY_DEADLINE,
            || {
                let ok = pairs::blocking_get(sys.addr).is_ok();
                let decided = sys.name == "open"
                    || procs::http_body(sys.admin, "/metrics")
                        .is_some_and(|m| m.contains("decision=\"allow\""));
                Ok((ok && decided).then_some(()))
            },
        )?;
    }
    let mut runs = Vec::new();
    for rep in 1..=args.reps {
        let order: Vec<&System> = if rep % 2 == 1 {
            systems.iter().collect()
        } else {
            systems.iter().rev().collect()
        };
        for sys in order {
            for reuse in [Reuse::KeepAlive, Reuse::NewConnection] {
                let r = measure(&rt, sys, &args, reuse, rep)?;
                eprintln!(
                    "rep {rep} {:<10} {:<15} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  {:.4} CPU ms/req  errors {}",
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
        "| load | system | req/s (median) | p50 ms | p99 ms | proxy CPU ms/req | CPU vs open | errors |\n|---|---|---|---|---|---|---|---|\n",
    );
    for load_name in ["keep-alive", "new connection"] {
        let mut open_cpu = None;
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
            let base = *open_cpu.get_or_insert(cpu);
            let errors: u64 = of.iter().map(|r| r.errors).sum();
            md.push_str(&format!(
                "| {load_name} | {} | {tput:.0} | {p50:.3} | {p99:.3} | {cpu:.4} | {:.3}× | {errors} |\n",
                sys.name,
                cpu / base.max(f64::MIN_POSITIVE)
            ));
        }
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("egress.md"), &md)?;
        std::fs::write(
            out.join("egress.json"),
            serde_json::to_string_pretty(&runs)?,
        )?;
    }
    for mut s in systems {
        s.proc.stop();
    }
    if let Some(d) = dns.as_mut() {
        d.stop();
    }
    drop(upstream);
    Ok(md)
}
