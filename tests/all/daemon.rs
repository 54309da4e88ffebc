//! The daemon end to end: its HTTP API on a loopback port, deployments,
//! invocations, webhooks, backpressure, key rotation and the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clawcage::cli::{InitCommand, StateArgs};
use clawcage::daemon::hooks::{sign_sha256, sign_slack};
use clawcage::daemon::{Daemon, DaemonOptions};
use clawcage_tests::fake_provider::FakeProvider;
use clawcage_tests::{HELLO, HOSTILE, test_options};
use serde_json::{Value, json};

const KEY_V1: &str = "sk-ant-api03-dMBLOCokfM7bekat3tQfza7OiZmC0PyjZViTj17fo6BbLkU8Y0xX7GSLtKMh3CMpTBX0bHC2fYlpVmgVR2kA1yShZfxqFAA";
const KEY_V2: &str = "sk-ant-api03-1PJWAsYRegvKopNTKRzEzSrMORpMOe5tz9DLIIC8Dco9ddtzLjF0dJU5AsQDwSSJO12FTqYZ0hleVn7tBk47GqCPOBb2oAA";
const HOOK_SECRET: &str = "whsec-github-JcPqRwh10DKCXAp50aQG6HNB5Tzkw8Im";

pub(crate) struct Running {
    _dir: tempfile::TempDir,
    pub(crate) state: PathBuf,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) daemon: Arc<Daemon>,
    pub(crate) http: reqwest::Client,
}

pub(crate) async fn start() -> Running {
    start_with(|_| {}).await
}

