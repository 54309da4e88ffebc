//! A fake model provider on loopback that speaks Anthropic's Messages API
//! (`POST /v1/messages`) and OpenAI's Chat Completions
//! (`POST /v1/chat/completions`) faithfully: their JSON bodies, SSE event
//! sequences, error shapes and status codes. It records every request.
//!
//! The scenario is the first word of the last user message:
//! - `hello`: a normal answer (streams as several deltas);
//! - `echo-key`: the answer quotes the credential it received (split
//!   across deltas when streaming);
//! - `echo-bytes`: the same, one byte per delta;
//! - `echo-halves`: the credential in two parts (two text blocks, two
//!   deltas);
//! - `echo-blocks`: the credential in text blocks (Anthropic) or deltas
//!   (OpenAI) of 16 bytes;
//! - `echo-escaped`: the credential written as JSON `\u00XX` escapes;
//! - `echo-model`: the credential as the model id the provider reports;
//! - `echo-tool`: a tool use whose id quotes the credential;
//! - `echo-tool-split`: a tool use whose input carries the credential split
//!   across two fields;
//! - `echo <text>`: the answer is `<text>` (what a model told to repeat
//!   something does);
//! - `error-echo`: HTTP 401 whose error message quotes the credential;
//! - `error-offset`: HTTP 500, `text/plain`, with the credential at byte
//!   500 of the body;
//! - `overloaded-once`: 529 (Anthropic) or 503 (OpenAI) on the first try;
//! - `rate-limited-once`: 429 with `retry-after: 0` on the first try;
//! - `always-overloaded`: 529/503 every time;
//! - `cut`: a stream that stops before its end;
//! - `tool`: a tool use whose JSON input arrives in pieces;
//! - `slow`: answers after 300 ms;
//! - `stall`: never answers (until the client hangs up);
//! - `stall-mid`: streams two text deltas, then goes quiet (unstreamed:
//!   as `stall`);
//! - `no-usage`: reports no token counts (as llama.cpp-based servers do in
//!   streams);
//! - `no-done`: a stream that says why it stopped, then ends without its
//!   end marker (`[DONE]`, `message_stop`);
//! - `cached`: reports prompt-cache reads and writes in its usage.
//!
//! The model id can make the whole model misbehave, whatever the prompt, so
//! a binding's fallback (another model on the same fake) behaves normally:
//! `fake-503` answers 503, `fake-429` 429 with `retry-after: 0`,
//! `fake-401` 401, and `fake-stall` never answers.
//!
//! Every body is first checked against the provider's OpenAPI document
//! (see [`crate::schemas`]); one that does not match is answered 400, as
//! the real API would.
//!
//! A request whose system prompt says "You triage GitHub issues" plays the
//! triage agent's model: it first asks for `add_labels` with `bug`, and
//! once it has the tool result, ends with a one-line summary. One that says
//! "You write the weekly engineering report" answers with a short report
//! naming how many issues it was shown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path.
    pub path: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Value,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    attempts: AtomicUsize,
}

/// A running fake provider.
pub struct FakeProvider {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeProvider {
    /// Starts a fake on an ephemeral loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/v1/chat/completions", post(openai))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding loopback");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    /// Base URL for Anthropic bindings.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base URL for OpenAI bindings.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }
}

fn record(shared: &Shared, path: &str, headers: &HeaderMap, body: &Value) -> usize {
    shared.received.lock().expect("lock").push(Received {
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.clone(),
    });
    shared.attempts.fetch_add(1, Ordering::SeqCst)
}

fn last_user_text(body: &Value, anthropic: bool) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .cloned()
        .unwrap_or(Value::Null);
    if anthropic {
        last["content"]
            .as_array()
            .and_then(|c| c.iter().find(|p| p["type"] == "text"))
            .and_then(|p| p["text"].as_str())
            .unwrap_or("")
            .to_string()
    } else {
        last["content"].as_str().unwrap_or("").to_string()
    }
}

