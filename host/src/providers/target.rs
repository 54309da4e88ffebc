//! One model a binding can send to: a provider, the URL it is reached at,
//! a model id, a vault key, and the time limits of a call. A binding has
//! one target of its own and may list fallbacks (see
//! [`super::model::BoundModel`]).
//!
//! Deny by default, for what the operator did not ask for:
//! - plain `http://` only to loopback (`127.0.0.0/8`, `::1`, `localhost`),
//!   unless the binding opts in with `allow_http` — a key sent in clear
//!   over a network can be read by anyone on the path;
//! - no user name or password in the URL (keys live in the vault), no
//!   query and no fragment;
//! - no redirects, no proxies from the environment (see [`super::http`]).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use url::Url;

use super::binding::{ProviderKind, Services};
use super::openai::Dialect;
use super::rules::{self, ProviderRules};
use crate::bindings::inference::{Error as InferenceError, TimeoutKind};
use crate::secret::Secret;

/// Time to set up a connection (TCP and TLS) before the call fails with
/// `timeout(connect)`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = crate::outbound::DEFAULT_CONNECT_TIMEOUT;
/// Time from the start of a request (connecting included) to the first
/// bytes of the answer: an unstreamed completion's headers, which servers
/// send once the answer is ready, or a stream's first event. Past it,
/// `timeout(first-byte)`.
pub(crate) const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest quiet time between two chunks of an answer before the call
/// fails with `timeout(idle)`.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time kept back from the event's deadline for the guest to handle a
/// timeout (try something else, report it): calls give up this much before
/// the deadline, or a tenth of the time left when that is less.
pub(crate) const GUEST_RESERVE: Duration = Duration::from_secs(1);

/// The time limits of a call to one target. The defaults sit below the
/// default event deadline (30 s), so a stalled provider is noticed while
/// the guest can still react; an operator with a slow local model raises
/// them, and the event's deadline bounds them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect: Duration,
    /// See [`DEFAULT_FIRST_BYTE_TIMEOUT`].
    pub first_byte: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            first_byte: DEFAULT_FIRST_BYTE_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// When a call must have its answer, so that the guest keeps
/// [`GUEST_RESERVE`] (or a tenth of the time left) before `deadline`.
pub(crate) fn answer_by(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline - GUEST_RESERVE.min(left / 10)
}

/// The earlier of `now + limit` and `answer_by`, and the kind of timeout
/// that reaching it means.
pub fn limit(limit: Duration, kind: TimeoutKind, answer_by: Instant) -> (Instant, TimeoutKind) {
    let own = Instant::now() + limit;
    if own < answer_by {
        (own, kind)
    } else {
        (answer_by, TimeoutKind::Deadline)
    }
}

/// One model a binding sends to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The provider.
    pub provider: ProviderKind,
    /// The URL requests are posted to (base URL plus the API's path).
    pub endpoint: Url,
    /// The model id.
    pub model: String,
    /// The vault key id (optional only for keyless compatible servers).
    pub key_id: Option<String>,
    /// How Chat Completions requests are spelled (OpenAI kinds only).
    pub dialect: Dialect,
    /// The call's time limits.
    pub timeouts: Timeouts,
    /// The HTTP client, with this target's connect timeout.
    pub http: reqwest::Client,
}

