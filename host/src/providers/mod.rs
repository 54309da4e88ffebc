//! Model providers: the wire formats of Anthropic's Messages API and
//! OpenAI's Chat Completions (and compatible servers), an HTTP client built
//! on rustls with ring, and the bound-model backend that ties a binding to
//! a provider, a vault key, the usage ledger and the leak guard.

pub mod anthropic;
pub mod assemble;
pub mod binding;
mod call;
mod exchange;
pub mod http;
pub mod model;
pub mod openai;
pub mod replay;
pub mod rules;
pub mod sse;
mod stream;
pub mod target;

use crate::bindings::inference::{ContentPart, StopReason};

/// A non-streamed answer, decoded from either wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The model id the provider reports (empty when it reports none).
    pub model: String,
    /// The generated content.
    pub content: Vec<ContentPart>,
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// The token counts, when the provider reported input and output.
    pub usage: Option<assemble::UsageUpdate>,
}

/// The `error.message` of a provider's error body (Anthropic and OpenAI
/// both put it there), if it has one.
pub(crate) fn error_message(body: &serde_json::Value) -> Option<String> {
    body.pointer("/error/message")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// A string field of a provider's JSON object, or empty when absent.
fn str_field(value: &serde_json::Value, field: &str) -> String {
    value
        .get(field)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string()
}