fn sse(events: &[(Option<&str>, Value)], done: bool) -> Response {
    let mut text = String::new();
    for (event, data) in events {
        if let Some(event) = event {
            text.push_str(&format!("event: {event}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
    }
    if done {
        text.push_str("data: [DONE]\n\n");
    }
    ([("content-type", "text/event-stream")], Body::from(text)).into_response()
}

/// What an answer is made of, before it is put in a provider's format.
enum Block {
    /// A text part, streamed as these deltas.
    Text(Vec<String>),
    /// A tool use: id, name, and its input as JSON pieces.
    Tool(String, String, Vec<String>),
}

/// The answer of an echoing scenario, if `scenario` is one.
fn echo_blocks(scenario: &str, key: &str, prompt: &str) -> Option<Vec<Block>> {
    let chars = |text: &str| text.chars().map(String::from).collect::<Vec<_>>();
    let (first, second) = key.split_at(key.len() / 2);
    Some(match scenario {
        "echo-key" => vec![Block::Text(thirds(&format!("your key is {key} ok")))],
        "echo-bytes" => vec![Block::Text(chars(&format!("your key is {key} ok")))],
        "echo-halves" => vec![
            Block::Text(vec![format!("your key is {first}")]),
            Block::Text(vec![format!("{second} ok")]),
        ],
        "echo-blocks" => key
            .as_bytes()
            .chunks(16)
            .map(|c| Block::Text(vec![String::from_utf8_lossy(c).into_owned()]))
            .collect(),
        "echo-escaped" => {
            let escaped: String = key
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect();
            vec![Block::Text(thirds(&format!("decode this: {escaped}")))]
        }
        // The id holds as much of the key as an id the host passes on may
        // (64 bytes of `[A-Za-z0-9_-]`); longer ones are replaced.
        "echo-tool" => vec![Block::Tool(
            format!("toolu_{}", &key[..key.len().min(58)]),
            "lookup".into(),
            vec!["{\"q\":".into(), " \"x\"}".into()],
        )],
        "echo-tool-split" => vec![Block::Tool(
            "toolu_2".into(),
            "lookup".into(),
            vec![
                format!("{{\"a\": \"{first}\","),
                format!(" \"b\": \"{second}\"}}"),
            ],
        )],
        "echo" => {
            let text = prompt.strip_prefix("echo").unwrap_or("").trim_start();
            vec![Block::Text(thirds(text))]
        }
        _ => return None,
    })
}

/// Splits `text` into three deltas.
fn thirds(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    vec![
        chars[..n / 3].iter().collect(),
        chars[n / 3..2 * n / 3].iter().collect(),
        chars[2 * n / 3..].iter().collect(),
    ]
}

/// A body that sends `chunks` and then stays open, sending nothing, until
/// the client hangs up: a server that stalled mid-answer.
fn stalling_body(chunks: Vec<String>) -> Body {
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut rest| async move {
        match rest.next() {
            Some(chunk) => Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), rest)),
            None => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                None
            }
        }
    });
    Body::from_stream(stream)
}

/// The misbehaviour a model id asks for, if any.
async fn model_fault(model: &str, anthropic: bool) -> Option<Response> {
    let error = |status: u16, kind: &str| {
        let body = if anthropic {
            json!({"type": "error", "error": {"type": kind, "message": format!("{model} says {status}")}})
        } else {
            json!({"error": {"message": format!("{model} says {status}"), "type": kind, "param": null, "code": null}})
        };
        (
            StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json"), ("retry-after", "0")],
            body.to_string(),
        )
            .into_response()
    };
    match model {
        "fake-503" => Some(error(503, "overloaded_error")),
        "fake-429" => Some(error(429, "rate_limit_error")),
        "fake-401" => Some(error(401, "authentication_error")),
        "fake-stall" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        _ => None,
    }
}

