//! A model binding made real: the [`ModelBackend`] behind `model.open(..)`
//! for one agent and binding.
//!
//! Every call takes one path:
//! 1. the binding's caps (max tokens, temperature range) and the rules of
//!    every provider in its chain are checked (see [`super::rules`]);
//!    nothing is sent for a request a provider would refuse;
//! 2. the binding's own model is tried first, then its fallbacks in order,
//!    each on a 429, a 5xx, a timeout or an unreachable provider (or a
//!    revoked key), while the event's time allows. Each attempt is its own
//!    budget reservation, usage record and audit record;
//! 3. per attempt: the worst-case tokens and cost are reserved in the
//!    ledger (`budget-exceeded` or `rate-limited` when they do not fit;
//!    nothing is sent), the key is decrypted from the vault for this
//!    request only (so a rotation or revocation applies to the very next
//!    call), and the request goes straight to the provider with the
//!    target's connect, first-byte and idle limits;
//! 4. everything bound for the guest (text, tool inputs, ids, error
//!    messages, stream deltas) is scanned for the key the attempt carried
//!    (see [`crate::leak`]); an answer that holds it fails as a whole with
//!    `leak-blocked`, suspends the binding for the agent and ends the
//!    chain;
//! 5. the reservation is settled from the provider's token counts, or,
//!    when it sent none, from an estimate that the usage record marks.
//!    Usage records name the model the operator configured, never an id
//!    the provider reported.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::assemble::wit_usage;
use super::binding::{
    Binding, ProviderKind, Services, check_error, outcome_label, scan_completion,
};
use super::call::{
    error_kind, output_token_bound, read_bounded, unavailable, upstream, usage_record,
};
use super::stream::StreamPump;
use super::target::{Target, answer_by, limit};
use super::{Parsed, anthropic, http, openai};
use crate::bindings::inference::{
    Completion, CompletionRequest, ContentPart, Error as InferenceError, TimeoutKind,
};
use crate::bindings::types::RateLimit;
use crate::inference::{CallContext, CompletionEvents, ModelBackend};
use crate::leak::LeakGuard;
use crate::ledger::{BudgetError, BudgetLimits, Reservation, UsageRecord};
use crate::pricing::Tokens;
use crate::secret::Secret;
use crate::vault::VaultError;

/// Most fallbacks one binding may list.
pub(crate) const MAX_FALLBACKS: usize = 4;

/// One agent's binding: its own model and its fallbacks.
pub struct BoundModel {
    /// The agent.
    pub agent: Arc<str>,
    /// The binding name.
    pub binding: String,
    /// The models tried in order: the binding's own, then its fallbacks.
    /// Never empty.
    pub targets: Vec<Target>,
    /// Cap on max tokens per request.
    pub max_tokens: Option<u32>,
    /// Allowed temperature range.
    pub temperature: Option<[f32; 2]>,
    /// The agent's budgets.
    pub budget: BudgetLimits,
    /// Shared services.
    pub services: Arc<Services>,
}

/// One call along a binding's chain: the event's context, and the time by
/// which the answer is due, fixed when the call starts (so fallbacks do
/// not eat into the guest's reserve).
pub(super) struct Call<'c> {
    pub(super) context: &'c CallContext,
    pub(super) answer_by: Instant,
}

impl Call<'_> {
    pub(super) fn event_id(&self) -> &str {
        &self.context.event_id
    }
}

/// Least time left for a fallback to be worth trying.
const MIN_FALLBACK_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// How an attempt on one model failed.
pub(super) enum Failure {
    /// The provider was busy, down, slow or refused the key: the next model
    /// of the chain may answer.
    Fallback(InferenceError),
    /// The call ends here (a bad request, a budget, a leak).
    Final(InferenceError),
}

impl Failure {
    fn error(self) -> InferenceError {
        match self {
            Self::Fallback(e) | Self::Final(e) => e,
        }
    }
}

/// An upper bound on a request's input tokens, from the body as sent: no
/// tokenizer produces more tokens than bytes, plus an allowance for what
/// the provider's chat template adds per message and per part (each tool
/// result is a message of its own in Chat Completions) and around tool
/// definitions.
fn input_token_bound(request: &CompletionRequest, body_bytes: usize) -> u64 {
    let parts: usize = request.messages.iter().map(|m| m.content.len()).sum();
    let mut bytes = body_bytes + 16 * (request.messages.len() + parts + 1);
    if !request.tools.is_empty() {
        bytes += 1_024 + 64 * request.tools.len();
    }
    bytes as u64
}

