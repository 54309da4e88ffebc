//! Builds the guest components (sample agents and test fixtures) from
//! source for `wasm32-wasip2`. Shared by the tests' build script and the
//! host's benchmarks, so both always run on components built from the
//! current source.
//!
//! The guests live in their own workspace (`sample-agents/Cargo.toml`) and
//! are built into a target directory of their own, so this nested cargo never
//! waits on the outer one's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds every guest in release mode; returns the directory holding the
/// `.wasm` files.
pub fn build_guests(root: &Path) -> PathBuf {
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--workspace")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(root.join("sample-agents/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("running cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed; is the target installed? (rustup target add wasm32-wasip2)"
    );
    target_dir.join("wasm32-wasip2").join("release")
}
