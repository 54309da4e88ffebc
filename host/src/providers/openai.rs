//! The OpenAI Chat Completions wire format, also spoken by OpenAI-compatible
//! servers (Ollama, vLLM, LM Studio, Groq, …).

use serde_json::{Value, json};

use super::assemble::{Increment, UsageUpdate};
use super::{Parsed, str_field};
use crate::bindings::inference::{
    CompletionRequest, ContentPart, Role, StopReason, ToolChoice, ToolUse,
};

/// How a Chat Completions request is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// As OpenAI documents it: `max_completion_tokens`, and a message with
    /// several text parts as an array of parts.
    OpenAi,
    /// What every compatible server understands (`classic`, the default
    /// for `openai-compatible`): `max_tokens`, and message content always
    /// a string, several text parts joined with a blank line. Servers whose
    /// chat templates only take strings (llama-cpp-python's built-in
    /// formats) silently drop array content, and some ignore
    /// `max_completion_tokens` (so the output would be unbounded).
    Compatible,
}

/// A message's text parts as Chat Completions content: one part as a plain
/// string, several as an array of text parts (OpenAI) or joined with a
/// blank line (classic servers), so that nothing is dropped or run
/// together.
fn text_content(parts: &[&str], dialect: Dialect) -> Value {
    match (parts, dialect) {
        ([], _) => json!(""),
        ([one], _) => json!(one),
        (many, Dialect::OpenAi) => many
            .iter()
            .map(|text| json!({"type": "text", "text": text}))
            .collect(),
        (many, Dialect::Compatible) => json!(many.join("\n\n")),
    }
}

/// The request body for `POST {base}/chat/completions`. The request was
/// validated (no empty text part, tool results before text), so every part
/// is carried over, in order.
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
        let texts: Vec<&str> = message
            .content
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        match message.role {
            Role::User => {
                // Tool results become `tool` messages (they come first in
                // a validated message); the text, one user message after.
                for part in &message.content {
                    if let ContentPart::ToolResult(result) = part {
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": result.tool_use_id,
                            // Chat Completions has no error flag: say it in
                            // the content, where the model reads it.
                            "content": if result.is_error { format!("error: {}", result.content) } else { result.content.clone() },
                        }));
                    }
                }
                if !texts.is_empty() {
                    messages
                        .push(json!({"role": "user", "content": text_content(&texts, dialect)}));
                }
            }
            Role::Assistant => {
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
                // A tool-call turn without text carries `""`, never `null`:
                // OpenAI takes both, but llama.cpp-based servers answer 500
                // to `null` (and to a missing field).
                let mut out =
                    json!({"role": "assistant", "content": text_content(&texts, dialect)});
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
        // Without this OpenAI (and vLLM, llama.cpp) send no usage in
        // streams; servers that do not know it ignore it.
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

/// Token counts of a `usage` object. `prompt_tokens` includes the cached
/// ones, which `prompt_tokens_details.cached_tokens` reports.
fn usage(value: &Value) -> UsageUpdate {
    let count = |pointer: &str| value.pointer(pointer).and_then(Value::as_u64);
    UsageUpdate {
        input: count("/prompt_tokens"),
        output: count("/completion_tokens"),
        cache_read: count("/prompt_tokens_details/cached_tokens"),
        cache_write: None,
        cache_write_1h: None,
    }
}

/// Longest tool-call id passed on as the server sent it.
const MAX_CALL_ID_BYTES: usize = 64;

/// A tool call's id as the guest gets it: the server's, when it is 1 to 64
/// of `[A-Za-z0-9_-]` (what every provider accepts back in the next turn,
/// Anthropic's rule included), else one made from its position. Servers
/// send none, empty ones, or ones like `functions.get:0`; the guest quotes
/// the id back, and the server does not check it against its own.
fn call_id(id: Option<&str>, position: usize) -> String {
    match id {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_CALL_ID_BYTES
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            id.to_string()
        }
        _ => format!("call_{position}"),
    }
}

