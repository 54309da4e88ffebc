//! From a manifest's `[tools.*]` grants to the tools an agent may open.
//!
//! ```toml
//! [tools.github]                      # kind defaults to the tool's name
//! credential = "github-bot"           # vault key of provider `github`
//! actions = ["issues.get", "issues.add_labels"]
//! resources = ["acme/support", "acme/*"]
//!
//! [tools.slack]
//! credential = "slack-bot"
//! actions = ["chat.postMessage"]
//! resources = ["C0123456789"]         # channel ids
//!
//! [tools.notion]
//! credential = "notion-reports"
//! actions = ["pages.create", "blocks.children.append"]
//! resources = ["2f1c…"]               # parent page / database ids
//!
//! [tools.weather]
//! kind = "http"
//! credential = "weather-key"          # vault key of provider `http`
//! credential_header = "x-api-key"
//! credential_format = "{credential}"
//! actions = ["request"]
//! rules = [{ methods = ["GET"], url = "https://api.weather.example/v1/" }]
//! ```
//!
//! Every grant also takes `base_url`, `timeout_ms`, `max_response_bytes`,
//! `allow_http` and `allow_private` (hosts), and `cassette` to answer from
//! recorded calls (see [`crate::providers::replay`]). Nothing is granted
//! unless listed: no action, resource, host, plain http or private address.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};

use super::connector::{ConnectorTool, Credential, DecisionSink, Endpoint, Identity};
use super::{ToolBackend, ToolGrants};
use crate::egress::EgressPolicy;
use crate::manifest::ToolGrant;
use crate::providers::binding::Services;
use crate::providers::replay::Cassette;

/// Default time for one tool request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest response.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 << 20;
/// Largest response an operator may allow.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Builds the tools `grants` describe for `agent`. Credentials are checked
/// against the vault now, so a missing or mismatched key fails the load, not
/// the first call.
pub fn build(
    agent: &str,
    grants: &BTreeMap<String, ToolGrant>,
    base_dir: &Path,
    services: Option<&Arc<Services>>,
    sink: Option<Arc<dyn DecisionSink>>,
) -> Result<ToolGrants, String> {
    let mut tools = ToolGrants::new();
    for (name, grant) in grants {
        let replay = match &grant.cassette {
            Some(path) => Some(Arc::new(Cassette::load(&base_dir.join(path))?)),
            None => None,
        };
        let tool = build_one(agent, name, grant, services, sink.clone(), replay)
            .map_err(|e| format!("tools.{name}: {e}"))?;
        tools.insert(name.clone(), tool);
    }
    Ok(tools)
}

