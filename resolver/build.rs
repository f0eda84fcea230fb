// Generates Rust types from the repo's protos (../proto, shared with the Python side).
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let proto_root = crate_dir.join("..").join("proto");
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", "/usr/bin/protoc");
    }
    let files = [
        "confidence/flags/types/v1/types.proto",
        "confidence/iam/v1/iam.proto",
        "confidence/flags/admin/v1/resolver.proto",
        "confidence/flags/resolver/v1/types.proto",
        "confidence/flags/resolver/v1/events/events.proto",
        "confidence/flags/resolver/v1/api.proto",
        "confidence/wasm/v1/abi.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| proto_root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    let mut includes = vec![proto_root];
    // Well-known types (google/protobuf/*.proto) ship with Debian's protobuf-compiler.
    let wkt = PathBuf::from("/usr/include");
    if wkt.join("google/protobuf/struct.proto").exists() {
        includes.push(wkt);
    }
    let mut config = prost_build::Config::new();
    // Ordered maps: deterministic encoding (flag digests) and deterministic logs.
    config.btree_map(["."]);
    config.include_file("_protos.rs");
    if let Err(e) = config.compile_protos(&paths, &includes) {
        panic!("protobuf code generation failed: {e}");
    }
}
