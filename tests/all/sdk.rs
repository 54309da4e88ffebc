//! The happy paths: the `hello` sample, and the guest SDK's API end to end
//! against in-process backends that record what reached them.

use std::collections::BTreeMap;
use std::sync::Arc;

use clawcage::bindings::inference::{ContentPart, Role};
use clawcage::inference::ModelBindings;
use clawcage::log::{LogLevel, LogStream};
use clawcage::tools::ToolGrants;
use clawcage::{Event, InvokeError};
use clawcage_tests::{EchoTool, HELLO, HOSTILE, ScriptedModel, TRIAGE, event, load};
use serde_json::json;

#[tokio::test]
async fn hello_greets_and_logs() {
    let agent = load(HELLO);
    let invocation = agent
        .invoke(Event::new("cli", "greet", json!({"name": "Ada"})))
        .await;
    assert_eq!(invocation.outcome, Ok("Hello, Ada!".into()));
    assert_eq!(invocation.logs.len(), 1, "{:?}", invocation.logs);
    let line = &invocation.logs[0];
    assert_eq!((line.level, line.stream), (LogLevel::Info, LogStream::Log));
    assert_eq!(line.message, "greeting Ada for a greet event from cli");

    let anonymous = agent.invoke(Event::new("cli", "greet", json!({}))).await;
    assert_eq!(anonymous.outcome, Ok("Hello, world!".into()));
}

#[tokio::test]
async fn hello_reports_a_bad_payload_as_an_agent_error() {
    let agent = load(HELLO);
    let invocation = agent
        .invoke(Event::new("cli", "greet", json!({"name": 7})))
        .await;
    let Err(InvokeError::Agent { message }) = invocation.outcome else {
        panic!("expected an agent error, got {invocation:?}");
    };
    assert!(message.contains("invalid type: integer `7`"), "{message}");
}

#[tokio::test]
async fn nothing_is_granted_by_default() {
    let agent = load(HOSTILE);
    let invocation = agent.invoke(event("not-granted")).await;
    let report: serde_json::Value =
        serde_json::from_str(invocation.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(
        report,
        json!({
            "model": "not granted: model binding \"default\" is not granted to this agent",
            "tool": "not granted: tool \"github\" is not granted to this agent",
        })
    );
}

#[tokio::test]
async fn triage_says_what_it_is_missing() {
    let agent = load(TRIAGE);
    let event: Event = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/sample-agents/triage/event.json",
            clawcage_tests::REPO_ROOT
        ))
        .unwrap(),
    )
    .unwrap();
    let invocation = agent.invoke(event).await;
    let report: serde_json::Value =
        serde_json::from_str(invocation.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(
        report,
        json!({"status": "not-granted", "missing": ["model binding `default`", "tool `github`"]})
    );
    assert_eq!(invocation.logs.len(), 1);
    assert_eq!(invocation.logs[0].level, LogLevel::Warn);
    assert_eq!(
        invocation.logs[0].message,
        "cannot triage: model binding \"default\" is not granted to this agent"
    );
}

#[tokio::test]
async fn sdk_inference_api_round_trips_through_a_granted_binding() {
    let model = ScriptedModel::new();
    let mut agent = load(HOSTILE);
    agent.set_models(Arc::new(ModelBindings::from([(
        "default".to_string(),
        model.clone() as _,
    )])));
    let invocation = agent.invoke(event("inference")).await;
    let report: serde_json::Value =
        serde_json::from_str(invocation.outcome.as_ref().expect("inference ran")).unwrap();
    assert_eq!(
        report,
        json!({
            "info": {"binding": "default", "provider": "scripted", "model": "scripted-1"},
            "text": "Hello",
            "tool_uses": ["lookup"],
            "output_tokens": 5,
            "deltas": ["Hel", "lo"],
            "streamed_text": "Hello",
            "invalid": "invalid-request: messages must not be empty",
        })
    );
    // What reached the backend: the two valid requests, exactly as built by
    // the SDK's builder; the invalid one was stopped at the door.
    let requests = model.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let request = &requests[0];
    assert_eq!(request.system.as_deref(), Some("be brief"));
    assert_eq!(request.messages.len(), 1);
    assert_eq!(request.messages[0].role, Role::User);
    assert!(matches!(&request.messages[0].content[..], [ContentPart::Text(t)] if t == "hello"));
    assert_eq!(request.max_tokens, 64);
    assert_eq!(request.temperature, Some(0.5));
    assert_eq!(request.stop_sequences, vec!["STOP".to_string()]);
    assert_eq!(request.tools.len(), 1);
    assert_eq!(request.tools[0].name, "lookup");
    assert_eq!(request.tools[0].input_schema, r#"{"type":"object"}"#);
    assert!(request.tool_choice.is_none());
}

#[tokio::test]
async fn sdk_tools_api_calls_only_granted_actions() {
    let echo = EchoTool::new();
    let mut agent = load(HOSTILE);
    agent.set_tools(Arc::new(ToolGrants::from([(
        "echo".to_string(),
        echo.clone() as _,
    )])));
    let invocation = agent.invoke(event("tools")).await;
    let report: serde_json::Value =
        serde_json::from_str(invocation.outcome.as_ref().expect("tools ran")).unwrap();
    assert_eq!(
        report,
        json!({
            "actions": ["say"],
            "spec_name": "echo_say",
            "echoed": {"echo": {"words": "hi"}},
            "ungranted": "not granted: action \"delete_everything\" of tool \"echo\" is not granted to this agent",
            "not_object": "invalid input: input must be a JSON object",
        })
    );
    // Only the granted, valid call reached the backend.
    assert_eq!(
        *echo.calls.lock().unwrap(),
        vec![("say".to_string(), r#"{"words":"hi"}"#.to_string())]
    );
}

#[tokio::test]
async fn grants_are_per_agent() {
    let mut granted = load(HOSTILE);
    granted.set_tools(Arc::new(BTreeMap::from([(
        "echo".to_string(),
        EchoTool::new() as _,
    )])));
    let ungranted = load(HOSTILE);
    assert!(granted.invoke(event("tools")).await.outcome.is_ok());
    let Err(InvokeError::Agent { message }) = ungranted.invoke(event("tools")).await.outcome else {
        panic!("the agent without grants used a tool");
    };
    assert_eq!(
        message,
        "not granted: tool \"echo\" is not granted to this agent"
    );
}

#[test]
fn the_sdk_carries_the_hosts_wit_unchanged() {
    let root = std::path::Path::new(clawcage_tests::REPO_ROOT);
    let host = std::fs::read(root.join("wit/agent.wit")).unwrap();
    // The Rust SDK's copy, and the JavaScript package's (npm does not
    // follow links when it packs a package).
    for copy in ["guest-sdk/wit/agent.wit", "guest-sdk/js/wit/agent.wit"] {
        let sdk = std::fs::read(root.join(copy)).unwrap();
        assert!(
            host == sdk,
            "{copy} differs from wit/agent.wit: copy it over (cp wit/agent.wit {copy})"
        );
    }
}
