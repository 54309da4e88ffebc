//! Scoped tools end to end: a real guest calls GitHub, Slack, Notion and a
//! generic HTTP API through the host, against fakes on loopback that record
//! what they receive.

use std::path::Path;
use std::sync::{Arc, Mutex};

use clawcage::db::Database;
use clawcage::ledger::Ledger;
use clawcage::pricing::PriceTable;
use clawcage::providers::binding::Services;
use clawcage::secret::Secret;
use clawcage::tools::connector::{Decision, DecisionSink};
use clawcage::vault::{MasterKey, Vault};
use clawcage::{Agent, Cage, Event, Manifest};
use clawcage_tests::fake_tools::{FakeTools, notion_id};
use clawcage_tests::{HOSTILE, test_options};
use serde_json::{Value, json};

const GITHUB_TOKEN: &str = "ghs_dWUdOSuOVyNDv5EI5zB5N6Qa31M4LBdwMiQ7";
const SLACK_TOKEN: &str = "xoxb-1111222233-4444555566-1XGlvAPSy7joCQywmmGlPl2j";
const NOTION_TOKEN: &str = "secret_oxq8zgPsQPTa1u7mRFXMQu5NmqXAe3XQOB1tMtSC9gJ";
const API_KEY: &str = "wx-QfCF9TxPRf5aYrAI/c92aLL9kovK/YQWguwjrn";

#[derive(Default)]
struct Decisions(Mutex<Vec<Decision>>);

impl DecisionSink for Decisions {
    fn record(&self, decision: &Decision) {
        self.0.lock().unwrap().push(decision.clone());
    }
}

struct Host {
    _dir: tempfile::TempDir,
    services: Arc<Services>,
    decisions: Arc<Decisions>,
    fake: FakeTools,
}

async fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(&dir.path().join("state")).unwrap());
    let vault = Arc::new(Vault::open(db.clone(), MasterKey::generate()).unwrap());
    for (id, kind, secret) in [
        ("github-bot", "github", GITHUB_TOKEN),
        ("slack-bot", "slack", SLACK_TOKEN),
        ("notion-bot", "notion", NOTION_TOKEN),
        ("api-key", "http", API_KEY),
    ] {
        vault
            .add(id, kind, &Secret::from(secret.to_string()))
            .unwrap();
    }
    let services = Arc::new(Services::new(vault, Ledger::new(db), PriceTable::builtin()).unwrap());
    Host {
        _dir: dir,
        services,
        decisions: Arc::default(),
        fake: FakeTools::start().await,
    }
}

/// Every tool granted, against the fakes.
fn grants(host: &Host) -> String {
    let port = host.fake.addr.port();
    format!(
        r#"
[tools.github]
credential = "github-bot"
actions = ["issues.list", "issues.get", "issues.create", "issues.comment", "issues.add_labels", "pulls.get", "repos.get_content"]
resources = ["acme/support", "acme/echo", "acme/limited", "acme/secondary", "acme/moved", "acme/paged", "tools-org/*"]
base_url = "{github}"
allow_http = ["127.0.0.1"]
allow_private = ["127.0.0.1"]

[tools.slack]
credential = "slack-bot"
actions = ["chat.postMessage", "conversations.history", "reactions.add"]
resources = ["C0SUPPORT", "CECHO", "CLIMITED", "CMISSING"]
base_url = "{slack}"
allow_http = ["127.0.0.1"]
allow_private = ["127.0.0.1"]

[tools.notion]
credential = "notion-bot"
actions = ["pages.create", "pages.retrieve", "databases.query", "blocks.children.append"]
resources = ["{parent}", "{database}", "{limited_db}"]
base_url = "{notion}"
allow_http = ["127.0.0.1"]
allow_private = ["127.0.0.1"]

[tools.api]
kind = "http"
credential = "api-key"
credential_header = "x-api-key"
credential_format = "{{credential}}"
actions = ["request"]
rules = [{{ methods = ["GET", "POST"], url = "http://127.0.0.1:{port}/api/v1/" }}]
allow_http = ["127.0.0.1", "127.0.0.2"]
allow_private = ["127.0.0.1"]

[tools.local]
kind = "http"
actions = ["request"]
rules = [{{ methods = ["GET"], url = "http://localhost:{port}/api/v1/" }}]
allow_http = ["localhost"]
"#,
        github = host.fake.github_url(),
        slack = host.fake.slack_url(),
        notion = host.fake.notion_url(),
        parent = notion_id("aaaa"),
        database = notion_id("db01"),
        limited_db = notion_id("0429"),
    )
}

