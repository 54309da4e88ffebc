//! Key containment under attack: a hostile guest, built from source, against
//! fake providers and tools that echo the credential they receive in every
//! way the host must recognise. For each class of attack the guest must get
//! a `leak-blocked` error and no run of 8 private bytes of the key by any
//! path; the binding or grant is then suspended until an operator resumes
//! it; and nothing the guest sees depends on secrets its call did not
//! carry.

use std::path::Path;
use std::sync::Arc;

use clawcage::db::Database;
use clawcage::ledger::Ledger;
use clawcage::pricing::PriceTable;
use clawcage::providers::binding::Services;
use clawcage::secret::Secret;
use clawcage::suspend::Capability;
use clawcage::vault::{MasterKey, Vault};
use clawcage::{Agent, Cage, Event, Manifest};
use clawcage_tests::fake_provider::FakeProvider;
use clawcage_tests::fake_tools::FakeTools;
use clawcage_tests::{HOSTILE, keys, test_options};
use serde_json::{Value, json};

/// The shortest run of private bytes that must never reach the guest.
const RUN: usize = 8;

struct Host {
    _dir: tempfile::TempDir,
    vault: Arc<Vault>,
    services: Arc<Services>,
    provider: FakeProvider,
    tools: FakeTools,
}

/// The keys of this suite: 108, 64 and 40 bytes.
struct Keys {
    anthropic: String,
    openai: String,
    compatible: String,
    api: String,
    webhook: String,
    other_slack: String,
}

fn suite_keys() -> Keys {
    Keys {
        anthropic: keys::anthropic(11),
        openai: keys::openai(12),
        compatible: keys::compatible(13),
        api: format!(
            "wx-{}/{}",
            keys::random_chars(14, 20),
            keys::random_chars(15, 20)
        ),
        webhook: keys::webhook(16),
        other_slack: keys::slack(17),
    }
}

async fn host(keys: &Keys) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(&dir.path().join("state")).unwrap());
    let vault = Arc::new(Vault::open(db.clone(), MasterKey::generate()).unwrap());
    for (id, provider, secret) in [
        ("anthropic-a", "anthropic", &keys.anthropic),
        ("openai-b", "openai", &keys.openai),
        ("local-c", "openai-compatible", &keys.compatible),
        ("api-key", "http", &keys.api),
        // Secrets of other agents that no call of the guest carries.
        ("other-hook", "webhook", &keys.webhook),
        ("other-slack", "slack", &keys.other_slack),
    ] {
        vault
            .add(id, provider, &Secret::from(secret.clone()))
            .unwrap();
    }
    let services = Arc::new(
        Services::new(
            vault.clone(),
            Ledger::new(db.clone()),
            PriceTable::builtin(),
        )
        .unwrap()
        .with_suspensions(clawcage::suspend::Suspensions::open(db).unwrap()),
    );
    Host {
        _dir: dir,
        vault,
        services,
        provider: FakeProvider::start().await,
        tools: FakeTools::start().await,
    }
}

impl Host {
    fn agent(&self, name: &str) -> Agent {
        let port = self.tools.addr.port();
        let text = format!(
            r#"name = {name:?}
[component]
path = {HOSTILE:?}

[models.anthropic]
provider = "anthropic"
model = "claude-haiku-4-5"
key = "anthropic-a"
base_url = "{anthropic}"

[models.openai]
provider = "openai"
model = "gpt-4o-mini"
key = "openai-b"
base_url = "{openai}"

[models.local]
provider = "openai-compatible"
model = "local-model"
key = "local-c"
base_url = "{openai}"

[tools.api]
kind = "http"
credential = "api-key"
credential_header = "x-api-key"
credential_format = "{{credential}}"
actions = ["request"]
rules = [{{ methods = ["GET"], url = "http://127.0.0.1:{port}/api/v1/" }}]
allow_http = ["127.0.0.1"]
allow_private = ["127.0.0.1"]
"#,
            anthropic = self.provider.anthropic_url(),
            openai = self.provider.openai_url(),
        );
        Cage::new(test_options())
            .unwrap()
            .with_services(self.services.clone())
            .load_manifest(&Manifest::from_toml(&text).unwrap(), Path::new("/"))
            .unwrap()
    }

    fn resume(&self, agent: &str) {
        self.services.suspensions.resume(agent, None).unwrap();
    }
}

