//! `meshctl egress …` flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{Mode, Seen};
use crate::cert::Output;
use crate::cli::{parse_duration, runtime, write_stdout};

#[derive(Debug, Subcommand)]
pub enum EgressCommand {
    /// Where each namespace went outside the mesh: destinations, decisions, policies
    #[command(
        long_about = "Summarizes the connections workloads made to destinations \
        outside the mesh, one line per namespace, destination (the host asked for, or the \
        address when the connection named none), port and protocol: how many, how many \
        allowed, denied and denied in dry-run only, by which workloads, and the policies \
        that decided. Reads the proxies' admin GET /egress (--admin, repeatable) and/or \
        their access logs (--log, repeatable: the JSON lines with \"direction\": \"egress\"; \
        other lines are skipped). --since keeps the last part only.\n\n\
        Examples:\n  \
        meshctl egress report --admin 10.250.0.10:4191 --admin 10.250.0.11:4191\n  \
        meshctl egress report --log /var/log/palisade/access.log --since 24h -o json"
    )]
    Report(SourceArgs),
    /// Print the EgressPolicy that allows exactly what was seen
    #[command(long_about = "Prints, for each namespace seen, an EgressPolicy with \
        default: deny and one allow rule per destination seen (a host with the ports and \
        protocols it was reached on; an address, as a /32 or /128, for connections without \
        a name), whatever those connections were decided then. Applied, it allows exactly \
        the seen destinations. Read from the same sources as report; roll it out with \
        --mode dry-run first and watch `meshctl egress report`.\n\n\
        YAML by default; -o json prints the same objects as a JSON list.\n\n\
        Example:\n  \
        meshctl egress suggest --log access.log --since 7d --mode dry-run > egress.yaml")]
    Suggest(SuggestArgs),
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Proxy admin address (reads GET /egress), e.g. http://10.0.0.7:4191
    #[arg(long, value_name = "URL")]
    pub admin: Vec<String>,
    /// An access log file (JSON lines)
    #[arg(long, value_name = "FILE")]
    pub log: Vec<PathBuf>,
    /// Only connections seen this recently: 1h, 7d (default: all)
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Give up on an admin after this long
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SuggestArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Only this namespace
    #[arg(long)]
    pub namespace: Option<String>,
    /// metadata.name of the policies
    #[arg(long, default_value = "suggested-egress")]
    pub name: String,
    /// spec.mode of the policies
    #[arg(long, value_enum, default_value_t = Mode::Enforce)]
    pub mode: Mode,
}

fn collect(a: &SourceArgs) -> anyhow::Result<Vec<Seen>> {
    if a.admin.is_empty() && a.log.is_empty() {
        anyhow::bail!("give at least one --admin URL or --log FILE");
    }
    let since = a.since.map(|d| SystemTime::now() - d);
    let mut seen = Vec::new();
    for path in &a.log {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        seen.extend(super::from_log(&text, since));
    }
    if !a.admin.is_empty() {
        let rt = runtime()?;
        for url in &a.admin {
            let doc = rt.block_on(super::fetch(url, a.timeout))?;
            seen.extend(
                super::from_admin(&doc, since)
                    .map_err(|e| anyhow::anyhow!("{url}: not an /egress document: {e}"))?,
            );
        }
    }
    Ok(seen)
}

pub fn run(command: EgressCommand) -> anyhow::Result<ExitCode> {
    match command {
        EgressCommand::Report(a) => {
            let rows = super::report(&collect(&a)?);
            write_stdout(&match a.output {
                Output::Table => super::report_table(&rows),
                Output::Json => {
                    let mut s = serde_json::to_string_pretty(&rows)?;
                    s.push('\n');
                    s
                }
            })?;
        }
        EgressCommand::Suggest(a) => {
            let mut seen = collect(&a.source)?;
            if let Some(ns) = &a.namespace {
                seen.retain(|s| &s.namespace == ns);
            }
            let yaml = super::suggest(&seen, &a.name, a.mode);
            write_stdout(&match a.source.output {
                Output::Table => yaml,
                // The same objects as Kubernetes JSON, one list.
                Output::Json => {
                    let docs = crate::yaml::parse("<suggestion>", &yaml)?;
                    let mut s = serde_json::to_string_pretty(&docs)?;
                    s.push('\n');
                    s
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
