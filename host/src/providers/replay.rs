//! Recorded exchanges ("cassettes"): a `replay` provider that answers from a
//! file, for testing agents deterministically and offline, and a recorder
//! that captures real exchanges into one.
//!
//! A cassette holds provider-neutral requests and completions, the WIT
//! values the guest sent and received, never a header. Credentials cannot
//! end up in it: requests carry none, and completions are recorded only
//! after the leak guard passed them.
//!
//! ```json
//! {"version": 1, "exchanges": [
//!   {"binding": "default", "request": { … }, "completion": { … }}
//! ], "tool_calls": [
//!   {"tool": "github", "action": "issues.add_labels", "input": { … }, "result": {"Ok": "…"}}
//! ]}
//! ```
//!
//! Tool calls are recorded after the host's schema and scope checks and its
//! scrubbing, so a replayed tool is checked exactly like a live one and its
//! recorded answers hold no credential.
//!
//! Replay matches a request exactly; a request the cassette does not hold
//! is an `invalid-request` (or, for tools, `invalid-input`) naming the fix
//! (record again).

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::bindings::inference::{
    Completion, CompletionRequest, ContentPart, Error as InferenceError, StreamEvent, ToolUseStart,
};
use crate::bindings::tools::Error as ToolError;
use crate::inference::{CallContext, CompletionEvents, ModelBackend};

/// The cassette format's version: 2 since `clawcage:agent@0.2.0` (prompt
/// caching, cache token counts, the answering model's provider). Version 1
/// files are read and upgraded in memory.
pub(crate) const CASSETTE_VERSION: u32 = 2;
/// Largest cassette file read.
pub(crate) const MAX_CASSETTE_BYTES: u64 = 64 << 20;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    /// The binding the agent opened.
    pub binding: String,
    /// The request, as the guest sent it.
    pub request: CompletionRequest,
    /// The completion, as the guest received it.
    pub completion: Completion,
}

/// A file of recorded calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cassette {
    /// Format version.
    pub version: u32,
    /// The calls, in the order they were recorded.
    pub exchanges: Vec<Exchange>,
    /// Tool calls, in the order they were recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolExchange>,
}

/// One recorded tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolExchange {
    /// The tool, as granted.
    pub tool: String,
    /// The action.
    pub action: String,
    /// The input, as the guest sent it.
    pub input: serde_json::Value,
    /// What the guest received.
    pub result: Result<String, ToolError>,
}

impl Default for Cassette {
    fn default() -> Self {
        Self {
            version: CASSETTE_VERSION,
            exchanges: Vec::new(),
            tool_calls: Vec::new(),
        }
    }
}

/// Adds what version 2 has and version 1 lacked, with the values that mean
/// "as before": no cache breakpoints, no cached tokens, counts reported.
fn upgrade_from_v1(value: &mut serde_json::Value) {
    use serde_json::{Value, json};
    let set = |object: &mut Value, field: &str, default: Value| {
        if let Some(map) = object.as_object_mut() {
            map.entry(field).or_insert(default);
        }
    };
    for exchange in value["exchanges"].as_array_mut().into_iter().flatten() {
        let request = &mut exchange["request"];
        set(request, "system_cache", Value::Null);
        for message in request["messages"].as_array_mut().into_iter().flatten() {
            set(message, "cache", Value::Null);
        }
        for tool in request["tools"].as_array_mut().into_iter().flatten() {
            set(tool, "cache", Value::Null);
        }
        let completion = &mut exchange["completion"];
        set(completion, "provider", json!("replay"));
        set(completion, "fallback", json!(0));
        let usage = &mut completion["usage"];
        set(usage, "cache_read_tokens", json!(0));
        set(usage, "cache_write_tokens", json!(0));
        set(usage, "estimated", json!(false));
    }
    value["version"] = json!(CASSETTE_VERSION);
}

