//! Loading agents and running events: the [`Cage`] holds the engine and the
//! linker; an [`Agent`] is a loaded, pre-instantiated component with its
//! limits and grants; [`Agent::invoke`] runs one event in a fresh store.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Type};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::AgentPre;
use crate::engine::{CacheOutcome, CageEngine, EngineOptions};
use crate::error::{InvokeError, LoadError};
use crate::event::Event;
use crate::inference::ModelBindings;
use crate::limits::{
    LimitKind, Limits, MAX_COMPONENT_BYTES, MAX_HOSTCALL_BYTES, MAX_MEMORIES, MAX_RESOURCE_HANDLES,
    MAX_RESULT_BYTES, MAX_TABLES,
};
use crate::log::LogLine;
use crate::manifest::Manifest;
use crate::providers::binding::Services;
use crate::state::{AgentState, AgentStateBuilder};
use crate::tools::ToolGrants;

/// Interfaces an agent may import: this package's, and the WASI 0.2
/// interfaces the host links with nothing granted. Anything else is refused
/// at load time, naming the import.
const ALLOWED_IMPORT_PACKAGES: &[&str] = &[
    "clawcage:agent/",
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// The export every agent must have.
const HANDLER_EXPORT: &str = "clawcage:agent/handler@0.2.0";

/// Extra time granted past the deadline for the host to notice a guest that
/// is blocked in a host call (where epochs cannot interrupt it).
const HOST_CALL_GRACE: Duration = Duration::from_millis(50);

/// The sandbox: one engine and one linker shared by every agent.
#[derive(Clone)]
pub struct Cage {
    engine: CageEngine,
    linker: Arc<Linker<AgentState>>,
    services: Option<Arc<Services>>,
    decisions: Option<Arc<dyn crate::tools::connector::DecisionSink>>,
}

impl std::fmt::Debug for Cage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cage")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Cage {
    /// Creates the engine and links the `clawcage:agent` world plus WASI.
    pub fn new(options: EngineOptions) -> Result<Self, LoadError> {
        let engine = CageEngine::new(options)?;
        let mut linker = Linker::<AgentState>::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(LoadError::engine)?;
        crate::log::add_to_linker(&mut linker, |s| &mut s.log).map_err(LoadError::engine)?;
        crate::inference::add_to_linker(&mut linker, AgentState::inference_view)
            .map_err(LoadError::engine)?;
        crate::tools::add_to_linker(&mut linker, AgentState::tools_view)
            .map_err(LoadError::engine)?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            services: None,
            decisions: None,
        })
    }

    /// Gives the cage a key vault, a usage ledger and prices, so manifests
    /// can bind models.
    pub fn with_services(mut self, services: Arc<Services>) -> Self {
        self.services = Some(services);
        self
    }

    /// Sends every tool-call decision (allowed or denied) to `sink` as well
    /// as to the logs.
    pub fn with_decision_sink(
        mut self,
        sink: Arc<dyn crate::tools::connector::DecisionSink>,
    ) -> Self {
        self.decisions = Some(sink);
        self
    }

    /// Every vault id the manifest sends (model keys, fallback keys, tool
    /// credentials) is in the vault: a typo is told apart from a bad
    /// manifest, and named with the command that fixes it.
    fn check_vault_ids(&self, manifest: &Manifest) -> Result<(), LoadError> {
        let Some(services) = &self.services else {
            return Ok(());
        };
        let mut ids = Vec::new();
        for (name, spec) in &manifest.models {
            if crate::providers::is_offline(&spec.provider) {
                continue;
            }
            ids.extend(spec.key.iter().map(|id| (format!("models.{name}.key"), id)));
            for (index, fallback) in spec.fallbacks.iter().enumerate() {
                ids.extend(
                    fallback
                        .key
                        .iter()
                        .map(|id| (format!("models.{name}.fallbacks[{index}].key"), id)),
                );
            }
        }
        for (name, grant) in &manifest.tools {
            if grant.cassette.is_none() {
                ids.extend(
                    grant
                        .credential
                        .iter()
                        .map(|id| (format!("tools.{name}.credential"), id)),
                );
            }
        }
        for (field, id) in ids {
            if let Err(crate::vault::VaultError::UnknownKey(_)) = services.vault.info(id) {
                let known: Vec<String> = services
                    .vault
                    .list()
                    .map(|keys| keys.into_iter().map(|k| k.id).collect())
                    .unwrap_or_default();
                return Err(LoadError::UnknownKey(format!(
                    "{field} = {id:?} is not in the vault ({}); add it with `clawcage key add {id} --provider …`",
                    if known.is_empty() {
                        "it holds no keys".to_string()
                    } else {
                        format!("it holds {}", known.join(", "))
                    }
                )));
            }
        }
        Ok(())
    }

    /// The engine.
    pub fn engine(&self) -> &CageEngine {
        &self.engine
    }

    /// Loads the agent a manifest describes. `base_dir` resolves the
    /// component's relative path (normally the manifest's directory).
    pub fn load_manifest(&self, manifest: &Manifest, base_dir: &Path) -> Result<Agent, LoadError> {
        self.check_vault_ids(manifest)?;
        let models = crate::providers::bind(manifest, base_dir, self.services.as_ref())?;
        let tools = crate::tools::grants::build(
            &manifest.name,
            &manifest.tools,
            base_dir,
            self.services.as_ref(),
            self.decisions.clone(),
        )
        .map_err(LoadError::Manifest)?;
        if manifest.limits.fuel.is_some() && !self.engine.options().fuel {
            return Err(LoadError::Unsupported(
                "limits.fuel needs an engine with fuel metering enabled".into(),
            ));
        }
        let path = match (&manifest.component.path, &manifest.component.registry) {
            (Some(path), _) => base_dir.join(path),
            (None, Some(reference)) => {
                return Err(LoadError::Unsupported(format!(
                    "component.registry = {reference:?} is resolved by the daemon's registry: deploy this manifest with `clawcage agent deploy` or `clawcage serve --deploy`, or use `path`"
                )));
            }
            (None, None) => {
                return Err(LoadError::Manifest(
                    "component: set `path` or `registry`".into(),
                ));
            }
        };
        let bytes = crate::fsutil::read_bounded(&path, MAX_COMPONENT_BYTES)?;
        let mut agent =
            self.load_component(&manifest.name, &bytes, manifest.component.sha256.as_deref())?;
        agent
            .set_limits(manifest.limits.clone())
            .map_err(LoadError::Manifest)?;
        agent.set_models(models);
        agent.set_tools(Arc::new(tools));
        Ok(agent)
    }

    /// Loads a component from its bytes, verifying the optional sha256 pin,
    /// that it is a component, that it imports nothing outside the world and
    /// that it exports the handler. The agent gets the default limits and
    /// no grants.
    pub fn load_component(
        &self,
        name: &str,
        bytes: &[u8],
        pin: Option<&str>,
    ) -> Result<Agent, LoadError> {
        check_component_header(bytes)?;
        let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes));
        if let Some(expected) = pin
            && expected != sha256
        {
            return Err(LoadError::DigestMismatch {
                expected: expected.to_string(),
                actual: sha256,
            });
        }
        let (component, cache) = self.engine.compile(bytes, &sha256)?;
        self.check_world(&component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre =
            AgentPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        Ok(Agent {
            name: name.into(),
            sha256,
            cache,
            pre,
            limits: Limits::default(),
            models: Arc::default(),
            tools: Arc::default(),
            capture_logs: false,
            engine_meters_fuel: self.engine.options().fuel,
        })
    }

    fn check_world(&self, component: &Component) -> Result<(), LoadError> {
        let engine = self.engine.engine();
        // Refuse components that need more of the instance pool than an
        // agent's share, so one agent can never crowd out the others.
        if let Some(required) = component.resources_required() {
            if required.num_memories > MAX_MEMORIES {
                return Err(LoadError::WrongWorld(format!(
                    "it has {} linear memories, more than the {MAX_MEMORIES} an agent may have",
                    required.num_memories
                )));
            }
            if required.num_tables > MAX_TABLES {
                return Err(LoadError::WrongWorld(format!(
                    "it has {} tables, more than the {MAX_TABLES} an agent may have",
                    required.num_tables
                )));
            }
        }
        let ty = component.component_type();
        for (import, _) in ty.imports(engine) {
            if !ALLOWED_IMPORT_PACKAGES
                .iter()
                .any(|p| import.starts_with(p))
            {
                return Err(LoadError::UnsupportedImport {
                    import: import.to_string(),
                });
            }
        }
        let exports: BTreeSet<&str> = ty.exports(engine).map(|(name, _)| name).collect();
        let Some(handler) = ty.get_export(engine, HANDLER_EXPORT) else {
            let found = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.iter().copied().collect::<Vec<_>>().join(", ")
            };
            // An agent built against an older contract gets told what to do.
            let hint = if exports
                .iter()
                .any(|name| name.starts_with("clawcage:agent/handler@"))
            {
                " (it was built for another version of the `clawcage:agent` contract: rebuild it with the current SDK; the README's \"Migrating from 0.1\" says what changed)"
            } else {
                ""
            };
            return Err(LoadError::WrongWorld(format!(
                "it must export `{HANDLER_EXPORT}`, but exports {found}{hint}"
            )));
        };
        check_handler_type(engine, handler.ty)
    }
}

