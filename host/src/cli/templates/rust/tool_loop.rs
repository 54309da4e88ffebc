//! A new ClawCage agent with a tool loop: it offers the model a tool of its
//! own (`add`), runs every call the model asks for, sends the results back,
//! and stops when the model answers in text (or after a few rounds).

use clawcage_sdk::{
    CompletionRequest, Event, Message, Model, StopReason, ToolResult, ToolSpec, handler, info,
};
use serde::Deserialize;
use serde_json::json;

/// Most model calls one event makes.
const MAX_ROUNDS: usize = 5;

/// The event's payload: `{"prompt": "..."}`.
#[derive(Debug, Deserialize)]
pub struct Ask {
    /// What to ask the model.
    pub prompt: String,
}

/// The `add` tool's input.
#[derive(Debug, Deserialize)]
pub struct AddInput {
    /// The first number.
    pub a: f64,
    /// The second number.
    pub b: f64,
}

/// Runs one of this agent's own tools.
pub fn run_tool(name: &str, input: &str) -> String {
    match name {
        "add" => match serde_json::from_str::<AddInput>(input) {
            Ok(AddInput { a, b }) => json!({ "sum": a + b }).to_string(),
            Err(e) => json!({ "error": format!("bad input: {e}") }).to_string(),
        },
        other => json!({ "error": format!("no tool {other}") }).to_string(),
    }
}

#[handler]
fn handle(event: Event) -> clawcage_sdk::Result<String> {
    let ask: Ask = event.payload()?;
    let model = Model::open("default")?;
    let add = ToolSpec::new(
        "add",
        "Adds two numbers.",
        &json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
    );
    let mut request = CompletionRequest::new()
        .user(ask.prompt)
        .max_tokens(512)
        .tool(add);
    for round in 0..MAX_ROUNDS {
        let answer = model.complete(&request)?;
        if answer.stop_reason != StopReason::ToolUse {
            return Ok(answer.text());
        }
        let results: Vec<ToolResult> = answer
            .tool_uses()
            .map(|call| {
                info!("round {round}: the model calls {}", call.name);
                ToolResult {
                    tool_use_id: call.id.clone(),
                    content: run_tool(&call.name, &call.input),
                    is_error: false,
                }
            })
            .collect();
        request = request
            .message(answer.to_message())
            .message(Message::tool_results(results));
    }
    Err(clawcage_sdk::Error::msg(format!("no answer after {MAX_ROUNDS} rounds")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_adds_and_bad_input_is_an_answer_not_a_crash() {
        assert_eq!(run_tool("add", r#"{"a": 19, "b": 23}"#), r#"{"sum":42.0}"#);
        assert!(run_tool("add", "{}").contains("bad input"));
        assert!(run_tool("divide", "{}").contains("no tool"));
    }
}
