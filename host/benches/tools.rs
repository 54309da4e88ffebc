//! Tool-call import overhead: a guest calling a no-op tool action through
//! the `tools` import, against calling the same host function natively from
//! Rust, with 4 KiB and 64 KiB inputs; and the cost of copying the payload,
//! for the target "at most 1.5 × the native call plus 3 × the copy".
//!
//! The guest loops over `tool.call` inside one event; its per-call cost is
//! the event's time with N calls minus the event's time with none, over N.
//!
//! Run with `cargo bench -p clawcage-host --bench tools`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawcage::bindings::tools::HostTool;
use clawcage::tools::{ActionInfo, ToolBackend, ToolError, ToolGrants, ToolsCtx, ToolsView};
use clawcage::{Cage, EngineOptions, Event};
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::component::{Resource, ResourceTable};

#[path = "../../tests/guests.rs"]
mod guests;

/// A tool whose one action does nothing.
struct NoopTool;

#[async_trait::async_trait]
impl ToolBackend for NoopTool {
    fn actions(&self) -> Vec<ActionInfo> {
        vec![ActionInfo {
            name: "noop".into(),
            description: "does nothing".into(),
            input_schema: "{}".into(),
        }]
    }

    async fn call(&self, _action: &str, _input: serde_json::Value) -> Result<String, ToolError> {
        Ok("{}".into())
    }
}

fn grants() -> Arc<ToolGrants> {
    let tool: Arc<dyn ToolBackend> = Arc::new(NoopTool);
    Arc::new(ToolGrants::from([("noop".to_string(), tool)]))
}

fn input(bytes: usize) -> String {
    format!(r#"{{"data":"{}"}}"#, "x".repeat(bytes - 11))
}

fn tool_calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = guests::build_guests(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
    let bytes = std::fs::read(dir.join("noop.wasm")).unwrap();
    let cage = Cage::new(EngineOptions::default()).unwrap();
    let mut agent = cage.load_component("noop", &bytes, None).unwrap();
    agent.set_tools(grants());

    let mut group = c.benchmark_group("tool_call");
    for (name, size) in [("4KiB", 4 * 1024), ("64KiB", 64 * 1024)] {
        let payload = input(size);
        group.bench_function(format!("copy_{name}"), |b| {
            b.iter(|| std::hint::black_box(payload.clone()))
        });

        let mut ctx = ToolsCtx::new(grants());
        let mut table = ResourceTable::new();
        let handle = rt.block_on(async {
            let mut view = ToolsView {
                ctx: &mut ctx,
                table: &mut table,
            };
            view.open("noop".into()).await.unwrap().unwrap()
        });
        let rep = handle.rep();
        // Many calls inside one `block_on`, as the guest makes many calls
        // inside one event, so neither side pays the runtime per call.
        group.bench_function(format!("native_{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut view = ToolsView {
                        ctx: &mut ctx,
                        table: &mut table,
                    };
                    let started = Instant::now();
                    for _ in 0..iters {
                        let tool = Resource::new_borrow(rep);
                        std::hint::black_box(
                            view.call(tool, "noop".into(), payload.clone())
                                .await
                                .unwrap()
                                .unwrap(),
                        );
                    }
                    started.elapsed()
                })
            })
        });

        let run = |calls: u64| {
            let event = Event::new("bench", "tool-loop", serde_json::json!([calls, size]));
            let started = Instant::now();
            let outcome = rt.block_on(agent.invoke(event)).outcome.unwrap();
            assert_eq!(outcome, (2 * calls).to_string());
            started.elapsed()
        };
        // The event without calls, to subtract: the median of many.
        let mut empty: Vec<Duration> = (0..200).map(|_| run(0)).collect();
        empty.sort();
        let base = empty[empty.len() / 2];
        group.bench_function(format!("guest_{name}"), |b| {
            b.iter_custom(|iters| run(iters).saturating_sub(base))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = tool_calls
}
criterion_main!(benches);
