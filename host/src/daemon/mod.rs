//! The host daemon: deployed agents, invoked by API calls, webhooks and
//! schedules, concurrently and under backpressure, with an audit trail.
//!
//! - Agents are deployed as bundles (manifest, component, files such as
//!   cassettes) into `agents/<name>/` under the state directory, and loaded
//!   again at start. A new deployment replaces the old one for the next
//!   event; events in flight finish on the version they started with.
//! - Each agent runs at most `concurrency.max_concurrent` events at once
//!   and queues at most `concurrency.max_queued`; past that, the answer is
//!   429 with `Retry-After`. A global limit bounds all agents together, so
//!   one agent's queue cannot hold every instance.
//! - Every invocation, model call, tool decision, key change, deployment
//!   and admin request is an [`AuditEvent`].

//!
//! One module per concern: [`agents`] (the deployed set), [`deploy`]
//! (bundles and their checks), [`trust`] (the registry trust policy),
//! [`invoke`] (queues, limits and results), [`suspensions`], [`hooks`]
//! (webhook endpoints), [`api`] (the HTTP routes) and [`error`] (every
//! failure's HTTP status, in one place).

mod agents;
pub mod api;
pub mod auth;
mod deploy;
pub mod error;
pub mod hooks;
pub mod invocations;
mod invoke;
pub mod metrics;
pub mod overrides;
pub mod pause;
pub mod schedule;
mod suspensions;
pub mod trust;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

pub use agents::Origin;
pub use agents::{AgentDetail, AgentInfo, Deployed};
pub use deploy::{Bundle, MAX_BUNDLE_FILE_BYTES, MAX_BUNDLE_FILES, MAX_COMPONENT_BYTES};
pub use error::DaemonError;
pub use invoke::{MAX_KEPT_RESULTS, Outcome, OutcomeError, Pending, error_kind};
pub use trust::watch_trust;

use crate::audit::{AuditEvent, AuditLog};
use crate::db::Database;
use crate::providers::binding::{LeakReport, Services};
use crate::tools::connector::{Decision, DecisionSink};
use crate::{Cage, EngineOptions};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The state directory (`clawcage init`).
    pub state_dir: PathBuf,
    /// Events running at once across all agents.
    pub max_concurrent: usize,
    /// How long shutdown waits for events in flight.
    pub drain_timeout: Duration,
    /// Largest invoke or webhook body.
    pub max_event_bytes: usize,
    /// Largest blob the registry takes (a pushed component, say).
    pub max_blob_bytes: u64,
    /// Most bytes of blobs one registry namespace may hold (`None`: no
    /// bound).
    pub registry_quota_bytes: Option<u64>,
    /// Serve the dashboard at `/ui/` (default: yes).
    pub ui: bool,
    /// Where operators reach the daemon (`https://…` makes the dashboard's
    /// session cookie `Secure`).
    pub public_url: Option<String>,
    /// The engine's settings.
    pub engine: EngineOptions,
    /// Free space the state directory's disk must keep: below it, new events
    /// are refused with 503.
    pub min_free_disk_bytes: u64,
}

/// The default reserve of free disk for the state directory: 256 MiB.
pub(crate) const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 256 << 20;

impl DaemonOptions {
    /// Defaults for a state directory. Compiled components are cached in
    /// its `cache/`, so a component checked when pushed or deployed is not
    /// compiled again.
    pub fn new(state_dir: PathBuf) -> Self {
        let engine = EngineOptions {
            cache_dir: Some(state_dir.join("cache")),
            ..EngineOptions::default()
        };
        Self {
            state_dir,
            max_concurrent: 64,
            drain_timeout: Duration::from_secs(30),
            max_event_bytes: 1 << 20,
            max_blob_bytes: crate::registry::blobs::DEFAULT_MAX_BLOB_BYTES,
            registry_quota_bytes: Some(crate::registry::blobs::DEFAULT_NAMESPACE_QUOTA_BYTES),
            ui: true,
            public_url: None,
            engine,
            min_free_disk_bytes: DEFAULT_MIN_FREE_DISK_BYTES,
        }
    }
}

