//! Write ClawCage agents in Rust.
//!
//! An agent is a WebAssembly component built for `wasm32-wasip2`. The host
//! gives it nothing but capabilities the operator granted: models opened by
//! binding name, tools opened by name, and logging. Credentials never reach
//! the agent.
//!
//! ```ignore
//! use clawcage_sdk::{handler, info, CompletionRequest, Event, Model};
//!
//! #[handler]
//! fn handle(event: Event) -> clawcage_sdk::Result<String> {
//!     info!("got {} from {}", event.kind, event.source);
//!     let model = Model::open("default")?;
//!     let answer = model.complete(&CompletionRequest::new().user("Say hello"))?;
//!     Ok(answer.text())
//! }
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` (crate type
//! `cdylib`) and run it with `clawcage run`.

#![warn(missing_docs)]

mod error;
mod errors;
mod event;
pub mod inference;
pub mod log;
pub mod tools;

pub use clawcage_sdk_macros::handler;
pub use error::{Error, Result};
pub use errors::TimeoutKind;
pub use event::Event;
pub use inference::{
    CacheTtl, Completion, CompletionRequest, CompletionStream, ContentPart, InferenceError,
    Message, Model, ModelInfo, Role, StopReason, StreamEvent, ToolChoice, ToolResult, ToolSpec,
    ToolUse, Usage,
};
pub use serde_json;
pub use tools::{ActionInfo, Tool, ToolError, ToolInfo};

/// The generated bindings for the `clawcage:agent` world. Not a stable API:
/// use the items re-exported at the crate root.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod wit {
    wit_bindgen::generate!({
        world: "agent",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_agent",
        default_bindings_module: "::clawcage_sdk::wit",
    });
}

/// What a handler may return on success.
#[diagnostic::on_unimplemented(
    message = "a handler cannot return `{Self}`",
    label = "return `String`, `&str`, `()`, `serde_json::Value` or `Json<T>` here",
    note = "wrap any `Serialize` value in `clawcage_sdk::Json(…)` to return it as JSON"
)]
pub trait HandlerOutput {
    /// The text handed to the host.
    fn into_output(self) -> std::result::Result<String, String>;
}

impl HandlerOutput for String {
    fn into_output(self) -> std::result::Result<String, String> {
        Ok(self)
    }
}

impl HandlerOutput for &str {
    fn into_output(self) -> std::result::Result<String, String> {
        Ok(self.to_string())
    }
}

impl HandlerOutput for () {
    fn into_output(self) -> std::result::Result<String, String> {
        Ok(String::new())
    }
}

impl HandlerOutput for serde_json::Value {
    fn into_output(self) -> std::result::Result<String, String> {
        Ok(self.to_string())
    }
}

/// Returns any `Serialize` value as JSON: `Ok(Json(report))`.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> HandlerOutput for Json<T> {
    fn into_output(self) -> std::result::Result<String, String> {
        serde_json::to_string(&self.0).map_err(|e| format!("cannot serialize the result: {e}"))
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Checks, at the handler's return type, that it can be returned.
    pub fn assert_handler_output<R: HandlerOutput>() {}

    /// Called by the code `#[handler]` generates.
    pub fn run_handler<R, E>(
        event: wit::clawcage::agent::types::Event,
        handler: fn(Event) -> std::result::Result<R, E>,
    ) -> std::result::Result<String, String>
    where
        R: HandlerOutput,
        E: std::fmt::Display,
    {
        match handler(Event::from(event)) {
            Ok(output) => output.into_output(),
            Err(error) => Err(error.to_string()),
        }
    }
}
