//! `clawcage serve`, and the commands around it: API tokens, the audit log,
//! and clients that talk to a running daemon.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::remote::{block_on, remote_call};
use super::state::StateArgs;
use crate::daemon::{Bundle, Daemon, DaemonOptions};

/// The token file `init` writes, for local clients.
pub const TOKEN_FILE: &str = "admin.token";

/// `clawcage serve`: runs the daemon.
#[derive(Debug, clap::Args)]
pub struct ServeCommand {
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
    /// Where to listen, `host:port` (a name such as `localhost` is
    /// resolved). Loopback by default: put a TLS proxy in front to expose
    /// it.
    #[arg(long, default_value = "127.0.0.1:7878", env = "CLAWCAGE_LISTEN")]
    pub listen: String,
    /// Events running at once across all agents.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent: usize,
    /// Seconds to wait for events in flight on SIGTERM or SIGINT.
    #[arg(long, default_value_t = 30)]
    pub drain_seconds: u64,
    /// Agent manifests to deploy at start (their component and cassettes
    /// are read from beside them).
    #[arg(long)]
    pub deploy: Vec<PathBuf>,
    /// Free space (MiB) the state directory's disk must keep: below it, new
    /// events are answered 503 instead of failing halfway through writing
    /// their records. 0 turns the check off.
    #[arg(long, default_value_t = crate::daemon::DEFAULT_MIN_FREE_DISK_BYTES >> 20, env = "CLAWCAGE_MIN_FREE_DISK_MIB")]
    pub min_free_disk_mib: u64,
}

impl ServeCommand {
    /// Runs the daemon until a signal; returns the exit code.
    pub fn execute(self) -> std::process::ExitCode {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        match runtime.block_on(self.serve()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                std::process::ExitCode::FAILURE
            }
        }
    }

    async fn serve(self) -> Result<(), String> {
        // The port first: a busy one is found before anything is deployed.
        let listener = tokio::net::TcpListener::bind(self.listen.as_str())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.listen))?;
        let mut options = DaemonOptions::new(self.state.dir()?);
        options.max_concurrent = self.max_concurrent.max(1);
        options.drain_timeout = Duration::from_secs(self.drain_seconds);
        options.min_free_disk_bytes = self.min_free_disk_mib.saturating_mul(1 << 20);
        options.engine.max_concurrent_instances = (options.max_concurrent as u32).max(16);
        let daemon = Daemon::open(options)?;
        for manifest in &self.deploy {
            let bundle = Bundle::from_manifest_file(manifest)?;
            let name = crate::manifest::Manifest::from_toml(&bundle.manifest)
                .map_err(|e| e.to_string())?
                .name;
            let info = daemon
                .deploy(&name, bundle, "serve --deploy")
                .map_err(|e| format!("{}: {e}", manifest.display()))?;
            eprintln!("deployed {} ({})", info.name, &info.sha256[..12]);
        }
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let shutdown = shutdown_signal();
        eprintln!("clawcage daemon listening on http://{address}");
        let schedules = tokio::spawn(crate::daemon::schedule::run(daemon.clone()));
        let trust = tokio::spawn(crate::daemon::watch_trust(daemon.clone()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let server = {
            let stop = stop.clone();
            let router = crate::daemon::api::router(daemon.clone());
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.notified().await })
                    .await
            })
        };
        shutdown.await;
        eprintln!("shutting down: draining events in flight");
        let left = daemon.drain().await;
        if left > 0 {
            eprintln!("{left} events were still running after the drain timeout");
        }
        stop.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        schedules.abort();
        trust.abort();
        daemon.audit.close();
        eprintln!("stopped");
        Ok(())
    }
}

/// A future that resolves on SIGTERM or SIGINT, with both handlers
/// installed by the time this returns (not when it is first polled), so a
/// signal sent right after the "listening" line is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `clawcage token`: API tokens for the daemon.
#[derive(Debug, clap::Args)]
pub struct TokenCommand {
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: TokenAction,
}

/// Token subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenAction {
    /// Creates a token and prints it (the only time it is shown). An admin
    /// token unless `--publish` is given.
    Add {
        /// Its name.
        name: String,
        /// Make a publisher token: it may only push to and pull from the
        /// registry, in these namespaces (repeat; `*` for all).
        #[arg(long = "publish", value_name = "NAMESPACE")]
        publish: Vec<String>,
    },
    /// Lists tokens (names and dates, never values).
    List,
    /// Revokes a token.
    Revoke {
        /// Its name.
        name: String,
    },
}

