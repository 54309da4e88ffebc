//! Builds the guest components (sample agents and test fixtures) from source
//! for `wasm32-wasip2`, and generates constants with their paths.
//!
//! The guests live in their own workspace (`sample-agents/Cargo.toml`); they
//! are built with a target directory of their own so this nested cargo never
//! waits on the outer one's lock.

use std::path::PathBuf;
use std::process::Command;

const COMPONENTS: &[(&str, &str)] = &[
    ("HELLO", "hello"),
    ("TRIAGE", "triage"),
    ("HOSTILE", "hostile"),
    ("COMMAND_APP", "command-app"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = root.join("target").join("guests");

    for dir in ["wit", "guest-sdk", "sample-agents/hello", "sample-agents/triage", "sample-agents/Cargo.toml", "tests/fixtures"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--manifest-path")
        .arg(root.join("sample-agents/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--workspace");
    // Flags meant for the host build must not leak into the guest build.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "CARGO_BUILD_RUSTFLAGS"] {
        command.env_remove(var);
    }
    let status = command.status().expect("running cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed; is the target installed? (rustup target add wasm32-wasip2)"
    );

    let mut constants = String::new();
    for (constant, name) in COMPONENTS {
        let path = target_dir.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
        assert!(path.is_file(), "expected {} after the guest build", path.display());
        constants.push_str(&format!("/// The `{name}` component, built from source.\npub const {constant}: &str = {:?};\n", path.display().to_string()));
    }
    constants.push_str(&format!("/// The repository's root.\npub const REPO_ROOT: &str = {:?};\n", root.display().to_string()));
    std::fs::write(out_dir.join("components.rs"), constants).unwrap();
}
