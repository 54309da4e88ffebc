//! Fake GitHub REST, Slack Web API and Notion API servers on one loopback
//! port, each under its own prefix (`/gh`, `/slack/api`, `/notion`), that
//! speak the real endpoints, auth and error shapes and record every
//! request.
//!
//! Scenarios, chosen by the resource named:
//! - GitHub repository `acme/limited`: 403 with `x-ratelimit-remaining: 0`
//!   and a reset 42 s ahead (primary limit); `acme/secondary`: 403 with
//!   `retry-after: 30` (secondary limit); `acme/echo`: the issue's body
//!   quotes the `Authorization` header; `acme/moved`: 302 to the cloud
//!   metadata address; `acme/paged`: issues over three pages linked with
//!   `Link: rel="next"`.
//! - Slack channel `CLIMITED`: 429 with `Retry-After: 7`; `CECHO`: the
//!   message echoes the token; `CMISSING`: `{"ok": false, "error":
//!   "channel_not_found"}`. History pages with `next_cursor`.
//! - Notion: database `…0429` answers 429 with `Retry-After: 3`; page
//!   `…0e0e` has a parent that is not granted (`…dead`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct ToolRequest {
    /// The method.
    pub method: String,
    /// The path and query, as received.
    pub uri: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body (JSON when it parses, else `null`).
    pub body: Value,
}

impl ToolRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The running fakes.
pub struct FakeTools {
    /// Their address.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<ToolRequest>>>,
}

/// A Notion id for tests: 28 zeros and four hex digits.
pub fn notion_id(suffix: &str) -> String {
    format!("{:0>32}", suffix)
}