impl Cassette {
    /// Reads a cassette file (version 1 files are upgraded as they are
    /// read).
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes =
            crate::fsutil::read_bounded(path, MAX_CASSETTE_BYTES).map_err(|e| e.to_string())?;
        let mut value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("cassette {}: {e}", path.display()))?;
        if value.get("version") == Some(&serde_json::json!(1)) {
            upgrade_from_v1(&mut value);
        }
        let cassette: Cassette = serde_json::from_value(value)
            .map_err(|e| format!("cassette {}: {e}", path.display()))?;
        if cassette.version != CASSETTE_VERSION {
            return Err(format!(
                "cassette {}: version {} is not {CASSETTE_VERSION}",
                path.display(),
                cassette.version
            ));
        }
        Ok(cassette)
    }

    /// Writes the cassette, atomically.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        crate::fsutil::write_atomically(path, text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// The recorded answer to a tool call.
    pub(crate) fn find_tool(
        &self,
        tool: &str,
        action: &str,
        input: &serde_json::Value,
    ) -> Result<String, ToolError> {
        self.tool_calls
            .iter()
            .find(|c| c.tool == tool && c.action == action && c.input == *input)
            .map(|c| c.result.clone())
            .unwrap_or_else(|| {
                Err(ToolError::InvalidInput(format!(
                    "the cassette has no recorded answer for this {tool} {action} call; record it again with `clawcage run --record`"
                )))
            })
    }

    fn find(&self, binding: &str, request: &CompletionRequest) -> Option<&Completion> {
        self.exchanges
            .iter()
            .find(|e| e.binding == binding && e.request == *request)
            .map(|e| &e.completion)
    }
}

/// The `replay` provider: answers from a cassette.
pub(crate) struct ReplayModel {
    /// The binding name.
    pub binding: String,
    /// The model id the manifest names.
    pub model: String,
    /// The recordings.
    pub cassette: Arc<Cassette>,
}

impl ReplayModel {
    fn answer(&self, request: &CompletionRequest) -> Result<Completion, InferenceError> {
        self.cassette.find(&self.binding, request).cloned().ok_or_else(|| {
            InferenceError::InvalidRequest(format!(
                "the cassette has no recorded answer for this request to binding {:?}; record it again with `clawcage run --record`",
                self.binding
            ))
        })
    }
}

/// A stream that delivers `completion` at once (for answers known in
/// advance: a cassette's, a mock's).
pub(crate) fn stream_of(completion: &Completion) -> CompletionEvents {
    let events = events_for(completion);
    let (sender, receiver) = tokio::sync::mpsc::channel(events.len().max(1));
    for event in events {
        let _ = sender.try_send(Ok(event));
    }
    receiver
}

/// The stream events that deliver `completion`: text in word-sized deltas,
/// each tool use as a start and its input, then the whole.
pub(crate) fn events_for(completion: &Completion) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    for part in &completion.content {
        match part {
            ContentPart::Text(text) => {
                events.extend(
                    text.split_inclusive(' ')
                        .map(|word| StreamEvent::TextDelta(word.to_string())),
                );
            }
            ContentPart::ToolUse(tool_use) => {
                events.push(StreamEvent::ToolUseStart(ToolUseStart {
                    id: tool_use.id.clone(),
                    name: tool_use.name.clone(),
                }));
                events.push(StreamEvent::ToolUseInputDelta(tool_use.input.clone()));
            }
            ContentPart::ToolResult(_) => {}
        }
    }
    events.push(StreamEvent::Finished(completion.clone()));
    events
}

#[async_trait::async_trait]
impl ModelBackend for ReplayModel {
    fn provider(&self) -> &str {
        "replay"
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
        Ok(stream_of(&self.answer(&request)?))
    }
}

/// Wraps a real binding and records every successful exchange.
pub(crate) struct RecordingModel {
    /// The binding name.
    pub binding: String,
    /// The real backend.
    pub inner: Arc<dyn ModelBackend>,
    /// Where exchanges go.
    pub tape: Arc<Mutex<Cassette>>,
}

impl RecordingModel {
    fn keep(&self, request: CompletionRequest, completion: &Completion) {
        let mut tape = self.tape.lock().unwrap_or_else(|e| e.into_inner());
        tape.exchanges.push(Exchange {
            binding: self.binding.clone(),
            request,
            completion: completion.clone(),
        });
    }
}

#[async_trait::async_trait]
impl ModelBackend for RecordingModel {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn described_model(&self) -> String {
        self.inner.described_model()
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<Completion, InferenceError> {
        let completion = self.inner.complete(request.clone(), call).await?;
        self.keep(request, &completion);
        Ok(completion)
    }