/// A 400 in the provider's error shape when `body` does not match its
/// OpenAPI document.
fn schema_refusal(api: crate::schemas::Api, body: &Value) -> Option<Response> {
    let problems = crate::schemas::violations(api, body);
    if problems.is_empty() {
        return None;
    }
    let message = format!(
        "the request body does not match the API's schema: {}",
        problems.join("; ")
    );
    let body = match api {
        crate::schemas::Api::Anthropic => {
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        }
        crate::schemas::Api::OpenAi => {
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
        }
    };
    Some(
        (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

async fn anthropic(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let attempt = record(&shared, "/v1/messages", &headers, &body);
    if let Some(refused) = schema_refusal(crate::schemas::Api::Anthropic, &body) {
        return refused;
    }
    if let Some(fault) = model_fault(body["model"].as_str().unwrap_or(""), true).await {
        return fault;
    }
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let model = body["model"].as_str().unwrap_or("").to_string();
    let prompt = last_user_text(&body, true);
    let scenario = prompt.split_whitespace().next().unwrap_or("").to_string();
    let error = |status: u16, kind: &str, message: String| {
        (
            StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json"), ("retry-after", "0")],
            json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
        )
            .into_response()
    };
    match scenario.as_str() {
        "error-echo" => {
            return error(
                401,
                "authentication_error",
                format!("invalid x-api-key: {key}"),
            );
        }
        "error-offset" => return error_at_offset(&key),
        "overloaded-once" if attempt == 0 => {
            return error(529, "overloaded_error", "Overloaded".into());
        }
        "always-overloaded" => return error(529, "overloaded_error", "Overloaded".into()),
        "rate-limited-once" if attempt == 0 => {
            return error(429, "rate_limit_error", "slow down".into());
        }
        "slow" => tokio::time::sleep(Duration::from_millis(300)).await,
        "stall" => tokio::time::sleep(Duration::from_secs(3600)).await,
        "stall-mid" if body["stream"] == json!(true) => {
            let events = [
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello, "}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "I was saying"}}),
            ];
            let chunks = events
                .iter()
                .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
                .collect();
            return (
                [("content-type", "text/event-stream")],
                stalling_body(chunks),
            )
                .into_response();
        }
        "stall-mid" => tokio::time::sleep(Duration::from_secs(3600)).await,
        _ => {}
    }
    // What the answer reports in `usage` (the output count comes last).
    let usage_in = if scenario == "cached" {
        json!({"input_tokens": 12, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 3000,
               "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1500}})
    } else {
        json!({"input_tokens": 12})
    };
    let usage_all = {
        let mut u = usage_in.clone();
        u["output_tokens"] = json!(7);
        u
    };
    let usage_start = {
        let mut u = usage_in.clone();
        u["output_tokens"] = json!(1);
        u
    };
    let text = "Hello from anthropic".to_string();
    let served_model = if scenario == "echo-model" {
        key.clone()
    } else {
        format!("{model}-20260101")
    };
    if let Some(blocks) = echo_blocks(&scenario, &key, &prompt) {
        return anthropic_blocks(&blocks, &served_model, body["stream"] == json!(true));
    }
    if body["system"]
        .as_str()
        .is_some_and(|s| s.contains("You triage GitHub issues"))
    {
        return triage_turn(&body, &served_model);
    }
    if body["system"]
        .as_str()
        .is_some_and(|s| s.contains("You write the weekly engineering report"))
    {
        let prompt = body["messages"][0]["content"][0]["text"]
            .as_str()
            .unwrap_or("");
        let shown = prompt.matches("\"number\"").count();
        let text = format!(
            "This week {shown} issues moved in acme/support, both still open.\n\nIssue 1 reports that something is broken and needs an owner; issue 2 has no details yet.\n\nNeeds attention: triage issue 1 first."
        );
        return (
            [("content-type", "application/json")],
            json!({
                "id": "msg_report", "type": "message", "role": "assistant", "model": served_model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 410, "output_tokens": 58}
            })
            .to_string(),
        )
            .into_response();
    }
    if body["stream"] != json!(true) {
        let content = if scenario == "tool" {
            json!([{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}])
        } else {
            json!([{"type": "text", "text": text}])
        };
        return (
            [("content-type", "application/json")],
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": served_model,
                "content": content, "stop_reason": "end_turn", "stop_sequence": null,
                "usage": usage_all
            })
            .to_string(),
        )
            .into_response();
    }
    let mut events = vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": served_model, "content": [], "stop_reason": null, "usage": usage_start}}),
        ),
        (Some("ping"), json!({"type": "ping"})),
    ];
    if scenario == "tool" {
        events.push((Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}})));
        for piece in ["{\"q\":", " \"x", "\"}"] {
            events.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}})));
        }
    } else {
        events.push((Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        for piece in thirds(&text) {
            events.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})));
        }
    }
    if scenario == "cut" {
        return sse(&events, false);
    }
    events.push((
        Some("content_block_stop"),
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": if scenario == "tool" { "tool_use" } else { "end_turn" }, "stop_sequence": null}, "usage": {"output_tokens": 7}})));
    if scenario != "no-done" {
        events.push((Some("message_stop"), json!({"type": "message_stop"})));
    }
    sse(&events, false)
}

/// A plain-text 500 with the credential at byte 500 of the body.
fn error_at_offset(key: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("content-type", "text/plain")],
        format!("{}{key} (upstream trace)", "x".repeat(500)),
    )
        .into_response()
}

