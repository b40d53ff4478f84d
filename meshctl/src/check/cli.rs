//! `meshctl check` flags, kept beside the command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use mesh_kube_api::Api;

use crate::cert::Output;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check that Palisade can be installed, instead of checking an install
    #[arg(long, env = "MESH_PRE")]
    pub pre: bool,
    /// The API server as plain HTTP, e.g. `kubectl proxy`'s http://127.0.0.1:8001;
    /// without it, the in-cluster API server (when run in a pod)
    #[arg(long, env = "MESH_KUBERNETES_API", value_name = "URL")]
    pub kubernetes_api: Option<String>,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Exit status 0 when nothing failed (warnings allowed), 1 otherwise.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let api = match &args.kubernetes_api {
        Some(url) => Api::plain(url)?,
        None => Api::in_cluster().context(
            "not in a pod: run `kubectl proxy` and pass --kubernetes-api http://127.0.0.1:8001",
        )?,
    };
    let findings = crate::cli::runtime()?.block_on(async {
        if args.pre {
            super::pre_install(&api).await
        } else {
            super::post_install(&api, time::OffsetDateTime::now_utc()).await
        }
    });
    crate::cli::write_stdout(&super::render(&findings, args.output == Output::Json))?;
    Ok(if super::failed(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
