//! `clawcage serve`: the daemon, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::failure::{CliError, exit};
use super::state::StateArgs;
use crate::daemon::{Bundle, Daemon, DaemonOptions};

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
    /// Most MiB of blobs one registry namespace may hold; an upload past
    /// it is refused (`DENIED`). 0: no bound.
    #[arg(long, default_value_t = crate::registry::blobs::DEFAULT_NAMESPACE_QUOTA_BYTES >> 20, env = "CLAWCAGE_REGISTRY_QUOTA_MIB")]
    pub registry_quota_mib: u64,
    /// Do not serve the dashboard at `/ui/`.
    #[arg(long)]
    pub no_ui: bool,
    /// Where operators reach the daemon, e.g. `https://clawcage.example`
    /// behind a TLS proxy: an https URL makes the dashboard's session
    /// cookie `Secure`.
    #[arg(long, env = "CLAWCAGE_PUBLIC_URL")]
    pub public_url: Option<String>,
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
                return std::process::ExitCode::from(exit::HOST);
            }
        };
        match runtime.block_on(self.serve()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                std::process::ExitCode::from(error.code)
            }
        }
    }

    async fn serve(self) -> Result<(), CliError> {
        // The port first: a busy one is found before anything is deployed.
        let listener = tokio::net::TcpListener::bind(self.listen.as_str())
            .await
            .map_err(|e| {
                CliError::new(exit::HOST, format!("cannot listen on {}: {e}", self.listen))
            })?;
        let dir = self.state.dir()?;
        // Not initialised is its own failure.
        crate::db::Database::open(&dir)?;
        let mut options = DaemonOptions::new(dir);
        options.max_concurrent = self.max_concurrent.max(1);
        options.drain_timeout = Duration::from_secs(self.drain_seconds);
        options.min_free_disk_bytes = self.min_free_disk_mib.saturating_mul(1 << 20);
        options.ui = !self.no_ui;
        options.public_url = self.public_url.clone();
        options.registry_quota_bytes =
            (self.registry_quota_mib > 0).then(|| self.registry_quota_mib.saturating_mul(1 << 20));
        options.engine.max_concurrent_instances = (options.max_concurrent as u32).max(16);
        let daemon = Daemon::open(options)?;
        for manifest in &self.deploy {
            let bundle = Bundle::from_manifest_file(manifest)
                .map_err(|e| CliError::new(exit::BAD_MANIFEST, e))?;
            let name = crate::manifest::Manifest::from_toml(&bundle.manifest)
                .map_err(|e| CliError::new(exit::BAD_MANIFEST, e.to_string()))?
                .name;
            let info = daemon
                .deploy(&name, bundle, "serve --deploy")
                .map_err(|e| {
                    // A refused deployment at start is a bad manifest.
                    let error = CliError::from(e);
                    let code = if error.code == exit::REFUSED {
                        exit::BAD_MANIFEST
                    } else {
                        error.code
                    };
                    CliError::new(code, format!("{}: {error}", manifest.display()))
                })?;
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
