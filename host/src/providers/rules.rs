//! What each provider accepts, in one table, and the check that refuses a
//! request before it is sent when the provider would refuse it.
//!
//! The guest-facing rules that hold for every provider (bounded sizes, a
//! conversation that starts with the user, JSON that parses) are checked at
//! the door by [`crate::inference::validate_request`]. This module adds what
//! differs by provider, taken from the providers' own API references and
//! OpenAPI documents (the test suite validates every request body the host
//! builds against those documents), so that a guest learns of a mistake
//! at once, with the field named, instead of after a round trip and a
//! provider's 400.
//!
//! For a binding with fallbacks, a request must suit every model in the
//! chain: otherwise the same request would be valid or not depending on
//! which provider happened to be up.

use crate::bindings::inference::{CompletionRequest, ContentPart, Role};

/// The limits of one provider's API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderRules {
    /// The provider's name in messages.
    pub provider: &'static str,
    /// Highest temperature accepted (the lowest is 0 everywhere).
    pub max_temperature: f32,
    /// Most stop sequences in one request (`None`: no limit of its own).
    pub max_stop_sequences: Option<usize>,
    /// Whether a stop sequence made only of whitespace is refused.
    pub stop_needs_non_whitespace: bool,
    /// Whether a tool-use id must be made of `[A-Za-z0-9_-]`.
    pub strict_tool_use_ids: bool,
    /// Most prompt-cache breakpoints (`None`: the provider ignores them).
    pub max_cache_breakpoints: Option<usize>,
    /// Whether the last assistant message (a prefill) may end in
    /// whitespace.
    pub prefill_may_end_in_whitespace: bool,
    /// Whether a text part made only of whitespace is refused.
    pub text_needs_non_whitespace: bool,
    /// Whether the model takes a temperature other than 1 (OpenAI's
    /// reasoning models do not).
    pub takes_temperature: bool,
    /// Whether the model takes stop sequences (OpenAI's reasoning models
    /// do not).
    pub takes_stop: bool,
}

/// Anthropic's Messages API.
pub const ANTHROPIC: ProviderRules = ProviderRules {
    provider: "anthropic",
    max_temperature: 1.0,
    max_stop_sequences: None,
    stop_needs_non_whitespace: true,
    strict_tool_use_ids: true,
    max_cache_breakpoints: Some(4),
    prefill_may_end_in_whitespace: false,
    text_needs_non_whitespace: true,
    takes_temperature: true,
    takes_stop: true,
};

/// OpenAI's Chat Completions.
pub const OPENAI: ProviderRules = ProviderRules {
    provider: "openai",
    max_temperature: 2.0,
    max_stop_sequences: Some(4),
    stop_needs_non_whitespace: false,
    strict_tool_use_ids: false,
    max_cache_breakpoints: None,
    prefill_may_end_in_whitespace: true,
    text_needs_non_whitespace: false,
    takes_temperature: true,
    takes_stop: true,
};

/// OpenAI's reasoning models (o1, o3, o4-mini, the gpt-5 family): no
/// temperature but the default 1, and no stop sequences.
pub(crate) const OPENAI_REASONING: ProviderRules = ProviderRules {
    takes_temperature: false,
    takes_stop: false,
    ..OPENAI
};

/// Model-id prefixes of OpenAI's reasoning models.
const OPENAI_REASONING_PREFIXES: &[&str] = &["o1", "o3", "o4", "gpt-5"];

/// Model-id prefixes within those that are chat models, which take a
/// temperature and stop sequences.
const OPENAI_CHAT_PREFIXES: &[&str] = &["gpt-5-chat"];

/// The rules of OpenAI model `model`.
pub(crate) fn openai_model(model: &str) -> ProviderRules {
    let reasoning = OPENAI_REASONING_PREFIXES
        .iter()
        .any(|prefix| model.starts_with(prefix))
        && !OPENAI_CHAT_PREFIXES
            .iter()
            .any(|prefix| model.starts_with(prefix));
    if reasoning { OPENAI_REASONING } else { OPENAI }
}

/// Servers that speak Chat Completions: OpenAI's ranges, without limits
/// that only OpenAI's own service enforces (llama.cpp, vLLM and Ollama take
/// more than 4 stop sequences).
pub(crate) const OPENAI_COMPATIBLE: ProviderRules = ProviderRules {
    provider: "openai-compatible",
    max_temperature: 2.0,
    max_stop_sequences: None,
    stop_needs_non_whitespace: false,
    strict_tool_use_ids: false,
    max_cache_breakpoints: None,
    prefill_may_end_in_whitespace: true,
    text_needs_non_whitespace: false,
    takes_temperature: true,
    takes_stop: true,
};

