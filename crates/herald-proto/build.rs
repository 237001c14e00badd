//! Compiles `proto/herald/v1/*.proto` in pure Rust (protox), so building Herald
//! needs no `protoc` binary. The descriptor set is also written out for gRPC
//! server reflection.
//!
//! The generated types derive `serde::Serialize` and use `BTreeMap` for proto
//! maps; this script must never add behaviour beyond such derives.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary may be reused by a checkout
    // in another directory that shares the target dir.
    let manifest_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../../proto");
    let file = root.join("herald/v1/herald.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("herald_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Every message and oneof can be printed as JSON with its proto
        // field names (the CLI's --json), derived rather than written out
        // field by field so that a field added to the proto is printed too.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // Sorted maps, so that printed headers come out in a stable order.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
