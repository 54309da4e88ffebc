//! Bring-your-own-key inference end to end: a real guest, the vault, the
//! ledger and the leak guard, against fake Anthropic and OpenAI servers on
//! loopback that record what they receive.

use std::path::Path;
use std::sync::Arc;

use clawcage::db::Database;
use clawcage::ledger::Ledger;
use clawcage::pricing::PriceTable;
use clawcage::providers::binding::Services;
use clawcage::secret::Secret;
use clawcage::vault::{MasterKey, Vault};
use clawcage::{Agent, Cage, EngineOptions, Event, Manifest};
use clawcage_tests::fake_provider::FakeProvider;
use clawcage_tests::{HOSTILE, test_options};
use serde_json::{Value, json};

const KEY_A: &str = "sk-ant-api03-wIl9DV4WTFuq1vq3ozrKT4AqNG5vp2PV9o5YQEz1lgkn9BEMZyUMLE29NMWyFQ483xzzlt2TRkIEn4qRciU1ISC4uXDjdAA";
const KEY_B: &str = "sk-proj-jMatL4gJuqG1aOEAsyEuxZenoJQNmd8V0oMEhS4wMLD0wPIXPXBb4R6B";

struct Host {
    _dir: tempfile::TempDir,
    vault: Arc<Vault>,
    ledger: Ledger,
    services: Arc<Services>,
    fake: FakeProvider,
}

async fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(&dir.path().join("state")).unwrap());
    let vault = Arc::new(Vault::open(db.clone(), MasterKey::generate()).unwrap());
    vault
        .add("anthropic-a", "anthropic", &Secret::from(KEY_A.to_string()))
        .unwrap();
    vault
        .add("openai-b", "openai", &Secret::from(KEY_B.to_string()))
        .unwrap();
    let ledger = Ledger::new(db);
    let services =
        Arc::new(Services::new(vault.clone(), ledger.clone(), PriceTable::builtin()).unwrap());
    Host {
        _dir: dir,
        vault,
        ledger,
        services,
        fake: FakeProvider::start().await,
    }
}

impl Host {
    fn agent_with(&self, name: &str, sections: &str, options: EngineOptions) -> Agent {
        let text = format!(
            "name = {name:?}\n[component]\npath = {HOSTILE:?}\n{}",
            sections
                .replace("ANTHROPIC_URL", &self.fake.anthropic_url())
                .replace("OPENAI_URL", &self.fake.openai_url())
        );
        let manifest = Manifest::from_toml(&text).unwrap();
        Cage::new(options)
            .unwrap()
            .with_services(self.services.clone())
            .load_manifest(&manifest, Path::new("/"))
            .unwrap()
    }

    fn agent(&self, name: &str, sections: &str) -> Agent {
        self.agent_with(name, sections, test_options())
    }
}

const ANTHROPIC: &str = "[models.default]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"anthropic-a\"\nbase_url = \"ANTHROPIC_URL\"\n";
const OPENAI: &str = "[models.default]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nkey = \"openai-b\"\nbase_url = \"OPENAI_URL\"\n";

async fn ask(agent: &Agent, binding: &str, prompt: &str, stream: bool) -> Value {
    let event = Event::new(
        "test",
        "ask",
        json!({"binding": binding, "prompt": prompt, "stream": stream}),
    );
    let outcome = agent
        .invoke(event)
        .await
        .outcome
        .expect("the ask fixture always answers");
    serde_json::from_str(&outcome).unwrap()
}

/// Fails if `text` contains a key or any run of it long enough to count
/// as a leak.
fn assert_no_key(text: &str) {
    for key in [KEY_A, KEY_B] {
        for window in key.as_bytes().windows(clawcage::leak::WINDOW) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(!text.contains(window), "{text:?} leaks {window:?}");
        }
    }
}

