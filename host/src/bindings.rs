//! Host bindings for the `clawcage:agent` world, generated from `wit/`.
//!
//! One `bindgen!` for the whole world; each capability module implements the
//! trait of its own interface on its own narrow state.

wasmtime::component::bindgen!({
    world: "agent",
    path: "../wit",
    imports: {
        "clawcage:agent/inference": async | trappable,
        "clawcage:agent/tools": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    // Cassettes (recorded exchanges) store requests and completions as JSON.
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    with: {
        "clawcage:agent/inference.model": crate::inference::ModelHandle,
        "clawcage:agent/inference.completion-stream": crate::inference::CompletionStreamHandle,
        "clawcage:agent/tools.tool": crate::tools::ToolHandle,
    },
});

pub use self::clawcage::agent::{inference, log, tools, types};
pub use exports::clawcage::agent::handler;