fn load(host: &Host, sections: &str) -> Result<Agent, String> {
    let text = format!("name = \"toolbox\"\n[component]\npath = {HOSTILE:?}\n{sections}");
    let manifest = Manifest::from_toml(&text).map_err(|e| e.to_string())?;
    Cage::new(test_options())
        .unwrap()
        .with_services(host.services.clone())
        .with_decision_sink(host.decisions.clone())
        .load_manifest(&manifest, Path::new("/"))
        .map_err(|e| e.to_string())
}

async fn call(agent: &Agent, tool: &str, action: &str, input: Value) -> Value {
    let event = Event::new(
        "test",
        "tool-call",
        json!({"tool": tool, "action": action, "input": input}),
    );
    let outcome = agent
        .invoke(event)
        .await
        .outcome
        .expect("the fixture answers");
    serde_json::from_str(&outcome).unwrap()
}

fn assert_ok(report: &Value) -> &Value {
    assert!(report.get("ok").is_some(), "{report}");
    &report["ok"]
}

fn assert_error(report: &Value, kind: &str, needle: &str) {
    assert_eq!(report["error"], kind, "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

#[tokio::test]
async fn github_actions_work_end_to_end() {
    let host = host().await;
    let agent = load(&host, &grants(&host)).unwrap();
    let repo = "acme/support";

    let issues = call(
        &agent,
        "github",
        "issues.list",
        json!({"repo": repo, "state": "open"}),
    )
    .await;
    assert_eq!(assert_ok(&issues).as_array().unwrap().len(), 2);
    let issue = call(
        &agent,
        "github",
        "issues.get",
        json!({"repo": repo, "number": 12}),
    )
    .await;
    assert_eq!(assert_ok(&issue)["number"], 12);
    let created = call(
        &agent,
        "github",
        "issues.create",
        json!({"repo": repo, "title": "New", "body": "Details", "labels": ["bug"]}),
    )
    .await;
    assert_eq!(assert_ok(&created)["body"], "Details");
    let comment = call(
        &agent,
        "github",
        "issues.comment",
        json!({"repo": repo, "number": 12, "body": "Thanks!"}),
    )
    .await;
    assert_eq!(assert_ok(&comment)["body"], "Thanks!");
    let labels = call(
        &agent,
        "github",
        "issues.add_labels",
        json!({"repo": repo, "number": 12, "labels": ["bug", "p1"]}),
    )
    .await;
    assert_eq!(assert_ok(&labels)[1]["name"], "p1");
    let pull = call(
        &agent,
        "github",
        "pulls.get",
        json!({"repo": repo, "number": 3}),
    )
    .await;
    assert_eq!(assert_ok(&pull)["number"], 3);
    let file = call(
        &agent,
        "github",
        "repos.get_content",
        json!({"repo": repo, "path": "docs/a b.md", "ref": "main"}),
    )
    .await;
    assert_eq!(assert_ok(&file)["path"], "docs/a%20b.md");
    // Pagination follows rel="next" to the end.
    let paged = call(
        &agent,
        "github",
        "issues.list",
        json!({"repo": "acme/paged", "max_items": 100}),
    )
    .await;
    assert_eq!(assert_ok(&paged).as_array().unwrap().len(), 6);

    let received = host.fake.received();
    let summary: Vec<(String, String)> = received
        .iter()
        .take(7)
        .map(|r| (r.method.clone(), r.uri.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "GET",
                "/gh/repos/acme/support/issues?per_page=100&state=open"
            ),
            ("GET", "/gh/repos/acme/support/issues/12"),
            ("POST", "/gh/repos/acme/support/issues"),
            ("POST", "/gh/repos/acme/support/issues/12/comments"),
            ("POST", "/gh/repos/acme/support/issues/12/labels"),
            ("GET", "/gh/repos/acme/support/pulls/3"),
            (
                "GET",
                "/gh/repos/acme/support/contents/docs/a%20b.md?ref=main"
            ),
        ]
        .map(|(m, u)| (m.to_string(), u.to_string()))
    );
    for request in &received {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {GITHUB_TOKEN}").as_str())
        );
        assert_eq!(request.header("x-github-api-version"), Some("2022-11-28"));
        assert_eq!(
            request.header("accept"),
            Some("application/vnd.github+json")
        );
        assert!(
            request
                .header("user-agent")
                .unwrap()
                .starts_with("clawcage/")
        );
    }
    assert_eq!(
        received[2].body,
        json!({"title": "New", "body": "Details", "labels": ["bug"]})
    );
    assert_eq!(received[4].body, json!({"labels": ["bug", "p1"]}));
    assert_eq!(received.len(), 10, "three pages for acme/paged");

    let decisions = host.decisions.0.lock().unwrap();
    assert!(
        decisions
            .iter()
            .all(|d| d.allowed && d.agent == "toolbox" && d.tool == "github")
    );
    assert_eq!(decisions[0].action, "issues.list");
    assert_eq!(decisions[0].resource, "acme/support");
}

