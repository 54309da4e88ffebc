//! Host-added latency on the inference path: `BoundModel::complete` (caps,
//! budget reservation and settlement, vault decryption, adapter, the leak
//! guard's checks) against a direct reqwest call with the same body to the same
//! fake Anthropic server on loopback, with 1 KiB and 32 KiB prompts.
//! Criterion reports means; the run then prints p50/p99 of both paths from
//! interleaved samples, and the streaming time to first delta.
//!
//! Run with `cargo bench -p clawcage-host --bench inference`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::post;
use clawcage::bindings::inference::{CompletionRequest, ContentPart, Message, Role, StreamEvent};
use clawcage::db::Database;
use clawcage::inference::{CallContext, ModelBackend};
use clawcage::ledger::{BudgetLimits, Ledger};
use clawcage::pricing::PriceTable;
use clawcage::providers::binding::Services;
use clawcage::providers::model::BoundModel;
use clawcage::secret::Secret;
use clawcage::vault::{MasterKey, Vault};
use criterion::{Criterion, criterion_group, criterion_main};

const RESPONSE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5-20260101","content":[{"type":"text","text":"Hello there, this is a short answer."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":300,"output_tokens":9}}"#;

fn sse_body() -> String {
    let mut text = String::new();
    let mut event =
        |name: &str, data: &str| text.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    event(
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"usage":{"input_tokens":300,"output_tokens":1}}}"#,
    );
    event(
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    );
    for word in ["Hello", " there", ", this", " is", " streamed."] {
        event(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{word}"}}}}"#
            ),
        );
    }
    event(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    );
    event(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
    );
    event("message_stop", r#"{"type":"message_stop"}"#);
    text
}

