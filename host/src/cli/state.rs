//! `clawcage init` and `clawcage key …`: the state directory and the key
//! vault.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::db::{Database, default_state_dir};
use crate::secret::Secret;
use crate::vault::{KeyInfo, MAX_SECRET_BYTES, MasterKey, Vault, VaultError};

/// Where the state lives.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// The state directory (database and master key). Default:
    /// `$XDG_DATA_HOME/clawcage` or `~/.local/share/clawcage`.
    #[arg(long, env = "CLAWCAGE_STATE_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
}

impl StateArgs {
    /// The chosen state directory.
    pub fn dir(&self) -> Result<PathBuf, String> {
        self.state_dir
            .clone()
            .or_else(default_state_dir)
            .ok_or_else(|| {
                "no state directory: pass --state-dir or set CLAWCAGE_STATE_DIR".to_string()
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
    pub fn open_services(&self) -> Result<Arc<crate::providers::binding::Services>, String> {
        let (_, services) = crate::providers::binding::Services::open(&self.dir()?)?;
        Ok(Arc::new(services))
    }

    /// Opens the vault of an initialised state directory.
    pub fn open_vault(&self) -> Result<Vault, String> {
        self.open_vault_and_audit().map(|(vault, _)| vault)
    }

    /// Opens the vault of an initialised state directory and its audit
    /// log (key changes are audited, made here or through the daemon).
    pub fn open_vault_and_audit(&self) -> Result<(Vault, crate::audit::AuditLog), String> {
        let dir = self.dir()?;
        let db = Arc::new(Database::open(&dir).map_err(|e| e.to_string())?);
        let master = MasterKey::load(&dir).map_err(|e| e.to_string())?;
        let vault = Vault::open(db.clone(), master).map_err(|e| e.to_string())?;
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
    pub fn run(self, out: &mut dyn Write) -> Result<(), String> {
        let dir = self.state.dir()?;
        let db = Database::create(&dir).map_err(|e| e.to_string())?;
        let created = MasterKey::create_file_if_missing(&dir).map_err(|e| e.to_string())?;
        let master = MasterKey::load(&dir).map_err(|e| e.to_string())?;
        let db = Arc::new(db);
        Vault::open(db.clone(), master).map_err(|e| e.to_string())?;
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
        if !token_path.exists() && tokens.list().map_err(|e| e.to_string())?.is_empty() {
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

/// `clawcage usage`: spend per agent, provider, model and key.
#[derive(Debug, clap::Args)]
pub struct UsageCommand {
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// From when: `today`, `month` (default), a date (`YYYY-MM-DD`), a time
    /// ago (`7d`, `36h`, `90m`) or Unix seconds.
    #[arg(long, default_value = "month")]
    pub since: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Split the rows by UTC day too.
    #[arg(long, value_enum, default_value = "model")]
    pub by: UsageGrouping,
}

/// How `clawcage usage` groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UsageGrouping {
    /// Per agent, provider, model and key.
    Model,
    /// The same, per UTC day.
    Day,
}

impl UsageCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), String> {
        let since = crate::ledger::parse_since(&self.since, crate::db::now_unix())?;
        let db = Database::open(&self.state.dir()?).map_err(|e| e.to_string())?;
        let rows = crate::ledger::Ledger::new(Arc::new(db))
            .summary_by(self.agent.as_deref(), since, self.by == UsageGrouping::Day)
            .map_err(|e| e.to_string())?;
        if self.json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
            return Ok(());
        }
        if rows.is_empty() {
            let _ = writeln!(out, "no usage since {}", rfc3339(since));
            return Ok(());
        }
        let by_day = self.by == UsageGrouping::Day;
        if by_day {
            let _ = write!(out, "{:<10} ", "DAY");
        }
        let _ = writeln!(
            out,
            "{:<20} {:<18} {:<28} {:<16} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
            "AGENT",
            "PROVIDER",
            "MODEL",
            "KEY",
            "CALLS",
            "IN TOKENS",
            "CACHE READ",
            "CACHE WRITE",
            "OUT TOKENS",
            "COST USD"
        );
        let mut estimated = 0;
        for row in rows {
            // `~` marks totals that include estimated counts.
            let mark = if row.estimated_calls > 0 { "~" } else { "" };
            estimated += row.estimated_calls;
            if by_day {
                let _ = write!(out, "{:<10} ", row.day.as_deref().unwrap_or(""));
            }
            let _ = writeln!(
                out,
                "{:<20} {:<18} {:<28} {:<16} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
                row.agent,
                row.provider,
                row.model,
                row.key_id.as_deref().unwrap_or("-"),
                row.calls,
                format!("{mark}{}", row.input_tokens),
                row.cache_read_tokens,
                row.cache_write_tokens,
                format!("{mark}{}", row.output_tokens),
                format!("{mark}{:.6}", row.cost_micros as f64 / 1e6)
            );
        }
        if estimated > 0 {
            let _ = writeln!(
                out,
                "~ includes {estimated} call(s) the host counted itself: upper bounds where the server reported no token counts, the worst case where a call failed after it may have run"
            );
        }
        Ok(())
    }
}

/// `clawcage key …`: manage provider keys and tool credentials.
#[derive(Debug, clap::Args)]
pub struct KeyCommand {
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
    /// Manage the keys of a running daemon at this URL instead of the
    /// local state directory (`--remote` alone: http://127.0.0.1:7878).
    #[arg(long, num_args = 0..=1, default_missing_value = "http://127.0.0.1:7878", global = true)]
    pub remote: Option<String>,
    /// The daemon's API token (default: `admin.token` in the state
    /// directory).
    #[arg(long, env = "CLAWCAGE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: KeyAction,
}

/// Key subcommands. Secrets are read from stdin or a named environment
/// variable, never from the command line, where other users can see them.
#[derive(Debug, clap::Subcommand)]
pub enum KeyAction {
    /// Add a key; its value is read from stdin (or `--from-env`).
    Add {
        /// The key's id, used in manifests (`key = "<id>"`).
        id: String,
        /// The provider: anthropic, openai, openai-compatible, github, slack, notion, http.
        #[arg(long)]
        provider: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// List keys: id, provider, fingerprint, dates. Never the value.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a key's value; takes effect at the next call, also in a
    /// running daemon.
    Rotate {
        /// The key's id.
        id: String,
        /// Read the value from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// Revoke a key: its ciphertext is deleted and calls using it fail.
    Revoke {
        /// The key's id.
        id: String,
    },
    /// Forget a revoked key, so that its id can be added again.
    Delete {
        /// The key's id.
        id: String,
    },
}

/// Reads a secret; a note about white space dropped around it goes to
/// `out`, so the operator knows what was stored.
fn read_secret(
    from_env: Option<&str>,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<Secret, String> {
    let text = match from_env {
        Some(var) => Zeroizing::new(
            std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set (or not UTF-8)"))?,
        ),
        None => {
            let mut bytes = Zeroizing::new(Vec::new());
            stdin
                .take(MAX_SECRET_BYTES as u64 + 2)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read the key from stdin: {e}"))?;
            Zeroizing::new(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| "the key is not UTF-8".to_string())?,
            )
        }
    };
    // Keys are never white space at either end: what is around a pasted
    // key (a newline, a stray space, a tab from a copied table cell) is
    // dropped, and the operator is told, so what is stored is exactly the
    // key the provider issued.
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the key is empty".into());
    }
    let dropped = text.len() - trimmed.len();
    let only_final_newline = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        == Some(trimmed);
    if dropped > 0 && !only_final_newline {
        let _ = writeln!(
            out,
            "note: removed {dropped} byte{} of white space around the key",
            if dropped == 1 { "" } else { "s" }
        );
    }
    Ok(Secret::from(trimmed.to_string()))
}

fn describe(info: &KeyInfo) -> String {
    let state = match (info.revoked_at, info.rotated_at) {
        (Some(at), _) => format!("revoked {at}"),
        (None, Some(at)) => format!("rotated {at}"),
        (None, None) => "active".into(),
    };
    format!(
        "{:<24} {:<18} {}  created {}  {state}",
        info.id, info.provider, info.fingerprint, info.created_at
    )
}

impl KeyCommand {
    /// Runs the command against a daemon's API.
    fn run_remote(
        self,
        url: &str,
        stdin: &mut dyn Read,
        out: &mut dyn Write,
    ) -> Result<(), String> {
        use reqwest::Method;
        let token = match &self.token {
            Some(token) => token.clone(),
            None => {
                let path = self.state.dir()?.join(super::TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| format!("no --token, CLAWCAGE_TOKEN or {}: {e}", path.display()))?
            }
        };
        // The secret goes only into the request body.
        let with_secret =
            |fields: Vec<(&str, &str)>, secret: &Secret| -> Result<Zeroizing<String>, String> {
                let mut map = serde_json::Map::new();
                for (name, value) in fields {
                    map.insert(name.into(), value.into());
                }
                map.insert(
                    "secret".into(),
                    secret.expose_str().ok_or("the key is not UTF-8")?.into(),
                );
                Ok(Zeroizing::new(serde_json::Value::Object(map).to_string()))
            };
        let (method, path, body) = match &self.action {
            KeyAction::Add {
                id,
                provider,
                from_env,
            } => {
                let secret = read_secret(from_env.as_deref(), stdin, out)?;
                let body = with_secret(vec![("id", id), ("provider", provider)], &secret)?;
                (Method::POST, "/v1/keys".to_string(), Some(body))
            }
            KeyAction::Rotate { id, from_env } => {
                let secret = read_secret(from_env.as_deref(), stdin, out)?;
                (
                    Method::POST,
                    format!("/v1/keys/{id}/rotate"),
                    Some(with_secret(vec![], &secret)?),
                )
            }
            KeyAction::Revoke { id } => (Method::DELETE, format!("/v1/keys/{id}"), None),
            KeyAction::Delete { id } => (Method::POST, format!("/v1/keys/{id}/delete"), None),
            KeyAction::List { .. } => (Method::GET, "/v1/keys".to_string(), None),
        };
        let value =
            super::remote::block_on(super::remote::remote_call(url, &token, method, &path, body))?;
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        Ok(())
    }

    /// Runs the command, reading secrets from `stdin`.
    pub fn run(self, stdin: &mut dyn Read, out: &mut dyn Write) -> Result<(), String> {
        if let Some(url) = self.remote.clone() {
            return self.run_remote(&url, stdin, out);
        }
        let (vault, audit) = self.state.open_vault_and_audit()?;
        let prompt = || {
            if std::io::stdin().is_terminal() {
                eprintln!("paste the key, then press Enter and Ctrl-D:");
            }
        };
        let result: Result<String, VaultError> = match self.action {
            KeyAction::Add {
                id,
                provider,
                from_env,
            } => {
                if from_env.is_none() {
                    prompt();
                }
                let secret = read_secret(from_env.as_deref(), stdin, out)?;
                vault
                    .add(&id, &provider, &secret)
                    .map(|info| audited(&audit, "add", &info, "added"))
            }
            KeyAction::Rotate { id, from_env } => {
                if from_env.is_none() {
                    prompt();
                }
                let secret = read_secret(from_env.as_deref(), stdin, out)?;
                vault
                    .rotate(&id, &secret)
                    .map(|info| audited(&audit, "rotate", &info, "rotated"))
            }
            KeyAction::Revoke { id } => vault
                .revoke(&id)
                .map(|info| audited(&audit, "revoke", &info, "revoked")),
            KeyAction::Delete { id } => vault
                .delete(&id)
                .map(|info| audited(&audit, "delete", &info, "deleted")),
            KeyAction::List { json } => vault.list().map(|keys| {
                if json {
                    serde_json::to_string_pretty(&keys).unwrap_or_default()
                } else if keys.is_empty() {
                    "no keys".into()
                } else {
                    keys.iter().map(describe).collect::<Vec<_>>().join("\n")
                }
            }),
        };
        let text = result.map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{text}");
        // The change is made; its record must be too, or the operator hears
        // of it.
        audit.flush().map_err(|e| {
            format!("the key change was made but its audit record was not written: {e}")
        })
    }
}

/// Appends the audit record of a local key change and describes it.
fn audited(
    audit: &crate::audit::AuditLog,
    change: &str,
    info: &crate::vault::KeyInfo,
    done: &str,
) -> String {
    audit.append(crate::audit::AuditEvent::Key {
        change: change.into(),
        key_id: info.id.clone(),
        provider: info.provider.clone(),
        actor: "cli".into(),
    });
    format!("{done} {}", describe(info))
}

/// `clawcage cache`: the precompiled components `run` and `serve` keep.
#[derive(Debug, clap::Args)]
pub struct CacheCommand {
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
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
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Removes artifacts: all of them, or those unused for a while.
    Clean {
        /// Only those not used for this long (`7d`, `36h`, `90m`).
        #[arg(long, value_name = "AGE")]
        unused_for: Option<String>,
    },
}

impl CacheCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), String> {
        let dir = self
            .cache_dir
            .clone()
            .or_else(|| self.state.cache_dir())
            .or_else(super::default_cache_dir)
            .ok_or("no cache directory: pass --cache-dir")?;
        let artifacts = crate::engine::cached_artifacts(&dir, None)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        match self.action {
            CacheAction::List { json } => {
                if json {
                    let _ = writeln!(
                        out,
                        "{}",
                        serde_json::to_string_pretty(&artifacts).unwrap_or_default()
                    );
                    return Ok(());
                }
                let total: u64 = artifacts.iter().map(|a| a.bytes).sum();
                let _ = writeln!(
                    out,
                    "{:<64}  {:<32}  {:>10}  LAST USED",
                    "COMPONENT SHA256", "ENGINE", "MIB"
                );
                for a in &artifacts {
                    let _ = writeln!(
                        out,
                        "{:<64}  {:<32}  {:>10.1}  {}",
                        a.sha256,
                        a.engine,
                        a.bytes as f64 / f64::from(1 << 20),
                        rfc3339(a.last_used)
                    );
                }
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
                        .map_err(|e| e.replace("--since", "--unused-for"))?,
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

/// Unix seconds as RFC 3339, for people.
pub(crate) fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map_or_else(|| seconds.to_string(), |t| t.to_rfc3339())
}
