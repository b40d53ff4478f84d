use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = mesh_control_plane::Args::parse();
    let logs = mesh_admin::init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logs.flush();
            eprintln!("mesh-control-plane: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(mesh_control_plane::run(args));
    logs.flush();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-control-plane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
