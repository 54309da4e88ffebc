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
//! 5. everything bound for the guest (text, tool inputs, error messages,
//!    stream deltas) is scanned for every secret the host holds;
//! 6. the reservation is settled from the real usage (for streams, the final
//!    usage event; a stream cut short is charged its reservation).

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
use crate::ledger::{BudgetError, BudgetLimits, Ledger, Reservation, UsageRecord};
use crate::pricing::PriceTable;
use crate::redact::Redactor;
use crate::secret::Secret;
use crate::vault::{Vault, VaultError, VaultVersion};

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
    redactor: Mutex<Option<(VaultVersion, Arc<Redactor>)>>,
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
            redactor: Mutex::new(None),
        })
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
        Ok((db, Self::new(Arc::new(vault), ledger, prices)?))
    }

    /// A redactor for every secret in the vault, rebuilt only when keys
    /// change.
    pub fn redactor(&self) -> Result<Arc<Redactor>, VaultError> {
        let version = self.vault.version()?;
        let mut cached = self.redactor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_version, redactor)) = cached.as_ref()
            && *cached_version == version
        {
            return Ok(redactor.clone());
        }
        let secrets = self.vault.active_secrets()?;
        let redactor = Arc::new(Redactor::new(secrets.iter()));
        *cached = Some((version, redactor.clone()));
        Ok(redactor)
    }
}

/// What [`BoundModel::begin`] sets up for one call.
struct CallStart<'m> {
    redactor: Arc<Redactor>,
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

    /// The common start of every call: caps, the budget reservation, the
    /// key for this request only, and a redactor that covers it.
    fn begin(&self, request: &CompletionRequest) -> Result<CallStart<'_>, InferenceError> {
        self.check_caps(request)?;
        let started = Instant::now();
        let redactor = self
            .services
            .redactor()
            .map_err(|e| unavailable(format!("key vault: {e}")))?;
        let (reservation, reserved_tokens, _) = self.reserve(request)?;
        let key = match self.key() {
            Ok(key) => key,
            Err(error) => {
                drop(reservation);
                return Err(error);
            }
        };
        let redactor = self.redactor_covering(redactor, key.as_ref());
        let max_output = u64::from(request.max_tokens);
        Ok(CallStart {
            redactor,
            hold: Hold {
                model: self,
                reservation: Some(reservation),
                worst: (reserved_tokens.saturating_sub(max_output), max_output),
                started,
            },
            key,
        })
    }

    /// The redactor, made sure to cover the key this call sends (a rotation
    /// between building the shared redactor and fetching the key would
    /// otherwise leave it out).
    fn redactor_covering(&self, redactor: Arc<Redactor>, key: Option<&Secret>) -> Arc<Redactor> {
        match key {
            Some(key) if !redactor.covers(key) => {
                let mut secrets = self.services.vault.active_secrets().unwrap_or_default();
                secrets.push(key.clone());
                Arc::new(Redactor::new(secrets.iter()))
            }
            _ => redactor,
        }
    }

    fn key(&self) -> Result<Option<Secret>, InferenceError> {
        let Some(id) = &self.key_id else {
            return Ok(None);
        };
        self.services
            .vault
            .secret(id, self.provider.name())
            .map(Some)
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
        deadline: Instant,
    ) -> Result<reqwest::Response, InferenceError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = self.http_request(key, body)?;
            let outcome = match tokio::time::timeout_at(deadline.into(), request.send()).await {
                Err(_) => return Err(InferenceError::Timeout),
                Ok(outcome) => outcome,
            };
            let (error, server_wait) = match outcome {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response)
                    if http::retryable(response.status()) && attempt < http::MAX_ATTEMPTS =>
                {
                    let wait = http::retry_after(response.headers());
                    (self.error_from(response, deadline).await, wait)
                }
                Ok(response) => return Err(self.error_from(response, deadline).await),
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

    /// Turns an error response into the guest's error, reading a bounded body.
    async fn error_from(&self, response: reqwest::Response, deadline: Instant) -> InferenceError {
        let status = response.status();
        let wait = http::retry_after(response.headers());
        let body = read_bounded(response, deadline, 64 * 1024)
            .await
            .unwrap_or_default();
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = super::error_message(&parsed)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
        let code = status.as_u16();
        match code {
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
        }
    }

    fn redact_completion(redactor: &Redactor, completion: &mut Completion) {
        for part in &mut completion.content {
            match part {
                ContentPart::Text(text) => *text = redactor.redact(text).into_owned(),
                ContentPart::ToolUse(tool_use) => {
                    tool_use.input = redact_json(redactor, &tool_use.input);
                    tool_use.name = redactor.redact(&tool_use.name).into_owned();
                    tool_use.id = redactor.redact(&tool_use.id).into_owned();
                }
                ContentPart::ToolResult(result) => {
                    result.content = redactor.redact(&result.content).into_owned()
                }
            }
        }
    }

    fn redact_error(redactor: &Redactor, error: InferenceError) -> InferenceError {
        let r = |m: String| redactor.redact(&m).into_owned();
        match error {
            InferenceError::Provider(e) => InferenceError::Provider(UpstreamError {
                status: e.status,
                message: r(e.message),
            }),
            InferenceError::RateLimited(l) => InferenceError::RateLimited(RateLimit {
                retry_after_ms: l.retry_after_ms,
                message: r(l.message),
            }),
            InferenceError::InvalidRequest(m) => InferenceError::InvalidRequest(r(m)),
            InferenceError::Unavailable(m) => InferenceError::Unavailable(r(m)),
            other => other,
        }
    }

    fn record(
        &self,
        model: &str,
        input: u64,
        output: u64,
        started: Instant,
        outcome: &str,
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
            model: model.to_string(),
            key_id: self.key_id.clone(),
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
            latency_ms: started.elapsed().as_millis() as u64,
            outcome: outcome.to_string(),
        }
    }

    fn settle(&self, reservation: Reservation, record: &UsageRecord) {
        self.services.ledger.settle(reservation, record);
    }
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
                    .record(&self.model.model, input, output, self.started, "cancelled");
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

