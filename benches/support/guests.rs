//! The guest examples the benches and tests deploy (the benches, the
//! integration tests and the cluster tests of the host crates include this
//! file), built once per process.

#![allow(dead_code)] // Each includer uses its own part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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

/// Builds `guest-examples/` once per process (release, wasm32-wasip2; cargo
/// skips what is fresh) and returns the folder of the built components. The
/// caller's own cargo settings (`CARGO_TARGET_DIR`, `CARGO_BUILD_TARGET`) are
/// not passed on: the guests have their own workspace and target.
pub fn built_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = examples_dir();
        let status = Command::new("cargo")
            .args(["build", "--release", "--quiet"])
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("run cargo build in guest-examples");
        assert!(status.success(), "building guest-examples failed");
        dir.join("target/wasm32-wasip2/release")
    })
}

/// The built component `name` (its file name: `json_stats`, not `json-stats`).
pub fn build_guest(name: &str) -> Vec<u8> {
    let path = built_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
