//! The pieces of one model call that its exchange, its stream and its
//! chain all use: the guest's error values, reading a bounded body within
//! the time limits, and the usage record of an attempt.

use std::time::Instant;

use super::binding::Services;
use super::target::{Target, limit};
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

pub(super) fn error_kind(error: &reqwest::Error) -> &'static str {
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

/// Reads a whole body of at most `max` bytes, with `idle` between chunks
/// and everything by `answer_by`.
pub(super) async fn read_bounded(
    mut response: reqwest::Response,
    idle: std::time::Duration,
    answer_by: Instant,
    max: usize,
) -> Result<Vec<u8>, InferenceError> {
    let mut body = Vec::new();
    loop {
        let (by, kind) = limit(idle, TimeoutKind::Idle, answer_by);
        match tokio::time::timeout_at(by.into(), response.chunk()).await {
            Err(_) => return Err(InferenceError::Timeout(kind)),
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
