//! What every model binding of a host shares: the provider kinds, the
//! [`Services`] (vault, ledger, prices, HTTP client, suspensions), the leak
//! report and suspension checks of a binding, and the leak checks of what
//! a call returns. The call path itself is in [`super::model`] and
//! [`super::stream`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http;
use crate::bindings::inference::{Completion, ContentPart, Error as InferenceError};
use crate::leak::{LeakDetected, LeakGuard, SecretKind};
use crate::ledger::Ledger;
use crate::pricing::PriceTable;
use crate::secret::Secret;
use crate::suspend::{Capability, Suspensions};
use crate::vault::Vault;

/// A provider kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's Chat Completions.
    OpenAi,
    /// Any server that speaks Chat Completions.
    OpenAiCompatible,
}

impl ProviderKind {
    /// Parses a manifest's `provider`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "anthropic" => Some(Self::Anthropic),
            "openai" => Some(Self::OpenAi),
            "openai-compatible" => Some(Self::OpenAiCompatible),
            _ => None,
        }
    }

    /// Its name in manifests, the vault and usage records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
            Self::OpenAiCompatible => "openai-compatible",
        }
    }

    /// The public API's base URL.
    pub(crate) fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::Anthropic => Some("https://api.anthropic.com"),
            Self::OpenAi => Some("https://api.openai.com/v1"),
            Self::OpenAiCompatible => None,
        }
    }
}

/// What every binding of a host shares: the vault, the ledger, prices and
/// the HTTP client.
pub struct Services {
    /// The key vault.
    pub vault: Arc<Vault>,
    /// The usage ledger.
    pub ledger: Ledger,
    /// Model prices.
    pub prices: PriceTable,
    /// The HTTP client (with the default connect timeout).
    pub http: reqwest::Client,
    /// Clients with other connect timeouts, by timeout (reqwest sets it per
    /// client; they are few, as bindings share values).
    clients: Mutex<HashMap<Duration, reqwest::Client>>,
    /// Bindings and grants suspended after a blocked leak.
    pub suspensions: Suspensions,
    leaks_blocked: std::sync::atomic::AtomicU64,
    leak_hook: Mutex<Option<LeakHook>>,
}

/// Called for every blocked leak (the daemon audits it).
pub(crate) type LeakHook = Arc<dyn Fn(&LeakReport) + Send + Sync>;

