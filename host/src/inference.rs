//! The `inference` capability: a guest opens a model binding by name and
//! gets an unforgeable handle; the host holds the provider, the model id and
//! the key.
//!
//! Deny by default ([`InferenceCtx::default`]):
//! - no bindings, so `model.open(..)` answers `not-granted` for every name;
//! - the guest never names a URL, a header or a key: a binding is the only
//!   thing it can ask for, and only the operator creates bindings.
//!
//! Every request is validated here, at the door, before a backend sees it:
//! sizes, counts, names and JSON are bounded (`MAX_*` below) and a bad field is
//! answered with `invalid-request` naming the field.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::inference::{
    CompletionRequest, ContentPart, Error as InferenceError, Host, HostCompletionStream, HostModel,
    ModelInfo, Role, StreamEvent, ToolChoice,
};

pub use crate::bindings::inference::Completion;

/// Longest binding name a guest may pass to `model.open`.
pub(crate) const MAX_BINDING_NAME_BYTES: usize = 64;
/// Most models and streams one invocation may hold open at once; stops a
/// guest from filling the host's resource table.
pub const MAX_OPEN_HANDLES: usize = 64;
/// Most messages in one request.
pub(crate) const MAX_MESSAGES: usize = 2_000;
/// Most tools in one request.
pub(crate) const MAX_TOOLS: usize = 128;
/// Most stop sequences in one request.
pub(crate) const MAX_STOP_SEQUENCES: usize = 16;
/// Longest stop sequence.
pub(crate) const MAX_STOP_SEQUENCE_BYTES: usize = 256;
/// Longest tool name (the providers' own limit is 64).
pub(crate) const MAX_TOOL_NAME_BYTES: usize = 64;
/// Total text in one request (prompts, tool specs, tool inputs and results).
pub(crate) const MAX_REQUEST_BYTES: usize = 8 << 20;

/// A stream of completion increments produced by a [`ModelBackend`]. The
/// last item of a successful stream is [`StreamEvent::Finished`].
pub type CompletionEvents = tokio::sync::mpsc::Receiver<Result<StreamEvent, InferenceError>>;

/// What a backend knows about the call it serves.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The event's deadline: retries, waits and streams end by then.
    pub deadline: std::time::Instant,
    /// The event's id, for logs.
    pub event_id: Arc<str>,
}

/// A model that the operator bound for an agent: a provider, a model id and a
/// key the host holds. Providers implement this; the guest only ever sees the
/// [`ModelInfo`].
#[async_trait::async_trait]
pub trait ModelBackend: Send + Sync + 'static {
    /// The provider kind (`anthropic`, `openai`, `openai-compatible`, …).
    fn provider(&self) -> &str;
    /// The model id the operator configured.
    fn model(&self) -> &str;
    /// The model id as `describe()` shows it to the guest: the configured
    /// one, unless it holds the binding's own key (then a placeholder).
    fn described_model(&self) -> String {
        self.model().to_string()
    }
    /// Runs a validated request to completion.
    async fn complete(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<Completion, InferenceError>;
    /// Runs a validated request as a stream.
    async fn stream(
        &self,
        request: CompletionRequest,
        call: &CallContext,
    ) -> Result<CompletionEvents, InferenceError>;
}

/// The model bindings granted to one agent, by binding name. Shared by all
/// invocations of the agent.
pub type ModelBindings = BTreeMap<String, Arc<dyn ModelBackend>>;

/// Per-invocation state of the `inference` capability.
pub(crate) struct InferenceCtx {
    bindings: Arc<ModelBindings>,
    open_handles: usize,
    call: CallContext,
}

impl Default for InferenceCtx {
    fn default() -> Self {
        Self::new(
            Arc::default(),
            CallContext {
                deadline: std::time::Instant::now() + crate::limits::DEFAULT_DEADLINE,
                event_id: "".into(),
            },
        )
    }
}

impl std::fmt::Debug for InferenceCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceCtx")
            .field("bindings", &self.bindings.keys().collect::<Vec<_>>())
            .field("open_handles", &self.open_handles)
            .finish()
    }
}