/// The daemon's shared state.
pub struct Daemon {
    options: DaemonOptions,
    cage: Cage,
    /// Vault, ledger, prices, HTTP client.
    pub services: Arc<Services>,
    /// The audit log.
    pub audit: AuditLog,
    /// The list of recent invocations.
    pub invocations: invocations::InvocationLog,
    /// API tokens.
    pub tokens: auth::Tokens,
    /// Metrics.
    pub metrics: metrics::Metrics,
    db: Arc<Database>,
    agents: RwLock<BTreeMap<String, Arc<Deployed>>>,
    global: Semaphore,
    results: Mutex<(HashMap<String, Pending>, VecDeque<String>)>,
    in_flight: AtomicUsize,
    idle: Notify,
    shutting_down: AtomicBool,
    registry: Option<crate::registry::Registry>,
    /// The SHA-256 of the trust policy file as last enforced.
    trust_seen: Mutex<Option<[u8; 32]>>,
    /// When the daemon opened, for the free-space reading's age.
    started: std::time::Instant,
    /// The last free-space reading of the state directory's disk, and when
    /// it was taken (ms after `started`, plus one; 0: never).
    disk_free: std::sync::atomic::AtomicU64,
    disk_checked_ms: std::sync::atomic::AtomicU64,
    /// Agents an operator paused ([`pause`]).
    paused: Mutex<BTreeMap<String, pause::Pause>>,
    /// Serialises deploy, remove and trust enforcement, so an agent checked
    /// against one trust policy is never installed after another policy
    /// was enforced, and a removed agent is never loaded back.
    lifecycle: Mutex<()>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("state_dir", &self.options.state_dir)
            .finish_non_exhaustive()
    }
}

/// Sends tool decisions to the audit log and the metrics.
struct AuditDecisions {
    audit: AuditLog,
    metrics: metrics::Metrics,
}

impl DecisionSink for AuditDecisions {
    fn record(&self, decision: &Decision) {
        if !decision.allowed {
            self.metrics.add(
                "clawcage_tool_denials_total",
                &[("agent", &decision.agent), ("tool", &decision.tool)],
                1,
            );
        }
        self.audit.append(AuditEvent::Tool {
            agent: decision.agent.clone(),
            tool: decision.tool.clone(),
            action: decision.action.clone(),
            resource: decision.resource.clone(),
            allowed: decision.allowed,
            reason: decision.reason.clone(),
            event_id: decision.event_id.clone(),
        });
    }
}

fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}
impl Daemon {
    /// Opens the state directory (it must be initialised), takes its budget
    /// lock, and loads every deployed agent.
    pub fn open(options: DaemonOptions) -> Result<Arc<Self>, DaemonError> {
        let dir = options.state_dir.clone();
        let (db, services) = Services::open(&dir).map_err(DaemonError::Host)?;
        let audit = AuditLog::new(db.clone());
        let metrics = metrics::Metrics::default();
        {
            let audit = audit.clone();
            let metrics = metrics.clone();
            services
                .ledger
                .set_usage_hook(Arc::new(move |record: &crate::ledger::UsageRecord| {
                    let agent = record.agent.as_str();
                    metrics.add(
                        "clawcage_inference_tokens_total",
                        &[("agent", agent), ("direction", "input")],
                        record.input_tokens,
                    );
                    metrics.add(
                        "clawcage_inference_tokens_total",
                        &[("agent", agent), ("direction", "output")],
                        record.output_tokens,
                    );
                    metrics.add(
                        "clawcage_inference_cost_usd_micros_total",
                        &[("agent", agent)],
                        record.cost_micros,
                    );
                    if record.fallback > 0 {
                        metrics.add(
                            "clawcage_inference_fallback_attempts_total",
                            &[("agent", agent)],
                            1,
                        );
                    }
                    if record.estimated {
                        metrics.add(
                            "clawcage_inference_estimated_calls_total",
                            &[("agent", agent)],
                            1,
                        );
                    }
                    audit.append(AuditEvent::Inference {
                        agent: record.agent.clone(),
                        binding: record.binding.clone(),
                        provider: record.provider.clone(),
                        model: record.model.clone(),
                        key_id: record.key_id.clone(),
                        input_tokens: record.input_tokens,
                        output_tokens: record.output_tokens,
                        cache_read_tokens: record.cache_read_tokens,
                        cache_write_tokens: record.cache_write_tokens,
                        estimated: record.estimated,
                        fallback: record.fallback,
                        cost_micros: record.cost_micros,
                        status: record.outcome.clone(),
                        event_id: record.event_id.clone(),
                    });
                }));
        }
        {
            let audit = audit.clone();
            let metrics = metrics.clone();
            services.set_leak_hook(Arc::new(move |report: &LeakReport| {
                metrics.add(
                    "clawcage_leaks_blocked_total",
                    &[
                        ("agent", &report.agent),
                        ("capability", report.capability.name()),
                    ],
                    1,
                );
                audit.append(AuditEvent::LeakBlocked {
                    agent: report.agent.clone(),
                    capability: report.capability.name().to_string(),
                    name: report.name.clone(),
                    key_id: report.key_id.clone(),
                    event_id: report.event_id.clone(),
                    view: report.view.to_string(),
                });
            }));
        }
        let services = Arc::new(services);
        let cage = Cage::new(options.engine.clone())
            .map_err(|e| DaemonError::host("the engine", e))?
            .with_services(services.clone())
            .with_decision_sink(Arc::new(AuditDecisions {
                audit: audit.clone(),
                metrics: metrics.clone(),
            }));
        let registry = Some(
            crate::registry::Registry::open(
                &dir.join("registry"),
                options.max_blob_bytes,
                options.registry_quota_bytes,
            )
            .map_err(DaemonError::Host)?,
        );
        let paused = pause::load(&db).map_err(|e| DaemonError::host("paused agents", e))?;
        let daemon = Arc::new(Self {
            paused: Mutex::new(paused),
            global: Semaphore::new(options.max_concurrent),
            tokens: auth::Tokens::new(db.clone()),
            options,
            cage,
            services,
            audit: audit.clone(),
            invocations: invocations::InvocationLog::new(db.clone(), audit),
            metrics,
            db,
            agents: RwLock::new(BTreeMap::new()),
            results: Mutex::new((HashMap::new(), VecDeque::new())),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            shutting_down: AtomicBool::new(false),
            registry,
            trust_seen: Mutex::new(None),
            started: std::time::Instant::now(),
            disk_free: std::sync::atomic::AtomicU64::new(0),
            disk_checked_ms: std::sync::atomic::AtomicU64::new(0),
            lifecycle: Mutex::new(()),
        });
        daemon.load_deployed().map_err(DaemonError::Host)?;
        Ok(daemon)
    }