#[tokio::test]
async fn the_right_key_reaches_the_right_provider_for_each_agent() {
    let host = host().await;
    let alpha = host.agent("alpha", ANTHROPIC);
    let beta = host.agent("beta", OPENAI);
    let a = ask(&alpha, "default", "hello there", false).await;
    assert_eq!(
        a,
        json!({"text": "Hello from anthropic", "model": "claude-haiku-4-5-20260101", "tool_inputs": [], "tool_ids": [], "deltas": [], "output_tokens": 7})
    );
    let b = ask(&beta, "default", "hello there", false).await;
    assert_eq!(b["text"], "Hello from openai");

    let received = host.fake.received();
    assert_eq!(received.len(), 2);
    let (to_anthropic, to_openai) = (&received[0], &received[1]);
    assert_eq!(to_anthropic.path, "/v1/messages");
    assert_eq!(to_anthropic.header("x-api-key"), Some(KEY_A));
    assert_eq!(to_anthropic.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(to_anthropic.header("authorization"), None);
    assert_eq!(
        to_anthropic.body,
        json!({"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]})
    );
    assert_eq!(to_openai.path, "/v1/chat/completions");
    assert_eq!(
        to_openai.header("authorization"),
        Some(format!("Bearer {KEY_B}").as_str())
    );
    assert_eq!(to_openai.header("x-api-key"), None);
    assert_eq!(
        to_openai.body,
        json!({"model": "gpt-4o-mini", "max_completion_tokens": 100, "messages": [{"role": "user", "content": "hello there"}]})
    );

    // Usage is recorded per agent, model and key, and priced.
    let usage = host.ledger.summary(None, 0).unwrap();
    assert_eq!(usage.len(), 2);
    assert_eq!(
        (
            usage[0].agent.as_str(),
            usage[0].key_id.as_deref(),
            usage[0].input_tokens,
            usage[0].output_tokens
        ),
        ("alpha", Some("anthropic-a"), 12, 7)
    );
    assert_eq!(usage[0].cost_micros, 12 + 7 * 5); // $1 / $5 per million tokens
    assert_eq!(usage[1].agent, "beta");
}

#[tokio::test]
async fn an_agent_cannot_open_another_agents_binding() {
    let host = host().await;
    let _alpha = host.agent("alpha", ANTHROPIC);
    let beta = host.agent("beta", &OPENAI.replace("[models.default]", "[models.fast]"));
    let answer = ask(&beta, "default", "hello", false).await;
    assert_eq!(
        answer,
        json!({"error": "not granted: model binding \"default\" is not granted to this agent"})
    );
    assert!(host.fake.received().is_empty());
}

#[tokio::test]
async fn rotation_applies_to_the_next_call_and_revocation_stops_calls() {
    let host = host().await;
    let alpha = host.agent("alpha", ANTHROPIC);
    ask(&alpha, "default", "hello", false).await;
    host.vault
        .rotate(
            "anthropic-a",
            &Secret::from("sk-ant-api03-ROTATEDsR0PfbopcwbrdfoXeZF5fjTrbzrajYU5bkAckVSyfjgUFe0W6hJWxMdmWMCTUuhTIRnlu09x0FMNr7N5fDMUEgAA".to_string()),
        )
        .unwrap();
    ask(&alpha, "default", "hello", false).await;
    let received = host.fake.received();
    assert_eq!(received[0].header("x-api-key"), Some(KEY_A));
    assert_eq!(
        received[1].header("x-api-key"),
        Some(
            "sk-ant-api03-ROTATEDsR0PfbopcwbrdfoXeZF5fjTrbzrajYU5bkAckVSyfjgUFe0W6hJWxMdmWMCTUuhTIRnlu09x0FMNr7N5fDMUEgAA"
        )
    );

    host.vault.revoke("anthropic-a").unwrap();
    let answer = ask(&alpha, "default", "hello", false).await;
    assert_eq!(
        answer,
        json!({
            "error": "unavailable: key \"anthropic-a\" for binding \"default\" was revoked",
            "error_kind": "unavailable",
            "deltas": [],
        })
    );
    assert_eq!(
        host.fake.received().len(),
        2,
        "a revoked key must not reach the provider"
    );
}

#[tokio::test]
async fn keys_echoed_by_a_provider_never_reach_the_guest() {
    let host = host().await;
    let alpha = host.agent("alpha", ANTHROPIC);
    let beta = host.agent("beta", OPENAI);
    for (name, agent) in [("alpha", &alpha), ("beta", &beta)] {
        for (prompt, stream) in [
            ("echo-key", false),
            ("error-echo", false),
            ("echo-key", true),
        ] {
            let answer = ask(agent, "default", prompt, stream).await;
            let message = answer["error"].as_str().unwrap();
            assert!(message.starts_with("leak blocked: "), "{message}");
            assert_no_key(&answer.to_string());
            // Nothing of the answer is delivered, and no delta of a stream
            // carried a byte of the key.
            assert!(answer.get("text").is_none(), "{answer}");
            host.services.suspensions.resume(name, None).unwrap();
        }
    }
    // The echoing provider did receive the real key: the check happened on
    // the way back, not by sending something else.
    assert!(
        host.fake
            .received()
            .iter()
            .any(|r| r.header("x-api-key") == Some(KEY_A))
    );
}

#[tokio::test]
async fn overload_and_rate_limits_are_retried_honouring_retry_after() {
    let host = host().await;
    let alpha = host.agent("alpha", ANTHROPIC);
    let answer = ask(&alpha, "default", "overloaded-once", false).await;
    assert_eq!(answer["text"], "Hello from anthropic", "{answer}");
    assert_eq!(host.fake.received().len(), 2);

    let host = host_again().await;
    let beta = host.agent("beta", OPENAI);
    let answer = ask(&beta, "default", "rate-limited-once", false).await;
    assert_eq!(answer["text"], "Hello from openai", "{answer}");
    assert_eq!(host.fake.received().len(), 2);

    let answer = ask(&beta, "default", "always-overloaded", false).await;
    assert_eq!(
        answer["error"],
        "unavailable: openai is overloaded (HTTP 503): overloaded"
    );
    assert_eq!(
        host.fake.received().len(),
        2 + clawcage::providers::http::MAX_ATTEMPTS as usize
    );
}

async fn host_again() -> Host {
    host().await
}

#[tokio::test]
async fn streams_deliver_unmerged_deltas_and_settle_from_the_final_usage() {
    let host = host().await;
    for (sections, name) in [
        (ANTHROPIC, "Hello from anthropic"),
        (OPENAI, "Hello from openai"),
    ] {
        let agent = host.agent("streamer", sections);
        let answer = ask(&agent, "default", "hello", true).await;
        let deltas: Vec<&str> = answer["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["text"].as_str().unwrap())
            .collect();
        // The fake sends thirds; each is passed on as it arrives but for
        // the last 7 bytes so far, which are always held back until the
        // next delta or the end of the part.
        let hold = clawcage::leak::STREAM_HOLD_BYTES;
        let ends = [name.len() / 3, 2 * name.len() / 3, name.len()];
        let mut expected = Vec::new();
        let mut passed = 0;
        for end in ends {
            if end > passed + hold {
                expected.push(&name[passed..end - hold]);
                passed = end - hold;
            }
        }
        expected.push(&name[passed..]);
        assert_eq!(deltas, expected, "deltas are passed on as they arrive");
        assert_eq!(answer["text"], name);
        assert_eq!(answer["output_tokens"], 7);
    }
    let usage = host.ledger.summary(Some("streamer"), 0).unwrap();
    assert!(
        usage
            .iter()
            .all(|u| u.input_tokens == 12 && u.output_tokens == 7),
        "{usage:?}"
    );
    // The stream asked for usage in its final chunk.
    let to_openai = host
        .fake
        .received()
        .into_iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(
        to_openai.body["stream_options"],
        json!({"include_usage": true})
    );
}

#[tokio::test]
async fn a_streamed_tool_use_arrives_in_pieces_and_assembled() {
    let host = host().await;
    let agent = host.agent("alpha", ANTHROPIC);
    let answer = ask(&agent, "default", "tool", true).await;
    // The input is passed on whole, checked as JSON, when its part ends.
    assert_eq!(
        answer["deltas"],
        json!([{"tool": "lookup", "id": "toolu_1"}, {"input": "{\"q\": \"x\"}"}])
    );
    // The assembled input is the pieces joined.
    assert_eq!(answer["tool_inputs"], json!(["{\"q\": \"x\"}"]));
}

#[tokio::test]
async fn a_cut_stream_is_an_error_and_is_charged_its_worst_case_marked_estimated() {
    let host = host().await;
    let agent = host.agent("alpha", ANTHROPIC);
    let answer = ask(&agent, "default", "cut", true).await;
    assert_eq!(
        answer["error"], "unavailable: the stream ended before the completion finished",
        "{answer}"
    );
    let usage = host.ledger.summary(Some("alpha"), 0).unwrap();
    assert_eq!(
        usage[0].output_tokens, 100,
        "a stream cut midway is charged the whole max-tokens"
    );
    assert_eq!(usage[0].estimated_calls, 1, "and the charge is marked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_never_overshoot_a_budget_for_ten() {
    let host = host().await;
    // Each call reserves its worst case: the body's bytes with an allowance
    // for the chat template, plus max-tokens (100). A one-token budget
    // refuses the call and says how much that is.
    let probe = host.agent(
        "probe",
        &format!("{ANTHROPIC}[budget]\ntokens_per_day = 1\n"),
    );
    let refusal = ask(&probe, "default", "slow", false).await;
    let per_call: u64 = refusal["error"]
        .as_str()
        .unwrap()
        .strip_prefix("budget exceeded: this call could use ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{refusal}"));
    let budget = format!("[budget]\ntokens_per_day = {}\n", per_call * 10);
    let agent = Arc::new(host.agent_with(
        "alpha",
        &format!("{ANTHROPIC}{budget}"),
        EngineOptions {
            max_concurrent_instances: 64,
            ..test_options()
        },
    ));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let agent = agent.clone();
            tokio::spawn(async move { ask(&agent, "default", "slow", false).await })
        })
        .collect();
    let mut answered = 0;
    let mut refused = 0;
    for call in calls {
        let answer = call.await.unwrap();
        if answer["text"] == "Hello from anthropic" {
            answered += 1;
        } else {
            assert!(
                answer["error"].as_str().unwrap().starts_with(&format!(
                    "budget exceeded: this call could use {per_call} tokens"
                )),
                "{answer}"
            );
            refused += 1;
        }
    }
    assert_eq!((answered, refused), (10, 40));
    assert_eq!(
        host.fake.received().len(),
        10,
        "refused calls must not reach the provider"
    );
    let spent: u64 = host
        .ledger
        .summary(Some("alpha"), 0)
        .unwrap()
        .iter()
        .map(|u| u.input_tokens + u.output_tokens)
        .sum();
    assert!(spent <= per_call * 10);
}

#[tokio::test]
async fn binding_caps_are_enforced_before_anything_is_sent() {
    let host = host().await;
    let agent = host.agent("alpha", &format!("{ANTHROPIC}max_tokens = 50\n"));
    let answer = ask(&agent, "default", "hello", false).await;
    assert_eq!(
        answer["error"],
        "invalid request: max-tokens 100 is more than the 50 allowed for binding \"default\""
    );
    assert!(host.fake.received().is_empty());
}

#[test]
fn manifests_with_bindings_are_checked_against_the_vault() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = runtime.block_on(host());
    let load = |sections: &str| {
        let sections = sections.replace("ANTHROPIC_URL", &host.fake.anthropic_url());
        let text = format!("name = \"x\"\n[component]\npath = {HOSTILE:?}\n{sections}");
        let manifest = Manifest::from_toml(&text).unwrap();
        Cage::new(test_options())
            .unwrap()
            .with_services(host.services.clone())
            .load_manifest(&manifest, Path::new("/"))
            .map(|_| ())
    };
    let err = load(&ANTHROPIC.replace("anthropic-a", "missing"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("models.default.key = \"missing\" is not in the vault")
            && err.contains("clawcage key add missing"),
        "{err}"
    );
    let err = load(&ANTHROPIC.replace("anthropic-a", "openai-b"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("belongs to openai, not anthropic"), "{err}");
    let err = load("[models.default]\nprovider = \"mystery\"\nmodel = \"m\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not anthropic, openai or openai-compatible"),
        "{err}"
    );
    let err = load("[models.default]\nprovider = \"openai-compatible\"\nmodel = \"llama3\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("base_url is required"), "{err}");
    // Without a vault, bindings are refused with directions.
    let manifest = Manifest::from_toml(&format!(
        "name = \"x\"\n[component]\npath = {HOSTILE:?}\n{ANTHROPIC}"
    ))
    .unwrap();
    let err = Cage::new(test_options())
        .unwrap()
        .load_manifest(&manifest, Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("clawcage init"), "{err}");
}

/// The triage sample runs a real tool-use loop against the fake provider;
/// recording that run must give exactly the cassette the sample ships (set
/// `CLAWCAGE_UPDATE_CASSETTES=1` to rewrite it after changing the agent).
/// An agent that holds a binding still finds no key anywhere it can look:
/// not in its environment, arguments or files, and not in what the host
/// writes into its memory (answers and errors, checked above).
#[tokio::test]
async fn a_guest_with_a_binding_finds_no_key_in_its_environment() {
    let host = host().await;
    let agent = host.agent("alpha", ANTHROPIC);
    let report = agent
        .invoke(Event::new("test", "ambient", json!({})))
        .await
        .outcome
        .unwrap();
    assert_no_key(&report);
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        (report["env"].as_u64(), report["args"].as_u64()),
        (Some(0), Some(0))
    );
    for denied in ["read_root", "read_passwd", "tcp_connect", "dns"] {
        assert!(
            report[denied].as_str().unwrap().starts_with("Err("),
            "{denied}: {report}"
        );
    }
    let info = ask(&agent, "default", "hello", false).await;
    assert_no_key(&info.to_string());
}
