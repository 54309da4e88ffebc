//! The dashboard in a real browser: headless Chromium (Debian's `chromium`
//! and `chromium-driver`, installed by `.ci/run`) driven over WebDriver
//! against a daemon on loopback, with a fake provider behind it.
//!
//! An operator signs in, adds keys, assigns another model and key to an
//! agent's binding and sees the next call reach them, invokes agents and
//! sees the usage chart and the invocation list change, revokes a key and
//! sees the next call refused, pauses and resumes an agent, trusts a
//! publisher behind a confirmation and deploys a signed version, verifies
//! the audit chain and signs out. Along the way: a key's value appears in
//! no page source, cookie, local or session storage, nor the daemon's log;
//! every page carries the CSP, labels every control and fits a phone; a
//! cross-site form post is refused; a viewer changes nothing. A screenshot
//! of each page is saved under `target/dashboard/`.
//!
//! Its own test binary: it installs a process-wide log subscriber, to read
//! what the daemon logged.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use clawcage::cli::{InitCommand, StateArgs};
use clawcage::daemon::{Daemon, DaemonOptions};
use clawcage::registry::signing::PublisherKey;
use clawcage_tests::fake_provider::FakeProvider;
use clawcage_tests::{HOSTILE, test_options};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const KEY_MAIN: &str = "sk-ant-api03-BrowserMainQ7vN2kLp9xRt4WmZ8cHs3JbY6uFd1GeA5oKi0qTnVwXyMzLr7Bc4Hd2Jf6Kg8Lm1Np3Qr5St7Uv9Wx0Yz2AAA";
const KEY_ALT: &str = "sk-ant-api03-BrowserAltZ1xC2vB3nM4aS5dF6gH7jK8lQ9wE0rT1yU2iO3pA4sD5fG6hJ7kL8zX9cV0bN1mQ2wE3rT4yU5iO6pAAA";

