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

pub mod api;
pub mod auth;
pub mod hooks;
pub mod invocations;
pub mod metrics;
pub mod schedule;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

use crate::audit::{AuditEvent, AuditLog};
use crate::db::Database;
use crate::error::InvokeError;
use crate::manifest::Manifest;
use crate::providers::binding::{LeakReport, Services};
use crate::suspend::{Capability, Suspension};
use crate::tools::connector::{Decision, DecisionSink};
use crate::{Agent, Cage, EngineOptions, Event};

/// Largest component in a deployment.
pub const MAX_COMPONENT_BYTES: usize = crate::limits::MAX_COMPONENT_BYTES as usize;
/// Most extra files (cassettes) in a deployment, and their total size.
pub const MAX_BUNDLE_FILES: usize = 16;
/// Largest extra file.
pub const MAX_BUNDLE_FILE_BYTES: usize = 16 << 20;
/// The trust policy, or why it could not be read.
type PolicyRead = Result<crate::registry::signing::TrustPolicy, String>;

/// The audit record of a change to a loaded agent: what it runs, its
/// grants by name, and where its component came from.
fn deployment_record(
    change: &str,
    name: &str,
    deployed: &Deployed,
    actor: &str,
    reason: Option<String>,
) -> AuditEvent {
    let origin = deployed.origin.as_ref();
    AuditEvent::Deployment {
        change: change.into(),
        agent: name.to_string(),
        sha256: Some(deployed.agent.sha256().to_string()),
        tools: deployed.manifest.tools.keys().cloned().collect(),
        models: deployed.manifest.models.keys().cloned().collect(),
        actor: actor.to_string(),
        source: origin.map(|o| o.reference.clone()),
        signer: origin.and_then(|o| o.signer.clone()),
        reason,
    }
}

/// The audit record of a deployment that was refused.
fn refused_record(name: &str, actor: &str, source: Option<String>, reason: String) -> AuditEvent {
    AuditEvent::Deployment {
        change: "refused".into(),
        agent: name.to_string(),
        sha256: None,
        tools: vec![],
        models: vec![],
        actor: actor.to_string(),
        source,
        signer: None,
        reason: Some(reason),
    }
}

/// Enforces the trust policy whenever `trust.toml` changes, checking every
/// second, until the daemon drains ([`Daemon::enforce_trust`]).
pub async fn watch_trust(daemon: Arc<Daemon>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !daemon.is_shutting_down() {
        tick.tick().await;
        let watched = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || watched.enforce_trust()).await;
    }
}

/// The file in a deployed agent's directory recording its registry origin.
const ORIGIN_FILE: &str = "origin.json";
/// Async invocation results kept for polling.
pub const MAX_KEPT_RESULTS: usize = 10_000;

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
    /// The engine's settings.
    pub engine: EngineOptions,
    /// Free space the state directory's disk must keep: below it, new events
    /// are refused with 503.
    pub min_free_disk_bytes: u64,
}

/// The default reserve of free disk for the state directory: 256 MiB.
pub const DEFAULT_MIN_FREE_DISK_BYTES: u64 = 256 << 20;

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
            engine,
            min_free_disk_bytes: DEFAULT_MIN_FREE_DISK_BYTES,
        }
    }
}

/// Where a deployed component came from in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Origin {
    /// `repository@sha256:…`.
    pub reference: String,
    /// The reference as asked for (`acme/triage@1.2.0`).
    pub requested: String,
    /// The trusted signer's public key (hex), if signed.
    pub signer: Option<String>,
}

/// A deployed agent.
pub struct Deployed {
    /// The loaded agent.
    pub agent: Agent,
    /// Its manifest, as deployed.
    pub manifest: Manifest,
    /// Where its component came from, when from the registry.
    pub origin: Option<Origin>,
    slots: Semaphore,
    queued: AtomicUsize,
}

