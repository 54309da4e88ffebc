//! What every connector shares: the action table with validated schemas,
//! the decision log, and one HTTP path that applies the egress policy,
//! injects the credential and bounds the reply.
//!
//! Key containment: every request that carries a credential registers a
//! [`LeakGuard`] for it with the tool call being run ([`ConnectorTool`]
//! sets that scope up; a credential is never sent outside one). Each reply
//! body is checked whole as it is read, and the call's final result or error
//! is checked again before the guest gets it. A hit fails the call with
//! `leak-blocked` and suspends the grant for the agent.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::{ActionInfo, ToolBackend, ToolError};
use crate::bindings::types::{RateLimit, UpstreamError};
use crate::egress::EgressPolicy;
use crate::leak::{LeakDetected, LeakGuard};
use crate::manifest::ToolGrant;
use crate::outbound::ReadError;
use crate::providers::binding::{LeakReport, Services};
use crate::suspend::Capability;

/// One action a connector can offer.
#[derive(Debug, Clone)]
pub(crate) struct Action {
    /// The action's name, as granted and called.
    pub name: &'static str,
    /// What it does, for the agent and its model.
    pub description: &'static str,
    /// The JSON Schema of its input.
    pub schema: Value,
}

/// A decision on one tool call: metadata only, never the payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// The agent.
    pub agent: String,
    /// The tool, as granted.
    pub tool: String,
    /// The action.
    pub action: String,
    /// The resource the call would touch (repository, channel, page, URL).
    pub resource: String,
    /// Whether it was allowed.
    pub allowed: bool,
    /// Why it was denied.
    pub reason: Option<String>,
    /// The event during which the call was made.
    pub event_id: Option<String>,
}

/// The longest guest- or upstream-chosen string a log line quotes.
pub(crate) const MAX_QUOTED_BYTES: usize = 512;

/// Where decisions go: the host's logs always, and any sink installed (the
/// daemon's audit log, or a test).
pub trait DecisionSink: Send + Sync + 'static {
    /// Records one decision.
    fn record(&self, decision: &Decision);
}

/// Records a decision in the logs and the sink.
pub(crate) fn record_decision(sink: Option<&Arc<dyn DecisionSink>>, decision: Decision) {
    // The resource and reason can quote what the guest sent (a URL of
    // kilobytes): the log line quotes a bounded prefix.
    let bound =
        |text: &str| crate::text::truncate_at_char_boundary(text, MAX_QUOTED_BYTES).to_string();
    tracing::info!(
        target: "clawcage::decision",
        agent = %decision.agent,
        tool = %decision.tool,
        action = %decision.action,
        resource = %bound(&decision.resource),
        allowed = decision.allowed,
        reason = %bound(decision.reason.as_deref().unwrap_or("")),
        event_id = decision.event_id.as_deref().unwrap_or(""),
        "tool call decision"
    );
    if let Some(sink) = sink {
        sink.record(&decision);
    }
}

/// A connector: a service's actions, run on validated input.
#[async_trait::async_trait]
pub(crate) trait Connector: Send + Sync + 'static {
    /// The grant `kind` this connector serves, which is also the vault
    /// provider its credential must be stored under.
    const KIND: &'static str;
    /// Whether a grant must name a credential.
    const NEEDS_CREDENTIAL: bool = true;
    /// Whether a grant may choose the credential's header and format
    /// (`credential_header`, `credential_format`); a service's own
    /// connector sends it the service's way.
    const CUSTOM_CREDENTIAL_HEADER: bool = false;
    /// Headers sent with every request (API version, media type).
    const FIXED_HEADERS: &'static [(&'static str, &'static str)] = &[];

    /// The API's base URL when the grant names none.
    fn default_base_url(grant: &ToolGrant) -> Result<String, String>
    where
        Self: Sized;
    /// The connector for a grant, its scope (resources or rules) checked.
    fn from_grant(endpoint: Endpoint, grant: &ToolGrant) -> Result<Self, String>
    where
        Self: Sized;
    /// Every action the connector supports.
    fn catalogue() -> Vec<Action>
    where
        Self: Sized;
    /// The resource `input` names, for the scope check and the decision.
    fn resource(&self, action: &str, input: &Value) -> String;
    /// Whether the grant covers that resource; `Err` says why not.
    fn in_scope(&self, action: &str, input: &Value) -> Result<(), String>;
    /// Runs an action whose input passed its schema and the scope check.
    async fn run(&self, action: &str, input: Value) -> Result<Value, ToolError>;
}

