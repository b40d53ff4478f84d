//! `meshctl token …` flags, kept beside the command so main.rs only dispatches.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::{parse_duration, write_stdout};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
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
pub struct TokenCreateArgs {
    /// The control plane's data dir (holds token.key)
    #[arg(long, env = "MESH_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Namespace the token proves
    #[arg(long, env = "MESH_NAMESPACE", value_name = "NS")]
    pub namespace: String,
    /// Service account the token proves
    #[arg(long, env = "MESH_SERVICE_ACCOUNT", value_name = "SA")]
    pub service_account: String,
    /// How long the token can be used to obtain certificates: 90s, 30m, 1h, 7d
    #[arg(long, env = "MESH_TTL", default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

pub fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(a) => {
            let created = super::create(&a.data_dir, &a.namespace, &a.service_account, a.ttl)?;
            if created.generated_key {
                eprintln!(
                    "note: created a new token signing key {}; the control plane must run \
                     with --data-dir {} to accept this token",
                    created.key_path.display(),
                    a.data_dir.display()
                );
            }
            write_stdout(&format!("{}\n", created.token))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