impl Deployed {
    /// Events waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// What a deployment carries.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The manifest, as TOML. Its `component` is replaced by the bundle's,
    /// or resolved from the registry when it names `component.registry`.
    pub manifest: String,
    /// The component, base64; absent to deploy the manifest's
    /// `component.registry` reference from the daemon's registry.
    #[serde(default)]
    pub component: Option<String>,
    /// Files the manifest names (cassettes), by bare file name, as text.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

impl Bundle {
    /// A bundle from a manifest file: its component, and every cassette it
    /// names, read from beside it (paths become bare file names).
    pub fn from_manifest_file(path: &Path) -> Result<Self, String> {
        use base64::Engine as _;
        let mut manifest = Manifest::load(path).map_err(|e| e.to_string())?;
        let dir = path.parent().unwrap_or(Path::new("."));
        // A registry reference is resolved by the daemon; a path is uploaded.
        let component = match manifest.component.path.clone() {
            Some(component_path) => Some(
                crate::fsutil::read_bounded(
                    &dir.join(&component_path),
                    crate::limits::MAX_COMPONENT_BYTES,
                )
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let mut files = BTreeMap::new();
        let mut take = |cassette: &mut Option<PathBuf>| -> Result<(), String> {
            if let Some(file) = cassette.as_mut() {
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or("a cassette path has no file name")?
                    .to_string();
                if !files.contains_key(&name) {
                    let text = std::fs::read_to_string(dir.join(&*file))
                        .map_err(|e| format!("{}: {e}", file.display()))?;
                    files.insert(name.clone(), text);
                }
                *file = PathBuf::from(name);
            }
            Ok(())
        };
        for binding in manifest.models.values_mut() {
            take(&mut binding.cassette)?;
        }
        for grant in manifest.tools.values_mut() {
            take(&mut grant.cassette)?;
        }
        if component.is_some() {
            manifest.component.path = Some(PathBuf::from("component.wasm"));
        }
        Ok(Self {
            manifest: toml::to_string(&manifest).map_err(|e| e.to_string())?,
            component: component.map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
            files,
        })
    }

    /// Deploys the registry component `reference` instead of the manifest's
    /// own component.
    pub fn with_registry_component(mut self, reference: &str) -> Result<Self, String> {
        let mut manifest = Manifest::from_toml(&self.manifest).map_err(|e| e.to_string())?;
        manifest.component.path = None;
        manifest.component.registry = Some(reference.to_string());
        self.manifest = toml::to_string(&manifest).map_err(|e| e.to_string())?;
        self.component = None;
        Ok(self)
    }
}

/// A deployment's summary.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    /// The name.
    pub name: String,
    /// The component's sha256.
    pub sha256: String,
    /// Model bindings.
    pub models: Vec<String>,
    /// Tools granted.
    pub tools: Vec<String>,
    /// Triggers, as `source` or `source:detail`.
    pub triggers: Vec<String>,
    /// Events waiting.
    pub queued: usize,
    /// The registry reference it was deployed from (pinned to the manifest
    /// digest), and the trusted signer, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// One deployed agent in detail.
#[derive(Debug, Clone, Serialize)]
pub struct AgentDetail {
    /// What the agent list says.
    #[serde(flatten)]
    pub info: AgentInfo,
    /// The manifest as deployed.
    pub manifest: Manifest,
    /// Its suspended bindings and grants.
    pub suspensions: Vec<crate::suspend::Suspension>,
}

/// Why an invocation did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No such agent.
    #[error("no agent named {0:?}")]
    UnknownAgent(String),
    /// The agent's queue is full.
    #[error("agent {agent:?} is busy: {queued} events are waiting")]
    Busy {
        /// The agent.
        agent: String,
        /// How many wait.
        queued: usize,
    },
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The state directory's disk is nearly full: new events are refused
    /// rather than fail halfway through writing their records.
    #[error(
        "the state directory's disk has {free_mib} MiB free, less than the {min_mib} MiB kept in reserve; new events wait until space is freed"
    )]
    DiskFull {
        /// Free space, in MiB.
        free_mib: u64,
        /// The reserve (`--min-free-disk-mib`), in MiB.
        min_mib: u64,
    },
}

/// Why suspensions were not resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The key that came back was not rotated since, and `force` was not
    /// given.
    #[error("{0}")]
    NotRotated(String),
    /// The suspension store failed.
    #[error("{0}")]
    Failed(String),
}

/// A finished invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The invocation's id.
    pub id: String,
    /// The agent.
    pub agent: String,
    /// The handler's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Why there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OutcomeError>,
    /// Wall time.
    pub elapsed_ms: f64,
}

/// An invocation's failure, for API answers.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeError {
    /// `invalid-event`, `agent-error`, `limit`, `crashed`,
    /// `result-too-large`, `busy` or `host-error`.
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