    async fn stream(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<CompletionEvents, InferenceError> {
        let mut inner = self.inner.stream(request.clone(), call).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let tape = self.tape.clone();
        let binding = self.binding.clone();
        tokio::spawn(async move {
            while let Some(event) = inner.recv().await {
                if let Ok(StreamEvent::Finished(completion)) = &event {
                    let mut tape = tape.lock().unwrap_or_else(|e| e.into_inner());
                    tape.exchanges.push(Exchange {
                        binding: binding.clone(),
                        request: request.clone(),
                        completion: completion.clone(),
                    });
                }
                if sender.send(event).await.is_err() {
                    break;
                }
            }
        });
        Ok(receiver)
    }
}

/// Wraps a granted tool and records every call and its result.
pub(crate) struct RecordingTool {
    /// The tool's granted name.
    pub tool: String,
    /// The real tool.
    pub inner: Arc<dyn crate::tools::ToolBackend>,
    /// Where calls go.
    pub tape: Arc<Mutex<Cassette>>,
}

#[async_trait::async_trait]
impl crate::tools::ToolBackend for RecordingTool {
    fn actions(&self) -> Vec<crate::tools::ActionInfo> {
        self.inner.actions()
    }

    async fn call(&self, action: &str, input: serde_json::Value) -> Result<String, ToolError> {
        let result = self.inner.call(action, input.clone()).await;
        // Refusals are the host's own answers, not the service's: a replay
        // produces them again without a recording.
        if !matches!(
            result,
            Err(ToolError::NotGranted(_) | ToolError::Denied(_) | ToolError::InvalidInput(_))
        ) {
            let mut tape = self.tape.lock().unwrap_or_else(|e| e.into_inner());
            tape.tool_calls.push(ToolExchange {
                tool: self.tool.clone(),
                action: action.to_string(),
                input,
                result: result.clone(),
            });
        }
        result
    }
}

/// Makes `agent` record every model exchange and tool call into `tape`
/// (`clawcage run --record`, and the tests that keep sample cassettes
/// current).
pub fn record_into(agent: &mut crate::Agent, tape: &Arc<Mutex<Cassette>>) {
    let models = agent
        .models()
        .iter()
        .map(|(name, inner)| {
            let model: Arc<dyn ModelBackend> = Arc::new(RecordingModel {
                binding: name.clone(),
                inner: inner.clone(),
                tape: tape.clone(),
            });
            (name.clone(), model)
        })
        .collect();
    agent.set_models(Arc::new(models));
    let tools = agent
        .tools()
        .iter()
        .map(|(name, inner)| {
            let tool: Arc<dyn crate::tools::ToolBackend> = Arc::new(RecordingTool {
                tool: name.clone(),
                inner: inner.clone(),
                tape: tape.clone(),
            });
            (name.clone(), tool)
        })
        .collect();
    agent.set_tools(Arc::new(tools));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn version_1_cassettes_are_upgraded_as_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.json");
        std::fs::write(
            &path,
            r#"{"version": 1, "exchanges": [{"binding": "default",
              "request": {"system": null, "messages": [{"role": "User", "content": [{"Text": "hi"}]}],
                          "max_tokens": 10, "temperature": null, "stop_sequences": [],
                          "tools": [{"name": "t", "description": "d", "input_schema": "{}"}], "tool_choice": null},
              "completion": {"model": "m", "content": [{"Text": "hello"}], "stop_reason": "EndTurn",
                             "usage": {"input_tokens": 3, "output_tokens": 1}}}]}"#,
        )
        .unwrap();
        let cassette = Cassette::load(&path).unwrap();
        assert_eq!(cassette.version, CASSETTE_VERSION);
        let exchange = &cassette.exchanges[0];
        assert_eq!(exchange.request.messages[0].cache, None);
        assert_eq!(exchange.request.tools[0].cache, None);
        assert_eq!(exchange.completion.usage.input_tokens, 3);
        assert!(!exchange.completion.usage.estimated);
        std::fs::write(&path, r#"{"version": 9, "exchanges": []}"#).unwrap();
        assert!(
            Cassette::load(&path)
                .unwrap_err()
                .contains("version 9 is not 2")
        );
    }
}