/// The text bytes of `content`, what the model generated.
fn generated_bytes(content: &[ContentPart]) -> usize {
    content
        .iter()
        .map(|part| match part {
            ContentPart::Text(t) => t.len(),
            ContentPart::ToolUse(t) => t.id.len() + t.name.len() + t.input.len(),
            ContentPart::ToolResult(r) => r.content.len(),
        })
        .sum()
}

/// What [`BoundModel::begin`] sets up for one attempt.
struct CallStart<'m> {
    guard: LeakGuard,
    /// The budget reservation, charged its worst case if the call is
    /// cancelled while in flight.
    hold: Hold<'m>,
    key: Option<Secret>,
}

impl BoundModel {
    /// The binding `name` of agent `agent` as its manifest describes it,
    /// with its fallbacks; checks every field (keys exist and belong to the
    /// provider, URLs are allowed, time limits fit `deadline`).
    pub fn from_manifest(
        agent: &str,
        name: &str,
        spec: &crate::manifest::ModelBinding,
        budget: &BudgetLimits,
        deadline: std::time::Duration,
        services: &Arc<Services>,
    ) -> Result<Self, String> {
        let at = format!("models.{name}");
        let mut targets = vec![Target::from_spec(
            &at,
            &spec.provider,
            &spec.model,
            spec.key.as_deref(),
            spec.base_url.as_deref(),
            spec.allow_http,
            spec.dialect.as_deref(),
            &spec.timeouts,
            deadline,
            services,
        )?];
        if spec.fallbacks.len() > MAX_FALLBACKS {
            return Err(format!(
                "{at}.fallbacks lists {}; at most {MAX_FALLBACKS}",
                spec.fallbacks.len()
            ));
        }
        for (i, fallback) in spec.fallbacks.iter().enumerate() {
            targets.push(Target::from_spec(
                &format!("{at}.fallbacks[{i}]"),
                &fallback.provider,
                &fallback.model,
                fallback.key.as_deref(),
                fallback.base_url.as_deref(),
                fallback.allow_http,
                fallback.dialect.as_deref(),
                &fallback.timeouts,
                deadline,
                services,
            )?);
        }
        // With a USD budget every model of the chain needs a price, known
        // now rather than when the chain first falls back to it.
        if budget.usd_micros_per_day.is_some() || budget.usd_micros_per_month.is_some() {
            for (n, target) in targets.iter().enumerate() {
                if services
                    .prices
                    .price(target.provider.name(), &target.model)
                    .is_none()
                {
                    let at = if n == 0 {
                        at.clone()
                    } else {
                        format!("{at}.fallbacks[{}]", n - 1)
                    };
                    return Err(format!(
                        "{at}.model {:?} has no price, so the agent's USD budget cannot be enforced; add it to prices.toml",
                        target.model
                    ));
                }
            }
        }
        Ok(Self {
            agent: agent.into(),
            binding: name.to_string(),
            targets,
            max_tokens: spec.max_tokens,
            temperature: spec.temperature,
            budget: budget.clone(),
            services: services.clone(),
        })
    }

    /// The binding's own model.
    pub fn primary(&self) -> &Target {
        &self.targets[0]
    }

    fn which(n: usize) -> String {
        if n == 0 {
            String::new()
        } else {
            format!(" (fallback {n})")
        }
    }

    /// The binding's caps, then the rules of every model in the chain.
    fn check_request(&self, request: &CompletionRequest) -> Result<(), InferenceError> {
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
        for (n, target) in self.targets.iter().enumerate() {
            target
                .rules()
                .check(request, &Self::which(n))
                .map_err(InferenceError::InvalidRequest)?;
        }
        Ok(())
    }

