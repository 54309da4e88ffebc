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

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

use super::connector::{Connector, ConnectorTool, Credential, DecisionSink, Endpoint, Identity};
use super::github::GitHub;
use super::http::HttpTool;
use super::notion::Notion;
use super::slack::Slack;
use super::{ToolBackend, ToolGrants};
use crate::egress::EgressPolicy;
use crate::manifest::ToolGrant;
use crate::providers::binding::Services;
use crate::providers::replay::Cassette;

/// Default time for one tool request.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest response.
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: u64 = 4 << 20;
/// Largest response an operator may allow.
pub(crate) const MAX_RESPONSE_BYTES: u64 = 64 << 20;

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
    if grant.actions.is_empty() {
        return Err("actions must name at least one action".into());
    }
    let parts = Parts {
        agent,
        name,
        grant,
        services,
        sink,
        replay,
    };
    match grant.kind.as_deref().unwrap_or(name) {
        GitHub::KIND => parts.build::<GitHub>(),
        Slack::KIND => parts.build::<Slack>(),
        Notion::KIND => parts.build::<Notion>(),
        HttpTool::KIND => parts.build::<HttpTool>(),
        other => Err(format!(
            "kind {other:?} is not github, slack, notion or http (set `kind` when the tool's name is not its kind)"
        )),
    }
}

/// What one grant's tool is built from.
struct Parts<'g> {
    agent: &'g str,
    name: &'g str,
    grant: &'g ToolGrant,
    services: Option<&'g Arc<Services>>,
    sink: Option<Arc<dyn DecisionSink>>,
    replay: Option<Arc<Cassette>>,
}

impl Parts<'_> {
    /// The grant's tool, as connector `C` describes itself: credential,
    /// endpoint, scope and actions, each checked now.
    fn build<C: Connector>(self) -> Result<Arc<dyn ToolBackend>, String> {
        let credential = self.credential::<C>()?;
        let credential_key_id = credential.as_ref().map(|c| c.key_id.clone());
        let endpoint = self.endpoint::<C>(credential)?;
        let connector = C::from_grant(endpoint, self.grant)?;
        let identity = Identity {
            agent: Arc::from(self.agent),
            tool: self.name.to_string(),
            sink: self.sink,
            services: self.services.cloned(),
            credential: credential_key_id,
        };
        Ok(Arc::new(ConnectorTool::with_replay(
            connector,
            &self.grant.actions,
            identity,
            self.replay,
        )?))
    }

    /// The grant's credential, checked against the vault: it exists and is
    /// a key of the connector's kind. A replayed tool sends nothing, so it
    /// needs none.
    fn credential<C: Connector>(&self) -> Result<Option<Credential>, String> {
        let key_id = match &self.grant.credential {
            _ if self.replay.is_some() => return Ok(None),
            Some(key_id) => key_id,
            None if C::NEEDS_CREDENTIAL => {
                return Err(format!("credential is required for {}", C::KIND));
            }
            None => return Ok(None),
        };
        let services = self.services.ok_or_else(|| {
            "a credential needs a state directory with the key vault (`clawcage init`, then --state-dir)".to_string()
        })?;
        let info = services
            .vault
            .info(key_id)
            .map_err(|e| format!("credential: {e}"))?;
        if info.provider != C::KIND {
            return Err(format!(
                "credential {key_id:?} is a {} key, not a {} one",
                info.provider,
                C::KIND
            ));
        }
        Ok(Some(Credential {
            key_id: key_id.clone(),
            kind: C::KIND,
        }))
    }

    /// Where the tool's requests go and how: base URL, egress policy,
    /// client with the grant's timeout, credential header, fixed headers
    /// and the response bound.
    fn endpoint<C: Connector>(&self, credential: Option<Credential>) -> Result<Endpoint, String> {
        let grant = self.grant;
        let base = match &grant.base_url {
            Some(url) => url.clone(),
            None => C::default_base_url(grant)?,
        };
        let base = Url::parse(&base).map_err(|e| format!("base_url {base:?}: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(format!("base_url {base} is not an http(s) URL"));
        }
        let policy = Arc::new(EgressPolicy::new(&grant.allow_http, &grant.allow_private));
        // Plain http or a loopback base is refused now rather than on every
        // call, so a mistyped manifest fails at load. (An http grant's
        // rules are checked per request, against their own hosts.)
        if !C::CUSTOM_CREDENTIAL_HEADER {
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
        if !C::CUSTOM_CREDENTIAL_HEADER
            && (grant.credential_header.is_some() || grant.credential_format.is_some())
        {
            return Err(format!(
                "{} sends its credential its own way; remove credential_header and credential_format",
                C::KIND
            ));
        }
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
        let fixed_headers = C::FIXED_HEADERS
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect();
        Ok(Endpoint {
            base,
            policy,
            client,
            credential,
            auth_header,
            fixed_headers,
            max_response_bytes: max_response_bytes as usize,
            services: self.services.cloned(),
        })
    }
}