/// Parses a non-streamed response body.
pub fn parse_response(body: &Value) -> Result<Parsed, String> {
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
    let mut ids = std::collections::BTreeSet::new();
    for (position, call) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut id = call_id(call.get("id").and_then(Value::as_str), position);
        if !ids.insert(id.clone()) {
            // A repeated id: each call needs its own, for its result.
            id = format!("call_{position}");
            ids.insert(id.clone());
        }
        content.push(ContentPart::ToolUse(ToolUse {
            id,
            name: call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            input: match call.pointer("/function/arguments") {
                Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
                // Some servers send the arguments as an object.
                Some(object @ Value::Object(_)) => object.to_string(),
                _ => "{}".to_string(),
            },
        }));
    }
    let reported = body.get("usage").filter(|u| u.is_object()).map(usage);
    Ok(Parsed {
        model: str_field(body, "model"),
        content,
        stop_reason: stop_reason(
            choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        usage: reported.filter(|u| u.input.is_some() && u.output.is_some()),
    })
}

/// Decodes a stream's chunks (`data:` payloads) into increments, keeping
/// track of the tool calls it has seen. Part 0 is the text; each tool call
/// gets the next part.
///
/// Servers differ in how they stream a tool call: OpenAI sends its `id` and
/// name in the call's first delta and only `index` after; llama.cpp-based
/// servers and LiteLLM repeat the `id` (and name) in every delta; Ollama
/// sends each call whole; some leave out `index`. A delta therefore
/// continues the call it names (by `index`, or by `id` when there is no
/// index, or the last one) unless it carries both another id and a name,
/// which starts a new call. Ids the guest could not quote back are
/// replaced (see `call_id`).
#[derive(Debug, Default)]
pub(crate) struct ChunkDecoder {
    /// Open tool calls: (wire index, the server's id (at most 256 bytes
    /// kept), part index).
    calls: Vec<(Option<u64>, String, usize)>,
    /// The id each call was shown to the guest under, by part index - 1.
    shown: Vec<String>,
}

/// Most tool calls one stream may open.
const MAX_STREAMED_CALLS: usize = 128;