#[tokio::test]
async fn slack_and_notion_actions_work_end_to_end() {
    let host = host().await;
    let agent = load(&host, &grants(&host)).unwrap();

    let posted = call(
        &agent,
        "slack",
        "chat.postMessage",
        json!({"channel": "C0SUPPORT", "text": "Triaged #12"}),
    )
    .await;
    assert_eq!(assert_ok(&posted)["ts"], "1700000000.000100");
    let history = call(
        &agent,
        "slack",
        "conversations.history",
        json!({"channel": "C0SUPPORT"}),
    )
    .await;
    assert_eq!(assert_ok(&history)["messages"].as_array().unwrap().len(), 3);
    let reaction = call(
        &agent,
        "slack",
        "reactions.add",
        json!({"channel": "C0SUPPORT", "timestamp": "1700000000.000100", "name": "eyes"}),
    )
    .await;
    assert_eq!(assert_ok(&reaction)["ok"], true);
    let missing = call(
        &agent,
        "slack",
        "chat.postMessage",
        json!({"channel": "CMISSING", "text": "x"}),
    )
    .await;
    assert_error(&missing, "upstream", "channel_not_found");

    let slack: Vec<_> = host.fake.received();
    assert_eq!(slack[0].method, "POST");
    assert_eq!(slack[0].uri, "/slack/api/chat.postMessage");
    assert_eq!(
        slack[0].body,
        json!({"channel": "C0SUPPORT", "text": "Triaged #12"})
    );
    assert_eq!(
        slack[1].uri,
        "/slack/api/conversations.history?channel=C0SUPPORT&limit=100"
    );
    assert_eq!(
        slack[2].uri,
        "/slack/api/conversations.history?channel=C0SUPPORT&limit=100&cursor=page2"
    );
    for request in &slack {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {SLACK_TOKEN}").as_str())
        );
    }
    host.fake.clear();

    let parent = notion_id("aaaa");
    let page = call(
        &agent,
        "notion",
        "pages.create",
        json!({
            "parent": {"page_id": parent},
            "properties": {"title": {"title": [{"text": {"content": "Weekly report"}}]}}
        }),
    )
    .await;
    let page_id = assert_ok(&page)["id"].as_str().unwrap().to_string();
    // The page this agent just created may be filled, though not granted.
    let appended = call(&agent, "notion", "blocks.children.append", json!({
        "block_id": page_id,
        "children": [{"object": "block", "type": "paragraph", "paragraph": {"rich_text": [{"text": {"content": "Hello"}}]}}]
    })).await;
    assert_eq!(assert_ok(&appended)["results"].as_array().unwrap().len(), 1);
    let child = call(
        &agent,
        "notion",
        "pages.retrieve",
        json!({"page_id": notion_id("c001")}),
    )
    .await;
    assert_eq!(assert_ok(&child)["object"], "page");
    let rows = call(
        &agent,
        "notion",
        "databases.query",
        json!({"database_id": notion_id("db01")}),
    )
    .await;
    assert_eq!(assert_ok(&rows)["results"].as_array().unwrap().len(), 3);

    let notion = host.fake.received();
    let summary: Vec<(&str, &str)> = notion
        .iter()
        .map(|r| (r.method.as_str(), r.uri.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", "/notion/v1/pages"),
            (
                "PATCH",
                "/notion/v1/blocks/00000000-0000-0000-0000-00000000beef/children"
            ),
            (
                "GET",
                format!("/notion/v1/pages/{}", notion_id("c001")).as_str()
            ),
            (
                "POST",
                format!("/notion/v1/databases/{}/query", notion_id("db01")).as_str()
            ),
            (
                "POST",
                format!("/notion/v1/databases/{}/query", notion_id("db01")).as_str()
            ),
        ]
    );
    assert_eq!(notion[4].body["start_cursor"], "cursor-2");
    for request in &notion {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {NOTION_TOKEN}").as_str())
        );
        assert_eq!(request.header("notion-version"), Some("2022-06-28"));
    }
}

