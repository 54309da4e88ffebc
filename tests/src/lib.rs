//! Test harness: paths of the guest components built from source, a shared
//! cage, and in-process backends for models and tools that record what they
//! receive.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use clawcage::bindings::inference::{
    Completion, CompletionRequest, ContentPart, Error as InferenceError, StopReason, StreamEvent,
    ToolUse, Usage,
};
use clawcage::inference::{CallContext, CompletionEvents, ModelBackend};
use clawcage::tools::{ActionInfo, ToolBackend, ToolError};
use clawcage::{Agent, Cage, EngineOptions, Event};

include!(concat!(env!("OUT_DIR"), "/components.rs"));

pub mod corpus;
pub mod fake_provider;
pub mod fake_tools;
pub mod nats;
pub mod postgres;
pub mod schemas;

/// A directory for precompiled components shared by the tests of one run.
pub fn cache_dir() -> PathBuf {
    Path::new(REPO_ROOT)
        .join("target")
        .join("test-component-cache")
}

/// Engine options for tests: a small pool, the shared compile cache.
pub fn test_options() -> EngineOptions {
    EngineOptions {
        max_concurrent_instances: 32,
        cache_dir: Some(cache_dir()),
        ..EngineOptions::default()
    }
}

/// The cage most tests share.
pub fn cage() -> &'static Cage {
    static CAGE: LazyLock<Cage> =
        LazyLock::new(|| Cage::new(test_options()).expect("creating the test cage"));
    &CAGE
}

/// Reads a built component.
pub fn component_bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Loads a component into the shared cage with default limits and log
/// capture on.
pub fn load(path: &str) -> Agent {
    let name = Path::new(path)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut agent = cage()
        .load_component(&name, &component_bytes(path), None)
        .unwrap_or_else(|e| panic!("loading {path}: {e}"));
    agent.set_capture_logs(true);
    agent
}

/// An event of `kind` from the `test` source with an empty payload.
pub fn event(kind: &str) -> Event {
    Event::new("test", kind, serde_json::json!({}))
}

/// A model backend that answers from a script and records every request.
pub struct ScriptedModel {
    /// The requests it received, in order.
    pub requests: Mutex<Vec<CompletionRequest>>,
}

impl ScriptedModel {
    /// A new scripted model.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            requests: Mutex::new(Vec::new()),
        })
    }

    fn completion() -> Completion {
        Completion {
            model: "scripted-1-20260101".into(),
            provider: "scripted".into(),
            fallback: 0,
            content: vec![
                ContentPart::Text("Hello".into()),
                ContentPart::ToolUse(ToolUse {
                    id: "toolu_1".into(),
                    name: "lookup".into(),
                    input: r#"{"q":"x"}"#.into(),
                }),
            ],
            stop_reason: StopReason::ToolUse,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 5,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                estimated: false,
            },
        }
    }
}

#[async_trait::async_trait]
impl ModelBackend for ScriptedModel {
    fn provider(&self) -> &str {
        "scripted"
    }

    fn model(&self) -> &str {
        "scripted-1"
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        _call: &CallContext,
    ) -> Result<Completion, InferenceError> {
        self.requests.lock().unwrap().push(request);
        Ok(Self::completion())
    }

    async fn stream(
        &self,
        request: CompletionRequest,
        _call: &CallContext,
    ) -> Result<CompletionEvents, InferenceError> {
        self.requests.lock().unwrap().push(request);
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            for event in [
                StreamEvent::TextDelta("Hel".into()),
                StreamEvent::TextDelta("lo".into()),
                StreamEvent::Finished(Self::completion()),
            ] {
                let _ = sender.send(Ok(event)).await;
            }
        });
        Ok(receiver)
    }
}

/// A tool with one action, `say`, that echoes its input and records calls.
pub struct EchoTool {
    /// `(action, input)` of every call that reached it.
    pub calls: Mutex<Vec<(String, String)>>,
}

impl EchoTool {
    /// A new echo tool.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl ToolBackend for EchoTool {
    fn actions(&self) -> Vec<ActionInfo> {
        vec![ActionInfo {
            name: "say".into(),
            description: "Echoes its input".into(),
            input_schema: r#"{"type":"object","properties":{"words":{"type":"string"}}}"#.into(),
        }]
    }

    async fn call(&self, action: &str, input: serde_json::Value) -> Result<String, ToolError> {
        self.calls
            .lock()
            .unwrap()
            .push((action.to_string(), input.to_string()));
        Ok(format!(r#"{{"echo":{input}}}"#))
    }
}

/// Realistic test credentials: each in its provider's format and length,
/// with a random-looking private part (the vault refuses anything shorter
/// or plainer), made deterministically from a seed so tests can name them.
pub mod keys {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    /// `len` base62 characters from `seed`.
    pub fn random_chars(seed: u64, len: usize) -> String {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }

    /// An Anthropic key: `sk-ant-api03-`, 93 characters, `AA` (108 bytes).
    pub fn anthropic(seed: u64) -> String {
        format!("sk-ant-api03-{}AA", random_chars(seed, 93))
    }

    /// An OpenAI project key of 64 bytes.
    pub fn openai(seed: u64) -> String {
        format!("sk-proj-{}", random_chars(seed, 56))
    }

    /// A key for an OpenAI-compatible server, 40 bytes.
    pub fn compatible(seed: u64) -> String {
        random_chars(seed, 40)
    }

    /// A classic GitHub token (40 bytes).
    pub fn github(seed: u64) -> String {
        format!("ghp_{}", random_chars(seed, 36))
    }

    /// A Slack bot token with team and bot ids.
    pub fn slack(seed: u64) -> String {
        format!("xoxb-1111222233-4444555566-{}", random_chars(seed, 24))
    }

    /// A Notion integration token.
    pub fn notion(seed: u64) -> String {
        format!("secret_{}", random_chars(seed, 43))
    }

    /// A webhook signing secret (32 bytes).
    pub fn webhook(seed: u64) -> String {
        random_chars(seed, 32)
    }
}
