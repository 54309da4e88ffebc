//! The sample agents do real work end to end: each runs live against the
//! fake model provider and the fake GitHub, Slack and Notion (which is how
//! its shipped cassette is recorded, and checked to be current), then runs
//! from its shipped manifest on that cassette, offline, to the same result.

use std::path::Path;
use std::sync::{Arc, Mutex};

use clawcage::db::Database;
use clawcage::ledger::Ledger;
use clawcage::pricing::PriceTable;
use clawcage::providers::binding::Services;
use clawcage::providers::replay::Cassette;
use clawcage::secret::Secret;
use clawcage::vault::{MasterKey, Vault};
use clawcage::{Agent, Cage, Event, Manifest};
use clawcage_tests::fake_provider::FakeProvider;
use clawcage_tests::fake_tools::{FakeTools, ToolRequest};
use clawcage_tests::{REPO_ROOT, test_options};
use serde_json::{Value, json};

const SECRETS: [(&str, &str, &str); 4] = [
    (
        "anthropic-main",
        "anthropic",
        "sk-ant-api03-SoiqSwcA0LWX50cJ0ZuX6tt0RtbOrIUaZ4t0psDgkvvkYiLbSZrDDIIgNOsRHhGWH7e2RJOavXeWrf1AUjEFXG1zSGAczAA",
    ),
    (
        "github-bot",
        "github",
        "ghs_4aXFKf6pT5FqpPew9PYOBfMICRHgDSCbHUJL",
    ),
    (
        "slack-bot",
        "slack",
        "xoxb-3333444455-6666777788-XZWHjarEmVb83Mbrk5pCxXfs",
    ),
    (
        "notion-bot",
        "notion",
        "secret_S25G3JfM25ecRUGCyQ8yyuT3PNmwDknhPzHFUniQWPj",
    ),
];

struct Live {
    report: Value,
    recorded: Cassette,
    tool_requests: Vec<ToolRequest>,
    model_calls: usize,
}

/// Runs a sample agent live against the fakes, recording a cassette.
async fn run_live(component: &str, sections: &str, event: Event) -> Live {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(&dir.path().join("state")).unwrap());
    let vault = Arc::new(Vault::open(db.clone(), MasterKey::generate()).unwrap());
    for (id, kind, secret) in SECRETS {
        vault
            .add(id, kind, &Secret::from(secret.to_string()))
            .unwrap();
    }
    let services = Arc::new(Services::new(vault, Ledger::new(db), PriceTable::builtin()).unwrap());
    let provider = FakeProvider::start().await;
    let tools = FakeTools::start().await;
    let allow = "allow_http = [\"127.0.0.1\"]\nallow_private = [\"127.0.0.1\"]";
    let text = format!("name = \"sample\"\n[component]\npath = {component:?}\n{sections}")
        .replace("ANTHROPIC_URL", &provider.anthropic_url())
        .replace("GITHUB_URL", &tools.github_url())
        .replace("SLACK_URL", &tools.slack_url())
        .replace("NOTION_URL", &tools.notion_url())
        .replace("ALLOW", allow);
    let manifest = Manifest::from_toml(&text).unwrap();
    let mut agent = Cage::new(test_options())
        .unwrap()
        .with_services(services)
        .load_manifest(&manifest, Path::new("/"))
        .unwrap();
    let tape = Arc::new(Mutex::new(Cassette::default()));
    clawcage::providers::replay::record_into(&mut agent, &tape);
    let report = serde_json::from_str(&agent.invoke(event).await.outcome.unwrap()).unwrap();
    let recorded = tape.lock().unwrap().clone();
    Live {
        report,
        recorded,
        tool_requests: tools.received(),
        model_calls: provider.received().len(),
    }
}