    pub(super) fn agents_dir(&self) -> PathBuf {
        self.options.state_dir.join("agents")
    }
    /// Checks that `bytes` is a component of the `clawcage:agent` world,
    /// compiling it (and caching the result, so its first event does not
    /// compile).
    pub(crate) fn check_component(&self, bytes: &[u8]) -> Result<String, String> {
        self.cage
            .load_component("pushed", bytes, None)
            .map(|agent| agent.sha256().to_string())
            .map_err(|e| e.to_string())
    }

    /// The component registry's storage.
    pub fn registry(&self) -> Option<&crate::registry::Registry> {
        self.registry.as_ref()
    }

    /// Events in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Stops taking events and waits for those in flight, up to the drain
    /// timeout; returns how many were still running when it gave up.
    pub async fn drain(&self) -> usize {
        self.shutting_down.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + self.options.drain_timeout;
        loop {
            let notified = self.idle.notified();
            let running = self.in_flight();
            if running == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        if let Err(error) = self.services.ledger.flush() {
            tracing::error!(%error, "usage rows not written at shutdown");
        }
        if let Some(registry) = &self.registry {
            registry.flush_upload_records(&self.audit);
        }
        self.audit.flush_refusals();
        if let Err(error) = self.audit.flush() {
            tracing::error!(%error, "audit records not written at shutdown");
        }
        self.in_flight()
    }

    /// A change to a vault key (`add`, `rotate`, `revoke`, `delete`) made
    /// by `actor`, and its audit record: the one path the API and the
    /// dashboard share.
    pub(crate) fn change_key(
        &self,
        change: &str,
        actor: &str,
        apply: impl FnOnce(
            &crate::vault::Vault,
        ) -> Result<crate::vault::KeyInfo, crate::vault::VaultError>,
    ) -> Result<crate::vault::KeyInfo, crate::vault::VaultError> {
        let info = apply(&self.services.vault)?;
        self.audit.append(AuditEvent::Key {
            change: change.into(),
            key_id: info.id.clone(),
            provider: info.provider.clone(),
            actor: actor.to_string(),
        });
        Ok(info)
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The options.
    pub fn options(&self) -> &DaemonOptions {
        &self.options
    }

    /// Events running now across all agents.
    pub fn running(&self) -> usize {
        self.options.max_concurrent - self.global.available_permits()
    }
}
