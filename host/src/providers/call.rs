//! The pieces of one model call that its exchange, its stream and its
//! chain all use: the guest's error values, reading a bounded body within
//! the time limits, and the usage record of an attempt.

use std::time::Instant;

use super::binding::Services;
use super::target::Target;
use crate::bindings::inference::{Error as InferenceError, TimeoutKind};
use crate::bindings::types::UpstreamError;
use crate::ledger::UsageRecord;
use crate::pricing::Tokens;

pub(super) fn upstream(status: Option<u16>, message: impl Into<String>) -> InferenceError {
    InferenceError::Provider(UpstreamError {
        status,
        message: message.into(),
    })
}

pub(super) fn unavailable(message: impl Into<String>) -> InferenceError {
    InferenceError::Unavailable(message.into())
}

/// The output tokens of an answer whose server counted none: an upper
/// bound, as for input (a token is at least a byte of text, plus one for
/// the end of the answer), at most `max`.
pub(super) fn output_token_bound(bytes: usize, max: u64) -> u64 {
    (bytes as u64 + 1).min(max)
}

/// The usage record of one attempt on `target`, model `fallback` of the
/// binding's chain, priced at that model's rates.
#[allow(clippy::too_many_arguments)]
pub(super) fn usage_record(
    services: &Services,
    agent: &str,
    binding: &str,
    target: &Target,
    fallback: u32,
    tokens: Tokens,
    estimated: bool,
    started: Instant,
    outcome: &str,
    event_id: &str,
) -> UsageRecord {
    let cost = services
        .prices
        .price(target.provider.name(), &target.model)
        .map_or(0, |p| p.cost(&tokens));
    UsageRecord {
        agent: agent.to_string(),
        binding: binding.to_string(),
        provider: target.provider.name().to_string(),
        model: target.model.clone(),
        key_id: target.key_id.clone(),
        input_tokens: tokens.input,
        output_tokens: tokens.output,
        cache_read_tokens: tokens.cache_read,
        cache_write_tokens: tokens.cache_write,
        estimated,
        fallback,
        cost_micros: cost,
        latency_ms: started.elapsed().as_millis() as u64,
        outcome: outcome.to_string(),
        event_id: Some(event_id.to_string()),
    }
}

pub(super) use crate::outbound::error_kind;

/// Reads a whole body of at most `max` bytes, with `idle` between chunks
/// and everything by `answer_by` ([`crate::outbound::read_bounded`]).
pub(super) async fn read_bounded(
    response: reqwest::Response,
    idle: std::time::Duration,
    answer_by: Instant,
    max: usize,
) -> Result<Vec<u8>, InferenceError> {
    use crate::outbound::{ReadError, ReadLimits};
    let limits = ReadLimits {
        max,
        idle: Some(idle),
        by: Some(answer_by),
    };
    crate::outbound::read_bounded(response, limits)
        .await
        .map_err(|e| match e {
            ReadError::Idle => InferenceError::Timeout(TimeoutKind::Idle),
            ReadError::Deadline => InferenceError::Timeout(TimeoutKind::Deadline),
            ReadError::TooLarge(_) => upstream(None, e.to_string()),
            ReadError::Failed(kind) => unavailable(format!("reading the response: {kind}")),
        })
}