async fn run(agent: &Agent, kind: &str, payload: Value) -> Value {
    let outcome = agent
        .invoke(Event::new("test", kind, payload))
        .await
        .outcome
        .expect("the fixture always answers");
    serde_json::from_str(&outcome).unwrap()
}

async fn ask(agent: &Agent, binding: &str, prompt: &str, stream: bool) -> Value {
    run(
        agent,
        "ask",
        json!({"binding": binding, "prompt": prompt, "stream": stream}),
    )
    .await
}

async fn api(agent: &Agent, path: &str, port: u16) -> Value {
    run(
        agent,
        "tool-call",
        json!({"tool": "api", "action": "request", "input": {
            "method": "GET", "url": format!("http://127.0.0.1:{port}/api/v1/{path}"),
        }}),
    )
    .await
}

/// The private part of a test key: what follows its public prefix (a
/// Slack token's team and bot ids are public too, and so is the `AA` that
/// ends every Anthropic key).
fn private_part(key: &str) -> &str {
    if let Some(rest) = key.strip_prefix("sk-ant-api03-") {
        return rest.strip_suffix("AA").unwrap_or(rest);
    }
    for prefix in ["sk-proj-", "secret_", "ghp_", "wx-"] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return rest;
        }
    }
    if key.starts_with("xoxb-") {
        return &key[key.rfind('-').unwrap() + 1..];
    }
    key
}

/// Every way a guest could read the strings it got: as they are, with
/// `\uXXXX`, `\/` and `%XX` escapes decoded, all joined, and all joined
/// with everything but letters and digits dropped.
fn readings(report: &Value) -> Vec<String> {
    fn strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                out.push(k.clone());
                strings(v, out);
            }),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(report, &mut all);
    let joined = all.concat();
    let mut readings = all;
    readings.push(report.to_string());
    readings.push(decode(&joined));
    readings.push(
        decode(&joined)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect(),
    );
    readings.push(joined);
    readings
}

/// A test's own decoder of JSON and percent escapes.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |from: usize, len: usize| {
            text.get(from..from + len)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        if bytes[i] == b'\\'
            && bytes.get(i + 1) == Some(&b'u')
            && let Some(code) = hex(i + 2, 4)
        {
            let mut buffer = [0; 4];
            let c = char::from_u32(code).unwrap_or('?');
            out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            i += 6;
            continue;
        }
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'/') {
            out.push(b'/');
            i += 2;
            continue;
        }
        if bytes[i] == b'%'
            && let Some(code) = hex(i + 1, 2)
        {
            out.push(code as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fails if any reading of `report` holds a run of [`RUN`] private bytes
/// of `key`.
fn assert_no_run(report: &Value, key: &str, case: &str) {
    let private = private_part(key);
    for reading in readings(report) {
        for window in private.as_bytes().windows(RUN) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(
                !reading.contains(window),
                "{case}: {window:?} of the key reached the guest in {reading:?}"
            );
        }
    }
}

fn assert_blocked(report: &Value, case: &str) {
    let kind = report["error_kind"]
        .as_str()
        .or(report["error"].as_str().filter(|e| *e == "leak-blocked"));
    assert_eq!(kind, Some("leak-blocked"), "{case}: {report}");
}

#[tokio::test]
async fn echoed_keys_fail_the_call_and_no_private_byte_reaches_the_guest() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let agent = host.agent("prober");
    let cases = [
        ("anthropic", &keys.anthropic),
        ("openai", &keys.openai),
        ("local", &keys.compatible),
    ];
    let scenarios = [
        "echo-key",
        "echo-bytes",
        "echo-halves",
        "echo-blocks",
        "echo-escaped",
        "echo-model",
        "echo-tool",
        "echo-tool-split",
        "error-echo",
        "error-offset",
    ];
    for (binding, key) in cases {
        for scenario in scenarios {
            for stream in [false, true] {
                let case = format!("{binding} {scenario} stream={stream}");
                let report = ask(&agent, binding, scenario, stream).await;
                assert_blocked(&report, &case);
                assert_no_run(&report, key, &case);
                // Suspended: even a harmless question now gets the same
                // answer, so the block told the guest nothing new.
                let after = ask(&agent, binding, "hello", stream).await;
                assert_blocked(&after, &format!("{case}, then hello"));
                assert!(host.services.suspensions.is_suspended(
                    "prober",
                    Capability::Model,
                    binding,
                    None
                ));
                host.resume("prober");
                let resumed = ask(&agent, binding, "hello", stream).await;
                assert!(
                    resumed["text"].as_str().unwrap().starts_with("Hello from"),
                    "{case}, resumed: {resumed}"
                );
            }
        }
    }
    // The usage records name the configured model, never the key that a
    // provider reported as its model id.
    let usage = host.services.ledger.summary(None, 0).unwrap();
    let text = serde_json::to_string(&usage).unwrap();
    for (_, key) in cases {
        assert!(!text.contains(private_part(key)), "{text}");
    }
    assert!(text.contains("claude-haiku-4-5") && !text.contains("-20260101"));
}

