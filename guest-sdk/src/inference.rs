//! Models the operator bound to this agent.
//!
//! ```ignore
//! let model = Model::open("default")?;
//! let request = CompletionRequest::new()
//!     .system("You label GitHub issues.")
//!     .user("The app crashes when I click save")
//!     .max_tokens(200);
//! let completion = model.complete(&request)?;
//! info!("{} ({} tokens out)", completion.text(), completion.usage.output_tokens);
//! ```

pub use crate::errors::InferenceError;
use crate::wit::clawcage::agent::inference as wit;

pub use wit::{
    CacheTtl, Completion, CompletionRequest, ContentPart, Message, ModelInfo, Role, StopReason,
    StreamEvent, ToolChoice, ToolResult, ToolSpec, ToolUse, ToolUseStart, Usage,
};

/// The `max-tokens` of a new [`CompletionRequest`].
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// A model binding opened by name: the capability to run completions on the
/// model, through the key, that the operator chose.
#[derive(Debug)]
pub struct Model(wit::Model);

impl Model {
    /// Opens the binding `binding` (for example `"default"`). Fails with
    /// [`InferenceError::NotGranted`] when the operator bound no such name.
    pub fn open(binding: &str) -> Result<Self, InferenceError> {
        wit::Model::open(binding).map(Self).map_err(Into::into)
    }

    /// The binding, provider and model id (never a key).
    pub fn describe(&self) -> ModelInfo {
        self.0.describe()
    }

    /// Runs `request` and waits for the whole completion.
    pub fn complete(&self, request: &CompletionRequest) -> Result<Completion, InferenceError> {
        self.0.complete(request).map_err(Into::into)
    }

    /// Runs `request`, yielding increments as they arrive; the last one is
    /// [`StreamEvent::Finished`] with the assembled completion.
    pub fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, InferenceError> {
        self.0
            .stream(request)
            .map(|inner| CompletionStream { inner, done: false })
            .map_err(Into::into)
    }
}

/// The increments of a streamed completion, as an iterator.
#[derive(Debug)]
pub struct CompletionStream {
    inner: wit::CompletionStream,
    done: bool,
}

impl Iterator for CompletionStream {
    type Item = Result<StreamEvent, InferenceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.inner.next() {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error.into()))
            }
        }
    }
}

impl CompletionStream {
    /// Drains the stream and returns the finished completion.
    pub fn finish(mut self) -> Result<Completion, InferenceError> {
        let mut finished = None;
        for event in self.by_ref() {
            if let StreamEvent::Finished(completion) = event? {
                finished = Some(completion);
            }
        }
        finished.ok_or_else(|| {
            InferenceError::Unavailable("the stream ended without a completion".into())
        })
    }
}

impl Default for CompletionRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl CompletionRequest {
    /// An empty request: no system prompt, no messages, `max-tokens` 1024,
    /// the provider's default temperature, no tools.
    pub fn new() -> Self {
        Self {
            system: None,
            system_cache: None,
            messages: Vec::new(),
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: None,
            stop_sequences: Vec::new(),
            tools: Vec::new(),
            tool_choice: None,
        }
    }

    /// Sets the system prompt.
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Marks the system prompt (with the tools before it) as a prompt-cache
    /// breakpoint; see [`Message::cached`].
    pub fn cache_system(mut self, ttl: CacheTtl) -> Self {
        self.system_cache = Some(ttl);
        self
    }

    /// Marks the last message so far as a prompt-cache breakpoint: the
    /// provider may cache the prompt up to it and bill later reads at its
    /// cached rate. Anthropic takes up to 4 breakpoints per request; OpenAI
    /// caches long prefixes by itself.
    pub fn cache_here(mut self, ttl: CacheTtl) -> Self {
        if let Some(last) = self.messages.last_mut() {
            last.cache = Some(ttl);
        }
        self
    }

    /// Appends a user message with text.
    pub fn user(mut self, text: impl Into<String>) -> Self {
        self.messages.push(Message::user(text));
        self
    }

    /// Appends an assistant message with text.
    pub fn assistant(mut self, text: impl Into<String>) -> Self {
        self.messages.push(Message::assistant(text));
        self
    }

    /// Appends a message.
    pub fn message(mut self, message: Message) -> Self {
        self.messages.push(message);
        self
    }

    /// Sets `max-tokens`.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets the temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Adds a stop sequence.
    pub fn stop_sequence(mut self, stop: impl Into<String>) -> Self {
        self.stop_sequences.push(stop.into());
        self
    }

    /// Offers a tool to the model.
    pub fn tool(mut self, tool: ToolSpec) -> Self {
        self.tools.push(tool);
        self
    }

    /// Sets how the model may use tools.
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }
}

impl Message {
    /// A user message with text.
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![ContentPart::Text(text.into())],
            cache: None,
        }
    }

    /// An assistant message with text.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: vec![ContentPart::Text(text.into())],
            cache: None,
        }
    }

    /// A user message carrying tool results.
    pub fn tool_results(results: impl IntoIterator<Item = ToolResult>) -> Self {
        Self {
            role: Role::User,
            content: results.into_iter().map(ContentPart::ToolResult).collect(),
            cache: None,
        }
    }

    /// This message, marked as a prompt-cache breakpoint.
    pub fn cached(mut self, ttl: CacheTtl) -> Self {
        self.cache = Some(ttl);
        self
    }
}

impl ToolSpec {
    /// A tool with a JSON-schema input.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: &serde_json::Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema: input_schema.to_string(),
            cache: None,
        }
    }

    /// This tool, marked as a prompt-cache breakpoint: the tool definitions
    /// up to and including it may be cached.
    pub fn cached(mut self, ttl: CacheTtl) -> Self {
        self.cache = Some(ttl);
        self
    }
}

impl Completion {
    /// All text parts, joined.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The tool uses the model asked for, in order.
    pub fn tool_uses(&self) -> impl Iterator<Item = &ToolUse> {
        self.content.iter().filter_map(|part| match part {
            ContentPart::ToolUse(tool_use) => Some(tool_use),
            _ => None,
        })
    }

    /// The assistant message to append to the conversation to continue it.
    pub fn to_message(&self) -> Message {
        Message {
            role: Role::Assistant,
            content: self.content.clone(),
            cache: None,
        }
    }
}

impl ToolUse {
    /// Deserializes the tool's input.
    pub fn input<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.input)
    }
}
