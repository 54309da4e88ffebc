//! `clawcage run`: one event through one agent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::exit;
use super::failure::CliError;
use crate::agent::Cage;
use crate::engine::EngineOptions;
use crate::error::{InvokeError, LoadError};
use crate::event::Event;
use crate::log::{LogLevel, LogStream};
use crate::manifest::Manifest;
use crate::providers::replay::{Cassette, record_into};

/// Whether `path` is a manifest rather than a component: by its first
/// bytes (a component starts with `\0asm`), whatever its name; by its
/// extension when it cannot be read (the loader then says why).
fn is_manifest(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) => &magic != b"\0asm",
        Err(_) => path.extension().is_some_and(|e| e == "toml"),
    }
}

/// `clawcage run <manifest.toml | component.wasm> --event <file | ->`
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 ok, 1 agent error, 2 usage, 3 missing file, 4 bad manifest, \
5 not a component, 6 wrong world, 7 bad event, 8 agent crashed, 9 limit hit, 10 host error"
)]
pub struct RunCommand {
    /// An agent manifest (`.toml`) or a component (`.wasm`, run with default
    /// limits and no grants).
    pub agent: PathBuf,
    /// The event.
    #[command(flatten)]
    pub event: super::event::EventArgs,
    /// Print a JSON report (outcome, logs, timing) instead of the bare result.
    #[arg(long)]
    pub json: bool,
    /// Directory for precompiled components.
    #[arg(long, env = "CLAWCAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every time instead of using the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Record every model exchange into this cassette (for the `replay`
    /// provider). Requests and redacted answers only, never a credential.
    #[arg(long, value_name = "CASSETTE")]
    pub record: Option<PathBuf>,
    /// The state directory, for agents that bind models.
    #[command(flatten)]
    pub state: super::StateArgs,
}

/// `run`'s failures are the CLI's.
type Failure = CliError;