#[tokio::test]
async fn the_http_tool_injects_its_credential_by_template() {
    let host = host().await;
    let agent = load(&host, &grants(&host)).unwrap();
    let url = format!(
        "http://127.0.0.1:{}/api/v1/things?x=1",
        host.fake.addr.port()
    );
    let report = call(
        &agent,
        "api",
        "request",
        json!({"method": "POST", "url": url, "body": "{\"a\":1}", "headers": {"x-trace": "t1"}}),
    )
    .await;
    let ok = assert_ok(&report);
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["content_type"], "application/json");
    // A JSON answer comes back parsed.
    assert_eq!(
        ok["body"],
        json!({"path": "v1/things", "method": "POST", "body": {"a": 1}})
    );
    let received = host.fake.received();
    assert_eq!(received[0].header("x-api-key"), Some(API_KEY));
    assert_eq!(received[0].header("x-trace"), Some("t1"));
    assert_eq!(received[0].header("authorization"), None);
    // The agent cannot set or override the credential header.
    let forged = call(
        &agent,
        "api",
        "request",
        json!({"method": "GET", "url": url, "headers": {"X-Api-Key": "mine"}}),
    )
    .await;
    assert_error(&forged, "invalid-input", "may not be set");
}

#[tokio::test]
async fn scope_escapes_are_denied_before_any_request() {
    let host = host().await;
    let agent = load(&host, &grants(&host)).unwrap();
    let port = host.fake.addr.port();
    let escapes = [
        (
            "github",
            "issues.get",
            json!({"repo": "acme/secrets", "number": 1}),
            "acme/secrets is not in this agent's grant",
        ),
        (
            "github",
            "issues.get",
            json!({"repo": "other/support", "number": 1}),
            "not in this agent's grant",
        ),
        (
            "github",
            "repos.get_content",
            json!({"repo": "acme/support", "path": "../../orgs/acme"}),
            "not a plain path",
        ),
        (
            "github",
            "issues.get",
            json!({"repo": "acme/../admin", "number": 1}),
            "is not a repository",
        ),
        (
            "slack",
            "chat.postMessage",
            json!({"channel": "C0PRIVATE", "text": "hi"}),
            "channel C0PRIVATE is not in this agent's grant",
        ),
        (
            "notion",
            "pages.create",
            json!({"parent": {"page_id": notion_id("bbbb")}, "properties": {}}),
            "not a page or database granted",
        ),
        (
            "notion",
            "blocks.children.append",
            json!({"block_id": notion_id("bbbb"), "children": [{}]}),
            "not a page or database granted",
        ),
        (
            "notion",
            "databases.query",
            json!({"database_id": notion_id("db02")}),
            "not a page or database granted",
        ),
        (
            "api",
            "request",
            json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/api/v1/../admin")}),
            "is not allowed by this agent's rules",
        ),
        (
            "api",
            "request",
            json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/api/v1/%2e%2e/admin")}),
            // The URL standard reads `%2e%2e` as `..`: it leaves the prefix.
            "/api/admin is not allowed by this agent's rules",
        ),
        (
            "api",
            "request",
            json!({"method": "GET", "url": format!("http://127.0.0.1:{port}/api/v1/..%2Fadmin")}),
            "encoded dots",
        ),
        (
            "api",
            "request",
            json!({"method": "DELETE", "url": format!("http://127.0.0.1:{port}/api/v1/x")}),
            "is not allowed by this agent's rules",
        ),
        (
            "api",
            "request",
            json!({"method": "GET", "url": "https://api.github.com@evil.example/api/v1/x"}),
            "user information",
        ),
        (
            "api",
            "request",
            json!({"method": "GET", "url": format!("http://127.0.0.1:{port}@evil.example/api/v1/x")}),
            "user information",
        ),
        (
            "api",
            "request",
            json!({"method": "GET", "url": format!("http://127.0.0.2:{port}/api/v1/x")}),
            "127.0.0.2 is at 127.0.0.2, a loopback address",
        ),
        (
            "api",
            "request",
            json!({"method": "GET", "url": "http://169.254.169.254/latest/meta-data/"}),
            "plain http to 169.254.169.254",
        ),
        // Resolves to loopback, which this grant does not allow.
        (
            "local",
            "request",
            json!({"method": "GET", "url": format!("http://localhost:{port}/api/v1/x")}),
            "a loopback address",
        ),
    ];
    for (tool, action, input, needle) in escapes {
        let report = call(&agent, tool, action, input.clone()).await;
        assert_error(&report, "denied", needle);
    }
    assert!(
        host.fake.received().is_empty(),
        "{:?}",
        host.fake.received()
    );
    let decisions = host.decisions.0.lock().unwrap();
    let denied: Vec<_> = decisions.iter().filter(|d| !d.allowed).collect();
    // Every escape but the one refused at DNS time is refused at the scope
    // check, and recorded as such.
    assert_eq!(denied.len(), 16, "{decisions:?}");
    assert!(
        denied
            .iter()
            .any(|d| d.tool == "slack" && d.resource == "C0PRIVATE")
    );
    assert!(denied.iter().all(|d| d.reason.is_some()));
}