/// A daemon whose options `configure` adjusts first.
pub(crate) async fn start_with(configure: impl FnOnce(&mut DaemonOptions)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    InitCommand {
        state: StateArgs {
            state_dir: Some(state.clone()),
        },
    }
    .run(&mut Vec::new())
    .unwrap();
    let token = std::fs::read_to_string(state.join("admin.token")).unwrap();
    let mut options = DaemonOptions::new(state.clone());
    options.engine = test_options();
    options.max_concurrent = 8;
    options.drain_timeout = Duration::from_secs(5);
    configure(&mut options);
    let daemon = Daemon::open(options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = clawcage::daemon::api::router(daemon.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Running {
        _dir: dir,
        state,
        url,
        token,
        daemon,
        http: clawcage::providers::http::client().unwrap(),
    }
}

impl Running {
    /// Puts a webhook signing secret in the daemon's vault.
    pub(crate) fn add_webhook_secret(&self, id: &str, secret: &str) {
        self.daemon
            .services
            .vault
            .add(
                id,
                "webhook",
                &clawcage::secret::Secret::from(secret.to_string()),
            )
            .unwrap();
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn deploy(&self, name: &str, component: &str, sections: &str) -> (u16, Value) {
        let manifest = format!("name = {name:?}\n[component]\npath = \"x.wasm\"\n{sections}");
        let component =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(component).unwrap());
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/agents/{name}"),
            Some(json!({"manifest": manifest, "component": component})),
        )
        .await
    }

    pub(crate) async fn invoke(&self, agent: &str, event: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/agents/{agent}/invoke"),
            Some(event),
        )
        .await
    }

    async fn wait_for(&self, id: &str) -> Value {
        for _ in 0..200 {
            let (_, state) = self
                .call(reqwest::Method::GET, &format!("/v1/invocations/{id}"), None)
                .await;
            if state["status"] == "done" {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("invocation {id} did not finish");
    }

    pub(crate) fn audit_text(&self) -> String {
        self.daemon.audit.flush().unwrap();
        self.daemon
            .audit
            .read(0, 100_000)
            .unwrap()
            .iter()
            .map(|r| r.event.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_invoke_and_clear_errors() {
    let daemon = start().await;
    // No token, or a wrong one: 401 with a challenge, and an audit record.
    let anonymous = daemon
        .http
        .get(format!("{}/v1/agents", daemon.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let forged = daemon
        .http
        .get(format!("{}/v1/agents", daemon.url))
        .bearer_auth("cc_0000")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let (status, deployed) = daemon.deploy("hello", HELLO, "").await;
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(deployed["deployed"]["name"], "hello");
    let (status, listed) = daemon.call(reqwest::Method::GET, "/v1/agents", None).await;
    assert_eq!(
        (status, listed["agents"].as_array().unwrap().len()),
        (200, 1)
    );

    let (status, outcome) = daemon
        .invoke(
            "hello",
            json!({"source": "test", "kind": "greet", "payload": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["result"], "Hello, Ada!");
    let (status, error) = daemon
        .invoke("nobody", json!({"source": "test", "kind": "greet"}))
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("unknown-agent"))
    );
    let (status, error) = daemon.invoke("hello", json!({"kind": 3})).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("bad-event"))
    );
    let (status, failed) = daemon
        .invoke(
            "hello",
            json!({"source": "test", "kind": "greet", "payload": {"name": 7}}),
        )
        .await;
    assert_eq!(
        (status, failed["error"]["kind"].as_str()),
        (422, Some("agent-error")),
        "{failed}"
    );

    // Async: an id now, the result when polled.
    let (status, started) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/agents/hello/invoke?async=true",
            Some(json!({"source": "test", "kind": "greet", "payload": {"name": "Bo"}})),
        )
        .await;
    assert_eq!(status, 202);
    let done = daemon.wait_for(started["id"].as_str().unwrap()).await;
    assert_eq!(done["result"], "Hello, Bo!");

    // A bad deployment changes nothing.
    let (status, refused) = daemon
        .deploy("hello", HOSTILE, "[tools.nothing]\nactions = []\n")
        .await;
    assert_eq!(status, 400, "{refused}");
    let (_, still) = daemon
        .invoke(
            "hello",
            json!({"source": "test", "kind": "greet", "payload": {"name": "Cy"}}),
        )
        .await;
    assert_eq!(still["result"], "Hello, Cy!");

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
        metrics.contains("clawcage_invocations_total{agent=\"hello\",outcome=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clawcage_invocations_total{agent=\"hello\",outcome=\"agent-error\"} 1")
    );
    assert!(metrics.contains("# TYPE clawcage_queue_depth gauge"));

    let audit = daemon.audit_text();
    assert!(audit.contains(r#""kind":"admin""#) && audit.contains(r#""allowed":false"#));
    assert!(audit.contains(r#""change":"deploy""#));
    assert_eq!(audit.matches(r#""kind":"invocation""#).count(), 4);
    // Metadata only: the payloads' names never appear.
    assert!(!audit.contains("Ada") && !audit.contains("Hello,"));
    let (_, verified) = daemon
        .call(reqwest::Method::GET, "/v1/audit/verify", None)
        .await;
    assert_eq!(verified["problem"], Value::Null, "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_run_only_with_a_valid_fresh_signature_and_once() {
    let daemon = start().await;
    daemon.add_webhook_secret("github-hook", HOOK_SECRET);
    daemon.add_webhook_secret("slack-hook", "slack-signing-secret-pQAYl86NkiseGbcM2nYe");
    let sections = "[[triggers]]\nsource = \"github\"\nevents = [\"issues.opened\"]\nsecret = \"github-hook\"\n\n[[triggers]]\nsource = \"slack\"\nsecret = \"slack-hook\"\n";
    let (status, body) = daemon.deploy("echoer", HOSTILE, sections).await;
    assert_eq!(status, 200, "{body}");

    let payload = json!({"action": "opened", "issue": {"number": 1}}).to_string();
    let post = |signature: String, delivery: &'static str, body: String| {
        daemon
            .http
            .post(format!("{}/hooks/github", daemon.url))
            .header("x-github-event", "issues")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
    };
    let good = sign_sha256(HOOK_SECRET.as_bytes(), payload.as_bytes());
    let response = post(good.clone(), "d-1", payload.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let started: Value = response.json().await.unwrap();
    let id = started["started"][0]["id"].as_str().unwrap().to_string();
    let done = daemon.wait_for(&id).await;
    // The hostile fixture's unknown-kind answer proves it ran with this event.
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("issues.opened"),
        "{done}"
    );

    // The same delivery again runs nothing.
    let again: Value = post(good, "d-1", payload.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["duplicate"], true);
    // A wrong signature, or a tampered body, is refused and runs nothing.
    let bad = post(
        sign_sha256(b"wrong", payload.as_bytes()),
        "d-2",
        payload.clone(),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 401);
    let tampered = post(
        sign_sha256(HOOK_SECRET.as_bytes(), payload.as_bytes()),
        "d-3",
        payload.replace("opened", "closed"),
    )
    .await
    .unwrap();
    assert_eq!(tampered.status(), 401);

    // Slack: the URL check is answered; a stale timestamp is a replay.
    let now = clawcage::db::now_unix();
    let challenge = json!({"type": "url_verification", "challenge": "abc123"}).to_string();
    let slack = |timestamp: i64, body: String| {
        daemon
            .http
            .post(format!("{}/hooks/slack", daemon.url))
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header(
                "x-slack-signature",
                sign_slack(
                    b"slack-signing-secret-pQAYl86NkiseGbcM2nYe",
                    timestamp,
                    body.as_bytes(),
                ),
            )
            .body(body)
            .send()
    };
    let answered: Value = slack(now, challenge.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answered["challenge"], "abc123");
    let replayed = slack(now - 3600, challenge).await.unwrap();
    assert_eq!(replayed.status(), 401);

    let audit = daemon.audit_text();
    assert_eq!(
        audit.matches(r#""kind":"webhook_refused""#).count(),
        3,
        "{audit}"
    );
    assert_eq!(audit.matches(r#""kind":"invocation""#).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_agent_answers_429_while_another_still_runs() {
    let daemon = start().await;
    let busy =
        "[limits]\ndeadline_ms = 1500\n\n[concurrency]\nmax_concurrent = 1\nmax_queued = 1\n";
    assert_eq!(daemon.deploy("spinner", HOSTILE, busy).await.0, 200);
    assert_eq!(daemon.deploy("hello", HELLO, "").await.0, 200);
    let spin = || daemon.invoke("spinner", json!({"source": "test", "kind": "loop"}));
    let (first, second, third, other) = tokio::join!(
        spin(),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            spin().await
        },
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let response = daemon
                .http
                .post(format!("{}/v1/agents/spinner/invoke", daemon.url))
                .bearer_auth(&daemon.token)
                .json(&json!({"source": "test", "kind": "loop"}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry = response.headers().get("retry-after").cloned();
            let body = response.text().await.unwrap_or_default();
            (status, retry, body)
        },
        async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            daemon
                .invoke(
                    "hello",
                    json!({"source": "test", "kind": "greet", "payload": {"name": "Di"}}),
                )
                .await
        }
    );
    assert_eq!(third.0, 429, "{}", third.2);
    assert_eq!(third.1.unwrap(), "1");
    assert_eq!(other.0, 200, "{}", other.1);
    // The two admitted spinners ran into their deadline: a limit, 503.
    assert_eq!(
        (first.0, first.1["error"]["kind"].as_str()),
        (503, Some("limit"))
    );
    assert_eq!(second.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_through_the_api_is_used_by_the_next_invocation() {
    let daemon = start().await;
    let fake = FakeProvider::start().await;
    let (status, _) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"id": "main", "provider": "anthropic", "secret": KEY_V1})),
        )
        .await;
    assert_eq!(status, 201);
    let sections = format!(
        "[models.default]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"main\"\nbase_url = \"{}\"\n",
        fake.anthropic_url()
    );
    assert_eq!(daemon.deploy("asker", HOSTILE, &sections).await.0, 200);
    let ask = json!({"source": "test", "kind": "ask", "payload": {"binding": "default", "prompt": "hello secret prompt"}});
    assert_eq!(daemon.invoke("asker", ask.clone()).await.0, 200);
    let (status, rotated) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/keys/main/rotate",
            Some(json!({"secret": KEY_V2})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert!(rotated.to_string().find(KEY_V2).is_none());
    assert_eq!(daemon.invoke("asker", ask.clone()).await.0, 200);
    let received = fake.received();
    assert_eq!(received[0].header("x-api-key"), Some(KEY_V1));
    assert_eq!(received[1].header("x-api-key"), Some(KEY_V2));
    let (status, _) = daemon
        .call(reqwest::Method::DELETE, "/v1/keys/main", None)
        .await;
    assert_eq!(status, 200);
    let (_, after) = daemon.invoke("asker", ask).await;
    assert!(
        after["result"].as_str().unwrap().contains("revoked"),
        "{after}"
    );
    // A revoked key can be forgotten, once; an active one cannot.
    let (status, deleted) = daemon
        .call(reqwest::Method::POST, "/v1/keys/main/delete", None)
        .await;
    assert_eq!((status, &deleted["deleted"]["id"]), (200, &json!("main")));
    let (status, _) = daemon
        .call(reqwest::Method::POST, "/v1/keys/main/delete", None)
        .await;
    assert_eq!(status, 404);

    // The audit log has the calls and key changes, and no prompt, answer
    // or key.
    let audit = daemon.audit_text();
    assert_eq!(audit.matches(r#""kind":"inference""#).count(), 2, "{audit}");
    assert_eq!(audit.matches(r#""kind":"key""#).count(), 4);
    for forbidden in ["secret prompt", "Hello from anthropic", KEY_V1, KEY_V2] {
        assert!(!audit.contains(forbidden), "{forbidden}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_deleting_or_reordering_audit_rows_is_detected() {
    let daemon = start().await;
    assert_eq!(daemon.deploy("hello", HELLO, "").await.0, 200);
    for name in ["A", "B", "C"] {
        daemon
            .invoke(
                "hello",
                json!({"source": "test", "kind": "greet", "payload": {"name": name}}),
            )
            .await;
    }
    daemon.daemon.audit.flush().unwrap();
    let verify = || {
        let mut out = Vec::new();
        let result = clawcage::cli::AuditCommand {
            daemon: clawcage::cli::DaemonArgs {
                state: StateArgs {
                    state_dir: Some(daemon.state.clone()),
                },
                ..Default::default()
            },
            action: clawcage::cli::AuditAction::Verify,
        }
        .run(&mut out);
        (result, String::from_utf8(out).unwrap())
    };
    let (ok, text) = verify();
    assert!(ok.is_ok() && text.starts_with("ok: "), "{text}");
    let db = rusqlite_path(&daemon.state);
    for (tamper, expected) in [
        (
            "UPDATE audit SET event = replace(event, 'hello', 'other') WHERE seq = 3",
            "record 3 was edited",
        ),
        (
            "DELETE FROM audit WHERE seq = 3",
            "record 4 follows record 2",
        ),
        (
            "UPDATE audit SET seq = 99 WHERE seq = 2",
            "record 99 follows record 1",
        ),
    ] {
        let copy = daemon.state.with_file_name("tampered");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&daemon.state, &copy);
        let copied_db = copy.join(db.file_name().unwrap());
        let conn = open_db(&copied_db);
        conn(tamper);
        let mut out = Vec::new();
        let error = clawcage::cli::AuditCommand {
            daemon: clawcage::cli::DaemonArgs {
                state: StateArgs {
                    state_dir: Some(copy.clone()),
                },
                ..Default::default()
            },
            action: clawcage::cli::AuditAction::Verify,
        }
        .run(&mut out)
        .unwrap_err();
        assert!(error.contains(expected), "{tamper}: {error}");
    }
}

fn rusqlite_path(state: &Path) -> PathBuf {
    state.join(clawcage::db::DB_FILE)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Opens a copied database and returns a function that runs SQL on it.
fn open_db(path: &Path) -> impl Fn(&str) {
    let db = clawcage::db::Database::open(path.parent().unwrap()).unwrap();
    move |sql: &str| db.lock().execute_batch(sql).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_per_occurrence() {
    let daemon = start().await;
    let sections = "[[triggers]]\nsource = \"schedule\"\ncron = \"0 9 * * MON\"\nkind = \"echo\"\npayload = { report = \"weekly\" }\n";
    assert_eq!(daemon.deploy("reporter", HOSTILE, sections).await.0, 200);
    // Monday 2026-11-30 08:59:30 UTC to 09:00:30: one occurrence.
    let before = chrono::DateTime::from_timestamp(1_796_029_170, 0).unwrap();
    let after = before + chrono::Duration::seconds(60);
    let fired = clawcage::daemon::schedule::fire_due(&daemon.daemon, before, after);
    assert_eq!(fired.len(), 1);
    // The same window again (a restart, a slow tick) fires nothing.
    assert!(clawcage::daemon::schedule::fire_due(&daemon.daemon, before, after).is_empty());
    // The hour after holds none.
    let later = after + chrono::Duration::seconds(3600);
    assert!(clawcage::daemon::schedule::fire_due(&daemon.daemon, after, later).is_empty());
    let done = daemon.wait_for(&fired[0]).await;
    assert_eq!(done["id"], "schedule:reporter:echo:1796029200");
    assert_eq!(done["result"], r#"{"report":"weekly"}"#);
    // A bad cron expression is refused at deploy.
    let (status, refused) = daemon
        .deploy(
            "broken",
            HOSTILE,
            "[[triggers]]\nsource = \"schedule\"\ncron = \"every day\"\nkind = \"x\"\n",
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cron")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_takes_the_next_event_and_in_flight_ones_finish() {
    let daemon = start().await;
    let v1 = "[limits]\ndeadline_ms = 800\n";
    assert_eq!(daemon.deploy("swap", HOSTILE, v1).await.0, 200);
    let (in_flight, (deployed, next)) = tokio::join!(
        daemon.invoke("swap", json!({"source": "test", "kind": "loop"})),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let deployed = daemon.deploy("swap", HELLO, "").await.0;
            let next = daemon
                .invoke(
                    "swap",
                    json!({"source": "test", "kind": "greet", "payload": {"name": "Eve"}}),
                )
                .await;
            (deployed, next)
        }
    );
    assert_eq!(deployed, 200);
    assert_eq!(next.1["result"], "Hello, Eve!");
    // The old version's event ran to its own end (its deadline), not cut
    // short by the deployment.
    assert_eq!(in_flight.1["error"]["kind"], "limit", "{}", in_flight.1);
    assert!(in_flight.1["elapsed_ms"].as_f64().unwrap() >= 790.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_managed_remotely_with_the_cli() {
    let daemon = start().await;
    let run = |args: &[&str], stdin: &str| {
        let mut argv = vec!["clawcage", "key"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--remote", &daemon.url, "--token", daemon.token.trim()]);
        let cli = <clawcage::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        let clawcage::cli::Command::Key(key) = cli.command else {
            unreachable!()
        };
        let mut out = Vec::new();
        let state = daemon.state.clone();
        let mut key = key;
        key.daemon.state.state_dir = Some(state);
        key.run(&mut stdin.as_bytes(), &mut out)
            .map(|()| String::from_utf8(out).unwrap())
    };
    let secret = "sk-ant-api03-LATOAYBHhITBWjUq5GkEIols4gmTBTk4feZKqXyistcGUxpEgQ0EkOnY5Cq0UYvSoyydvjxrHOVVUuVbeWjsUbvkPByEzAA";
    let added =
        tokio::task::block_in_place(|| run(&["add", "remote", "--provider", "anthropic"], secret))
            .unwrap();
    assert!(
        added.contains("added remote (anthropic") && !added.contains(secret),
        "{added}"
    );
    let listed = tokio::task::block_in_place(|| run(&["list"], "")).unwrap();
    assert!(listed.contains("remote"));
    tokio::task::block_in_place(|| run(&["revoke", "remote"], "")).unwrap();
    let again = tokio::task::block_in_place(|| run(&["revoke", "remote"], "")).unwrap_err();
    assert!(again.contains("409"), "{again}");
    let audit = daemon.audit_text();
    assert_eq!(audit.matches(r#""kind":"key""#).count(), 2);
    assert!(!audit.contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_webhooks_need_their_hmac_and_bodies_are_bounded() {
    let daemon = start().await;
    daemon.add_webhook_secret("deploy-hook", "deploy-hook-secret-n5QbhlvAR1UfjTgED4gj");
    let sections =
        "[[triggers]]\nsource = \"webhook\"\nname = \"deploys\"\nsecret = \"deploy-hook\"\n";
    assert_eq!(daemon.deploy("echoer", HOSTILE, sections).await.0, 200);
    let body = json!({"service": "api", "version": "1.2.3"}).to_string();
    let post = |signature: String, body: String| {
        daemon
            .http
            .post(format!("{}/hooks/webhook/deploys", daemon.url))
            .header("x-signature-256", signature)
            .header("x-event-kind", "echo")
            .body(body)
            .send()
    };
    let signed = sign_sha256(b"deploy-hook-secret-n5QbhlvAR1UfjTgED4gj", body.as_bytes());
    let started: Value = post(signed.clone(), body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["started"][0]["id"].as_str().unwrap().to_string();
    let done = daemon.wait_for(&id).await;
    assert_eq!(done["result"], body, "{done}");
    // Without a delivery id, the body's hash makes a redelivery a duplicate.
    let again: Value = post(signed, body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["duplicate"], true);
    let forged = post(sign_sha256(b"guess", body.as_bytes()), body)
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // An event body over the limit is refused before anything reads it.
    let huge = daemon
        .http
        .post(format!("{}/v1/agents/echoer/invoke", daemon.url))
        .bearer_auth(&daemon.token)
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
}

#[tokio::test]
async fn a_daemon_whose_audit_log_stopped_is_not_ready() {
    let running = start().await;
    let ready = |running: &Running| {
        let url = format!("{}/readyz", running.url);
        let http = running.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(ready(&running).await.0, 200);
    let record = || clawcage::audit::AuditEvent::Invocation {
        agent: "x".into(),
        event_id: "e".into(),
        source: "api".into(),
        duration_ms: 1,
        outcome: "ok".into(),
    };
    running.daemon.audit.append(record());
    running.daemon.audit.flush().unwrap();
    // Someone damaged the chain's last record: the writer cannot tell where
    // the chain ends, so it appends nothing more.
    let db = clawcage::db::Database::open(&running.state).unwrap();
    db.lock()
        .execute_batch("UPDATE audit SET hash = X'00FF' WHERE id = (SELECT MAX(id) FROM audit)")
        .unwrap();
    running
        .daemon
        .audit
        .append(clawcage::audit::AuditEvent::Invocation {
            agent: "x".into(),
            event_id: "e".into(),
            source: "api".into(),
            duration_ms: 1,
            outcome: "ok".into(),
        });
    assert!(running.daemon.audit.flush().is_err());
    let (status, body) = ready(&running).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("the audit log stopped: the audit chain's last record cannot be read"),
        "{body}"
    );
}

#[tokio::test]
async fn a_trigger_whose_signing_secret_is_not_in_the_vault_is_refused_at_deploy() {
    let running = start().await;
    let trigger =
        "[[triggers]]\nsource = \"webhook\"\nname = \"deploys\"\nsecret = \"deploy-hook\"\n";
    let (status, body) = running.deploy("hooked", HOSTILE, trigger).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains(
            "triggers[0].secret \\\"deploy-hook\\\" is not in the vault: add it first with `clawcage key add deploy-hook --provider webhook`"
        ),
        "{body}"
    );
    running.add_webhook_secret("deploy-hook", "deploy-hook-secret-n5QbhlvAR1UfjTgED4gj");
    let (status, body) = running.deploy("hooked", HOSTILE, trigger).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_agent_is_shown_in_detail_without_any_secret() {
    let running = start().await;
    running.add_webhook_secret("deploy-hook", "deploy-hook-secret-n5QbhlvAR1UfjTgED4gj");
    let sections = "[budget]\ntokens_per_day = 1000\n[[triggers]]\nsource = \"webhook\"\nname = \"deploys\"\nsecret = \"deploy-hook\"\n";
    assert_eq!(running.deploy("shown", HOSTILE, sections).await.0, 200);
    let (status, body) = running
        .call(reqwest::Method::GET, "/v1/agents/shown", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let agent = &body["agent"];
    assert_eq!(agent["name"], "shown");
    assert_eq!(agent["triggers"], json!(["webhook:deploys"]));
    assert_eq!(agent["manifest"]["budget"]["tokens_per_day"], 1000);
    assert_eq!(agent["manifest"]["triggers"][0]["secret"], "deploy-hook");
    assert_eq!(agent["suspensions"], json!([]));
    assert!(!body.to_string().contains("n5QbhlvAR1UfjTgED4gj"));
    let (status, _) = running
        .call(reqwest::Method::GET, "/v1/agents/nobody", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_assigns_a_model_and_key_to_a_binding_for_the_next_call() {
    let daemon = start().await;
    let fake = FakeProvider::start().await;
    for (id, secret) in [("main", KEY_V1), ("alt", KEY_V2)] {
        let (status, _) = daemon
            .call(
                reqwest::Method::POST,
                "/v1/keys",
                Some(json!({"id": id, "provider": "anthropic", "secret": secret})),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, _) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"id": "gh", "provider": "openai", "secret": "sk-proj-Q7vN2kLp9xRt4WmZ8cHs3JbY6uFd1GeA5oKi0qTnVwXyMzLr"})),
        )
        .await;
    assert_eq!(status, 201);
    let sections = format!(
        "[models.default]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"main\"\nbase_url = \"{}\"\n",
        fake.anthropic_url()
    );
    assert_eq!(daemon.deploy("asker", HOSTILE, &sections).await.0, 200);
    let ask =
        json!({"source": "test", "kind": "ask", "payload": {"binding": "default", "prompt": "hi"}});
    assert_eq!(daemon.invoke("asker", ask.clone()).await.0, 200);

    let path = "/v1/agents/asker/bindings/default";
    let (status, answer) = daemon
        .call(
            reqwest::Method::PUT,
            path,
            Some(json!({"model": "claude-sonnet-4-5", "key": "alt"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let shown = &answer["agent"]["overrides"][0];
    assert_eq!(
        (
            &shown["binding"],
            &shown["model"],
            &shown["key"],
            &shown["manifest_model"],
            &shown["manifest_key"]
        ),
        (
            &json!("default"),
            &json!("claude-sonnet-4-5"),
            &json!("alt"),
            &json!("claude-haiku-4-5"),
            &json!("main")
        )
    );
    assert_eq!(daemon.invoke("asker", ask.clone()).await.0, 200);
    // Refused, and nothing changes: an unknown key, a key of another
    // provider, a binding the agent does not have, nothing to assign.
    for (path, body, expected) in [
        (path, json!({"key": "nope"}), 400),
        (path, json!({"key": "gh"}), 400),
        (
            "/v1/agents/asker/bindings/other",
            json!({"model": "m"}),
            404,
        ),
        (path, json!({}), 400),
        (path, json!({"model": "bad model\n"}), 400),
        (
            "/v1/agents/nobody/bindings/default",
            json!({"model": "m"}),
            404,
        ),
    ] {
        let (status, answer) = daemon
            .call(reqwest::Method::PUT, path, Some(body.clone()))
            .await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    assert_eq!(daemon.invoke("asker", ask.clone()).await.0, 200);
    // The agent as loaded runs the assigned model.
    let (_, shown) = daemon
        .call(reqwest::Method::GET, "/v1/agents/asker", None)
        .await;
    assert_eq!(
        shown["agent"]["manifest"]["models"]["default"]["model"],
        "claude-sonnet-4-5"
    );
    // Cleared: the manifest's again.
    let (status, _) = daemon.call(reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 200);
    assert_eq!(daemon.invoke("asker", ask).await.0, 200);
    let received = fake.received();
    let calls: Vec<(&str, Option<&str>)> = received
        .iter()
        .map(|r| {
            (
                r.body["model"].as_str().unwrap_or(""),
                r.header("x-api-key"),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("claude-haiku-4-5", Some(KEY_V1)),
            ("claude-sonnet-4-5", Some(KEY_V2)),
            ("claude-sonnet-4-5", Some(KEY_V2)),
            ("claude-haiku-4-5", Some(KEY_V1)),
        ]
    );
    // Clearing back to a manifest key that no longer exists is refused,
    // and the assignment stays, in the database and in what runs.
    let (status, _) = daemon
        .call(reqwest::Method::PUT, path, Some(json!({"key": "alt"})))
        .await;
    assert_eq!(status, 200);
    for step in ["/v1/keys/main", "/v1/keys/main/delete"] {
        let method = if step.ends_with("delete") {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        let (status, answer) = daemon.call(method, step, None).await;
        assert_eq!(status, 200, "{step}: {answer}");
    }
    let (status, answer) = daemon.call(reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 400, "{answer}");
    let (_, shown) = daemon
        .call(reqwest::Method::GET, "/v1/agents/asker", None)
        .await;
    assert_eq!(shown["agent"]["overrides"][0]["key"], "alt", "{shown}");
    // Kept in the database too: a redeployment of the same manifest (whose
    // key is gone) loads only because the assignment still applies.
    let (status, answer) = daemon.deploy("asker", HOSTILE, &sections).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = daemon
        .call(
            reqwest::Method::PUT,
            path,
            Some(json!({"key": "alt", "model": "claude-haiku-4-5"})),
        )
        .await;
    assert_eq!(status, 200);
    // The same from the command line, and `agent show` puts the
    // assignment beside the manifest's value.
    let cli = |action: clawcage::cli::AgentAction| {
        let command = clawcage::cli::AgentCommand {
            daemon: clawcage::cli::DaemonArgs {
                remote: Some(daemon.url.clone()),
                token: Some(daemon.token.trim().to_string()),
                ..Default::default()
            },
            output: Default::default(),
            action,
        };
        async move {
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                command
                    .run(&mut out)
                    .map(|()| String::from_utf8(out).unwrap())
            })
            .await
            .unwrap()
        }
    };
    let assigned = cli(clawcage::cli::AgentAction::Assign {
        name: "asker".into(),
        binding: "default".into(),
        model: Some("claude-opus-4-1".into()),
        // An assignment replaces the binding's previous one whole: the
        // manifest's key is gone, so the key is given again.
        key: Some("alt".into()),
    })
    .await
    .unwrap();
    assert!(assigned.contains("model claude-opus-4-1"), "{assigned}");
    let shown = cli(clawcage::cli::AgentAction::Show {
        name: "asker".into(),
    })
    .await
    .unwrap();
    assert!(shown.contains("assigned by an operator"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.contains("claude-opus-4-1") && l.contains("claude-haiku-4-5")),
        "{shown}"
    );
    // Back to the manifest's key, which is gone: refused from the CLI too.
    let refused = cli(clawcage::cli::AgentAction::Unassign {
        name: "asker".into(),
        binding: "default".into(),
    })
    .await
    .unwrap_err();
    assert!(
        refused.message.contains("does not load"),
        "{}",
        refused.message
    );
    // On the record, with key ids only.
    let audit = daemon.audit_text();
    assert_eq!(
        audit.matches(r#""kind":"binding_override""#).count(),
        5,
        "{audit}"
    );
    for secret in [KEY_V1, KEY_V2] {
        assert!(!audit.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_takes_no_event_until_it_is_unpaused() {
    let daemon = start().await;
    assert_eq!(daemon.deploy("hello", HELLO, "").await.0, 200);
    let greet = json!({"source": "api", "kind": "greet", "payload": {"name": "Ada"}});
    let post = |path: &'static str| daemon.call(reqwest::Method::POST, path, None);
    assert_eq!(post("/v1/agents/nobody/pause").await.0, 404);
    let (status, paused) = post("/v1/agents/hello/pause").await;
    assert_eq!((status, &paused["paused"]["by"]), (200, &json!("admin")));
    // Pausing again changes nothing and records nothing more.
    assert_eq!(post("/v1/agents/hello/pause").await.0, 200);
    let (status, refused) = daemon.invoke("hello", greet.clone()).await;
    assert_eq!((status, &refused["error"]["code"]), (409, &json!("paused")));
    let (status, _) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/agents/hello/invoke?async=true",
            Some(greet.clone()),
        )
        .await;
    assert_eq!(
        status, 409,
        "an async event (webhooks, schedules) is refused too"
    );
    let (_, shown) = daemon
        .call(reqwest::Method::GET, "/v1/agents/hello", None)
        .await;
    assert_eq!(shown["agent"]["paused"]["by"], "admin");

    let (status, unpaused) = post("/v1/agents/hello/unpause").await;
    assert_eq!((status, &unpaused["unpaused"]), (200, &json!(true)));
    assert_eq!(daemon.invoke("hello", greet.clone()).await.0, 200);
    let (_, again) = post("/v1/agents/hello/unpause").await;
    assert_eq!(again["unpaused"], false);

    // On the record, once each; the audit log filters by kind and pages
    // newest first.
    let (_, records) = daemon
        .call(reqwest::Method::GET, "/v1/audit?kind=pause", None)
        .await;
    let changes: Vec<&str> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"]["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["pause", "resume"]);
    let (status, _) = daemon
        .call(reqwest::Method::GET, "/v1/audit?kind=nonsense", None)
        .await;
    assert_eq!(status, 400);
    let (_, newest) = daemon
        .call(reqwest::Method::GET, "/v1/audit?order=desc&limit=3", None)
        .await;
    let seqs: Vec<i64> = newest["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "{seqs:?}");
    // The export: every record, one JSON object a line, chained.
    let export = daemon
        .http
        .get(format!("{}/v1/audit/export", daemon.url))
        .bearer_auth(&daemon.token)
        .send()
        .await
        .unwrap();
    assert_eq!(export.headers()["content-type"], "application/jsonl");
    let text = export.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= seqs[0] as usize - 1, "{}", lines.len());
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        assert_eq!(
            pair[1]["seq"].as_i64(),
            pair[0]["seq"].as_i64().map(|s| s + 1)
        );
    }

    // Invocations page by row id.
    for _ in 0..2 {
        assert_eq!(daemon.invoke("hello", greet.clone()).await.0, 200);
    }
    let (_, first) = daemon
        .call(reqwest::Method::GET, "/v1/invocations?limit=2", None)
        .await;
    let first = first["invocations"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    let (_, rest) = daemon
        .call(
            reqwest::Method::GET,
            &format!("/v1/invocations?before={}", first[1]["id"]),
            None,
        )
        .await;
    assert_eq!(rest["invocations"].as_array().unwrap().len(), 1);

    // A removed agent's pause goes with it.
    post("/v1/agents/hello/pause").await;
    assert_eq!(
        daemon
            .call(reqwest::Method::DELETE, "/v1/agents/hello", None)
            .await
            .0,
        204
    );
    assert_eq!(daemon.deploy("hello", HELLO, "").await.0, 200);
    assert_eq!(daemon.invoke("hello", greet).await.0, 200);
}