/// What the daemon logged, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer into the log's buffer.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn install(&self) {
        let buffer = self.0.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,clawcage::guest=off,hyper=info,h2=info,reqwest=info")
            .with_writer(move || LogWriter(buffer.clone()))
            .with_ansi(false)
            .init();
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The browser programs, or why the test cannot run.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let found = |name: &str| {
        ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"]
            .iter()
            .map(|dir| PathBuf::from(dir).join(name))
            .find(|path| path.is_file())
    };
    match (found("chromium"), found("chromedriver")) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ if std::env::var_os("CLAWCAGE_REQUIRE_CLIENTS").is_some() => {
            panic!(
                "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
            )
        }
        _ => {
            eprintln!("skipped: chromium and chromedriver are not installed");
            None
        }
    }
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    process: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn start_driver(program: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = Command::new(program)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        process,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = clawcage::outbound::client_builder(clawcage::outbound::DEFAULT_CONNECT_TIMEOUT)
        .unwrap()
        .build()
        .unwrap();
    for _ in 0..200 {
        if let Ok(response) = http.get(format!("{}/status", driver.url)).send().await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not start");
}

async fn start_browser(driver: &Driver, chromium: &PathBuf, profile: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// The daemon in this process, on a loopback port.
struct Running {
    _dir: tempfile::TempDir,
    url: String,
    token: String,
    daemon: Arc<Daemon>,
    http: reqwest::Client,
}

async fn start_daemon() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    InitCommand {
        state: StateArgs {
            state_dir: Some(state.clone()),
        },
    }
    .run(&mut Vec::new())
    .unwrap();
    let token = std::fs::read_to_string(state.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let mut options = DaemonOptions::new(state);
    options.engine = test_options();
    let daemon = Daemon::open(options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = clawcage::daemon::api::router(daemon.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Running {
        _dir: dir,
        url,
        token,
        daemon,
        http: clawcage::outbound::client_builder(clawcage::outbound::DEFAULT_CONNECT_TIMEOUT)
            .unwrap()
            .build()
            .unwrap(),
    }
}

impl Running {
    /// Invokes the agent `asker` over the API.
    async fn invoke_asker(&self, event: &Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/agents/asker/invoke",
            Some(event.clone()),
        )
        .await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
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
}

/// The browser, and what it visited: every page is checked for the key
/// values, labels and width, and screenshotted.
struct Session<'a> {
    client: &'a Client,
    base: String,
    shots: PathBuf,
    visited: Vec<String>,
}

impl Session<'_> {
    async fn goto(&mut self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
        self.visited.push(path.to_string());
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        }
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Clicks what `css` finds (a link or a submit button) and waits for
    /// the page it leads to.
    async fn click(&self, css: &str) {
        self.client
            .execute("window.__left = false;", vec![])
            .await
            .unwrap();
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
        for _ in 0..400 {
            let arrived = self
                .client
                .execute(
                    "return window.__left === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .unwrap_or(json!(false));
            if arrived == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("clicking {css} led nowhere");
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn choose(&self, css: &str, value: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .select_by_value(value)
            .await
            .unwrap();
    }

    /// Checks the page as shown: no key value in its source, every control
    /// labelled, nothing wider than a phone; saves its screenshots.
    async fn check_page(&self, name: &str) {
        let source = self.source().await;
        for secret in [KEY_MAIN, KEY_ALT] {
            assert!(!source.contains(secret), "{name} shows a key value");
            assert!(
                !source.contains(&secret[20..50]),
                "{name} shows part of a key value"
            );
        }
        let unlabelled = self
            .client
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                    .filter(e => !e.labels || e.labels.length === 0).map(e => e.name || e.id);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "{name}: controls without a label");
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        self.check_phone_width(name).await;
    }

    /// The page fits a phone's width: nothing makes the page itself scroll
    /// sideways (wide tables scroll inside themselves).
    async fn check_phone_width(&self, name: &str) {
        self.client.set_window_size(390, 844).await.unwrap();
        let overflow = self
            .client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}-phone.png")), png).unwrap();
        self.client.set_window_size(1280, 900).await.unwrap();
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{name} is wider than a phone by {overflow}px"
        );
    }

    /// What storage and cookies hold.
    async fn stored(&self) -> String {
        let storage = self
            .client
            .execute(
                "return JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)]);",
                vec![],
            )
            .await
            .unwrap();
        let cookies = self.client.get_all_cookies().await.unwrap();
        let cookies: Vec<String> = cookies
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect();
        format!("{storage} {}", cookies.join("; "))
    }

    async fn session_cookie(&self) -> String {
        let cookie = self.client.get_named_cookie("cc_session").await.unwrap();
        format!("cc_session={}", cookie.value())
    }
}

/// How many calls the fake provider got, and their (model, key) pairs.
fn calls(fake: &FakeProvider) -> Vec<(String, String)> {
    fake.received()
        .iter()
        .map(|r| {
            (
                r.body["model"].as_str().unwrap_or_default().to_string(),
                r.header("x-api-key").unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Bars of the usage chart with a height above zero.
async fn bars(session: &Session<'_>) -> i64 {
    session
        .client
        .execute(
            "return [...document.querySelectorAll('#tokens-chart rect.bar')].filter(r => Number(r.getAttribute('height')) > 0).length;",
            vec![],
        )
        .await
        .unwrap()
        .as_i64()
        .unwrap()
}

/// Total tokens the usage page's by-agent table shows.
async fn tokens_shown(session: &Session<'_>) -> i64 {
    session
        .client
        .execute(
            "const t = document.querySelector('#by-agent + table tbody tr td:nth-child(3)'); return t ? Number(t.textContent) : 0;",
            vec![],
        )
        .await
        .unwrap()
        .as_i64()
        .unwrap()
}

async fn rows(session: &Session<'_>) -> usize {
    session
        .client
        .find_all(Locator::Css("main table tbody tr"))
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_daemon_from_a_real_browser() {
    let Some((chromium, driver_program)) = browser_programs() else {
        return;
    };
    let log = Log::default();
    log.install();
    let daemon = start_daemon().await;
    let fake = FakeProvider::start().await;
    let driver = start_driver(&driver_program).await;
    let profile = tempfile::tempdir().unwrap();
    let client = start_browser(&driver, &chromium, profile.path()).await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let mut ui = Session {
        client: &client,
        base: daemon.url.clone(),
        shots,
        visited: Vec::new(),
    };

    // Signed out, every page leads to sign-in.
    ui.goto("/ui/agents").await;
    assert_eq!(ui.path().await, "/ui/login");
    ui.check_page("sign-in").await;
    ui.type_into("#token", "cc_not_a_token").await;
    ui.click("form[action='/ui/login'] button").await;
    assert!(
        ui.source()
            .await
            .contains("not an active admin or viewer token")
    );
    ui.type_into("#token", &daemon.token).await;
    ui.click("form[action='/ui/login'] button").await;
    assert_eq!(ui.path().await, "/ui/");

    // BYOK: two keys, typed into the form once.
    ui.goto("/ui/keys").await;
    for (id, secret) in [("main", KEY_MAIN), ("alt", KEY_ALT)] {
        ui.type_into("#id", id).await;
        ui.choose("#provider", "anthropic").await;
        ui.type_into("#secret", secret).await;
        ui.click("form[action='/ui/keys'] button").await;
        assert_eq!(ui.path().await, "/ui/keys");
    }
    let page = ui.source().await;
    assert!(page.contains(">main<") && page.contains(">alt<"), "{page}");
    ui.check_page("keys").await;

    // An agent with a model binding on key "main".
    let manifest = format!(
        "name = \"asker\"\ndescription = \"Answers questions with a model.\"\n[component]\npath = \"x.wasm\"\n[models.default]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"main\"\nbase_url = \"{}\"\n[budget]\ntokens_per_day = 100000\nusd_micros_per_month = 5000000\n",
        fake.anthropic_url()
    );
    let component =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(HOSTILE).unwrap());
    let (status, answer) = daemon
        .call(
            reqwest::Method::PUT,
            "/v1/agents/asker",
            Some(json!({"manifest": manifest, "component": component})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    // The usage page before any call: an empty chart.
    ui.goto("/ui/usage").await;
    assert_eq!(bars(&ui).await, 0);
    assert_eq!(tokens_shown(&ui).await, 0);

    // A test event from the agent's page reaches the manifest's model.
    ui.goto("/ui/agents/asker").await;
    ui.type_into("#kind", "ask").await;
    ui.type_into("#payload", r#"{"binding": "default", "prompt": "hi"}"#)
        .await;
    ui.click("form[action='/ui/agents/asker/test'] button")
        .await;
    let page = ui.source().await;
    assert!(page.contains("<strong>ok</strong>"), "{page}");
    assert_eq!(
        calls(&fake),
        [("claude-haiku-4-5".to_string(), KEY_MAIN.to_string())]
    );

    // Another model and key, assigned from the page: the next call uses them.
    ui.goto("/ui/agents/asker").await;
    ui.type_into("#model-default", "claude-sonnet-4-5").await;
    ui.choose("#key-default", "alt").await;
    ui.click("form[action='/ui/agents/asker/bindings/default'] button")
        .await;
    assert_eq!(ui.path().await, "/ui/agents/asker");
    let page = ui.source().await;
    assert!(
        page.contains("assigned by admin") && page.contains("claude-haiku-4-5 · main"),
        "{page}"
    );
    ui.check_page("agent").await;
    let ask =
        json!({"source": "api", "kind": "ask", "payload": {"binding": "default", "prompt": "hi"}});
    for _ in 0..3 {
        let (status, answer) = daemon.invoke_asker(&ask).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(
        calls(&fake)[1..],
        vec![("claude-sonnet-4-5".to_string(), KEY_ALT.to_string()); 3]
    );

    // The usage chart and the invocation list show the calls.
    ui.goto("/ui/usage").await;
    assert_eq!(bars(&ui).await, 1, "today's bar");
    let tokens_before = tokens_shown(&ui).await;
    assert!(tokens_before > 0);
    ui.check_page("usage").await;
    ui.goto("/ui/invocations?agent=asker").await;
    assert_eq!(rows(&ui).await, 4);
    let (status, _) = daemon.invoke_asker(&ask).await;
    assert_eq!(status, 200);
    ui.client.refresh().await.unwrap();
    assert_eq!(rows(&ui).await, 5);
    ui.check_page("invocations").await;
    ui.goto("/ui/usage").await;
    assert!(tokens_shown(&ui).await > tokens_before);
    // An invocation's page: its model call, metadata only.
    ui.goto("/ui/invocations?agent=asker").await;
    ui.click("main table tbody tr:first-child td a").await;
    let page = ui.source().await;
    assert!(
        page.contains("claude-sonnet-4-5") && page.contains(">alt<"),
        "{page}"
    );
    assert!(
        !page.contains("\"prompt\"") && !page.contains(">hi<"),
        "no payload: {page}"
    );
    ui.check_page("invocation").await;

    // Revoking "alt" from the keys page: the next call is refused, and no
    // request reaches the provider.
    ui.goto("/ui/keys").await;
    assert!(
        ui.source()
            .await
            .contains("Revoking stops asker from using it at once.")
    );
    ui.click("form[action='/ui/keys/alt/revoke'] button").await;
    assert!(ui.source().await.contains("revoked "));
    let before = calls(&fake).len();
    let (_, answer) = daemon.invoke_asker(&ask).await;
    assert!(answer.to_string().contains("revoked"), "{answer}");
    assert_eq!(
        calls(&fake).len(),
        before,
        "a revoked key reached the provider"
    );

    // Back to the manifest's binding; pause and resume.
    ui.goto("/ui/agents/asker").await;
    ui.click("form[action='/ui/agents/asker/bindings/default/clear'] button")
        .await;
    ui.click("form[action='/ui/agents/asker/pause'] button")
        .await;
    assert!(ui.source().await.contains("paused"));
    let (status, answer) = daemon.invoke_asker(&ask).await;
    assert_eq!((status, &answer["error"]["code"]), (409, &json!("paused")));
    ui.click("form[action='/ui/agents/asker/resume'] button")
        .await;
    let (status, _) = daemon.invoke_asker(&ask).await;
    assert_eq!(status, 200);
    assert_eq!(
        calls(&fake).last().unwrap(),
        &("claude-haiku-4-5".to_string(), KEY_MAIN.to_string())
    );
    ui.goto("/ui/agents").await;
    ui.check_page("agents").await;

    // The registry: two signed versions; the publisher trusted behind a
    // confirmation; a version deployed to the agent.
    let (publisher, _) = PublisherKey::generate().unwrap();
    let registry =
        clawcage::registry::client::RegistryClient::new(&daemon.url, &daemon.token).unwrap();
    let hostile = std::fs::read(HOSTILE).unwrap();
    for version in ["1.0.0", "1.1.0"] {
        registry
            .push_component("acme/asker", version, &hostile, Some(&publisher))
            .await
            .unwrap();
    }
    let (_, listed) = daemon
        .call(reqwest::Method::GET, "/v1/registry/repositories", None)
        .await;
    let repository = &listed["repositories"][0];
    assert_eq!(repository["name"], "acme/asker");
    assert_eq!(repository["versions"].as_array().unwrap().len(), 2);
    assert_eq!(
        repository["versions"][1]["signers"][0],
        publisher.public_hex()
    );
    ui.goto("/ui/registry").await;
    assert!(ui.source().await.contains("(not trusted for acme)"));
    ui.choose("#change", "add").await;
    ui.type_into("#namespace", "acme").await;
    ui.type_into("#key", &publisher.public_hex()).await;
    ui.click("form[action='/ui/registry/trust'] button").await;
    let page = ui.source().await;
    assert!(
        page.contains("Confirm the trust change") && page.contains("No deployed agent stops."),
        "{page}"
    );
    ui.check_page("trust-confirmation").await;
    ui.click("form[action='/ui/registry/trust'] button").await;
    assert_eq!(ui.path().await, "/ui/registry");
    assert!(ui.source().await.contains("(trusted)"));
    ui.choose("#deploy-acme-asker-1\\.1\\.0", "asker").await;
    ui.click("#deploy-acme-asker-1\\.1\\.0 ~ button").await;
    assert_eq!(ui.path().await, "/ui/agents/asker");
    let page = ui.source().await;
    assert!(
        page.contains("acme/asker@1.1.0") && page.contains("signed by"),
        "{page}"
    );
    ui.goto("/ui/registry").await;
    ui.check_page("registry").await;

    // The audit log: filtered, and its chain verified.
    ui.goto("/ui/audit?kind=key").await;
    let page = ui.source().await;
    assert!(
        page.contains("change=revoke") && !page.contains("event_id="),
        "{page}"
    );
    ui.goto("/ui/audit").await;
    ui.click("form[action='/ui/audit/verify'] button").await;
    let page = ui.source().await;
    assert!(page.contains("The chain is intact"), "{page}");
    // The head shown is a record's hash (records appended since follow it).
    let at = page.find("class=\"hash\">").unwrap() + 13;
    let head = &page[at..at + 64];
    let (_, records) = daemon
        .call(reqwest::Method::GET, "/v1/audit?order=desc&limit=100", None)
        .await;
    assert!(
        records["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["hash"] == head),
        "{head}"
    );
    ui.check_page("audit").await;
    ui.goto("/ui/").await;
    ui.check_page("overview").await;

    // Every page carries the CSP, with the browser's own session.
    let cookie = ui.session_cookie().await;
    let http = clawcage::outbound::client_builder(clawcage::outbound::DEFAULT_CONNECT_TIMEOUT)
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ui.visited.iter().chain(&["/ui/login".to_string()]) {
        let response = http
            .get(format!("{}{path}", daemon.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("unsafe"),
            "{path}: {csp}"
        );
        let body = response.text().await.unwrap();
        assert!(
            !body.contains(KEY_MAIN) && !body.contains(KEY_ALT),
            "{path}"
        );
    }

    // A form on another site posting to the dashboard is refused, and
    // changes nothing.
    let other_site = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = other_site.local_addr().unwrap().port();
    let form = format!(
        "<!doctype html><title>elsewhere</title><form method=post action=\"{}/ui/keys/main/revoke\"><input type=hidden name=csrf value=x><button id=go>Win a prize</button></form>",
        daemon.url
    );
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move { axum::response::Html(form) }),
        );
        axum::serve(other_site, app).await.unwrap();
    });
    ui.client
        .goto(&format!("http://localhost:{other_port}/"))
        .await
        .unwrap();
    ui.click("#go").await;
    let page = ui.source().await;
    assert!(page.contains("refused"), "{page}");
    let (_, keys) = daemon.call(reqwest::Method::GET, "/v1/keys", None).await;
    let main = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "main")
        .unwrap();
    assert!(
        main["revoked_at"].is_null(),
        "a cross-site post revoked a key"
    );

    // Nothing the browser keeps, and nothing the daemon logged, holds a key.
    ui.goto("/ui/keys").await;
    let stored = ui.stored().await;
    assert!(stored.contains("cc_session="), "{stored}");
    let logged = log.text();
    assert!(
        logged.contains("invocation"),
        "the daemon's log was captured"
    );
    for secret in [KEY_MAIN, KEY_ALT] {
        assert!(!stored.contains(secret) && !stored.contains(&secret[20..50]));
        assert!(
            !logged.contains(secret) && !logged.contains(&secret[20..50]),
            "the log holds a key"
        );
    }

    // Sign out: the session ends, in the browser and on the daemon.
    ui.click("form[action='/ui/logout'] button").await;
    assert_eq!(ui.path().await, "/ui/login");
    ui.goto("/ui/keys").await;
    assert_eq!(ui.path().await, "/ui/login");
    let response = http
        .get(format!("{}/ui/keys", daemon.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "the old session still opens pages");

    // A viewer reads everything and changes nothing.
    let (status, created) = daemon
        .call(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(json!({"name": "auditor", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201);
    ui.goto("/ui/login").await;
    ui.type_into("#token", created["token"].as_str().unwrap())
        .await;
    ui.click("form[action='/ui/login'] button").await;
    for path in ["/ui/keys", "/ui/agents/asker", "/ui/registry"] {
        ui.goto(path).await;
        let forms = ui
            .client
            .find_all(Locator::Css(
                "main form[method=post]:not([action='/ui/audit/verify'])",
            ))
            .await
            .unwrap();
        assert!(
            forms.is_empty(),
            "{path} offers a viewer {} forms",
            forms.len()
        );
    }
    assert!(ui.source().await.contains("auditor (viewer)"));
    let viewer_cookie = ui.session_cookie().await;
    ui.goto("/ui/audit").await;
    let page = ui.source().await;
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &page[at..at + 64];
    let refused = http
        .post(format!("{}/ui/agents/asker/pause", daemon.url))
        .header("cookie", &viewer_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(daemon.daemon.paused("asker").is_none());
    ui.click("form[action='/ui/audit/verify'] button").await;
    assert!(
        ui.source().await.contains("The chain is intact"),
        "a viewer verifies too"
    );

    // Sign-ins, the refused one, changes and sign-outs are on the record.
    let (_, records) = daemon
        .call(
            reqwest::Method::GET,
            "/v1/audit?kind=admin&limit=1000",
            None,
        )
        .await;
    let actions: Vec<String> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["event"]["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("ui "))
        })
        .map(|r| {
            format!(
                "{} {} {}",
                r["event"]["actor"].as_str().unwrap(),
                r["event"]["action"].as_str().unwrap(),
                r["event"]["allowed"]
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "unknown ui sign-in false",
            "admin ui sign-in true",
            "unknown ui POST /ui/keys/main/revoke (from another site) false",
            "admin ui sign-out true",
            "auditor ui sign-in true",
            "auditor ui POST /ui/agents/asker/pause false",
        ]
    );
    client.close().await.unwrap();
}
