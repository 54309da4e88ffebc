//! A model binding made real: the [`ModelBackend`] behind `model.open(..)`
//! for one agent and binding.
//!
//! Every call takes one path:
//! 1. the binding's caps (max tokens, temperature range) are checked;
//! 2. the call's worst-case tokens and cost are reserved in the ledger
//!    (`budget-exceeded` or `rate-limited` when they do not fit; nothing is
//!    sent);
//! 3. the key is decrypted from the vault for this request only (so a
//!    rotation or revocation applies to the very next call);
//! 4. the request goes straight to the provider, with retries on rate limits,
//!    overload and server errors that honour `retry-after` and end at the
//!    event's deadline;
//! 5. everything bound for the guest (text, tool inputs, ids, error
//!    messages, stream deltas) is scanned for the key this call carried
//!    (see [`crate::leak`]); an answer that holds it fails as a whole with
//!    `leak-blocked` and suspends the binding for the agent;
//! 6. the reservation is settled from the real usage (for streams, the final
//!    usage event; a stream cut short is charged its reservation). Usage
//!    records name the model the operator configured, never an id the
//!    provider reported.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::assemble::{Assembler, Increment};
use super::sse::SseParser;
use super::{anthropic, http, openai};
use crate::bindings::inference::{
    Completion, CompletionRequest, ContentPart, Error as InferenceError, StreamEvent,
};
use crate::bindings::types::{RateLimit, UpstreamError};
use crate::inference::{CallContext, CompletionEvents, ModelBackend};
use crate::leak::{HeldText, LeakDetected, LeakGuard, Scanner, SecretKind};
use crate::ledger::{BudgetError, BudgetLimits, Ledger, Reservation, UsageRecord};
use crate::pricing::PriceTable;
use crate::secret::Secret;
use crate::suspend::{Capability, Suspensions};
use crate::vault::{Vault, VaultError};

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
    pub fn default_base_url(self) -> Option<&'static str> {
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
    /// The HTTP client.
    pub http: reqwest::Client,
    /// Bindings and grants suspended after a blocked leak.
    pub suspensions: Suspensions,
    leaks_blocked: std::sync::atomic::AtomicU64,
    leak_hook: Mutex<Option<LeakHook>>,
}

/// Called for every blocked leak (the daemon audits it).
pub type LeakHook = Arc<dyn Fn(&LeakReport) + Send + Sync>;

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
            suspensions: Suspensions::in_memory(),
            leaks_blocked: std::sync::atomic::AtomicU64::new(0),
            leak_hook: Mutex::new(None),
        })
    }

    /// Keeps suspensions in `suspensions` (the state directory's table)
    /// instead of in memory only.
    pub fn with_suspensions(mut self, suspensions: Suspensions) -> Self {
        self.suspensions = suspensions;
        self
    }

    /// Installs the function told of every blocked leak.
    pub fn set_leak_hook(&self, hook: LeakHook) {
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

/// What [`BoundModel::begin`] sets up for one call.
struct CallStart<'m> {
    guard: LeakGuard,
    /// The budget reservation, charged its worst case if the call is
    /// cancelled while in flight.
    hold: Hold<'m>,
    key: Option<Secret>,
}

/// One agent's binding.
pub struct BoundModel {
    /// The agent.
    pub agent: Arc<str>,
    /// The binding name.
    pub binding: String,
    /// The provider.
    pub provider: ProviderKind,
    /// The provider's base URL.
    pub base_url: String,
    /// The model id.
    pub model: String,
    /// The vault key id (optional only for keyless compatible servers).
    pub key_id: Option<String>,
    /// Cap on max tokens per request.
    pub max_tokens: Option<u32>,
    /// Allowed temperature range.
    pub temperature: Option<[f32; 2]>,
    /// The agent's budgets.
    pub budget: BudgetLimits,
    /// Shared services.
    pub services: Arc<Services>,
}

fn upstream(status: Option<u16>, message: impl Into<String>) -> InferenceError {
    InferenceError::Provider(UpstreamError {
        status,
        message: message.into(),
    })
}

fn unavailable(message: impl Into<String>) -> InferenceError {
    InferenceError::Unavailable(message.into())
}

