//! How fast the dashboard's pages render with a full state: 100 agents,
//! 10 000 invocations (with their model calls, spread over 30 days) and
//! 100 000 audit records, seeded by this bench. Each page is fetched over
//! loopback with a signed-in session, one request at a time, and its
//! latency (request sent to body read) reported as p50, p99 and max; the
//! goal is p99 ≤ 50 ms for every page. Verifying the chain and exporting
//! the log are timed too (they read every record).
//!
//! Run with `cargo bench -p clawcage-host --bench dashboard`. Environment:
//! `REQUESTS` (per page, default 200).

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clawcage::audit::AuditEvent;
use clawcage::daemon::invocations::InvocationRow;
use clawcage::daemon::{Bundle, Daemon, DaemonOptions};
use clawcage::ledger::UsageRecord;

mod support;
use support::init_state;

const AGENTS: usize = 100;
const INVOCATIONS: usize = 10_000;
const AUDIT_RECORDS: usize = 100_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Seeds the state: agents, keys, invocations with model calls, and audit
/// records up to [`AUDIT_RECORDS`].
fn seed(daemon: &Daemon, state: &std::path::Path) {
    let started = Instant::now();
    let wasm = support::wasm_dir();
    for (key, body) in [
        (
            "main",
            "dMBLOCokfM7bekat3tQfza7OiZmC0PyjZViTj17fo6BbLkU8Y0xX7GSLtKMh3CMpTBX0bHC2fYlpVmgVR2kA1yShZfxqFAA",
        ),
        (
            "backup",
            "1PJWAsYRegvKopNTKRzEzSrMORpMOe5tz9DLIIC8Dco9ddtzLjF0dJU5AsQDwSSJO12FTqYZ0hleVn7tBk47GqCPOBb2oAA",
        ),
    ] {
        daemon
            .services
            .vault
            .add(
                key,
                "anthropic",
                &clawcage::secret::Secret::from(format!("sk-ant-api03-{body}")),
            )
            .unwrap();
    }
    let manifest = state.join("agent.toml");
    for i in 0..AGENTS {
        std::fs::write(
            &manifest,
            format!(
                "name = \"agent-{i:03}\"\ndescription = \"Seeded agent {i}.\"\n[component]\npath = {:?}\n\
                 [models.default]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"main\"\n\
                 [models.writer]\nprovider = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nkey = \"backup\"\n\
                 [budget]\ntokens_per_day = 1000000\nusd_micros_per_month = 50000000\n",
                wasm.join("hello.wasm")
            ),
        )
        .unwrap();
        daemon
            .deploy(
                &format!("agent-{i:03}"),
                Bundle::from_manifest_file(&manifest).unwrap(),
                "bench",
            )
            .unwrap();
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    for i in 0..INVOCATIONS {
        let agent = format!("agent-{:03}", i % AGENTS);
        let event_id = format!("evt_seed_{i:06}");
        daemon.services.ledger.record(&UsageRecord {
            agent: agent.clone(),
            binding: "default".into(),
            provider: "anthropic".into(),
            model: if i % 3 == 0 {
                "claude-sonnet-4-5"
            } else {
                "claude-haiku-4-5"
            }
            .into(),
            key_id: Some("main".into()),
            input_tokens: 400 + (i % 97) as u64,
            output_tokens: 120 + (i % 31) as u64,
            cost_micros: 900 + (i % 400) as u64,
            latency_ms: 300,
            outcome: "ok".into(),
            event_id: Some(event_id.clone()),
            ..Default::default()
        });
        daemon.invocations.record(InvocationRow {
            event_id,
            agent,
            source: ["api", "github", "schedule", "slack"][i % 4].into(),
            kind: "greet".into(),
            started_at_ms: now_ms - ((INVOCATIONS - i) as i64) * 250_000,
            duration_ms: 20 + (i % 50) as u64,
            outcome: if i % 23 == 0 { "agent-error" } else { "ok" }.into(),
        });
    }
    daemon.services.ledger.flush().unwrap();
    daemon.invocations.flush().unwrap();
    // Model calls spread over the last 30 days, for the charts.
    let db = rusqlite::Connection::open(state.join(clawcage::db::DB_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute("UPDATE usage SET at = at - (id % 30) * 86400", [])
        .unwrap();
    drop(db);
    let seeded = daemon.audit.read(0, 1).map(|_| ()).ok();
    let mut n = 0;
    while n + INVOCATIONS + 2 * AGENTS < AUDIT_RECORDS {
        let agent = format!("agent-{:03}", n % AGENTS);
        daemon.audit.append(if n % 5 == 0 {
            AuditEvent::Admin {
                actor: "admin".into(),
                action: "GET /v1/agents".into(),
                allowed: true,
            }
        } else {
            AuditEvent::Tool {
                agent,
                tool: "github".into(),
                action: "issues.create".into(),
                resource: format!("acme/repo-{}", n % 7),
                allowed: n % 11 != 0,
                reason: None,
                event_id: Some(format!("evt_seed_{:06}", n % INVOCATIONS)),
            }
        });
        n += 1;
    }
    daemon.audit.flush().unwrap();
    let _ = seeded;
    let records = daemon.audit.verify().unwrap().records;
    eprintln!(
        "seeded {AGENTS} agents, {INVOCATIONS} invocations, {records} audit records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let requests: usize = std::env::var("REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let (state, token) = init_state(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let daemon = Daemon::open(DaemonOptions::new(state.clone())).unwrap();
        seed(&daemon, &state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = clawcage::daemon::api::router(daemon.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let http = clawcage::outbound::client_builder(clawcage::outbound::DEFAULT_CONNECT_TIMEOUT)
            .unwrap()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let signed_in = http
            .post(format!("{url}/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        let cookie = signed_in.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let invocation = daemon
            .invocations
            .list(&Default::default())
            .unwrap()
            .first()
            .map(|i| i.id)
            .unwrap();
        let pages = [
            "/ui/".to_string(),
            "/ui/agents".into(),
            "/ui/agents/agent-042".into(),
            "/ui/usage".into(),
            "/ui/usage?agent=agent-042".into(),
            "/ui/usage.csv".into(),
            "/ui/invocations".into(),
            "/ui/invocations?agent=agent-042&outcome=ok&since=7d".into(),
            "/ui/invocations?outcome=agent-error".into(),
            format!("/ui/invocations/{invocation}"),
            "/ui/audit".into(),
            "/ui/audit?kind=admin".into(),
            "/ui/audit?agent=agent-042".into(),
            "/ui/audit?before=50000".into(),
            "/ui/registry".into(),
            "/ui/keys".into(),
            "/ui/login".into(),
        ];
        println!(
            "{:<52} {:>9} {:>9} {:>9} {:>9}",
            "page", "p50 ms", "p99 ms", "max ms", "bytes"
        );
        let mut worst = Duration::ZERO;
        for page in &pages {
            let fetch = || async {
                let t = Instant::now();
                let response = http
                    .get(format!("{url}{page}"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body = response.bytes().await.unwrap();
                assert!(
                    status.is_success() || page == "/ui/login",
                    "{page}: {status}"
                );
                (t.elapsed(), body.len())
            };
            for _ in 0..5 {
                fetch().await;
            }
            let mut latencies = Vec::with_capacity(requests);
            let mut bytes = 0;
            for _ in 0..requests {
                let (elapsed, size) = fetch().await;
                latencies.push(elapsed);
                bytes = size;
            }
            latencies.sort();
            let p99 = percentile(&latencies, 0.99);
            worst = worst.max(p99);
            println!(
                "{:<52} {:>9.2} {:>9.2} {:>9.2} {:>9}",
                page,
                ms(percentile(&latencies, 0.5)),
                ms(p99),
                ms(*latencies.last().unwrap()),
                bytes
            );
        }
        println!("worst p99: {:.2} ms (goal: 50 ms)", ms(worst));

        // The whole log: verifying the chain and exporting it.
        let page = http
            .get(format!("{url}/ui/audit"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
        let csrf = page[at..at + 64].to_string();
        for (what, path) in [
            ("verify the chain", "/ui/audit/verify"),
            ("export JSON Lines", "/ui/audit.jsonl"),
        ] {
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..3 {
                let t = Instant::now();
                let request = if path.ends_with("verify") {
                    http.post(format!("{url}{path}"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!("csrf={csrf}"))
                } else {
                    http.get(format!("{url}{path}"))
                };
                let response = request.header("cookie", &cookie).send().await.unwrap();
                assert!(response.status().is_success(), "{path}");
                size = response.bytes().await.unwrap().len();
                times.push(t.elapsed());
            }
            times.sort();
            println!(
                "{what:<52} median {:.0} ms over 3 ({size} bytes)",
                ms(times[1])
            );
        }
    });
}
