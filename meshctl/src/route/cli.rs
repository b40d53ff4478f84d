//! `meshctl route …` flags.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cert::Output;
use crate::cli::{parse_duration, runtime, write_stdout};

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Show the routes, rate limits and endpoints a running proxy holds
    #[command(
        long_about = "Shows what a running proxy holds for traffic management, from its \
        admin GET /routes: the HTTPRoutes of its policy snapshot (one line per rule: \
        parents, matches, backends with their weights, timeouts, retry), the \
        RateLimitPolicies (selector, which requests, total and per-client limits, \
        overrides, dry-run), and the endpoints its requests went to (the balancer's \
        latency estimate, requests in flight, and healthy / ejected with the time left / \
        due a probe / probing). -o json prints the admin's JSON as it was sent.\n\n\
        Exit status: 0, or 1 if the proxy cannot be reached or answers something else.\n\n\
        Examples:\n  \
        meshctl route get --admin http://127.0.0.1:4191\n  \
        meshctl route get --admin 10.0.0.7:4191 -o json"
    )]
    Get(RouteGetArgs),
}

#[derive(Debug, Args)]
pub struct RouteGetArgs {
    /// Proxy admin address, e.g. http://127.0.0.1:4191 (reads GET /routes)
    #[arg(long, env = "MESH_ADMIN", value_name = "URL")]
    pub admin: String,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Give up after this long: 5s, 1m
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn run(command: RouteCommand) -> anyhow::Result<ExitCode> {
    match command {
        RouteCommand::Get(a) => {
            let doc = runtime()?.block_on(super::fetch(&a.admin, a.timeout))?;
            write_stdout(&match a.output {
                Output::Table => doc.to_table(),
                Output::Json => doc.to_json(),
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