/// An upper bound on a request's input tokens: no tokenizer produces more
/// tokens than bytes, plus a little per message for the chat template.
fn input_token_bound(request: &CompletionRequest) -> u64 {
    let mut bytes = request.system.as_ref().map_or(0, String::len);
    for message in &request.messages {
        bytes += 16;
        for part in &message.content {
            bytes += match part {
                ContentPart::Text(t) => t.len(),
                ContentPart::ToolUse(t) => t.id.len() + t.name.len() + t.input.len(),
                ContentPart::ToolResult(r) => r.tool_use_id.len() + r.content.len(),
            };
        }
    }
    for tool in &request.tools {
        bytes += tool.name.len() + tool.description.len() + tool.input_schema.len();
    }
    // Providers add their own prompt around tool definitions (a few hundred
    // tokens); reserve generously for it.
    if !request.tools.is_empty() {
        bytes += 1_024 + 64 * request.tools.len();
    }
    bytes as u64
}

impl BoundModel {
    fn check_caps(&self, request: &CompletionRequest) -> Result<(), InferenceError> {
        if let Some(cap) = self.max_tokens
            && request.max_tokens > cap
        {
            return Err(InferenceError::InvalidRequest(format!(
                "max-tokens {} is more than the {cap} allowed for binding {:?}",
                request.max_tokens, self.binding
            )));
        }
        if let (Some([lo, hi]), Some(t)) = (self.temperature, request.temperature)
            && !(lo..=hi).contains(&t)
        {
            return Err(InferenceError::InvalidRequest(format!(
                "temperature {t} is outside the {lo}..={hi} allowed for binding {:?}",
                self.binding
            )));
        }
        Ok(())
    }

    fn reserve(
        &self,
        request: &CompletionRequest,
    ) -> Result<(Reservation, u64, u64), InferenceError> {
        let input_bound = input_token_bound(request);
        let output_bound = u64::from(request.max_tokens);
        let price = self
            .services
            .prices
            .price(self.provider.name(), &self.model);
        let cost = match price {
            Some(price) => price.cost_micros(input_bound, output_bound),
            None if self.budget.usd_micros_per_day.is_some()
                || self.budget.usd_micros_per_month.is_some() =>
            {
                return Err(InferenceError::BudgetExceeded(format!(
                    "no price is known for model {:?}, so the USD budget cannot be enforced; add one to the price table",
                    self.model
                )));
            }
            None => 0,
        };
        let reservation = self
            .services
            .ledger
            .reserve(&self.agent, &self.budget, input_bound + output_bound, cost)
            .map_err(|e| match e {
                BudgetError::Exceeded(message) => InferenceError::BudgetExceeded(message),
                BudgetError::RateLimited {
                    limit,
                    retry_after_secs,
                } => InferenceError::RateLimited(RateLimit {
                    retry_after_ms: Some(retry_after_secs * 1000),
                    message: format!("more than {limit} calls per minute for this agent"),
                }),
                BudgetError::Db(e) => unavailable(format!("usage ledger: {e}")),
            })?;
        Ok((reservation, input_bound + output_bound, cost))
    }