    async fn reserve(
        &self,
        target: &Target,
        request: &CompletionRequest,
        body_bytes: usize,
    ) -> Result<(Reservation, u64), InferenceError> {
        let input_bound = input_token_bound(request, body_bytes);
        let output_bound = u64::from(request.max_tokens);
        let price = self
            .services
            .prices
            .price(target.provider.name(), &target.model);
        let cost = match price {
            Some(price) => price.worst_case_micros(input_bound, output_bound),
            None if self.budget.usd_micros_per_day.is_some()
                || self.budget.usd_micros_per_month.is_some() =>
            {
                return Err(InferenceError::BudgetExceeded(format!(
                    "no price is known for model {:?}, so the USD budget cannot be enforced; add one to the price table",
                    target.model
                )));
            }
            None => 0,
        };
        let reservation = self
            .services
            .ledger
            .reserve_shared(&self.agent, &self.budget, input_bound + output_bound, cost)
            .await
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
                BudgetError::Shared(e) => unavailable(format!("the cluster's budgets: {e}")),
            })?;
        Ok((reservation, input_bound))
    }

    /// The start of every attempt: the suspension check, the budget
    /// reservation, the key for this request only, and a guard for it.
    async fn begin(
        &self,
        n: usize,
        request: &CompletionRequest,
        body_bytes: usize,
        call: &CallContext,
    ) -> Result<CallStart<'_>, Failure> {
        self.check_suspended().map_err(Failure::Final)?;
        let target = &self.targets[n];
        let started = Instant::now();
        let (reservation, input_bound) = self
            .reserve(target, request, body_bytes)
            .await
            .map_err(Failure::Final)?;
        let (key, guard) = match self.key(target) {
            Ok(key) => key,
            Err(error) => {
                drop(reservation);
                // Another model of the chain may have a key that works.
                return Err(Failure::Fallback(error));
            }
        };
        Ok(CallStart {
            guard,
            hold: Hold {
                model: self,
                target: n,
                reservation: Some(reservation),
                worst: Tokens::plain(input_bound, u64::from(request.max_tokens)),
                started,
                event_id: call.event_id.clone(),
            },
            key,
        })
    }

    /// The key for this request, and a guard for it (and for its value
    /// before the last rotation).
    fn key(&self, target: &Target) -> Result<(Option<Secret>, LeakGuard), InferenceError> {
        let Some(id) = &target.key_id else {
            return Ok((None, LeakGuard::default()));
        };
        self.services
            .vault
            .secret_and_previous(id, target.provider.name())
            .map(|(key, previous)| {
                let guard = Services::guard_for(target.provider.name(), &key, previous.as_ref());
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

    /// The request body for `target`, as sent.
    fn body(target: &Target, request: &CompletionRequest, stream: bool) -> String {
        match target.provider {
            ProviderKind::Anthropic => anthropic::request_body(&target.model, request, stream),
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                openai::request_body(&target.model, request, stream, target.dialect)
            }
        }
        .to_string()
    }

    /// The usage record of an attempt on model `n`.
    pub(super) fn record(
        &self,
        n: usize,
        tokens: Tokens,
        estimated: bool,
        started: Instant,
        outcome: &str,
        event_id: &str,
    ) -> UsageRecord {
        usage_record(
            &self.services,
            &self.agent,
            &self.binding,
            &self.targets[n],
            n as u32,
            tokens,
            estimated,
            started,
            outcome,
            event_id,
        )
    }

    fn settle(&self, reservation: Reservation, record: &UsageRecord) {
        self.services.ledger.settle(reservation, record);
    }

    /// Settles a failed attempt on model `n`: charged `billed` (the worst
    /// case, marked estimated) when the provider may have done the work,
    /// nothing when it refused; and the error checked for the key before
    /// the guest reads it.
    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        n: usize,
        reservation: Reservation,
        guard: &LeakGuard,
        failure: Failure,
        billed: Option<Tokens>,
        started: Instant,
        event_id: &str,
    ) -> Failure {
        let error = match &failure {
            Failure::Fallback(e) | Failure::Final(e) => e,
        };
        let mut record = self.record(
            n,
            billed.unwrap_or_default(),
            billed.is_some(),
            started,
            outcome_label(error),
            event_id,
        );
        if let Some(worst) = billed {
            record.cost_micros = self.worst_cost(n, &worst);
        }
        self.settle(reservation, &record);
        match check_error(guard, error) {
            Ok(()) => failure,
            Err(leak) => {
                Failure::Final(self.blocked(leak, event_id, self.targets[n].key_id.as_deref()))
            }
        }
    }

    /// What `tokens` can cost at model `n`, whatever part of the input the
    /// provider cached (for charges made without the provider's count).
    pub(super) fn worst_cost(&self, n: usize, tokens: &Tokens) -> u64 {
        let target = &self.targets[n];
        self.services
            .prices
            .price(target.provider.name(), &target.model)
            .map_or(0, |p| p.worst_case_micros(tokens.input, tokens.output))
    }

    /// One unstreamed attempt on model `n`.
    async fn complete_with(
        &self,
        n: usize,
        request: &CompletionRequest,
        call: &Call<'_>,
    ) -> Result<Completion, Failure> {
        let target = &self.targets[n];
        let body = Self::body(target, request, false);
        let CallStart {
            guard,
            mut hold,
            key,
        } = self.begin(n, request, body.len(), call.context).await?;
        let worst = hold.worst;
        let started = hold.started;
        let answer_by = call.answer_by;
        // Whether the provider may have done (and billed) the work: it
        // answered 2xx, or the call timed out after it was sent.
        let mut maybe_billed = false;
        let result: Result<Parsed, Failure> = async {
            let sent = self.send(n, key.as_ref(), &body, &guard, call).await;
            maybe_billed = may_have_run(&sent);
            let (response, _) = sent?;
            let bytes = read_bounded(
                response,
                target.timeouts.idle,
                answer_by,
                http::MAX_RESPONSE_BYTES,
            )
            .await
            .map_err(|e| match e {
                InferenceError::Timeout(kind) => Failure::Fallback(self.timed_out(target, kind)),
                other => Failure::Fallback(other),
            })?;
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|_| Failure::Fallback(upstream(Some(200), "the response is not JSON")))?;
            let parsed = match target.provider {
                ProviderKind::Anthropic => anthropic::parse_response(&value),
                _ => openai::parse_response(&value),
            };
            parsed.map_err(|e| Failure::Fallback(upstream(Some(200), e)))
        }
        .await;
        drop(key);
        let reservation = hold.take();
        match result {
            Ok(parsed) => {
                let max_output = u64::from(request.max_tokens);
                let (tokens, estimated) = match parsed.usage {
                    Some(update) => {
                        let mut tokens = Tokens::default();
                        update.apply_to(&mut tokens);
                        (tokens, false)
                    }
                    None => (
                        Tokens::plain(
                            worst.input,
                            output_token_bound(generated_bytes(&parsed.content), max_output),
                        ),
                        true,
                    ),
                };
                let completion = Completion {
                    model: if parsed.model.is_empty() {
                        target.model.clone()
                    } else {
                        parsed.model
                    },
                    provider: target.provider.name().to_string(),
                    fallback: n as u32,
                    content: parsed.content,
                    stop_reason: parsed.stop_reason,
                    usage: wit_usage(&tokens, estimated),
                };
                let checked = scan_completion(&guard, &completion);
                let label = if checked.is_ok() {
                    "ok"
                } else {
                    "leak-blocked"
                };
                let record = self.record(n, tokens, estimated, started, label, call.event_id());
                self.settle(reservation, &record);
                match checked {
                    Ok(()) => self
                        .check_suspended()
                        .map(|()| completion)
                        .map_err(Failure::Final),
                    Err(leak) => Err(Failure::Final(self.blocked(
                        leak,
                        call.event_id(),
                        target.key_id.as_deref(),
                    ))),
                }
            }
            Err(failure) => Err(self.failed(
                n,
                reservation,
                &guard,
                failure,
                maybe_billed.then_some(worst),
                started,
                call.event_id(),
            )),
        }
    }

    /// One streamed attempt on model `n`: returns once the provider's first
    /// bytes arrived, so a model that never starts can still be replaced by
    /// the next of the chain.
    async fn stream_with(
        &self,
        n: usize,
        request: &CompletionRequest,
        call: &Call<'_>,
    ) -> Result<CompletionEvents, Failure> {
        let target = &self.targets[n];
        let body = Self::body(target, request, true);
        let CallStart {
            guard,
            mut hold,
            key,
        } = self.begin(n, request, body.len(), call.context).await?;
        let worst = hold.worst;
        let started = hold.started;
        let answer_by = call.answer_by;
        let sent = self.send(n, key.as_ref(), &body, &guard, call).await;
        drop(key);
        let first = match sent {
            Ok((mut response, sent_at)) => {
                let (by, kind) = limit(
                    target.timeouts.first_byte.saturating_sub(sent_at.elapsed()),
                    TimeoutKind::FirstByte,
                    answer_by,
                );
                match tokio::time::timeout_at(by.into(), response.chunk()).await {
                    Ok(Ok(Some(chunk))) => Ok((response, chunk)),
                    Ok(Ok(None)) => Err(Failure::Fallback(unavailable(
                        "the stream ended before its first event",
                    ))),
                    Ok(Err(e)) => Err(Failure::Fallback(unavailable(format!(
                        "the stream broke: {}",
                        error_kind(&e)
                    )))),
                    Err(_) => Err(Failure::Fallback(self.timed_out(target, kind))),
                }
            }
            Err(failure) => Err(failure),
        };
        let reservation = hold.take();
        let (response, first) = match first {
            Ok(started_stream) => started_stream,
            Err(failure) => {
                // A timeout may have come after the provider started work.
                let billed = failure_may_have_run(&failure);
                return Err(self.failed(
                    n,
                    reservation,
                    &guard,
                    failure,
                    billed.then_some(worst),
                    started,
                    call.event_id(),
                ));
            }
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let pump = StreamPump {
            model: super::stream::StreamBinding {
                agent: self.agent.clone(),
                binding: self.binding.clone(),
                target: target.clone(),
                fallback: n as u32,
                key_ids: self.key_ids(),
                services: self.services.clone(),
            },
            response,
            first: Some(first),
            answer_by,
            event_id: call.context.event_id.clone(),
            guard,
            reservation,
            worst,
            started,
        };
        tokio::spawn(pump.run(sender));
        Ok(receiver)
    }

    /// The vault key ids of every model in the chain.
    fn key_ids(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter_map(|t| t.key_id.clone())
            .collect()
    }

    /// The per-call context of a chain: the event's, and when the answer
    /// is due.
    fn call<'c>(call: &'c CallContext) -> Call<'c> {
        Call {
            context: call,
            answer_by: answer_by(call.deadline),
        }
    }

    /// Logs the move to the next model of the chain.
    fn falling_back(&self, n: usize, error: &InferenceError) {
        let target = &self.targets[n];
        tracing::warn!(
            agent = %self.agent,
            binding = %self.binding,
            provider = target.provider.name(),
            model = %target.model,
            error = outcome_label(error),
            next = n + 1,
            "model failed; trying the binding's next fallback"
        );
    }

    /// Tries `attempt` on each model of the chain in turn until one
    /// answers, a failure ends the chain, or the time to answer is over.
    async fn along_the_chain<T, F, Fut>(
        &self,
        call: &Call<'_>,
        mut attempt: F,
    ) -> Result<T, InferenceError>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut n = 0;
        loop {
            match attempt(n).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Fallback(error)) if self.may_fall_back(n, call) => {
                    self.falling_back(n, &error);
                    n += 1;
                }
                Err(failure) => return Err(failure.error()),
            }
        }
    }

    /// Whether the chain may go on after model `n` failed.
    fn may_fall_back(&self, n: usize, call: &Call<'_>) -> bool {
        n + 1 < self.targets.len() && Instant::now() + MIN_FALLBACK_TIME < call.answer_by
    }
}