impl FakeTools {
    /// Starts the fakes on an ephemeral loopback port.
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(route).with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding loopback");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serving");
        });
        Self { addr, received }
    }

    /// Base URL of the fake GitHub.
    pub fn github_url(&self) -> String {
        format!("http://{}/gh", self.addr)
    }

    /// Base URL of the fake Slack.
    pub fn slack_url(&self) -> String {
        format!("http://{}/slack/api", self.addr)
    }

    /// Base URL of the fake Notion.
    pub fn notion_url(&self) -> String {
        format!("http://{}/notion", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<ToolRequest> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

async fn route(
    State(received): State<Arc<Mutex<Vec<ToolRequest>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = ToolRequest {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request.clone());
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    if let Some(rest) = path.strip_prefix("/gh/") {
        github(&request, rest, &query)
    } else if let Some(method_name) = path.strip_prefix("/slack/api/") {
        slack(&request, method_name, &query)
    } else if let Some(rest) = path.strip_prefix("/notion/v1/") {
        notion(&request, rest)
    } else if let Some(rest) = path.strip_prefix("/api/") {
        generic(&request, rest)
    } else {
        (StatusCode::NOT_FOUND, "no such fake").into_response()
    }
}

fn json_response(status: StatusCode, value: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn issue(repo: &str, number: u64, body: &str) -> Value {
    json!({
        "id": 1000 + number,
        "number": number,
        "title": format!("Issue {number}"),
        "body": body,
        "state": "open",
        "labels": [],
        "html_url": format!("https://github.com/{repo}/issues/{number}"),
        "user": {"login": "octocat"}
    })
}

fn github(request: &ToolRequest, rest: &str, query: &str) -> Response {
    let Some(auth) = request.header("authorization") else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest"}),
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let ["repos", owner, repo, tail @ ..] = parts.as_slice() else {
        return json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    };
    let full = format!("{owner}/{repo}");
    match full.as_str() {
        "acme/limited" => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() + 42)
                .unwrap_or(0);
            return (
                StatusCode::FORBIDDEN,
                [
                    ("content-type", "application/json".to_string()),
                    ("x-ratelimit-limit", "5000".to_string()),
                    ("x-ratelimit-remaining", "0".to_string()),
                    ("x-ratelimit-reset", reset.to_string()),
                ],
                json!({"message": "API rate limit exceeded for installation ID 1.", "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}).to_string(),
            )
                .into_response();
        }
        "acme/secondary" => {
            return (
                StatusCode::FORBIDDEN,
                [("content-type", "application/json"), ("retry-after", "30")],
                json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}).to_string(),
            )
                .into_response();
        }
        "acme/moved" => {
            return (
                StatusCode::FOUND,
                [(
                    "location",
                    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                )],
                "",
            )
                .into_response();
        }
        _ => {}
    }
    let echo = if full == "acme/echo" {
        format!("the token you sent: {auth}")
    } else {
        "Something is broken".to_string()
    };
    match (request.method.as_str(), tail) {
        ("GET", ["issues"]) if full == "acme/paged" => {
            let page: u64 = query
                .split('&')
                .find_map(|p| p.strip_prefix("page="))
                .and_then(|p| p.parse().ok())
                .unwrap_or(1);
            let issues: Vec<Value> = (0..2).map(|i| issue(&full, page * 10 + i, "")).collect();
            let mut response = json_response(StatusCode::OK, Value::Array(issues));
            if page < 3 {
                let link = format!(
                    "<http://{}/gh/repos/acme/paged/issues?per_page=2&page={}>; rel=\"next\"",
                    request.header("host").unwrap_or("127.0.0.1"),
                    page + 1
                );
                response
                    .headers_mut()
                    .insert("link", link.parse().expect("header"));
            }
            response
        }
        ("GET", ["issues"]) => json_response(
            StatusCode::OK,
            json!([issue(&full, 1, &echo), issue(&full, 2, "")]),
        ),
        ("GET", ["issues", number]) => match number.parse::<u64>() {
            Ok(n) => json_response(StatusCode::OK, issue(&full, n, &echo)),
            Err(_) => json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
        },
        ("POST", ["issues"]) => json_response(
            StatusCode::CREATED,
            issue(&full, 7, request.body["body"].as_str().unwrap_or("")),
        ),
        ("POST", ["issues", number, "comments"]) => json_response(
            StatusCode::CREATED,
            json!({"id": 55, "body": request.body["body"], "issue_url": format!("https://api.github.com/repos/{full}/issues/{number}")}),
        ),
        ("POST", ["issues", _, "labels"]) => {
            let labels: Vec<Value> = request.body["labels"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|name| json!({"name": name, "color": "d73a4a"}))
                .collect();
            if labels.is_empty() {
                return json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed", "errors": [{"resource": "Label", "code": "missing_field"}]}),
                );
            }
            json_response(StatusCode::OK, Value::Array(labels))
        }
        ("GET", ["pulls", number]) => json_response(
            StatusCode::OK,
            json!({"number": number.parse::<u64>().unwrap_or(0), "title": "A pull request", "state": "open", "merged": false}),
        ),
        ("GET", ["contents", path @ ..]) => json_response(
            StatusCode::OK,
            json!({"type": "file", "path": path.join("/"), "encoding": "base64", "content": "aGVsbG8K"}),
        ),
        _ => json_response(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    }
}

fn slack(request: &ToolRequest, method_name: &str, query: &str) -> Response {
    let Some(auth) = request.header("authorization") else {
        return json_response(StatusCode::OK, json!({"ok": false, "error": "not_authed"}));
    };
    let param = |name: &str| -> Option<String> {
        request.body[name].as_str().map(str::to_string).or_else(|| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .map(str::to_string)
        })
    };
    let channel = param("channel").unwrap_or_default();
    match channel.as_str() {
        "CLIMITED" => {
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "").into_response();
        }
        "CMISSING" => {
            return json_response(
                StatusCode::OK,
                json!({"ok": false, "error": "channel_not_found"}),
            );
        }
        _ => {}
    }
    match method_name {
        "chat.postMessage" => {
            let text = if channel == "CECHO" {
                format!("echo: {auth}")
            } else {
                param("text").unwrap_or_default()
            };
            json_response(
                StatusCode::OK,
                json!({"ok": true, "channel": channel, "ts": "1700000000.000100", "message": {"type": "message", "text": text, "ts": "1700000000.000100"}}),
            )
        }
        "conversations.history" => {
            let page = param("cursor").unwrap_or_else(|| "page1".into());
            let (messages, next) = match page.as_str() {
                "page1" => (vec!["one", "two"], "page2"),
                _ => (vec!["three"], ""),
            };
            json_response(
                StatusCode::OK,
                json!({
                    "ok": true,
                    "messages": messages.iter().map(|t| json!({"type": "message", "text": t})).collect::<Vec<_>>(),
                    "has_more": !next.is_empty(),
                    "response_metadata": {"next_cursor": next}
                }),
            )
        }
        "reactions.add" => json_response(StatusCode::OK, json!({"ok": true})),
        _ => json_response(
            StatusCode::OK,
            json!({"ok": false, "error": "unknown_method"}),
        ),
    }
}

