//! `meshctl cert …` flags, kept beside the command so main.rs only dispatches.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};

use super::{InspectOptions, Output, Source, Verification};
use crate::cli::{Usage, parse_duration, runtime, write_stdout};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Show the identity, validity and issuer chain of a certificate
    #[command(
        long_about = "Show the identity (SPIFFE ID), serial, validity, time left, key \
        algorithm and issuer chain of a certificate.\n\n\
        Exactly one source:\n  \
        --admin URL         the certificate a running proxy holds, from its admin /certs\n  \
        --connect HOST:PORT the certificate a mesh port presents in the TLS handshake\n  \
        FILE                PEM file with one or more certificates, leaf first (- for stdin)\n\n\
        With --trust-bundle, also check that the chain verifies against those roots \
        for the trust domain of the leaf's SPIFFE ID.\n\n\
        Examples:\n  \
        meshctl cert inspect --admin http://127.0.0.1:4191\n  \
        meshctl cert inspect --connect 10.0.0.7:4143 --trust-bundle /var/lib/palisade/trust-bundle.pem\n  \
        meshctl cert inspect leaf.pem -o json"
    )]
    Inspect(CertInspectArgs),
}

// Not a clap ArgGroup: MESH_ADMIN or MESH_TRUST_BUNDLE may be set in the
// environment for the proxy, and a source given on the command line must win
// over one from the environment instead of conflicting with it.
#[derive(Debug, Args)]
#[command(
    override_usage = "meshctl cert inspect [OPTIONS] <--admin URL | --connect HOST:PORT | FILE.pem>"
)]
pub struct CertInspectArgs {
    /// Proxy admin address, e.g. http://127.0.0.1:4191 (reads GET /certs)
    #[arg(long, env = "MESH_ADMIN", value_name = "URL")]
    pub admin: Option<String>,
    /// Mesh TLS port to handshake with, e.g. 127.0.0.1:4143 (sends no data)
    #[arg(long, env = "MESH_CONNECT", value_name = "HOST:PORT")]
    pub connect: Option<String>,
    /// PEM file with one or more certificates, leaf first; - reads stdin
    #[arg(value_name = "FILE.pem")]
    pub file: Option<PathBuf>,
    /// Roots to verify the chain against, e.g. the control plane's trust-bundle.pem
    #[arg(long, env = "MESH_TRUST_BUNDLE", value_name = "FILE")]
    pub trust_bundle: Option<PathBuf>,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Give up on --admin or --connect after this long: 5s, 1m
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `matches` are the subcommand's own (`cert inspect`), to tell flags given
/// on the command line from those of the environment.
pub fn run(command: CertCommand, matches: Option<&ArgMatches>) -> anyhow::Result<ExitCode> {
    match command {
        CertCommand::Inspect(a) => {
            let source = inspect_source(&a, matches)?;
            let opts = InspectOptions {
                source,
                trust_bundle: a.trust_bundle,
                timeout: a.timeout,
            };
            let report = runtime()?.block_on(super::inspect(&opts))?;
            write_stdout(&report.render(a.output)?)?;
            // The report says why; the exit code lets scripts act on it.
            if let Some(Verification {
                trust_bundle,
                result: Err(why),
            }) = &report.verification
            {
                anyhow::bail!(
                    "the chain does not verify against {}: {why}",
                    trust_bundle.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The one source of `cert inspect`: a source on the command line wins over
/// one from the environment; more than one at the same level is a usage
/// error (exit code 2, like any other).
fn inspect_source(a: &CertInspectArgs, matches: Option<&ArgMatches>) -> Result<Source, Usage> {
    let given = [
        ("admin", a.admin.clone().map(Source::Admin)),
        ("connect", a.connect.clone().map(Source::Connect)),
        ("file", a.file.clone().map(Source::File)),
    ];
    let from_command_line =
        |id: &str| matches.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine);
    let (explicit, from_env): (Vec<_>, Vec<_>) = given
        .into_iter()
        .filter_map(|(id, s)| s.map(|s| (id, s)))
        .partition(|(id, _)| from_command_line(id));
    let candidates = if explicit.is_empty() {
        from_env
    } else {
        explicit
    };
    match <[_; 1]>::try_from(candidates) {
        Ok([(_, source)]) => Ok(source),
        Err(c) if c.is_empty() => Err(Usage::new(
            &["cert", "inspect"],
            ErrorKind::MissingRequiredArgument,
            "give one of --admin URL, --connect HOST:PORT or FILE.pem",
        )),
        Err(c) => {
            let names: Vec<String> = c.iter().map(|(id, _)| flag_name(id)).collect();
            Err(Usage::new(
                &["cert", "inspect"],
                ErrorKind::ArgumentConflict,
                format!("give only one of {}", names.join(", ")),
            ))
        }
    }
}

fn flag_name(id: &str) -> String {
    match id {
        "file" => "FILE.pem".into(),
        other => format!("--{other} (or MESH_{})", other.to_uppercase()),
    }
}