/// Redacts every string inside a JSON document, keeping it valid JSON.
fn redact_json(redactor: &Redactor, json: &str) -> String {
    match serde_json::from_str::<Value>(json) {
        Ok(value) => redact_value(redactor, value).to_string(),
        Err(_) => redactor.redact(json).into_owned(),
    }
}

/// Redacts every string and object key inside a JSON value.
pub fn redact_value(redactor: &Redactor, mut value: Value) -> Value {
    fn walk(redactor: &Redactor, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let std::borrow::Cow::Owned(clean) = redactor.redact(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(redactor, v)),
            Value::Object(map) => {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(key, mut v)| {
                        walk(redactor, &mut v);
                        (redactor.redact(&key).into_owned(), v)
                    })
                    .collect();
            }
            _ => {}
        }
    }
    walk(redactor, &mut value);
    value
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

    async fn complete(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<Completion, InferenceError> {
        let CallStart {
            redactor,
            mut hold,
            key,
        } = self.begin(&request)?;
        let (worst_input, max_output) = hold.worst;
        let started = hold.started;
        // Whether the provider may have done (and billed) the work: it
        // answered 2xx, or the call timed out after it was sent.
        let mut maybe_billed = false;
        let result = async {
            let body = self.body(&request, false);
            let response = self.send(key.as_ref(), &body, call.deadline).await;
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
                let model = if completion.model.is_empty() {
                    self.model.clone()
                } else {
                    completion.model.clone()
                };
                // Without a usage report, charge the worst case, never zero.
                let (input, output) = if has_usage {
                    (
                        completion.usage.input_tokens,
                        completion.usage.output_tokens,
                    )
                } else {
                    (worst_input, max_output)
                };
                let record = self.record(&model, input, output, started, "ok");
                self.settle(reservation, &record);
                Self::redact_completion(&redactor, &mut completion);
                completion.model = redactor.redact(&model).into_owned();
                Ok(completion)
            }
            Err(error) => {
                // A refused call is not billed; one that may have run is
                // charged its worst case.
                let (input, output) = if maybe_billed {
                    (worst_input, max_output)
                } else {
                    (0, 0)
                };
                let record =
                    self.record(&self.model, input, output, started, outcome_label(&error));
                self.settle(reservation, &record);
                Err(Self::redact_error(&redactor, error))
            }
        }
    }

    async fn stream(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<CompletionEvents, InferenceError> {
        let CallStart {
            redactor,
            mut hold,
            key,
        } = self.begin(&request)?;
        let (worst_input, max_output) = hold.worst;
        let started = hold.started;
        let body = self.body(&request, true);
        let sent = self.send(key.as_ref(), &body, call.deadline).await;
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
                let record =
                    self.record(&self.model, input, output, started, outcome_label(&error));
                self.settle(reservation, &record);
                return Err(Self::redact_error(&redactor, error));
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
            redactor,
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
    redactor: Arc<Redactor>,
    reservation: Reservation,
    reserved_tokens: u64,
    max_output: u64,
    started: Instant,
}

impl StreamPump {
    async fn run(mut self, sender: tokio::sync::mpsc::Sender<Result<StreamEvent, InferenceError>>) {
        let mut parser = SseParser::new();
        let mut assembler = Assembler::new(&self.model.model);
        let redactor = self.redactor.clone();
        let mut text = redactor.stream();
        // Tool input is JSON: escapes could hide a key from a text scan, so
        // it is passed on whole, parsed and redacted, when its part ends.
        let mut tool_json = String::new();
        let mut stopped = false;
        let mut saw_final_usage = false;
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
                        Ok(Some(event)) => event,
                        Ok(None) => continue,
                        Err(error) => break 'pump Err(error),
                    };
                    let mut out = Vec::new();
                    if !matches!(guest_event, StreamEvent::ToolUseInputDelta(_))
                        && !tool_json.is_empty()
                    {
                        out.push(StreamEvent::ToolUseInputDelta(redact_json(
                            &redactor,
                            &std::mem::take(&mut tool_json),
                        )));
                    }
                    let finished = matches!(guest_event, StreamEvent::Finished(_));
                    match guest_event {
                        StreamEvent::TextDelta(delta) => {
                            out.push(StreamEvent::TextDelta(text.push(&delta)))
                        }
                        StreamEvent::ToolUseInputDelta(delta) => tool_json.push_str(&delta),
                        StreamEvent::ToolUseStart(start) => out.push(StreamEvent::ToolUseStart(
                            crate::bindings::inference::ToolUseStart {
                                id: redactor.redact(&start.id).into_owned(),
                                name: redactor.redact(&start.name).into_owned(),
                            },
                        )),
                        StreamEvent::Finished(mut completion) => {
                            BoundModel::redact_completion(&redactor, &mut completion);
                            completion.model = redactor.redact(&completion.model).into_owned();
                            out.push(StreamEvent::Finished(completion));
                        }
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
        let completion = assembler.completion();
        let model = if completion.model.is_empty() {
            self.model.model.clone()
        } else {
            completion.model
        };
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
        let label = match &outcome {
            Ok(()) => "ok",
            Err(error) => outcome_label(error),
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
            model,
            key_id: self.model.key_id.clone(),
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
            latency_ms: self.started.elapsed().as_millis() as u64,
            outcome: label.to_string(),
        };
        self.model.services.ledger.settle(self.reservation, &record);
        if let Err(error) = outcome {
            let _ = sender
                .send(Err(BoundModel::redact_error(&redactor, error)))
                .await;
        }
    }
}
