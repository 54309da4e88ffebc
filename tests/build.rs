//! Builds the guest components from source (see `guests.rs`) and generates
//! constants with their paths for the tests.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;

#[path = "guests.rs"]
mod guests;

const COMPONENTS: &[(&str, &str)] = &[
    ("HELLO", "hello"),
    ("TRIAGE", "triage"),
    ("REPORT_WRITER", "report_writer"),
    ("HOSTILE", "hostile"),
    ("NOOP", "noop"),
    ("COMMAND_APP", "command-app"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for dir in [
        "wit",
        "guest-sdk",
        "sample-agents/hello",
        "sample-agents/triage",
        "sample-agents/report-writer",
        "sample-agents/Cargo.toml",
        "tests/fixtures",
        "tests/guests.rs",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let wasm_dir = guests::build_guests(&root);
    let mut constants = String::new();
    for (constant, name) in COMPONENTS {
        let path = wasm_dir.join(format!("{name}.wasm"));
        assert!(
            path.is_file(),
            "expected {} after the guest build",
            path.display()
        );
        constants.push_str(&format!(
            "/// The `{name}` component, built from source.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    constants.push_str(&format!(
        "/// The repository's root.\npub const REPO_ROOT: &str = {:?};\n",
        root.display().to_string()
    ));
    std::fs::write(out_dir.join("components.rs"), constants).unwrap();
}