impl InferenceCtx {
    /// A context granting exactly `bindings`, for a call with `call`'s
    /// deadline.
    pub fn new(bindings: Arc<ModelBindings>, call: CallContext) -> Self {
        Self {
            bindings,
            open_handles: 0,
            call,
        }
    }
}

/// The guest's handle to an opened binding.
pub struct ModelHandle {
    binding: String,
    backend: Arc<dyn ModelBackend>,
}

/// The guest's handle to a running streamed completion.
pub struct CompletionStreamHandle {
    events: CompletionEvents,
    finished: bool,
}

/// What the `inference` host functions operate on: the capability's own
/// state and the store's resource table.
pub(crate) struct InferenceView<'a> {
    /// The capability's state.
    pub ctx: &'a mut InferenceCtx,
    /// The store's resource table, shared with WASI.
    pub table: &'a mut ResourceTable,
}

struct HasInference;

impl HasData for HasInference {
    type Data<'a> = InferenceView<'a>;
}

/// Adds the `inference` interface to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> InferenceView<'_>,
) -> wasmtime::Result<()> {
    crate::bindings::inference::add_to_linker::<T, HasInference>(linker, get)
}

use crate::text::quote;

fn is_json_object(text: &str) -> bool {
    matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    )
}

/// Checks a tool's name: 1 to [`MAX_TOOL_NAME_BYTES`] of `[A-Za-z0-9_-]`,
/// what both Anthropic and OpenAI accept.
fn validate_tool_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOOL_NAME_BYTES {
        return Err(format!(
            "tool name {} must be 1 to {MAX_TOOL_NAME_BYTES} bytes long",
            quote(name)
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(format!(
            "tool name {} may only contain letters, digits, `_` and `-`",
            quote(name)
        ));
    }
    Ok(())
}

/// Validates a guest's request before any backend sees it: the rules every
/// provider shares. What only some providers refuse is checked by the
/// binding (see [`crate::providers::rules`]). Nothing is dropped, joined or
/// reordered silently: a request that would need it is refused instead.
pub(crate) fn validate_request(request: &CompletionRequest) -> Result<(), String> {
    let mut total = request.system.as_ref().map_or(0, String::len);
    if request.system.as_deref() == Some("") {
        return Err("system must not be empty when given (leave it out instead)".into());
    }
    if request.system_cache.is_some() && request.system.is_none() {
        return Err("system-cache is set but there is no system prompt".into());
    }
    if request.messages.is_empty() {
        return Err("messages must not be empty".into());
    }
    if request.messages.len() > MAX_MESSAGES {
        return Err(format!(
            "{} messages is more than {MAX_MESSAGES}",
            request.messages.len()
        ));
    }
    if request.messages[0].role != Role::User {
        return Err("messages[0] must be a user message".into());
    }
    for (i, message) in request.messages.iter().enumerate() {
        if message.content.is_empty() {
            return Err(format!("messages[{i}].content must not be empty"));
        }
        let mut seen_text = false;
        for (j, part) in message.content.iter().enumerate() {
            match part {
                ContentPart::Text(text) => {
                    if text.is_empty() {
                        return Err(format!(
                            "messages[{i}].content[{j}] is an empty text part (providers refuse them; leave it out)"
                        ));
                    }
                    seen_text = true;
                    total += text.len();
                }
                ContentPart::ToolUse(tool_use) => {
                    if message.role != Role::Assistant {
                        return Err(format!(
                            "messages[{i}].content[{j}]: tool-use only belongs in assistant messages"
                        ));
                    }
                    check_tool_use_id(&tool_use.id)
                        .map_err(|e| format!("messages[{i}].content[{j}].id {e}"))?;
                    validate_tool_name(&tool_use.name)
                        .map_err(|e| format!("messages[{i}].content[{j}]: {e}"))?;
                    if !is_json_object(&tool_use.input) {
                        return Err(format!(
                            "messages[{i}].content[{j}].input is not a JSON object"
                        ));
                    }
                    total += tool_use.id.len() + tool_use.name.len() + tool_use.input.len();
                }
                ContentPart::ToolResult(result) => {
                    if message.role != Role::User {
                        return Err(format!(
                            "messages[{i}].content[{j}]: tool-result only belongs in user messages"
                        ));
                    }
                    if seen_text {
                        return Err(format!(
                            "messages[{i}].content[{j}]: tool results must come before any text in a message"
                        ));
                    }
                    check_tool_use_id(&result.tool_use_id)
                        .map_err(|e| format!("messages[{i}].content[{j}].tool-use-id {e}"))?;
                    total += result.tool_use_id.len() + result.content.len();
                }
            }
        }
    }
    check_tool_pairs(request)?;
    if request.max_tokens == 0 {
        return Err("max-tokens must be at least 1".into());
    }
    if let Some(t) = request.temperature
        && !(t.is_finite() && (0.0..=2.0).contains(&t))
    {
        return Err(format!("temperature {t} is outside 0.0..=2.0"));
    }
    if request.stop_sequences.len() > MAX_STOP_SEQUENCES {
        return Err(format!("more than {MAX_STOP_SEQUENCES} stop sequences"));
    }
    for (i, stop) in request.stop_sequences.iter().enumerate() {
        if stop.is_empty() || stop.len() > MAX_STOP_SEQUENCE_BYTES {
            return Err(format!(
                "stop-sequences[{i}] must be 1 to {MAX_STOP_SEQUENCE_BYTES} bytes"
            ));
        }
    }
    if request.tools.len() > MAX_TOOLS {
        return Err(format!(
            "{} tools is more than {MAX_TOOLS}",
            request.tools.len()
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, tool) in request.tools.iter().enumerate() {
        validate_tool_name(&tool.name).map_err(|e| format!("tools[{i}]: {e}"))?;
        if !names.insert(tool.name.as_str()) {
            return Err(format!(
                "tools[{i}]: tool name {} is used twice",
                quote(&tool.name)
            ));
        }
        if !is_json_object(&tool.input_schema) {
            return Err(format!("tools[{i}].input-schema is not a JSON object"));
        }
        total += tool.description.len() + tool.input_schema.len();
    }
    match &request.tool_choice {
        Some(ToolChoice::Any) if request.tools.is_empty() => {
            return Err("tool-choice `any` needs at least one tool".into());
        }
        Some(ToolChoice::Tool(name)) if !names.contains(name.as_str()) => {
            return Err(format!(
                "tool-choice names {}, which is not in tools",
                quote(name)
            ));
        }
        _ => {}
    }
    if total > MAX_REQUEST_BYTES {
        return Err(format!(
            "request text is {total} bytes, more than {MAX_REQUEST_BYTES}"
        ));
    }
    Ok(())
}

/// Longest tool-use id (providers' ids are under 64 bytes).
pub(crate) const MAX_TOOL_USE_ID_BYTES: usize = 256;

fn check_tool_use_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_TOOL_USE_ID_BYTES {
        return Err(format!(
            "{} must be 1 to {MAX_TOOL_USE_ID_BYTES} bytes long",
            quote(id)
        ));
    }
    Ok(())
}

/// Both providers refuse a conversation whose tool uses and results do not
/// pair up: every tool use of an assistant message is answered in the very
/// next message (when there is one), and every tool result answers a tool
/// use of the message just before it.
fn check_tool_pairs(request: &CompletionRequest) -> Result<(), String> {
    use std::collections::BTreeSet;
    fn uses(m: &crate::bindings::inference::Message) -> BTreeSet<&str> {
        m.content
            .iter()
            .filter_map(|p| match p {
                ContentPart::ToolUse(t) => Some(t.id.as_str()),
                _ => None,
            })
            .collect()
    }
    if let Some(last) = request.messages.last()
        && last
            .content
            .iter()
            .any(|p| matches!(p, ContentPart::ToolUse(_)))
    {
        return Err(format!(
            "messages[{}] is the last message and asks for a tool use: send it with the tool results after it",
            request.messages.len() - 1
        ));
    }
    for (i, message) in request.messages.iter().enumerate() {
        let asked = uses(message);
        let count = message
            .content
            .iter()
            .filter(|p| matches!(p, ContentPart::ToolUse(_)))
            .count();
        if asked.len() != count {
            return Err(format!("messages[{i}] uses the same tool-use id twice"));
        }
        let answered_before: BTreeSet<&str> = match i.checked_sub(1) {
            Some(prev) => uses(&request.messages[prev]),
            None => BTreeSet::new(),
        };
        let mut answered = BTreeSet::new();
        for (j, part) in message.content.iter().enumerate() {
            if let ContentPart::ToolResult(result) = part {
                if !answered_before.contains(result.tool_use_id.as_str()) {
                    return Err(format!(
                        "messages[{i}].content[{j}] answers tool use {}, which the message before does not ask for",
                        quote(&result.tool_use_id)
                    ));
                }
                if !answered.insert(result.tool_use_id.as_str()) {
                    return Err(format!(
                        "messages[{i}].content[{j}] answers tool use {} a second time",
                        quote(&result.tool_use_id)
                    ));
                }
            }
        }
        if let Some(next) = request.messages.get(i + 1) {
            let results: BTreeSet<&str> = next
                .content
                .iter()
                .filter_map(|p| match p {
                    ContentPart::ToolResult(r) => Some(r.tool_use_id.as_str()),
                    _ => None,
                })
                .collect();
            if let Some(missing) = asked.iter().find(|id| !results.contains(**id)) {
                return Err(format!(
                    "messages[{i}] asks for tool use {}, which messages[{}] does not answer with a tool-result",
                    quote(missing),
                    i + 1
                ));
            }
        }
    }
    Ok(())
}

impl InferenceView<'_> {
    fn check_handle_budget(&self) -> Result<(), InferenceError> {
        if self.ctx.open_handles >= MAX_OPEN_HANDLES {
            return Err(InferenceError::InvalidRequest(format!(
                "more than {MAX_OPEN_HANDLES} models and streams open at once"
            )));
        }
        Ok(())
    }

    fn release_handle(&mut self) -> wasmtime::Result<()> {
        self.ctx.open_handles = self
            .ctx
            .open_handles
            .checked_sub(1)
            .ok_or_else(|| wasmtime::format_err!("inference handle count underflow"))?;
        Ok(())
    }

    fn backend(&self, model: &Resource<ModelHandle>) -> wasmtime::Result<Arc<dyn ModelBackend>> {
        Ok(self.table.get(model)?.backend.clone())
    }
}

impl HostModel for InferenceView<'_> {
    async fn open(
        &mut self,
        binding: String,
    ) -> wasmtime::Result<Result<Resource<ModelHandle>, InferenceError>> {
        // Policy first: the grant check decides before anything else happens.
        let Some(backend) = self.ctx.bindings.get(&binding).cloned() else {
            return Ok(Err(InferenceError::NotGranted(format!(
                "model binding {} is not granted to this agent",
                quote(&binding)
            ))));
        };
        if let Err(e) = self.check_handle_budget() {
            return Ok(Err(e));
        }
        let handle = self.table.push(ModelHandle { binding, backend })?;
        self.ctx.open_handles += 1;
        Ok(Ok(handle))
    }

    async fn describe(&mut self, model: Resource<ModelHandle>) -> wasmtime::Result<ModelInfo> {
        let handle = self.table.get(&model)?;
        Ok(ModelInfo {
            binding: handle.binding.clone(),
            provider: handle.backend.provider().to_string(),
            model: handle.backend.described_model(),
        })
    }

    async fn complete(
        &mut self,
        model: Resource<ModelHandle>,
        request: CompletionRequest,
    ) -> wasmtime::Result<Result<Completion, InferenceError>> {
        let backend = self.backend(&model)?;
        if let Err(reason) = validate_request(&request) {
            return Ok(Err(InferenceError::InvalidRequest(reason)));
        }
        Ok(backend.complete(request, &self.ctx.call).await)
    }

    async fn stream(
        &mut self,
        model: Resource<ModelHandle>,
        request: CompletionRequest,
    ) -> wasmtime::Result<Result<Resource<CompletionStreamHandle>, InferenceError>> {
        let backend = self.backend(&model)?;
        if let Err(reason) = validate_request(&request) {
            return Ok(Err(InferenceError::InvalidRequest(reason)));
        }
        if let Err(e) = self.check_handle_budget() {
            return Ok(Err(e));
        }
        let events = match backend.stream(request, &self.ctx.call).await {
            Ok(events) => events,
            Err(e) => return Ok(Err(e)),
        };
        let handle = self.table.push(CompletionStreamHandle {
            events,
            finished: false,
        })?;
        self.ctx.open_handles += 1;
        Ok(Ok(handle))
    }

    async fn drop(&mut self, model: Resource<ModelHandle>) -> wasmtime::Result<()> {
        self.table.delete(model)?;
        self.release_handle()
    }
}