/// An Anthropic answer made of `blocks`, whole or streamed.
fn anthropic_blocks(blocks: &[Block], model: &str, stream: bool) -> Response {
    let stop = if blocks.iter().any(|b| matches!(b, Block::Tool(..))) {
        "tool_use"
    } else {
        "end_turn"
    };
    if !stream {
        let content: Vec<Value> = blocks
            .iter()
            .map(|block| match block {
                Block::Text(pieces) => json!({"type": "text", "text": pieces.concat()}),
                Block::Tool(id, name, pieces) => json!({
                    "type": "tool_use", "id": id, "name": name,
                    "input": serde_json::from_str::<Value>(&pieces.concat()).unwrap_or(Value::Null),
                }),
            })
            .collect();
        return (
            [("content-type", "application/json")],
            json!({
                "id": "msg_echo", "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 7}
            })
            .to_string(),
        )
            .into_response();
    }
    let mut events = vec![(
        Some("message_start"),
        json!({"type": "message_start", "message": {"id": "msg_echo", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    )];
    for (index, block) in blocks.iter().enumerate() {
        match block {
            Block::Text(pieces) => {
                events.push((Some("content_block_start"), json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
                for piece in pieces {
                    events.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})));
                }
            }
            Block::Tool(id, name, pieces) => {
                events.push((Some("content_block_start"), json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})));
                for piece in pieces {
                    events.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})));
                }
            }
        }
        events.push((
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 7}})));
    events.push((Some("message_stop"), json!({"type": "message_stop"})));
    sse(&events, false)
}

