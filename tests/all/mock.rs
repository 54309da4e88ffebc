//! The `mock` provider: scripted answers from the manifest, tool calls
//! included, with no key, no vault and no network.

use std::path::Path;

use clawcage::{Agent, Cage, Event, Manifest};
use clawcage_tests::{HOSTILE, test_options};
use serde_json::{Value, json};

const SCRIPT: &str = r#"
[models.default]
provider = "mock"
model = "mock-1"

[[models.default.replies]]
when = "weather"
text = "Sunny, 21 °C."

[[models.default.replies]]
text = "Let me look."
tool_calls = [{ name = "issues", input = { state = "open", labels = ["bug"] } }]

[[models.default.replies]]
text = "Two open bugs."

[models.echo]
provider = "mock"
model = "echo"
"#;

/// An agent with the script, loaded without any state directory.
fn agent(sections: &str) -> Result<Agent, String> {
    let text = format!("name = \"mocked\"\n[component]\npath = {HOSTILE:?}\n{sections}");
    let manifest = Manifest::from_toml(&text).map_err(|e| e.to_string())?;
    Cage::new(test_options())
        .unwrap()
        .load_manifest(&manifest, Path::new("/"))
        .map_err(|e| e.to_string())
}

async fn request(agent: &Agent, spec: Value) -> Value {
    let outcome = agent
        .invoke(Event::new("test", "request", spec))
        .await
        .outcome
        .unwrap();
    serde_json::from_str(&outcome).unwrap()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"text": text}]})
}

const ISSUES_TOOL: &str =
    r#"{"name": "issues", "description": "Lists issues", "input_schema": {"type": "object"}}"#;

#[tokio::test]
async fn a_mock_answers_from_its_script_turn_by_turn_with_tool_calls() {
    let agent = agent(SCRIPT).unwrap();
    let tools: Value = serde_json::from_str(&format!("[{ISSUES_TOOL}]")).unwrap();
    // First turn: the tool call, with its input as written in the manifest.
    let first = request(
        &agent,
        json!({"messages": [user("any bugs?")], "tools": tools.clone()}),
    )
    .await;
    let completion = &first["completion"];
    assert_eq!(
        (
            &completion["provider"],
            &completion["model"],
            &completion["stop_reason"]
        ),
        (&json!("mock"), &json!("mock-1"), &json!("tool-use"))
    );
    assert_eq!(completion["content"][0]["text"], "Let me look.");
    let tool_use = &completion["content"][1]["tool_use"];
    assert_eq!(tool_use["name"], "issues");
    let input: Value = serde_json::from_str(tool_use["input"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({"state": "open", "labels": ["bug"]}));
    assert!(completion["usage"]["input"].as_u64().unwrap() > 0);

    // Second turn (one assistant message before): the next reply.
    let second = request(
        &agent,
        json!({"messages": [
            user("any bugs?"),
            {"role": "assistant", "content": [{"tool_use": {"id": tool_use["id"], "name": "issues", "input": "{}"}}]},
            {"role": "user", "content": [{"tool_result": {"tool_use_id": tool_use["id"], "content": "[1, 2]"}}]},
        ], "tools": tools.clone()}),
    )
    .await;
    assert_eq!(
        second["completion"]["content"],
        json!([{"text": "Two open bugs."}])
    );
    assert_eq!(second["completion"]["stop_reason"], "end-turn");

    // `when` wins whatever the turn; streamed answers carry the same.
    let weather = request(
        &agent,
        json!({"messages": [user("the weather today?")], "stream": true}),
    )
    .await;
    assert_eq!(
        weather["completion"]["content"],
        json!([{"text": "Sunny, 21 °C."}])
    );
    assert!(!weather["deltas"].as_array().unwrap().is_empty());

    // A reply calling a tool the request does not offer is an error the
    // agent sees, not a made-up call.
    let offered_none = request(&agent, json!({"messages": [user("any bugs?")]})).await;
    assert!(
        offered_none["error"].to_string().contains("does not offer"),
        "{offered_none}"
    );

    // No script: the last user message echoed.
    let echo = request(
        &agent,
        json!({"binding": "echo", "messages": [user("ping")]}),
    )
    .await;
    assert_eq!(
        echo["completion"]["content"],
        json!([{"text": "(mock) ping"}])
    );
}

#[test]
fn a_mock_binding_takes_no_key_and_replies_only_belong_to_it() {
    for (sections, expected) in [
        (
            "[models.default]\nprovider = \"mock\"\nmodel = \"m\"\nkey = \"anthropic-team\"\n",
            "do not apply",
        ),
        (
            "[models.default]\nprovider = \"anthropic\"\nmodel = \"m\"\n[[models.default.replies]]\ntext = \"x\"\n",
            "mock provider only",
        ),
        (
            "[models.default]\nprovider = \"mock\"\nmodel = \"m\"\n[[models.default.replies]]\nwhen = \"x\"\n",
            "give `text`, `tool_calls`, or both",
        ),
    ] {
        let error = agent(sections).expect_err(sections);
        assert!(error.contains(expected), "{sections}: {error}");
    }
}
