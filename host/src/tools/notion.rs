//! The Notion API connector.
//!
//! Auth is `Authorization: Bearer <integration secret>` with
//! `Notion-Version: 2022-06-28`. Scopes are page and database ids (with or
//! without dashes):
//! - `pages.create` needs its parent (`page_id` or `database_id`) granted;
//! - `databases.query` needs the database granted; pagination follows
//!   `next_cursor` up to `max_items`;
//! - `blocks.children.append` needs the block to be a granted page or a
//!   page this agent created under a granted parent (so a report can be
//!   created and then filled), checked before anything is sent;
//! - `pages.retrieve` of a granted page, a page this agent created, or a
//!   page whose parent is granted. The last case can only be known from
//!   the page itself: it is fetched, and withheld (`denied`) when its
//!   parent is not granted.
//!
//! Errors are Notion's `{"object": "error", "code", "message"}`; a 429
//! (`rate_limited`) with `Retry-After` becomes `rate-limited`.

use std::collections::HashSet;
use std::sync::Mutex;

use reqwest::Method;
use serde_json::{Value, json};

use super::ToolError;
use super::connector::{
    Action, Connector, Endpoint, rate_limited, resources_only, retry_after_header, str_field,
};
use crate::bindings::types::UpstreamError;
use crate::manifest::ToolGrant;

/// Notion's API.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.notion.com";
/// The API version sent.
pub(crate) const API_VERSION: &str = "2022-06-28";
/// Most rows one query returns.
pub(crate) const MAX_LIST_ITEMS: u64 = 1_000;
/// Most pages remembered as created by the agent.
const MAX_REMEMBERED_PAGES: usize = 10_000;

/// A Notion grant: its endpoint, granted ids and the pages it created.
pub struct Notion {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Granted page and database ids, normalised.
    pub granted: HashSet<String>,
    /// Pages created through this grant, normalised.
    pub created: Mutex<HashSet<String>>,
}

/// A Notion id as 32 lower-case hex digits, or `None`.
pub(crate) fn normalise_id(id: &str) -> Option<String> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_lowercase())
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "additionalProperties": false, "properties": properties})
}

fn id_schema() -> Value {
    json!({"type": "string", "minLength": 32, "maxLength": 36, "description": "a Notion id"})
}

impl Notion {
    fn is_granted_or_created(&self, id: &str) -> bool {
        normalise_id(id).is_some_and(|id| {
            self.granted.contains(&id)
                || self
                    .created
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&id)
        })
    }

    fn parent_id(value: &Value) -> Option<&str> {
        str_field(value, &["page_id", "database_id"])
    }

    async fn request(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> Result<Value, ToolError> {
        let reply = self.endpoint.send_json(method, segments, &[], body).await?;
        let value = reply.json();
        if reply.status.is_success() {
            return Ok(value);
        }
        let message = format!(
            "{}: {}",
            str_field(&value, &["code"]).unwrap_or("error"),
            str_field(&value, &["message"]).unwrap_or("Notion answered with an error")
        );
        if reply.status.as_u16() == 429 {
            return Err(rate_limited(retry_after_header(&reply.headers), message));
        }
        Err(ToolError::Upstream(UpstreamError {
            status: Some(reply.status.as_u16()),
            message,
        }))
    }
}

#[async_trait::async_trait]
impl Connector for Notion {
    const KIND: &'static str = "notion";
    const FIXED_HEADERS: &'static [(&'static str, &'static str)] =
        &[("notion-version", API_VERSION)];

    fn default_base_url(_: &ToolGrant) -> Result<String, String> {
        Ok(DEFAULT_BASE_URL.into())
    }

    fn from_grant(endpoint: Endpoint, grant: &ToolGrant) -> Result<Self, String> {
        resources_only(Self::KIND, grant)?;
        let mut granted = HashSet::new();
        for id in &grant.resources {
            granted.insert(normalise_id(id).ok_or_else(|| format!("{id:?} is not a Notion id"))?);
        }
        Ok(Self {
            endpoint,
            granted,
            created: Mutex::new(HashSet::new()),
        })
    }

