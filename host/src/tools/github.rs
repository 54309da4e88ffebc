//! The GitHub REST connector.
//!
//! Auth is `Authorization: Bearer <token>` with `Accept:
//! application/vnd.github+json` and `X-GitHub-Api-Version: 2022-11-28`.
//! Scopes are repository patterns, `owner/repo` or `owner/*`, matched
//! without regard to case as GitHub does. Listing follows `Link: rel="next"`
//! only while it stays on the same endpoint. Primary rate limits
//! (`x-ratelimit-remaining: 0`, wait until `x-ratelimit-reset`) and
//! secondary ones (`retry-after`) become `rate-limited`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::ToolError;
use super::connector::{
    Action, Connector, Endpoint, rate_limited, resources_only, retry_after_header, str_field,
};
use crate::bindings::types::UpstreamError;
use crate::manifest::ToolGrant;

/// GitHub's public API.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.github.com";
/// The REST API version sent.
pub(crate) const API_VERSION: &str = "2022-11-28";
/// Most items one listing returns.
pub(crate) const MAX_LIST_ITEMS: u64 = 1_000;

/// A GitHub grant: its endpoint and repository patterns.
pub struct GitHub {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// `owner/repo` or `owner/*`, lower-case.
    pub repositories: Vec<String>,
}

/// Checks a repository pattern from a grant.
pub(crate) fn validate_pattern(pattern: &str) -> Result<(), String> {
    let Some((owner, repo)) = pattern.split_once('/') else {
        return Err(format!("{pattern:?} is not owner/repo or owner/*"));
    };
    valid_owner(owner)
        .then_some(())
        .filter(|()| repo == "*" || valid_repo(repo))
        .ok_or_else(|| format!("{pattern:?} is not owner/repo or owner/*"))
}

fn valid_owner(owner: &str) -> bool {
    (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn valid_repo(repo: &str) -> bool {
    (1..=100).contains(&repo.len())
        && repo != "."
        && repo != ".."
        && repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn repo_schema() -> Value {
    json!({"type": "string", "minLength": 3, "maxLength": 140, "description": "owner/repo"})
}

fn number_schema() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 4294967295u64})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "additionalProperties": false, "properties": properties})
}

impl GitHub {
    /// The repository input, split and checked.
    fn repo(input: &Value) -> Result<(&str, &str), String> {
        let repo = input
            .get("repo")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match repo.split_once('/') {
            Some((owner, name)) if valid_owner(owner) && valid_repo(name) => Ok((owner, name)),
            _ => Err(format!("{repo:?} is not a repository (owner/repo)")),
        }
    }

    fn number(input: &Value) -> String {
        input
            .get("number")
            .and_then(Value::as_u64)
            .unwrap_or_default()
            .to_string()
    }

    async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<(Value, reqwest::header::HeaderMap), ToolError> {
        let reply = self
            .endpoint
            .send_json(method, segments, query, body)
            .await?;
        if reply.status.is_success() {
            let value = if reply.body.is_empty() {
                Value::Null
            } else {
                reply.json()
            };
            return Ok((value, reply.headers));
        }
        Err(self.error(&reply))
    }

