//! The guest examples the benches (and the cluster tests of the host crates)
//! deploy, built once per run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `guest-examples/` in this checkout: beside the manifest directory of the
/// crate including this file, or of one of its parents (benches live in
/// `runtime/`, tests in `crates/<crate>/`).
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("guest-examples"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples"))
}

/// Builds `guest-examples/` (release, wasm32-wasip2; cargo skips what is
/// fresh) and returns the component `name`. The caller's own cargo settings
/// (`CARGO_TARGET_DIR`, `CARGO_BUILD_TARGET`) are not passed on: the guests
/// have their own workspace and target.
pub fn build_guest(name: &str) -> Vec<u8> {
    let dir = examples_dir();
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("cargo build guest-examples");
    assert!(status.success(), "building guest-examples failed");
    std::fs::read(dir.join(format!("target/wasm32-wasip2/release/{name}.wasm")))
        .expect("guest wasm")
}
