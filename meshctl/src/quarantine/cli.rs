//! `meshctl quarantine …` flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};

use crate::cert::Output;
use crate::cli::{parse_duration, runtime, write_stdout};

#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// The quarantines in force, why, and when each lifts (GET /quarantines)
    List(ListArgs),
    /// Lift a quarantine now (a request in the control plane's data directory)
    #[command(
        long_about = "Lifts a quarantine before its expiry: leaves the request \
        in the control plane's data directory (DATA_DIR/quarantine-lifts/NAME), which \
        only the control plane's operator can write; the control plane lifts it within a \
        second and the proxies admit the source again.\n\n\
        Example:\n  meshctl quarantine lift q-3f2a9c1b7e40 --data-dir /var/lib/palisade"
    )]
    Lift(LiftArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The control plane's admin address
    #[arg(
        long,
        env = "MESH_CONTROL_PLANE_ADMIN",
        default_value = "http://127.0.0.1:9990"
    )]
    pub admin: String,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct LiftArgs {
    /// The quarantine's name (meshctl quarantine list)
    pub name: String,
    /// The control plane's data directory
    #[arg(long, env = "MESH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    match command {
        QuarantineCommand::List(a) => {
            let rt = runtime()?;
            let doc = rt.block_on(super::fetch(&a.admin, a.timeout))?;
            let doc = super::parse(&doc)
                .map_err(|e| anyhow::anyhow!("{}: not a /quarantines document: {e}", a.admin))?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            write_stdout(&match a.output {
                Output::Table => super::table(&doc.quarantines, now),
                Output::Json => format!("{}\n", serde_json::to_string_pretty(&doc)?),
            })?;
        }
        QuarantineCommand::Lift(a) => {
            super::request_lift(&a.data_dir, &a.name)?;
            write_stdout(&match a.output {
                Output::Table => format!(
                    "lift of {} requested; the control plane lifts it within a second\n",
                    a.name
                ),
                Output::Json => format!("{}\n", serde_json::json!({"lift_requested": a.name})),
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
