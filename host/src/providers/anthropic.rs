//! The Anthropic Messages API wire format.

use serde_json::{Value, json};

use super::assemble::{Increment, UsageUpdate};
use super::{Parsed, str_field};
use crate::bindings::inference::{
    CacheTtl, CompletionRequest, ContentPart, Role, StopReason, ToolChoice, ToolUse,
};

/// The API version header this adapter speaks.
pub(crate) const API_VERSION: &str = "2023-06-01";

/// Anthropic's `cache_control` for a breakpoint.
fn cache_control(ttl: CacheTtl) -> Value {
    match ttl {
        CacheTtl::FiveMinutes => json!({"type": "ephemeral"}),
        CacheTtl::OneHour => json!({"type": "ephemeral", "ttl": "1h"}),
    }
}

/// The request body for `POST {base}/messages`.
pub fn request_body(model: &str, request: &CompletionRequest, stream: bool) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|message| {
            let mut content: Vec<Value> = message
                .content
                .iter()
                .map(|part| match part {
                    ContentPart::Text(text) => json!({"type": "text", "text": text}),
                    ContentPart::ToolUse(tool_use) => json!({
                        "type": "tool_use",
                        "id": tool_use.id,
                        "name": tool_use.name,
                        "input": serde_json::from_str::<Value>(&tool_use.input).unwrap_or_else(|_| json!({})),
                    }),
                    ContentPart::ToolResult(result) => json!({
                        "type": "tool_result",
                        "tool_use_id": result.tool_use_id,
                        "content": result.content,
                        "is_error": result.is_error,
                    }),
                })
                .collect();
            // A breakpoint on a message caches up to its last block.
            if let (Some(ttl), Some(last)) = (message.cache, content.last_mut()) {
                last["cache_control"] = cache_control(ttl);
            }
            let role = match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": content})
        })
        .collect();
    let mut body = json!({"model": model, "max_tokens": request.max_tokens, "messages": messages});
    if let Some(system) = &request.system {
        body["system"] = match request.system_cache {
            Some(ttl) => {
                json!([{"type": "text", "text": system, "cache_control": cache_control(ttl)}])
            }
            None => json!(system),
        };
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if !request.stop_sequences.is_empty() {
        body["stop_sequences"] = json!(request.stop_sequences);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                let mut spec = json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": serde_json::from_str::<Value>(&tool.input_schema).unwrap_or_else(|_| json!({"type": "object"})),
                });
                if let Some(ttl) = tool.cache {
                    spec["cache_control"] = cache_control(ttl);
                }
                spec
            })
            .collect();
    }
    if let Some(choice) = &request.tool_choice {
        body["tool_choice"] = match choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Any => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
    }
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// Maps Anthropic's `stop_reason`.
pub fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" | "pause_turn" => StopReason::EndTurn,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        _ => StopReason::Other,
    }
}

fn tokens(usage: &Value, field: &str) -> Option<u64> {
    usage.get(field).and_then(Value::as_u64)
}