impl Binding for BoundModel {
    fn identity(&self) -> (&Services, &str, &str) {
        (&self.services, &self.agent, &self.binding)
    }

    fn key_ids(&self) -> Vec<&str> {
        self.targets
            .iter()
            .filter_map(|t| t.key_id.as_deref())
            .collect()
    }
}

/// A reservation held across a provider call. Dropped with the call still
/// in flight (the guest's deadline cancelled it), it charges the worst
/// case: the request may have reached the provider, which bills for it.
struct Hold<'m> {
    model: &'m BoundModel,
    target: usize,
    reservation: Option<Reservation>,
    worst: Tokens,
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
            let mut record = self.model.record(
                self.target,
                self.worst,
                true,
                self.started,
                "cancelled",
                &self.event_id,
            );
            record.cost_micros = self.model.worst_cost(self.target, &self.worst);
            self.model.settle(reservation, &record);
        }
    }
}

/// Whether an attempt that ended so may have run at the provider (and be
/// billed): it answered, or timed out after the request was sent. A
/// connect timeout sent nothing.
fn may_have_run<T>(outcome: &Result<T, Failure>) -> bool {
    match outcome {
        Ok(_) => true,
        Err(failure) => failure_may_have_run(failure),
    }
}

/// Whether a failed attempt may have run at the provider: it timed out
/// after the request was sent.
fn failure_may_have_run(failure: &Failure) -> bool {
    matches!(failure, Failure::Fallback(InferenceError::Timeout(kind)) if *kind != TimeoutKind::Connect)
}

#[async_trait::async_trait]
impl ModelBackend for BoundModel {
    fn provider(&self) -> &str {
        self.primary().provider.name()
    }

    fn model(&self) -> &str {
        &self.primary().model
    }

    fn described_model(&self) -> String {
        // Operator configuration, not upstream text, so no guest can steer
        // this check; it only keeps a key pasted into the wrong field out.
        let Ok((_, guard)) = self.key(self.primary()) else {
            return self.primary().model.clone();
        };
        match guard.check(&self.primary().model) {
            Ok(()) => self.primary().model.clone(),
            Err(_) => "[withheld: the configured model id holds the binding's key]".into(),
        }
    }

    async fn complete(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<Completion, InferenceError> {
        // A suspended binding answers every call the same way, valid or not.
        self.check_suspended()?;
        self.check_request(&request)?;
        let call = Self::call(call);
        self.along_the_chain(&call, |n| self.complete_with(n, &request, &call))
            .await
    }

    async fn stream(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<CompletionEvents, InferenceError> {
        self.check_suspended()?;
        self.check_request(&request)?;
        let call = Self::call(call);
        self.along_the_chain(&call, |n| self.stream_with(n, &request, &call))
            .await
    }
}
