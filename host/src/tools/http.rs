//! The generic HTTP tool, for any other API.
//!
//! A grant lists rules, each a set of methods and a URL prefix (scheme, host,
//! port and path prefix); every rule of one grant names the same origin, so
//! its credential (injected into a header by template) can only ever reach
//! that API. The single action, `request`, takes `{method, url, headers,
//! body}` and answers `{status, content_type, body}`, the body parsed when
//! the answer is JSON; the URL must match a rule after normalisation: dot segments are
//! resolved, and percent-encoded dots, slashes and backslashes in the path
//! are refused, so `..` and encoded tricks cannot leave the prefix.

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::ToolError;
use super::connector::{Action, Connector, Endpoint, rate_limited, retry_after_header};
use crate::bindings::types::UpstreamError;
use crate::manifest::ToolGrant;

/// Most headers a guest may set on one request.
pub(crate) const MAX_HEADERS: usize = 32;
/// Headers a guest may never set: framing, routing, hop-by-hop, ambient
/// credentials, and what would change the bytes of the answer (a
/// compressed or partial body would carry an echoed credential past the
/// leak check). Besides these: `proxy-*`, `x-forwarded-*`,
/// `x-original-*`, `x-rewrite-*` and method overrides, which gateways honour
/// to change the method or path the rules checked.
const FORBIDDEN_HEADERS: &[&str] = &[
    "accept-encoding",
    "range",
    "if-range",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "cookie",
    "authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
];

/// One rule: methods and a URL prefix.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Allowed methods, upper-case.
    pub methods: Vec<Method>,
    /// The prefix: scheme, host, port and path.
    pub prefix: Url,
}

/// A generic HTTP grant.
pub(crate) struct HttpTool {
    /// The endpoint (its base is the rules' shared origin).
    pub endpoint: Endpoint,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// Parses a rule's URL prefix; it must be an absolute http(s) URL without
/// user information, query or fragment.
pub(crate) fn parse_prefix(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "{text:?} must be an http(s) URL prefix without user, query or fragment"
        ));
    }
    Ok(url)
}

/// Whether `path` is under `prefix`, on a segment boundary.
fn under(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix || path.starts_with(&format!("{prefix}/"))
    }
}

/// Refuses percent-encoded dots, slashes, backslashes and NULs in a path, so
/// a server that decodes them cannot be walked out of the prefix.
fn plain_path(path: &str) -> Result<(), String> {
    let lower = path.to_ascii_lowercase();
    for encoded in ["%2e", "%2f", "%5c", "%00"] {
        if lower.contains(encoded) {
            return Err(format!(
                "the path contains {encoded}; encoded dots, slashes and backslashes are refused"
            ));
        }
    }
    if path.contains('\\') {
        return Err("the path contains a backslash".into());
    }
    Ok(())
}

impl HttpTool {
    fn target(&self, input: &Value) -> Result<(Method, Url), String> {
        let method = input["method"].as_str().unwrap_or_default();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{method:?} is not an HTTP method"))?;
        let text = input["url"].as_str().unwrap_or_default();
        // The parser forgives what a server may not: tabs and newlines (it
        // drops them), backslashes (it reads them as slashes) and a missing
        // `//`. Refuse them, so what is checked is what was written.
        if text.contains(['\t', '\n', '\r', '\\']) || !text.contains("://") {
            return Err(format!(
                "{text:?} is not a plain absolute URL (no tabs, newlines or backslashes)"
            ));
        }
        let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if url.fragment().is_some() {
            return Err("URLs with a fragment are refused".into());
        }
        // The parsed path keeps percent-encodings as written and has its
        // plain dot segments resolved; refuse encoded ones.
        plain_path(url.path())?;
        Ok((method, url))
    }
}

/// A grant's rules, checked: each a URL prefix and its methods, all on one
/// origin so the credential reaches one API only.
pub(crate) fn rules_of(grant: &ToolGrant) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for spec in &grant.rules {
        let prefix = parse_prefix(&spec.url)?;
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
        rules.push(Rule { methods, prefix });
    }
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

#[async_trait::async_trait]
impl Connector for HttpTool {
    const KIND: &'static str = "http";
    const NEEDS_CREDENTIAL: bool = false;
    const CUSTOM_CREDENTIAL_HEADER: bool = true;

    /// The rules' shared origin.
    fn default_base_url(grant: &ToolGrant) -> Result<String, String> {
        match rules_of(grant)?.first() {
            Some(rule) => Ok(rule.prefix.origin().ascii_serialization()),
            None => Err("rules must list at least one URL prefix".into()),
        }
    }

    fn from_grant(endpoint: Endpoint, grant: &ToolGrant) -> Result<Self, String> {
        if !grant.resources.is_empty() {
            return Err("http grants use rules, not resources".into());
        }
        let rules = rules_of(grant)?;
        if rules.is_empty() {
            return Err("rules must list at least one URL prefix".into());
        }
        Ok(Self { endpoint, rules })
    }

    fn catalogue() -> Vec<Action> {
        vec![Action {
            name: "request",
            description: "Send an HTTP request to an allowed URL; returns the status, content type and body.",
            schema: json!({
                "type": "object",
                "required": ["method", "url"],
                "additionalProperties": false,
                "properties": {
                    "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]},
                    "url": {"type": "string", "minLength": 8, "maxLength": 8192},
                    "headers": {"type": "object"},
                    "body": {"type": "string", "maxLength": 1048576}
                }
            }),
        }]
    }

