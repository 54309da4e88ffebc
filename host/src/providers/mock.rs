//! The `mock` provider: scripted answers written in the manifest, tool
//! calls included, so an agent runs at once with no key and no network
//! (`clawcage run`, a new project's tests), and its author can test how it
//! handles each answer.
//!
//! ```toml
//! [models.default]
//! provider = "mock"
//! model = "mock"
//!
//! [[models.default.replies]]
//! when = "weather"                   # the last user message contains it
//! text = "Sunny, 21 °C."
//!
//! [[models.default.replies]]         # the first turn of a conversation
//! tool_calls = [{ name = "github", input = { action = "issues.list" } }]
//!
//! [[models.default.replies]]         # the second turn, and any after
//! text = "Done."
//! ```
//!
//! Which reply answers a request is decided by the request alone, never by
//! what other events asked: a reply whose `when` the last user message
//! contains, else the reply of the conversation's turn (the number of
//! assistant messages so far) among those without `when`, the last one
//! once the script runs out. With no reply at all, the mock echoes the last
//! user message. Token counts are a quarter of the bytes read and written;
//! the mock costs nothing and records no usage.

use serde::{Deserialize, Serialize};

use crate::bindings::inference::{
    Completion, CompletionRequest, ContentPart, Error as InferenceError, Role, StopReason, ToolUse,
    Usage,
};
use crate::inference::{CallContext, CompletionEvents, ModelBackend};

/// Most replies one binding's script holds.
pub const MAX_REPLIES: usize = 256;
/// Longest echo of the last user message, in bytes.
const MAX_ECHO_BYTES: usize = 2_000;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockReply {
    /// Answer only when the last user message contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The answer's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Tools the model asks the agent to run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<MockToolCall>,
}

/// A tool call in a scripted answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockToolCall {
    /// The tool's name, as the agent offered it in the request.
    pub name: String,
    /// Its input, a JSON object (a TOML table in the manifest).
    #[serde(default = "empty_object")]
    pub input: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Checks a binding's script: at most [`MAX_REPLIES`], each with text or a
/// tool call, each tool input an object.
pub(crate) fn validate(binding: &str, replies: &[MockReply]) -> Result<(), String> {
    if replies.len() > MAX_REPLIES {
        return Err(format!(
            "models.{binding}.replies: at most {MAX_REPLIES} replies"
        ));
    }
    for (i, reply) in replies.iter().enumerate() {
        if reply.text.is_none() && reply.tool_calls.is_empty() {
            return Err(format!(
                "models.{binding}.replies[{i}]: give `text`, `tool_calls`, or both"
            ));
        }
        for call in &reply.tool_calls {
            if !call.input.is_object() || call.name.is_empty() {
                return Err(format!(
                    "models.{binding}.replies[{i}].tool_calls: each needs a `name` and an `input` table"
                ));
            }
        }
    }
    Ok(())
}

/// The `mock` provider of one binding.
pub(crate) struct MockModel {
    /// The model id the manifest names.
    pub model: String,
    /// The script.
    pub replies: Vec<MockReply>,
}

/// The text of the last user message.
fn last_user_text(request: &CompletionRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| {
            m.content
                .iter()
                .map(|part| match part {
                    ContentPart::Text(text) => text.as_str(),
                    ContentPart::ToolResult(result) => result.content.as_str(),
                    ContentPart::ToolUse(_) => "",
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

impl MockModel {
    /// The reply to `request`, or `None` for the echo.
    fn pick(&self, request: &CompletionRequest, last_user: &str) -> Option<&MockReply> {
        if let Some(reply) = self
            .replies
            .iter()
            .find(|r| r.when.as_deref().is_some_and(|w| last_user.contains(w)))
        {
            return Some(reply);
        }
        let turn = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        let sequence: Vec<&MockReply> = self.replies.iter().filter(|r| r.when.is_none()).collect();
        sequence.get(turn).or(sequence.last()).copied()
    }

    fn answer(&self, request: &CompletionRequest) -> Result<Completion, InferenceError> {
        let last_user = last_user_text(request);
        let turn = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        let mut content = Vec::new();
        match self.pick(request, &last_user) {
            Some(reply) => {
                if let Some(text) = &reply.text {
                    content.push(ContentPart::Text(text.clone()));
                }
                for (i, call) in reply.tool_calls.iter().enumerate() {
                    if !request.tools.iter().any(|t| t.name == call.name) {
                        return Err(InferenceError::InvalidRequest(format!(
                            "the mock's reply calls tool {:?}, which this request does not offer (offered: {})",
                            call.name,
                            request
                                .tools
                                .iter()
                                .map(|t| t.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    content.push(ContentPart::ToolUse(ToolUse {
                        id: format!("toolu_mock_{turn}_{i}"),
                        name: call.name.clone(),
                        input: call.input.to_string(),
                    }));
                }
            }
            None => {
                let echo = crate::text::truncate_at_char_boundary(&last_user, MAX_ECHO_BYTES);
                content.push(ContentPart::Text(format!("(mock) {echo}")));
            }
        }
        let stop_reason = if content.iter().any(|p| matches!(p, ContentPart::ToolUse(_))) {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        };
        let read: usize = request
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .map(|part| match part {
                ContentPart::Text(text) => text.len(),
                ContentPart::ToolUse(tool_use) => tool_use.input.len() + tool_use.name.len(),
                ContentPart::ToolResult(result) => result.content.len(),
            })
            .sum::<usize>()
            + request.system.as_ref().map_or(0, String::len);
        let written: usize = content
            .iter()
            .map(|part| match part {
                ContentPart::Text(text) => text.len(),
                ContentPart::ToolUse(tool_use) => tool_use.input.len() + tool_use.name.len(),
                ContentPart::ToolResult(_) => 0,
            })
            .sum();
        Ok(Completion {
            model: self.model.clone(),
            provider: "mock".into(),
            fallback: 0,
            content,
            stop_reason,
            usage: Usage {
                input_tokens: read.div_ceil(4) as u64,
                output_tokens: written.div_ceil(4) as u64,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                estimated: false,
            },
        })
    }
}

#[async_trait::async_trait]
impl ModelBackend for MockModel {
    fn provider(&self) -> &str {
        "mock"
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        _call: &CallContext,
    ) -> Result<Completion, InferenceError> {
        self.answer(&request)
    }

    async fn stream(
        &self,
        request: CompletionRequest,
        _call: &CallContext,
    ) -> Result<CompletionEvents, InferenceError> {
        Ok(super::replay::stream_of(&self.answer(&request)?))
    }
}
