//! Compiles `proto/` into Rust with protox (pure Rust: no `protoc` on the machine) and writes the
//! encoded descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/streamgate/v1/broker.proto",
    "proto/streamgate/v1/admin.proto",
    "proto/streamgate/v1/subscription.proto",
    "proto/google/pubsub/v1/pubsub.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("streamgate_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".streamgate.v1.Field.value")
        .compile_fds(descriptors)?;
    Ok(())
}