fn notion(request: &ToolRequest, rest: &str) -> Response {
    if request.header("authorization").is_none() || request.header("notion-version").is_none() {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"object": "error", "status": 401, "code": "unauthorized", "message": "API token is invalid."}),
        );
    }
    let parts: Vec<&str> = rest.split('/').collect();
    match (request.method.as_str(), parts.as_slice()) {
        ("POST", ["pages"]) => json_response(
            StatusCode::OK,
            json!({"object": "page", "id": "00000000-0000-0000-0000-00000000beef", "parent": request.body["parent"], "url": "https://www.notion.so/beef"}),
        ),
        ("GET", ["pages", id]) => {
            let parent = if id.ends_with("0e0e") {
                notion_id("dead")
            } else {
                notion_id("aaaa")
            };
            json_response(
                StatusCode::OK,
                json!({"object": "page", "id": id, "parent": {"type": "page_id", "page_id": parent}, "properties": {}}),
            )
        }
        ("POST", ["databases", id, "query"]) => {
            if id.ends_with("0429") {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("content-type", "application/json"), ("retry-after", "3")],
                    json!({"object": "error", "status": 429, "code": "rate_limited", "message": "You have been rate limited. Please try again in a few minutes."}).to_string(),
                )
                    .into_response();
            }
            let (results, next) = match request.body["start_cursor"].as_str() {
                None => (vec!["row-1", "row-2"], Some("cursor-2")),
                Some(_) => (vec!["row-3"], None),
            };
            json_response(
                StatusCode::OK,
                json!({
                    "object": "list",
                    "results": results.iter().map(|r| json!({"object": "page", "id": r})).collect::<Vec<_>>(),
                    "has_more": next.is_some(),
                    "next_cursor": next
                }),
            )
        }
        ("PATCH", ["blocks", id, "children"]) => json_response(
            StatusCode::OK,
            json!({"object": "list", "results": request.body["children"], "block_id": id}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"object": "error", "status": 404, "code": "object_not_found", "message": "Could not find object."}),
        ),
    }
}

/// A generic API under `/api/`: `/api/v1/...` answers 200 with what it got;
/// `/api/admin` is outside any rule a test grants. The `v1/echo-*` routes
/// send the `x-api-key` they received back, each in another encoding:
/// `echo-key` as JSON, `echo-slashes` as PHP writes JSON (`/` as `\/`),
/// `echo-unicode` with every character a `\u00XX` escape, `echo-split`
/// across two JSON fields, `echo-percent` percent-encoded, `echo-base64`
/// inside a base64 `Authorization` dump, `echo-error` at byte 500 of a
/// plain-text 500. `v1/echo?text=…` answers with the query's text (a
/// service that reflects what the agent sent).
fn generic(request: &ToolRequest, rest: &str) -> Response {
    use base64::Engine as _;
    let key = request.header("x-api-key").unwrap_or("").to_string();
    let text = |status: StatusCode, body: String| {
        (status, [("content-type", "text/plain")], body).into_response()
    };
    let raw_json = |body: String| {
        (StatusCode::OK, [("content-type", "application/json")], body).into_response()
    };
    let (first, second) = key.split_at(key.len() / 2);
    match rest {
        "v1/echo-slashes" => raw_json(format!(r#"{{"key":"{}"}}"#, key.replace('/', "\\/"))),
        "v1/echo-unicode" => raw_json(format!(
            r#"{{"key":"{}"}}"#,
            key.chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect::<String>()
        )),
        "v1/echo-split" => json_response(
            StatusCode::OK,
            json!({"first": first, "note": "x", "second": second}),
        ),
        "v1/echo-percent" => text(
            StatusCode::OK,
            key.bytes().map(|b| format!("%{b:02X}")).collect(),
        ),
        "v1/echo-base64" => text(
            StatusCode::OK,
            base64::engine::general_purpose::STANDARD
                .encode(format!("x-api-key: {key}\r\naccept: */*\r\n")),
        ),
        "v1/echo-error" => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}{key} (trace)", "x".repeat(500)),
        ),
        // What an echo server with compression on sends (whatever was
        // asked for), and one that honours ranges.
        "v1/echo-gzip" => (
            StatusCode::OK,
            [
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            key.clone(),
        )
            .into_response(),
        "v1/echo-range" => (
            StatusCode::PARTIAL_CONTENT,
            [
                ("content-type", "text/plain"),
                ("content-range", "bytes 0-6/40"),
            ],
            key[..7].to_string(),
        )
            .into_response(),
        "v1/echo" => {
            let query = request.uri.split_once('?').map_or("", |(_, q)| q);
            let said = query
                .split('&')
                .find_map(|p| p.strip_prefix("text="))
                .unwrap_or("");
            json_response(StatusCode::OK, json!({"text": said}))
        }
        "v1/echo-key" => json_response(StatusCode::OK, json!({"key": request.header("x-api-key")})),
        "v1/limited" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            "slow down",
        )
            .into_response(),
        _ => json_response(
            StatusCode::OK,
            json!({"path": rest, "method": request.method, "body": request.body}),
        ),
    }
}
