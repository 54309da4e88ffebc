//! One model's HTTP exchange: sending a request within the model's time
//! limits, with retries that honour `retry-after`, turning an error answer
//! into the guest's error (checked for the key before any of it is
//! quoted), and reading a bounded body.

use std::time::Instant;

use serde_json::Value;

use super::binding::{Binding, ProviderKind};
use super::call::{error_kind, read_bounded, unavailable, upstream};
use super::http;
use super::model::{BoundModel, Call, Failure};
use super::target::{Target, limit};
use crate::bindings::inference::{Error as InferenceError, TimeoutKind};
use crate::bindings::types::RateLimit;
use crate::leak::{LeakDetected, LeakGuard};
use crate::secret::Secret;

/// The most of an error response that is read (and checked for the key).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The most of an error message that is quoted to the guest.
pub(crate) const MAX_ERROR_MESSAGE_BYTES: usize = 512;

impl BoundModel {
    /// Logs a timeout (the guest gets it as `timeout(kind)`) and returns it.
    pub(super) fn timed_out(&self, target: &Target, kind: TimeoutKind) -> InferenceError {
        tracing::warn!(
            agent = %self.agent,
            binding = %self.binding,
            provider = target.provider.name(),
            model = %target.model,
            url = %target.shown_url(),
            limit = ?kind,
            "model call timed out"
        );
        InferenceError::Timeout(kind)
    }

    /// Sends with retries until an answer, a failure, or the time to
    /// answer. With a fallback after this model, a retryable answer moves
    /// on at once instead of retrying. Returns the response and when the
    /// request that got it was sent.
    pub(super) async fn send(
        &self,
        n: usize,
        key: Option<&Secret>,
        body: &str,
        guard: &LeakGuard,
        call: &Call<'_>,
    ) -> Result<(reqwest::Response, Instant), Failure> {
        let target = &self.targets[n];
        let answer_by = call.answer_by;
        let max_attempts = if n + 1 < self.targets.len() {
            1
        } else {
            http::MAX_ATTEMPTS
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = target.http_request(key, body).map_err(Failure::Final)?;
            let sent = Instant::now();
            let (by, kind) = limit(
                target.timeouts.first_byte,
                TimeoutKind::FirstByte,
                answer_by,
            );
            let outcome = match tokio::time::timeout_at(by.into(), request.send()).await {
                Err(_) => return Err(Failure::Fallback(self.timed_out(target, kind))),
                Ok(outcome) => outcome,
            };
            let (error, server_wait) = match outcome {
                Ok(response) if response.status().is_success() => {
                    let status = response.status();
                    return match crate::outbound::unreadable_body(status, response.headers()) {
                        Some(refused) => {
                            Err(Failure::Final(upstream(Some(status.as_u16()), refused)))
                        }
                        None => Ok((response, sent)),
                    };
                }
                Ok(response) => {
                    let status = response.status();
                    let wait = http::retry_after(response.headers());
                    let error = self
                        .error_from(target, response, answer_by, guard)
                        .await
                        .map_err(|leak| {
                            Failure::Final(self.blocked(
                                leak,
                                call.event_id(),
                                target.key_id.as_deref(),
                            ))
                        })?;
                    if !http::retryable(status) {
                        // A server error, a key this provider will not take, or
                        // a model it does not have (OpenAI answers 404 for a
                        // retired model): another model of the chain may do
                        // better. A bad request would be bad for all of them.
                        return Err(
                            if status.is_server_error()
                                || matches!(status.as_u16(), 401 | 403 | 404)
                            {
                                Failure::Fallback(error)
                            } else {
                                Failure::Final(error)
                            },
                        );
                    }
                    if attempt >= max_attempts {
                        return Err(Failure::Fallback(error));
                    }
                    (error, wait)
                }
                Err(e) if e.is_connect() && e.is_timeout() => {
                    let error = self.timed_out(target, TimeoutKind::Connect);
                    if attempt >= max_attempts {
                        return Err(Failure::Fallback(error));
                    }
                    (error, None)
                }
                Err(e) => {
                    // The URL goes to the operator's log, not to the guest:
                    // it names internal hosts, and a gateway may keep a
                    // token in its path.
                    tracing::warn!(
                        agent = %self.agent,
                        binding = %self.binding,
                        url = %target.shown_url(),
                        error = error_kind(&e),
                        "cannot reach the model's server"
                    );
                    let error = unavailable(format!(
                        "cannot reach {} (model {:?}): {}",
                        target.provider.name(),
                        target.model,
                        error_kind(&e)
                    ));
                    if attempt >= max_attempts || !e.is_connect() {
                        return Err(Failure::Fallback(error));
                    }
                    (error, None)
                }
            };
            let wait = http::backoff(attempt, server_wait);
            if !http::fits(wait, answer_by) {
                return Err(Failure::Fallback(error));
            }
            tracing::debug!(agent = %self.agent, binding = %self.binding, attempt, wait_ms = wait.as_millis() as u64, "retrying provider call");
            tokio::time::sleep(wait).await;
        }
    }

    /// Turns an error response into the guest's error, reading a bounded
    /// body. The whole body is checked for the key before any of it is
    /// quoted, whatever its content type, and the quote is cut only after.
    pub(super) async fn error_from(
        &self,
        target: &Target,
        response: reqwest::Response,
        answer_by: Instant,
        guard: &LeakGuard,
    ) -> Result<InferenceError, LeakDetected> {
        let status = response.status();
        let wait = http::retry_after(response.headers());
        // A body in an encoding nobody asked for is not quoted at all.
        let readable = crate::outbound::unreadable_body(status, response.headers()).is_none();
        let body = if readable {
            read_bounded(
                response,
                target.timeouts.idle,
                answer_by,
                MAX_ERROR_BODY_BYTES,
            )
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
            crate::text::truncate_at_char_boundary(&message, MAX_ERROR_MESSAGE_BYTES).to_string();
        let code = status.as_u16();
        Ok(match code {
            429 => InferenceError::RateLimited(RateLimit {
                retry_after_ms: wait.map(|w| w.as_millis() as u64),
                message,
            }),
            400 | 413 | 422 => InferenceError::InvalidRequest(format!(
                "the provider refused the request: {message}"
            )),
            // A wrong path or a model the server does not have: the
            // operator's log names the URL that was called.
            404 | 405 => {
                tracing::warn!(
                    agent = %self.agent,
                    binding = %self.binding,
                    url = %target.shown_url(),
                    status = code,
                    "the model's server answered {code}: check base_url (the API root, such as https://api.openai.com/v1) and the model id"
                );
                upstream(
                    Some(code),
                    format!(
                        "POST …{} answered {code} for model {:?}: the operator's base_url or model id is wrong (the host's log has the URL): {message}",
                        match target.provider {
                            ProviderKind::Anthropic => "/messages",
                            _ => "/chat/completions",
                        },
                        target.model
                    ),
                )
            }
            529 | 503 => unavailable(format!(
                "{} is overloaded (HTTP {code}): {message}",
                target.provider.name()
            )),
            _ => upstream(Some(code), message),
        })
    }
}