/// Checks that the handler export has exactly the WIT type
/// `handle: func(event: event) -> result<string, string>`, so a mismatch is a
/// load-time error rather than a failure at the first event.
fn check_handler_type(engine: &wasmtime::Engine, handler: ComponentItem) -> Result<(), LoadError> {
    const EXPECTED: &str = "`handle: func(event: event) -> result<string, string>`";
    let wrong = |what: String| {
        Err(LoadError::WrongWorld(format!(
            "`{HANDLER_EXPORT}` {what}; expected {EXPECTED}"
        )))
    };
    let ComponentItem::ComponentInstance(instance) = handler else {
        return wrong("is not an instance".into());
    };
    let Some(ComponentItem::ComponentFunc(handle)) =
        instance.get_export(engine, "handle").map(|e| e.ty)
    else {
        return wrong("has no function `handle`".into());
    };
    let params: Vec<Type> = handle.params().map(|(_, ty)| ty).collect();
    let params_ok = match &params[..] {
        [Type::Record(event)] => {
            let fields: Vec<_> = event.fields().map(|f| (f.name.to_string(), f.ty)).collect();
            fields.len() == 4
                && ["id", "source", "kind", "payload"]
                    .iter()
                    .zip(&fields)
                    .all(|(name, (field, ty))| field == name && matches!(ty, Type::String))
        }
        _ => false,
    };
    let results: Vec<Type> = handle.results().collect();
    let results_ok = match &results[..] {
        [Type::Result(result)] => {
            matches!(result.ok(), Some(Type::String)) && matches!(result.err(), Some(Type::String))
        }
        _ => false,
    };
    if !params_ok || !results_ok {
        return wrong(format!(
            "has `handle` with {} parameters and {} results of other types",
            params.len(),
            results.len()
        ));
    }
    Ok(())
}