impl ProviderRules {
    /// Checks `request` against these rules; `which` names the model in the
    /// binding's chain for the message (`""` for the binding's own).
    pub fn check(&self, request: &CompletionRequest, which: &str) -> Result<(), String> {
        // Named only in an error: the check itself allocates nothing.
        let who = Who(self.provider, which);
        if !self.takes_temperature
            && let Some(t) = request.temperature
            && t != 1.0
        {
            return Err(format!(
                "temperature {t}: this model of {who} only takes the default (leave it out)"
            ));
        }
        if !self.takes_stop && !request.stop_sequences.is_empty() {
            return Err(format!("stop-sequences: this model of {who} takes none"));
        }
        if self.text_needs_non_whitespace
            && request
                .system
                .as_deref()
                .is_some_and(|s| s.trim().is_empty())
        {
            return Err(format!("system is only whitespace, which {who} refuses"));
        }
        if self.text_needs_non_whitespace {
            for (i, message) in request.messages.iter().enumerate() {
                for (j, part) in message.content.iter().enumerate() {
                    if let ContentPart::Text(text) = part
                        && text.trim().is_empty()
                    {
                        return Err(format!(
                            "messages[{i}].content[{j}] is only whitespace, which {who} refuses"
                        ));
                    }
                }
            }
        }
        if let Some(t) = request.temperature
            && t > self.max_temperature
        {
            return Err(format!(
                "temperature {t} is above {}, the most {who} accepts",
                self.max_temperature
            ));
        }
        if let Some(max) = self.max_stop_sequences
            && request.stop_sequences.len() > max
        {
            return Err(format!(
                "stop-sequences has {} entries; {who} accepts at most {max}",
                request.stop_sequences.len()
            ));
        }
        if self.stop_needs_non_whitespace {
            for (i, stop) in request.stop_sequences.iter().enumerate() {
                if stop.trim().is_empty() {
                    return Err(format!(
                        "stop-sequences[{i}] is only whitespace, which {who} refuses"
                    ));
                }
            }
        }
        if self.strict_tool_use_ids {
            for (i, message) in request.messages.iter().enumerate() {
                for (j, part) in message.content.iter().enumerate() {
                    let (field, id) = match part {
                        ContentPart::ToolUse(t) => ("id", &t.id),
                        ContentPart::ToolResult(r) => ("tool-use-id", &r.tool_use_id),
                        ContentPart::Text(_) => continue,
                    };
                    if !is_id(id) {
                        return Err(format!(
                            "messages[{i}].content[{j}].{field} {} may only hold letters, digits, `_` and `-` for {who}",
                            crate::text::quote(id)
                        ));
                    }
                }
            }
        }
        if let Some(max) = self.max_cache_breakpoints {
            check_cache_breakpoints(request, max, who)?;
        }
        if !self.prefill_may_end_in_whitespace
            && let Some(last) = request.messages.last()
            && last.role == Role::Assistant
            && let Some(ContentPart::Text(text)) = last.content.last()
            && text.ends_with(char::is_whitespace)
        {
            return Err(format!(
                "messages[{}] is a final assistant message (a prefill) ending in whitespace, which {who} refuses",
                request.messages.len() - 1
            ));
        }
        Ok(())
    }
}

/// A provider and its place in the chain, as error messages name them.
#[derive(Clone, Copy)]
struct Who<'a>(&'a str, &'a str);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