impl ChunkDecoder {
    /// A decoder for one stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one chunk.
    pub fn decode(&mut self, data: &str) -> Result<Vec<Increment>, String> {
        if data.trim() == "[DONE]" {
            return Ok(vec![Increment::Done]);
        }
        let value: Value =
            serde_json::from_str(data).map_err(|e| format!("unreadable chunk: {e}"))?;
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            return Err(error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_string));
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
                self.tool_call(call, &mut out)?;
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                out.push(Increment::Stop(stop_reason(reason)));
            }
        }
        if let Some(u) = value.get("usage").filter(|u| u.is_object()) {
            out.push(Increment::Usage(usage(u)));
        }
        Ok(out)
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<Increment>) -> Result<(), String> {
        let wire = call.get("index").and_then(Value::as_u64);
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        let name = call.pointer("/function/name").and_then(Value::as_str);
        let open = match wire {
            Some(_) => self.calls.iter().rposition(|(w, _, _)| *w == wire),
            None => match id {
                Some(id) => self
                    .calls
                    .iter()
                    .rposition(|(_, known, _)| known == id)
                    .or(self.calls.len().checked_sub(1)),
                None => self.calls.len().checked_sub(1),
            },
        };
        // A delta continues the open call unless it names a call of its
        // own: another id *and* a name (an id alone may be a server's
        // per-fragment id; a name alone, a repeated one).
        let starts_another = |open: usize| {
            id.is_some_and(|id| self.calls[open].1 != id) && name.is_some_and(|n| !n.is_empty())
        };
        let part = match open {
            Some(open) if !starts_another(open) => self.calls[open].2,
            _ => {
                if self.calls.len() >= MAX_STREAMED_CALLS {
                    return Err(format!(
                        "the stream opened more than {MAX_STREAMED_CALLS} tool calls"
                    ));
                }
                let part = self.calls.len() + 1;
                let position = self.calls.len();
                let mut shown = call_id(id, position);
                if self
                    .calls
                    .iter()
                    .any(|(_, _, p)| self.shown[p - 1] == shown)
                {
                    shown = format!("call_{position}");
                }
                self.calls.push((
                    wire,
                    id.unwrap_or_default().chars().take(256).collect(),
                    part,
                ));
                self.shown.push(shown.clone());
                out.push(Increment::ToolStart {
                    index: part,
                    id: shown,
                    name: name.unwrap_or("").to_string(),
                });
                part
            }
        };
        match call.pointer("/function/arguments") {
            Some(Value::String(arguments)) if !arguments.is_empty() => {
                out.push(Increment::ToolInput {
                    index: part,
                    json: arguments.clone(),
                });
            }
            Some(object @ Value::Object(_)) => out.push(Increment::ToolInput {
                index: part,
                json: object.to_string(),
            }),
            _ => {}
        }
        Ok(())
    }
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

    fn tool_round_trip() -> CompletionRequest {
        CompletionRequest {
            system: Some("sys".into()),
            system_cache: None,
            messages: vec![
                message(Role::User, vec![ContentPart::Text("hi".into())]),
                message(
                    Role::Assistant,
                    vec![
                        ContentPart::Text("let me look".into()),
                        ContentPart::ToolUse(ToolUse {
                            id: "c1".into(),
                            name: "lookup".into(),
                            input: r#"{"q":"x"}"#.into(),
                        }),
                    ],
                ),
                message(
                    Role::User,
                    vec![ContentPart::ToolResult(ToolResult {
                        tool_use_id: "c1".into(),
                        content: "42".into(),
                        is_error: false,
                    })],
                ),
            ],
            max_tokens: 50,
            temperature: None,
            stop_sequences: vec![],
            tools: vec![ToolSpec {
                name: "lookup".into(),
                description: "d".into(),
                input_schema: r#"{"type":"object"}"#.into(),
                cache: None,
            }],
            tool_choice: Some(ToolChoice::Any),
        }
    }

    #[test]
    fn request_maps_tool_round_trips_to_openai_messages() {
        let request = tool_round_trip();
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
    fn a_tool_call_turn_without_text_carries_an_empty_string_never_null() {
        let mut request = tool_round_trip();
        request.messages[1].content.remove(0);
        let body = request_body("m", &request, false, Dialect::Compatible);
        assert_eq!(body["messages"][2]["content"], json!(""));
        assert!(body["messages"][2]["tool_calls"].is_array());
    }

    #[test]
    fn several_text_parts_stay_apart_in_order() {
        let mut request = tool_round_trip();
        request.messages[0] = message(
            Role::User,
            vec![
                ContentPart::Text("Hello".into()),
                ContentPart::Text("world".into()),
            ],
        );
        // Tool results first, then the text after them, in order.
        request.messages[2]
            .content
            .push(ContentPart::Text("and now?".into()));
        let body = request_body("m", &request, false, Dialect::OpenAi);
        assert_eq!(
            body["messages"][1]["content"],
            json!([{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}])
        );
        // Classic servers get a string, the parts a blank line apart.
        let classic = request_body("m", &request, false, Dialect::Compatible);
        assert_eq!(classic["messages"][1]["content"], json!("Hello\n\nworld"));
        assert_eq!(body["messages"][3]["role"], "tool");
        assert_eq!(
            body["messages"][4],
            json!({"role": "user", "content": "and now?"})
        );
    }

    fn decode(decoder: &mut ChunkDecoder, chunk: &str) -> Vec<Increment> {
        decoder.decode(chunk).unwrap()
    }

    #[test]
    fn chunks_decode_including_split_tool_arguments_and_usage() {
        let mut decoder = ChunkDecoder::new();
        let start = decode(
            &mut decoder,
            r#"{"model":"gpt-x-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"lookup","arguments":""}}]},"finish_reason":null}]}"#,
        );
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
        let args = decode(
            &mut decoder,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\""}}]}}]}"#,
        );
        assert_eq!(
            args,
            vec![Increment::ToolInput {
                index: 1,
                json: "{\"q\"".into()
            }]
        );
        let usage = decode(
            &mut decoder,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":8}}}"#,
        );
        assert_eq!(
            usage,
            vec![Increment::Usage(UsageUpdate {
                input: Some(9),
                output: Some(4),
                cache_read: Some(8),
                ..UsageUpdate::default()
            })]
        );
        assert_eq!(decode(&mut decoder, "[DONE]"), vec![Increment::Done]);
    }

    #[test]
    fn a_repeated_tool_call_id_continues_the_call_and_a_new_one_starts_another() {
        // llama.cpp-based servers repeat the id (and the name) in every
        // delta of a call.
        let mut decoder = ChunkDecoder::new();
        let mut all = Vec::new();
        for arguments in ["{\"city\"", ": \"Paris", ", France\"}"] {
            let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_A", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ]}}]});
            all.extend(decode(&mut decoder, &chunk.to_string()));
        }
        // A second call at the same index, with its own id.
        let chunk = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_B", "function": {"name": "get_time", "arguments": "{}"}}
        ]}}]});
        all.extend(decode(&mut decoder, &chunk.to_string()));
        let starts: Vec<_> = all
            .iter()
            .filter_map(|i| match i {
                Increment::ToolStart { index, id, .. } => Some((*index, id.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(starts, vec![(1, "call_A"), (2, "call_B")]);
        let first: String = all
            .iter()
            .filter_map(|i| match i {
                Increment::ToolInput { index: 1, json } => Some(json.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(first, r#"{"city": "Paris, France"}"#);

        // Ids a guest could not quote back to every provider are replaced,
        // and a repeated one too.
        let mut decoder = ChunkDecoder::new();
        let odd = decode(
            &mut decoder,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"functions.get_weather:0","function":{"name":"get_weather","arguments":"{}"}}]}}]}"#,
        );
        assert!(matches!(&odd[0], Increment::ToolStart { id, .. } if id == "call_0"));
        let again = decode(
            &mut decoder,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"functions.get_weather:0","function":{"name":"get_weather","arguments":"{}"}}]}}]}"#,
        );
        assert!(matches!(&again[0], Increment::ToolStart { index: 2, id, .. } if id == "call_1"));

        // An id alone (no name) does not start a call: one server's ids per
        // fragment stay one call.
        let mut decoder = ChunkDecoder::new();
        decode(
            &mut decoder,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a1","function":{"name":"n","arguments":"{\"x\""}}]}}]}"#,
        );
        let more = decode(
            &mut decoder,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a2","function":{"arguments":":1}"}}]}}]}"#,
        );
        assert_eq!(
            more,
            vec![Increment::ToolInput {
                index: 1,
                json: ":1}".into()
            }]
        );

        // No index at all: the id says which call a delta continues.
        let mut decoder = ChunkDecoder::new();
        let a = decode(
            &mut decoder,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"x","function":{"name":"n","arguments":"{"}}]}}]}"#,
        );
        let b = decode(
            &mut decoder,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"}"}}]}}]}"#,
        );
        assert!(matches!(a[0], Increment::ToolStart { index: 1, .. }));
        assert_eq!(
            b,
            vec![Increment::ToolInput {
                index: 1,
                json: "}".into()
            }]
        );
    }

    #[test]
    fn responses_with_null_content_missing_ids_or_object_arguments_decode() {
        let parsed = parse_response(&json!({
            "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"type": "function", "function": {"name": "n", "arguments": {"a": 1}}}]
            }}],
        }))
        .unwrap();
        assert_eq!(parsed.stop_reason, StopReason::ToolUse);
        assert_eq!(
            parsed.content,
            vec![ContentPart::ToolUse(ToolUse {
                id: "call_0".into(),
                name: "n".into(),
                input: r#"{"a":1}"#.into()
            })]
        );
        assert_eq!(parsed.usage, None, "no usage: the caller estimates");
        let mut decoder = ChunkDecoder::new();
        assert_eq!(
            decoder
                .decode(r#"{"error":{"message":"context full","code":400}}"#)
                .unwrap_err(),
            "context full"
        );
    }
}
