//! Compiles the `.proto` files of this crate with `protox` (pure Rust, no system `protoc`) and
//! generates prost types from them: amarula's own files in this folder (package `wa`) and the
//! upstream WhatsApp Web schema vendored under `whatsmeow/` (one package per file, imports
//! resolved from that folder).

use std::path::{Path, PathBuf};

fn protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            protos(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let upstream = root.join("whatsmeow");
    let mut own: Vec<PathBuf> = std::fs::read_dir(&root)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    let mut vendored = Vec::new();
    protos(&upstream, &mut vendored)?;
    own.sort();
    vendored.sort();
    println!("cargo:rerun-if-changed={}", upstream.display());
    for f in own.iter().chain(&vendored) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // Named relative to their include folder, so that each file has one name: the vendored
    // files import each other as `waCommon/WACommon.proto` and so on.
    let mut names = Vec::new();
    for f in &own {
        names.push(f.strip_prefix(&root)?.to_path_buf());
    }
    for f in &vendored {
        names.push(f.strip_prefix(&upstream)?.to_path_buf());
    }
    let descriptors = protox::compile(&names, [&root, &upstream])?;
    prost_build::Config::new()
        .bytes(["."])
        .include_file("_includes.rs")
        .compile_fds(descriptors)?;
    Ok(())
}