#[tokio::test]
async fn streams_hold_back_a_fixed_tail_and_pass_ordinary_text_whole() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let agent = host.agent("streamer");
    let text = "a reasonably long answer, streamed in three deltas";
    for binding in ["anthropic", "openai"] {
        let report = ask(&agent, binding, &format!("echo {text}"), true).await;
        assert_eq!(report["text"], text, "{report}");
        let deltas: Vec<&str> = report["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["text"].as_str())
            .collect();
        assert_eq!(deltas.concat(), text, "{report}");
        // The last 7 bytes come only when the part ends, whatever they say.
        assert_eq!(
            deltas.last().unwrap().len(),
            clawcage::leak::STREAM_HOLD_BYTES,
            "{deltas:?}"
        );
    }
}

#[tokio::test]
async fn guessing_teaches_nothing_beyond_the_public_prefix() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let agent = host.agent("guesser");
    let key = &keys.anthropic;
    let public = "sk-ant-api03-";
    let private = private_part(key);
    // The prefix-extension attack: the public prefix followed by every
    // guess of the next two characters, echoed by the model in one call.
    let alphabet: Vec<char> = ('A'..='Z').chain('a'..='z').chain('0'..='9').collect();
    let mut guesses = String::new();
    for a in &alphabet {
        for b in &alphabet {
            guesses.push_str(&format!("{public}{a}{b} "));
        }
    }
    let guesses = guesses.trim_end();
    let prompt = format!("echo {guesses}");
    let report = ask(&agent, "anthropic", &prompt, false).await;
    // The answer is exactly what was echoed: nothing marks the right guess.
    assert_eq!(report["text"].as_str().unwrap(), guesses);
    assert!(!host.services.suspensions.is_suspended(
        "guesser",
        Capability::Model,
        "anthropic",
        None
    ));
    // Even knowing seven private bytes, the eighth can be guessed only by
    // getting the binding suspended, and from then on every answer is the
    // same, right guess or wrong. (A guess right but for its case counts
    // as right: an upper-cased echo is caught too.)
    let known = &private[..RUN - 1];
    let wrong: String = alphabet
        .iter()
        .filter(|c| !c.eq_ignore_ascii_case(&(private.as_bytes()[RUN - 1] as char)))
        .map(|c| format!("{known}{c} "))
        .collect::<String>()
        .trim_end()
        .to_string();
    let report = ask(&agent, "anthropic", &format!("echo {wrong}"), false).await;
    assert_eq!(report["text"].as_str().unwrap(), wrong);
    let right = format!("echo {known}{}", &private[RUN - 1..RUN]);
    assert_blocked(
        &ask(&agent, "anthropic", &right, false).await,
        "right guess",
    );
    let after = ask(&agent, "anthropic", &format!("echo {wrong}"), false).await;
    assert_blocked(&after, "wrong guesses after the suspension");
}

#[tokio::test]
async fn other_secrets_in_the_vault_are_no_oracle() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let agent = host.agent("dictionary");
    // A dictionary of 4 133 guesses at another agent's webhook secret,
    // the right one among them, and another agent's Slack token whole:
    // the answer is the text as sent, and nothing is suspended.
    let mut words: Vec<String> = (0..4_132)
        .map(|i| keys::random_chars(1_000 + i, 32))
        .collect();
    words.insert(2_000, keys.webhook.clone());
    words.push(keys.other_slack.clone());
    let text = words.join(" ");
    for stream in [false, true] {
        let report = ask(&agent, "openai", &format!("echo {text}"), stream).await;
        assert_eq!(report["text"].as_str().unwrap(), text, "stream={stream}");
    }
    let report = api(
        &agent,
        &format!("echo?text={}", keys.webhook),
        host.tools.addr.port(),
    )
    .await;
    // The JSON answer comes back parsed.
    assert_eq!(report["ok"]["body"], json!({"text": keys.webhook}));
    assert!(host.services.suspensions.list().is_empty());
    assert_eq!(host.services.leaks_blocked(), 0);
}