/// Whether `id` is 1 or more of `[A-Za-z0-9_-]`.
fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// At most `max` breakpoints, and (Anthropic's rule) no one-hour breakpoint
/// after a five-minute one: the prompt is cached in order tools, system,
/// messages, and a longer-lived entry must come first.
fn check_cache_breakpoints(
    request: &CompletionRequest,
    max: usize,
    who: Who<'_>,
) -> Result<(), String> {
    use crate::bindings::inference::CacheTtl;
    let tools = request
        .tools
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.cache.map(|ttl| (format!("tools[{i}].cache"), ttl)));
    let system = request
        .system_cache
        .map(|ttl| ("system-cache".to_string(), ttl));
    let messages = request
        .messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.cache.map(|ttl| (format!("messages[{i}].cache"), ttl)));
    let points: Vec<(String, CacheTtl)> = tools.chain(system).chain(messages).collect();
    if points.len() > max {
        return Err(format!(
            "{} prompt-cache breakpoints; {who} accepts at most {max}",
            points.len()
        ));
    }
    let mut seen_short = None;
    for (field, ttl) in &points {
        match ttl {
            CacheTtl::FiveMinutes => {
                seen_short.get_or_insert(field.as_str());
            }
            CacheTtl::OneHour => {
                if let Some(short) = seen_short {
                    return Err(format!(
                        "{field} is a one-hour breakpoint after the five-minute {short}; {who} needs longer-lived breakpoints first"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bindings::inference::{CacheTtl, Message, ToolResult, ToolSpec, ToolUse};

    fn request() -> CompletionRequest {
        CompletionRequest {
            system: Some("sys".into()),
            system_cache: None,
            messages: vec![Message {
                role: Role::User,
                content: vec![ContentPart::Text("hi".into())],
                cache: None,
            }],
            max_tokens: 10,
            temperature: None,
            stop_sequences: vec![],
            tools: vec![],
            tool_choice: None,
        }
    }

    #[test]
    fn each_provider_refuses_what_its_api_refuses_naming_the_field() {
        let mut hot = request();
        hot.temperature = Some(1.5);
        assert_eq!(
            ANTHROPIC.check(&hot, "").unwrap_err(),
            "temperature 1.5 is above 1, the most anthropic accepts"
        );
        assert_eq!(OPENAI.check(&hot, ""), Ok(()));

        let mut stops = request();
        stops.stop_sequences = (0..5).map(|i| format!("s{i}")).collect();
        assert_eq!(
            OPENAI.check(&stops, " (fallback 1)").unwrap_err(),
            "stop-sequences has 5 entries; openai (fallback 1) accepts at most 4"
        );
        assert_eq!(OPENAI_COMPATIBLE.check(&stops, ""), Ok(()));
        assert_eq!(ANTHROPIC.check(&stops, ""), Ok(()));

        let mut blank_stop = request();
        blank_stop.stop_sequences = vec![" \n".into()];
        assert!(
            ANTHROPIC
                .check(&blank_stop, "")
                .unwrap_err()
                .starts_with("stop-sequences[0] is only whitespace")
        );

        let mut ids = request();
        ids.messages.push(Message {
            role: Role::Assistant,
            content: vec![ContentPart::ToolUse(ToolUse {
                id: "call.1".into(),
                name: "n".into(),
                input: "{}".into(),
            })],
            cache: None,
        });
        ids.messages.push(Message {
            role: Role::User,
            content: vec![ContentPart::ToolResult(ToolResult {
                tool_use_id: "call.1".into(),
                content: "x".into(),
                is_error: false,
            })],
            cache: None,
        });
        assert!(
            ANTHROPIC
                .check(&ids, "")
                .unwrap_err()
                .starts_with("messages[1].content[0].id \"call.1\" may only hold")
        );
        assert_eq!(OPENAI.check(&ids, ""), Ok(()));

        let mut blank = request();
        blank.messages[0]
            .content
            .push(ContentPart::Text(" \n".into()));
        assert!(
            ANTHROPIC
                .check(&blank, "")
                .unwrap_err()
                .starts_with("messages[0].content[1] is only whitespace")
        );
        assert_eq!(OPENAI.check(&blank, ""), Ok(()));

        let reasoning = openai_model("o4-mini");
        let mut warm = request();
        warm.temperature = Some(0.2);
        assert!(
            reasoning
                .check(&warm, "")
                .unwrap_err()
                .contains("only takes the default")
        );
        warm.temperature = Some(1.0);
        assert_eq!(reasoning.check(&warm, ""), Ok(()));
        warm.stop_sequences = vec!["x".into()];
        assert!(reasoning.check(&warm, "").is_err());
        assert_eq!(openai_model("gpt-4o-mini"), OPENAI);
        assert_eq!(openai_model("gpt-5-mini"), OPENAI_REASONING);
        assert_eq!(openai_model("gpt-5-chat-latest"), OPENAI);

        let mut prefill = request();
        prefill
            .messages
            .push(Message::assistant_text("The answer is "));
        assert!(ANTHROPIC.check(&prefill, "").is_err());
        assert_eq!(OPENAI.check(&prefill, ""), Ok(()));
    }

    #[test]
    fn cache_breakpoints_are_counted_and_ordered_for_anthropic() {
        let mut cached = request();
        cached.tools = vec![ToolSpec {
            name: "t".into(),
            description: "d".into(),
            input_schema: "{}".into(),
            cache: Some(CacheTtl::OneHour),
        }];
        cached.system_cache = Some(CacheTtl::FiveMinutes);
        cached.messages[0].cache = Some(CacheTtl::FiveMinutes);
        assert_eq!(ANTHROPIC.check(&cached, ""), Ok(()));

        cached.messages[0].cache = Some(CacheTtl::OneHour);
        assert_eq!(
            ANTHROPIC.check(&cached, "").unwrap_err(),
            "messages[0].cache is a one-hour breakpoint after the five-minute system-cache; anthropic needs longer-lived breakpoints first"
        );
        assert_eq!(OPENAI.check(&cached, ""), Ok(()), "OpenAI ignores them");

        let mut many = request();
        for _ in 0..4 {
            many.messages.push(Message::assistant_text("a"));
            many.messages.push(Message::user_text("u"));
        }
        for message in &mut many.messages {
            message.cache = Some(CacheTtl::FiveMinutes);
        }
        assert_eq!(
            ANTHROPIC.check(&many, "").unwrap_err(),
            "9 prompt-cache breakpoints; anthropic accepts at most 4"
        );
    }

    impl Message {
        fn assistant_text(text: &str) -> Self {
            Self {
                role: Role::Assistant,
                content: vec![ContentPart::Text(text.into())],
                cache: None,
            }
        }
        fn user_text(text: &str) -> Self {
            Self {
                role: Role::User,
                content: vec![ContentPart::Text(text.into())],
                cache: None,
            }
        }
    }
}