/// Refuses anything that is not a WebAssembly component, with a reason.
fn check_component_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    const MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotAComponent(
            "the file does not start with the wasm magic number".into(),
        ));
    }
    match <[u8; 4]>::try_from(&bytes[4..8]) {
        Ok(COMPONENT_VERSION) => Ok(()),
        Ok(MODULE_VERSION) => Err(LoadError::NotAComponent(
            "it is a core wasm module; build the agent for wasm32-wasip2 so it is a component"
                .into(),
        )),
        _ => Err(LoadError::NotAComponent(
            "unknown wasm binary version".into(),
        )),
    }
}

/// A loaded agent, ready to run events. Cheap to share: invocations only
/// read it.
pub struct Agent {
    name: Arc<str>,
    sha256: String,
    cache: CacheOutcome,
    pre: AgentPre<AgentState>,
    limits: Limits,
    models: Arc<ModelBindings>,
    tools: Arc<ToolGrants>,
    capture_logs: bool,
    engine_meters_fuel: bool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("limits", &self.limits)
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What one event produced.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The handler's result, or why there is none.
    pub outcome: Result<String, InvokeError>,
    /// Log lines kept (when capture is on), including stdout and stderr.
    pub logs: Vec<LogLine>,
    /// Log lines dropped past the per-event budget.
    pub logs_dropped: u64,
    /// Wall time, from store creation to the handler's return.
    pub elapsed: Duration,
}

impl Agent {
    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component's sha256, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether loading was served by the compile cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// The limits each event runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the limits, after checking them against their bounds and
    /// against the engine (a fuel limit needs an engine that meters fuel).
    pub fn set_limits(&mut self, limits: Limits) -> Result<(), String> {
        limits.validate()?;
        if limits.fuel.is_some() && !self.engine_meters_fuel {
            return Err("limits.fuel needs an engine with fuel metering enabled".into());
        }
        self.limits = limits;
        Ok(())
    }

