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
    // Its help text is InitArgs' own.
    Init(mesh_proxy::init::InitArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let logs = mesh_admin::init_tracing();
    let args = match cli.command {
        Command::Run(args) => args,
        Command::Init(args) => return mesh_proxy::init::main(&args),
    };
    let rt = if args.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
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
    let result = rt.block_on(mesh_proxy::run(*args));
    logs.flush();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