impl HostCompletionStream for InferenceView<'_> {
    async fn next(
        &mut self,
        stream: Resource<CompletionStreamHandle>,
    ) -> wasmtime::Result<Result<Option<StreamEvent>, InferenceError>> {
        let handle = self.table.get_mut(&stream)?;
        if handle.finished {
            return Ok(Ok(None));
        }
        match handle.events.recv().await {
            Some(Ok(event)) => {
                handle.finished = matches!(event, StreamEvent::Finished(_));
                Ok(Ok(Some(event)))
            }
            Some(Err(e)) => {
                handle.finished = true;
                Ok(Err(e))
            }
            None => {
                handle.finished = true;
                Ok(Err(InferenceError::Unavailable(
                    "the stream ended before the completion finished".into(),
                )))
            }
        }
    }

    async fn drop(&mut self, stream: Resource<CompletionStreamHandle>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        self.release_handle()
    }
}

impl Host for InferenceView<'_> {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bindings::inference::{Message, ToolResult, ToolSpec, ToolUse};

    fn valid() -> CompletionRequest {
        CompletionRequest {
            system: Some("be brief".into()),
            system_cache: None,
            messages: vec![Message {
                role: Role::User,
                content: vec![ContentPart::Text("hi".into())],
                cache: None,
            }],
            max_tokens: 100,
            temperature: Some(0.2),
            stop_sequences: vec![],
            tools: vec![ToolSpec {
                name: "lookup".into(),
                description: "d".into(),
                input_schema: "{}".into(),
                cache: None,
            }],
            tool_choice: None,
        }
    }

    #[tokio::test]
    async fn opening_an_ungranted_binding_is_refused_without_a_handle() {
        let mut ctx = InferenceCtx::default();
        let mut table = ResourceTable::new();
        let mut view = InferenceView {
            ctx: &mut ctx,
            table: &mut table,
        };
        let result = HostModel::open(&mut view, "default".into()).await.unwrap();
        assert!(
            matches!(&result, Err(InferenceError::NotGranted(m)) if m == "model binding \"default\" is not granted to this agent"),
            "{result:?}"
        );
        assert_eq!(view.ctx.open_handles, 0);
    }

    #[tokio::test]
    async fn a_huge_binding_name_is_not_echoed_back_whole() {
        let mut ctx = InferenceCtx::default();
        let mut table = ResourceTable::new();
        let mut view = InferenceView {
            ctx: &mut ctx,
            table: &mut table,
        };
        let Err(InferenceError::NotGranted(message)) =
            HostModel::open(&mut view, "x".repeat(1 << 20))
                .await
                .unwrap()
        else {
            panic!("expected not-granted");
        };
        assert!(message.len() < 200, "{} bytes", message.len());
    }

    fn assistant_using(id: &str) -> Message {
        Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolUse(ToolUse {
                id: id.into(),
                name: "lookup".into(),
                input: "{}".into(),
            })],
            cache: None,
        }
    }

    fn result_for(id: &str) -> ContentPart {
        ContentPart::ToolResult(ToolResult {
            tool_use_id: id.into(),
            content: "42".into(),
            is_error: false,
        })
    }

    #[test]
    fn a_valid_request_passes() {
        assert_eq!(validate_request(&valid()), Ok(()));
        // A whole tool round trip, answered, with text after the results.
        let mut round = valid();
        round.messages.push(assistant_using("t1"));
        round.messages.push(Message {
            role: Role::User,
            content: vec![result_for("t1"), ContentPart::Text("and?".into())],
            cache: None,
        });
        assert_eq!(validate_request(&round), Ok(()));
    }

    #[test]
    fn invalid_requests_name_the_field() {
        type Mutation = Box<dyn Fn(&mut CompletionRequest)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.messages.clear()),
                "messages must not be empty",
            ),
            (
                Box::new(|r| r.messages[0].role = Role::Assistant),
                "messages[0] must be a user message",
            ),
            (
                Box::new(|r| r.messages[0].content.clear()),
                "messages[0].content must not be empty",
            ),
            (
                Box::new(|r| r.max_tokens = 0),
                "max-tokens must be at least 1",
            ),
            (
                Box::new(|r| r.temperature = Some(f32::NAN)),
                "temperature NaN",
            ),
            (Box::new(|r| r.temperature = Some(2.5)), "temperature 2.5"),
            (
                Box::new(|r| r.stop_sequences = vec![String::new()]),
                "stop-sequences[0]",
            ),
            (
                Box::new(|r| r.tools[0].name = "bad name".into()),
                "tools[0]: tool name \"bad name\" may only contain",
            ),
            (
                Box::new(|r| r.tools[0].input_schema = "[1]".into()),
                "tools[0].input-schema is not a JSON object",
            ),
            (
                Box::new(|r| r.tools.push(r.tools[0].clone())),
                "tools[1]: tool name \"lookup\" is used twice",
            ),
            (
                Box::new(|r| r.tool_choice = Some(ToolChoice::Tool("other".into()))),
                "tool-choice names \"other\"",
            ),
            (
                Box::new(|r| {
                    r.messages[0].content.push(ContentPart::ToolUse(ToolUse {
                        id: "t".into(),
                        name: "n".into(),
                        input: "{}".into(),
                    }))
                }),
                "messages[0].content[1]: tool-use only belongs in assistant messages",
            ),
            (
                Box::new(|r| {
                    r.messages.push(Message {
                        role: Role::Assistant,
                        content: vec![ContentPart::ToolResult(ToolResult {
                            tool_use_id: "t".into(),
                            content: "x".into(),
                            is_error: false,
                        })],
                        cache: None,
                    })
                }),
                "messages[1].content[0]: tool-result only belongs in user messages",
            ),
            (
                Box::new(|r| r.system = Some("x".repeat(MAX_REQUEST_BYTES + 1))),
                "request text is",
            ),
            (
                Box::new(|r| r.messages[0].content.push(ContentPart::Text(String::new()))),
                "messages[0].content[1] is an empty text part",
            ),
            (
                Box::new(|r| r.system = Some(String::new())),
                "system must not be empty",
            ),
            (
                Box::new(|r| {
                    r.system = None;
                    r.system_cache = Some(crate::bindings::inference::CacheTtl::FiveMinutes);
                }),
                "system-cache is set but there is no system prompt",
            ),
            (
                Box::new(|r| r.tools[0].name = "issues.get".into()),
                "tools[0]: tool name \"issues.get\" may only contain letters, digits, `_` and `-`",
            ),
            (
                Box::new(|r| {
                    r.messages.push(assistant_using("t1"));
                    r.messages.push(Message {
                        role: Role::User,
                        content: vec![ContentPart::Text("hm".into()), result_for("t1")],
                        cache: None,
                    });
                }),
                "messages[2].content[1]: tool results must come before any text",
            ),
            (
                Box::new(|r| {
                    r.messages.push(assistant_using("t1"));
                    r.messages.push(Message {
                        role: Role::User,
                        content: vec![ContentPart::Text("never mind".into())],
                        cache: None,
                    });
                }),
                "messages[1] asks for tool use \"t1\", which messages[2] does not answer",
            ),
            (
                Box::new(|r| {
                    r.messages.push(assistant_using("t1"));
                    r.messages.push(Message {
                        role: Role::User,
                        content: vec![result_for("t1"), result_for("t9")],
                        cache: None,
                    });
                }),
                "messages[2].content[1] answers tool use \"t9\", which the message before does not ask for",
            ),
            (
                Box::new(|r| {
                    r.messages.push(assistant_using(""));
                }),
                "messages[1].content[0].id \"\" must be 1 to",
            ),
            (
                Box::new(|r| {
                    r.messages.push(assistant_using("t1"));
                }),
                "messages[1] is the last message and asks for a tool use",
            ),
        ];
        for (mutate, expected) in cases {
            let mut request = valid();
            mutate(&mut request);
            let err = validate_request(&request).expect_err(expected);
            assert!(
                err.starts_with(expected),
                "expected {expected:?}, got {err:?}"
            );
        }
    }
}