/// Whether `url`'s host is loopback, where plain http stays on the machine.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Resolves a binding's `base_url` to the URL requests are posted to.
///
/// `base_url` is the API's root, version included, for every provider:
/// `https://api.anthropic.com/v1`, `https://api.openai.com/v1`,
/// `http://127.0.0.1:8080/v1`. One with no path at all gets `/v1`. The
/// host appends `/messages` (Anthropic) or `/chat/completions`.
pub(crate) fn endpoint(
    provider: ProviderKind,
    base_url: Option<&str>,
    allow_http: bool,
) -> Result<Url, String> {
    let base = match (base_url, provider.default_base_url()) {
        (Some(url), _) => url,
        (None, Some(url)) => url,
        (None, None) => {
            return Err(format!(
                "base_url is required for {} (the server's API root, such as http://127.0.0.1:8080/v1)",
                provider.name()
            ));
        }
    };
    let mut url = Url::parse(base).map_err(|e| format!("base_url {base:?}: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http || is_loopback(&url) => {}
        "http" => {
            return Err(format!(
                "base_url {base:?} is plain http to a host that is not loopback: the key and every prompt would cross the network in clear. Use https, or set allow_http = true for this model if the network is trusted"
            ));
        }
        other => return Err(format!("base_url {base:?} is {other}, not http(s)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "base_url {base:?} holds a user name or password; keys belong in the vault (`clawcage key add`)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "base_url {base:?} has a query or fragment; give the API root only"
        ));
    }
    let root = url.path().trim_end_matches('/').to_string();
    let root = if root.is_empty() { "/v1" } else { &root };
    let path = match provider {
        ProviderKind::Anthropic => "messages",
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => "chat/completions",
    };
    url.set_path(&format!("{root}/{path}"));
    Ok(url)
}

impl Target {
    /// Builds one model of a chain from its manifest fields; `at` names it in
    /// errors (`models.default`, `models.default.fallbacks[0]`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_spec(
        at: &str,
        provider: &str,
        model: &str,
        key: Option<&str>,
        base_url: Option<&str>,
        allow_http: bool,
        dialect: Option<&str>,
        timeouts: &crate::manifest::ModelTimeouts,
        deadline: std::time::Duration,
        services: &Services,
    ) -> Result<Self, String> {
        let provider = ProviderKind::parse(provider).ok_or_else(|| {
            format!("{at}.provider {provider:?} is not anthropic, openai or openai-compatible")
        })?;
        if model.is_empty() {
            return Err(format!("{at}.model must not be empty"));
        }
        let endpoint = super::target::endpoint(provider, base_url, allow_http)
            .map_err(|e| format!("{at}.{e}"))?;
        let dialect = match (provider, dialect) {
            (ProviderKind::OpenAi, None) => Dialect::OpenAi,
            (ProviderKind::OpenAiCompatible, None | Some("classic")) => Dialect::Compatible,
            (ProviderKind::OpenAiCompatible, Some("openai")) => Dialect::OpenAi,
            (ProviderKind::Anthropic, None) => Dialect::Compatible,
            (ProviderKind::OpenAiCompatible, Some(other)) => {
                return Err(format!(
                    "{at}.dialect {other:?} is not `classic` (max_tokens) or `openai` (max_completion_tokens)"
                ));
            }
            (_, Some(_)) => {
                return Err(format!(
                    "{at}.dialect only applies to openai-compatible servers"
                ));
            }
        };
        let mut limits = super::target::Timeouts::default();
        for (field, value, slot) in [
            ("connect_ms", timeouts.connect_ms, &mut limits.connect),
            (
                "first_byte_ms",
                timeouts.first_byte_ms,
                &mut limits.first_byte,
            ),
            ("idle_ms", timeouts.idle_ms, &mut limits.idle),
        ] {
            if let Some(ms) = value {
                let wanted = std::time::Duration::from_millis(ms);
                if ms == 0 || wanted >= deadline {
                    return Err(format!(
                        "{at}.timeouts.{field} = {ms} must be above 0 and below limits.deadline_ms ({} ms), so the guest hears of a timeout before its event ends",
                        deadline.as_millis()
                    ));
                }
                *slot = wanted;
            }
        }
        match key {
            Some(key) => {
                let info = services
                    .vault
                    .info(key)
                    .map_err(|e| format!("{at}.key: {e}"))?;
                if info.provider != provider.name() {
                    return Err(format!(
                        "{at}.key {key:?} belongs to {}, not {}",
                        info.provider,
                        provider.name()
                    ));
                }
            }
            None if provider != ProviderKind::OpenAiCompatible => {
                return Err(format!("{at}.key is required for {}", provider.name()));
            }
            None => {}
        }
        Ok(Target {
            provider,
            endpoint,
            model: model.to_string(),
            key_id: key.map(str::to_string),
            dialect,
            timeouts: limits,
            http: services
                .client_for(limits.connect)
                .map_err(|e| format!("{at}: {e}"))?,
        })
    }

    /// The rules of this target's provider (and model: OpenAI's reasoning
    /// models take fewer parameters).
    pub fn rules(&self) -> ProviderRules {
        match self.provider {
            ProviderKind::Anthropic => rules::ANTHROPIC,
            ProviderKind::OpenAi => rules::openai_model(&self.model),
            ProviderKind::OpenAiCompatible => rules::OPENAI_COMPATIBLE,
        }
    }

    /// The URL, for the operator's log (never for the guest: it names
    /// internal hosts, and a gateway may keep a token in its path).
    pub(crate) fn shown_url(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The HTTP request for `body`, with `key` in the provider's header.
    /// The header value is built in a zeroizing buffer and marked
    /// sensitive, so neither a log nor a dropped string keeps it.
    pub(crate) fn http_request(
        &self,
        key: Option<&Secret>,
        body: &str,
    ) -> Result<reqwest::RequestBuilder, InferenceError> {
        let mut builder = self.http.post(self.endpoint.clone());
        if self.provider == ProviderKind::Anthropic {
            builder = builder.header("anthropic-version", super::anthropic::API_VERSION);
        }
        if let Some(key) = key {
            let (name, template) = match self.provider {
                ProviderKind::Anthropic => ("x-api-key", crate::outbound::CREDENTIAL_PLACEHOLDER),
                _ => ("authorization", "Bearer {credential}"),
            };
            let header = crate::outbound::credential_header(template, key)
                .map_err(|e| InferenceError::Unavailable(e.replace("credential", "key")))?;
            builder = builder.header(name, header);
        }
        Ok(builder
            .header("content-type", "application/json")
            // The leak check reads answers as sent: ask for them uncompressed.
            .header("accept-encoding", "identity")
            .body(body.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_api_roots_for_every_provider() {
        let url = |p, base: Option<&str>| endpoint(p, base, false).map(|u| u.to_string());
        assert_eq!(
            url(ProviderKind::Anthropic, None).unwrap(),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            url(ProviderKind::OpenAi, None).unwrap(),
            "https://api.openai.com/v1/chat/completions"
        );
        // No path: /v1, for every kind.
        assert_eq!(
            url(ProviderKind::Anthropic, Some("http://127.0.0.1:9")).unwrap(),
            "http://127.0.0.1:9/v1/messages"
        );
        assert_eq!(
            url(
                ProviderKind::OpenAiCompatible,
                Some("http://localhost:8080/")
            )
            .unwrap(),
            "http://localhost:8080/v1/chat/completions"
        );
        assert_eq!(
            url(
                ProviderKind::OpenAiCompatible,
                Some("https://api.groq.com/openai/v1/")
            )
            .unwrap(),
            "https://api.groq.com/openai/v1/chat/completions"
        );
        assert_eq!(
            url(
                ProviderKind::Anthropic,
                Some("https://proxy.example/anthropic/v1")
            )
            .unwrap(),
            "https://proxy.example/anthropic/v1/messages"
        );
        assert!(
            url(ProviderKind::OpenAiCompatible, None)
                .unwrap_err()
                .starts_with("base_url is required for openai-compatible")
        );
    }

    #[test]
    fn plain_http_only_to_loopback_or_when_allowed() {
        for base in [
            "http://127.0.0.1:1/v1",
            "http://[::1]:1/v1",
            "http://localhost/v1",
        ] {
            assert!(
                endpoint(ProviderKind::OpenAi, Some(base), false).is_ok(),
                "{base}"
            );
        }
        let err = endpoint(ProviderKind::OpenAi, Some("http://10.0.0.5/v1"), false).unwrap_err();
        assert!(
            err.contains("plain http to a host that is not loopback"),
            "{err}"
        );
        assert!(endpoint(ProviderKind::OpenAi, Some("http://10.0.0.5/v1"), true).is_ok());
        assert!(
            endpoint(
                ProviderKind::Anthropic,
                Some("http://api.anthropic.com"),
                false
            )
            .is_err()
        );
        assert!(endpoint(ProviderKind::OpenAi, Some("ftp://x/v1"), true).is_err());
        assert!(
            endpoint(ProviderKind::OpenAi, Some("https://u:p@x/v1"), false)
                .unwrap_err()
                .contains("user name or password")
        );
        assert!(endpoint(ProviderKind::OpenAi, Some("https://x/v1?key=1"), false).is_err());
    }

    #[test]
    fn limits_end_at_the_answer_time_when_it_comes_first() {
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            limit(Duration::from_secs(60), TimeoutKind::Idle, soon),
            (soon, TimeoutKind::Deadline)
        );
        let later = Instant::now() + Duration::from_secs(600);
        assert_eq!(
            limit(Duration::from_millis(10), TimeoutKind::Idle, later).1,
            TimeoutKind::Idle
        );
        // The guest keeps a second, or a tenth of what is left.
        let deadline = Instant::now() + Duration::from_secs(30);
        assert_eq!(answer_by(deadline), deadline - GUEST_RESERVE);
        let close = Instant::now() + Duration::from_millis(500);
        let by = answer_by(close);
        assert!(by < close && close - by <= Duration::from_millis(50));
    }
}
