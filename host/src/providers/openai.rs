//! The OpenAI Chat Completions wire format, also spoken by OpenAI-compatible
//! servers (Ollama, vLLM, LM Studio, Groq, …).

use serde_json::{Value, json};

use super::assemble::Increment;
use super::str_field;
use crate::bindings::inference::{
    Completion, CompletionRequest, ContentPart, Role, StopReason, ToolChoice, ToolUse, Usage,
};

/// Which dialect: OpenAI itself takes `max_completion_tokens`; compatible
/// servers mostly still only know `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// api.openai.com.
    OpenAi,
    /// Any other server.
    Compatible,
}

/// The request body for `POST {base}/chat/completions`.
pub fn request_body(
    model: &str,
    request: &CompletionRequest,
    stream: bool,
    dialect: Dialect,
) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        match message.role {
            Role::User => {
                // Tool results become `tool` messages; text, one user message.
                let mut text = String::new();
                for part in &message.content {
                    match part {
                        ContentPart::Text(t) => text.push_str(t),
                        ContentPart::ToolResult(result) => messages.push(json!({
                            "role": "tool",
                            "tool_call_id": result.tool_use_id,
                            "content": if result.is_error { format!("error: {}", result.content) } else { result.content.clone() },
                        })),
                        ContentPart::ToolUse(_) => {}
                    }
                }
                if !text.is_empty() {
                    messages.push(json!({"role": "user", "content": text}));
                }
            }
            Role::Assistant => {
                let text: String = message
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Text(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<Value> = message
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::ToolUse(t) => Some(json!({
                            "id": t.id, "type": "function",
                            "function": {"name": t.name, "arguments": t.input},
                        })),
                        _ => None,
                    })
                    .collect();
                let mut out = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    out["tool_calls"] = json!(calls);
                }
                messages.push(out);
            }
        }
    }
    let mut body = json!({"model": model, "messages": messages});
    let max_field = match dialect {
        Dialect::OpenAi => "max_completion_tokens",
        Dialect::Compatible => "max_tokens",
    };
    body[max_field] = json!(request.max_tokens);
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if !request.stop_sequences.is_empty() {
        body["stop"] = json!(request.stop_sequences);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": serde_json::from_str::<Value>(&tool.input_schema).unwrap_or_else(|_| json!({"type": "object"})),
                }})
            })
            .collect();
    }
    if let Some(choice) = &request.tool_choice {
        body["tool_choice"] = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Any => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Maps OpenAI's `finish_reason`.
pub fn stop_reason(reason: &str) -> StopReason {
    match reason {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::Other,
    }
}

fn usage(value: &Value) -> Usage {
    Usage {
        input_tokens: value
            .get("prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        output_tokens: value
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    }
}

/// Parses a non-streamed response body.
pub fn parse_response(body: &Value) -> Result<Completion, String> {
    let choice = body
        .pointer("/choices/0")
        .ok_or("the response has no choices")?;
    let message = choice.get("message").ok_or("the response has no message")?;
    let mut content = Vec::new();
    if let Some(text) = message.get("content").and_then(Value::as_str)
        && !text.is_empty()
    {
        content.push(ContentPart::Text(text.to_string()));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        content.push(ContentPart::ToolUse(ToolUse {
            id: str_field(call, "id"),
            name: call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            input: call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}")
                .to_string(),
        }));
    }
    Ok(Completion {
        model: str_field(body, "model"),
        content,
        stop_reason: stop_reason(
            choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        usage: usage(body.get("usage").unwrap_or(&Value::Null)),
    })
}

/// Decodes one streamed chunk (`data:` payload) into increments. Tool call
/// `i` becomes content part `i + 1`; part 0 is the text.
pub fn parse_chunk(data: &str) -> Result<Vec<Increment>, String> {
    if data.trim() == "[DONE]" {
        return Ok(vec![Increment::Done]);
    }
    let value: Value = serde_json::from_str(data).map_err(|e| format!("unreadable chunk: {e}"))?;
    if let Some(message) = value.pointer("/error/message").and_then(Value::as_str) {
        return Err(message.to_string());
    }
    let mut out = Vec::new();
    if let Some(model) = value.get("model").and_then(Value::as_str) {
        out.push(Increment::Model(model.to_string()));
    }
    if let Some(choice) = value.pointer("/choices/0") {
        if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
            out.push(Increment::Text {
                index: 0,
                text: text.to_string(),
            });
        }
        for call in choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize + 1;
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                out.push(Increment::ToolStart {
                    index,
                    id: id.to_string(),
                    name: call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                });
            }
            if let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str)
                && !arguments.is_empty()
            {
                out.push(Increment::ToolInput {
                    index,
                    json: arguments.to_string(),
                });
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(Increment::Stop(stop_reason(reason)));
        }
    }
    if let Some(u) = value.get("usage").filter(|u| !u.is_null()) {
        let u = usage(u);
        out.push(Increment::Usage {
            input: Some(u.input_tokens),
            output: Some(u.output_tokens),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bindings::inference::{Message, ToolResult, ToolSpec};

    #[test]
    fn request_maps_tool_round_trips_to_openai_messages() {
        let request = CompletionRequest {
            system: Some("sys".into()),
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![ContentPart::Text("hi".into())],
                },
                Message {
                    role: Role::Assistant,
                    content: vec![
                        ContentPart::Text("let me look".into()),
                        ContentPart::ToolUse(ToolUse {
                            id: "c1".into(),
                            name: "lookup".into(),
                            input: r#"{"q":"x"}"#.into(),
                        }),
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentPart::ToolResult(ToolResult {
                        tool_use_id: "c1".into(),
                        content: "42".into(),
                        is_error: false,
                    })],
                },
            ],
            max_tokens: 50,
            temperature: None,
            stop_sequences: vec![],
            tools: vec![ToolSpec {
                name: "lookup".into(),
                description: "d".into(),
                input_schema: r#"{"type":"object"}"#.into(),
            }],
            tool_choice: Some(ToolChoice::Any),
        };
        let body = request_body("gpt-x", &request, true, Dialect::OpenAi);
        assert_eq!(
            body,
            json!({
                "model": "gpt-x", "max_completion_tokens": 50, "stream": true, "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "let me look", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "42"},
                ],
                "tools": [{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}}}],
                "tool_choice": "required",
            })
        );
        assert_eq!(
            request_body("m", &request, false, Dialect::Compatible)["max_tokens"],
            50
        );
    }

    #[test]
    fn chunks_decode_including_split_tool_arguments_and_usage() {
        let start = parse_chunk(r#"{"model":"gpt-x-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"lookup","arguments":""}}]},"finish_reason":null}]}"#).unwrap();
        assert_eq!(
            start,
            vec![
                Increment::Model("gpt-x-1".into()),
                Increment::ToolStart {
                    index: 1,
                    id: "c1".into(),
                    name: "lookup".into()
                }
            ]
        );
        let args = parse_chunk(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\""}}]}}]}"#).unwrap();
        assert_eq!(
            args,
            vec![Increment::ToolInput {
                index: 1,
                json: "{\"q\"".into()
            }]
        );
        let usage = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#,
        )
        .unwrap();
        assert_eq!(
            usage,
            vec![Increment::Usage {
                input: Some(9),
                output: Some(4)
            }]
        );
        assert_eq!(parse_chunk("[DONE]").unwrap(), vec![Increment::Done]);
    }
}