/// Refuses `rules` on a grant whose scope is its `resources`.
pub(crate) fn resources_only(kind: &str, grant: &ToolGrant) -> Result<(), String> {
    if grant.rules.is_empty() {
        Ok(())
    } else {
        Err(format!("{kind} grants use resources, not rules"))
    }
}

/// A granted tool backed by a connector: checks the suspension, the schema
/// and the scope, records the decision, runs the action and checks the
/// result for the credentials the call carried.
pub(crate) struct ConnectorTool<C> {
    connector: C,
    actions: Vec<Action>,
    identity: Identity,
    replay: Option<Arc<crate::providers::replay::Cassette>>,
}

/// Who is calling what, for decisions.
#[derive(Clone)]
pub(crate) struct Identity {
    /// The agent.
    pub agent: Arc<str>,
    /// The tool's granted name.
    pub tool: String,
    /// Where decisions go besides the logs.
    pub sink: Option<Arc<dyn DecisionSink>>,
    /// The host's services: suspensions and leak reports. `None` when the
    /// host holds no secrets.
    pub services: Option<Arc<Services>>,
    /// The vault key id of the grant's credential, if it has one.
    pub credential: Option<String>,
}

tokio::task_local! {
    /// The guards of the credentials the tool call being run has sent, and
    /// the first leak found in a reply.
    static CARRIED: std::cell::RefCell<Carried>;
}

/// What one tool call's requests carried.
#[derive(Default)]
struct Carried {
    guards: Vec<(String, LeakGuard)>,
    leak: Option<(String, LeakDetected)>,
}

impl Carried {
    /// Checks what the guest is about to get against every guard.
    fn check(&self, result: &Result<String, ToolError>) -> Result<(), (String, LeakDetected)> {
        for (key_id, guard) in &self.guards {
            let checked = match result {
                Ok(json) => guard.check_json(json),
                Err(error) => guard.check(&error_text(error)),
            };
            checked.map_err(|leak| (key_id.clone(), leak))?;
        }
        Ok(())
    }
}

/// The text of a tool error that the guest would read.
fn error_text(error: &ToolError) -> String {
    match error {
        ToolError::NotGranted(m)
        | ToolError::Denied(m)
        | ToolError::InvalidInput(m)
        | ToolError::LeakBlocked(m) => m.clone(),
        ToolError::Upstream(e) => e.message.clone(),
        ToolError::RateLimited(l) => l.message.clone(),
    }
}

