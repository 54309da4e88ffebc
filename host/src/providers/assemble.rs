//! Normalised streaming increments, and their assembly into the WIT
//! `stream-event`s a guest sees and the finished completion.

use std::collections::BTreeMap;

use crate::bindings::inference::{
    Completion, ContentPart, Error as InferenceError, StopReason, StreamEvent, ToolUse,
    ToolUseStart, Usage,
};

/// One increment of a provider's stream, after its wire format is decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Increment {
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
    /// Token counts; `None` leaves a count unchanged.
    Usage {
        /// Input tokens.
        input: Option<u64>,
        /// Output tokens.
        output: Option<u64>,
    },
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
pub struct Assembler {
    model: String,
    parts: BTreeMap<usize, Part>,
    stop: StopReason,
    usage: Usage,
    done: bool,
}

/// Most content parts a stream may open.
const MAX_PARTS: usize = 256;

impl Assembler {
    /// A new assembler; `model` is the configured id until the provider
    /// reports one.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            parts: BTreeMap::new(),
            stop: StopReason::EndTurn,
            usage: Usage {
                input_tokens: 0,
                output_tokens: 0,
            },
            done: false,
        }
    }

    /// Whether `Done` was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Token counts so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Applies one increment; returns the event for the guest, if any.
    pub fn apply(&mut self, increment: Increment) -> Result<Option<StreamEvent>, InferenceError> {
        if self.parts.len() > MAX_PARTS {
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
                (!text.is_empty()).then_some(StreamEvent::TextDelta(text))
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
                (!json.is_empty()).then_some(StreamEvent::ToolUseInputDelta(json))
            }
            Increment::Stop(reason) => {
                self.stop = reason;
                None
            }
            Increment::Usage { input, output } => {
                if let Some(input) = input {
                    self.usage.input_tokens = input;
                }
                if let Some(output) = output {
                    self.usage.output_tokens = output;
                }
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
            content,
            stop_reason: self.stop,
            usage: self.usage,
        }
    }
}

fn mismatch(index: usize) -> InferenceError {
    InferenceError::Provider(crate::bindings::types::UpstreamError {
        status: None,
        message: format!("the provider's stream mixed text and tool input in part {index}"),
    })
}
