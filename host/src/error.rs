//! Errors at the library's boundary: loading an agent, and running an event.

use serde::Serialize;

use crate::limits::LimitKind;

/// Why an agent could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        reason: String,
    },
    /// The manifest is malformed or invalid.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The bytes are not a WebAssembly component (for example a core module).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component's sha256 differs from the manifest's pin.
    #[error("component sha256 is {actual}, but the manifest pins {expected}")]
    DigestMismatch {
        /// The pinned digest.
        expected: String,
        /// The digest of the bytes read.
        actual: String,
    },
    /// The component imports something ClawCage does not provide.
    #[error("component imports `{import}`, which is outside the clawcage:agent world")]
    UnsupportedImport {
        /// The import's name.
        import: String,
    },
    /// The component does not fit the `clawcage:agent` world.
    #[error("component does not fit the clawcage:agent world: {0}")]
    WrongWorld(String),
    /// The component failed to compile.
    #[error("component failed to compile: {0}")]
    Compile(String),
    /// The engine could not be created.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The compile cache could not be used.
    #[error("compile cache: {0}")]
    Cache(String),
    /// The manifest asks for something this host does not support yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The manifest names a key or credential the vault does not hold.
    #[error("{0}")]
    UnknownKey(String),
}

impl LoadError {
    pub(crate) fn engine(e: wasmtime::Error) -> Self {
        Self::Engine(format!("{e:#}"))
    }

    pub(crate) fn compile(e: wasmtime::Error) -> Self {
        Self::Compile(format!("{e:#}"))
    }
}

/// Why an event did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum InvokeError {
    /// The event was rejected before the agent ran.
    #[error("invalid event: {reason}")]
    InvalidEvent {
        /// What is wrong with it.
        reason: String,
    },
    /// The handler returned an error.
    #[error("agent error: {message}")]
    Agent {
        /// The handler's message (bounded).
        message: String,
    },
    /// The agent hit one of its limits and was stopped.
    #[error("agent stopped: {limit} limit exceeded{}", detail_suffix(.detail))]
    LimitExceeded {
        /// Which limit.
        limit: LimitKind,
        /// More about it, when known.
        detail: String,
    },
    /// The agent crashed (panic, abort, invalid memory access, …).
    #[error("agent crashed: {reason}")]
    Crashed {
        /// The trap, and the panic message when there was one.
        reason: String,
    },
    /// The handler's result (or error message) is larger than allowed.
    #[error("agent result is {size} bytes, more than the {max} allowed")]
    ResultTooLarge {
        /// Its size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// The host is at capacity; try again later.
    #[error("host busy: {reason}")]
    Busy {
        /// Which capacity ran out.
        reason: String,
    },
    /// The host failed; this is a bug or an environment problem.
    #[error("host error: {reason}")]
    Host {
        /// What failed.
        reason: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}
