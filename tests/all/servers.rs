//! Inference that works on real servers: a wire corpus recorded from a real
//! OpenAI-compatible server (llama-cpp-python), replayed at the HTTP level;
//! provider-exact validation; per-binding time limits; fallback chains;
//! estimated usage; prompt caching on the wire; the providers' OpenAPI
//! documents as a check of every body the host sends.

use std::path::Path;
use std::sync::Arc;

use clawcage::db::Database;
use clawcage::ledger::Ledger;
use clawcage::pricing::PriceTable;
use clawcage::providers::binding::Services;
use clawcage::secret::Secret;
use clawcage::vault::{MasterKey, Vault};
use clawcage::{Agent, Cage, Event, Manifest};
use clawcage_tests::corpus::{self, ReplayServer};
use clawcage_tests::fake_provider::FakeProvider;
use clawcage_tests::{HOSTILE, keys, schemas, test_options};
use serde_json::{Value, json};

struct Host {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    services: Arc<Services>,
    fake: FakeProvider,
}

async fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(&dir.path().join("state")).unwrap());
    let vault = Arc::new(Vault::open(db.clone(), MasterKey::generate()).unwrap());
    vault
        .add(
            "anthropic-a",
            "anthropic",
            &Secret::from(keys::anthropic(1)),
        )
        .unwrap();
    vault
        .add("openai-b", "openai", &Secret::from(keys::openai(2)))
        .unwrap();
    let ledger = Ledger::new(db);
    let services = Arc::new(Services::new(vault, ledger.clone(), PriceTable::builtin()).unwrap());
    Host {
        _dir: dir,
        ledger,
        services,
        fake: FakeProvider::start().await,
    }
}

impl Host {
    fn manifest(&self, name: &str, sections: &str) -> Manifest {
        let text = format!(
            "name = {name:?}\n[component]\npath = {HOSTILE:?}\n{}",
            sections
                .replace("ANTHROPIC_URL", &self.fake.anthropic_url())
                .replace("OPENAI_URL", &self.fake.openai_url())
        );
        Manifest::from_toml(&text).unwrap()
    }

    fn load(&self, name: &str, sections: &str) -> Result<Agent, String> {
        Cage::new(test_options())
            .unwrap()
            .with_services(self.services.clone())
            .load_manifest(&self.manifest(name, sections), Path::new("/"))
            .map_err(|e| e.to_string())
    }

    fn agent(&self, name: &str, sections: &str) -> Agent {
        self.load(name, sections).unwrap()
    }
}

/// Sends the request `spec` describes (see the fixture's `request` kind)
/// and returns what the guest saw.
async fn send(agent: &Agent, spec: Value) -> Value {
    let outcome = agent
        .invoke(Event::new("test", "request", spec))
        .await
        .outcome
        .expect("the request fixture always answers");
    serde_json::from_str(&outcome).unwrap()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"text": text}]})
}

// ---------------------------------------------------------------------------
// The llama-cpp-python corpus.

/// The guest request that makes the host send `body` (a recorded Chat
/// Completions body): the inverse of the host's mapping, so the replay
/// server's exact match checks the mapping itself.
fn guest_request(body: &Value) -> Value {
    let mut spec = json!({"binding": "default", "messages": []});
    for message in body["messages"].as_array().unwrap() {
        let content = &message["content"];
        match message["role"].as_str().unwrap() {
            "system" => spec["system"] = content.clone(),
            "user" => spec["messages"]
                .as_array_mut()
                .unwrap()
                .push(user(content.as_str().unwrap())),
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(text) = content.as_str().filter(|t| !t.is_empty()) {
                    parts.push(json!({"text": text}));
                }
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    parts.push(json!({"tool_use": {
                        "id": call["id"], "name": call["function"]["name"],
                        "input": call["function"]["arguments"],
                    }}));
                }
                spec["messages"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"role": "assistant", "content": parts}));
            }
            "tool" => spec["messages"].as_array_mut().unwrap().push(json!({
                "role": "user",
                "content": [{"tool_result": {"tool_use_id": message["tool_call_id"], "content": content}}],
            })),
            other => panic!("role {other}"),
        }
    }
    spec["max_tokens"] = body["max_tokens"].clone();
    spec["temperature"] = body["temperature"].clone();
    if let Some(stop) = body.get("stop") {
        spec["stop"] = stop.clone();
    }
    if let Some(tools) = body.get("tools") {
        spec["tools"] = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                json!({"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]})
            })
            .collect();
    }
    spec["tool_choice"] = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => json!("any"),
        Some(Value::String(s)) => json!(s),
        Some(named) => json!({"tool": named["function"]["name"]}),
        None => Value::Null,
    };
    spec["stream"] = json!(body["stream"] == json!(true));
    spec
}

