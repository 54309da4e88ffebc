//! The state directory: where it is (`--state-dir`), `clawcage init`, and
//! the compile cache (`clawcage cache`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::failure::CliError;
use super::output::{OutputArgs, Table, rfc3339};
use crate::db::{Database, default_state_dir};
use crate::vault::{MasterKey, Vault};

/// Where the state lives.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StateArgs {
    /// The state directory (database and master key). Default:
    /// `$XDG_DATA_HOME/clawcage` or `~/.local/share/clawcage`.
    #[arg(long, env = "CLAWCAGE_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

impl StateArgs {
    /// The chosen state directory.
    pub fn dir(&self) -> Result<PathBuf, CliError> {
        self.state_dir
            .clone()
            .or_else(default_state_dir)
            .ok_or_else(|| {
                CliError::new(
                    super::exit::NOT_INITIALISED,
                    "no state directory: pass --state-dir or set CLAWCAGE_STATE_DIR",
                )
            })
    }

    /// The compile cache of an initialised state directory, which `run` and
    /// `serve` share: `cache` in it.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        let dir = self.dir().ok()?;
        dir.join(crate::db::DB_FILE)
            .exists()
            .then(|| dir.join("cache"))
    }

    /// Opens the vault, ledger and prices that model bindings need.
    pub(crate) fn open_services(
        &self,
    ) -> Result<Arc<crate::providers::binding::Services>, CliError> {
        let dir = self.dir()?;
        // Not initialised is its own failure, not a bad manifest.
        Database::open(&dir)?;
        MasterKey::load(&dir)?;
        let (_, services) = crate::providers::binding::Services::open(&dir)?;
        Ok(Arc::new(services))
    }

    /// Opens the vault of an initialised state directory and its audit
    /// log (key changes are audited, made here or through the daemon).
    pub(crate) fn open_vault_and_audit(&self) -> Result<(Vault, crate::audit::AuditLog), CliError> {
        let dir = self.dir()?;
        let db = Arc::new(Database::open(&dir)?);
        let master = MasterKey::load(&dir)?;
        let vault = Vault::open(db.clone(), master)?;
        Ok((vault, crate::audit::AuditLog::new(db)))
    }
}

/// `clawcage init`: creates the state directory, its database and (unless
/// `CLAWCAGE_MASTER_KEY` is set) a master key file readable by you only.
#[derive(Debug, clap::Args)]
pub struct InitCommand {
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
}

impl InitCommand {
    /// Runs the command; returns the exit code.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let dir = self.state.dir()?;
        let db = Database::create(&dir)?;
        let created = MasterKey::create_file_if_missing(&dir)?;
        let master = MasterKey::load(&dir)?;
        let db = Arc::new(db);
        Vault::open(db.clone(), master)?;
        let _ = writeln!(out, "state directory: {}", dir.display());
        let _ = if created {
            writeln!(
                out,
                "created master key: {} (back it up; without it the vault cannot be opened)",
                dir.join(crate::vault::MASTER_KEY_FILE).display()
            )
        } else {
            writeln!(out, "master key: already present")
        };
        // The first API token, for local clients of the daemon: kept in a
        // file only you can read, never printed.
        let token_path = dir.join(super::TOKEN_FILE);
        let tokens = crate::daemon::auth::Tokens::new(db);
        if !token_path.exists() && tokens.list()?.is_empty() {
            let token = tokens.create("admin")?;
            crate::fsutil::write_atomically(&token_path, token.expose())
                .map_err(|e| format!("{}: {e}", token_path.display()))?;
            let _ = writeln!(
                out,
                "created API token \"admin\": {} (`clawcage token add` makes more)",
                token_path.display()
            );
        }

        Ok(())
    }
}

/// `clawcage cache`: the precompiled components `run` and `serve` keep.
#[derive(Debug, clap::Args)]
pub struct CacheCommand {
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
    /// The cache directory (default: `cache` in the state directory, else
    /// `$XDG_CACHE_HOME/clawcage/components`).
    #[arg(long, env = "CLAWCAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: CacheAction,
}

/// Cache subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CacheAction {
    /// Lists the artifacts, least recently used first, with their size.
    List,
    /// Removes artifacts: all of them, or those unused for a while.
    Clean {
        /// Only those not used for this long (`7d`, `36h`, `90m`).
        #[arg(long, value_name = "AGE")]
        unused_for: Option<String>,
    },
}

impl CacheCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let dir = self
            .cache_dir
            .clone()
            .or_else(|| self.state.cache_dir())
            .or_else(super::default_cache_dir)
            .ok_or("no cache directory: pass --cache-dir")?;
        let artifacts = crate::engine::cached_artifacts(&dir, None)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        match self.action {
            CacheAction::List => {
                if self.output.is_json() {
                    super::output::json(out, &serde_json::json!({ "artifacts": artifacts }));
                    return Ok(());
                }
                let total: u64 = artifacts.iter().map(|a| a.bytes).sum();
                let mut table = Table::new(&["COMPONENT SHA256", "ENGINE", "MIB", "LAST USED"]);
                for a in &artifacts {
                    table.row(vec![
                        a.sha256.clone(),
                        a.engine.clone(),
                        format!("{:.1}", a.bytes as f64 / f64::from(1 << 20)),
                        rfc3339(a.last_used),
                    ]);
                }
                table.print(out, "");
                let _ = writeln!(
                    out,
                    "{} artifact(s), {:.1} MiB in {}",
                    artifacts.len(),
                    total as f64 / f64::from(1 << 20),
                    dir.display()
                );
            }
            CacheAction::Clean { unused_for } => {
                let now = crate::db::now_unix();
                let before = match &unused_for {
                    Some(age) => crate::ledger::parse_since(age, now)
                        .map_err(|e| CliError::usage(e.replace("--since", "--unused-for")))?,
                    None => i64::MAX,
                };
                let (mut removed, mut freed) = (0, 0);
                for a in artifacts.iter().filter(|a| a.last_used < before) {
                    std::fs::remove_file(&a.path)
                        .map_err(|e| format!("{}: {e}", a.path.display()))?;
                    removed += 1;
                    freed += a.bytes;
                }
                let _ = writeln!(
                    out,
                    "removed {removed} artifact(s), {:.1} MiB",
                    freed as f64 / f64::from(1 << 20)
                );
            }
        }
        Ok(())
    }
}