/// A blocked leak: metadata only, never the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakReport {
    /// The agent.
    pub agent: String,
    /// A model binding or a tool grant.
    pub capability: Capability,
    /// The binding's or tool's name.
    pub name: String,
    /// The vault key id of the credential that came back.
    pub key_id: Option<String>,
    /// The event during which it happened.
    pub event_id: Option<String>,
    /// Which view of the text held it (see [`LeakDetected`]).
    pub view: &'static str,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    /// Shared services for bindings.
    pub fn new(vault: Arc<Vault>, ledger: Ledger, prices: PriceTable) -> Result<Self, String> {
        Ok(Self {
            vault,
            ledger,
            prices,
            http: http::client()?,
            clients: Mutex::new(HashMap::new()),
            suspensions: Suspensions::in_memory(),
            leaks_blocked: std::sync::atomic::AtomicU64::new(0),
            leak_hook: Mutex::new(None),
        })
    }

    /// The HTTP client with connect timeout `connect`.
    pub(crate) fn client_for(&self, connect: Duration) -> Result<reqwest::Client, String> {
        if connect == http::CONNECT_TIMEOUT {
            return Ok(self.http.clone());
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&connect) {
            return Ok(client.clone());
        }
        let client = crate::outbound::client_builder(connect)?
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        clients.insert(connect, client.clone());
        Ok(client)
    }

    /// Keeps suspensions in `suspensions` (the state directory's table)
    /// instead of in memory only.
    pub fn with_suspensions(mut self, suspensions: Suspensions) -> Self {
        self.suspensions = suspensions;
        self
    }

    /// Installs the function told of every blocked leak.
    pub(crate) fn set_leak_hook(&self, hook: LeakHook) {
        *self.leak_hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// How many leaks were blocked since this process started.
    pub fn leaks_blocked(&self) -> u64 {
        self.leaks_blocked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a blocked leak: suspends the binding or grant for the agent,
    /// counts it, logs it and tells the hook. Returns the guest's message.
    pub fn leak_blocked(&self, report: LeakReport) -> String {
        self.leaks_blocked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let suspension = crate::suspend::now(
            &report.agent,
            report.capability,
            &report.name,
            report.key_id.as_deref(),
            report.event_id.as_deref(),
            report.view,
        );
        if let Err(error) = self.suspensions.suspend(suspension) {
            tracing::error!(%error, "storing a suspension failed; it holds until this process exits");
        }
        tracing::warn!(
            agent = %report.agent,
            capability = report.capability.name(),
            name = %report.name,
            key_id = report.key_id.as_deref().unwrap_or(""),
            event_id = report.event_id.as_deref().unwrap_or(""),
            view = report.view,
            "blocked an answer that carried its own credential; suspended until an operator resumes it"
        );
        let hook = self
            .leak_hook
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(&report);
        }
        suspended_message(report.capability, &report.name)
    }

    /// The guest's message for a call to a suspended binding or grant (one
    /// suspended itself, or one that sends a suspended key), if it is.
    pub fn suspended(
        &self,
        agent: &str,
        capability: Capability,
        name: &str,
        key_id: Option<&str>,
    ) -> Option<String> {
        self.suspensions
            .is_suspended(agent, capability, name, key_id)
            .then(|| suspended_message(capability, name))
    }

    /// The services of an initialised state directory: its vault, its
    /// ledger as the directory's budget authority (see
    /// [`Ledger::exclusive`]), and its prices (`prices.toml`, or the built-in
    /// table). Also returns the database, for the caller's other state.
    pub fn open(state_dir: &std::path::Path) -> Result<(Arc<crate::db::Database>, Self), String> {
        let db = Arc::new(crate::db::Database::open(state_dir).map_err(|e| e.to_string())?);
        let master = crate::vault::MasterKey::load(state_dir).map_err(|e| e.to_string())?;
        let vault = Vault::open(db.clone(), master).map_err(|e| e.to_string())?;
        let prices_path = state_dir.join("prices.toml");
        let prices = match std::fs::read_to_string(&prices_path) {
            Ok(text) => crate::pricing::PriceFile::from_toml(&text)?.table(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PriceTable::builtin(),
            Err(e) => return Err(format!("{}: {e}", prices_path.display())),
        };
        let ledger = Ledger::exclusive(db.clone(), state_dir).map_err(|e| e.to_string())?;
        let suspensions = Suspensions::open(db.clone()).map_err(|e| e.to_string())?;
        Ok((
            db,
            Self::new(Arc::new(vault), ledger, prices)?.with_suspensions(suspensions),
        ))
    }

    /// A guard for the credential a call sends, `sent`, and its value
    /// before its last rotation (see [`Vault::secret_and_previous`]).
    pub fn guard_for(provider: &str, sent: &Secret, previous: Option<&Secret>) -> LeakGuard {
        let kind = SecretKind::of_provider(provider);
        let mut carried = vec![(kind, sent)];
        if let Some(previous) = previous {
            carried.push((kind, previous));
        }
        LeakGuard::new(&carried)
    }
}

/// What a guest is told when its binding or grant is suspended.
fn suspended_message(capability: Capability, name: &str) -> String {
    let what = match capability {
        Capability::Model => "binding",
        Capability::Tool => "tool",
    };
    format!(
        "an answer carried the credential of {what} {name:?} and was withheld; \
         the {what} is suspended for this agent until an operator resumes it"
    )
}

/// Checks every string of a completion that the guest will see: all of
/// them in order through one scanner, so a key split across parts is found
/// in their concatenation; each alone; tool inputs also as JSON.
pub(super) fn scan_completion(
    guard: &LeakGuard,
    completion: &Completion,
) -> Result<(), LeakDetected> {
    let mut scanner = guard.scanner();
    for part in &completion.content {
        match part {
            ContentPart::Text(text) => scanner.feed(text.as_bytes())?,
            ContentPart::ToolUse(tool_use) => {
                scanner.feed(tool_use.id.as_bytes())?;
                scanner.feed(tool_use.name.as_bytes())?;
                scanner.feed(tool_use.input.as_bytes())?;
                guard.check_json(&tool_use.input)?;
            }
            ContentPart::ToolResult(result) => {
                scanner.feed(result.tool_use_id.as_bytes())?;
                scanner.feed(result.content.as_bytes())?;
            }
        }
    }
    scanner.feed(completion.model.as_bytes())?;
    // Each string alone too: a run may sit in one part.
    let alone = |text: &str| guard.check(text);
    for part in &completion.content {
        match part {
            ContentPart::Text(text) => alone(text)?,
            ContentPart::ToolUse(tool_use) => {
                alone(&tool_use.id)?;
                alone(&tool_use.name)?;
            }
            ContentPart::ToolResult(result) => alone(&result.content)?,
        }
    }
    alone(&completion.model)
}

/// A binding as suspensions and leak reports know it: the model, and the
/// part of it a stream's task keeps.
pub(super) trait Binding {
    /// The services, the agent and the binding's name.
    fn identity(&self) -> (&Services, &str, &str);

    /// The vault key ids of every model of the binding's chain.
    fn key_ids(&self) -> Vec<&str>;

    /// Fails with `leak-blocked` if the binding, or a key of its chain, is
    /// suspended. Checked when a call starts and again before any answer or
    /// stream event is delivered, so calls in flight when another hit
    /// suspended the binding answer like any call after it: one answer per
    /// suspension, however many calls race.
    fn check_suspended(&self) -> Result<(), InferenceError> {
        let (services, agent, binding) = self.identity();
        let keys = self.key_ids();
        // The binding by name (with its first key), then the other keys.
        let mut suspended =
            services.suspended(agent, Capability::Model, binding, keys.first().copied());
        for key in keys.iter().skip(1) {
            if suspended.is_some() {
                break;
            }
            suspended = services.suspended(agent, Capability::Model, binding, Some(*key));
        }
        match suspended {
            Some(message) => Err(InferenceError::LeakBlocked(message)),
            None => Ok(()),
        }
    }

    /// Records a blocked leak of the key `key_id` (the one the call that
    /// leaked it carried), suspending the binding for the agent, and
    /// returns the guest's error.
    fn blocked(&self, leak: LeakDetected, event_id: &str, key_id: Option<&str>) -> InferenceError {
        let (services, agent, binding) = self.identity();
        InferenceError::LeakBlocked(services.leak_blocked(LeakReport {
            agent: agent.to_string(),
            capability: Capability::Model,
            name: binding.to_string(),
            key_id: key_id.map(str::to_string),
            event_id: Some(event_id.to_string()),
            view: leak.view,
        }))
    }
}

/// The text of an error that the guest reads.
pub(super) fn error_text(error: &InferenceError) -> &str {
    match error {
        InferenceError::Provider(e) => &e.message,
        InferenceError::RateLimited(l) => &l.message,
        InferenceError::InvalidRequest(m)
        | InferenceError::Unavailable(m)
        | InferenceError::NotGranted(m)
        | InferenceError::BudgetExceeded(m)
        | InferenceError::LeakBlocked(m) => m,
        InferenceError::Timeout(_) => "",
    }
}

/// Checks an error's message before it reaches the guest.
pub(super) fn check_error(guard: &LeakGuard, error: &InferenceError) -> Result<(), LeakDetected> {
    guard.check(error_text(error))
}

/// Outcome label for usage records and logs.
pub(super) fn outcome_label(error: &InferenceError) -> &'static str {
    match error {
        InferenceError::NotGranted(_) => "not-granted",
        InferenceError::BudgetExceeded(_) => "budget-exceeded",
        InferenceError::RateLimited(_) => "rate-limited",
        InferenceError::InvalidRequest(_) => "invalid-request",
        InferenceError::Provider(_) => "provider",
        InferenceError::Unavailable(_) => "unavailable",
        InferenceError::Timeout(_) => "timeout",
        InferenceError::LeakBlocked(_) => "leak-blocked",
    }
}