/// An OpenAI answer made of `blocks`, whole or streamed: text parts are one
/// `content` string (their deltas kept apart when streamed), tool uses are
/// `tool_calls`.
fn openai_blocks(blocks: &[Block], model: &str, stream: bool) -> Response {
    let text: String = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Text(pieces) => Some(pieces.concat()),
            Block::Tool(..) => None,
        })
        .collect();
    let tools: Vec<(&String, &String, &Vec<String>)> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::Tool(id, name, pieces) => Some((id, name, pieces)),
            Block::Text(_) => None,
        })
        .collect();
    let finish = if tools.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    if !stream {
        let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
        if !tools.is_empty() {
            message["tool_calls"] = tools
                .iter()
                .map(|(id, name, pieces)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": pieces.concat()}}))
                .collect();
        }
        return (
            [("content-type", "application/json")],
            json!({
                "id": "chatcmpl-echo", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
            })
            .to_string(),
        )
            .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        (
            None,
            json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for block in blocks {
        if let Block::Text(pieces) = block {
            for piece in pieces {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
        }
    }
    for (index, (id, name, pieces)) in tools.iter().enumerate() {
        events.push(chunk(json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
        for piece in pieces.iter() {
            events.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    events.push(chunk(json!({}), json!(finish)));
    events.push((None, json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}})));
    sse(&events, true)
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let attempt = record(&shared, "/v1/chat/completions", &headers, &body);
    if let Some(refused) = schema_refusal(crate::schemas::Api::OpenAi, &body) {
        return refused;
    }
    if let Some(fault) = model_fault(body["model"].as_str().unwrap_or(""), false).await {
        return fault;
    }
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let model = body["model"].as_str().unwrap_or("").to_string();
    let prompt = last_user_text(&body, false);
    let scenario = prompt.split_whitespace().next().unwrap_or("").to_string();
    let error = |status: u16, kind: &str, message: String| {
        (
            StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json"), ("retry-after", "0")],
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
                .to_string(),
        )
            .into_response()
    };
    match scenario.as_str() {
        "error-echo" => {
            return error(
                401,
                "invalid_request_error",
                format!("Incorrect API key provided: {key}"),
            );
        }
        "error-offset" => return error_at_offset(&key),
        "overloaded-once" if attempt == 0 => {
            return error(503, "server_error", "overloaded".into());
        }
        "always-overloaded" => return error(503, "server_error", "overloaded".into()),
        "rate-limited-once" if attempt == 0 => {
            return error(429, "rate_limit_exceeded", "slow down".into());
        }
        "slow" => tokio::time::sleep(Duration::from_millis(300)).await,
        "stall" => tokio::time::sleep(Duration::from_secs(3600)).await,
        "stall-mid" if body["stream"] == json!(true) => {
            let chunk = |content: &str| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
                )
            };
            return (
                [("content-type", "text/event-stream")],
                stalling_body(vec![chunk("Hello, "), chunk("I was saying")]),
            )
                .into_response();
        }
        "stall-mid" => tokio::time::sleep(Duration::from_secs(3600)).await,
        _ => {}
    }
    let usage = match scenario.as_str() {
        "no-usage" => None,
        "cached" => Some(
            json!({"prompt_tokens": 5012, "completion_tokens": 7, "total_tokens": 5019, "prompt_tokens_details": {"cached_tokens": 5000}}),
        ),
        _ => Some(json!({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19})),
    };
    let text = "Hello from openai".to_string();
    let served_model = if scenario == "echo-model" {
        key.clone()
    } else {
        format!("{model}-2026-01-01")
    };
    if let Some(blocks) = echo_blocks(&scenario, &key, &prompt) {
        return openai_blocks(&blocks, &served_model, body["stream"] == json!(true));
    }
    if body["stream"] != json!(true) {
        return (
            [("content-type", "application/json")],
            json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": served_model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage
            })
            .to_string(),
        )
            .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        (
            None,
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": served_model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in thirds(&text) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    if scenario == "cut" {
        return sse(&events, false);
    }
    events.push(chunk(json!({}), json!("stop")));
    if let Some(usage) = usage {
        events.push((None, json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": served_model, "choices": [], "usage": usage})));
    }
    sse(&events, scenario != "no-done")
}

/// The triage agent's model: a tool use, then a summary.
fn triage_turn(body: &Value, served_model: &str) -> Response {
    let has_result = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .any(|part| part["type"] == "tool_result");
    let (content, stop, output) = if has_result {
        (
            json!([{"type": "text", "text": "Labelled as a bug: saving with an empty title crashes the app."}]),
            "end_turn",
            16,
        )
    } else {
        (
            json!([
                {"type": "text", "text": "This is a crash on save."},
                {"type": "tool_use", "id": "toolu_triage_1", "name": "add_labels", "input": {"labels": ["bug"]}}
            ]),
            "tool_use",
            31,
        )
    };
    (
        [("content-type", "application/json")],
        json!({
            "id": "msg_triage", "type": "message", "role": "assistant", "model": served_model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": 240, "output_tokens": output}
        })
        .to_string(),
    )
        .into_response()
}
