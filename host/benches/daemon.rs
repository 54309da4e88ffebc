//! Load test of the daemon: `POST /v1/agents/hello/invoke` with a fresh
//! instance per event, at concurrency 1 to 64, against a baseline axum
//! handler that does the same JSON work without any sandbox, in the same
//! run; then a soak at concurrency 32 that reports errors and resident
//! memory over time.
//!
//! Run with `cargo bench -p clawcage-host --bench daemon`. Environment:
//! `LOAD_SECS` (per level, default 3), `LEVELS` (concurrency levels,
//! default `1,2,4,8,16,32,64`; repeat one to see the spread),
//! `SOAK_SECS` (default 60; 0 skips).
//! Client and server share this machine's cores, as they would behind a
//! local proxy; the figures are for comparing the two servers, not for
//! absolute capacity.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use clawcage::daemon::{Bundle, Daemon, DaemonOptions};
use serde_json::{Value, json};

mod support;
use support::init_state;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

struct Level {
    requests: u64,
    errors: u64,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Drives `url` with `concurrency` clients for `duration`.
async fn drive(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    concurrency: usize,
    duration: Duration,
) -> Level {
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let http = http.clone();
        let url = url.to_string();
        let token = token.to_string();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let body = json!({"source": "load", "kind": "greet", "payload": {"name": format!("w{worker}")}});
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let read = response.bytes().await.is_ok();
                        status.is_success() && read
                    }
                    Err(_) => false,
                };
                latencies.push(t.elapsed());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let at = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    Level {
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// The baseline: the same route and JSON work, no sandbox.
async fn baseline() -> String {
    let app = axum::Router::new().route(
        "/v1/agents/hello/invoke",
        post(|Json(event): Json<Value>| async move {
            let name = event["payload"]["name"].as_str().unwrap_or("world").to_string();
            Json(json!({"id": "evt", "agent": "hello", "result": format!("Hello, {name}!"), "elapsed_ms": 0.0}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a test run) does nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let load_secs = env_secs("LOAD_SECS", 3);
    let soak_secs = env_secs("SOAK_SECS", 60);
    let wasm = support::wasm_dir();

    let dir = tempfile::tempdir().unwrap();
    let (state, token) = init_state(dir.path());
    let manifest = dir.path().join("hello.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"hello\"\n[component]\npath = {:?}\n[concurrency]\nmax_concurrent = 64\nmax_queued = 4096\n",
            wasm.join("hello.wasm")
        ),
    )
    .unwrap();

    // The servers get their own runtime; the client another.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (daemon_url, baseline_url, daemon) = server_runtime.block_on(async {
        let mut options = DaemonOptions::new(state.clone());
        options.max_concurrent = 64;
        options.engine.max_concurrent_instances = 128;
        let daemon = Daemon::open(options).unwrap();
        daemon
            .deploy(
                "hello",
                Bundle::from_manifest_file(&manifest).unwrap(),
                "bench",
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = clawcage::daemon::api::router(daemon.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (url, baseline().await, daemon)
    });
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    client_runtime.block_on(async {
        let http = clawcage::outbound::client_builder(clawcage::outbound::DEFAULT_CONNECT_TIMEOUT)
            .unwrap()
            .pool_max_idle_per_host(128)
            .build()
            .unwrap();
        let daemon_invoke = format!("{daemon_url}/v1/agents/hello/invoke");
        let baseline_invoke = format!("{baseline_url}/v1/agents/hello/invoke");
        // Warm up both (connections, compiled code).
        drive(&http, &daemon_invoke, &token, 4, Duration::from_secs(1)).await;
        drive(&http, &baseline_invoke, &token, 4, Duration::from_secs(1)).await;
        println!("concurrency | clawcage req/s p50 p99 errors | baseline req/s p50 p99 errors | ratio");
        let levels: Vec<usize> = std::env::var("LEVELS")
            .ok()
            .map(|levels| levels.split(',').filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 2, 4, 8, 16, 32, 64]);
        for concurrency in levels {
            let duration = Duration::from_secs(load_secs);
            let ours = drive(&http, &daemon_invoke, &token, concurrency, duration).await;
            let base = drive(&http, &baseline_invoke, &token, concurrency, duration).await;
            println!(
                "{concurrency:>11} | {:>8.0} {:>9.2?} {:>9.2?} {:>3} | {:>8.0} {:>9.2?} {:>9.2?} {:>3} | {:.2}",
                ours.per_second,
                ours.p50,
                ours.p99,
                ours.errors,
                base.per_second,
                base.p50,
                base.p99,
                base.errors,
                ours.per_second / base.per_second
            );
        }
        if soak_secs > 0 {
            println!("soak: concurrency 32 for {soak_secs} s");
            let start_rss = rss_mib();
            let slices = 6;
            let mut total = 0;
            let mut errors = 0;
            for slice in 0..slices {
                let level = drive(
                    &http,
                    &daemon_invoke,
                    &token,
                    32,
                    Duration::from_secs(soak_secs.div_ceil(slices)),
                )
                .await;
                total += level.requests;
                errors += level.errors;
                println!(
                    "  slice {}: {:.0} req/s, p99 {:.2?}, errors {}, RSS {:.1} MiB",
                    slice + 1,
                    level.per_second,
                    level.p99,
                    level.errors,
                    rss_mib()
                );
            }
            println!(
                "soak: {total} requests, {errors} errors, RSS {start_rss:.1} MiB -> {:.1} MiB",
                rss_mib()
            );
        }
    });
    drop(daemon);
}