async fn fake_server() -> String {
    let sse = sse_body();
    let app = Router::new().route(
        "/v1/messages",
        post(move |body: String| {
            let sse = sse.clone();
            async move {
                if body.contains("\"stream\":true") {
                    ([("content-type", "text/event-stream")], Body::from(sse)).into_response()
                } else {
                    ([("content-type", "application/json")], RESPONSE).into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn request(prompt_bytes: usize) -> CompletionRequest {
    CompletionRequest {
        system: Some("You are terse.".into()),
        system_cache: None,
        messages: vec![Message {
            role: Role::User,
            content: vec![ContentPart::Text("x".repeat(prompt_bytes))],
            cache: None,
        }],
        max_tokens: 256,
        temperature: Some(0.0),
        stop_sequences: vec![],
        tools: vec![],
        tool_choice: None,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    model: BoundModel,
    http: reqwest::Client,
    url: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(&dir.path().join("state")).unwrap());
    let vault = Arc::new(Vault::open(db.clone(), MasterKey::generate()).unwrap());
    vault
        .add(
            "main",
            "anthropic",
            &Secret::from("sk-ant-api03-O7lrTw4s03H4HBzTo11lfJ8HnHbmJfFGsppVhhSPevwUOYvxFghUsUfkEwgYu3F2mz7qjL3qe5cgoE1ReV6oZDpbI2yYqAA".to_string()),
        )
        .unwrap();
    let services = Arc::new(Services::new(vault, Ledger::new(db), PriceTable::builtin()).unwrap());
    let url = fake_server().await;
    let spec: clawcage::manifest::ModelBinding = toml::from_str(&format!(
        "provider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"main\"\nbase_url = \"{url}\"\n"
    ))
    .unwrap();
    let model = BoundModel::from_manifest(
        "bench",
        "default",
        &spec,
        &BudgetLimits {
            usd_micros_per_day: Some(u64::MAX / 4),
            ..BudgetLimits::default()
        },
        Duration::from_secs(30),
        &services,
    )
    .unwrap();
    Setup {
        _dir: dir,
        model,
        http: services.http.clone(),
        url,
    }
}

fn call() -> CallContext {
    CallContext {
        deadline: Instant::now() + Duration::from_secs(30),
        event_id: "bench".into(),
    }
}

async fn direct(setup: &Setup, request: &CompletionRequest) {
    let body = clawcage::providers::anthropic::request_body("claude-haiku-4-5", request, false);
    let response = setup
        .http
        .post(format!("{}/v1/messages", setup.url))
        .header("x-api-key", "sk-ant-api03-O7lrTw4s03H4HBzTo11lfJ8HnHbmJfFGsppVhhSPevwUOYvxFghUsUfkEwgYu3F2mz7qjL3qe5cgoE1ReV6oZDpbI2yYqAA")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    std::hint::black_box(clawcage::providers::anthropic::parse_response(&value).unwrap());
}

async fn through_host(setup: &Setup, request: &CompletionRequest) {
    std::hint::black_box(
        setup
            .model
            .complete(request.clone(), &call())
            .await
            .unwrap(),
    );
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn parts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setup = rt.block_on(setup());
    let services = setup.model.services.clone();
    let mut group = c.benchmark_group("inference_parts");
    let key = services.vault.secret("main", "anthropic").unwrap();
    group.bench_function("leak_guard_for_a_call", |b| {
        b.iter(|| Services::guard_for("anthropic", &key, None))
    });
    group.bench_function("vault_secret", |b| {
        b.iter(|| services.vault.secret("main", "anthropic").unwrap())
    });
    let limits = BudgetLimits {
        usd_micros_per_day: Some(u64::MAX / 4),
        ..BudgetLimits::default()
    };
    let record = clawcage::ledger::UsageRecord {
        agent: "parts".into(),
        binding: "default".into(),
        provider: "anthropic".into(),
        model: "m".into(),
        key_id: None,
        input_tokens: 1,
        output_tokens: 1,
        cost_micros: 1,
        latency_ms: 1,
        outcome: "ok".into(),
        event_id: None,
        ..Default::default()
    };
    group.bench_function("ledger_reserve_settle", |b| {
        b.iter(|| {
            let reservation = services
                .ledger
                .reserve("parts", &limits, 1000, 1000)
                .unwrap();
            services.ledger.settle(reservation, &record)
        })
    });
    let guard = Services::guard_for("anthropic", &key, None);
    let text = "Hello there, this is a short answer.".repeat(4);
    group.bench_function("check_150_bytes", |b| b.iter(|| guard.check(&text).is_ok()));
    // Ordinary prose with JSON and base64-looking runs, 32 KiB.
    let long = "The quick brown fox {\"jumps\": \"over\"} the lazy dog, id QmFzZTY0IHRleHQ= ok. "
        .repeat(32 * 1024 / 80);
    group.bench_function("check_32KiB", |b| b.iter(|| guard.check(&long).is_ok()));
    group.finish();
}

fn latency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setup = rt.block_on(setup());
    let mut group = c.benchmark_group("inference");
    for (name, bytes) in [("1KiB", 1024), ("32KiB", 32 * 1024)] {
        let request = request(bytes);
        group.bench_function(format!("direct_reqwest_{name}"), |b| {
            b.iter(|| rt.block_on(direct(&setup, &request)))
        });
        group.bench_function(format!("clawcage_{name}"), |b| {
            b.iter(|| rt.block_on(through_host(&setup, &request)))
        });

        // Interleaved samples for percentiles of the difference.
        let (mut plain, mut hosted) = (Vec::new(), Vec::new());
        // Alternate which path goes first, so neither always runs on a
        // connection or cache the other just warmed.
        for i in 0..4_000 {
            let time_direct = || {
                let t = Instant::now();
                rt.block_on(direct(&setup, &request));
                t.elapsed()
            };
            let time_host = || {
                let t = Instant::now();
                rt.block_on(through_host(&setup, &request));
                t.elapsed()
            };
            if i % 2 == 0 {
                plain.push(time_direct());
                hosted.push(time_host());
            } else {
                hosted.push(time_host());
                plain.push(time_direct());
            }
        }
        let (p50d, p99d) = (percentile(&mut plain, 0.5), percentile(&mut plain, 0.99));
        let (p50h, p99h) = (percentile(&mut hosted, 0.5), percentile(&mut hosted, 0.99));
        println!(
            "percentiles {name}: direct p50 {p50d:?} p99 {p99d:?}; clawcage p50 {p50h:?} p99 {p99h:?}; added p50 {:?} p99 {:?}",
            p50h.saturating_sub(p50d),
            p99h.saturating_sub(p99d)
        );
    }

    // Streaming: time to the first text delta, host vs a direct SSE read.
    let request = request(1024);
    let (mut plain, mut hosted) = (Vec::new(), Vec::new());
    for _ in 0..2_000 {
        let t = Instant::now();
        rt.block_on(async {
            let body =
                clawcage::providers::anthropic::request_body("claude-haiku-4-5", &request, true);
            let mut response = setup
                .http
                .post(format!("{}/v1/messages", setup.url))
                .header("x-api-key", "k")
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let mut parser = clawcage::providers::sse::SseParser::new();
            'read: while let Some(chunk) = response.chunk().await.unwrap() {
                for event in parser.push(&chunk).unwrap() {
                    if event.event == "content_block_delta" {
                        break 'read;
                    }
                }
            }
        });
        plain.push(t.elapsed());
        let t = Instant::now();
        let first_delta = rt.block_on(async {
            let mut events = setup.model.stream(request.clone(), &call()).await.unwrap();
            let mut first_delta = None;
            while let Some(event) = events.recv().await {
                if first_delta.is_none() && matches!(event.unwrap(), StreamEvent::TextDelta(_)) {
                    first_delta = Some(t.elapsed());
                }
            }
            first_delta.unwrap()
        });
        hosted.push(first_delta);
    }
    let (p50d, p99d) = (percentile(&mut plain, 0.5), percentile(&mut plain, 0.99));
    let (p50h, p99h) = (percentile(&mut hosted, 0.5), percentile(&mut hosted, 0.99));
    println!(
        "percentiles first delta: direct p50 {p50d:?} p99 {p99d:?}; clawcage p50 {p50h:?} p99 {p99h:?}; added p50 {:?} p99 {:?}",
        p50h.saturating_sub(p50d),
        p99h.saturating_sub(p99d)
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = parts, latency
}
criterion_main!(benches);