impl TokenCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), String> {
        let db = crate::db::Database::open(&self.state.dir()?).map_err(|e| e.to_string())?;
        let tokens = crate::daemon::auth::Tokens::new(Arc::new(db));
        match self.action {
            TokenAction::Add { name, publish } => {
                let scope = if publish.is_empty() {
                    crate::daemon::auth::Scope::Admin
                } else {
                    crate::daemon::auth::Scope::Publish(publish)
                };
                let token = tokens.create_scoped(&name, &scope)?;
                let _ = writeln!(out, "{}", token.expose_str().unwrap_or_default());
            }
            TokenAction::List => {
                for token in tokens.list().map_err(|e| e.to_string())? {
                    let _ = writeln!(
                        out,
                        "{}\tcreated {}\t{}\t{}",
                        token.name,
                        token.created_at,
                        token
                            .revoked_at
                            .map_or("active".to_string(), |at| format!("revoked {at}")),
                        token
                            .publish
                            .map_or("admin".to_string(), |n| format!("publish {}", n.join(",")))
                    );
                }
            }
            TokenAction::Revoke { name } => {
                tokens.revoke(&name)?;
                let _ = writeln!(out, "revoked {name}");
            }
        }
        Ok(())
    }
}

/// `clawcage audit`: checks or exports the audit log.
#[derive(Debug, clap::Args)]
pub struct AuditCommand {
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: AuditAction,
}

/// Audit subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditAction {
    /// Recomputes the hash chain; fails naming the first edited, deleted or
    /// moved record.
    Verify,
    /// Writes every record as JSON Lines.
    Export,
}

impl AuditCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), String> {
        let db =
            Arc::new(crate::db::Database::open(&self.state.dir()?).map_err(|e| e.to_string())?);
        let audit = crate::audit::AuditLog::new(db);
        let result = match self.action {
            AuditAction::Verify => {
                let v = audit.verify().map_err(|e| e.to_string())?;
                match v.problem {
                    None => {
                        let _ = writeln!(out, "ok: {} records, head {}", v.records, v.head);
                        Ok(())
                    }
                    Some(problem) => Err(format!(
                        "the audit log was tampered with: {problem} ({} records verified before it)",
                        v.records
                    )),
                }
            }
            AuditAction::Export => {
                let mut after = 0;
                loop {
                    let records = audit.read(after, 1000).map_err(|e| e.to_string())?;
                    let Some(last) = records.last() else { break };
                    after = last.seq;
                    for record in &records {
                        let _ =
                            writeln!(out, "{}", serde_json::to_string(record).unwrap_or_default());
                    }
                }
                Ok(())
            }
        };
        audit.close();
        result
    }
}

/// Where a running daemon is, and the token to use.
#[derive(clap::Args)]
pub struct RemoteArgs {
    /// The daemon's URL.
    #[arg(
        long = "remote",
        env = "CLAWCAGE_URL",
        default_value = "http://127.0.0.1:7878"
    )]
    pub url: String,
    /// An API token (default: `admin.token` in the state directory).
    #[arg(long, env = "CLAWCAGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The state directory, to find `admin.token`.
    #[command(flatten)]
    pub state: StateArgs,
}

impl std::fmt::Debug for RemoteArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteArgs")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("state", &self.state)
            .finish()
    }
}

impl RemoteArgs {
    /// The token: `--token`, `CLAWCAGE_TOKEN`, or `admin.token`.
    pub(crate) fn token(&self) -> Result<String, String> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let path = self.state.dir()?.join(TOKEN_FILE);
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("no --token, CLAWCAGE_TOKEN or {}: {e}", path.display()))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let body = body.map(|b| zeroize::Zeroizing::new(b.to_string()));
        remote_call(&self.url, &self.token()?, method, path, body).await
    }
}

/// `clawcage agent`: deploys, lists and removes agents on a running daemon.
#[derive(Debug, clap::Args)]
pub struct AgentCommand {
    /// The daemon.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: AgentAction,
}

/// Agent subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AgentAction {
    /// Uploads a manifest, its component and its cassettes; replaces a
    /// deployed agent of the same name for its next event.
    Deploy {
        /// The manifest.
        manifest: PathBuf,
        /// Deploy this registry component (`acme/triage@1.2.0` or
        /// `acme/triage@sha256:<hex>`) instead of the manifest's
        /// `component`; the daemon's trust policy must allow it.
        #[arg(long)]
        component: Option<String>,
    },
    /// Lists deployed agents.
    List,
    /// Shows one agent: origin, bindings and fallbacks, tools and scopes,
    /// triggers, limits, budget, queue and suspensions.
    Show {
        /// Its name.
        name: String,
    },
    /// Removes an agent.
    Remove {
        /// Its name.
        name: String,
    },
    /// Lists the bindings and grants suspended after a blocked leak.
    Suspensions,
    /// Resumes an agent's suspended bindings and grants: all of them, or
    /// the one named. Rotate the key first if the provider or tool that
    /// echoed it cannot be trusted with it.
    Resume {
        /// The agent.
        name: String,
        /// Only this model binding.
        #[arg(long, conflicts_with = "tool")]
        model: Option<String>,
        /// Only this tool grant.
        #[arg(long)]
        tool: Option<String>,
        /// Resume although the key that came back was not rotated since
        /// (a guest that was guessing at it gets another answer).
        #[arg(long)]
        force: bool,
    },
}

