//! Generates the protobuf and async ttrpc code from `protos/` at build time
//! (pure-Rust parser: no `protoc` needed).

use std::fs;
use std::path::PathBuf;

const PROTOS: &[&str] = &["agent", "health", "oci", "types", "csi", "pith"];
const SERVICES: &[&str] = &["agent", "health", "pith"];

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("protos");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let inputs: Vec<PathBuf> = PROTOS.iter().map(|p| dir.join(format!("{p}.proto"))).collect();
    for f in &inputs {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .inputs(&inputs)
        .include(&dir)
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ttrpc_codegen::ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("generate code from protocols/protos");

    // Generated files open with inner attributes and `//!` docs, which cannot
    // appear inside the `pub mod x { include!(..) }` that wraps each of them.
    let stems = PROTOS
        .iter()
        .map(|s| s.to_string())
        .chain(SERVICES.iter().map(|s| format!("{s}_ttrpc")));
    for stem in stems {
        let path = out.join(format!("{stem}.rs"));
        let src = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let fixed: String = src
            .lines()
            .filter(|l| !l.starts_with("#!["))
            .map(|l| match l.strip_prefix("//!") {
                Some(rest) => format!("//{rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        fs::write(&path, fixed).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
