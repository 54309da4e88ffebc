//! The cost of cluster mode on the call path: one budget reservation and
//! its settlement, embedded (in memory, this process the only spender)
//! against cluster mode (the same, plus a hold on this daemon's lease of
//! the budget every daemon shares), on the fast path where the lease covers
//! the call. Also the slow path alone: a call whose lease must grow, a
//! round trip to PostgreSQL.
//!
//! The work queue: with `CLAWCAGE_BENCH_NATS` too, the latency of one
//! event from publish to its handler on a daemon, and the throughput of
//! one daemon taking 1,000 events (8 at a time) through claim, run, done
//! and acknowledgement.
//!
//! Needs a PostgreSQL database: `CLAWCAGE_BENCH_POSTGRES=postgres://…
//! [CLAWCAGE_BENCH_NATS=nats://…] cargo bench -p clawcage-host --bench
//! cluster`; skipped without it. The bench writes to its tables there.

#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use clawcage::cluster::ClusterDb;
use clawcage::cluster::budget::BudgetLeases;
use clawcage::db::Database;
use clawcage::ledger::{BudgetLimits, Ledger, UsageRecord};
use criterion::{Criterion, criterion_group, criterion_main};

fn record(agent: &str) -> UsageRecord {
    UsageRecord {
        agent: agent.into(),
        binding: "default".into(),
        provider: "anthropic".into(),
        model: "m".into(),
        input_tokens: 1,
        output_tokens: 1,
        cost_micros: 1,
        latency_ms: 1,
        outcome: "ok".into(),
        ..Default::default()
    }
}

fn budgets(c: &mut Criterion) {
    let Ok(url) = std::env::var("CLAWCAGE_BENCH_POSTGRES") else {
        eprintln!("cluster: skipped (set CLAWCAGE_BENCH_POSTGRES=postgres://…)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(&dir.path().join("state")).unwrap());
    let embedded = Ledger::new(db.clone());
    let clustered = Ledger::new(db);
    let daemon = format!("bench-{}", std::process::id());
    let leases =
        rt.block_on(async { BudgetLeases::start(ClusterDb::connect(&url).await.unwrap(), daemon) });
    clustered.share_budgets(leases.clone());
    let plenty = BudgetLimits {
        tokens_per_day: Some(u64::MAX / 4),
        ..BudgetLimits::default()
    };
    let agent = format!("bench-{}", std::process::id());
    let used = record(&agent);

    let mut group = c.benchmark_group("cluster");
    for (name, ledger) in [
        ("reserve_settle_embedded", &embedded),
        ("reserve_settle_cluster_fast_path", &clustered),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let reservation = rt
                    .block_on(ledger.reserve_shared(&agent, &plenty, 1000, 0))
                    .unwrap();
                ledger.settle(reservation, &used);
            })
        });
    }
    // The lease alone: what cluster mode adds to a call.
    group.bench_function("lease_take_settle", |b| {
        let now = clawcage::db::now_unix();
        b.iter(|| {
            let hold = rt
                .block_on(leases.take(&agent, &plenty, 1000, 0, now))
                .unwrap();
            hold.settle(2, 0);
        })
    });
    // The same block_on with nothing in it, to subtract.
    group.bench_function("block_on_ready", |b| b.iter(|| rt.block_on(async {})));
    // One round trip to the database, for scale.
    let db = rt.block_on(ClusterDb::connect(&url)).unwrap();
    group.bench_function("postgres_round_trip", |b| {
        b.iter(|| rt.block_on(db.ping()).unwrap())
    });
    // Every call needs all that is left, so every call takes a new slice.
    let mut n = 0u64;
    group.bench_function("reserve_settle_cluster_slow_path", |b| {
        b.iter(|| {
            n += 1;
            let agent = format!("{agent}-slow-{n}");
            let tight = BudgetLimits {
                tokens_per_day: Some(1000),
                ..BudgetLimits::default()
            };
            let reservation = rt
                .block_on(clustered.reserve_shared(&agent, &tight, 1000, 0))
                .unwrap();
            clustered.settle(reservation, &record(&agent));
        })
    });
    group.finish();
}

fn queue(c: &mut Criterion) {
    use clawcage::cluster::queue::{QueueOptions, WorkItem, WorkQueue};
    let (Ok(pg), Ok(nats)) = (
        std::env::var("CLAWCAGE_BENCH_POSTGRES"),
        std::env::var("CLAWCAGE_BENCH_NATS"),
    ) else {
        eprintln!("cluster queue: skipped (set CLAWCAGE_BENCH_POSTGRES and CLAWCAGE_BENCH_NATS)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run_id = std::process::id();
    let (queue, started) = rt.block_on(async {
        let db = ClusterDb::connect(&pg).await.unwrap();
        let queue = WorkQueue::connect(
            &nats,
            db,
            format!("bench-{run_id}"),
            QueueOptions::default(),
        )
        .await
        .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let runner = queue.clone();
        tokio::spawn(async move {
            runner
                .run(8, move |item: WorkItem| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(item.id);
                        Ok(String::new())
                    }
                })
                .await
        });
        (queue, tokio::sync::Mutex::new(rx))
    });
    let item = |id: String| WorkItem {
        id,
        agent: "bench".into(),
        origin: "async".into(),
        event: clawcage::Event::new("bench", "tick", serde_json::json!({})),
    };
    let mut n = 0u64;
    let mut group = c.benchmark_group("cluster");
    group.bench_function("queue_publish_to_handler", |b| {
        b.iter(|| {
            n += 1;
            let id = format!("lat-{run_id}-{n}");
            rt.block_on(async {
                queue.publish(&item(id.clone())).await.unwrap();
                let mut rx = started.lock().await;
                while rx.recv().await.unwrap() != id {}
            })
        })
    });
    group.finish();

    // Throughput: 1,000 events through one daemon, until all are done.
    let count = 1_000;
    let began = std::time::Instant::now();
    rt.block_on(async {
        for i in 0..count {
            queue
                .publish(&item(format!("tput-{run_id}-{i}")))
                .await
                .unwrap();
        }
        let published = began.elapsed();
        let mut rx = started.lock().await;
        let mut seen = 0;
        while seen < count {
            if rx.recv().await.unwrap().starts_with(&format!("tput-{run_id}-")) {
                seen += 1;
            }
        }
        eprintln!(
            "cluster queue: {count} events published in {:.2} s, all handled after {:.2} s ({:.0} events/s)",
            published.as_secs_f64(),
            began.elapsed().as_secs_f64(),
            count as f64 / began.elapsed().as_secs_f64()
        );
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = budgets, queue
}
criterion_main!(benches);