    fn error(&self, reply: &super::connector::Reply) -> ToolError {
        let body = reply.json();
        let message = str_field(&body, &["message"])
            .unwrap_or("GitHub answered with an error")
            .to_string();
        let status = reply.status.as_u16();
        if status == 403 || status == 429 {
            let header = |name: &str| {
                reply
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if let Some(wait) = retry_after_header(&reply.headers) {
                return rate_limited(Some(wait), message);
            }
            if header("x-ratelimit-remaining") == Some(0) {
                let wait = header("x-ratelimit-reset").map(|reset| {
                    Duration::from_secs(
                        reset.saturating_sub(crate::db::now_unix() as u64).min(3600),
                    )
                });
                return rate_limited(wait, message);
            }
            if status == 429 {
                return rate_limited(None, message);
            }
        }
        ToolError::Upstream(UpstreamError {
            status: Some(status),
            message,
        })
    }

    /// Lists with pagination: follows `rel="next"` while it stays on the
    /// same path, up to `max_items`.
    async fn list(
        &self,
        segments: &[&str],
        query: Vec<(&str, String)>,
        max_items: u64,
    ) -> Result<Value, ToolError> {
        let first = self.endpoint.url(segments, &query)?;
        let mut next = Some(first.clone());
        let mut items = Vec::new();
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let reply = self.endpoint.send(Method::GET, url, None, vec![]).await?;
            if !reply.status.is_success() {
                return Err(self.error(&reply));
            }
            let Value::Array(page) = reply.json() else {
                return Err(ToolError::Upstream(UpstreamError {
                    status: Some(reply.status.as_u16()),
                    message: "GitHub did not answer with a list".into(),
                }));
            };
            let page_was_empty = page.is_empty();
            for item in page {
                if items.len() as u64 >= max_items {
                    break;
                }
                items.push(item);
            }
            if items.len() as u64 >= max_items || page_was_empty || pages >= 50 {
                break;
            }
            next = next_link(&reply.headers)
                .and_then(|link| first.join(&link).ok())
                .filter(|link| link.origin() == first.origin() && link.path() == first.path());
        }
        Ok(Value::Array(items))
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[async_trait::async_trait]
impl Connector for GitHub {
    const KIND: &'static str = "github";
    const FIXED_HEADERS: &'static [(&'static str, &'static str)] = &[
        ("accept", "application/vnd.github+json"),
        ("x-github-api-version", API_VERSION),
    ];

    fn default_base_url(_: &ToolGrant) -> Result<String, String> {
        Ok(DEFAULT_BASE_URL.into())
    }

    fn from_grant(endpoint: Endpoint, grant: &ToolGrant) -> Result<Self, String> {
        resources_only(Self::KIND, grant)?;
        for pattern in &grant.resources {
            validate_pattern(pattern)?;
        }
        Ok(Self {
            endpoint,
            repositories: grant.resources.iter().map(|r| r.to_lowercase()).collect(),
        })
    }

    fn catalogue() -> Vec<Action> {
        let labels = json!({"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "string", "minLength": 1, "maxLength": 100}});
        vec![
            Action {
                name: "issues.list",
                description: "List a repository's issues (and pull requests), newest first.",
                schema: object(
                    &["repo"],
                    json!({
                        "repo": repo_schema(),
                        "state": {"type": "string", "enum": ["open", "closed", "all"]},
                        "labels": {"type": "string", "maxLength": 1000, "description": "comma-separated label names"},
                        "since": {"type": "string", "maxLength": 40, "description": "ISO 8601 time: only issues updated after it"},
                        "max_items": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_ITEMS}
                    }),
                ),
            },
            Action {
                name: "issues.get",
                description: "Get one issue.",
                schema: object(
                    &["repo", "number"],
                    json!({"repo": repo_schema(), "number": number_schema()}),
                ),
            },
            Action {
                name: "issues.create",
                description: "Open an issue.",
                schema: object(
                    &["repo", "title"],
                    json!({
                        "repo": repo_schema(),
                        "title": {"type": "string", "minLength": 1, "maxLength": 256},
                        "body": {"type": "string", "maxLength": 65536},
                        "labels": labels.clone()
                    }),
                ),
            },
            Action {
                name: "issues.comment",
                description: "Comment on an issue or pull request.",
                schema: object(
                    &["repo", "number", "body"],
                    json!({
                        "repo": repo_schema(),
                        "number": number_schema(),
                        "body": {"type": "string", "minLength": 1, "maxLength": 65536}
                    }),
                ),
            },
            Action {
                name: "issues.add_labels",
                description: "Add labels to an issue or pull request.",
                schema: object(
                    &["repo", "number", "labels"],
                    json!({
                        "repo": repo_schema(),
                        "number": number_schema(),
                        "labels": labels
                    }),
                ),
            },
            Action {
                name: "pulls.get",
                description: "Get one pull request.",
                schema: object(
                    &["repo", "number"],
                    json!({"repo": repo_schema(), "number": number_schema()}),
                ),
            },
            Action {
                name: "repos.get_content",
                description: "Get a file or directory of a repository.",
                schema: object(
                    &["repo", "path"],
                    json!({
                        "repo": repo_schema(),
                        "path": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "ref": {"type": "string", "minLength": 1, "maxLength": 256}
                    }),
                ),
            },
        ]
    }

    fn resource(&self, _action: &str, input: &Value) -> String {
        input
            .get("repo")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(140)
            .collect()
    }

    fn in_scope(&self, action: &str, input: &Value) -> Result<(), String> {
        let (owner, name) = Self::repo(input)?;
        if action == "repos.get_content" {
            content_path(
                input
                    .get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )?;
        }
        let (owner, name) = (owner.to_lowercase(), name.to_lowercase());
        let granted = self.repositories.iter().any(|pattern| {
            pattern
                .split_once('/')
                .is_some_and(|(o, r)| o == owner && (r == "*" || r == name))
        });
        if granted {
            Ok(())
        } else {
            Err(format!(
                "repository {owner}/{name} is not in this agent's grant ({})",
                self.repositories.join(", ")
            ))
        }
    }

    async fn run(&self, action: &str, input: Value) -> Result<Value, ToolError> {
        let (owner, repo) = Self::repo(&input).map_err(ToolError::InvalidInput)?;
        let number = Self::number(&input);
        let text = |name: &str| input.get(name).and_then(Value::as_str).map(str::to_string);
        match action {
            "issues.list" => {
                let mut query = vec![("per_page", "100".to_string())];
                for name in ["state", "labels", "since"] {
                    if let Some(value) = text(name) {
                        query.push((name, value));
                    }
                }
                let max = input
                    .get("max_items")
                    .and_then(Value::as_u64)
                    .unwrap_or(100);
                self.list(&["repos", owner, repo, "issues"], query, max)
                    .await
            }
            "issues.get" => Ok(self
                .request(
                    Method::GET,
                    &["repos", owner, repo, "issues", &number],
                    &[],
                    None,
                )
                .await?
                .0),
            "pulls.get" => Ok(self
                .request(
                    Method::GET,
                    &["repos", owner, repo, "pulls", &number],
                    &[],
                    None,
                )
                .await?
                .0),
            "issues.create" => {
                let mut body = json!({"title": input["title"]});
                for name in ["body", "labels"] {
                    if let Some(value) = input.get(name) {
                        body[name] = value.clone();
                    }
                }
                Ok(self
                    .request(
                        Method::POST,
                        &["repos", owner, repo, "issues"],
                        &[],
                        Some(body),
                    )
                    .await?
                    .0)
            }
            "issues.comment" => Ok(self
                .request(
                    Method::POST,
                    &["repos", owner, repo, "issues", &number, "comments"],
                    &[],
                    Some(json!({"body": input["body"]})),
                )
                .await?
                .0),
            "issues.add_labels" => Ok(self
                .request(
                    Method::POST,
                    &["repos", owner, repo, "issues", &number, "labels"],
                    &[],
                    Some(json!({"labels": input["labels"]})),
                )
                .await?
                .0),
            "repos.get_content" => {
                let path = text("path").unwrap_or_default();
                let segments = content_path(&path).map_err(ToolError::InvalidInput)?;
                let mut all = vec!["repos", owner, repo, "contents"];
                all.extend(segments.iter().map(String::as_str));
                let query: Vec<(&str, String)> =
                    text("ref").map(|r| vec![("ref", r)]).unwrap_or_default();
                Ok(self.request(Method::GET, &all, &query, None).await?.0)
            }
            other => Err(ToolError::NotGranted(format!("unknown action {other:?}"))),
        }
    }
}

/// Splits a file path inside a repository into segments, refusing `..`,
/// `.`, empty segments, backslashes and control characters, so the path
/// cannot climb out of `contents/`.
fn content_path(path: &str) -> Result<Vec<String>, String> {
    let mut segments = Vec::new();
    for segment in path.trim_matches('/').split('/') {
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.contains('\\')
            || segment.chars().any(char::is_control)
        {
            return Err(format!(
                "path {path:?} is not a plain path inside the repository"
            ));
        }
        segments.push(segment.to_string());
    }
    Ok(segments)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_paths() {
        assert!(validate_pattern("acme/support").is_ok());
        assert!(validate_pattern("acme/*").is_ok());
        for bad in ["acme", "*/*", "acme/..", "ac me/x", "acme/a/b"] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
        assert_eq!(content_path("docs/a.md").unwrap(), ["docs", "a.md"]);
        for bad in ["../secrets", "docs/../../x", "a//b", "a\\b", "./a"] {
            assert!(content_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_links() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            r#"<https://api.github.com/repos/a/b/issues?page=2>; rel="next", <https://api.github.com/repos/a/b/issues?page=5>; rel="last""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).unwrap(),
            "https://api.github.com/repos/a/b/issues?page=2"
        );
    }
}