    /// The model bindings granted to this agent.
    pub fn models(&self) -> &Arc<ModelBindings> {
        &self.models
    }

    /// Replaces the model bindings granted to this agent.
    pub fn set_models(&mut self, models: Arc<ModelBindings>) {
        self.models = models;
    }

    /// The tools granted to this agent.
    pub fn tools(&self) -> &Arc<ToolGrants> {
        &self.tools
    }

    /// Replaces the tools granted to this agent.
    pub fn set_tools(&mut self, tools: Arc<ToolGrants>) {
        self.tools = tools;
    }

    /// Keeps log lines in each [`Invocation`] (for the CLI and tests).
    pub fn set_capture_logs(&mut self, capture: bool) {
        self.capture_logs = capture;
    }

    /// Runs one event in a fresh store and reports the outcome. Only a bug
    /// in the host makes this panic; every guest misbehaviour is an
    /// [`InvokeError`].
    pub async fn invoke(&self, event: Event) -> Invocation {
        let started = Instant::now();
        let event = match event.into_wit() {
            Ok(event) => event,
            Err(reason) => {
                return Invocation {
                    outcome: Err(InvokeError::InvalidEvent { reason }),
                    logs: Vec::new(),
                    logs_dropped: 0,
                    elapsed: started.elapsed(),
                };
            }
        };
        let deadline = started
            .checked_add(self.limits.deadline())
            .unwrap_or(started + crate::limits::MAX_DEADLINE);
        let state = AgentStateBuilder::new(self.name.clone(), event.id.as_str().into())
            .limits(self.limits.clone())
            .deadline(deadline)
            .models(self.models.clone())
            .tools(self.tools.clone())
            .capture_logs(self.capture_logs)
            .build();
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_hostcall_fuel(MAX_HOSTCALL_BYTES);
        store.set_max_component_handles(MAX_RESOURCE_HANDLES);
        if let Some(fuel) = self.limits.fuel {
            // Cannot fail: `set_limits` refuses fuel limits unless the engine
            // meters fuel.
            let _ = store.set_fuel(fuel);
        } else if self.engine_meters_fuel {
            let _ = store.set_fuel(u64::MAX);
        }
        let deadline = started
            .checked_add(self.limits.deadline())
            .unwrap_or(started + crate::limits::MAX_DEADLINE);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            // Check the wall clock at every tick; until the deadline, yield to
            // the executor so one busy guest cannot starve other agents.
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let run = async {
            let agent = self
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(Failure::Instantiate)?;
            agent
                .clawcage_agent_handler()
                .call_handle(&mut store, &event)
                .await
                .map_err(Failure::Guest)
        };
        let result = tokio::time::timeout(self.limits.deadline() + HOST_CALL_GRACE, run).await;
        let elapsed = started.elapsed();

        let state = store.data_mut();
        let panic_message = panic_message(&state.stderr);
        state.flush_output();
        let outcome = match result {
            Err(_elapsed) => Err(InvokeError::LimitExceeded {
                limit: LimitKind::Deadline,
                detail: format!("{} ms", self.limits.deadline_ms),
            }),
            Ok(Ok(Ok(output))) => bounded(output).map_err(|size| InvokeError::ResultTooLarge {
                size,
                max: MAX_RESULT_BYTES,
            }),
            Ok(Ok(Err(message))) => match bounded(message) {
                Ok(message) => Err(InvokeError::Agent { message }),
                Err(size) => Err(InvokeError::ResultTooLarge {
                    size,
                    max: MAX_RESULT_BYTES,
                }),
            },
            Ok(Err(Failure::Instantiate(error))) => Err(classify_instantiation(
                &error,
                state.limiter.hit,
                &self.limits,
            )),
            Ok(Err(Failure::Guest(error))) => Err(classify_trap(
                &error,
                state.limiter.hit,
                &self.limits,
                panic_message,
            )),
        };
        if let Err(error) = &outcome {
            let error = error.to_string();
            let error = crate::text::truncate_at_char_boundary(&error, 512);
            tracing::info!(agent = %self.name, event_id = %event.id, error, "invocation failed");
        }
        Invocation {
            outcome,
            logs: state.log.take_lines(),
            logs_dropped: state.log.dropped(),
            elapsed,
        }
    }
}