    fn resource(&self, _action: &str, input: &Value) -> String {
        let method = input["method"].as_str().unwrap_or_default();
        let url: String = input["url"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect();
        // Only the part before any query: a query may carry data.
        let url = url.split(['?', '#']).next().unwrap_or_default();
        format!("{method} {url}")
    }

    fn in_scope(&self, _action: &str, input: &Value) -> Result<(), String> {
        let (method, url) = self.target(input)?;
        self.endpoint.policy.check_url(&url).map_err(|e| e.0)?;
        let allowed = self.rules.iter().any(|rule| {
            rule.methods.contains(&method)
                && rule.prefix.scheme() == url.scheme()
                && rule.prefix.host_str().map(str::to_lowercase)
                    == url.host_str().map(str::to_lowercase)
                && rule.prefix.port_or_known_default() == url.port_or_known_default()
                && under(rule.prefix.path(), url.path())
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{method} {} is not allowed by this agent's rules",
                url.as_str().split('?').next().unwrap_or_default()
            ))
        }
    }

    async fn run(&self, _action: &str, input: Value) -> Result<Value, ToolError> {
        let (method, url) = self.target(&input).map_err(ToolError::Denied)?;
        let mut headers = Vec::new();
        if let Some(map) = input.get("headers").and_then(Value::as_object) {
            if map.len() > MAX_HEADERS {
                return Err(ToolError::InvalidInput(format!(
                    "more than {MAX_HEADERS} headers"
                )));
            }
            for (name, value) in map {
                let lower = name.to_ascii_lowercase();
                if FORBIDDEN_HEADERS.contains(&lower.as_str())
                    || lower.starts_with("proxy-")
                    || lower.starts_with("x-forwarded-")
                    || lower.starts_with("x-original-")
                    || lower.starts_with("x-rewrite-")
                    || lower.contains("method-override")
                    || lower == "x-http-method"
                    || lower == self.endpoint.auth_header.0.as_str()
                {
                    return Err(ToolError::InvalidInput(format!(
                        "header {name:?} may not be set by an agent"
                    )));
                }
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ToolError::InvalidInput(format!("{name:?} is not a header name"))
                })?;
                let value = value
                    .as_str()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                    .ok_or_else(|| {
                        ToolError::InvalidInput(format!(
                            "header {name}: the value must be a valid header string"
                        ))
                    })?;
                headers.push((name, value));
            }
        }
        let body = input
            .get("body")
            .and_then(Value::as_str)
            .map(|b| b.as_bytes().to_vec());
        let reply = self.endpoint.send(method, url, body, headers).await?;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let status = reply.status.as_u16();
        if status == 429 {
            return Err(rate_limited(
                retry_after_header(&reply.headers),
                "the service asked to slow down".into(),
            ));
        }
        if !reply.status.is_success() {
            // The endpoint checked the whole body for the credential before
            // this cut, so a cut through it leaves nothing to read.
            let excerpt: String = text.chars().take(512).collect();
            return Err(ToolError::Upstream(UpstreamError {
                status: Some(status),
                message: excerpt,
            }));
        }
        let content_type = reply
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // A JSON answer is handed back parsed, so the agent reads
        // `body.field`, not a string to parse again.
        let is_json = content_type
            .split(';')
            .next()
            .map(str::trim)
            .is_some_and(|media| media == "application/json" || media.ends_with("+json"));
        let body = match is_json.then(|| serde_json::from_str::<serde_json::Value>(&text)) {
            Some(Ok(parsed)) => parsed,
            _ => serde_json::Value::String(text),
        };
        Ok(json!({"status": status, "content_type": content_type, "body": body}))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn test_endpoint() -> Endpoint {
        let policy = std::sync::Arc::new(crate::egress::EgressPolicy::default());
        Endpoint {
            base: Url::parse("https://api.example/").unwrap(),
            client: crate::egress::client(policy.clone(), std::time::Duration::from_secs(1))
                .unwrap(),
            policy,
            credential: None,
            auth_header: (reqwest::header::AUTHORIZATION, "Bearer {credential}".into()),
            fixed_headers: vec![],
            max_response_bytes: 1024,
            services: None,
        }
    }

    #[test]
    fn prefixes_hold_on_segment_boundaries() {
        assert!(under("/v1/", "/v1/items"));
        assert!(!under("/v1/", "/v1"));
        assert!(under("/v1", "/v1"));
        assert!(under("/v1", "/v1/x"));
        assert!(!under("/v1", "/v1admin"));
        for bad in [
            "/v1/%2e%2e/admin",
            "/v1/%2E%2E/admin",
            "/v1/..%2fadmin",
            "/v1/a%5c..",
            "/v1\\..\\x",
        ] {
            assert!(plain_path(bad).is_err(), "{bad}");
        }
        assert!(plain_path("/v1/items/a%20b").is_ok());
        // What the parser forgives is refused before it can parse it away.
        let tool = HttpTool {
            endpoint: test_endpoint(),
            rules: vec![],
        };
        for bad in [
            "https:api.example/v1/..%2fadmin",
            "https://api.example\\v1\\..%2fadmin",
            "https://api.example/v1/..%2\tfadmin",
        ] {
            let input = serde_json::json!({"method": "GET", "url": bad});
            assert!(tool.target(&input).is_err(), "{bad}");
        }
        // The parser resolves plain dot segments before the prefix check.
        assert_eq!(
            Url::parse("https://a.example/v1/../admin").unwrap().path(),
            "/admin"
        );
    }
}