impl<C: Connector> ConnectorTool<C> {
    /// A tool offering `granted` actions of `connector` (unknown names are
    /// an error naming them), answering checked calls from `replay`
    /// instead of the service when given.
    pub(crate) fn with_replay(
        connector: C,
        granted: &[String],
        identity: Identity,
        replay: Option<Arc<crate::providers::replay::Cassette>>,
    ) -> Result<Self, String> {
        let catalogue = C::catalogue();
        let mut actions = Vec::new();
        for name in granted {
            let action = catalogue.iter().find(|a| a.name == name).ok_or_else(|| {
                format!(
                    "unknown action {name:?}; this tool offers {}",
                    catalogue
                        .iter()
                        .map(|a| a.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            actions.push(action.clone());
        }
        Ok(Self {
            connector,
            actions,
            identity,
            replay,
        })
    }
}

#[async_trait::async_trait]
impl<C: Connector> ToolBackend for ConnectorTool<C> {
    fn actions(&self) -> Vec<ActionInfo> {
        self.actions
            .iter()
            .map(|a| ActionInfo {
                name: a.name.to_string(),
                description: a.description.to_string(),
                input_schema: a.schema.to_string(),
            })
            .collect()
    }

    async fn call(&self, action: &str, input: Value) -> Result<String, ToolError> {
        let services = self.identity.services.as_ref();
        self.check_suspended()?;
        let Some(spec) = self.actions.iter().find(|a| a.name == action) else {
            return Err(ToolError::NotGranted(format!(
                "action {action:?} is not granted"
            )));
        };
        super::schema::validate(&spec.schema, &input).map_err(ToolError::InvalidInput)?;
        let resource = self.connector.resource(action, &input);
        let scope = self.connector.in_scope(action, &input);
        record_decision(
            self.identity.sink.as_ref(),
            Decision {
                agent: self.identity.agent.to_string(),
                tool: self.identity.tool.clone(),
                action: action.to_string(),
                resource,
                allowed: scope.is_ok(),
                reason: scope.as_ref().err().cloned(),
                event_id: super::current_event().map(|e| e.to_string()),
            },
        );
        scope.map_err(ToolError::Denied)?;
        if let Some(cassette) = &self.replay {
            return cassette.find_tool(&self.identity.tool, action, &input);
        }
        let (result, carried) = CARRIED
            .scope(std::cell::RefCell::new(Carried::default()), async {
                let result = self
                    .connector
                    .run(action, input)
                    .await
                    .map(|value| value.to_string());
                (result, CARRIED.with(std::cell::RefCell::take))
            })
            .await;
        let leak = match carried.leak.clone() {
            Some(leak) => Some(leak),
            None => carried.check(&result).err(),
        };
        match (leak, services) {
            // Checked again before the answer is delivered: a call in flight
            // when another call's hit suspended the grant answers like any
            // call after it.
            (None, _) => self.check_suspended().and(result),
            (Some((key_id, leak)), Some(services)) => {
                Err(ToolError::LeakBlocked(services.leak_blocked(LeakReport {
                    agent: self.identity.agent.to_string(),
                    capability: Capability::Tool,
                    name: self.identity.tool.clone(),
                    key_id: Some(key_id),
                    event_id: super::current_event().map(|e| e.to_string()),
                    view: leak.view,
                })))
            }
            // Unreachable: a credential is only sent with services.
            (Some(_), None) => Err(ToolError::LeakBlocked(
                "the answer carried the tool's credential and was withheld".into(),
            )),
        }
    }
}

impl<C> ConnectorTool<C> {
    /// Fails with `leak-blocked` if the grant, or its credential, is
    /// suspended for the agent.
    fn check_suspended(&self) -> Result<(), ToolError> {
        let identity = &self.identity;
        match identity.services.as_ref().and_then(|s| {
            s.suspended(
                &identity.agent,
                Capability::Tool,
                &identity.tool,
                identity.credential.as_deref(),
            )
        }) {
            Some(message) => Err(ToolError::LeakBlocked(message)),
            None => Ok(()),
        }
    }
}

/// The credential a connector injects: a vault key id and the provider
/// kind the vault must have it under.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Vault key id.
    pub key_id: String,
    /// The key's provider kind in the vault (`github`, `slack`, …).
    pub kind: &'static str,
}

/// One service endpoint: base URL, egress policy, client and credential.
pub struct Endpoint {
    /// The base URL; request paths are appended to its path.
    pub base: Url,
    /// The egress policy.
    pub policy: Arc<EgressPolicy>,
    /// The client (its resolver applies the policy).
    pub client: reqwest::Client,
    /// The credential, if any.
    pub credential: Option<Credential>,
    /// How the credential is sent: header name and a value template in
    /// which `{credential}` is replaced.
    pub auth_header: (HeaderName, String),
    /// Headers every request carries (API versions).
    pub fixed_headers: Vec<(HeaderName, HeaderValue)>,
    /// Largest reply read.
    pub max_response_bytes: usize,
    /// Vault and leak reports; `None` when the host holds no secrets.
    pub services: Option<Arc<Services>>,
}

/// A reply from a service, its body bounded.
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, already checked whole for the credential it carried.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Endpoint {
    /// The base URL with `segments` appended, each percent-encoded as one
    /// path segment (so `../` or `/` inside a value cannot move the path),
    /// and `query` pairs.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, ToolError> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ToolError::InvalidInput("the base URL cannot take a path".into()))?;
            path.pop_if_empty();
            for segment in segments {
                let dots_only = segment
                    .to_ascii_lowercase()
                    .replace("%2e", ".")
                    .chars()
                    .all(|c| c == '.');
                if segment.is_empty() || dots_only || segment.chars().any(char::is_control) {
                    return Err(ToolError::InvalidInput(format!(
                        "{segment:?} is not a valid path segment"
                    )));
                }
                path.push(segment);
            }
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// Sends a request to `segments` under the base URL with an optional
    /// JSON body; see [`Endpoint::send`].
    pub(crate) async fn send_json(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Reply, ToolError> {
        let url = self.url(segments, query)?;
        let body = body.map(|b| b.to_string().into_bytes());
        self.send(method, url, body, vec![]).await
    }

    /// Sends one request: egress check, credential, bounded reply. A 3xx is
    /// refused (redirects are never followed).
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        extra_headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Reply, ToolError> {
        self.policy
            .check_url(&url)
            .map_err(|denied| ToolError::Denied(denied.0))?;
        let mut request = self.client.request(method, url.clone());
        for (name, value) in &self.fixed_headers {
            request = request.header(name, value.clone());
        }
        let has_content_type = extra_headers
            .iter()
            .any(|(name, _)| name == reqwest::header::CONTENT_TYPE);
        for (name, value) in extra_headers {
            request = request.header(name, value);
        }
        // The leak check reads the body as sent: ask for it uncompressed.
        request = request.header(reqwest::header::ACCEPT_ENCODING, "identity");
        let mut guard = None;
        if let Some(credential) = &self.credential {
            let services = self
                .services
                .as_ref()
                .ok_or_else(|| unavailable("no key vault holds the credential"))?;
            let (secret, previous) = services
                .vault
                .secret_and_previous(&credential.key_id, credential.kind)
                .map_err(|e| unavailable(format!("credential {:?}: {e}", credential.key_id)))?;
            let header = crate::outbound::credential_header(&self.auth_header.1, &secret)
                .map_err(unavailable)?;
            request = request.header(self.auth_header.0.clone(), header);
            let carried = Services::guard_for(credential.kind, &secret, previous.as_ref());
            // Fail closed: a credential goes out only where its answer
            // will be checked.
            CARRIED
                .try_with(|c| {
                    c.borrow_mut()
                        .guards
                        .push((credential.key_id.clone(), carried.clone()))
                })
                .map_err(|_| unavailable("a credential may only be sent inside a tool call"))?;
            guard = Some((credential.key_id.clone(), carried));
        }
        if let Some(body) = body {
            if !has_content_type {
                request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            request = request.body(body);
        }
        let response = request.send().await.map_err(|e| {
            if let Some(denied) = crate::egress::denial_in(&e) {
                ToolError::Denied(denied.0)
            } else if e.is_timeout() {
                unavailable("the service did not answer in time")
            } else {
                unavailable(format!(
                    "cannot reach {}",
                    url.host_str().unwrap_or("the service")
                ))
            }
        })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok());
            return Err(ToolError::Denied(
                self.policy.check_redirect(&url, location).0,
            ));
        }
        let headers = response.headers().clone();
        // A compressed or partial body could carry the credential in a form
        // no check reads; neither was asked for, so neither is taken.
        if let Some(refused) = unreadable_body(status, &headers) {
            return Err(ToolError::Upstream(UpstreamError {
                status: Some(status.as_u16()),
                message: refused.into(),
            }));
        }
        // The client's timeout bounds the whole request, body included.
        let limits = crate::outbound::ReadLimits {
            max: self.max_response_bytes,
            idle: None,
            by: None,
        };
        let body = crate::outbound::read_bounded(response, limits)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge(_) => ToolError::Upstream(UpstreamError {
                    status: Some(status.as_u16()),
                    message: e.to_string(),
                }),
                _ => unavailable(e.to_string()),
            })?;
        if let Some((key_id, guard)) = &guard {
            // The whole body, not only what the connector passes on: a quote
            // cut at some length must not leave a key's first bytes in it.
            let whole =
                guard
                    .scanner()
                    .feed(&body)
                    .and_then(|()| match std::str::from_utf8(&body) {
                        Ok(text) => guard.check_json_strings(text),
                        Err(_) => Ok(()),
                    });
            if let Err(leak) = whole {
                let _ = CARRIED.try_with(|c| {
                    c.borrow_mut().leak.get_or_insert((key_id.clone(), leak));
                });
                return Err(ToolError::LeakBlocked(
                    "the answer carried the tool's credential and was withheld".into(),
                ));
            }
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

pub use crate::outbound::unreadable_body;

/// An upstream failure without an HTTP status (unreachable, timed out).
pub fn unavailable(message: impl Into<String>) -> ToolError {
    ToolError::Upstream(UpstreamError {
        status: None,
        message: message.into(),
    })
}

/// A rate-limit error.
pub fn rate_limited(retry_after: Option<Duration>, message: String) -> ToolError {
    ToolError::RateLimited(RateLimit {
        retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
        message,
    })
}

/// How long the service asks to wait (see [`crate::outbound::retry_after`]).
pub(crate) fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    crate::outbound::retry_after(headers)
}

/// The first of several string fields of a JSON object.
pub(crate) fn str_field<'v>(value: &'v Value, names: &[&str]) -> Option<&'v str> {
    names.iter().find_map(|name| value.get(*name)?.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_schema_uses_only_validated_keywords() {
        let catalogues = [
            <super::super::github::GitHub as Connector>::catalogue(),
            <super::super::slack::Slack as Connector>::catalogue(),
            <super::super::notion::Notion as Connector>::catalogue(),
            <super::super::http::HttpTool as Connector>::catalogue(),
        ];
        for action in catalogues.iter().flatten() {
            let unknown = super::super::schema::unknown_keywords(&action.schema);
            assert!(unknown.is_empty(), "{}: {unknown:?}", action.name);
            assert_eq!(action.schema["type"], "object", "{}", action.name);
            assert_eq!(
                action.schema["additionalProperties"], false,
                "{}",
                action.name
            );
        }
    }
}
