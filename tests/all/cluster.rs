//! Cluster mode against a real PostgreSQL 15 (Debian's, started as a
//! process on loopback by the test): budgets stay exact across daemons.
//! Each "daemon" here is a full inference stack (vault, ledger, services,
//! cage) with its own leases on the one database, as a `clawcage serve`
//! process has; the agents are real guests calling the fake Anthropic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawcage::cluster::ClusterDb;
use clawcage::cluster::budget::BudgetLeases;
use clawcage::db::Database;
use clawcage::ledger::Ledger;
use clawcage::pricing::PriceTable;
use clawcage::providers::binding::Services;
use clawcage::secret::Secret;
use clawcage::vault::{MasterKey, Vault};
use clawcage::{Agent, Cage, EngineOptions, Event, Manifest};
use clawcage_tests::fake_provider::FakeProvider;
use clawcage_tests::postgres::{self, Postgres};
use clawcage_tests::{HOSTILE, test_options};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-api03-Q2W9lYzr1tXv8bEk3NfPpH7aJd4sMuC6gVo0iRx5LwKqTnZyB2mD8eFhG1jS9cUoA7pVt4rWzXn3kLbQ6sYdAAA";

struct Daemon {
    _dir: tempfile::TempDir,
    services: Arc<Services>,
    leases: BudgetLeases,
}

/// A daemon's inference stack on the cluster's database at `url`.
async fn daemon(url: &str, id: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(&dir.path().join("state")).unwrap());
    let vault = Arc::new(Vault::open(db.clone(), MasterKey::generate()).unwrap());
    vault
        .add("anthropic-a", "anthropic", &Secret::from(KEY.to_string()))
        .unwrap();
    let ledger = Ledger::new(db);
    let leases = BudgetLeases::start(ClusterDb::connect(url).await.unwrap(), id);
    ledger.share_budgets(leases.clone());
    let services = Arc::new(Services::new(vault, ledger, PriceTable::builtin()).unwrap());
    Daemon {
        _dir: dir,
        services,
        leases,
    }
}

impl Daemon {
    fn agent(&self, fake: &FakeProvider, budget: &str) -> Agent {
        let text = format!(
            "name = \"alpha\"\n[component]\npath = {HOSTILE:?}\n\
             [models.default]\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkey = \"anthropic-a\"\nbase_url = {:?}\n\
             [budget]\n{budget}\n",
            fake.anthropic_url()
        );
        Cage::new(EngineOptions {
            max_concurrent_instances: 64,
            ..test_options()
        })
        .unwrap()
        .with_services(self.services.clone())
        .load_manifest(&Manifest::from_toml(&text).unwrap(), Path::new("/"))
        .unwrap()
    }
}

async fn ask(agent: &Agent, prompt: &str) -> Value {
    let event = Event::new(
        "test",
        "ask",
        json!({"binding": "default", "prompt": prompt, "stream": false}),
    );
    serde_json::from_str(&agent.invoke(event).await.outcome.unwrap()).unwrap()
}

/// The day window's totals for agent `alpha`: (settled, leased) tokens.
async fn day_totals(url: &str) -> (i64, i64) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT COALESCE(SUM(settled_tokens), 0)::BIGINT, COALESCE(SUM(leased_tokens), 0)::BIGINT \
             FROM budget_windows WHERE agent = 'alpha' AND span = 'day'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Each call's worst case, as the host reserves it: a one-token budget