/// Scenarios that the host cannot send by construction, and why; every
/// other recorded scenario must be replayed by a test below.
const NOT_REPLAYABLE: &[(&str, &str)] = &[
    (
        "tool-round2-null-content",
        "the host sends \"\" for a tool-call turn without text, never null (this is the 500 it avoids)",
    ),
    ("error-bad-request", "max-tokens is a u32 in WIT"),
    ("max-tokens-negative", "max-tokens is a u32 in WIT"),
];

/// Replays scenario `name` through a real guest, returns what it saw and
/// the recorded exchange.
async fn replay(name: &str) -> (Value, corpus::Exchange, Host) {
    let exchanges = corpus::load(&corpus::dir("llama-cpp"));
    let exchange = exchanges
        .iter()
        .find(|e| e.scenario == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
        .clone();
    let server = ReplayServer::start(exchanges).await;
    let host = host().await;
    let agent = host.agent(
        "local",
        &format!(
            "[models.default]\nprovider = \"openai-compatible\"\nmodel = \"gemma3-270m\"\nbase_url = \"{}\"\n",
            server.base_url()
        ),
    );
    let seen = send(&agent, guest_request(&exchange.request)).await;
    (seen, exchange, host)
}

/// The text and finish reason a recorded answer holds.
fn recorded_answer(exchange: &corpus::Exchange) -> (String, String) {
    if exchange.content_type.starts_with("text/event-stream") {
        let mut text = String::new();
        let mut finish = String::new();
        for line in exchange.body.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let Ok(chunk) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
        (text, finish)
    } else {
        let body: Value = serde_json::from_str(&exchange.body).unwrap();
        (
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            body["choices"][0]["finish_reason"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    }
}

fn text_of(completion: &Value) -> String {
    completion["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[tokio::test]
async fn every_recorded_scenario_is_replayed_or_explained() {
    let replayed = [
        "plain",
        "plain-streamed",
        "length",
        "length-streamed",
        "stop",
        "stop-fired",
        "stop-fired-streamed",
        "tool-required",
        "tool",
        "tool-streamed",
        "tool-round2",
        "tool-round2-streamed",
        "error-context",
        "error-context-streamed",
        "error-not-found",
    ];
    for exchange in corpus::load(&corpus::dir("llama-cpp")) {
        let name = exchange.scenario.as_str();
        assert!(
            replayed.contains(&name) || NOT_REPLAYABLE.iter().any(|(n, _)| *n == name),
            "corpus scenario {name} has no replay test"
        );
    }
}

#[tokio::test]
async fn real_server_text_answers_replay_exactly_streamed_or_not() {
    for name in [
        "plain",
        "plain-streamed",
        "length",
        "length-streamed",
        "stop",
        "stop-fired",
        "stop-fired-streamed",
        "tool-required",
    ] {
        let (seen, exchange, host) = replay(name).await;
        let completion = &seen["completion"];
        assert!(completion.is_object(), "{name}: {seen}");
        let (text, finish) = recorded_answer(&exchange);
        assert_eq!(text_of(completion), text, "{name}");
        let expected_stop = match finish.as_str() {
            "length" => "max-tokens",
            "stop" => "end-turn",
            other => panic!("{name}: finish {other}"),
        };
        assert_eq!(completion["stop_reason"], expected_stop, "{name}");
        assert_eq!(completion["provider"], "openai-compatible");
        let streamed = name.ends_with("streamed");
        if streamed {
            // What the deltas showed adds up to the finished text.
            let deltas: String = seen["deltas"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|d| d["text"].as_str())
                .collect();
            assert_eq!(deltas, text, "{name}");
        }
        // This server sends no usage in streams (it ignores
        // stream_options): the host estimates, and says so.
        let usage = &completion["usage"];
        assert_eq!(usage["estimated"], json!(streamed), "{name}: {usage}");
        if streamed {
            let max = exchange.request["max_tokens"].as_u64().unwrap();
            let output = usage["output"].as_u64().unwrap();
            assert!(output >= 1 && output <= max, "{name}: {usage}");
        } else {
            let body: Value = serde_json::from_str(&exchange.body).unwrap();
            assert_eq!(usage["input"], body["usage"]["prompt_tokens"], "{name}");
            assert_eq!(
                usage["output"], body["usage"]["completion_tokens"],
                "{name}"
            );
        }
        let summary = host.ledger.summary(Some("local"), 0).unwrap();
        assert_eq!(summary[0].estimated_calls, u64::from(streamed), "{name}");
    }
}

#[tokio::test]
async fn a_streamed_tool_call_with_its_id_in_every_chunk_is_one_call_with_all_its_arguments() {
    let (plain, exchange, _host) = replay("tool").await;
    let body: Value = serde_json::from_str(&exchange.body).unwrap();
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    let expected = json!([{"tool_use": {
        "id": call["id"], "name": "get_weather", "input": call["function"]["arguments"],
    }}]);
    assert_eq!(plain["completion"]["content"], expected, "{plain}");
    assert_eq!(plain["completion"]["stop_reason"], "tool-use");

    // The same call streamed: llama-cpp-python repeats the id and the name
    // in all 12 chunks.
    let (streamed, exchange, _host) = replay("tool-streamed").await;
    let repeats = exchange.body.matches("\"id\": \"call_").count();
    assert!(repeats >= 10, "the corpus shows the quirk: {repeats}");
    let starts: Vec<&Value> = streamed["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d.get("tool").is_some())
        .collect();
    assert_eq!(starts.len(), 1, "one call, one start: {streamed}");
    let completion = &streamed["completion"];
    let input = completion["content"][0]["tool_use"]["input"]
        .as_str()
        .unwrap();
    assert_eq!(input, "{ \"city\": \"Paris, France\"}");
    assert_eq!(completion["content"].as_array().unwrap().len(), 1);
    assert_eq!(completion["stop_reason"], "tool-use");
}

#[tokio::test]
async fn the_second_round_of_a_tool_loop_is_accepted_by_the_real_server() {
    // The assistant's tool-call turn goes out with content "" (null gets a
    // 500 from this server: see tool-round2-null-content.json).
    for name in ["tool-round2", "tool-round2-streamed"] {
        let (seen, exchange, _host) = replay(name).await;
        assert!(seen["completion"].is_object(), "{name}: {seen}");
        assert_eq!(exchange.request["messages"][1]["content"], json!(""));
        assert_eq!(text_of(&seen["completion"]), recorded_answer(&exchange).0);
    }
    let exchanges = corpus::load(&corpus::dir("llama-cpp"));
    let null = exchanges
        .iter()
        .find(|e| e.scenario == "tool-round2-null-content")
        .unwrap();
    assert_eq!(null.status, 500, "what null content gets from this server");
}

#[tokio::test]
async fn real_server_errors_reach_the_guest_typed_and_uncharged() {
    let (seen, _, host) = replay("error-context").await;
    assert_eq!(seen["error_kind"], "invalid-request", "{seen}");
    assert!(
        seen["error"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 4096 tokens"),
        "{seen}"
    );
    // A streamed request past the context: this server answers 200 and an
    // empty stream. Not a silent success, and not charged.
    let (seen, _, host_streamed) = replay("error-context-streamed").await;
    assert_eq!(seen["error_kind"], "unavailable", "{seen}");
    assert!(
        seen["error"]
            .as_str()
            .unwrap()
            .contains("before its first event")
    );
    for host in [host, host_streamed] {
        let usage = host.ledger.summary(Some("local"), 0).unwrap();
        assert_eq!((usage[0].input_tokens, usage[0].output_tokens), (0, 0));
    }
}

#[tokio::test]
async fn a_wrong_path_is_named_without_showing_the_guest_the_url() {
    let exchanges = corpus::load(&corpus::dir("llama-cpp"));
    let server = ReplayServer::start(exchanges).await;
    let host = host().await;
    // A gateway that keeps a token in its path: the operator's log gets the
    // URL, the agent does not.
    let base = format!("http://{}/t/gw-7f3a9c2e51/v2", server.addr);
    let agent = host.agent(
        "local",
        &format!("[models.default]\nprovider = \"openai-compatible\"\nmodel = \"gemma3-270m\"\nbase_url = \"{base}\"\n"),
    );
    let seen = send(
        &agent,
        json!({"binding": "default", "messages": [user("hi")], "max_tokens": 8}),
    )
    .await;
    let error = seen["error"].as_str().unwrap();
    assert!(
        error.contains("POST …/chat/completions answered 404 for model \"gemma3-270m\""),
        "{error}"
    );
    assert!(error.contains("base_url or model id is wrong"), "{error}");
    assert!(
        !error.contains("gw-7f3a9c2e51") && !error.contains("127.0.0.1"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------
// Provider-exact validation.

const ANTHROPIC: &str = "[models.default]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"anthropic-a\"\nbase_url = \"ANTHROPIC_URL\"\n";
const OPENAI: &str = "[models.default]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nkey = \"openai-b\"\nbase_url = \"OPENAI_URL\"\n";

#[tokio::test]
async fn what_a_provider_would_refuse_is_refused_before_sending_naming_the_field() {
    let host = host().await;
    let claude = host.agent("claude", ANTHROPIC);
    let gpt = host.agent("gpt", OPENAI);
    let base = || json!({"binding": "default", "messages": [user("hello")], "max_tokens": 16});
    let cases: Vec<(&Agent, Value, &str)> = vec![
        (
            &claude,
            {
                let mut r = base();
                r["temperature"] = json!(1.5);
                r
            },
            "temperature 1.5 is above 1, the most anthropic accepts",
        ),
        (
            &gpt,
            {
                let mut r = base();
                r["stop"] = json!(["a", "b", "c", "d", "e"]);
                r
            },
            "stop-sequences has 5 entries; openai accepts at most 4",
        ),
        (
            &claude,
            {
                let mut r = base();
                r["tools"] = json!([{"name": "issues.get", "description": "d", "input_schema": {"type": "object"}}]);
                r
            },
            "tools[0]: tool name \"issues.get\" may only contain",
        ),
        (
            &claude,
            {
                let mut r = base();
                r["messages"] = json!([user("hi"), {"role": "user", "content": [{"text": ""}]}]);
                r
            },
            "messages[1].content[0] is an empty text part",
        ),
        (
            &claude,
            {
                let mut r = base();
                r["messages"] = json!([user("hi"), {"role": "assistant", "content": [{"tool_use": {"id": "call.1", "name": "n", "input": {}}}]}, {"role": "user", "content": [{"tool_result": {"tool_use_id": "call.1", "content": "x"}}]}]);
                r
            },
            "messages[1].content[0].id \"call.1\" may only hold letters, digits, `_` and `-` for anthropic",
        ),
        (
            &claude,
            {
                let mut r = base();
                r["messages"] =
                    json!([{"role": "user", "content": [{"text": "a"}, {"text": " \n"}]}]);
                r
            },
            "messages[0].content[1] is only whitespace, which anthropic refuses",
        ),
    ];
    for (agent, request, expected) in cases {
        let seen = send(agent, request).await;
        assert_eq!(seen["error_kind"], "invalid-request", "{seen}");
        let error = seen["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "expected {expected:?} in {error:?}"
        );
    }
    assert!(host.fake.received().is_empty(), "nothing was sent");
    // The same temperature is fine for OpenAI.
    let mut warm = base();
    warm["temperature"] = json!(1.5);
    assert!(send(&gpt, warm).await["completion"].is_object());
}

#[tokio::test]
async fn plain_http_is_for_loopback_or_an_explicit_opt_in() {
    let host = host().await;
    let refused = host
        .load(
            "remote",
            "[models.default]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nkey = \"openai-b\"\nbase_url = \"http://10.20.30.40/v1\"\n",
        )
        .unwrap_err();
    assert!(
        refused.contains("models.default.base_url \"http://10.20.30.40/v1\" is plain http to a host that is not loopback"),
        "{refused}"
    );
    host.load(
        "remote",
        "[models.default]\nprovider = \"openai-compatible\"\nmodel = \"m\"\nbase_url = \"http://10.20.30.40/v1\"\nallow_http = true\n",
    )
    .unwrap();
    let timeouts = host
        .load(
            "slow",
            "[limits]\ndeadline_ms = 5000\n[models.default]\nprovider = \"openai-compatible\"\nmodel = \"m\"\nbase_url = \"http://127.0.0.1:9/v1\"\ntimeouts = { idle_ms = 5000 }\n",
        )
        .unwrap_err();
    assert!(
        timeouts.contains("models.default.timeouts.idle_ms = 5000 must be above 0 and below limits.deadline_ms (5000 ms)"),
        "{timeouts}"
    );
}

// ---------------------------------------------------------------------------
// Time limits.

#[tokio::test]
async fn a_stream_that_goes_quiet_ends_in_a_typed_timeout_after_its_deltas() {
    let host = host().await;
    for (provider, sections) in [("anthropic", ANTHROPIC), ("openai", OPENAI)] {
        let agent = host.agent(
            provider,
            &format!("{sections}timeouts = {{ idle_ms = 300 }}\n"),
        );
        let started = std::time::Instant::now();
        let seen = send(
            &agent,
            json!({"binding": "default", "messages": [user("stall-mid")], "max_tokens": 40, "stream": true}),
        )
        .await;
        assert_eq!(seen["timeout"], "idle", "{provider}: {seen}");
        assert_eq!(seen["error_kind"], "timeout");
        let text: String = seen["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["text"].as_str())
            .collect();
        assert_eq!(
            text, "Hello, I was saying",
            "{provider}: every delta, then the error"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    // Charged as a stream that may have generated up to max-tokens, and
    // marked as estimated.
    let usage = host.ledger.summary(Some("openai"), 0).unwrap();
    assert_eq!((usage[0].output_tokens, usage[0].estimated_calls), (40, 1));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_on_first_byte_or_the_deadline() {
    let host = host().await;
    let agent = host.agent(
        "first-byte",
        &format!("{OPENAI}timeouts = {{ first_byte_ms = 300 }}\n"),
    );
    for stream in [false, true] {
        let seen = send(
            &agent,
            json!({"binding": "default", "messages": [user("stall")], "max_tokens": 8, "stream": stream}),
        )
        .await;
        assert_eq!(seen["timeout"], "first-byte", "{seen}");
    }
    // With the default limits above a short event deadline, the call gives
    // up before the deadline so the guest still hears of it.
    let agent = host.agent(
        "deadline",
        &format!("[limits]\ndeadline_ms = 1500\n{ANTHROPIC}"),
    );
    let report = agent
        .invoke(Event::new(
            "test",
            "request",
            json!({"binding": "default", "messages": [user("stall")], "max_tokens": 8}),
        ))
        .await;
    let seen: Value = serde_json::from_str(report.outcome.as_ref().expect("not a trap")).unwrap();
    assert_eq!(seen["timeout"], "deadline", "{seen}");
}

// ---------------------------------------------------------------------------
// Fallbacks.

#[tokio::test]
async fn a_failing_model_falls_back_within_the_same_call_each_attempt_charged() {
    let host = host().await;
    let agent = host.agent(
        "resilient",
        "[models.default]\nprovider = \"openai\"\nmodel = \"fake-503\"\nkey = \"openai-b\"\nbase_url = \"OPENAI_URL\"\n\
         [[models.default.fallbacks]]\nprovider = \"openai\"\nmodel = \"fake-429\"\nkey = \"openai-b\"\nbase_url = \"OPENAI_URL\"\n\
         [[models.default.fallbacks]]\nprovider = \"openai\"\nmodel = \"fake-stall\"\nkey = \"openai-b\"\nbase_url = \"OPENAI_URL\"\ntimeouts = { first_byte_ms = 300 }\n\
         [[models.default.fallbacks]]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"anthropic-a\"\nbase_url = \"ANTHROPIC_URL\"\n",
    );
    for stream in [false, true] {
        let seen = send(
            &agent,
            json!({"binding": "default", "messages": [user("hello")], "max_tokens": 16, "stream": stream}),
        )
        .await;
        let completion = &seen["completion"];
        assert_eq!(completion["provider"], "anthropic", "{seen}");
        assert_eq!(completion["fallback"], 3);
        assert_eq!(completion["model"], "claude-haiku-4-5-20260101");
        assert_eq!(text_of(completion), "Hello from anthropic");
    }
    // One request to each model per call: a model with a fallback after it
    // is not retried.
    let models: Vec<String> = host
        .fake
        .received()
        .iter()
        .map(|r| r.body["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        models,
        ["fake-503", "fake-429", "fake-stall", "claude-haiku-4-5"].repeat(2)
    );
    // Every attempt is a usage record, with its outcome and position.
    host.ledger.flush().unwrap();
    let usage = host.ledger.summary(Some("resilient"), 0).unwrap();
    let calls: u64 = usage.iter().map(|u| u.calls).sum();
    assert_eq!(calls, 8);
    let stalled = usage.iter().find(|u| u.model == "fake-stall").unwrap();
    assert!(
        stalled.output_tokens > 0,
        "a timed-out attempt may have run: charged"
    );
    let refused = usage.iter().find(|u| u.model == "fake-503").unwrap();
    assert_eq!((refused.input_tokens, refused.output_tokens), (0, 0));
}

#[tokio::test]
async fn fallbacks_do_not_hide_a_bad_request_and_the_last_error_is_returned() {
    let host = host().await;
    let agent = host.agent(
        "chain",
        "[models.default]\nprovider = \"openai\"\nmodel = \"fake-503\"\nkey = \"openai-b\"\nbase_url = \"OPENAI_URL\"\n\
         [[models.default.fallbacks]]\nprovider = \"anthropic\"\nmodel = \"fake-401\"\nkey = \"anthropic-a\"\nbase_url = \"ANTHROPIC_URL\"\n",
    );
    // Valid for OpenAI, not for the Anthropic fallback: refused up front.
    let seen = send(
        &agent,
        json!({"binding": "default", "messages": [user("hello")], "max_tokens": 16, "temperature": 1.5}),
    )
    .await;
    assert!(
        seen["error"]
            .as_str()
            .unwrap()
            .contains("temperature 1.5 is above 1, the most anthropic (fallback 1) accepts"),
        "{seen}"
    );
    assert!(host.fake.received().is_empty());
    // Every model fails: the guest gets the last one's error.
    let seen = send(
        &agent,
        json!({"binding": "default", "messages": [user("hello")], "max_tokens": 16}),
    )
    .await;
    assert_eq!(seen["error_kind"], "provider", "{seen}");
    assert!(
        seen["error"]
            .as_str()
            .unwrap()
            .contains("fake-401 says 401"),
        "{seen}"
    );
}

// ---------------------------------------------------------------------------
// Usage: estimates, prompt caching.

#[tokio::test]
async fn a_server_without_token_counts_is_charged_an_estimate_that_is_marked() {
    let host = host().await;
    let agent = host.agent(
        "local",
        "[models.default]\nprovider = \"openai-compatible\"\nmodel = \"llama3\"\nbase_url = \"OPENAI_URL\"\n",
    );
    for stream in [false, true] {
        let seen = send(
            &agent,
            json!({"binding": "default", "messages": [user("no-usage please")], "max_tokens": 50, "stream": stream}),
        )
        .await;
        let usage = &seen["completion"]["usage"];
        assert_eq!(usage["estimated"], true, "{seen}");
        assert!(usage["input"].as_u64().unwrap() > 0);
        let output = usage["output"].as_u64().unwrap();
        assert!((1..=50).contains(&output), "{usage}");
    }
    let summary = host.ledger.summary(Some("local"), 0).unwrap();
    assert_eq!(summary[0].estimated_calls, 2);
    // A stream that ends without [DONE] but said why it stopped is whole.
    let seen = send(
        &agent,
        json!({"binding": "default", "messages": [user("no-done")], "max_tokens": 50, "stream": true}),
    )
    .await;
    assert_eq!(text_of(&seen["completion"]), "Hello from openai", "{seen}");
    assert_eq!(seen["completion"]["usage"]["estimated"], false);
}

#[tokio::test]
async fn an_anthropic_stream_without_message_stop_is_whole_too() {
    let host = host().await;
    let agent = host.agent("claude", ANTHROPIC);
    let seen = send(
        &agent,
        json!({"binding": "default", "messages": [user("no-done")], "max_tokens": 50, "stream": true}),
    )
    .await;
    assert_eq!(
        text_of(&seen["completion"]),
        "Hello from anthropic",
        "{seen}"
    );
}

#[tokio::test]
async fn prompt_cache_breakpoints_reach_anthropic_and_cached_tokens_are_priced() {
    let host = host().await;
    let agent = host.agent("claude", ANTHROPIC);
    let seen = send(
        &agent,
        json!({
            "binding": "default", "system": "You are terse.", "system_cache": "1h",
            "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}, "cache": "1h"}],
            "messages": [
                {"role": "user", "content": [{"text": "cached history"}], "cache": "5m"},
                {"role": "assistant", "content": [{"text": "ok"}]},
                user("cached please"),
            ],
            "max_tokens": 32,
        }),
    )
    .await;
    let usage = &seen["completion"]["usage"];
    assert_eq!(
        usage,
        &json!({"input": 5012, "output": 7, "cache_read": 3000, "cache_write": 2000, "estimated": false}),
        "{seen}"
    );
    let body = &host.fake.received()[0].body;
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    );
    assert_eq!(
        body["tools"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    assert_eq!(
        body["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert!(
        body["messages"][2]["content"][0]
            .get("cache_control")
            .is_none()
    );
    // Haiku 4.5: $1 in, $5 out per million; reads at $0.10, five-minute
    // writes $1.25, one-hour writes $2.
    let expected_micros =
        (12.0 * 1.0 + 3000.0 * 0.1 + 500.0 * 1.25 + 1500.0 * 2.0 + 7.0 * 5.0) as u64;
    let summary = host.ledger.summary(Some("claude"), 0).unwrap();
    assert_eq!(summary[0].cost_micros, expected_micros);
    assert_eq!(
        (summary[0].cache_read_tokens, summary[0].cache_write_tokens),
        (3000, 2000)
    );

    // OpenAI reports cached reads inside prompt_tokens.
    let gpt = host.agent("gpt", OPENAI);
    let seen = send(
        &gpt,
        json!({"binding": "default", "messages": [user("cached please")], "max_tokens": 32, "stream": true}),
    )
    .await;
    assert_eq!(seen["completion"]["usage"]["cache_read"], 5000, "{seen}");
    assert_eq!(seen["completion"]["usage"]["input"], 5012);
}

// ---------------------------------------------------------------------------
// The providers' own schemas.

#[tokio::test]
async fn every_body_the_host_builds_matches_the_providers_openapi_documents() {
    if !schemas::available() {
        eprintln!("skipped: the providers' OpenAPI documents are not installed (see .ci/run)");
        return;
    }
    let host = host().await;
    let claude = host.agent("claude", ANTHROPIC);
    let gpt = host.agent("gpt", OPENAI);
    let local = host.agent(
        "local",
        "[models.default]\nprovider = \"openai-compatible\"\nmodel = \"llama3\"\nbase_url = \"OPENAI_URL\"\n",
    );
    let strict = host.agent(
        "strict",
        "[models.default]\nprovider = \"openai-compatible\"\nmodel = \"qwen\"\nbase_url = \"OPENAI_URL\"\ndialect = \"openai\"\n",
    );
    let schema =
        json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]});
    let everything = json!({
        "binding": "default", "system": "Be brief.", "system_cache": "5m", "max_tokens": 64, "temperature": 0.3,
        "stop": ["END", "STOP"],
        "tools": [
            {"name": "lookup", "description": "Looks up", "input_schema": schema, "cache": "1h"},
            {"name": "get-time", "description": "", "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"tool": "lookup"},
        "messages": [
            {"role": "user", "content": [{"text": "Hello"}, {"text": "world"}], "cache": "5m"},
            {"role": "assistant", "content": [{"tool_use": {"id": "toolu_01", "name": "lookup", "input": {"q": "x"}}}]},
            {"role": "user", "content": [
                {"tool_result": {"tool_use_id": "toolu_01", "content": "42", "is_error": false}},
                {"text": "and then?"},
            ]},
            {"role": "assistant", "content": [{"text": "Thinking"}, {"tool_use": {"id": "toolu_02", "name": "get-time", "input": {}}}]},
            {"role": "user", "content": [{"tool_result": {"tool_use_id": "toolu_02", "content": "noon", "is_error": true}}]},
        ],
    });
    let variants = [
        json!({"tool_choice": "auto"}),
        json!({"tool_choice": "none"}),
        json!({"tool_choice": "any"}),
        json!({"tool_choice": null, "stop": [], "temperature": null, "system": null, "system_cache": null}),
    ];
    let before = schemas::report().0;
    for agent in [&claude, &gpt, &local, &strict] {
        for stream in [false, true] {
            let mut requests = vec![everything.clone()];
            for variant in &variants {
                let mut request = everything.clone();
                for (k, v) in variant.as_object().unwrap() {
                    request[k] = v.clone();
                }
                requests.push(request);
            }
            for mut request in requests {
                request["stream"] = json!(stream);
                let seen = send(agent, request.clone()).await;
                assert!(seen["completion"].is_object(), "{request} → {seen}");
            }
        }
    }
    let (checked, failures) = schemas::report();
    assert!(checked >= before + 40, "{checked} bodies checked");
    assert!(failures.is_empty(), "{failures:#?}");
}
