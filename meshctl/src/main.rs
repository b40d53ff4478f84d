//! `meshctl`, the Palisade operator CLI. This file only parses flags; the
//! work happens in the library modules so tests can call it directly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use meshctl::cert::{self, InspectOptions, Output, Source, Verification};
use meshctl::token;

#[derive(Debug, Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Operate a Palisade service mesh: join tokens, certificates, policy",
    long_about = "Operate a Palisade service mesh.\n\n\
        Every flag can also be set through an environment variable named \
        MESH_<FLAG_IN_CAPS>, e.g. --data-dir is MESH_DATA_DIR.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join tokens for workloads outside Kubernetes
    #[command(subcommand)]
    Token(TokenCommand),
    /// Workload certificates (X.509-SVIDs)
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a join token that lets a proxy obtain a certificate for NS/SA
    #[command(
        long_about = "Print a join token that lets a proxy obtain a certificate for \
        spiffe://<trust-domain>/ns/NS/sa/SA.\n\n\
        The token is signed with DIR/token.key, the key the control plane started \
        with --data-dir DIR verifies tokens with (run this on the control plane's \
        host, as the user that owns its data dir). If the key does not exist yet it \
        is created, and the control plane will use it on its next start.\n\n\
        Only the token is printed, on one line, so it can be redirected into the \
        file a proxy reads with --token-file:\n\n  \
        meshctl token create --data-dir /var/lib/palisade --namespace shop \\\n      \
        --service-account api --ttl 1h > api.token\n\n\
        Anyone holding the token can obtain a certificate for that identity until \
        it expires: keep it secret and short-lived."
    )]
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
struct TokenCreateArgs {
    /// The control plane's data dir (holds token.key)
    #[arg(long, env = "MESH_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf,
    /// Namespace the token proves
    #[arg(long, env = "MESH_NAMESPACE", value_name = "NS")]
    namespace: String,
    /// Service account the token proves
    #[arg(long, env = "MESH_SERVICE_ACCOUNT", value_name = "SA")]
    service_account: String,
    /// How long the token can be used to obtain certificates: 90s, 30m, 1h, 7d
    #[arg(long, env = "MESH_TTL", default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
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
struct CertInspectArgs {
    /// Proxy admin address, e.g. http://127.0.0.1:4191 (reads GET /certs)
    #[arg(long, env = "MESH_ADMIN", value_name = "URL")]
    admin: Option<String>,
    /// Mesh TLS port to handshake with, e.g. 127.0.0.1:4143 (sends no data)
    #[arg(long, env = "MESH_CONNECT", value_name = "HOST:PORT")]
    connect: Option<String>,
    /// PEM file with one or more certificates, leaf first; - reads stdin
    #[arg(value_name = "FILE.pem")]
    file: Option<PathBuf>,
    /// Roots to verify the chain against, e.g. the control plane's trust-bundle.pem
    #[arg(long, env = "MESH_TRUST_BUNDLE", value_name = "FILE")]
    trust_bundle: Option<PathBuf>,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Give up on --admin or --connect after this long: 5s, 1m
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_identity::duration::parse_duration(s)
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Token(TokenCommand::Create(a)) => {
            let created = token::create(&a.data_dir, &a.namespace, &a.service_account, a.ttl)?;
            if created.generated_key {
                eprintln!(
                    "note: created a new token signing key {}; the control plane must run \
                     with --data-dir {} to accept this token",
                    created.key_path.display(),
                    a.data_dir.display()
                );
            }
            write_stdout(&format!("{}\n", created.token))
        }
        Command::Cert(CertCommand::Inspect(a)) => {
            let inspect_matches = matches
                .subcommand_matches("cert")
                .and_then(|m| m.subcommand_matches("inspect"));
            let source = inspect_source(&a, inspect_matches);
            let opts = InspectOptions {
                source,
                trust_bundle: a.trust_bundle,
                timeout: a.timeout,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = runtime.block_on(cert::inspect(&opts))?;
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
            Ok(())
        }
    }
}

/// Writes to stdout without `print!`'s panic when the reader has gone away
/// (`meshctl … | head`); a closed pipe is not an error worth reporting.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// The one source of `cert inspect`: a source on the command line wins over
/// one from the environment; more than one at the same level is a usage
/// error (exit code 2, like any other).
fn inspect_source(a: &CertInspectArgs, matches: Option<&ArgMatches>) -> Source {
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
        Ok([(_, source)]) => source,
        Err(c) if c.is_empty() => usage_error(
            ErrorKind::MissingRequiredArgument,
            "give one of --admin URL, --connect HOST:PORT or FILE.pem",
        ),
        Err(c) => {
            let names: Vec<String> = c.iter().map(|(id, _)| flag_name(id)).collect();
            usage_error(
                ErrorKind::ArgumentConflict,
                &format!("give only one of {}", names.join(", ")),
            )
        }
    }
}

/// Exits with clap's usage error for `cert inspect`.
fn usage_error(kind: ErrorKind, msg: &str) -> ! {
    let mut cmd = Cli::command();
    // Building fills in the subcommands' "meshctl cert inspect" names.
    cmd.build();
    let inspect = cmd
        .find_subcommand("cert")
        .and_then(|c| c.find_subcommand("inspect"))
        .cloned();
    inspect.unwrap_or(cmd).error(kind, msg).exit()
}

fn flag_name(id: &str) -> String {
    match id {
        "file" => "FILE.pem".into(),
        other => format!("--{other} (or MESH_{})", other.to_uppercase()),
    }
}