/// Token counts of a `usage` object. Anthropic reports cache reads and
/// writes apart from `input_tokens`; they are added in, so `input` counts
/// every token read, as OpenAI's `prompt_tokens` does. Without
/// `input_tokens` (a `message_delta` that only carries output), the input
/// counts are left as they were.
fn usage(usage: &Value) -> UsageUpdate {
    let read = tokens(usage, "cache_read_input_tokens");
    let write = tokens(usage, "cache_creation_input_tokens");
    let input = tokens(usage, "input_tokens").map(|base| {
        base.saturating_add(read.unwrap_or(0))
            .saturating_add(write.unwrap_or(0))
    });
    UsageUpdate {
        input,
        output: tokens(usage, "output_tokens"),
        cache_read: input.and(Some(read.unwrap_or(0))),
        cache_write: input.and(Some(write.unwrap_or(0))),
        cache_write_1h: input.and(Some(
            usage
                .pointer("/cache_creation/ephemeral_1h_input_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        )),
    }
}

/// Parses a non-streamed response body.
pub fn parse_response(body: &Value) -> Result<Parsed, String> {
    let content = body
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the response has no content array")?
        .iter()
        .filter_map(|block| match block.get("type").and_then(Value::as_str) {
            Some("text") => Some(ContentPart::Text(str_field(block, "text"))),
            Some("tool_use") => Some(ContentPart::ToolUse(ToolUse {
                id: str_field(block, "id"),
                name: str_field(block, "name"),
                input: block
                    .get("input")
                    .map_or_else(|| "{}".to_string(), Value::to_string),
            })),
            _ => None,
        })
        .collect();
    let reported = body
        .get("usage")
        .filter(|u| u.is_object())
        .map(usage)
        .filter(|u| u.input.is_some() && u.output.is_some());
    Ok(Parsed {
        model: str_field(body, "model"),
        content,
        stop_reason: stop_reason(
            body.get("stop_reason")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        usage: reported,
    })
}

/// Decodes one streamed event's data into increments. An `error` event is
/// returned as `Err((error type, message))`.
pub(crate) fn parse_event(data: &str) -> Result<Vec<Increment>, (String, String)> {
    let value: Value = serde_json::from_str(data).map_err(|e| {
        (
            "invalid_event".to_string(),
            format!("unreadable event: {e}"),
        )
    })?;
    let index = value.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
    Ok(
        match value.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let message = value.get("message").cloned().unwrap_or(Value::Null);
                let mut out = Vec::new();
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    out.push(Increment::Model(model.to_string()));
                }
                if let Some(u) = message.get("usage").filter(|u| u.is_object()) {
                    out.push(Increment::Usage(usage(u)));
                }
                out
            }
            "content_block_start" => {
                let block = value.get("content_block").cloned().unwrap_or(Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => vec![Increment::ToolStart {
                        index,
                        id: str_field(&block, "id"),
                        name: str_field(&block, "name"),
                    }],
                    Some("text") => vec![Increment::Text {
                        index,
                        text: str_field(&block, "text"),
                    }],
                    _ => Vec::new(),
                }
            }
            "content_block_delta" => {
                let delta = value.get("delta").cloned().unwrap_or(Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => vec![Increment::Text {
                        index,
                        text: str_field(&delta, "text"),
                    }],
                    Some("input_json_delta") => vec![Increment::ToolInput {
                        index,
                        json: str_field(&delta, "partial_json"),
                    }],
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                let mut out = Vec::new();
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(Increment::Stop(stop_reason(reason)));
                }
                if let Some(u) = value.get("usage").filter(|u| u.is_object()) {
                    out.push(Increment::Usage(usage(u)));
                }
                out
            }
            "message_stop" => vec![Increment::Done],
            "error" => {
                let kind = value
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error")
                    .to_string();
                let message = value
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                return Err((kind, message));
            }
            _ => Vec::new(), // ping, content_block_stop, and future event types
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bindings::inference::{Message, ToolResult, ToolSpec};

    fn message(role: Role, content: Vec<ContentPart>) -> Message {
        Message {
            role,
            content,
            cache: None,
        }
    }

    fn request() -> CompletionRequest {
        CompletionRequest {
            system: Some("sys".into()),
            system_cache: None,
            messages: vec![
                message(Role::User, vec![ContentPart::Text("hi".into())]),
                message(
                    Role::Assistant,
                    vec![ContentPart::ToolUse(ToolUse {
                        id: "t1".into(),
                        name: "lookup".into(),
                        input: r#"{"q":"x"}"#.into(),
                    })],
                ),
                message(
                    Role::User,
                    vec![ContentPart::ToolResult(ToolResult {
                        tool_use_id: "t1".into(),
                        content: "42".into(),
                        is_error: false,
                    })],
                ),
            ],
            max_tokens: 50,
            temperature: Some(0.5),
            stop_sequences: vec!["END".into()],
            tools: vec![ToolSpec {
                name: "lookup".into(),
                description: "d".into(),
                input_schema: r#"{"type":"object"}"#.into(),
                cache: None,
            }],
            tool_choice: Some(ToolChoice::Tool("lookup".into())),
        }
    }

    #[test]
    fn request_carries_every_field_in_anthropic_shape() {
        let body = request_body("claude-x", &request(), true);
        assert_eq!(
            body,
            json!({
                "model": "claude-x", "max_tokens": 50, "system": "sys", "temperature": 0.5,
                "stop_sequences": ["END"], "stream": true,
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42", "is_error": false}]},
                ],
                "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "tool", "name": "lookup"},
            })
        );
    }

    #[test]
    fn cache_breakpoints_become_cache_control_on_the_right_blocks() {
        let mut request = request();
        request.system_cache = Some(CacheTtl::OneHour);
        request.tools[0].cache = Some(CacheTtl::OneHour);
        request.messages[2].cache = Some(CacheTtl::FiveMinutes);
        let body = request_body("claude-x", &request, false);
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
        );
        assert_eq!(
            body["tools"][0]["cache_control"],
            json!({"type": "ephemeral", "ttl": "1h"})
        );
        assert_eq!(
            body["messages"][2]["content"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert!(
            body["messages"][0]["content"][0]
                .get("cache_control")
                .is_none()
        );
    }

    #[test]
    fn response_and_stream_events_decode_with_cache_usage() {
        let parsed = parse_response(&json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x-1",
            "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "t", "name": "n", "input": {"a": 1}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 7,
                      "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4},
                      "output_tokens": 3}
        }))
        .unwrap();
        assert_eq!(parsed.model, "claude-x-1");
        assert_eq!(parsed.stop_reason, StopReason::ToolUse);
        assert_eq!(
            parsed.usage,
            Some(UsageUpdate {
                input: Some(22),
                output: Some(3),
                cache_read: Some(5),
                cache_write: Some(7),
                cache_write_1h: Some(4),
            })
        );
        assert!(matches!(&parsed.content[1], ContentPart::ToolUse(t) if t.input == r#"{"a":1}"#));

        let delta = parse_event(r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#).unwrap();
        assert_eq!(
            delta,
            vec![Increment::ToolInput {
                index: 1,
                json: "{\"a\":".into()
            }]
        );
        // The closing usage carries only output: input counts stay.
        let closing = parse_event(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#).unwrap();
        assert_eq!(
            closing[1],
            Increment::Usage(UsageUpdate {
                output: Some(9),
                ..UsageUpdate::default()
            })
        );
        let err = parse_event(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ("overloaded_error".to_string(), "Overloaded".to_string())
        );
    }
}
