//! Normalised streaming increments, and their assembly into the WIT
//! `stream-event`s a guest sees and the finished completion.

use std::collections::BTreeMap;

use crate::bindings::inference::{
    Completion, ContentPart, Error as InferenceError, StopReason, StreamEvent, ToolUse,
    ToolUseStart, Usage,
};
use crate::pricing::Tokens;

/// Token counts a provider reported in one message; `None` leaves a count
/// unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageUpdate {
    /// Every input token, cached or not.
    pub input: Option<u64>,
    /// Output tokens.
    pub output: Option<u64>,
    /// Input tokens read from the prompt cache.
    pub cache_read: Option<u64>,
    /// Input tokens written to the prompt cache.
    pub cache_write: Option<u64>,
    /// The part of `cache_write` written to one-hour entries.
    pub cache_write_1h: Option<u64>,
}

impl UsageUpdate {
    /// Applies the counts this update carries to `tokens`.
    pub(crate) fn apply_to(&self, tokens: &mut Tokens) {
        for (field, value) in [
            (&mut tokens.input, self.input),
            (&mut tokens.output, self.output),
            (&mut tokens.cache_read, self.cache_read),
            (&mut tokens.cache_write, self.cache_write),
            (&mut tokens.cache_write_1h, self.cache_write_1h),
        ] {
            if let Some(value) = value {
                *field = value;
            }
        }
    }
}

/// The WIT usage of `tokens`.
pub(crate) fn wit_usage(tokens: &Tokens, estimated: bool) -> Usage {
    Usage {
        input_tokens: tokens.input,
        output_tokens: tokens.output,
        cache_read_tokens: tokens.cache_read,
        cache_write_tokens: tokens.cache_write,
        estimated,
    }
}

/// One increment of a provider's stream, after its wire format is decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Increment {
    /// The model id the provider reports.
    Model(String),
    /// Text for content part `index`.
    Text {
        /// Part index.
        index: usize,
        /// The text.
        text: String,
    },
    /// A tool use starts at part `index`.
    ToolStart {
        /// Part index.
        index: usize,
        /// Provider id of the tool use.
        id: String,
        /// Tool name.
        name: String,
    },
    /// More JSON input for the tool use at part `index`.
    ToolInput {
        /// Part index.
        index: usize,
        /// A piece of JSON.
        json: String,
    },
    /// Why generation stopped.
    Stop(StopReason),
    /// Token counts.
    Usage(UsageUpdate),
    /// The stream ended normally.
    Done,
}

enum Part {
    Text(String),
    Tool {
        id: String,
        name: String,
        input: String,
    },
}

/// Assembles increments into stream events and a completion.
pub(crate) struct Assembler {
    model: String,
    provider: &'static str,
    fallback: u32,
    parts: BTreeMap<usize, Part>,
    stop: Option<StopReason>,
    tokens: Tokens,
    saw_input: bool,
    saw_output_after_stop: bool,
    deltas: u64,
    generated_bytes: usize,
    done: bool,
}

/// Most content parts a stream may open.
const MAX_PARTS: usize = 256;

impl Assembler {
    /// A new assembler for an answer from `provider`, the binding's model
    /// number `fallback`; `model` is the configured id until the provider
    /// reports one.
    pub fn new(model: &str, provider: &'static str, fallback: u32) -> Self {
        Self {
            model: model.to_string(),
            provider,
            fallback,
            parts: BTreeMap::new(),
            stop: None,
            tokens: Tokens::default(),
            saw_input: false,
            saw_output_after_stop: false,
            deltas: 0,
            generated_bytes: 0,
            done: false,
        }
    }

    /// Token counts so far.
    pub fn tokens(&self) -> Tokens {
        self.tokens
    }

    /// Whether the provider reported the whole usage: input, and output
    /// once generation stopped (Anthropic reports input first and output
    /// at the end; OpenAI both in a last chunk).
    pub(crate) fn usage_reported(&self) -> bool {
        self.saw_input && self.saw_output_after_stop
    }

