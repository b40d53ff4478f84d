//! `mesh-bench`: see `mesh-bench --help` and docs/benchmarks.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_bench::{compare, handshake, load, report, upstream};

/// mesh-bench: Palisade's load generator and peer comparison.
#[derive(Parser)]
#[command(name = "mesh-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn dur(s: &str) -> Result<Duration, String> {
    mesh_identity::duration::parse_duration_ms(s)
}

#[derive(Subcommand)]
enum Command {
    /// Run every scenario through direct, Palisade, HAProxy, nginx and
    /// stunnel; write bench/results/latest.{md,json} and latency.svg.
    Compare(Box<compare::CompareArgs>),
    /// The ingress (HTTPS terminated, mesh mTLS to a backend sidecar) side
    /// by side with nginx (HTTPS terminated, upstream TLS to a backend
    /// nginx): keep-alive and new-TLS-connection req/s, latency, CPU.
    Edge(Box<mesh_bench::edge::EdgeArgs>),
    /// EgressPolicy's cost on connections leaving the mesh: no policy vs policy by address vs by name
    Egress(Box<mesh_bench::egress::EgressArgs>),
    /// The upstream: 1 KiB HTTP/1.1 responses (keep-alive) and a bulk sink.
    Upstream {
        #[arg(long, default_value = "127.0.0.1:18080")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:18081")]
        sink: SocketAddr,
    },
    /// One HTTP/1.1 load run against TARGET; prints JSON.
    Load {
        #[arg(long)]
        target: SocketAddr,
        /// Open loop at this many requests per second (default: closed loop).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// A new connection per request (closed loop).
        #[arg(long)]
        new_connections: bool,
        #[arg(long, default_value = "1s", value_parser = dur)]
        warmup: Duration,
        #[arg(long, default_value = "10s", value_parser = dur)]
        duration: Duration,
    },
    /// Bulk TCP to TARGET (something that reads and discards); prints JSON.
    Bulk {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value = "1s", value_parser = dur)]
        warmup: Duration,
        #[arg(long, default_value = "5s", value_parser = dur)]
        duration: Duration,
    },
    /// Full and resumed mTLS handshakes per second on one core, in-process.
    Floor {
        #[arg(long, default_value = "2s", value_parser = dur)]
        duration: Duration,
    },
    /// Start one pair (pinned as in compare), print its addresses and PIDs
    /// as JSON, keep it up for --hold, then stop it: for profiling.
    Pair {
        #[arg(long, value_enum)]
        pair: mesh_bench::pairs::Kind,
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        proxy_cpu: usize,
        #[arg(long, default_value = "60s", value_parser = dur)]
        hold: Duration,
    },
    /// What an idle pooled connection between two proxies costs each side:
    /// opens CONNECTIONS pooled connections (one per peer address) and
    /// reads both proxies' memory before and after; prints JSON and a table.
    PoolMemory {
        #[arg(long, default_value_t = 400)]
        connections: usize,
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        proxy_cpu: usize,
    },
    /// Rewrite latest.md and latency.svg from a results JSON.
    Report {
        #[arg(long, default_value = "bench/results/latest.json")]
        from: PathBuf,
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Compare(args) => {
            let r = compare::run(*args)?;
            println!("{}", report::markdown(&r));
            println!("Palisade against its targets (ratios from this run):");
            print!("{}", report::ratios(&r));
        }
        Command::Edge(args) => print!("{}", mesh_bench::edge::run(*args)?),
        Command::Egress(args) => print!("{}", mesh_bench::egress::run(*args)?),
        Command::Upstream { http, sink } => {
            let rt = runtime()?;
            rt.block_on(async {
                let (h, s) = upstream::bind(http, sink).await?;
                upstream::serve(h, s).await
            })?;
        }
        Command::Load {
            target,
            rate,
            connections,
            new_connections,
            warmup,
            duration,
        } => {
            let rt = runtime()?;
            let r = rt.block_on(async {
                match (rate, new_connections) {
                    (Some(rate), _) => {
                        load::open_loop(target, connections, rate, warmup, duration).await
                    }
                    (None, true) => {
                        load::closed_loop(
                            target,
                            connections,
                            load::Reuse::NewConnection,
                            warmup,
                            duration,
                        )
                        .await
                    }
                    (None, false) => {
                        load::closed_loop(
                            target,
                            connections,
                            load::Reuse::KeepAlive,
                            warmup,
                            duration,
                        )
                        .await
                    }
                }
            })?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Bulk {
            target,
            streams,
            warmup,
            duration,
        } => {
            let rt = runtime()?;
            let r = rt.block_on(load::bulk(target, streams, warmup, duration))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Floor { duration } => {
            let mut v = Vec::new();
            for g in [handshake::Group::X25519, handshake::Group::X25519MlKem768] {
                for resume in [false, true] {
                    v.push(handshake::floor(g, resume, duration, 10_000_000)?);
                }
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Pair {
            pair,
            bin_dir,
            proxy_cpu,
            hold,
        } => compare::serve_pair(pair, bin_dir, proxy_cpu, hold)?,
        Command::PoolMemory {
            connections,
            bin_dir,
            proxy_cpu,
        } => {
            let bin_dir = compare::bin_dir_or_default(bin_dir)?;
            let m = mesh_bench::pool_memory::run(bin_dir, connections, proxy_cpu)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
            println!("{}", m.markdown());
        }
        Command::Report { from, out } => {
            let text = std::fs::read_to_string(&from)
                .with_context(|| format!("cannot read {}", from.display()))?;
            let r: compare::Results = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a results file", from.display()))?;
            report::write(&r, &out)?;
            println!("{}", report::markdown(&r));
        }
    }
    Ok(())
}
