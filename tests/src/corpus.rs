//! A recorded wire corpus, replayed at the HTTP level: exchanges captured
//! from a real OpenAI-compatible server (see `tests/corpus/*/record.py`),
//! served back byte for byte.
//!
//! The replay server answers a request only if its body equals a recorded
//! request body (the `model` field aside, which names the local file the
//! real server loaded): so a test that passes proves both that the host
//! still sends exactly what the real server accepted, and that it reads
//! exactly what the real server answered. A request that matches nothing is
//! answered 400 with the closest recorded body, so drift shows at once.
//!
//! Responses are sent in small pieces cut at arbitrary bytes (inside JSON,
//! inside UTF-8 sequences), as a network may deliver them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One recorded exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The scenario's name (the file's stem).
    pub scenario: String,
    /// The request path.
    pub path: String,
    /// The request body as sent.
    pub request: Value,
    /// The HTTP status.
    pub status: u16,
    /// The response's content type.
    pub content_type: String,
    /// The response body, byte for byte.
    pub body: String,
}

/// The corpus directory of one server.
pub fn dir(server: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(server)
}

/// Loads every exchange of `dir`.
pub fn load(dir: &Path) -> Vec<Exchange> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("reading the corpus");
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push(Exchange {
            scenario: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: value["request"]["path"].as_str().unwrap_or("").to_string(),
            request: value["request"]["body"].clone(),
            status: value["response"]["status"].as_u64().unwrap_or(0) as u16,
            content_type: value["response"]["content_type"]
                .as_str()
                .unwrap_or("application/json")
                .to_string(),
            body: value["response"]["body"].as_str().unwrap_or("").to_string(),
        });
    }
    out
}

/// A body with its `model` field set to `model`.
fn with_model(body: &Value, model: &str) -> Value {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.insert("model".into(), json!(model));
    }
    body
}

struct Replay {
    exchanges: Vec<Exchange>,
}

/// A running replay server.
pub struct ReplayServer {
    /// Its address.
    pub addr: SocketAddr,
}

impl ReplayServer {
    /// Serves `exchanges` on an ephemeral loopback port.
    pub async fn start(exchanges: Vec<Exchange>) -> Self {
        let state = Arc::new(Replay { exchanges });
        let app = Router::new().fallback(answer).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding loopback");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr }
    }

    /// The base URL (the API root, as a binding's `base_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// Cuts `body` into pieces of 1 to 61 bytes, at arbitrary (not character)
/// boundaries.
fn pieces(body: &str) -> Vec<bytes::Bytes> {
    let bytes = body.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    let mut step = 7;
    while at < bytes.len() {
        let end = (at + step).min(bytes.len());
        out.push(bytes::Bytes::copy_from_slice(&bytes[at..end]));
        at = end;
        step = (step * 5 + 3) % 61 + 1;
    }
    out
}

async fn answer(State(replay): State<Arc<Replay>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let bytes = axum::body::to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let found = replay.exchanges.iter().find(|e| {
        e.path == path && with_model(&body, e.request["model"].as_str().unwrap_or("")) == e.request
    });
    // A path the server does not serve gets its recorded 404, whatever the
    // body.
    let found = found.or_else(|| {
        (!replay
            .exchanges
            .iter()
            .any(|e| e.path == path && e.status != 404))
        .then(|| replay.exchanges.iter().find(|e| e.status == 404))
        .flatten()
    });
    let Some(exchange) = found else {
        let closest = replay
            .exchanges
            .iter()
            .filter(|e| e.path == path)
            .min_by_key(|e| {
                let recorded = e.request.to_string();
                let sent = with_model(&body, e.request["model"].as_str().unwrap_or("")).to_string();
                recorded.len().abs_diff(sent.len())
                    + recorded
                        .bytes()
                        .zip(sent.bytes())
                        .filter(|(a, b)| a != b)
                        .count()
            });
        let message = format!(
            "no recorded exchange matches POST {path} {body}; closest: {}",
            closest.map_or("none".to_string(), |e| format!(
                "{} {}",
                e.scenario, e.request
            ))
        );
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/json")],
            json!({"error": {"message": message, "type": "corpus_mismatch"}}).to_string(),
        )
            .into_response();
    };
    let stream = futures_util::stream::iter(
        pieces(&exchange.body)
            .into_iter()
            .map(Ok::<_, std::io::Error>),
    );
    (
        StatusCode::from_u16(exchange.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", exchange.content_type.clone())],
        Body::from_stream(stream),
    )
        .into_response()
}