impl From<LoadError> for CliError {
    fn from(e: LoadError) -> Self {
        let code = match &e {
            LoadError::Io { .. } => exit::MISSING_FILE,
            LoadError::Manifest(_)
            | LoadError::DigestMismatch { .. }
            | LoadError::Unsupported(_) => exit::BAD_MANIFEST,
            LoadError::NotAComponent(_) | LoadError::Compile(_) => exit::NOT_A_COMPONENT,
            LoadError::UnsupportedImport { .. } | LoadError::WrongWorld(_) => exit::WRONG_WORLD,
            LoadError::Engine(_) | LoadError::Cache(_) => exit::HOST,
            LoadError::UnknownKey(_) => exit::NOT_FOUND,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/clawcage` or
/// `~/.cache/clawcage`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("clawcage").join("components"))
}

impl RunCommand {
    /// Runs the command, printing the result to stdout and logs to stderr.
    pub fn execute(self) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::from(exit::HOST);
            }
        };
        let code = runtime.block_on(self.run_with(&mut std::io::stdout(), &mut std::io::stderr()));
        ExitCode::from(code)
    }

    /// Runs the command, writing the result to `out` and logs and errors to
    /// `err`; returns the exit code.
    pub async fn run_with(self, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
        match self.run(out, err).await {
            Ok(code) => code,
            Err(failure) => {
                let _ = writeln!(err, "error: {}", failure.message);
                failure.code
            }
        }
    }

    async fn run(self, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, Failure> {
        let event = self.read_event()?;
        let is_manifest = is_manifest(&self.agent);
        let manifest = if is_manifest {
            Some(Manifest::load(&self.agent)?)
        } else {
            None
        };
        let options = EngineOptions {
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir
                    .clone()
                    .or_else(|| self.state.cache_dir())
                    .or_else(default_cache_dir)
            },
            fuel: manifest.as_ref().is_some_and(|m| m.limits.fuel.is_some()),
            max_concurrent_instances: 4,
            ..EngineOptions::default()
        };
        let mut cage = Cage::new(options)?;
        let mut shared_services = None;
        // The vault is needed for any live model, and for any live tool
        // with a credential.
        if manifest.as_ref().is_some_and(|m| {
            m.models
                .values()
                .any(|b| !crate::providers::is_offline(&b.provider))
                || m.tools
                    .values()
                    .any(|t| t.cassette.is_none() && t.credential.is_some())
        }) {
            let services = self.state.open_services()?;
            cage = cage.with_services(services.clone());
            shared_services = Some(services);
        }
        let mut agent = match &manifest {
            Some(manifest) => {
                cage.load_manifest(manifest, self.agent.parent().unwrap_or(Path::new(".")))?
            }
            None => {
                let bytes =
                    crate::fsutil::read_bounded(&self.agent, crate::limits::MAX_COMPONENT_BYTES)?;
                let name = self
                    .agent
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("agent")
                    .to_string();
                cage.load_component(&name, &bytes, None)?
            }
        };
        agent.set_capture_logs(true);
        let tape = self
            .record
            .as_ref()
            .map(|_| std::sync::Arc::new(std::sync::Mutex::new(Cassette::default())));
        if let Some(tape) = &tape {
            record_into(&mut agent, tape);
        }
        let invocation = agent.invoke(event).await;
        if let Some(services) = &shared_services {
            // Usage rows are written in the background: make sure they are
            // on disk before the process exits.
            if let Err(error) = services.ledger.flush() {
                eprintln!("warning: {error}");
            }
        }
        if let (Some(path), Some(tape)) = (&self.record, &tape) {
            let cassette = tape.lock().unwrap_or_else(|e| e.into_inner()).clone();
            cassette.save(path).map_err(|message| Failure {
                code: exit::HOST,
                message,
            })?;
            let _ = writeln!(
                err,
                "recorded {} model exchanges and {} tool calls into {}",
                cassette.exchanges.len(),
                cassette.tool_calls.len(),
                path.display()
            );
        }

        if self.json {
            let report = serde_json::json!({
                "agent": agent.name(),
                "ok": invocation.outcome.as_ref().ok(),
                "error": invocation.outcome.as_ref().err(),
                "logs": invocation.logs,
                "logs_dropped": invocation.logs_dropped,
                "elapsed_ms": invocation.elapsed.as_secs_f64() * 1000.0,
            });
            let _ = writeln!(out, "{report:#}");
        } else {
            for line in &invocation.logs {
                let stream = match line.stream {
                    LogStream::Log => "",
                    LogStream::Stdout => " stdout",
                    LogStream::Stderr => " stderr",
                };
                let level = match line.level {
                    LogLevel::Trace => "TRACE",
                    LogLevel::Debug => "DEBUG",
                    LogLevel::Info => "INFO",
                    LogLevel::Warn => "WARN",
                    LogLevel::Error => "ERROR",
                };
                let _ = writeln!(err, "[{} {level}{stream}] {}", agent.name(), line.message);
            }
            if invocation.logs_dropped > 0 {
                let _ = writeln!(
                    err,
                    "[{}] {} log lines dropped",
                    agent.name(),
                    invocation.logs_dropped
                );
            }
            if let Ok(output) = &invocation.outcome {
                // The result is the agent's text: keep its lines, but never
                // pass escape sequences through to a terminal.
                let lines: Vec<_> = output
                    .split('\n')
                    .map(crate::log::escape_controls)
                    .collect();
                let _ = writeln!(out, "{}", lines.join("\n"));
            }
        }
        match invocation.outcome {
            Ok(_) => Ok(0),
            Err(error) => {
                let code = match &error {
                    InvokeError::InvalidEvent { .. } => exit::BAD_EVENT,
                    InvokeError::Agent { .. } => exit::AGENT_ERROR,
                    InvokeError::LimitExceeded { .. } | InvokeError::ResultTooLarge { .. } => {
                        exit::LIMIT
                    }
                    InvokeError::Crashed { .. } => exit::CRASHED,
                    InvokeError::Busy { .. } | InvokeError::Host { .. } => exit::HOST,
                };
                if self.json {
                    Ok(code)
                } else {
                    Err(Failure {
                        code,
                        message: crate::log::escape_controls(&error.to_string()).into_owned(),
                    })
                }
            }
        }
    }

    fn read_event(&self) -> Result<Event, Failure> {
        let text = self.event.json_text().map_err(|e| match e {
            super::event::EventError::File(e) => Failure::from(e),
            super::event::EventError::Invalid(message) => Failure {
                code: exit::BAD_EVENT,
                message,
            },
        })?;
        Event::from_json(&text).map_err(|message| Failure {
            code: exit::BAD_EVENT,
            message,
        })
    }
}
