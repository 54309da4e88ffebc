//! A streamed completion's background task: reads the provider's event
//! stream within the target's idle limit, decodes it, passes every piece
//! the guest will see through the leak guard, and settles the budget when
//! the stream ends.
//!
//! What reaches the guest, in order: text deltas (the last
//! [`crate::leak::STREAM_HOLD_BYTES`] always held back until more text or
//! the end of the part), tool-use starts, each tool's input whole when its
//! part ends, and the finished completion. When the stream fails — a
//! timeout, a broken connection, a provider's error event — what was
//! already delivered stays delivered, the held text follows, and then the
//! error.

use std::sync::Arc;
use std::time::Instant;

use super::assemble::{Assembler, Increment, wit_usage};
use super::binding::{Binding, Services, check_error, error_text, outcome_label, scan_completion};
use super::call::{error_kind, output_token_bound, unavailable, upstream, usage_record};
use super::sse::SseParser;
use super::target::{Target, limit};
use super::{anthropic, openai};
use crate::bindings::inference::{Error as InferenceError, StreamEvent, TimeoutKind};
use crate::bindings::types::RateLimit;
use crate::leak::{HeldText, LeakDetected, LeakGuard, Scanner};
use crate::ledger::Reservation;
use crate::pricing::Tokens;

/// What a stream's task keeps of its binding.
pub(super) struct StreamBinding {
    pub(super) agent: Arc<str>,
    pub(super) binding: String,
    pub(super) target: Target,
    pub(super) fallback: u32,
    pub(super) key_ids: Vec<String>,
    pub(super) services: Arc<Services>,
}

impl Binding for StreamBinding {
    fn identity(&self) -> (&Services, &str, &str) {
        (&self.services, &self.agent, &self.binding)
    }

    fn key_ids(&self) -> Vec<&str> {
        self.key_ids.iter().map(String::as_str).collect()
    }
}

