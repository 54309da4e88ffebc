//! Model providers: the wire formats of Anthropic's Messages API and
//! OpenAI's Chat Completions (and compatible servers), an HTTP client built
//! on rustls with ring, and the bound-model backend that ties a binding to
//! a provider, a vault key, the usage ledger and the leak guard.

pub mod anthropic;
pub mod assemble;
pub mod binding;
pub mod http;
pub mod openai;
pub mod replay;
pub mod sse;

/// The `error.message` of a provider's error body (Anthropic and OpenAI
/// both put it there), if it has one.
pub fn error_message(body: &serde_json::Value) -> Option<String> {
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