fn bounded(text: String) -> Result<String, usize> {
    if text.len() > MAX_RESULT_BYTES {
        Err(text.len())
    } else {
        Ok(text)
    }
}

/// Finds a Rust panic message in captured stderr, without consuming it.
fn panic_message(stderr: &crate::output::CapturedOutput) -> Option<String> {
    let bytes = stderr.peek();
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    let found = lines
        .by_ref()
        .find(|l| l.contains("panicked at"))
        .map(|line| {
            let location = line
                .split_once("panicked at ")
                .map_or(line, |(_, rest)| rest)
                .trim_end_matches(':');
            match lines.next() {
                Some(message) => format!("panicked at {location}: {message}"),
                None => format!("panicked at {location}"),
            }
        });
    found.map(|m| crate::text::truncate_at_char_boundary(&m, 1024).to_string())
}

/// How a run failed: before the guest ran (the host's side) or while it ran.
enum Failure {
    Instantiate(wasmtime::Error),
    Guest(wasmtime::Error),
}

/// Instantiation runs the guest's start functions, so a limit can stop it;
/// otherwise a failure here is the host's (a full pool, a bug).
fn classify_instantiation(
    error: &wasmtime::Error,
    hit: Option<LimitKind>,
    limits: &Limits,
) -> InvokeError {
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return InvokeError::Busy {
            reason: format!("{error:#}"),
        };
    }
    match classify_limit(error, hit, limits) {
        Some(limit) => limit,
        None => InvokeError::Host {
            reason: format!("cannot instantiate the agent: {error:#}"),
        },
    }
}

/// Everything that fails while the guest runs is the guest's doing: a
/// limit it hit, or a crash (trap, panic, `exit`, a misused host API).
fn classify_trap(
    error: &wasmtime::Error,
    hit: Option<LimitKind>,
    limits: &Limits,
    panic: Option<String>,
) -> InvokeError {
    if let Some(limit) = classify_limit(error, hit, limits) {
        return limit;
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeError::Crashed {
            reason: format!("the agent called exit({})", exit.0),
        };
    }
    let message = format!("{error:#}");
    let message = crate::text::truncate_at_char_boundary(&message, 1024);
    InvokeError::Crashed {
        reason: match (panic, error.downcast_ref::<Trap>()) {
            (Some(panic), Some(trap)) => format!("{panic} ({trap})"),
            (_, Some(trap)) => trap.to_string(),
            (_, None) => message.to_string(),
        },
    }
}

/// The wasmtime message for exhausted hostcall fuel; its type is private.
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

fn classify_limit(
    error: &wasmtime::Error,
    hit: Option<LimitKind>,
    limits: &Limits,
) -> Option<InvokeError> {
    let limit =
        |limit: LimitKind, detail: String| Some(InvokeError::LimitExceeded { limit, detail });
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            return limit(LimitKind::Deadline, format!("{} ms", limits.deadline_ms));
        }
        Some(Trap::OutOfFuel) => {
            return limit(
                LimitKind::Fuel,
                format!("{} units", limits.fuel.unwrap_or(0)),
            );
        }
        Some(Trap::StackOverflow) => return limit(LimitKind::Stack, "call stack exhausted".into()),
        Some(_) => {
            // A guest whose memory growth was refused usually aborts right
            // after; report the limit rather than the abort it caused.
            match hit {
                Some(LimitKind::Memory) => {
                    return limit(LimitKind::Memory, format!("{} bytes", limits.memory_bytes));
                }
                Some(LimitKind::Table) => {
                    return limit(
                        LimitKind::Table,
                        format!("{} elements", limits.table_elements),
                    );
                }
                _ => {}
            }
        }
        None => {}
    }
    if error
        .chain()
        .any(|cause| cause.to_string().contains(HOSTCALL_FUEL_EXHAUSTED))
    {
        return limit(
            LimitKind::Transfer,
            format!("{MAX_HOSTCALL_BYTES} bytes per call"),
        );
    }
    if error
        .downcast_ref::<wasmtime::component::ResourceTableError>()
        .is_some_and(|e| matches!(e, wasmtime::component::ResourceTableError::Full))
    {
        return limit(
            LimitKind::Handles,
            format!("{MAX_RESOURCE_HANDLES} at once"),
        );
    }
    None
}