/// The task that reads one stream.
pub(super) struct StreamPump {
    /// The binding, as far as the stream needs it.
    pub(super) model: StreamBinding,
    /// The provider's response, headers read.
    pub(super) response: reqwest::Response,
    /// The body's first chunk, read before the stream was handed over.
    pub(super) first: Option<bytes::Bytes>,
    /// When the stream must be over (see [`super::target::answer_by`]).
    pub(super) answer_by: Instant,
    /// The event, for records.
    pub(super) event_id: Arc<str>,
    /// The guard for the key the request carried.
    pub(super) guard: LeakGuard,
    /// The budget reservation, settled when the stream ends.
    pub(super) reservation: Reservation,
    /// The request's worst case (input bound, max-tokens).
    pub(super) worst: Tokens,
    /// When the attempt started.
    pub(super) started: Instant,
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

/// Hands `event` to the guest's side; false when the guest is gone or did
/// not take it by `answer_by` (a guest that holds a stream without reading
/// it must not keep the connection and the reservation beyond its event).
async fn deliver(
    sender: &tokio::sync::mpsc::Sender<Result<StreamEvent, InferenceError>>,
    event: Result<StreamEvent, InferenceError>,
    answer_by: Instant,
) -> bool {
    matches!(
        tokio::time::timeout_at(answer_by.into(), sender.send(event)).await,
        Ok(Ok(()))
    )
}

/// Decodes one stream's events in its provider's format.
enum Decoder {
    Anthropic,
    OpenAi(openai::ChunkDecoder),
}

impl Decoder {
    fn decode(&mut self, data: &str) -> Result<Vec<Increment>, InferenceError> {
        match self {
            Self::Anthropic => {
                anthropic::parse_event(data).map_err(|(kind, message)| match kind.as_str() {
                    "overloaded_error" => {
                        unavailable(format!("anthropic is overloaded: {message}"))
                    }
                    "rate_limit_error" => InferenceError::RateLimited(RateLimit {
                        retry_after_ms: None,
                        message,
                    }),
                    _ => upstream(None, message),
                })
            }
            Self::OpenAi(decoder) => decoder
                .decode(data)
                .map_err(|message| upstream(None, message)),
        }
    }
}

impl StreamPump {
    /// The next chunk of the body, within the idle limit.
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, InferenceError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let (by, kind) = limit(
            self.model.target.timeouts.idle,
            TimeoutKind::Idle,
            self.answer_by,
        );
        match tokio::time::timeout_at(by.into(), self.response.chunk()).await {
            Err(_) => Err(InferenceError::Timeout(kind)),
            Ok(Err(e)) => Err(unavailable(format!("the stream broke: {}", error_kind(&e)))),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    pub(super) async fn run(
        mut self,
        sender: tokio::sync::mpsc::Sender<Result<StreamEvent, InferenceError>>,
    ) {
        let target = self.model.target.clone();
        let mut parser = SseParser::new();
        let mut decoder = match target.provider {
            super::binding::ProviderKind::Anthropic => Decoder::Anthropic,
            _ => Decoder::OpenAi(openai::ChunkDecoder::new()),
        };
        let mut assembler =
            Assembler::new(&target.model, target.provider.name(), self.model.fallback);
        let mut guarded = GuardedStream {
            guard: self.guard.clone(),
            scanner: self.guard.scanner(),
            text: HeldText::default(),
            tool_json: String::new(),
        };
        let mut leak = None;
        let max_output = self.worst.output;
        let input_bound = self.worst.input;
        // Token counts for the finished completion: the provider's, or an
        // estimate marked as one.
        // Token counts for the finished completion: the provider's, or
        // upper bounds (the request's bytes, the answer's) marked as
        // estimates.
        let settle_usage = |assembler: &Assembler| -> (Tokens, bool) {
            if assembler.usage_reported() {
                (assembler.tokens(), false)
            } else {
                let mut tokens = assembler.tokens();
                if tokens.input == 0 {
                    tokens.input = input_bound;
                }
                let generated = output_token_bound(assembler.generated_bytes(), max_output);
                tokens.output = tokens
                    .output
                    .max(assembler.deltas().min(max_output))
                    .max(generated);
                (tokens, true)
            }
        };
        let outcome: Result<(), InferenceError> = 'pump: loop {
            let chunk = tokio::select! {
                // The guest dropped the stream, or its event ended.
                () = sender.closed() => break Err(InferenceError::Timeout(TimeoutKind::Deadline)),
                read = self.next_chunk() => match read {
                    Err(error) => break Err(error),
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => {
                        // The end without `[DONE]` (or `message_stop`): a
                        // complete answer if the provider had said why it
                        // stopped, a cut one otherwise.
                        match assembler.finish_at_end_of_stream() {
                            Some(StreamEvent::Finished(mut completion)) => {
                                completion.usage = {
                                    let (tokens, estimated) = settle_usage(&assembler);
                                    wit_usage(&tokens, estimated)
                                };
                                match guarded.admit(StreamEvent::Finished(completion)) {
                                    Ok(out) => {
                                        if let Err(suspended) = self.model.check_suspended() {
                                            break 'pump Err(suspended);
                                        }
                                        for event in out {
                                            if !deliver(&sender, Ok(event), self.answer_by).await {
                                                break 'pump Err(InferenceError::Timeout(TimeoutKind::Deadline));
                                            }
                                        }
                                        break 'pump Ok(());
                                    }
                                    Err(detected) => {
                                        leak = Some(detected);
                                        break 'pump Ok(());
                                    }
                                }
                            }
                            _ => break Err(unavailable("the stream ended before the completion finished")),
                        }
                    }
                },
            };
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(e) => break Err(upstream(None, e)),
            };
            for event in events {
                let increments = match decoder.decode(&event.data) {
                    Ok(increments) => increments,
                    Err(error) => break 'pump Err(error),
                };
                for increment in increments {
                    let guest_event = match assembler.apply(increment) {
                        Ok(Some(StreamEvent::Finished(mut completion))) => {
                            let (tokens, estimated) = settle_usage(&assembler);
                            completion.usage = wit_usage(&tokens, estimated);
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
                        if !deliver(&sender, Ok(event), self.answer_by).await {
                            break 'pump Err(InferenceError::Timeout(TimeoutKind::Deadline));
                        }
                    }
                    if finished {
                        // Nothing follows the finished completion.
                        break 'pump Ok(());
                    }
                }
            }
        };
        // Charge what the provider counted; without its count, an estimate
        // from the request and the deltas, marked. A stream that failed
        // midway may have generated more than arrived (up to max-tokens),
        // which is charged.
        let (tokens, estimated) = match (&outcome, &leak) {
            (Ok(()), _) => settle_usage(&assembler),
            _ => {
                let mut tokens = assembler.tokens();
                if tokens.input == 0 {
                    tokens.input = input_bound;
                }
                tokens.output = max_output;
                (tokens, true)
            }
        };
        let label = match (&outcome, &leak) {
            (_, Some(_)) => "leak-blocked",
            (Ok(()), None) => "ok",
            (Err(error), None) => outcome_label(error),
        };
        if let (Err(InferenceError::Timeout(kind)), None) = (&outcome, &leak) {
            tracing::warn!(
                agent = %self.model.agent,
                binding = %self.model.binding,
                provider = target.provider.name(),
                model = %target.model,
                url = %target.shown_url(),
                limit = ?kind,
                "model stream timed out; the deltas so far were delivered"
            );
        }
        let record = usage_record(
            &self.model.services,
            &self.model.agent,
            &self.model.binding,
            &target,
            self.model.fallback,
            tokens,
            estimated,
            self.started,
            label,
            &self.event_id,
        );
        self.model.services.ledger.settle(self.reservation, &record);
        let error = match (outcome, leak) {
            (_, Some(detected)) => Some(self.model.blocked(
                detected,
                &self.event_id,
                self.model.target.key_id.as_deref(),
            )),
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
                            let _ = deliver(&sender, Ok(event), self.answer_by).await;
                        }
                        Some(error)
                    }
                    Err(detected) => Some(self.model.blocked(
                        detected,
                        &self.event_id,
                        self.model.target.key_id.as_deref(),
                    )),
                }
            }
        };
        if let Some(error) = error {
            let _ = deliver(&sender, Err(error), self.answer_by).await;
        }
    }
}
