//! Compiles `proto/` with protox (pure Rust), so a fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "raft.proto",
        "store.proto",
        "fanout.proto",
        "relay.proto",
        "presence.proto",
        "admin.proto",
    ]
    .map(|f| root.join("switchboard/cluster/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        // Fan-out payloads are cloned once per peer: make their bytes cheap to clone.
        .bytes(".switchboard.cluster.v1.Framed")
        .bytes(".switchboard.cluster.v1.JsonInvocation")
        .bytes(".switchboard.cluster.v1.MessagePackInvocation")
        // Watch states are split into chunks without copying.
        .bytes(".switchboard.cluster.v1.StateChunk")
        // Relayed sends and polls carry client frames as they are.
        .bytes(".switchboard.cluster.v1.RelaySend")
        .bytes(".switchboard.cluster.v1.RelayReply")
        .bytes(".switchboard.cluster.v1.ResumeFrame")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