/// The label of an invocation failure.
pub fn error_kind(error: &InvokeError) -> &'static str {
    match error {
        InvokeError::InvalidEvent { .. } => "invalid-event",
        InvokeError::Agent { .. } => "agent-error",
        InvokeError::LimitExceeded { .. } => "limit",
        InvokeError::Crashed { .. } => "crashed",
        InvokeError::ResultTooLarge { .. } => "result-too-large",
        InvokeError::Busy { .. } => "busy",
        InvokeError::Host { .. } => "host-error",
    }
}

/// An async invocation's state.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Pending {
    /// Still running or queued.
    Running {
        /// Its id.
        id: String,
    },
    /// Finished.
    Done(Outcome),
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

/// A fresh event id: a random prefix chosen once per process and a counter,
/// unique without a system call per event.
fn event_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| random_id("evt_"));
    format!(
        "{prefix}{:08x}",
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Checks a bundle file name: a bare name, no path.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl Daemon {
    /// Opens the state directory (it must be initialised), takes its budget
    /// lock, and loads every deployed agent.
    pub fn open(options: DaemonOptions) -> Result<Arc<Self>, String> {
        let dir = options.state_dir.clone();
        let (db, services) = Services::open(&dir)?;
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
            .map_err(|e| e.to_string())?
            .with_services(services.clone())
            .with_decision_sink(Arc::new(AuditDecisions {
                audit: audit.clone(),
                metrics: metrics.clone(),
            }));
        let registry = Some(crate::registry::Registry::open(
            &dir.join("registry"),
            options.max_blob_bytes,
        )?);
        let daemon = Arc::new(Self {
            global: Semaphore::new(options.max_concurrent),
            tokens: auth::Tokens::new(db.clone()),
            options,
            cage,
            services,
            audit,
            invocations: invocations::InvocationLog::new(db.clone()),
            metrics,
            db,
            agents: RwLock::new(BTreeMap::new()),
            results: Mutex::new((HashMap::new(), VecDeque::new())),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            shutting_down: AtomicBool::new(false),
            registry,
            trust_seen: Mutex::new(None),
            lifecycle: Mutex::new(()),
        });
        daemon.load_deployed()?;
        Ok(daemon)
    }

    fn agents_dir(&self) -> PathBuf {
        self.options.state_dir.join("agents")
    }

    fn load_deployed(&self) -> Result<(), String> {
        let dir = self.agents_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let policy = self.trust_policy();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !path.join("agent.toml").is_file() {
                continue;
            }
            let loaded = self
                .load_from(&path)
                .and_then(|deployed| self.still_trusted(&deployed, &policy).map(|()| deployed));
            match loaded {
                Ok(deployed) => {
                    tracing::info!(agent = %name, "loaded deployed agent");
                    self.write_agents().insert(name, Arc::new(deployed));
                }
                Err(e) => {
                    tracing::error!(agent = %name, error = %e, "cannot load deployed agent");
                    self.audit.append(refused_record(&name, "startup", None, e));
                }
            }
        }
        Ok(())
    }

    /// Applies the trust policy to agents deployed from the registry, if
    /// `trust.toml` changed since the last call: an agent whose publisher
    /// key is no longer trusted is unloaded (its events get 404 from now
    /// on; its files stay, so it comes back if the key is trusted again),
    /// and one that is trusted again is loaded. Answers the agents
    /// unloaded and loaded. [`watch_trust`] calls this every second.
    pub fn enforce_trust(&self) -> (Vec<String>, Vec<String>) {
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::fs::read(self.trust_policy_path()).unwrap_or_default();
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        {
            let mut seen = self.trust_seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == Some(fingerprint) {
                return (Vec::new(), Vec::new());
            }
            *seen = Some(fingerprint);
        }
        let policy = self.trust_policy();
        let (mut unloaded, mut loaded) = (Vec::new(), Vec::new());
        let Ok(entries) = std::fs::read_dir(self.agents_dir()) else {
            return (unloaded, loaded);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let dir = entry.path();
            if name.starts_with('.') || !dir.join(ORIGIN_FILE).is_file() {
                continue;
            }
            let current = self.agent(&name);
            let (change, result) = match &current {
                Some(deployed) => (
                    "unloaded",
                    self.still_trusted(deployed, &policy).map(|()| None),
                ),
                None => (
                    "loaded",
                    self.load_from(&dir).and_then(|deployed| {
                        self.still_trusted(&deployed, &policy)
                            .map(|()| Some(deployed))
                    }),
                ),
            };
            // Deploy and remove wait for this (the lifecycle lock), so the
            // map holds what was just checked.
            let (reason, deployed) = match (result, current) {
                // Still trusted and loaded, or still refused and not loaded.
                (Ok(None), _) | (Err(_), None) => continue,
                (Ok(Some(deployed)), _) => {
                    let deployed = Arc::new(deployed);
                    self.write_agents().insert(name.clone(), deployed.clone());
                    loaded.push(name.clone());
                    (None, deployed)
                }
                (Err(reason), Some(deployed)) => {
                    self.write_agents().remove(&name);
                    // Events still queued for it are refused.
                    deployed.slots.close();
                    unloaded.push(name.clone());
                    (Some(reason), deployed)
                }
            };
            tracing::warn!(agent = %name, change, reason = reason.as_deref().unwrap_or("trusted"), "trust policy changed");
            self.audit.append(deployment_record(
                change,
                &name,
                &deployed,
                "trust-policy",
                reason,
            ));
        }
        (unloaded, loaded)
    }

    /// An agent deployed from the registry is loaded again at start only
    /// if the trust policy still allows its component: a publisher key the
    /// operator has since removed stops the agents it signed at the next
    /// start (and every new deployment at once).
    fn still_trusted(&self, deployed: &Deployed, policy: &PolicyRead) -> Result<(), String> {
        let Some(origin) = &deployed.origin else {
            return Ok(());
        };
        let policy = policy.as_ref().map_err(Clone::clone)?;
        let registry = self.registry().ok_or("this daemon has no registry")?;
        let resolved = registry.resolve(&origin.reference, policy)?;
        let sha256 =
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &resolved.component).as_ref());
        if sha256 != deployed.agent.sha256() {
            return Err(format!(
                "its component is not the one {} holds",
                origin.reference
            ));
        }
        Ok(())
    }

    fn load_from(&self, dir: &Path) -> Result<Deployed, String> {
        let manifest = Manifest::load(&dir.join("agent.toml")).map_err(|e| e.to_string())?;
        let agent = self
            .cage
            .load_manifest(&manifest, dir)
            .map_err(|e| e.to_string())?;
        let origin = std::fs::read(dir.join(ORIGIN_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        Ok(Deployed {
            origin,
            slots: Semaphore::new(manifest.concurrency.max_concurrent as usize),
            queued: AtomicUsize::new(0),
            agent,
            manifest,
        })
    }

    fn read_agents(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Deployed>>> {
        self.agents.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_agents(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Deployed>>> {
        self.agents.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A deployed agent.
    pub fn agent(&self, name: &str) -> Option<Arc<Deployed>> {
        self.read_agents().get(name).cloned()
    }

    /// Every deployed agent, in name order.
    pub fn list(&self) -> Vec<AgentInfo> {
        self.read_agents()
            .iter()
            .map(|(name, deployed)| Self::info(name, deployed))
            .collect()
    }

    /// One agent in detail: what [`Daemon::list`] says, its manifest as
    /// deployed (bindings, fallbacks, tools and scopes, triggers, limits,
    /// budget; vault ids, never a secret) and its suspensions.
    pub fn show(&self, name: &str) -> Option<AgentDetail> {
        let agents = self.read_agents();
        let deployed = agents.get(name)?;
        Some(AgentDetail {
            info: Self::info(name, deployed),
            manifest: deployed.manifest.clone(),
            suspensions: self
                .services
                .suspensions
                .list()
                .into_iter()
                .filter(|s| s.agent == name)
                .collect(),
        })
    }

    fn info(name: &str, deployed: &Deployed) -> AgentInfo {
        AgentInfo {
            name: name.to_string(),
            sha256: deployed.agent.sha256().to_string(),
            models: deployed.manifest.models.keys().cloned().collect(),
            tools: deployed.manifest.tools.keys().cloned().collect(),
            triggers: deployed
                .manifest
                .triggers
                .iter()
                .map(|t| match (&t.name, &t.cron) {
                    (Some(name), _) => format!("{}:{name}", t.source),
                    (_, Some(cron)) => format!("{}:{cron}", t.source),
                    _ => t.source.clone(),
                })
                .collect(),
            queued: deployed.queued(),
            origin: deployed.origin.clone(),
        }
    }

    /// Deploys (or replaces) an agent from a bundle. The files are written
    /// to a fresh directory and loaded from there; only if that succeeds does
    /// the new version replace the old, for the next event.
    ///
    /// A bundle without a component deploys the manifest's
    /// `component.registry` reference from the daemon's registry, if the
    /// trust policy (`trust.toml` in the state directory, read at every
    /// deployment) allows it. A refused deployment is an audit record too.
    pub fn deploy(&self, name: &str, bundle: Bundle, actor: &str) -> Result<AgentInfo, String> {
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        let mut source = None;
        let result = self.deploy_inner(name, bundle, actor, &mut source);
        if let Err(reason) = &result {
            tracing::warn!(agent = %name, %actor, %reason, "deployment refused");
            self.audit
                .append(refused_record(name, actor, source, reason.clone()));
        }
        result
    }

    /// The trust policy's file.
    pub fn trust_policy_path(&self) -> PathBuf {
        self.options
            .state_dir
            .join(crate::registry::signing::TRUST_FILE)
    }

    /// The trust policy as it is on disk now, read once per pass over the
    /// agents (an error refuses every registry agent, not the others).
    fn trust_policy(&self) -> PolicyRead {
        crate::registry::signing::TrustPolicy::load(&self.trust_policy_path())
    }

    fn deploy_inner(
        &self,
        name: &str,
        bundle: Bundle,
        actor: &str,
        source: &mut Option<String>,
    ) -> Result<AgentInfo, String> {
        use base64::Engine as _;
        let mut manifest = Manifest::from_toml(&bundle.manifest).map_err(|e| e.to_string())?;
        if manifest.name != name {
            return Err(format!(
                "the manifest names agent {:?}, not {name:?}",
                manifest.name
            ));
        }
        self.check_trigger_secrets(&manifest)?;
        let mut origin = None;
        let component = match (&bundle.component, &manifest.component.registry) {
            (Some(_), Some(reference)) => {
                return Err(format!(
                    "the bundle carries a component and the manifest names component.registry = {reference:?}: send one"
                ));
            }
            (Some(encoded), None) => base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| format!("component: not base64: {e}"))?,
            (None, Some(reference)) => {
                *source = Some(reference.clone());
                let registry = self.registry().ok_or("this daemon has no registry")?;
                let policy = self.trust_policy()?;
                let resolved = registry.resolve(reference, &policy)?;
                *source = Some(resolved.pinned());
                origin = Some(Origin {
                    reference: resolved.pinned(),
                    requested: reference.clone(),
                    signer: resolved.signer.clone(),
                });
                // Pinned, so the copy under agents/ is checked at every load.
                if manifest.component.sha256.is_none() {
                    manifest.component.sha256 = Some(hex::encode(
                        ring::digest::digest(&ring::digest::SHA256, &resolved.component).as_ref(),
                    ));
                }
                resolved.component
            }
            (None, None) => {
                return Err(
                    "the bundle has no component and the manifest no component.registry".into(),
                );
            }
        };
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "component: larger than {MAX_COMPONENT_BYTES} bytes"
            ));
        }
        if bundle.files.len() > MAX_BUNDLE_FILES {
            return Err(format!("more than {MAX_BUNDLE_FILES} files"));
        }
        for (file, text) in &bundle.files {
            if !valid_file_name(file)
                || file == "agent.toml"
                || file == "component.wasm"
                || file == ORIGIN_FILE
            {
                return Err(format!("file name {file:?} must be a bare file name"));
            }
            if text.len() > MAX_BUNDLE_FILE_BYTES {
                return Err(format!(
                    "file {file:?}: larger than {MAX_BUNDLE_FILE_BYTES} bytes"
                ));
            }
        }
        manifest.component.path = Some(PathBuf::from("component.wasm"));
        manifest.component.registry = None;
        let agents_dir = self.agents_dir();
        crate::fsutil::create_private_dir(&agents_dir).map_err(|e| e.to_string())?;
        let staging = agents_dir.join(format!(".{name}.{}", random_id("")));
        let written = (|| -> Result<(), String> {
            crate::fsutil::create_private_dir(&staging).map_err(|e| e.to_string())?;
            let toml = toml::to_string(&manifest).map_err(|e| e.to_string())?;
            let write = |file: &str, bytes: &[u8]| {
                crate::fsutil::write_atomically(&staging.join(file), bytes)
                    .map_err(|e| format!("{file}: {e}"))
            };
            write("agent.toml", toml.as_bytes())?;
            write("component.wasm", &component)?;
            if let Some(origin) = &origin {
                let json = serde_json::to_vec(origin).map_err(|e| e.to_string())?;
                write(ORIGIN_FILE, &json)?;
            }
            for (file, text) in &bundle.files {
                write(file, text.as_bytes())?;
            }
            Ok(())
        })();
        let loaded = written.and_then(|()| self.load_from(&staging));
        let deployed = match loaded {
            Ok(deployed) => deployed,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        // Swap directories: the old version's files go away once the new
        // one is in place.
        let target = agents_dir.join(name);
        let retired = agents_dir.join(format!(".{name}.old.{}", random_id("")));
        let had_old = target.exists();
        if had_old {
            std::fs::rename(&target, &retired).map_err(|e| e.to_string())?;
        }
        if let Err(e) = std::fs::rename(&staging, &target) {
            if had_old {
                let _ = std::fs::rename(&retired, &target);
            }
            return Err(e.to_string());
        }
        let _ = std::fs::remove_dir_all(&retired);
        // The loaded agent read its files from the staging path, which no
        // longer exists; everything it needs is already in memory.
        // (`deployed.origin` is the `origin` written with it.)
        self.audit
            .append(deployment_record("deploy", name, &deployed, actor, None));
        self.write_agents()
            .insert(name.to_string(), Arc::new(deployed));
        self.list()
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| "the agent vanished".to_string())
    }

    /// Refuses a new event when the state directory's disk has less free
    /// space than the reserve. One `statvfs` call: cheap next to an event.
    fn check_disk(&self, agent: &str) -> Result<(), Refusal> {
        let min = self.options.min_free_disk_bytes;
        if min == 0 {
            return Ok(());
        }
        // A state directory whose disk cannot even be asked about cannot be
        // counted on to take the event's records either: refuse (free 0).
        let free = rustix::fs::statvfs(&self.options.state_dir)
            .map_or(0, |stats| stats.f_bavail.saturating_mul(stats.f_frsize));
        if free >= min {
            return Ok(());
        }
        self.metrics.add(
            "clawcage_rejections_total",
            &[("agent", agent), ("reason", "disk-full")],
            1,
        );
        tracing::warn!(
            free_bytes = free,
            min_free_bytes = min,
            "refusing an event: the state directory's disk is nearly full"
        );
        Err(Refusal::DiskFull {
            free_mib: free >> 20,
            min_mib: min >> 20,
        })
    }

    /// Every binding and grant suspended after a blocked leak.
    pub fn suspensions(&self) -> Vec<Suspension> {
        self.services.suspensions.list()
    }

    /// Resumes `agent`'s suspended bindings and grants (all, or the one
    /// named), each an audit record. Returns what was resumed.
    ///
    /// A key that came back in an answer must have been rotated (or
    /// revoked) since, unless `force`: whoever made it come back learned
    /// something of it, and a guest guessing at it would otherwise get
    /// another answer with its knowledge intact.
    pub fn resume(
        &self,
        agent: &str,
        only: Option<(Capability, &str)>,
        force: bool,
        actor: &str,
    ) -> Result<Vec<Suspension>, ResumeError> {
        if !force {
            for suspension in self.services.suspensions.matching(agent, only) {
                let Some(key_id) = &suspension.key_id else {
                    continue;
                };
                let changed = match self.services.vault.info(key_id) {
                    Ok(info) => {
                        info.revoked_at.is_some()
                            || info.rotated_at.is_some_and(|at| at >= suspension.since)
                    }
                    // A key that is gone cannot be sent again.
                    Err(crate::vault::VaultError::UnknownKey(_)) => true,
                    Err(e) => return Err(ResumeError::Failed(e.to_string())),
                };
                if !changed {
                    return Err(ResumeError::NotRotated(format!(
                        "key {key_id:?} came back in an answer to {} {:?} and has not been rotated since; rotate it (`clawcage key rotate {key_id}`), or resume with --force",
                        suspension.capability.name(),
                        suspension.name
                    )));
                }
            }
        }
        let resumed = self
            .services
            .suspensions
            .resume(agent, only)
            .map_err(|e| ResumeError::Failed(e.to_string()))?;
        for suspension in &resumed {
            self.audit.append(AuditEvent::Resumed {
                agent: suspension.agent.clone(),
                capability: suspension.capability.name().to_string(),
                name: suspension.name.clone(),
                actor: actor.to_string(),
            });
        }
        Ok(resumed)
    }

    /// Removes an agent; events in flight finish.
    pub fn remove(&self, name: &str, actor: &str) -> Result<(), String> {
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        if self.agent(name).is_none() {
            return Err(format!("no agent named {name:?}"));
        }
        // Out of the agents directory's view first (scans skip dot names),
        // so nothing can load it back even if deleting the files fails.
        let dir = self.agents_dir().join(name);
        let retired = self
            .agents_dir()
            .join(format!(".{name}.removed.{}", random_id("")));
        if dir.exists() {
            std::fs::rename(&dir, &retired).map_err(|e| e.to_string())?;
        }
        let Some(removed) = self.write_agents().remove(name) else {
            return Err(format!("no agent named {name:?}"));
        };
        removed.slots.close();
        let _ = std::fs::remove_dir_all(&retired);
        self.audit.append(AuditEvent::Deployment {
            change: "remove".into(),
            agent: name.to_string(),
            sha256: Some(removed.agent.sha256().to_string()),
            tools: vec![],
            models: vec![],
            actor: actor.to_string(),
            source: removed.origin.as_ref().map(|o| o.reference.clone()),
            signer: None,
            reason: None,
        });
        Ok(())
    }

    /// Runs one event through an agent, waiting for a slot (within the
    /// agent's queue bound).
    pub async fn invoke(
        &self,
        name: &str,
        mut event: Event,
        source: &str,
    ) -> Result<Outcome, Refusal> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(Refusal::ShuttingDown);
        }
        self.check_disk(name)?;
        let deployed = self
            .agent(name)
            .ok_or_else(|| Refusal::UnknownAgent(name.to_string()))?;
        let max_queued = deployed.manifest.concurrency.max_queued as usize;
        let queued = deployed.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= max_queued {
            deployed.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.add(
                "clawcage_rejections_total",
                &[("agent", name), ("reason", "busy")],
                1,
            );
            return Err(Refusal::Busy {
                agent: name.to_string(),
                queued,
            });
        }
        let _in_flight = InFlight::enter(self);
        let slot = deployed.slots.acquire().await;
        let global = self.global.acquire().await;
        deployed.queued.fetch_sub(1, Ordering::AcqRel);
        let (Ok(_slot), Ok(_global)) = (slot, global) else {
            return Err(Refusal::ShuttingDown);
        };
        let id = event.id.clone().unwrap_or_else(event_id);
        event.id = Some(id.clone());
        let kind = event.kind.clone();
        let started_at_ms = chrono::Utc::now().timestamp_millis();
        let invocation = deployed.agent.invoke(event).await;
        let (result, error) = match invocation.outcome {
            Ok(result) => (Some(result), None),
            Err(error) => (
                None,
                Some(OutcomeError {
                    kind: error_kind(&error),
                    message: error.to_string(),
                }),
            ),
        };
        let outcome_label = error.as_ref().map_or("ok", |e| e.kind);
        self.metrics.add(
            "clawcage_invocations_total",
            &[("agent", name), ("outcome", outcome_label)],
            1,
        );
        self.metrics.add(
            "clawcage_invocation_microseconds_total",
            &[("agent", name)],
            invocation.elapsed.as_micros() as u64,
        );
        self.audit.append(AuditEvent::Invocation {
            agent: name.to_string(),
            event_id: id.clone(),
            source: source.to_string(),
            duration_ms: invocation.elapsed.as_millis() as u64,
            outcome: outcome_label.to_string(),
        });
        self.invocations.record(invocations::InvocationRow {
            event_id: id.clone(),
            agent: name.to_string(),
            source: source.to_string(),
            kind,
            started_at_ms,
            duration_ms: invocation.elapsed.as_millis() as u64,
            outcome: outcome_label.to_string(),
        });
        tracing::info!(agent = %name, event_id = %id, source, outcome = outcome_label, elapsed_ms = invocation.elapsed.as_millis() as u64, "invocation");
        Ok(Outcome {
            id,
            agent: name.to_string(),
            result,
            error,
            elapsed_ms: invocation.elapsed.as_secs_f64() * 1000.0,
        })
    }

    /// Starts an invocation in the background and returns its invocation id;
    /// poll it with [`Daemon::result`].
    pub fn invoke_async(
        self: &Arc<Self>,
        name: &str,
        mut event: Event,
        source: &str,
    ) -> Result<String, Refusal> {
        if self.agent(name).is_none() {
            return Err(Refusal::UnknownAgent(name.to_string()));
        }
        self.check_disk(name)?;
        if event.id.is_none() {
            event.id = Some(event_id());
        }
        // Results are kept under an id of the daemon's own, so a caller
        // reusing an event id cannot replace another invocation's result.
        let id = random_id("inv_");
        self.keep_result(id.clone(), Pending::Running { id: id.clone() });
        let daemon = self.clone();
        let name = name.to_string();
        let source = source.to_string();
        let task_id = id.clone();
        tokio::spawn(async move {
            let done = match daemon.invoke(&name, event, &source).await {
                Ok(outcome) => outcome,
                Err(refusal) => Outcome {
                    id: task_id.clone(),
                    agent: name,
                    result: None,
                    error: Some(OutcomeError {
                        kind: "busy",
                        message: refusal.to_string(),
                    }),
                    elapsed_ms: 0.0,
                },
            };
            daemon.keep_result(task_id, Pending::Done(done));
        });
        Ok(id)
    }

    fn keep_result(&self, id: String, state: Pending) {
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *results;
        if map.insert(id.clone(), state).is_none() {
            order.push_back(id);
        }
        while order.len() > MAX_KEPT_RESULTS {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }

    /// An async invocation's state.
    pub fn result(&self, id: &str) -> Option<Pending> {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(id)
            .cloned()
    }

    /// Records a webhook delivery; `false` when it was seen before.
    pub fn first_delivery(&self, source: &str, delivery_id: &str) -> bool {
        let conn = self.db.lock();
        // Forget deliveries older than a week.
        let _ = conn.execute(
            "DELETE FROM deliveries WHERE at < ?1",
            [crate::db::now_unix() - 7 * 86_400],
        );
        conn.execute(
            "INSERT INTO deliveries (source, delivery_id, at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            rusqlite::params![source, delivery_id, crate::db::now_unix()],
        )
        .map(|inserted| inserted == 1)
        .unwrap_or(false)
    }

    /// Every trigger's signing secret is a live webhook secret in the vault:
    /// otherwise the agent would deploy and every delivery fail as "bad
    /// signature".
    fn check_trigger_secrets(&self, manifest: &Manifest) -> Result<(), String> {
        for (index, trigger) in manifest.triggers.iter().enumerate() {
            let Some(id) = &trigger.secret else { continue };
            let at = format!("triggers[{index}].secret {id:?}");
            match self.services.vault.info(id) {
                Ok(info) if info.revoked_at.is_some() => {
                    return Err(format!("{at} was revoked; add a new signing secret"));
                }
                Ok(info) if info.provider != "webhook" => {
                    return Err(format!(
                        "{at} is a {} key, not a webhook signing secret",
                        info.provider
                    ));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "{at} is not in the vault: add it first with `clawcage key add {id} --provider webhook`"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A webhook signing secret from the vault.
    pub fn webhook_secret(&self, key_id: &str) -> Option<crate::secret::Secret> {
        self.services.vault.secret(key_id, "webhook").ok()
    }

    /// Agents subscribed to a trigger source, with their triggers.
    pub fn subscribers(&self, source: &str) -> Vec<(String, crate::manifest::Trigger)> {
        self.read_agents()
            .iter()
            .flat_map(|(name, deployed)| {
                deployed
                    .manifest
                    .triggers
                    .iter()
                    .filter(|t| t.source == source)
                    .map(|t| (name.clone(), t.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Checks that `bytes` is a component of the `clawcage:agent` world,
    /// compiling it (and caching the result, so its first event does not
    /// compile).
    pub fn check_component(&self, bytes: &[u8]) -> Result<String, String> {
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
        if let Err(error) = self.audit.flush() {
            tracing::error!(%error, "audit records not written at shutdown");
        }
        if let Err(error) = self.invocations.flush() {
            tracing::error!(%error, "invocation rows not written at shutdown");
        }
        self.in_flight()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
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

/// Counts an invocation in flight for the drain.
struct InFlight<'d> {
    daemon: &'d Daemon,
}

impl<'d> InFlight<'d> {
    fn enter(daemon: &'d Daemon) -> Self {
        daemon.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { daemon }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.daemon.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.daemon.idle.notify_waiters();
        }
    }
}

/// A JSON value's string, for event ids and kinds from webhooks.
pub fn json_str<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}
