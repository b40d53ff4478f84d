//! `meshctl ca …` flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};

use crate::cert::Output;
use crate::cli::{parse_duration, runtime, write_stdout};

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Roots, issuer, expiry, the rotation phase and which holders have which generation (GET /ca)
    Status(StatusArgs),
    /// Rotate the trust anchor in three steps, nothing restarted: begin, switch, finish
    #[command(subcommand)]
    Rotate(RotateCommand),
}

#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Publish a new root beside the old one (generated, or --root-cert/--issuer-cert/--issuer-key)
    #[command(
        long_about = "Step 1 of 3. Puts a new root and issuer under DATA_DIR/ca/next \
        (generated, or the operator's plug-in CA: --root-cert, --issuer-cert, \
        --issuer-key, optionally --root-key; keys must be mode 0600) after checking the \
        issuer signs SVIDs that verify against the root, and publishes the new root \
        beside the old one. The control plane takes it within a second; every proxy \
        renews and trusts both roots.\n\n\
        Example:\n  meshctl ca rotate begin --data-dir /var/lib/palisade"
    )]
    Begin(BeginArgs),
    /// Sign with the new issuer, once every holder trusts both roots
    Switch(StepArgs),
    /// Remove the old root, once every holder's certificate is from the new issuer
    Finish(StepArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
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
pub struct BeginArgs {
    /// The control plane's data directory
    #[arg(long, env = "MESH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The trust domain (names the generated CA; checks the plug-in CA)
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = mesh_identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Plug-in CA: the new root certificate (PEM)
    #[arg(long)]
    pub root_cert: Option<PathBuf>,
    /// Plug-in CA: the new root's key (PEM, mode 0600; optional)
    #[arg(long)]
    pub root_key: Option<PathBuf>,
    /// Plug-in CA: the new issuing intermediate (PEM, optionally followed by
    /// further intermediates up to the root)
    #[arg(long)]
    pub issuer_cert: Option<PathBuf>,
    /// Plug-in CA: the issuing intermediate's key (PEM, mode 0600)
    #[arg(long)]
    pub issuer_key: Option<PathBuf>,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct StepArgs {
    /// The control plane's data directory
    #[arg(long, env = "MESH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The control plane's admin address: the step waits for nobody, it
    /// refuses while a holder lags
    #[arg(
        long,
        env = "MESH_CONTROL_PLANE_ADMIN",
        default_value = "http://127.0.0.1:9990"
    )]
    pub admin: String,
    /// Go on although holders lag or the control plane cannot be asked
    #[arg(long)]
    pub force: bool,
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(command: CaCommand) -> anyhow::Result<ExitCode> {
    match command {
        CaCommand::Status(a) => {
            let rt = runtime()?;
            let status = rt.block_on(super::fetch(&a.admin, a.timeout))?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            write_stdout(&match a.output {
                Output::Table => super::table(&status, now),
                Output::Json => format!("{}\n", serde_json::to_string_pretty(&status)?),
            })?;
        }
        CaCommand::Rotate(RotateCommand::Begin(a)) => {
            let plug_in = super::PlugIn {
                root_cert: a.root_cert,
                root_key: a.root_key,
                issuer_cert: a.issuer_cert,
                issuer_key: a.issuer_key,
            };
            print_step(
                &super::begin(&a.data_dir, &a.trust_domain, &plug_in)?,
                a.output,
            )?;
        }
        CaCommand::Rotate(RotateCommand::Switch(a)) => {
            check_step(&a)?;
            print_step(&super::switch(&a.data_dir)?, a.output)?;
        }
        CaCommand::Rotate(RotateCommand::Finish(a)) => {
            check_step(&a)?;
            print_step(&super::finish(&a.data_dir)?, a.output)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_step(step: &super::Step, output: Output) -> anyhow::Result<()> {
    write_stdout(&match output {
        Output::Table => format!(
            "{} (generation {}, {} root(s) trusted)\n",
            step.message, step.generation, step.roots
        ),
        Output::Json => format!("{}\n", serde_json::to_string_pretty(step)?),
    })?;
    Ok(())
}

fn check_step(a: &StepArgs) -> anyhow::Result<()> {
    if a.force {
        return Ok(());
    }
    let rt = runtime()?;
    let status = rt.block_on(super::fetch(&a.admin, a.timeout))?;
    super::ready_for_next_step(&status, &a.data_dir)
}