fn build_one(
    agent: &str,
    name: &str,
    grant: &ToolGrant,
    services: Option<&Arc<Services>>,
    sink: Option<Arc<dyn DecisionSink>>,
    replay: Option<Arc<Cassette>>,
) -> Result<Arc<dyn ToolBackend>, String> {
    let kind = grant.kind.as_deref().unwrap_or(name);
    let (vault_kind, default_base): (&'static str, Option<&str>) = match kind {
        "github" => ("github", Some(super::github::DEFAULT_BASE_URL)),
        "slack" => ("slack", Some(super::slack::DEFAULT_BASE_URL)),
        "notion" => ("notion", Some(super::notion::DEFAULT_BASE_URL)),
        "http" => ("http", None),
        other => {
            return Err(format!(
                "kind {other:?} is not github, slack, notion or http (set `kind` when the tool's name is not its kind)"
            ));
        }
    };
    let credential = match &grant.credential {
        // A replayed tool sends nothing, so it needs no credential.
        _ if replay.is_some() => None,
        Some(key_id) => {
            let services = services.ok_or_else(|| {
                "a credential needs a state directory with the key vault (`clawcage init`, then --state-dir)".to_string()
            })?;
            let info = services
                .vault
                .info(key_id)
                .map_err(|e| format!("credential: {e}"))?;
            if info.provider != vault_kind {
                return Err(format!(
                    "credential {key_id:?} is a {} key, not a {vault_kind} one",
                    info.provider
                ));
            }
            Some(Credential {
                key_id: key_id.clone(),
                kind: vault_kind,
            })
        }
        None if kind == "http" => None,
        None => return Err(format!("credential is required for {kind}")),
    };
    let rules = http_rules(kind, grant)?;
    let base = match (&grant.base_url, default_base, rules.first()) {
        (Some(url), _, _) => url.clone(),
        (None, Some(url), _) => url.to_string(),
        (None, None, Some(rule)) => rule.prefix.origin().ascii_serialization(),
        (None, None, None) => return Err("rules must list at least one URL prefix".into()),
    };
    let base = Url::parse(&base).map_err(|e| format!("base_url {base:?}: {e}"))?;
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        return Err(format!("base_url {base} is not an http(s) URL"));
    }
    let policy = Arc::new(EgressPolicy::new(&grant.allow_http, &grant.allow_private));
    // Plain http or a loopback base is refused now rather than on every
    // call, so a mistyped manifest fails at load.
    if kind != "http" {
        policy
            .check_url(&base)
            .map_err(|e| format!("base_url {base}: {e} (see allow_http / allow_private)"))?;
    }
    let max_response_bytes = grant
        .max_response_bytes
        .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
    if max_response_bytes == 0 || max_response_bytes > MAX_RESPONSE_BYTES {
        return Err(format!(
            "max_response_bytes must be 1 to {MAX_RESPONSE_BYTES}"
        ));
    }
    let timeout = grant
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    if timeout.is_zero() || timeout > Duration::from_secs(600) {
        return Err("timeout_ms must be 1 to 600000".into());
    }
    let client = crate::egress::client(policy.clone(), timeout)?;
    let header_name = grant
        .credential_header
        .as_deref()
        .unwrap_or("authorization");
    let auth_header = (
        HeaderName::from_bytes(header_name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("credential_header {header_name:?} is not a header name"))?,
        grant
            .credential_format
            .clone()
            .unwrap_or_else(|| "Bearer {credential}".into()),
    );
    if !auth_header.1.contains("{credential}") {
        return Err("credential_format must contain {credential}".into());
    }
    if kind != "http" && (grant.credential_header.is_some() || grant.credential_format.is_some()) {
        return Err(format!(
            "{kind} sends its credential its own way; remove credential_header and credential_format"
        ));
    }
    let fixed_headers = match kind {
        "github" => vec![
            header("accept", "application/vnd.github+json"),
            header("x-github-api-version", super::github::API_VERSION),
        ],
        "notion" => vec![header("notion-version", super::notion::API_VERSION)],
        _ => vec![],
    };
    let credential_key_id = credential.as_ref().map(|c| c.key_id.clone());
    let endpoint = Endpoint {
        base,
        policy,
        client,
        credential,
        auth_header,
        fixed_headers,
        max_response_bytes: max_response_bytes as usize,
        services: services.cloned(),
    };
    let identity = Identity {
        agent: Arc::from(agent),
        tool: name.to_string(),
        sink,
        services: services.cloned(),
        credential: credential_key_id,
    };
    let tool: Arc<dyn ToolBackend> = match kind {
        "github" => {
            for pattern in &grant.resources {
                super::github::validate_pattern(pattern)?;
            }
            Arc::new(ConnectorTool::with_replay(
                super::github::GitHub {
                    endpoint,
                    repositories: grant.resources.iter().map(|r| r.to_lowercase()).collect(),
                },
                &grant.actions,
                identity,
                replay,
            )?)
        }
        "slack" => {
            if let Some(bad) = grant
                .resources
                .iter()
                .find(|c| !super::slack::valid_channel(c))
            {
                return Err(format!("{bad:?} is not a channel id (C…, G… or D…)"));
            }
            Arc::new(ConnectorTool::with_replay(
                super::slack::Slack {
                    endpoint,
                    channels: grant.resources.clone(),
                },
                &grant.actions,
                identity,
                replay,
            )?)
        }
        "notion" => {
            let mut granted = HashSet::new();
            for id in &grant.resources {
                granted.insert(
                    super::notion::normalise_id(id)
                        .ok_or_else(|| format!("{id:?} is not a Notion id"))?,
                );
            }
            Arc::new(ConnectorTool::with_replay(
                super::notion::Notion {
                    endpoint,
                    granted,
                    created: Mutex::new(HashSet::new()),
                },
                &grant.actions,
                identity,
                replay,
            )?)
        }
        _ => {
            if !grant.resources.is_empty() {
                return Err("http grants use rules, not resources".into());
            }
            Arc::new(ConnectorTool::with_replay(
                super::http::HttpTool { endpoint, rules },
                &grant.actions,
                identity,
                replay,
            )?)
        }
    };
    if grant.actions.is_empty() {
        return Err("actions must name at least one action".into());
    }
    Ok(tool)
}

fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

fn http_rules(kind: &str, grant: &ToolGrant) -> Result<Vec<super::http::Rule>, String> {
    if kind != "http" {
        if !grant.rules.is_empty() {
            return Err(format!("{kind} grants use resources, not rules"));
        }
        return Ok(vec![]);
    }
    let mut rules = Vec::new();
    for spec in &grant.rules {
        let prefix = super::http::parse_prefix(&spec.url)?;
        let mut methods = Vec::new();
        for method in &spec.methods {
            methods.push(
                Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("{method:?} is not an HTTP method"))?,
            );
        }
        if methods.is_empty() {
            return Err(format!("rule for {} lists no methods", spec.url));
        }
        rules.push(super::http::Rule { methods, prefix });
    }
    // One origin per grant, so the credential reaches one API only.
    if let Some(first) = rules.first()
        && let Some(other) = rules
            .iter()
            .find(|r| r.prefix.origin() != first.prefix.origin())
    {
        return Err(format!(
            "all rules of one grant must share an origin ({} and {}); grant another tool for another API",
            first.prefix.origin().ascii_serialization(),
            other.prefix.origin().ascii_serialization()
        ));
    }
    Ok(rules)
}