    /// The common start of every call: the suspension check, caps, the
    /// budget reservation, the key for this request only, and a guard for
    /// it.
    fn begin(
        &self,
        request: &CompletionRequest,
        call: &CallContext,
    ) -> Result<CallStart<'_>, InferenceError> {
        self.check_suspended()?;
        self.check_caps(request)?;
        let started = Instant::now();
        let (reservation, reserved_tokens, _) = self.reserve(request)?;
        let (key, guard) = match self.key() {
            Ok(key) => key,
            Err(error) => {
                drop(reservation);
                return Err(error);
            }
        };
        let max_output = u64::from(request.max_tokens);
        Ok(CallStart {
            guard,
            hold: Hold {
                model: self,
                reservation: Some(reservation),
                worst: (reserved_tokens.saturating_sub(max_output), max_output),
                started,
                event_id: call.event_id.clone(),
            },
            key,
        })
    }

    /// The key for this request, and a guard for it (and for its value
    /// before the last rotation).
    fn key(&self) -> Result<(Option<Secret>, LeakGuard), InferenceError> {
        let Some(id) = &self.key_id else {
            return Ok((None, LeakGuard::default()));
        };
        self.services
            .vault
            .secret_and_previous(id, self.provider.name())
            .map(|(key, previous)| {
                let guard = Services::guard_for(self.provider.name(), &key, previous.as_ref());
                (Some(key), guard)
            })
            .map_err(|e| match e {
                VaultError::Revoked(_) => unavailable(format!(
                    "key {id:?} for binding {:?} was revoked",
                    self.binding
                )),
                VaultError::UnknownKey(_) => unavailable(format!(
                    "key {id:?} for binding {:?} does not exist",
                    self.binding
                )),
                other => unavailable(format!("key {id:?}: {other}")),
            })
    }

    fn http_request(
        &self,
        key: Option<&Secret>,
        body: &Value,
    ) -> Result<reqwest::RequestBuilder, InferenceError> {
        let base = self.base_url.trim_end_matches('/');
        let (url, mut builder) = match self.provider {
            ProviderKind::Anthropic => {
                let url = format!("{base}/v1/messages");
                let b = self
                    .services
                    .http
                    .post(&url)
                    .header("anthropic-version", anthropic::API_VERSION);
                (url, b)
            }
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                let url = format!("{base}/chat/completions");
                (url.clone(), self.services.http.post(&url))
            }
        };
        let _ = url;
        if let Some(key) = key {
            let value = key
                .expose_str()
                .ok_or_else(|| unavailable("the key is not valid text"))?;
            let (name, value) = match self.provider {
                ProviderKind::Anthropic => ("x-api-key", value.to_string()),
                _ => ("authorization", format!("Bearer {value}")),
            };
            let mut header = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| unavailable("the key is not a valid header value"))?;
            header.set_sensitive(true);
            builder = builder.header(name, header);
        }
        Ok(builder
            .header("content-type", "application/json")
            // The leak check reads answers as sent: ask for them uncompressed.
            .header("accept-encoding", "identity")
            .body(body.to_string()))
    }

    fn body(&self, request: &CompletionRequest, stream: bool) -> Value {
        match self.provider {
            ProviderKind::Anthropic => anthropic::request_body(&self.model, request, stream),
            ProviderKind::OpenAi => {
                openai::request_body(&self.model, request, stream, openai::Dialect::OpenAi)
            }
            ProviderKind::OpenAiCompatible => {
                openai::request_body(&self.model, request, stream, openai::Dialect::Compatible)
            }
        }
    }

    /// Sends with retries until a non-retryable answer or the deadline.
    async fn send(
        &self,
        key: Option<&Secret>,
        body: &Value,
        guard: &LeakGuard,
        call: &CallContext,
    ) -> Result<reqwest::Response, InferenceError> {
        let deadline = call.deadline;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = self.http_request(key, body)?;
            let outcome = match tokio::time::timeout_at(deadline.into(), request.send()).await {
                Err(_) => return Err(InferenceError::Timeout),
                Ok(outcome) => outcome,
            };
            let (error, server_wait) = match outcome {
                Ok(response) if response.status().is_success() => {
                    let status = response.status();
                    return match crate::tools::connector::unreadable_body(
                        status,
                        response.headers(),
                    ) {
                        Some(refused) => Err(upstream(Some(status.as_u16()), refused)),
                        None => Ok(response),
                    };
                }
                Ok(response)
                    if http::retryable(response.status()) && attempt < http::MAX_ATTEMPTS =>
                {
                    let wait = http::retry_after(response.headers());
                    let error = self
                        .error_from(response, deadline, guard)
                        .await
                        .map_err(|leak| self.blocked(leak, &call.event_id))?;
                    (error, wait)
                }
                Ok(response) => {
                    return Err(self
                        .error_from(response, deadline, guard)
                        .await
                        .unwrap_or_else(|leak| self.blocked(leak, &call.event_id)));
                }
                Err(e) if attempt < http::MAX_ATTEMPTS && (e.is_connect() || e.is_timeout()) => (
                    unavailable(format!(
                        "cannot reach {}: {}",
                        self.provider.name(),
                        error_kind(&e)
                    )),
                    None,
                ),
                Err(e) => {
                    return Err(unavailable(format!(
                        "cannot reach {}: {}",
                        self.provider.name(),
                        error_kind(&e)
                    )));
                }
            };
            let wait = http::backoff(attempt, server_wait);
            if !http::fits(wait, deadline) {
                return Err(error);
            }
            tracing::debug!(agent = %self.agent, binding = %self.binding, attempt, wait_ms = wait.as_millis() as u64, "retrying provider call");
            tokio::time::sleep(wait).await;
        }
    }

    /// Turns an error response into the guest's error, reading a bounded
    /// body. The whole body is checked for the key before any of it is
    /// quoted, whatever its content type, and the quote is cut only after.
    async fn error_from(
        &self,
        response: reqwest::Response,
        deadline: Instant,
        guard: &LeakGuard,
    ) -> Result<InferenceError, LeakDetected> {
        let status = response.status();
        let wait = http::retry_after(response.headers());
        // A body in an encoding nobody asked for is not quoted at all.
        let readable =
            crate::tools::connector::unreadable_body(status, response.headers()).is_none();
        let body = if readable {
            read_bounded(response, deadline, MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        guard.scanner().feed(&body)?;
        if let Ok(text) = std::str::from_utf8(&body) {
            guard.check_json_strings(text)?;
        }
        let message = super::error_message(&parsed)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let message =
            crate::log::truncate_at_char_boundary(&message, MAX_ERROR_MESSAGE_BYTES).to_string();
        let code = status.as_u16();
        Ok(match code {
            429 => InferenceError::RateLimited(RateLimit {
                retry_after_ms: wait.map(|w| w.as_millis() as u64),
                message,
            }),
            400 | 413 | 422 => InferenceError::InvalidRequest(format!(
                "the provider refused the request: {message}"
            )),
            529 | 503 => unavailable(format!(
                "{} is overloaded (HTTP {code}): {message}",
                self.provider.name()
            )),
            _ => upstream(Some(code), message),
        })
    }

    fn record(
        &self,
        input: u64,
        output: u64,
        started: Instant,
        outcome: &str,
        event_id: &str,
    ) -> UsageRecord {
        let cost = self
            .services
            .prices
            .price(self.provider.name(), &self.model)
            .map_or(0, |p| p.cost_micros(input, output));
        UsageRecord {
            agent: self.agent.to_string(),
            binding: self.binding.clone(),
            provider: self.provider.name().to_string(),
            model: self.model.clone(),
            key_id: self.key_id.clone(),
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
            latency_ms: started.elapsed().as_millis() as u64,
            outcome: outcome.to_string(),
            event_id: Some(event_id.to_string()),
        }
    }

    fn settle(&self, reservation: Reservation, record: &UsageRecord) {
        self.services.ledger.settle(reservation, record);
    }
}

/// The most of an error response that is read (and checked for the key).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The most of an error message that is quoted to the guest.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

/// Checks every string of a completion that the guest will see: all of
/// them in order through one scanner, so a key split across parts is found
/// in their concatenation; each alone; tool inputs also as JSON.
fn scan_completion(guard: &LeakGuard, completion: &Completion) -> Result<(), LeakDetected> {
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

/// A binding as suspensions and leak reports know it; the model, and the
/// part of it a stream's task keeps.
trait Binding {
    /// The services, the agent, the binding's name and its key id.
    fn identity(&self) -> (&Services, &str, &str, Option<&str>);

    /// Fails with `leak-blocked` if the binding (or its key) is suspended.
    /// Checked when a call starts and again before any answer or stream
    /// event is delivered, so calls in flight when another hit suspended
    /// the binding answer like any call after it: one answer per
    /// suspension, however many calls race.
    fn check_suspended(&self) -> Result<(), InferenceError> {
        let (services, agent, binding, key_id) = self.identity();
        match services.suspended(agent, Capability::Model, binding, key_id) {
            Some(message) => Err(InferenceError::LeakBlocked(message)),
            None => Ok(()),
        }
    }

    /// Records a blocked leak (suspending the binding for the agent) and
    /// returns the guest's error.
    fn blocked(&self, leak: LeakDetected, event_id: &str) -> InferenceError {
        let (services, agent, binding, key_id) = self.identity();
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

impl Binding for BoundModel {
    fn identity(&self) -> (&Services, &str, &str, Option<&str>) {
        (
            &self.services,
            &self.agent,
            &self.binding,
            self.key_id.as_deref(),
        )
    }
}

/// The text of an error that the guest reads.
fn error_text(error: &InferenceError) -> &str {
    match error {
        InferenceError::Provider(e) => &e.message,
        InferenceError::RateLimited(l) => &l.message,
        InferenceError::InvalidRequest(m)
        | InferenceError::Unavailable(m)
        | InferenceError::NotGranted(m)
        | InferenceError::BudgetExceeded(m)
        | InferenceError::LeakBlocked(m) => m,
        InferenceError::Timeout => "",
    }
}

/// Checks an error's message before it reaches the guest.
fn check_error(guard: &LeakGuard, error: &InferenceError) -> Result<(), LeakDetected> {
    guard.check(error_text(error))
}

/// A reservation held across a provider call. Dropped with the call still
/// in flight (the guest's deadline cancelled it), it charges the worst
/// case: the request may have reached the provider, which bills for it.
/// `worst` is (input, output) tokens.
struct Hold<'m> {
    model: &'m BoundModel,
    reservation: Option<Reservation>,
    worst: (u64, u64),
    started: Instant,
    event_id: Arc<str>,
}

impl Hold<'_> {
    /// The reservation, for settling normally.
    fn take(&mut self) -> Reservation {
        self.reservation
            .take()
            .expect("a hold is taken once, on the path that settles it")
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            let (input, output) = self.worst;
            let record =
                self.model
                    .record(input, output, self.started, "cancelled", &self.event_id);
            self.model.settle(reservation, &record);
        }
    }
}

/// Outcome label for usage records and logs.
fn outcome_label(error: &InferenceError) -> &'static str {
    match error {
        InferenceError::NotGranted(_) => "not-granted",
        InferenceError::BudgetExceeded(_) => "budget-exceeded",
        InferenceError::RateLimited(_) => "rate-limited",
        InferenceError::InvalidRequest(_) => "invalid-request",
        InferenceError::Provider(_) => "provider",
        InferenceError::Unavailable(_) => "unavailable",
        InferenceError::Timeout => "timeout",
        InferenceError::LeakBlocked(_) => "leak-blocked",
    }
}