impl AgentCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), String> {
        let value = match &self.action {
            AgentAction::Deploy {
                manifest,
                component,
            } => {
                let mut bundle = Bundle::from_manifest_file(manifest)?;
                if let Some(reference) = component {
                    crate::registry::parse_reference(reference)?;
                    bundle = bundle.with_registry_component(reference)?;
                }
                let name = crate::manifest::Manifest::from_toml(&bundle.manifest)
                    .map_err(|e| e.to_string())?
                    .name;
                let body = json!({"manifest": bundle.manifest, "component": bundle.component, "files": bundle.files});
                block_on(self.remote.call(
                    reqwest::Method::PUT,
                    &format!("/v1/agents/{name}"),
                    Some(body),
                ))?
            }
            AgentAction::List => {
                block_on(self.remote.call(reqwest::Method::GET, "/v1/agents", None))?
            }
            AgentAction::Show { name } => block_on(self.remote.call(
                reqwest::Method::GET,
                &format!("/v1/agents/{name}"),
                None,
            ))?,
            AgentAction::Suspensions => block_on(self.remote.call(
                reqwest::Method::GET,
                "/v1/suspensions",
                None,
            ))?,
            AgentAction::Resume {
                name,
                model,
                tool,
                force,
            } => {
                let mut body = serde_json::Map::new();
                if *force {
                    body.insert("force".into(), json!(true));
                }
                if let Some(model) = model {
                    body.insert("model".into(), json!(model));
                }
                if let Some(tool) = tool {
                    body.insert("tool".into(), json!(tool));
                }
                block_on(self.remote.call(
                    reqwest::Method::POST,
                    &format!("/v1/agents/{name}/resume"),
                    Some(Value::Object(body)),
                ))?
            }
            AgentAction::Remove { name } => {
                block_on(self.remote.call(
                    reqwest::Method::DELETE,
                    &format!("/v1/agents/{name}"),
                    None,
                ))?;
                json!({"removed": name})
            }
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        Ok(())
    }
}

/// `clawcage invocations`: recent invocations on a running daemon.
#[derive(Debug, clap::Args)]
pub struct InvocationsCommand {
    /// The daemon.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this outcome (`ok`, or an error kind such as `crashed`).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only this source (`api`, `github`, `schedule`, …).
    #[arg(long)]
    pub source: Option<String>,
    /// Only since then: `today`, a date, a time ago (`7d`, `36h`, `90m`).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many (newest first; at most 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl InvocationsCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), String> {
        let mut query = vec![format!("limit={}", self.limit)];
        for (name, value) in [
            ("agent", &self.agent),
            ("outcome", &self.outcome),
            ("source", &self.source),
            ("since", &self.since),
        ] {
            if let Some(value) = value {
                query.push(format!(
                    "{name}={}",
                    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
                ));
            }
        }
        let path = format!("/v1/invocations?{}", query.join("&"));
        let value = block_on(self.remote.call(reqwest::Method::GET, &path, None))?;
        let rows = value["invocations"].as_array().cloned().unwrap_or_default();
        if self.json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
            return Ok(());
        }
        let _ = writeln!(
            out,
            "{:<25} {:<20} {:<10} {:<16} {:>9} {:<12} {:>6} {:>9} {:>11}",
            "STARTED", "AGENT", "SOURCE", "KIND", "MS", "OUTCOME", "CALLS", "TOKENS", "COST USD"
        );
        for row in &rows {
            let _ = writeln!(
                out,
                "{:<25} {:<20} {:<10} {:<16} {:>9} {:<12} {:>6} {:>9} {:>11.6}",
                row["started_at"].as_str().unwrap_or(""),
                row["agent"].as_str().unwrap_or(""),
                row["source"].as_str().unwrap_or(""),
                row["kind"].as_str().unwrap_or(""),
                row["duration_ms"],
                row["outcome"].as_str().unwrap_or(""),
                row["model_calls"],
                row["tokens"],
                row["cost_micros"].as_u64().unwrap_or(0) as f64 / 1e6,
            );
        }
        Ok(())
    }
}

/// `clawcage invoke`: runs an event on a deployed agent.
#[derive(Debug, clap::Args)]
pub struct InvokeCommand {
    /// The daemon.
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// The agent.
    pub agent: String,
    /// The event.
    #[command(flatten)]
    pub event: super::event::EventArgs,
}

impl InvokeCommand {
    /// Runs the command.
    pub fn run(self, out: &mut dyn Write) -> Result<(), String> {
        let text = self.event.json_text().map_err(|e| e.to_string())?;
        let event: Value =
            serde_json::from_str(&text).map_err(|e| format!("the event is not JSON: {e}"))?;
        let path = format!("/v1/agents/{}/invoke", self.agent);
        let value = block_on(self.remote.call(reqwest::Method::POST, &path, Some(event)))?;
        match value["result"].as_str() {
            Some(result) => {
                let _ = writeln!(out, "{result}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}
