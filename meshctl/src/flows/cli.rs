//! `meshctl flows` flags.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cert::Output;
use crate::cli::{parse_duration, runtime, write_stdout};

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// The control plane's admin address (reads GET /flows)
    #[arg(
        long,
        env = "MESH_CONTROL_PLANE_ADMIN",
        default_value = "http://127.0.0.1:9990"
    )]
    pub admin: String,
    /// Only flows from or to this namespace
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only denied flows (enforced or in dry-run)
    #[arg(long)]
    pub denied: bool,
    /// Print again every second until interrupted
    #[arg(long)]
    pub watch: bool,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Give up on the admin after this long
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn run(a: FlowsArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    loop {
        let doc = rt.block_on(super::fetch(&a.admin, a.timeout))?;
        let flows = super::parse(&doc)
            .map_err(|e| anyhow::anyhow!("{}: not a /flows document: {e}", a.admin))?;
        let flows = super::filter(flows, a.namespace.as_deref(), a.denied);
        write_stdout(&match a.output {
            Output::Table => super::table(&flows),
            // One JSON document per line when watching, so a reader can
            // take them one by one.
            Output::Json if a.watch => format!("{}\n", serde_json::to_string(&flows)?),
            Output::Json => format!("{}\n", serde_json::to_string_pretty(&flows)?),
        })?;
        if !a.watch {
            return Ok(ExitCode::SUCCESS);
        }
        // The refresh interval the user asked for, not a synchronization.
        std::thread::sleep(Duration::from_secs(1));
        if matches!(a.output, Output::Table) {
            write_stdout("\n")?;
        }
    }
}