#[tokio::test]
async fn tool_credentials_echoed_in_any_encoding_fail_the_call() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let agent = host.agent("tooler");
    let port = host.tools.addr.port();
    for path in [
        "echo-key",
        "echo-slashes",
        "echo-unicode",
        "echo-split",
        "echo-percent",
        "echo-base64",
        "echo-error",
    ] {
        let report = api(&agent, path, port).await;
        assert_eq!(report["error"], "leak-blocked", "{path}: {report}");
        assert_no_run(&report, &keys.api, path);
        let after = api(&agent, "anything", port).await;
        assert_eq!(after["error"], "leak-blocked", "{path}, then: {after}");
        host.resume("tooler");
        let resumed = api(&agent, "anything", port).await;
        assert_eq!(resumed["ok"]["status"], 200, "{path}, resumed: {resumed}");
    }
    assert_eq!(host.services.leaks_blocked(), 7);
    // Compressed or partial answers are not taken (the check reads bodies
    // as sent), and the agent may not ask for them.
    for path in ["echo-gzip", "echo-range"] {
        let report = api(&agent, path, port).await;
        assert_eq!(report["error"], "upstream", "{path}: {report}");
        assert!(
            report["message"]
                .as_str()
                .unwrap()
                .contains("not asked for"),
            "{report}"
        );
        assert_no_run(&report, &keys.api, path);
    }
    for header in ["accept-encoding", "range", "if-range"] {
        let report = run(
            &agent,
            "tool-call",
            json!({"tool": "api", "action": "request", "input": {
                "method": "GET",
                "url": format!("http://127.0.0.1:{port}/api/v1/echo-key"),
                "headers": {header: "gzip"},
            }}),
        )
        .await;
        assert_eq!(report["error"], "invalid-input", "{header}: {report}");
    }
    let sent = host.tools.received();
    assert!(
        sent.iter()
            .all(|r| r.header("accept-encoding") == Some("identity")),
        "every request asks for an uncompressed answer"
    );
}

#[tokio::test]
async fn every_binding_that_sends_the_key_is_suspended_with_the_one_that_leaked() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let text = format!(
        "name = \"twins\"\n[component]\npath = {HOSTILE:?}\n[models.one]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"anthropic-a\"\nbase_url = \"{url}\"\n[models.two]\nprovider = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nkey = \"anthropic-a\"\nbase_url = \"{url}\"\n[models.other]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\nkey = \"openai-b\"\nbase_url = \"{openai}\"\n",
        url = host.provider.anthropic_url(),
        openai = host.provider.openai_url(),
    );
    let agent = Cage::new(test_options())
        .unwrap()
        .with_services(host.services.clone())
        .load_manifest(&Manifest::from_toml(&text).unwrap(), Path::new("/"))
        .unwrap();
    assert_blocked(&ask(&agent, "one", "echo-key", false).await, "one");
    // A second binding naming the same key is no way around it; a binding
    // with another key is untouched.
    assert_blocked(&ask(&agent, "two", "hello", false).await, "two");
    assert_eq!(
        ask(&agent, "other", "hello", false).await["text"],
        "Hello from openai"
    );
    host.resume("twins");
    assert_eq!(
        ask(&agent, "two", "hello", false).await["text"],
        "Hello from anthropic"
    );
}

#[tokio::test]
async fn the_previous_value_of_a_rotated_key_is_still_recognised() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let agent = host.agent("rotator");
    let old = keys.openai.clone();
    host.vault
        .rotate("openai-b", &Secret::from(keys::openai(99)))
        .unwrap();
    // An upstream that still answers with the old value (a cache, a
    // request still in flight) is caught like one with the new.
    let report = ask(&agent, "openai", &format!("echo cached: {old}"), false).await;
    assert_blocked(&report, "previous value");
    assert_no_run(&report, &old, "previous value");
}