    fn catalogue() -> Vec<Action> {
        vec![
            Action {
                name: "pages.create",
                description: "Create a page under a page or in a database.",
                schema: object(
                    &["parent", "properties"],
                    json!({
                        "parent": {"oneOf": [
                            object(&["page_id"], json!({"page_id": id_schema()})),
                            object(&["database_id"], json!({"database_id": id_schema()}))
                        ]},
                        "properties": {"type": "object"},
                        "children": {"type": "array", "maxItems": 100, "items": {"type": "object"}}
                    }),
                ),
            },
            Action {
                name: "pages.retrieve",
                description: "Get a page's properties.",
                schema: object(&["page_id"], json!({"page_id": id_schema()})),
            },
            Action {
                name: "databases.query",
                description: "Query a database's pages.",
                schema: object(
                    &["database_id"],
                    json!({
                        "database_id": id_schema(),
                        "filter": {"type": "object"},
                        "sorts": {"type": "array", "maxItems": 10, "items": {"type": "object"}},
                        "max_items": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_ITEMS}
                    }),
                ),
            },
            Action {
                name: "blocks.children.append",
                description: "Append blocks to a page.",
                schema: object(
                    &["block_id", "children"],
                    json!({
                        "block_id": id_schema(),
                        "children": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "object"}}
                    }),
                ),
            },
        ]
    }

    fn resource(&self, action: &str, input: &Value) -> String {
        let id = match action {
            "pages.create" => input.get("parent").and_then(Self::parent_id),
            _ => str_field(input, &["page_id", "database_id", "block_id"]),
        };
        id.unwrap_or_default().chars().take(36).collect()
    }

    fn in_scope(&self, action: &str, input: &Value) -> Result<(), String> {
        let id = self.resource(action, input);
        if normalise_id(&id).is_none() {
            return Err(format!("{id:?} is not a Notion id"));
        }
        let allowed = match action {
            "pages.create" | "databases.query" => {
                normalise_id(&id).is_some_and(|id| self.granted.contains(&id))
            }
            "blocks.children.append" => self.is_granted_or_created(&id),
            // Checked again on the page itself in `run`.
            _ => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{id} is not a page or database granted to this agent"
            ))
        }
    }

    async fn run(&self, action: &str, input: Value) -> Result<Value, ToolError> {
        match action {
            "pages.create" => {
                let page = self
                    .request(Method::POST, &["v1", "pages"], Some(input))
                    .await?;
                if let Some(id) = page
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(normalise_id)
                {
                    let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
                    if created.len() < MAX_REMEMBERED_PAGES {
                        created.insert(id);
                    }
                }
                Ok(page)
            }
            "pages.retrieve" => {
                let id = input["page_id"].as_str().unwrap_or_default();
                // Notion's "not found" and "not shared" are withheld too, so
                // the agent cannot probe the workspace beyond its grant.
                let withheld = || {
                    ToolError::Denied(format!(
                        "page {id} is not granted to this agent, nor is its parent"
                    ))
                };
                let page = match self.request(Method::GET, &["v1", "pages", id], None).await {
                    Ok(page) => page,
                    Err(ToolError::Upstream(e))
                        if matches!(e.status, Some(403 | 404))
                            && !self.is_granted_or_created(id) =>
                    {
                        return Err(withheld());
                    }
                    Err(other) => return Err(other),
                };
                let parent_granted =
                    page.get("parent")
                        .and_then(Self::parent_id)
                        .is_some_and(|parent| {
                            normalise_id(parent).is_some_and(|p| self.granted.contains(&p))
                        });
                if !(self.is_granted_or_created(id) || parent_granted) {
                    return Err(withheld());
                }
                Ok(page)
            }
            "databases.query" => {
                let id = input["database_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let max = input
                    .get("max_items")
                    .and_then(Value::as_u64)
                    .unwrap_or(100);
                let mut body = json!({"page_size": max.min(100)});
                for name in ["filter", "sorts"] {
                    if let Some(value) = input.get(name) {
                        body[name] = value.clone();
                    }
                }
                let mut results = Vec::new();
                for _page in 0..50 {
                    let page = self
                        .request(
                            Method::POST,
                            &["v1", "databases", &id, "query"],
                            Some(body.clone()),
                        )
                        .await?;
                    if let Some(items) = page.get("results").and_then(Value::as_array) {
                        let room = (max as usize).saturating_sub(results.len());
                        results.extend(items.iter().take(room).cloned());
                    }
                    match page.get("next_cursor").and_then(Value::as_str) {
                        Some(cursor)
                            if page.get("has_more") == Some(&Value::Bool(true))
                                && (results.len() as u64) < max =>
                        {
                            body["start_cursor"] = json!(cursor);
                        }
                        _ => break,
                    }
                }
                Ok(json!({"object": "list", "results": results}))
            }
            "blocks.children.append" => {
                let id = input["block_id"].as_str().unwrap_or_default().to_string();
                let page = self
                    .request(
                        Method::PATCH,
                        &["v1", "blocks", &id, "children"],
                        Some(json!({"children": input["children"]})),
                    )
                    .await?;
                Ok(page)
            }
            other => Err(ToolError::NotGranted(format!("unknown action {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_normalised() {
        assert_eq!(
            normalise_id("1A2B3C4D-1A2B-1A2B-1A2B-1A2B3C4D5E6F").as_deref(),
            Some("1a2b3c4d1a2b1a2b1a2b1a2b3c4d5e6f")
        );
        assert_eq!(normalise_id("../../v1/users"), None);
        assert_eq!(normalise_id("1a2b"), None);
    }
}
