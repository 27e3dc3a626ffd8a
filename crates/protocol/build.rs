//! Generates the `confab.v1` Rust types from `proto/` with prost-build.
//!
//! `protoc` comes from `protoc-bin-vendored` so a fresh clone needs nothing
//! but cargo.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "confab/v1/frames.proto",
        "confab/v1/auth.proto",
        "confab/v1/rooms.proto",
        "confab/v1/messages.proto",
        "confab/v1/ephemeral.proto",
        "confab/v1/errors.proto",
        "confab/v1/read.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for path in &paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // The descriptor set feeds pbjson-build, which adds the canonical proto3
    // JSON mapping (serde) used by transcripts, `tail --json` and scenarios.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("confab_descriptor.bin");
    config.file_descriptor_set_path(&descriptor_path);
    config.compile_protos(&paths, &[root])?;
    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".confab"])?;
    Ok(())
}
