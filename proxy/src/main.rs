use clap::{Parser, Subcommand};

/// mesh-proxy: the Palisade sidecar.
#[derive(Parser)]
#[command(name = "mesh-proxy", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar proxy.
    Run(Box<mesh_proxy::RunArgs>),
    /// Run the ingress gateway: external TLS terminated, routed by Gateway
    /// and Ingress objects, re-encrypted into the mesh.
    #[command(
        mut_arg("namespace", |a| a.default_value("mesh-system")),
        mut_arg("service_account", |a| a.default_value("ingress")),
        mut_arg("workload", |a| a.default_value("ingress")),
    )]
    Ingress(Box<mesh_proxy::ingress::IngressArgs>),
    // Its help text is InitArgs' own.
    Init(mesh_proxy::init::InitArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logs = mesh_admin::init_tracing();
    let (workers, ingress, args) = match cli.command {
        Command::Run(args) => (args.workers, None, Some(args)),
        Command::Ingress(args) => (args.proxy.workers, Some(args), None),
        Command::Init(args) => return mesh_proxy::init::main(&args),
    };
    let rt = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            logs.flush();
            eprintln!("mesh-proxy: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match (args, ingress) {
        (Some(args), _) => rt.block_on(mesh_proxy::run(*args)),
        (None, Some(ingress)) => rt.block_on(mesh_proxy::ingress::run(*ingress)),
        (None, None) => Ok(()),
    };
    logs.flush();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