fn error_kind(error: &reqwest::Error) -> &'static str {
    // reqwest's messages can include the URL; the kind is enough.
    if error.is_connect() {
        "connection failed"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "bad response body"
    } else {
        "request failed"
    }
}

async fn read_bounded(
    mut response: reqwest::Response,
    deadline: Instant,
    max: usize,
) -> Result<Vec<u8>, InferenceError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline.into(), response.chunk()).await {
            Err(_) => return Err(InferenceError::Timeout),
            Ok(Err(e)) => {
                return Err(unavailable(format!(
                    "reading the response: {}",
                    error_kind(&e)
                )));
            }
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > max {
                    return Err(upstream(
                        None,
                        format!("the response is larger than {max} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

#[async_trait::async_trait]
impl ModelBackend for BoundModel {
    fn provider(&self) -> &str {
        self.provider.name()
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn described_model(&self) -> String {
        // Operator configuration, not upstream text, so no guest can steer
        // this check; it only keeps a key pasted into the wrong field out.
        let Ok((_, guard)) = self.key() else {
            return self.model.clone();
        };
        match guard.check(&self.model) {
            Ok(()) => self.model.clone(),
            Err(_) => "[withheld: the configured model id holds the binding's key]".into(),
        }
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<Completion, InferenceError> {
        let CallStart {
            guard,
            mut hold,
            key,
        } = self.begin(&request, call)?;
        let (worst_input, max_output) = hold.worst;
        let started = hold.started;
        // Whether the provider may have done (and billed) the work: it
        // answered 2xx, or the call timed out after it was sent.
        let mut maybe_billed = false;
        let result = async {
            let body = self.body(&request, false);
            let response = self.send(key.as_ref(), &body, &guard, call).await;
            if matches!(response, Ok(_) | Err(InferenceError::Timeout)) {
                maybe_billed = true;
            }
            let bytes = read_bounded(response?, call.deadline, http::MAX_RESPONSE_BYTES).await?;
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|_| upstream(Some(200), "the response is not JSON"))?;
            let parsed = match self.provider {
                ProviderKind::Anthropic => anthropic::parse_response(&value),
                _ => openai::parse_response(&value),
            };
            let has_usage = value.get("usage").is_some_and(Value::is_object);
            parsed
                .map(|c| (c, has_usage))
                .map_err(|e| upstream(Some(200), e))
        }
        .await;
        drop(key);
        let reservation = hold.take();
        match result {
            Ok((mut completion, has_usage)) => {
                // Without a usage report, charge the worst case, never zero.
                let (input, output) = if has_usage {
                    (
                        completion.usage.input_tokens,
                        completion.usage.output_tokens,
                    )
                } else {
                    (worst_input, max_output)
                };
                if completion.model.is_empty() {
                    completion.model = self.model.clone();
                }
                let checked = scan_completion(&guard, &completion);
                let label = if checked.is_ok() {
                    "ok"
                } else {
                    "leak-blocked"
                };
                let record = self.record(input, output, started, label, &call.event_id);
                self.settle(reservation, &record);
                match checked {
                    Ok(()) => self.check_suspended().map(|()| completion),
                    Err(leak) => Err(self.blocked(leak, &call.event_id)),
                }
            }
            Err(error) => {
                // A refused call is not billed; one that may have run is
                // charged its worst case.
                let (input, output) = if maybe_billed {
                    (worst_input, max_output)
                } else {
                    (0, 0)
                };
                let record = self.record(
                    input,
                    output,
                    started,
                    outcome_label(&error),
                    &call.event_id,
                );
                self.settle(reservation, &record);
                match check_error(&guard, &error) {
                    Ok(()) => Err(error),
                    Err(leak) => Err(self.blocked(leak, &call.event_id)),
                }
            }
        }
    }

    async fn stream(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<CompletionEvents, InferenceError> {
        let CallStart {
            guard,
            mut hold,
            key,
        } = self.begin(&request, call)?;
        let (worst_input, max_output) = hold.worst;
        let started = hold.started;
        let body = self.body(&request, true);
        let sent = self.send(key.as_ref(), &body, &guard, call).await;
        let reservation = hold.take();
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                // A timeout may have come after the provider started work.
                let (input, output) = if matches!(error, InferenceError::Timeout) {
                    (worst_input, max_output)
                } else {
                    (0, 0)
                };
                let record = self.record(
                    input,
                    output,
                    started,
                    outcome_label(&error),
                    &call.event_id,
                );
                self.settle(reservation, &record);
                return Err(match check_error(&guard, &error) {
                    Ok(()) => error,
                    Err(leak) => self.blocked(leak, &call.event_id),
                });
            }
        };
        drop(key);
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let pump = StreamPump {
            model: BoundModelRef {
                agent: self.agent.clone(),
                binding: self.binding.clone(),
                provider: self.provider,
                model: self.model.clone(),
                key_id: self.key_id.clone(),
                services: self.services.clone(),
            },
            response,
            deadline: call.deadline,
            event_id: call.event_id.clone(),
            guard,
            reservation,
            reserved_tokens: worst_input + max_output,
            max_output,
            started,
        };
        tokio::spawn(pump.run(sender));
        Ok(receiver)
    }
}

/// What a stream's background task needs of its binding.
struct BoundModelRef {
    agent: Arc<str>,
    binding: String,
    provider: ProviderKind,
    model: String,
    key_id: Option<String>,
    services: Arc<Services>,
}

struct StreamPump {
    model: BoundModelRef,
    response: reqwest::Response,
    deadline: Instant,
    event_id: Arc<str>,
    guard: LeakGuard,
    reservation: Reservation,
    reserved_tokens: u64,
    max_output: u64,
    started: Instant,
}

/// Where the guest-visible pieces of a stream go: every string through one
/// scanner in the order the guest sees them, text held back by a fixed
/// tail, tool input passed on whole when its part ends (checked as JSON).
struct GuardedStream {
    guard: LeakGuard,
    scanner: Scanner,
    text: HeldText,
    tool_json: String,
}

impl GuardedStream {
    /// Turns one assembled event into what may be sent now.
    fn admit(&mut self, event: StreamEvent) -> Result<Vec<StreamEvent>, LeakDetected> {
        let mut out = Vec::new();
        if !matches!(event, StreamEvent::ToolUseInputDelta(_)) {
            self.end_tool_input(&mut out)?;
        }
        if !matches!(event, StreamEvent::TextDelta(_))
            && let Some(rest) = self.text.flush()
        {
            out.push(StreamEvent::TextDelta(rest));
        }
        match event {
            StreamEvent::TextDelta(delta) => {
                self.scanner.feed(delta.as_bytes())?;
                if let Some(ready) = self.text.push(&delta) {
                    out.push(StreamEvent::TextDelta(ready));
                }
            }
            StreamEvent::ToolUseInputDelta(delta) => self.tool_json.push_str(&delta),
            StreamEvent::ToolUseStart(start) => {
                self.scanner.feed(start.id.as_bytes())?;
                self.scanner.feed(start.name.as_bytes())?;
                self.guard.check(&start.id)?;
                self.guard.check(&start.name)?;
                out.push(StreamEvent::ToolUseStart(start));
            }
            StreamEvent::Finished(completion) => {
                // The whole completion again, parts joined: what the deltas
                // showed piece by piece, the guest now gets at once.
                scan_completion(&self.guard, &completion)?;
                out.push(StreamEvent::Finished(completion));
            }
        }
        Ok(out)
    }

    fn end_tool_input(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), LeakDetected> {
        if self.tool_json.is_empty() {
            return Ok(());
        }
        let json = std::mem::take(&mut self.tool_json);
        self.scanner.feed(json.as_bytes())?;
        self.guard.check_json(&json)?;
        out.push(StreamEvent::ToolUseInputDelta(json));
        Ok(())
    }

    /// What is still held when the stream ends early: already scanned, so
    /// it is passed on before the error.
    fn rest(&mut self) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if let Some(rest) = self.text.flush() {
            out.push(StreamEvent::TextDelta(rest));
        }
        out
    }
}

impl StreamPump {
    async fn run(mut self, sender: tokio::sync::mpsc::Sender<Result<StreamEvent, InferenceError>>) {
        let mut parser = SseParser::new();
        let mut assembler = Assembler::new(&self.model.model);
        let mut guarded = GuardedStream {
            guard: self.guard.clone(),
            scanner: self.guard.scanner(),
            text: HeldText::default(),
            tool_json: String::new(),
        };
        let mut stopped = false;
        let mut saw_final_usage = false;
        let mut leak = None;
        let outcome: Result<(), InferenceError> = 'pump: loop {
            let chunk = tokio::select! {
                // The guest dropped the stream, or its event ended.
                () = sender.closed() => break Err(InferenceError::Timeout),
                read = tokio::time::timeout_at(self.deadline.into(), self.response.chunk()) => match read {
                    Err(_) => break Err(InferenceError::Timeout),
                    Ok(Err(e)) => break Err(unavailable(format!("the stream broke: {}", error_kind(&e)))),
                    Ok(Ok(None)) => break Err(unavailable("the stream ended before the completion finished")),
                    Ok(Ok(Some(chunk))) => chunk,
                },
            };
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(e) => break Err(upstream(None, e)),
            };
            for event in events {
                let increments =
                    match self.model.provider {
                        ProviderKind::Anthropic => anthropic::parse_event(&event.data).map_err(
                            |(kind, message)| match kind.as_str() {
                                "overloaded_error" => {
                                    unavailable(format!("anthropic is overloaded: {message}"))
                                }
                                "rate_limit_error" => InferenceError::RateLimited(RateLimit {
                                    retry_after_ms: None,
                                    message,
                                }),
                                _ => upstream(None, message),
                            },
                        ),
                        _ => openai::parse_chunk(&event.data)
                            .map_err(|message| upstream(None, message)),
                    };
                let increments = match increments {
                    Ok(increments) => increments,
                    Err(error) => break 'pump Err(error),
                };
                for increment in increments {
                    match &increment {
                        Increment::Stop(_) => stopped = true,
                        Increment::Usage {
                            output: Some(_), ..
                        } if stopped => saw_final_usage = true,
                        _ => {}
                    }
                    let guest_event = match assembler.apply(increment) {
                        Ok(Some(StreamEvent::Finished(mut completion))) => {
                            if completion.model.is_empty() {
                                completion.model = self.model.model.clone();
                            }
                            StreamEvent::Finished(completion)
                        }
                        Ok(Some(event)) => event,
                        Ok(None) => continue,
                        Err(error) => break 'pump Err(error),
                    };
                    let finished = matches!(guest_event, StreamEvent::Finished(_));
                    let out = match guarded.admit(guest_event) {
                        Ok(out) => out,
                        Err(detected) => {
                            leak = Some(detected);
                            break 'pump Ok(());
                        }
                    };
                    if !out.is_empty()
                        && let Err(suspended) = self.model.check_suspended()
                    {
                        // Another call's hit suspended the binding: this
                        // stream ends like any call after it.
                        break 'pump Err(suspended);
                    }
                    for event in out {
                        if sender.send(Ok(event)).await.is_err() {
                            break 'pump Err(InferenceError::Timeout);
                        }
                    }
                    if finished {
                        // Nothing follows the finished completion.
                        break 'pump Ok(());
                    }
                }
            }
        };
        let usage = assembler.usage();
        // Without the final usage event the real output is unknown: charge
        // the reservation's worst case rather than undercount.
        let (input, output) = if saw_final_usage && outcome.is_ok() {
            (usage.input_tokens, usage.output_tokens)
        } else {
            (
                usage
                    .input_tokens
                    .max(self.reserved_tokens.saturating_sub(self.max_output)),
                self.max_output,
            )
        };
        let label = match (&outcome, leak) {
            (_, Some(_)) => "leak-blocked",
            (Ok(()), None) => "ok",
            (Err(error), None) => outcome_label(error),
        };
        let cost = self
            .model
            .services
            .prices
            .price(self.model.provider.name(), &self.model.model)
            .map_or(0, |p| p.cost_micros(input, output));
        let record = UsageRecord {
            agent: self.model.agent.to_string(),
            binding: self.model.binding.clone(),
            provider: self.model.provider.name().to_string(),
            model: self.model.model.clone(),
            key_id: self.model.key_id.clone(),
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
            latency_ms: self.started.elapsed().as_millis() as u64,
            outcome: label.to_string(),
            event_id: Some(self.event_id.to_string()),
        };
        self.model.services.ledger.settle(self.reservation, &record);
        let error = match (outcome, leak) {
            (_, Some(detected)) => Some(self.model.blocked(detected, &self.event_id)),
            (Ok(()), None) => None,
            // Suspended meanwhile: nothing more, as for a call after it.
            (Err(error @ InferenceError::LeakBlocked(_)), None) => Some(error),
            (Err(error), None) => {
                // The guest reads the held text and then the error: they are
                // checked as one text, and alone.
                let checked = guarded
                    .scanner
                    .feed(error_text(&error).as_bytes())
                    .and_then(|()| check_error(&self.guard, &error));
                match checked {
                    Ok(()) => {
                        for event in guarded.rest() {
                            let _ = sender.send(Ok(event)).await;
                        }
                        Some(error)
                    }
                    Err(detected) => Some(self.model.blocked(detected, &self.event_id)),
                }
            }
        };
        if let Some(error) = error {
            let _ = sender.send(Err(error)).await;
        }
    }
}

impl Binding for BoundModelRef {
    fn identity(&self) -> (&Services, &str, &str, Option<&str>) {
        (
            &self.services,
            &self.agent,
            &self.binding,
            self.key_id.as_deref(),
        )
    }
}
