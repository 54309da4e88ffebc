//! What the benchmarks share: guest components built from the current
//! source, and initialised state directories. (Each benchmark is a crate of
//! its own and uses some of this.)

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[path = "../../../tests/guests.rs"]
mod guests;

/// The directory of the built guests (built once per process).
pub fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        guests::build_guests(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
    })
}

/// A built guest's bytes, by name (`hello`, `noop`, `report_writer`, …).
pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(wasm_dir().join(format!("{name}.wasm"))).unwrap()
}

/// Initialises a state directory under `dir`; answers it and its admin
/// token.
pub fn init_state(dir: &Path) -> (PathBuf, String) {
    let state = dir.join("state");
    clawcage::cli::InitCommand {
        state: clawcage::cli::StateArgs {
            state_dir: Some(state.clone()),
        },
    }
    .run(&mut Vec::new())
    .unwrap();
    let token = std::fs::read_to_string(state.join("admin.token")).unwrap();
    (state, token.trim().to_string())
}