/// refuses the call and says how much that is.
async fn per_call(daemon: &Daemon, fake: &FakeProvider) -> u64 {
    let probe = daemon.agent(fake, "tokens_per_day = 1");
    let refusal = ask(&probe, "slow").await;
    refusal["error"]
        .as_str()
        .unwrap()
        .strip_prefix("budget exceeded: this call could use ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{refusal}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_and_150_concurrent_calls_never_overshoot_a_budget_for_ten() {
    if !postgres::available() {
        return;
    }
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.url();
    let fake = FakeProvider::start().await;
    let daemons = [
        daemon(&url, "daemon-a").await,
        daemon(&url, "daemon-b").await,
        daemon(&url, "daemon-c").await,
    ];
    let per_call = per_call(&daemons[0], &fake).await;
    let budget = format!("tokens_per_day = {}", per_call * 10);
    let agents: Vec<Arc<Agent>> = daemons
        .iter()
        .map(|d| Arc::new(d.agent(&fake, &budget)))
        .collect();

    let calls: Vec<_> = (0..150)
        .map(|i| {
            let agent = agents[i % 3].clone();
            tokio::spawn(async move { ask(&agent, "slow").await })
        })
        .collect();
    let mut answered = 0;
    for call in calls {
        let answer = call.await.unwrap();
        if answer["text"] == "Hello from anthropic" {
            answered += 1;
        } else {
            let error = answer["error"].as_str().unwrap();
            assert!(
                error.starts_with(&format!(
                    "budget exceeded: this call could use {per_call} tokens"
                )),
                "{answer}"
            );
        }
    }
    let sent = fake.received().len();
    eprintln!("the provider saw {sent} calls");
    assert_eq!(sent, answered, "refused calls must not reach the provider");
    assert!(
        sent <= 10,
        "the provider saw {sent} calls for a budget of ten"
    );
    // Each daemon can be left holding less than one call's worth that no
    // other daemon may use: at most one call per daemon goes unmade.
    assert!(
        sent >= 10 - daemons.len(),
        "only {sent} of ten calls were let through"
    );

    // Every daemon reports and hands back what it holds: the database then
    // holds nothing leased, and settled what the calls used (the fake's
    // usage, far below their worst case).
    for daemon in &daemons {
        daemon.leases.renew(true).await.unwrap();
    }
    let (settled, leased) = day_totals(&url).await;
    assert_eq!(leased, 0);
    assert!(settled > 0 && settled as u64 <= per_call * 10, "{settled}");
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_daemons_lease_stays_spent_until_reclaimed_and_then_counts_as_used() {
    if !postgres::available() {
        return;
    }
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.url();
    let fake = FakeProvider::start().await;
    let a = daemon(&url, "daemon-a").await;
    let per_call = per_call(&a, &fake).await;
    let budget = format!("tokens_per_day = {}", per_call * 2);

    // A takes a slice for one call, then dies without a word.
    let answer = ask(&a.agent(&fake, &budget), "slow").await;
    assert_eq!(answer["text"], "Hello from anthropic", "{answer}");
    drop(a);
    let (_, leased) = day_totals(&url).await;
    assert!(leased > 0, "A's slice is still held");

    // B may use only what A does not hold: one call, not two.
    let b = daemon(&url, "daemon-b").await;
    let agent = b.agent(&fake, &budget);
    let first = ask(&agent, "slow").await;
    assert_eq!(first["text"], "Hello from anthropic", "{first}");
    let second = ask(&agent, "slow").await;
    assert!(
        second["error"]
            .as_str()
            .unwrap()
            .contains("used or held across the cluster"),
        "{second}"
    );

    // Once A's lease is past its reclaim time (the database's clock moved
    // on), B reclaims it: its remainder counts as spent, never returned.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE budget_leases SET renewed_at = now() - interval '1 hour' WHERE daemon LIKE 'daemon-a-%'",
            &[],
        )
        .await
        .unwrap();
    let (settled_before, _) = day_totals(&url).await;
    let remainder: i64 = client
        .query_one(
            "SELECT tokens FROM budget_leases WHERE daemon LIKE 'daemon-a-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let third = ask(&agent, "slow").await;
    assert!(third["error"].as_str().is_some(), "{third}");
    let (settled_after, _) = day_totals(&url).await;
    let leases: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM budget_leases WHERE daemon LIKE 'daemon-a-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leases, 0, "A's lease is reclaimed");
    assert_eq!(
        settled_after,
        settled_before + remainder,
        "A's unreported remainder counts as spent"
    );
    assert_eq!(fake.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_calls_fail_as_unavailable_and_resume_when_it_returns() {
    if !postgres::available() {
        return;
    }
    let mut pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.url();
    let fake = FakeProvider::start().await;
    let d = daemon(&url, "daemon-a").await;
    let agent = d.agent(&fake, "tokens_per_day = 1000000");

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let answer = ask(&agent, "hello").await;
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("unavailable: the cluster's budgets"),
        "{answer}"
    );
    assert!(
        fake.received().is_empty(),
        "nothing is sent without a budget"
    );

    let mut pg = pg;
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    // The pool reconnects by itself.
    let mut answer = Value::Null;
    for _ in 0..50 {
        answer = ask(&agent, "hello").await;
        if answer["text"] == "Hello from anthropic" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer["text"], "Hello from anthropic", "{answer}");
    drop(pg);
}

// The work queue, on a real nats-server with JetStream and the same
// PostgreSQL for claims.

mod queue {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use clawcage::Event;
    use clawcage::cluster::ClusterDb;
    use clawcage::cluster::queue::{QueueOptions, WorkItem, WorkQueue};
    use clawcage_tests::nats::{self, Nats};
    use clawcage_tests::postgres::{self, Postgres};
    use serde_json::json;

    type Handled = Arc<Mutex<Vec<(String, String)>>>;

    fn item(id: &str) -> WorkItem {
        WorkItem {
            id: id.into(),
            agent: "hello".into(),
            origin: "webhook".into(),
            event: Event::new("github", "push", json!({"n": id})),
        }
    }

    async fn queue(pg: &str, nats: &str, daemon: &str, ack_wait: Duration) -> WorkQueue {
        WorkQueue::connect(
            nats,
            ClusterDb::connect(pg).await.unwrap(),
            daemon,
            QueueOptions { ack_wait },
        )
        .await
        .unwrap()
    }

    /// Runs `queue` as daemon `daemon`: each event takes 20 ms and is
    /// recorded as handled by it.
    fn serve(queue: WorkQueue, daemon: &str, handled: &Handled) -> tokio::task::JoinHandle<()> {
        let handled = handled.clone();
        let daemon = daemon.to_string();
        tokio::spawn(async move {
            queue
                .run(4, move |item: WorkItem| {
                    let handled = handled.clone();
                    let daemon = daemon.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        handled.lock().unwrap().push((item.id, daemon));
                        Ok(String::new())
                    }
                })
                .await
        })
    }

    async fn wait_for(handled: &Handled, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while handled.lock().unwrap().len() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Anything extra would arrive now.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    fn times_each(handled: &Handled) -> HashMap<String, usize> {
        let mut times = HashMap::new();
        for (id, _) in handled.lock().unwrap().iter() {
            *times.entry(id.clone()).or_insert(0) += 1;
        }
        times
    }

    fn servers() -> Option<(Postgres, Nats)> {
        if !postgres::available() || !nats::available() {
            return None;
        }
        Some((Postgres::start(), Nats::start()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_event_runs_once_across_three_daemons_and_a_second_publish_is_dropped() {
        let Some((pg, nats)) = tokio::task::spawn_blocking(servers).await.unwrap() else {
            return;
        };
        let handled: Handled = Arc::default();
        let ack_wait = Duration::from_secs(5);
        let mut runners = Vec::new();
        for daemon in ["daemon-a", "daemon-b", "daemon-c"] {
            let q = queue(&pg.url(), &nats.url(), daemon, ack_wait).await;
            runners.push(serve(q, daemon, &handled));
        }
        let publisher = queue(&pg.url(), &nats.url(), "publisher", ack_wait).await;
        for n in 0..60 {
            publisher.publish(&item(&format!("evt-{n}"))).await.unwrap();
        }
        // A sender retrying its webhook: the same ids again.
        for n in 0..10 {
            publisher.publish(&item(&format!("evt-{n}"))).await.unwrap();
        }
        wait_for(&handled, 60).await;
        let times = times_each(&handled);
        assert_eq!(times.len(), 60);
        assert!(times.values().all(|&n| n == 1), "{times:?}");
        let daemons: std::collections::HashSet<String> = handled
            .lock()
            .unwrap()
            .iter()
            .map(|(_, d)| d.clone())
            .collect();
        assert!(daemons.len() >= 2, "the work was shared: {daemons:?}");
        for runner in runners {
            runner.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_in_flight_on_a_daemon_that_dies_completes_once_on_another() {
        let Some((pg, nats)) = tokio::task::spawn_blocking(servers).await.unwrap() else {
            return;
        };
        let ack_wait = Duration::from_secs(1);
        // Daemon X runs in a runtime of its own, and takes the event but
        // never finishes it; then the whole runtime is gone at once, as a
        // process is with `kill -9`.
        let x_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let x_started = Arc::new(tokio::sync::Notify::new());
        {
            let (pg_url, nats_url) = (pg.url(), nats.url());
            let started = x_started.clone();
            x_runtime.spawn(async move {
                let q = queue(&pg_url, &nats_url, "daemon-x", ack_wait).await;
                q.run(1, move |_item: WorkItem| {
                    let started = started.clone();
                    async move {
                        started.notify_one();
                        std::future::pending::<()>().await;
                        Ok(String::new())
                    }
                })
                .await;
            });
        }
        let publisher = queue(&pg.url(), &nats.url(), "publisher", ack_wait).await;
        publisher.publish(&item("evt-stuck")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), x_started.notified())
            .await
            .expect("daemon X took the event");
        x_runtime.shutdown_background();

        let handled: Handled = Arc::default();
        let y = queue(&pg.url(), &nats.url(), "daemon-y", ack_wait).await;
        let runner = serve(y, "daemon-y", &handled);
        wait_for(&handled, 1).await;
        assert_eq!(
            handled.lock().unwrap().clone(),
            [("evt-stuck".to_string(), "daemon-y".to_string())]
        );
        let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT daemon, state, attempts FROM work_items WHERE id = 'evt-stuck'",
                &[],
            )
            .await
            .unwrap();
        let (daemon, state, attempts): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (daemon.as_str(), state.as_str(), attempts),
            ("daemon-y", "done", 2)
        );
        runner.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restarting_nats_loses_no_event() {
        let Some((pg, mut nats)) = tokio::task::spawn_blocking(servers).await.unwrap() else {
            return;
        };
        let ack_wait = Duration::from_secs(5);
        let handled: Handled = Arc::default();
        let mut runners = Vec::new();
        for daemon in ["daemon-a", "daemon-b"] {
            let q = queue(&pg.url(), &nats.url(), daemon, ack_wait).await;
            runners.push(serve(q, daemon, &handled));
        }
        let publisher = queue(&pg.url(), &nats.url(), "publisher", ack_wait).await;
        for n in 0..20 {
            publisher
                .publish(&item(&format!("before-{n}")))
                .await
                .unwrap();
        }
        let mut nats = tokio::task::spawn_blocking(move || {
            nats.restart();
            nats
        })
        .await
        .unwrap();
        // Publishing waits out the reconnection (a real publisher retries
        // until the stream has the event).
        for n in 0..20 {
            let item = item(&format!("after-{n}"));
            let deadline = Instant::now() + Duration::from_secs(20);
            while let Err(error) = publisher.publish(&item).await {
                assert!(Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        wait_for(&handled, 40).await;
        let times = times_each(&handled);
        assert_eq!(times.len(), 40, "{times:?}");
        assert!(times.values().all(|&n| n == 1), "{times:?}");
        for runner in runners {
            runner.abort();
        }
        nats.stop();
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_whose_claim_was_taken_over_stops_and_the_event_still_completes_once() {
        let Some((pg, nats)) = tokio::task::spawn_blocking(servers).await.unwrap() else {
            return;
        };
        let ack_wait = Duration::from_secs(1);
        let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // X's first run of the event is long (heartbeats flowing); a later
        // run of it, on X or on Y, is quick. Every completed run is recorded.
        let handled: Handled = Arc::default();
        let first_run_finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let runs_on_x = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let x = queue(&pg.url(), &nats.url(), "daemon-x", ack_wait).await;
        let x_runner = {
            let (finished, runs, handled) = (
                first_run_finished.clone(),
                runs_on_x.clone(),
                handled.clone(),
            );
            tokio::spawn(async move {
                x.run(1, move |item: WorkItem| {
                    let (finished, runs, handled) =
                        (finished.clone(), runs.clone(), handled.clone());
                    async move {
                        if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                            tokio::time::sleep(Duration::from_secs(6)).await;
                            finished.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        handled.lock().unwrap().push((item.id, "daemon-x".into()));
                        Ok(String::new())
                    }
                })
                .await
            })
        };
        let publisher = queue(&pg.url(), &nats.url(), "publisher", ack_wait).await;
        publisher.publish(&item("evt-contested")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while client
            .query_opt("SELECT 1 FROM work_items WHERE id = 'evt-contested'", &[])
            .await
            .unwrap()
            .is_none()
        {
            assert!(Instant::now() < deadline, "X never claimed the event");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // X is believed dead (as after a long stall): its claim is taken.
        client
            .execute(
                "UPDATE work_items SET daemon = 'daemon-z', attempts = attempts + 1, heartbeat_at = now() - interval '1 minute' WHERE id = 'evt-contested'",
                &[],
            )
            .await
            .unwrap();
        // X's first run notices at its next heartbeat and stops; the event
        // is delivered again and runs to the end once, on Y or on X.
        let y = queue(&pg.url(), &nats.url(), "daemon-y", ack_wait).await;
        let y_runner = serve(y, "daemon-y", &handled);
        wait_for(&handled, 1).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            !first_run_finished.load(std::sync::atomic::Ordering::SeqCst),
            "X's first run went on after it lost its claim"
        );
        let completed = handled.lock().unwrap().clone();
        assert_eq!(completed.len(), 1, "{completed:?}");
        let row = client
            .query_one(
                "SELECT daemon, state FROM work_items WHERE id = 'evt-contested'",
                &[],
            )
            .await
            .unwrap();
        let (daemon, state): (String, String) = (row.get(0), row.get(1));
        assert_eq!(state, "done");
        assert!(
            daemon.starts_with(&completed[0].1),
            "{daemon} {completed:?}"
        );
        x_runner.abort();
        y_runner.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_published_while_postgres_is_down_run_once_when_it_returns() {
        let Some((pg, nats)) = tokio::task::spawn_blocking(servers).await.unwrap() else {
            return;
        };
        let ack_wait = Duration::from_secs(1);
        let handled: Handled = Arc::default();
        let a = queue(&pg.url(), &nats.url(), "daemon-a", ack_wait).await;
        let publisher = queue(&pg.url(), &nats.url(), "publisher", ack_wait).await;
        let runner = serve(a, "daemon-a", &handled);
        let mut pg = tokio::task::spawn_blocking(move || {
            let mut pg = pg;
            pg.stop();
            pg
        })
        .await
        .unwrap();
        for n in 0..10 {
            publisher
                .publish(&item(&format!("outage-{n}")))
                .await
                .unwrap();
        }
        // Longer than several ack waits: deliveries would have run out.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(handled.lock().unwrap().is_empty());
        pg = tokio::task::spawn_blocking(move || {
            pg.restart();
            pg
        })
        .await
        .unwrap();
        wait_for(&handled, 10).await;
        let times = times_each(&handled);
        assert_eq!(times.len(), 10, "{times:?}");
        assert!(times.values().all(|&n| n == 1), "{times:?}");
        runner.abort();
        drop(pg);
    }
}