/// The daemon around a blocked leak: what the operator sees, and how the
/// binding comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_leak_is_audited_counted_and_resumed_by_an_operator() {
    let daemon = crate::daemon::start().await;
    let fake = FakeProvider::start().await;
    let key = keys::anthropic(21);
    let (status, _) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"id": "main", "provider": "anthropic", "secret": key})),
        )
        .await;
    assert_eq!(status, 201);
    let sections = format!(
        "[models.default]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"main\"\nbase_url = \"{}\"\n",
        fake.anthropic_url()
    );
    assert_eq!(daemon.deploy("asker", HOSTILE, &sections).await.0, 200);
    let ask = |prompt: &str| json!({"source": "test", "kind": "ask", "payload": {"binding": "default", "prompt": prompt}});
    for prompt in ["echo-model", "hello"] {
        let (status, outcome) = daemon.invoke("asker", ask(prompt)).await;
        assert_eq!(status, 200, "{outcome}");
        let report: Value = serde_json::from_str(outcome["result"].as_str().unwrap()).unwrap();
        assert_blocked(&report, prompt);
        assert_no_run(&report, &key, prompt);
    }
    let (_, listed) = daemon
        .call(reqwest::Method::GET, "/v1/suspensions", None)
        .await;
    assert_eq!(listed["suspensions"][0]["agent"], "asker", "{listed}");
    assert_eq!(listed["suspensions"][0]["capability"], "model");
    assert_eq!(listed["suspensions"][0]["name"], "default");
    let metrics = daemon
        .http
        .get(format!("{}/metrics", daemon.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"clawcage_leaks_blocked_total{agent="asker",capability="model"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("clawcage_suspensions 1"), "{metrics}");

    // The operator's commands: list, then resume the one binding.
    let agent_cli = |args: &[&str]| -> Result<String, String> {
        let mut argv = vec![
            "clawcage",
            "agent",
            "--remote",
            &daemon.url,
            "--token",
            daemon.token.trim(),
        ];
        argv.extend_from_slice(args);
        let cli = <clawcage::cli::Cli as clap::Parser>::try_parse_from(argv)
            .map_err(|e| e.to_string())?;
        let clawcage::cli::Command::Agent(agent) = cli.command else {
            unreachable!()
        };
        let mut out = Vec::new();
        agent.run(&mut out)?;
        Ok(String::from_utf8(out).unwrap())
    };
    let listed = tokio::task::block_in_place(|| agent_cli(&["suspensions"])).unwrap();
    assert!(
        listed.contains("asker") && listed.contains("raw"),
        "{listed}"
    );
    // The key came back: it must be rotated before the binding resumes.
    let refused =
        tokio::task::block_in_place(|| agent_cli(&["resume", "asker", "--model", "default"]))
            .unwrap_err();
    assert!(
        refused.contains("409") && refused.contains("rotate"),
        "{refused}"
    );
    let (status, _) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/keys/main/rotate",
            Some(json!({"secret": keys::anthropic(22)})),
        )
        .await;
    assert_eq!(status, 200);
    let wrong = tokio::task::block_in_place(|| {
        agent_cli(&["resume", "asker", "--model", "default", "--tool", "x"])
    });
    assert!(wrong.is_err());
    let resumed = tokio::task::block_in_place(|| {
        agent_cli(&["resume", "asker", "--model", "default", "--output", "json"])
    })
    .unwrap();
    let resumed: Value = serde_json::from_str(&resumed).unwrap();
    assert_eq!(resumed["resumed"].as_array().unwrap().len(), 1, "{resumed}");
    let (_, outcome) = daemon.invoke("asker", ask("hello")).await;
    let report: Value = serde_json::from_str(outcome["result"].as_str().unwrap()).unwrap();
    assert_eq!(report["text"], "Hello from anthropic", "{report}");

    // The audit log says what happened, in metadata only; the model the
    // provider reported (the key) is in no record.
    let audit = daemon.audit_text();
    assert_eq!(
        audit.matches(r#""kind":"leak_blocked""#).count(),
        1,
        "{audit}"
    );
    assert!(audit.contains(r#""view":"raw""#), "{audit}");
    assert_eq!(audit.matches(r#""kind":"resumed""#).count(), 1, "{audit}");
    assert!(audit.contains(r#""model":"claude-haiku-4-5""#), "{audit}");
    assert!(!audit.contains(private_part(&key)), "{audit}");
    for window in private_part(&key).as_bytes().windows(RUN) {
        assert!(!audit.contains(std::str::from_utf8(window).unwrap()));
    }
}

/// One event that makes thousands of refused tool calls, each quoting a
/// URL of 8 KB, leaves a bounded trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_of_one_event_are_bounded() {
    let daemon = crate::daemon::start().await;
    let sections = r#"
[tools.api]
kind = "http"
actions = ["request"]
rules = [{ methods = ["GET"], url = "http://127.0.0.1:9/api/v1/" }]
allow_http = ["127.0.0.1"]
allow_private = ["127.0.0.1"]
"#;
    assert_eq!(daemon.deploy("flooder", HOSTILE, sections).await.0, 200);
    // Just under the schema's bound on a URL, so each call reaches the
    // scope check and is refused there, with a decision.
    let url = format!("http://127.0.0.1:9/admin/{}", "a".repeat(8_000));
    let (status, outcome) = daemon
        .invoke(
            "flooder",
            json!({"source": "test", "kind": "tool-flood", "payload": {
                "tool": "api", "action": "request", "times": 1_000,
                "input": {"method": "GET", "url": url},
            }}),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["result"], json!({"failed": 1_000}).to_string());
    let event_id = outcome["id"].as_str().unwrap();
    daemon.daemon.audit.flush().unwrap();
    let records = daemon.daemon.audit.read(0, 100_000).unwrap();
    let of_event: Vec<&Value> = records
        .iter()
        .map(|r| &r.event)
        .filter(|e| e["event_id"] == event_id)
        .collect();
    let tools = of_event.iter().filter(|e| e["kind"] == "tool").count();
    assert_eq!(tools, 100);
    let summary = of_event
        .iter()
        .find(|e| e["kind"] == "records_suppressed")
        .expect("a summary record");
    assert_eq!(summary["suppressed"], 900);
    assert_eq!(of_event.last().unwrap()["kind"], "invocation");
    for record in &records {
        let text = record.event.to_string();
        assert!(text.len() < 2_048, "a record of {} bytes", text.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_new_events_with_503() {
    let daemon = crate::daemon::start_with(|options| options.min_free_disk_bytes = u64::MAX).await;
    assert_eq!(
        daemon.deploy("hello", clawcage_tests::HELLO, "").await.0,
        200
    );
    let response = daemon
        .http
        .post(format!("{}/v1/agents/hello/invoke", daemon.url))
        .bearer_auth(&daemon.token)
        .json(&json!({"source": "test", "kind": "greet", "payload": {"name": "Di"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "disk-full", "{body}");
    // Nothing ran, so nothing was recorded about it.
    assert!(!daemon.audit_text().contains(r#""kind":"invocation""#));
}

#[tokio::test]
async fn describe_never_shows_a_key_pasted_as_the_model_id() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let text = format!(
        "name = \"describer\"\n[component]\npath = {HOSTILE:?}\n[models.default]\nprovider = \"openai\"\nmodel = {:?}\nkey = \"openai-b\"\nbase_url = \"{}\"\n",
        keys.openai,
        host.provider.openai_url()
    );
    let agent = Cage::new(test_options())
        .unwrap()
        .with_services(host.services.clone())
        .load_manifest(&Manifest::from_toml(&text).unwrap(), Path::new("/"))
        .unwrap();
    let info = run(&agent, "describe", json!("default")).await;
    assert_eq!(info["provider"], "openai");
    assert!(
        info["model"].as_str().unwrap().starts_with("[withheld"),
        "{info}"
    );
    assert_no_run(&info, &keys.openai, "describe");
    let agent = host.agent("plain");
    let info = run(&agent, "describe", json!("openai")).await;
    assert_eq!(info["model"], "gpt-4o-mini");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_when_a_leak_is_blocked_answer_like_calls_after_it() {
    let keys = suite_keys();
    let host = host(&keys).await;
    let agent = Arc::new(host.agent("racer"));
    for stream in [false, true] {
        // A slow call is under way when another event's answer carries the
        // key; the slow call's answer, harmless as it is, is not delivered.
        let slow = {
            let agent = agent.clone();
            tokio::spawn(async move { ask(&agent, "openai", "slow", stream).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_blocked(&ask(&agent, "openai", "echo-key", stream).await, "hit");
        let slow = slow.await.unwrap();
        assert_blocked(&slow, &format!("in flight, stream={stream}"));
        host.resume("racer");
    }
}
