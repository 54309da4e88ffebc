//! The state directory and its SQLite database.
//!
//! Layout of a state directory (mode 0700):
//! - `clawcage.db`: keys, bindings, usage and budgets (WAL mode,
//!   `secure_delete` on, so deleted ciphertext is overwritten on disk);
//! - `master.key`: the vault's master key, mode 0600, unless the operator
//!   supplies `CLAWCAGE_MASTER_KEY` instead.
//!
//! Migrations live in `host/migrations/`, are embedded in the binary and are
//! applied in order; `PRAGMA user_version` records the last one applied.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

/// The migrations, in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_vault", include_str!("../migrations/0001_vault.sql")),
    ("0002_usage", include_str!("../migrations/0002_usage.sql")),
    (
        "0003_memory_ledger",
        include_str!("../migrations/0003_memory_ledger.sql"),
    ),
    ("0004_daemon", include_str!("../migrations/0004_daemon.sql")),
    (
        "0005_publisher_tokens",
        include_str!("../migrations/0005_publisher_tokens.sql"),
    ),
    (
        "0006_containment",
        include_str!("../migrations/0006_containment.sql"),
    ),
    (
        "0007_inference_usage",
        include_str!("../migrations/0007_inference_usage.sql"),
    ),
    (
        "0008_invocations",
        include_str!("../migrations/0008_invocations.sql"),
    ),
    (
        "0009_invocations_index",
        include_str!("../migrations/0009_invocations_index.sql"),
    ),
    (
        "0010_token_roles",
        include_str!("../migrations/0010_token_roles.sql"),
    ),
    (
        "0011_binding_overrides",
        include_str!("../migrations/0011_binding_overrides.sql"),
    ),
    (
        "0012_paused_agents",
        include_str!("../migrations/0012_paused_agents.sql"),
    ),
];

/// The database file's name inside the state directory.
pub const DB_FILE: &str = "clawcage.db";

/// Why the state could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The state directory or a file in it could not be used.
    #[error("state directory {path}: {reason}")]
    StateDir {
        /// The path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The state directory has not been initialised.
    #[error("no ClawCage state at {0}; run `clawcage init` first")]
    NotInitialised(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database is newer than this binary.
    #[error(
        "the database is at schema version {found}, newer than this clawcage ({known}); upgrade clawcage"
    )]
    TooNew {
        /// The database's version.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
}

/// The default state directory: `$XDG_DATA_HOME/clawcage` or
/// `~/.local/share/clawcage`.
pub(crate) fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("share"))
        })?;
    Some(base.join("clawcage"))
}

/// An open database: one connection for writes, behind a mutex (SQLite
/// serialises writers anyway), and one for the reads requests make (tokens,
/// keys), which in WAL mode never wait for a writer's transaction, so a
/// batch of audit records being committed does not stall a request.
pub struct Database {
    conn: Mutex<Connection>,
    /// `query_only`; absent for an in-memory database (reads use `conn`).
    reader: Option<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Creates the state directory (0700) if needed and opens or creates the
    /// database in it, applying pending migrations.
    pub fn create(state_dir: &Path) -> Result<Self, DbError> {
        crate::fsutil::create_private_dir(state_dir).map_err(|e| DbError::StateDir {
            path: state_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::open_file(&state_dir.join(DB_FILE))
    }

    /// Opens the database of an initialised state directory.
    pub fn open(state_dir: &Path) -> Result<Self, DbError> {
        let path = state_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(DbError::NotInitialised(state_dir.display().to_string()));
        }
        crate::fsutil::check_private(state_dir).map_err(|e| DbError::StateDir {
            path: state_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::open_file(&path)
    }

    /// An in-memory database, for tests.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Result<Self, DbError> {
        let conn = Connection::open_in_memory()?;
        Self::prepare(conn, PathBuf::from(":memory:"))
    }

    fn open_file(path: &Path) -> Result<Self, DbError> {
        let conn = Connection::open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Self::prepare(conn, path.to_path_buf())
    }

    fn prepare(conn: Connection, path: PathBuf) -> Result<Self, DbError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&conn)?;
        let reader = if path.as_os_str() == ":memory:" {
            None
        } else {
            let reader = Connection::open(&path)?;
            reader.busy_timeout(std::time::Duration::from_secs(5))?;
            reader.pragma_update(None, "query_only", "ON")?;
            Some(Mutex::new(reader))
        };
        Ok(Self {
            conn: Mutex::new(conn),
            reader,
            path,
        })
    }

    /// A connection for reads only (statements that write fail on it):
    /// it sees every committed write and never waits for one in progress.
    pub(crate) fn read(&self) -> MutexGuard<'_, Connection> {
        self.reader
            .as_ref()
            .unwrap_or(&self.conn)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection, locked for the caller's statements.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn migrate(conn: &Connection) -> Result<(), DbError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(DbError::TooNew {
            found: current,
            known,
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        tracing::info!(migration = name, version, "applying database migration");
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_record_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Database::create(&state).unwrap();
        let db = Database::open(&state).unwrap();
        let version: i64 = db
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = db
            .lock()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn an_uninitialised_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Database::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("run `clawcage init` first"), "{err}");
    }
}