/// Compares a recording with the shipped cassette (rewriting it first when
/// `CLAWCAGE_UPDATE_CASSETTES` is set), and checks it holds no secret.
fn check_cassette(sample: &str, recorded: &Cassette) {
    let path = Path::new(REPO_ROOT).join(format!("sample-agents/{sample}/cassette.json"));
    if std::env::var_os("CLAWCAGE_UPDATE_CASSETTES").is_some() {
        recorded.save(&path).unwrap();
    }
    let shipped = Cassette::load(&path)
        .unwrap_or_else(|e| panic!("{e}; set CLAWCAGE_UPDATE_CASSETTES=1 to create it"));
    assert_eq!(
        &shipped, recorded,
        "the {sample} cassette is stale; rerun with CLAWCAGE_UPDATE_CASSETTES=1"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for (_, _, secret) in SECRETS {
        for window in secret.as_bytes().windows(clawcage::leak::WINDOW) {
            assert!(!text.contains(std::str::from_utf8(window).unwrap()));
        }
    }
}

/// Runs the shipped manifest offline, on its cassette, with the component
/// built for the tests.
async fn run_shipped(sample: &str, component: &str, event: Event) -> Value {
    let dir = Path::new(REPO_ROOT).join("sample-agents").join(sample);
    let mut manifest = Manifest::load(&dir.join("agent.toml")).unwrap();
    manifest.component.path = Some(component.into());
    // No services: an offline sample needs no vault and no network.
    let agent: Agent = Cage::new(test_options())
        .unwrap()
        .load_manifest(&manifest, &dir)
        .unwrap();
    serde_json::from_str(&agent.invoke(event).await.outcome.unwrap()).unwrap()
}

fn event(sample: &str) -> Event {
    let path = format!("{REPO_ROOT}/sample-agents/{sample}/event.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn triage_labels_the_issue_and_tells_slack() {
    let sections = r#"
[models.default]
provider = "anthropic"
model = "claude-haiku-4-5"
key = "anthropic-main"
base_url = "ANTHROPIC_URL"

[tools.github]
credential = "github-bot"
actions = ["issues.add_labels"]
resources = ["acme/support"]
base_url = "GITHUB_URL"
ALLOW

[tools.slack]
credential = "slack-bot"
actions = ["chat.postMessage"]
resources = ["C0TRIAGE01"]
base_url = "SLACK_URL"
ALLOW
"#;
    let live = run_live(clawcage_tests::TRIAGE, sections, event("triage")).await;
    let expected = json!({
        "status": "triaged", "repo": "acme/support", "number": 42, "labels": ["bug"], "rounds": 2,
        "summary": "Labelled as a bug: saving with an empty title crashes the app.",
        "posted_to_slack": true, "failed_actions": [],
    });
    assert_eq!(live.report, expected);
    assert_eq!(live.model_calls, 2);
    let requests: Vec<(&str, &str)> = live
        .tool_requests
        .iter()
        .map(|r| (r.method.as_str(), r.uri.as_str()))
        .collect();
    assert_eq!(
        requests,
        [
            ("POST", "/gh/repos/acme/support/issues/42/labels"),
            ("POST", "/slack/api/chat.postMessage")
        ]
    );
    assert_eq!(live.tool_requests[0].body, json!({"labels": ["bug"]}));
    assert_eq!(
        live.tool_requests[1].body["text"],
        "acme/support#42 App crashes when saving [bug]: Labelled as a bug: saving with an empty title crashes the app."
    );
    assert_eq!(live.recorded.tool_calls.len(), 2);
    check_cassette("triage", &live.recorded);

    let offline = run_shipped("triage", clawcage_tests::TRIAGE, event("triage")).await;
    assert_eq!(offline, expected);
}

#[tokio::test]
async fn report_writer_files_the_weekly_report_in_notion() {
    let sections = r#"
[models.writer]
provider = "anthropic"
model = "claude-sonnet-4-5"
key = "anthropic-main"
base_url = "ANTHROPIC_URL"

[tools.github]
credential = "github-bot"
actions = ["issues.list"]
resources = ["acme/support"]
base_url = "GITHUB_URL"
ALLOW

[tools.notion]
credential = "notion-bot"
actions = ["pages.create"]
resources = ["00000000-0000-0000-0000-00000000aaaa"]
base_url = "NOTION_URL"
ALLOW
"#;
    let live = run_live(
        clawcage_tests::REPORT_WRITER,
        sections,
        event("report-writer"),
    )
    .await;
    let expected = json!({
        "status": "filed", "repo": "acme/support", "issues": 2,
        "page_id": "00000000-0000-0000-0000-00000000beef", "paragraphs": 3,
    });
    assert_eq!(live.report, expected);
    assert_eq!(live.model_calls, 1);
    assert_eq!(
        live.tool_requests[0].uri,
        "/gh/repos/acme/support/issues?per_page=100&state=all&since=2026-11-20T00%3A00%3A00Z"
    );
    let page = &live.tool_requests[1];
    assert_eq!(
        (page.method.as_str(), page.uri.as_str()),
        ("POST", "/notion/v1/pages")
    );
    assert_eq!(
        page.body["parent"],
        json!({"page_id": "00000000-0000-0000-0000-00000000aaaa"})
    );
    assert_eq!(page.body["children"].as_array().unwrap().len(), 3);
    assert!(
        page.body["children"][0]["paragraph"]["rich_text"][0]["text"]["content"]
            .as_str()
            .unwrap()
            .starts_with("This week 2 issues moved")
    );
    check_cassette("report-writer", &live.recorded);

    let offline = run_shipped(
        "report-writer",
        clawcage_tests::REPORT_WRITER,
        event("report-writer"),
    )
    .await;
    assert_eq!(offline, expected);
}

#[tokio::test]
async fn a_replayed_tool_still_checks_scope_and_schema() {
    let dir = Path::new(REPO_ROOT).join("sample-agents/triage");
    let mut manifest = Manifest::load(&dir.join("agent.toml")).unwrap();
    manifest.component.path = Some(clawcage_tests::HOSTILE.into());
    let agent = Cage::new(test_options())
        .unwrap()
        .load_manifest(&manifest, &dir)
        .unwrap();
    let call = |input: Value| {
        Event::new(
            "test",
            "tool-call",
            json!({"tool": "github", "action": "issues.add_labels", "input": input}),
        )
    };
    let other_repo = agent
        .invoke(call(
            json!({"repo": "acme/other", "number": 42, "labels": ["bug"]}),
        ))
        .await;
    let report: Value = serde_json::from_str(&other_repo.outcome.unwrap()).unwrap();
    assert_eq!(report["error"], "denied", "{report}");
    let unrecorded = agent
        .invoke(call(
            json!({"repo": "acme/support", "number": 7, "labels": ["bug"]}),
        ))
        .await;
    let report: Value = serde_json::from_str(&unrecorded.outcome.unwrap()).unwrap();
    assert_eq!(report["error"], "invalid-input", "{report}");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("record it again")
    );
}
