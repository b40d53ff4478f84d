//! `mesh-injector`: parses flags and runs the webhook library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use mesh_injector::{Settings, server};

/// mesh-injector: the admission webhook that adds the Palisade proxy to pods.
///
/// Answers AdmissionReview v1 at POST /inject over HTTPS. Pods are meshed
/// when the MutatingWebhookConfiguration sends them here (namespace label
/// palisade.dev/inject=enabled, or pod label palisade.dev/inject=enabled),
/// unless the pod says palisade.dev/inject: disabled, is already injected,
/// uses hostNetwork, or runs in kube-system or mesh-system. Every flag can
/// also be set as MESH_<FLAG_IN_CAPS>, e.g. --tls-cert is MESH_TLS_CERT.
#[derive(Debug, Parser)]
#[command(name = "mesh-injector", version, about, long_about)]
struct Args {
    /// Where the webhook listens (HTTPS)
    #[arg(long, env = "MESH_LISTEN", default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// The webhook's certificate chain (PEM), for the Service name in the
    /// webhook configuration
    #[arg(long, env = "MESH_TLS_CERT", value_name = "FILE")]
    tls_cert: PathBuf,
    /// The webhook's private key (PEM)
    #[arg(long, env = "MESH_TLS_KEY", value_name = "FILE")]
    tls_key: PathBuf,
    #[command(flatten)]
    settings: Settings,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let logs = mesh_admin::init_tracing();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(run(args)));
    logs.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-injector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tls = server::tls_config(&args.tls_cert, &args.tls_key)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
    tracing::info!(listen = %args.listen, proxy_image = %args.settings.proxy_image, "injector serving");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(server::serve(
        listener,
        tls,
        Arc::new(args.settings),
        stopped,
    ));
    mesh_admin::shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = serving.await;
    Ok(())
}
