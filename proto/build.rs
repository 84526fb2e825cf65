//! Compiles `stackshift/v1/*.proto` with protox (pure Rust, no system `protoc`) and writes
//! the file descriptor set used by gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "stackshift/v1/common.proto",
        "stackshift/v1/observability.proto",
        "stackshift/v1/events.proto",
        "stackshift/v1/jobs.proto",
        "stackshift/v1/queues.proto",
        "stackshift/v1/worker.proto",
        "stackshift/v1/state.proto",
        "stackshift/v1/admin.proto",
        "stackshift/v1/schedules.proto",
        "stackshift/v1/triggers.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("stackshift_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