    /// How many text and tool-input deltas arrived: servers stream about
    /// one token per delta, which makes this the estimate of output tokens
    /// when they report no usage.
    pub fn deltas(&self) -> u64 {
        self.deltas
    }

    /// The bytes of text and tool input generated so far.
    pub(crate) fn generated_bytes(&self) -> usize {
        self.generated_bytes
    }

    /// Ends a stream that stopped without its end marker (`[DONE]`): the
    /// finished completion, when the provider had said why it stopped.
    pub(crate) fn finish_at_end_of_stream(&mut self) -> Option<StreamEvent> {
        if self.done || self.stop.is_none() {
            return None;
        }
        self.done = true;
        Some(StreamEvent::Finished(self.completion()))
    }

    /// Applies one increment; returns the event for the guest, if any.
    pub(crate) fn apply(
        &mut self,
        increment: Increment,
    ) -> Result<Option<StreamEvent>, InferenceError> {
        let opens = match &increment {
            Increment::Text { index, .. } | Increment::ToolStart { index, .. } => {
                !self.parts.contains_key(index)
            }
            _ => false,
        };
        if opens && self.parts.len() >= MAX_PARTS {
            return Err(InferenceError::Provider(
                crate::bindings::types::UpstreamError {
                    status: None,
                    message: format!("the provider opened more than {MAX_PARTS} content parts"),
                },
            ));
        }
        Ok(match increment {
            Increment::Model(model) => {
                self.model = model;
                None
            }
            Increment::Text { index, text } => {
                match self
                    .parts
                    .entry(index)
                    .or_insert_with(|| Part::Text(String::new()))
                {
                    Part::Text(existing) => existing.push_str(&text),
                    Part::Tool { .. } => return Err(mismatch(index)),
                }
                if text.is_empty() {
                    return Ok(None);
                }
                self.deltas += 1;
                self.generated_bytes += text.len();
                Some(StreamEvent::TextDelta(text))
            }
            Increment::ToolStart { index, id, name } => {
                self.parts.insert(
                    index,
                    Part::Tool {
                        id: id.clone(),
                        name: name.clone(),
                        input: String::new(),
                    },
                );
                Some(StreamEvent::ToolUseStart(ToolUseStart { id, name }))
            }
            Increment::ToolInput { index, json } => {
                match self.parts.get_mut(&index) {
                    Some(Part::Tool { input, .. }) => input.push_str(&json),
                    _ => return Err(mismatch(index)),
                }
                if json.is_empty() {
                    return Ok(None);
                }
                self.deltas += 1;
                self.generated_bytes += json.len();
                Some(StreamEvent::ToolUseInputDelta(json))
            }
            Increment::Stop(reason) => {
                self.stop = Some(reason);
                None
            }
            Increment::Usage(update) => {
                update.apply_to(&mut self.tokens);
                self.saw_input |= update.input.is_some();
                self.saw_output_after_stop |= update.output.is_some() && self.stop.is_some();
                None
            }
            Increment::Done => {
                self.done = true;
                Some(StreamEvent::Finished(self.completion()))
            }
        })
    }

    /// The completion assembled so far.
    pub fn completion(&self) -> Completion {
        let content = self
            .parts
            .values()
            .filter_map(|part| match part {
                Part::Text(text) if text.is_empty() => None,
                Part::Text(text) => Some(ContentPart::Text(text.clone())),
                Part::Tool { id, name, input } => Some(ContentPart::ToolUse(ToolUse {
                    id: id.clone(),
                    name: name.clone(),
                    input: if input.trim().is_empty() {
                        "{}".to_string()
                    } else {
                        input.clone()
                    },
                })),
            })
            .collect();
        Completion {
            model: self.model.clone(),
            provider: self.provider.to_string(),
            fallback: self.fallback,
            content,
            stop_reason: self.stop.unwrap_or(StopReason::EndTurn),
            usage: wit_usage(&self.tokens, !self.usage_reported()),
        }
    }
}

fn mismatch(index: usize) -> InferenceError {
    InferenceError::Provider(crate::bindings::types::UpstreamError {
        status: None,
        message: format!("the provider's stream mixed text and tool input in part {index}"),
    })
}