#[tokio::test]
async fn redirects_are_not_followed_and_metadata_is_not_reached() {
    let host = host().await;
    let agent = load(&host, &grants(&host)).unwrap();
    let report = call(
        &agent,
        "github",
        "issues.get",
        json!({"repo": "acme/moved", "number": 1}),
    )
    .await;
    assert_error(&report, "denied", "redirected to 169.254.169.254");
    assert_eq!(host.fake.received().len(), 1);
}

#[tokio::test]
async fn credentials_reach_only_their_host_and_never_the_guest() {
    let host = host().await;
    let agent = load(&host, &grants(&host)).unwrap();
    let echoed = call(
        &agent,
        "github",
        "issues.get",
        json!({"repo": "acme/echo", "number": 1}),
    )
    .await;
    assert_error(&echoed, "leak-blocked", "credential");
    let slack = call(
        &agent,
        "slack",
        "chat.postMessage",
        json!({"channel": "CECHO", "text": "x"}),
    )
    .await;
    assert_error(&slack, "leak-blocked", "credential");
    let url = format!("http://127.0.0.1:{}/api/v1/echo-key", host.fake.addr.port());
    let api = call(
        &agent,
        "api",
        "request",
        json!({"method": "GET", "url": url}),
    )
    .await;
    assert_error(&api, "leak-blocked", "credential");
    // Each grant that echoed is suspended for the agent; one that did not
    // is not.
    for tool in ["github", "slack", "api"] {
        assert!(host.services.suspensions.is_suspended(
            "toolbox",
            clawcage::suspend::Capability::Tool,
            tool,
            None
        ));
    }
    assert!(!host.services.suspensions.is_suspended(
        "toolbox",
        clawcage::suspend::Capability::Tool,
        "notion",
        None
    ));
    for report in [&echoed, &slack, &api] {
        let text = report.to_string();
        for secret in [GITHUB_TOKEN, SLACK_TOKEN, NOTION_TOKEN, API_KEY] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    for request in host.fake.received() {
        let sent: String = request
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect();
        let (own, others): (&str, Vec<&str>) = if request.uri.starts_with("/gh/") {
            (GITHUB_TOKEN, vec![SLACK_TOKEN, API_KEY, NOTION_TOKEN])
        } else if request.uri.starts_with("/slack/") {
            (SLACK_TOKEN, vec![GITHUB_TOKEN, API_KEY, NOTION_TOKEN])
        } else {
            (API_KEY, vec![GITHUB_TOKEN, SLACK_TOKEN, NOTION_TOKEN])
        };
        assert!(sent.contains(own));
        assert!(others.iter().all(|other| !sent.contains(other)), "{sent}");
    }
}

#[tokio::test]
async fn invalid_input_is_rejected_before_sending() {
    let host = host().await;
    let agent = load(&host, &grants(&host)).unwrap();
    for (tool, action, input, needle) in [
        (
            "github",
            "issues.add_labels",
            json!({"repo": "acme/support", "number": 1, "labels": []}),
            "input.labels must have at least 1 items",
        ),
        (
            "github",
            "issues.get",
            json!({"repo": "acme/support"}),
            "input.number is required",
        ),
        (
            "github",
            "issues.get",
            json!({"repo": "acme/support", "number": "1"}),
            "input.number must be of type integer",
        ),
        (
            "github",
            "issues.create",
            json!({"repo": "acme/support", "title": "x", "assignees": ["me"]}),
            "input.assignees is not an accepted field",
        ),
        (
            "slack",
            "chat.postMessage",
            json!({"channel": "C0SUPPORT"}),
            "input.text is required",
        ),
        (
            "notion",
            "pages.create",
            json!({"parent": {"page_id": "x", "database_id": "y"}, "properties": {}}),
            "exactly one",
        ),
        (
            "api",
            "request",
            json!({"method": "TRACE", "url": "https://x.example/"}),
            "input.method must be one of",
        ),
    ] {
        let report = call(&agent, tool, action, input).await;
        assert_error(&report, "invalid-input", needle);
    }
    let ungranted = call(
        &agent,
        "github",
        "repos.delete",
        json!({"repo": "acme/support"}),
    )
    .await;
    assert_error(&ungranted, "not-granted", "repos.delete");
    assert!(host.fake.received().is_empty());
}

#[tokio::test]
async fn rate_limits_become_rate_limited_with_retry_after() {
    let host = host().await;
    let agent = load(&host, &grants(&host)).unwrap();
    let primary = call(
        &agent,
        "github",
        "issues.get",
        json!({"repo": "acme/limited", "number": 1}),
    )
    .await;
    assert_error(&primary, "rate-limited", "API rate limit exceeded");
    let wait = primary["retry_after_ms"].as_u64().unwrap();
    assert!((40_000..=42_000).contains(&wait), "{wait}");
    let secondary = call(
        &agent,
        "github",
        "issues.get",
        json!({"repo": "acme/secondary", "number": 1}),
    )
    .await;
    assert_error(&secondary, "rate-limited", "secondary rate limit");
    assert_eq!(secondary["retry_after_ms"], 30_000);
    let slack = call(
        &agent,
        "slack",
        "chat.postMessage",
        json!({"channel": "CLIMITED", "text": "x"}),
    )
    .await;
    assert_error(&slack, "rate-limited", "slow down");
    assert_eq!(slack["retry_after_ms"], 7_000);
    let notion = call(
        &agent,
        "notion",
        "databases.query",
        json!({"database_id": notion_id("0429")}),
    )
    .await;
    assert_error(&notion, "rate-limited", "rate_limited");
    assert_eq!(notion["retry_after_ms"], 3_000);
    let url = format!("http://127.0.0.1:{}/api/v1/limited", host.fake.addr.port());
    let api = call(
        &agent,
        "api",
        "request",
        json!({"method": "GET", "url": url}),
    )
    .await;
    assert_eq!(api["retry_after_ms"], 2_000, "{api}");
}

#[tokio::test]
async fn bad_grants_fail_the_load_with_their_reason() {
    let host = host().await;
    let base = host.fake.github_url();
    let allow = "allow_http = [\"127.0.0.1\"]\nallow_private = [\"127.0.0.1\"]\n";
    for (grant, needle) in [
        (format!("[tools.github]\ncredential = \"github-bot\"\nactions = [\"repos.delete\"]\nresources = [\"acme/x\"]\nbase_url = \"{base}\"\n{allow}"), "unknown action \"repos.delete\""),
        (format!("[tools.github]\ncredential = \"slack-bot\"\nactions = [\"issues.get\"]\nresources = [\"acme/x\"]\nbase_url = \"{base}\"\n{allow}"), "is a slack key, not a github one"),
        (format!("[tools.github]\ncredential = \"nope\"\nactions = [\"issues.get\"]\nresources = [\"acme/x\"]\nbase_url = \"{base}\"\n{allow}"), "nope"),
        (format!("[tools.github]\ncredential = \"github-bot\"\nactions = [\"issues.get\"]\nresources = [\"acme/x\"]\nbase_url = \"{base}\"\n"), "plain http"),
        (format!("[tools.github]\ncredential = \"github-bot\"\nactions = [\"issues.get\"]\nresources = [\"*/*\"]\nbase_url = \"{base}\"\n{allow}"), "not owner/repo"),
        ("[tools.github]\nactions = [\"issues.get\"]\nresources = [\"acme/x\"]\n".to_string(), "credential is required"),
        ("[tools.jira]\nactions = [\"x\"]\n".to_string(), "kind \"jira\" is not"),
        ("[tools.api]\nkind = \"http\"\nactions = [\"request\"]\nrules = [{ methods = [\"GET\"], url = \"https://a.example/\" }, { methods = [\"GET\"], url = \"https://b.example/\" }]\n".to_string(), "must share an origin"),
    ] {
        let err = load(&host, &grant).err().unwrap_or_else(|| panic!("{grant} loaded"));
        assert!(err.contains(needle), "{grant}: {err}");
    }
}
