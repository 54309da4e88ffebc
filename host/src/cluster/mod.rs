//! Cluster mode: daemons sharing one PostgreSQL.
//!
//! The embedded default keeps everything in the state directory's SQLite
//! database, and one process spends from it. In a cluster, any number of
//! daemons share one PostgreSQL database; this module is their connection
//! to it ([`ClusterDb`]: a pool, versioned migrations applied once however
//! many daemons start together) and the state they must agree on exactly,
//! starting with budgets ([`budget::BudgetLeases`]); and the work queue on
//! NATS JetStream that any daemon with capacity takes events from
//! ([`queue::WorkQueue`]).
//!
//! Deny by default: nothing here is used unless a database URL is given.

pub mod budget;
pub mod queue;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

/// The PostgreSQL migrations, in order. Never edit one that has shipped:
/// add another.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_budgets",
        include_str!("../../migrations/postgres/0001_budgets.sql"),
    ),
    (
        "0002_work",
        include_str!("../../migrations/postgres/0002_work.sql"),
    ),
];

/// Connections one daemon keeps to the database at most.
const MAX_CONNECTIONS: usize = 8;
/// How long a request waits for a connection, or to open one, before the
/// database counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Any one statement's limit, so a stalled database fails calls instead of
/// holding them.
const STATEMENT_TIMEOUT_MS: u32 = 5_000;

/// Why the cluster database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The database URL is not one PostgreSQL understands. The URL itself is
    /// never repeated: it may hold a password.
    #[error("the database URL is not a PostgreSQL URL ({0})")]
    Url(String),
    /// PostgreSQL failed or could not be reached.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had in time.
    #[error("PostgreSQL unavailable: {0}")]
    Unavailable(String),
    /// The database's schema is newer than this binary.
    #[error(
        "the cluster database is at schema version {found}, newer than this clawcage ({known}); upgrade clawcage"
    )]
    TooNew {
        /// The database's version.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
}

/// A pool of connections to the cluster's PostgreSQL database.
#[derive(Clone)]
pub struct ClusterDb {
    pool: Pool,
}

impl std::fmt::Debug for ClusterDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("ClusterDb")
            .field("connections", &self.pool.status().size)
            .finish_non_exhaustive()
    }
}

impl ClusterDb {
    /// Connects to `url` (`postgres://user:password@host:port/database`)
    /// and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, ClusterError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| {
                // The parser's message names the bad part, not the URL.
                ClusterError::Url(e.to_string())
            })?;
        // A database that stops answering (a dead host, a black hole) is
        // noticed in seconds, not at the kernel's retransmission timeout.
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .tcp_user_timeout(Duration::from_secs(5))
            .application_name("clawcage")
            .options(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(MAX_CONNECTIONS)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        let db = Self { pool };
        db.migrate().await?;
        Ok(db)
    }

    /// A connection from the pool.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, ClusterError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => ClusterError::Postgres(e),
            other => ClusterError::Unavailable(other.to_string()),
        })
    }

    /// Applies the migrations this database has not had, in one
    /// transaction under an advisory lock: daemons starting together apply
    /// each exactly once, and the others wait and find nothing to do.
    async fn migrate(&self) -> Result<(), ClusterError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7262012301);
             CREATE TABLE IF NOT EXISTS clawcage_migrations (
                 version BIGINT PRIMARY KEY,
                 name TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );",
        )
        .await?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM clawcage_migrations",
                &[],
            )
            .await?
            .get(0);
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(ClusterError::TooNew {
                found: current,
                known,
            });
        }
        for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = index as i64 + 1;
            tracing::info!(
                migration = name,
                version,
                "applying cluster database migration"
            );
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO clawcage_migrations (version, name) VALUES ($1, $2)",
                &[&version, name],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One round trip: whether the database answers.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        self.client().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    /// The schema version this database is at.
    pub async fn schema_version(&self) -> Result<i64, ClusterError> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT MAX(version) FROM clawcage_migrations", &[])
            .await?
            .get(0))
    }
}
