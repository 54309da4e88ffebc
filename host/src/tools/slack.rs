//! The Slack Web API connector.
//!
//! Auth is `Authorization: Bearer <bot token>`. Writes are JSON POSTs;
//! `conversations.history` is a GET whose `response_metadata.next_cursor`
//! is followed up to `max_items`. Slack answers most errors with HTTP 200
//! and `{"ok": false, "error": "…"}`, which becomes `upstream`; a 429 with
//! `Retry-After` becomes `rate-limited`. Scopes are channel ids.

use reqwest::Method;
use serde_json::{Value, json};

use super::ToolError;
use super::connector::{
    Action, Connector, Endpoint, rate_limited, resources_only, retry_after_header,
};
use crate::bindings::types::UpstreamError;
use crate::manifest::ToolGrant;

/// Slack's Web API.
pub(crate) const DEFAULT_BASE_URL: &str = "https://slack.com/api";
/// Most messages one history listing returns.
pub(crate) const MAX_LIST_ITEMS: u64 = 1_000;

/// A Slack grant: its endpoint and channel ids.
pub struct Slack {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Channel ids (`C…`, `G…`, `D…`).
    pub channels: Vec<String>,
}

/// Checks a channel id from a grant or an input.
pub(crate) fn valid_channel(id: &str) -> bool {
    (2..=32).contains(&id.len())
        && id.starts_with(['C', 'G', 'D'])
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "additionalProperties": false, "properties": properties})
}

fn channel_schema() -> Value {
    json!({"type": "string", "minLength": 2, "maxLength": 32, "description": "a channel id such as C0123456789"})
}

fn ts_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 32, "description": "a message timestamp such as 1700000000.000100"})
}

impl Slack {
    async fn call_method(
        &self,
        method: &str,
        http_method: Method,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ToolError> {
        let reply = self
            .endpoint
            .send_json(http_method, &[method], query, body)
            .await?;
        let value = reply.json();
        if reply.status.as_u16() == 429 {
            return Err(rate_limited(
                retry_after_header(&reply.headers),
                "Slack asked to slow down".into(),
            ));
        }
        if !reply.status.is_success() || value.get("ok") != Some(&Value::Bool(true)) {
            let error = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("Slack answered with an error");
            return Err(ToolError::Upstream(UpstreamError {
                status: Some(reply.status.as_u16()),
                message: format!("{method}: {error}"),
            }));
        }
        Ok(value)
    }
}

#[async_trait::async_trait]
impl Connector for Slack {
    const KIND: &'static str = "slack";

    fn default_base_url(_: &ToolGrant) -> Result<String, String> {
        Ok(DEFAULT_BASE_URL.into())
    }

    fn from_grant(endpoint: Endpoint, grant: &ToolGrant) -> Result<Self, String> {
        resources_only(Self::KIND, grant)?;
        if let Some(bad) = grant.resources.iter().find(|c| !valid_channel(c)) {
            return Err(format!("{bad:?} is not a channel id (C…, G… or D…)"));
        }
        Ok(Self {
            endpoint,
            channels: grant.resources.clone(),
        })
    }

    fn catalogue() -> Vec<Action> {
        vec![
            Action {
                name: "chat.postMessage",
                description: "Post a message to a channel, optionally in a thread.",
                schema: object(
                    &["channel", "text"],
                    json!({
                        "channel": channel_schema(),
                        "text": {"type": "string", "minLength": 1, "maxLength": 40000},
                        "thread_ts": ts_schema()
                    }),
                ),
            },
            Action {
                name: "conversations.history",
                description: "Read a channel's recent messages, newest first.",
                schema: object(
                    &["channel"],
                    json!({
                        "channel": channel_schema(),
                        "oldest": ts_schema(),
                        "latest": ts_schema(),
                        "max_items": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_ITEMS}
                    }),
                ),
            },
            Action {
                name: "reactions.add",
                description: "Add an emoji reaction to a message.",
                schema: object(
                    &["channel", "timestamp", "name"],
                    json!({
                        "channel": channel_schema(),
                        "timestamp": ts_schema(),
                        "name": {"type": "string", "minLength": 1, "maxLength": 100}
                    }),
                ),
            },
        ]
    }

    fn resource(&self, _action: &str, input: &Value) -> String {
        input
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(32)
            .collect()
    }

    fn in_scope(&self, _action: &str, input: &Value) -> Result<(), String> {
        let channel = input
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !valid_channel(channel) {
            return Err(format!("{channel:?} is not a channel id"));
        }
        if self.channels.iter().any(|c| c == channel) {
            Ok(())
        } else {
            Err(format!(
                "channel {channel} is not in this agent's grant ({})",
                self.channels.join(", ")
            ))
        }
    }

    async fn run(&self, action: &str, input: Value) -> Result<Value, ToolError> {
        match action {
            "chat.postMessage" | "reactions.add" => {
                self.call_method(action, Method::POST, &[], Some(input))
                    .await
            }
            "conversations.history" => {
                let max = input
                    .get("max_items")
                    .and_then(Value::as_u64)
                    .unwrap_or(100);
                let mut query = vec![
                    (
                        "channel",
                        input["channel"].as_str().unwrap_or_default().to_string(),
                    ),
                    ("limit", max.min(200).to_string()),
                ];
                for name in ["oldest", "latest"] {
                    if let Some(value) = input.get(name).and_then(Value::as_str) {
                        query.push((name, value.to_string()));
                    }
                }
                let mut messages = Vec::new();
                for _page in 0..50 {
                    let page = self.call_method(action, Method::GET, &query, None).await?;
                    if let Some(items) = page.get("messages").and_then(Value::as_array) {
                        messages.extend(
                            items
                                .iter()
                                .take((max as usize).saturating_sub(messages.len()))
                                .cloned(),
                        );
                    }
                    let cursor = page
                        .pointer("/response_metadata/next_cursor")
                        .and_then(Value::as_str)
                        .filter(|c| !c.is_empty());
                    match cursor {
                        Some(cursor) if (messages.len() as u64) < max => {
                            query.retain(|(name, _)| *name != "cursor");
                            query.push(("cursor", cursor.to_string()));
                        }
                        _ => break,
                    }
                }
                Ok(json!({"ok": true, "messages": messages}))
            }
            other => Err(ToolError::NotGranted(format!("unknown action {other:?}"))),
        }
    }
}
