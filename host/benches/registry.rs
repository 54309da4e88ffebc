//! The registry's costs.
//!
//! - `cold_load`: loading a deployed component the way the daemon does at
//!   start or on deployment (read the precompiled artifact from the disk
//!   cache, deserialize it, link it into an `InstancePre`), against
//!   compiling the same component from its `.wasm`, in the same run.
//! - `push_2mib`: `clawcage push` of a 2 MiB component to a daemon on a
//!   loopback port, through upload, manifest validation and
//!   precompilation into the daemon's cache. Each push is of new bytes, so
//!   nothing is served from a cache. The component is the `report-writer`
//!   sample with a custom section that pads it to 2 MiB (custom sections
//!   are not compiled: the compile work is the sample's own code).
//!
//! Run with `cargo bench -p clawcage-host --bench registry`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use clawcage::daemon::{Daemon, DaemonOptions};
use clawcage::registry::client::RegistryClient;
use clawcage::{Cage, EngineOptions};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

mod support;
use support::{init_state, wasm};

fn leb128(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `component` with a custom section appended that makes it `size` bytes
/// long, the section's payload starting with `salt` so every call can give
/// distinct bytes.
fn padded(component: &[u8], size: usize, salt: u64) -> Vec<u8> {
    let name = b"clawcage-bench-padding";
    let mut payload_len = size - component.len() - 1 - 5 - 1 - name.len();
    let mut out = component.to_vec();
    out.push(0); // custom section
    // The size field's own length depends on the size: shrink to fit.
    let mut size_field = Vec::new();
    leb128(1 + name.len() + payload_len, &mut size_field);
    payload_len += 5 - size_field.len();
    size_field.clear();
    leb128(1 + name.len() + payload_len, &mut size_field);
    out.extend_from_slice(&size_field);
    leb128(name.len(), &mut out);
    out.extend_from_slice(name);
    let mut payload = vec![0u8; payload_len];
    payload[..8].copy_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn cold_load(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let cached = Cage::new(EngineOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..EngineOptions::default()
    })
    .unwrap();
    let compiling = Cage::new(EngineOptions::default()).unwrap();
    let mut group = c.benchmark_group("cold_load");
    for name in ["hello", "report_writer"] {
        let bytes = wasm(name);
        // Deploy once: compiles and stores the artifact.
        cached.load_component(name, &bytes, None).unwrap();
        group.sample_size(50);
        group.bench_function(format!("{name}/precompiled"), |b| {
            b.iter(|| cached.load_component(name, &bytes, None).unwrap())
        });
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(20));
        group.bench_function(format!("{name}/compile"), |b| {
            b.iter(|| compiling.load_component(name, &bytes, None).unwrap())
        });
    }
    group.finish();
}

fn push_2mib(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, token) = init_state(dir.path());
    let daemon = Daemon::open(DaemonOptions::new(state)).unwrap();
    let url = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = clawcage::daemon::api::router(daemon.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        url
    });
    let client = RegistryClient::new(&url, &token).unwrap();
    let base = wasm("report_writer");
    let mut version = 0u64;
    let mut group = c.benchmark_group("push");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    for (label, size) in [("2MiB", 2 << 20), ("report_writer", base.len())] {
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    version += 1;
                    let bytes = if size == base.len() {
                        // Distinct bytes without growing: the smallest pad.
                        padded(&base, base.len() + 64, version)
                    } else {
                        padded(&base, size, version)
                    };
                    (format!("1.0.{version}"), bytes)
                },
                |(tag, bytes)| {
                    runtime
                        .block_on(client.push_component("bench/agent", &tag, &bytes, None))
                        .unwrap()
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, cold_load, push_2mib);
criterion_main!(benches);
