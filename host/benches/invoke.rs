//! Per-event cost of the cage, against raw wasmtime doing the same work.
//!
//! - `per_event`: instantiate from `InstancePre`, call a no-op handler, drop
//!   the store — raw wasmtime (same engine, WASI, nothing else) vs
//!   `Agent::invoke` (fresh state, limits, epoch deadline, log capture off).
//! - `floor`: the same no-op event under other engine settings and guests,
//!   to find how low the per-event cost can go.
//! - `threads`: throughput of no-op events on 1 and 2 worker threads.
//! - `epoch`: a CPU-bound guest with epoch interruption compiled in or not.
//! - `languages`: one event of an agent made by `clawcage new` (a question
//!   to its mock model and the answer back), in Rust, JavaScript and
//!   Python, each in a fresh instance. Give the projects' manifests, built
//!   with `clawcage build`, in `LANGUAGE_AGENTS` (`rust=…/agent.toml,js=…`);
//!   without it the group is skipped. Each also runs with `KEEP_MIB` MiB
//!   (default 16) of each memory kept resident between events.
//!
//! Run with `cargo bench -p clawcage-host --bench invoke`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clawcage::bindings::AgentPre;
use clawcage::bindings::types::Event as WitEvent;
use clawcage::{Agent, Cage, EngineOptions, Event};
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod support;
use support::wasm;

struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Raw wasmtime: WASI linked, the agent's other imports defined as traps
/// (a no-op handler never calls them).
fn raw_pre(engine: &Engine, bytes: &[u8]) -> AgentPre<RawState> {
    let component = Component::new(engine, bytes).unwrap();
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    linker.define_unknown_imports_as_traps(&component).unwrap();
    AgentPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

async fn raw_invoke(pre: &AgentPre<RawState>, event: &WitEvent) -> String {
    let mut store = Store::new(
        pre.engine(),
        RawState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let agent = pre.instantiate_async(&mut store).await.unwrap();
    agent
        .clawcage_agent_handler()
        .call_handle(&mut store, event)
        .await
        .unwrap()
        .unwrap()
}

fn wit_event(kind: &str, payload: &str) -> WitEvent {
    WitEvent {
        id: "bench".into(),
        source: "bench".into(),
        kind: kind.into(),
        payload: payload.into(),
    }
}

fn event(kind: &str, payload: serde_json::Value) -> Event {
    Event {
        id: Some("bench".into()),
        ..Event::new("bench", kind, payload)
    }
}

fn agent(options: EngineOptions, name: &str) -> Agent {
    Cage::new(options)
        .unwrap()
        .load_component(name, &wasm(name), None)
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn per_event(c: &mut Criterion) {
    let rt = runtime();
    let cage_agent = agent(EngineOptions::default(), "noop");
    let cage = Cage::new(EngineOptions::default()).unwrap();
    let raw = raw_pre(cage.engine().engine(), &wasm("noop"));
    let wit = wit_event("noop", "{}");

    let mut group = c.benchmark_group("per_event");
    group.bench_function("raw_wasmtime", |b| {
        b.iter(|| rt.block_on(raw_invoke(&raw, &wit)))
    });
    group.bench_function("clawcage", |b| {
        b.iter(|| {
            rt.block_on(cage_agent.invoke(event("noop", serde_json::json!({}))))
                .outcome
                .unwrap()
        })
    });
    group.finish();
}

fn floor(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("floor");
    let base = EngineOptions::default;
    let resident = |bytes| EngineOptions {
        memory_keep_resident: bytes,
        ..base()
    };
    let variants: Vec<(&str, EngineOptions, &str)> = vec![
        ("default_noop", base(), "noop"),
        ("no_keep_resident_noop", resident(0), "noop"),
        (
            "on_demand_noop",
            EngineOptions {
                pooling: false,
                ..base()
            },
            "noop",
        ),
        (
            "keep_resident_1mib_memset_noop",
            EngineOptions {
                pagemap_scan: false,
                ..resident(1 << 20)
            },
            "noop",
        ),
        ("keep_resident_1mib_pagemap_noop", resident(1 << 20), "noop"),
        ("keep_resident_4mib_pagemap_noop", resident(4 << 20), "noop"),
        (
            "decommit_batch_32_noop",
            EngineOptions {
                decommit_batch_size: 32,
                ..base()
            },
            "noop",
        ),
        (
            "keep_resident_4mib_pagemap_batch_32_noop",
            EngineOptions {
                decommit_batch_size: 32,
                ..resident(4 << 20)
            },
            "noop",
        ),
        ("default_hello", base(), "hello"),
        ("default_hostile", base(), "hostile"),
        (
            "keep_resident_4mib_pagemap_hostile",
            resident(4 << 20),
            "hostile",
        ),
    ];
    for (name, options, component) in variants {
        let agent = agent(options, component);
        // `hello` greets; the others take the no-op path.
        let kind = if component == "hello" {
            "greet"
        } else {
            "noop"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(agent.invoke(event(kind, serde_json::json!({}))))
                    .outcome
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn store_parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_parts");
    group.bench_function("wasi_ctx_build", |b| b.iter(|| WasiCtx::builder().build()));
    group.bench_function("agent_state_build", |b| {
        b.iter(|| clawcage::state::AgentStateBuilder::new("bench".into(), "bench".into()).build())
    });
    group.bench_function("event_into_wit_random_id", |b| {
        b.iter(|| {
            Event::new("bench", "noop", serde_json::json!({}))
                .into_wit()
                .unwrap()
        })
    });
    group.finish();
}

fn threads(c: &mut Criterion) {
    let agent = Arc::new(agent(EngineOptions::default(), "noop"));
    let mut group = c.benchmark_group("threads");
    for workers in [1usize, 2] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        group.bench_function(format!("{workers}_thread_per_event"), |b| {
            b.iter_custom(|iters| {
                let agent = agent.clone();
                rt.block_on(async move {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..workers)
                        .map(|w| {
                            let agent = agent.clone();
                            let share = iters / workers as u64
                                + u64::from((w as u64) < iters % workers as u64);
                            tokio::spawn(async move {
                                for _ in 0..share {
                                    agent
                                        .invoke(event("noop", serde_json::json!({})))
                                        .await
                                        .outcome
                                        .unwrap();
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn epoch(c: &mut Criterion) {
    let rt = runtime();
    let bytes = wasm("noop");
    let rounds = "2000000";
    let mut group = c.benchmark_group("epoch");
    group.sample_size(20);
    for (name, interruption) in [("cpu_epoch_off", false), ("cpu_epoch_on", true)] {
        let mut config = Config::new();
        config.epoch_interruption(interruption);
        let engine = Engine::new(&config).unwrap();
        let pre = raw_pre(&engine, &bytes);
        let wit = wit_event("cpu", rounds);
        group.bench_function(name, |b| b.iter(|| rt.block_on(raw_invoke(&pre, &wit))));
    }
    let cage_agent = agent(EngineOptions::default(), "noop");
    group.bench_function("cpu_clawcage", |b| {
        b.iter(|| {
            rt.block_on(cage_agent.invoke(event("cpu", serde_json::json!(2_000_000))))
                .outcome
                .unwrap()
        })
    });
    group.finish();
}

fn languages(c: &mut Criterion) {
    let Ok(list) = std::env::var("LANGUAGE_AGENTS") else {
        eprintln!("languages: skipped (set LANGUAGE_AGENTS=rust=path/agent.toml,js=…,python=…)");
        return;
    };
    let rt = runtime();
    let mut group = c.benchmark_group("languages");
    for entry in list.split(',') {
        let (language, path) = entry.split_once('=').unwrap();
        let path = std::path::Path::new(path);
        let manifest = clawcage::Manifest::load(path).unwrap();
        // The default engine, and one keeping 16 MiB of each memory
        // resident between events (an interpreter dirties megabytes).
        let keep_mib: usize = std::env::var("KEEP_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        let keep_name = format!("_keep_{keep_mib}mib");
        for (variant, keep_resident) in [("", None), (keep_name.as_str(), Some(keep_mib << 20))] {
            let mut options = EngineOptions::default();
            if let Some(bytes) = keep_resident {
                options.memory_keep_resident = bytes;
            }
            let started = Instant::now();
            let agent = Cage::new(options)
                .unwrap()
                .load_manifest(&manifest, path.parent().unwrap())
                .unwrap();
            eprintln!(
                "languages: {language} compiled in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            let ask = serde_json::json!({"prompt": "Say hello"});
            group.bench_function(format!("{language}_hello_event{variant}"), |b| {
                b.iter(|| {
                    rt.block_on(agent.invoke(event("ask", ask.clone())))
                        .outcome
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = per_event, floor, store_parts, threads, epoch, languages
}
criterion_main!(benches);
