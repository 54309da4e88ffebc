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
            "UPDATE budget_leases SET renewed_at = now() - interval '1 hour' WHERE daemon = 'daemon-a'",
            &[],
        )
        .await
        .unwrap();
    let (settled_before, _) = day_totals(&url).await;
    let remainder: i64 = client
        .query_one(
            "SELECT tokens FROM budget_leases WHERE daemon = 'daemon-a'",
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
            "SELECT COUNT(*) FROM budget_leases WHERE daemon = 'daemon-a'",
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
