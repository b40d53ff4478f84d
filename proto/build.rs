//! Compiles the .proto files with protox (pure Rust, no protoc) and generates
//! tonic/prost code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/identity.proto",
        "proto/policy.proto",
        "proto/discovery.proto",
        "proto/telemetry.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
