//! The agent manifest: plain serde types, unknown keys rejected.
//!
//! ```toml
//! name = "triage"
//! description = "Labels new GitHub issues"
//!
//! [component]
//! path = "triage.wasm"          # relative to this file
//! sha256 = "…"                  # optional pin, verified on load
//!
//! [limits]                      # all optional; see `Limits` for defaults
//! memory_bytes = 67108864
//! deadline_ms = 30000
//!
//! [models.default]              # a model binding (see below)
//! provider = "anthropic"
//! model = "claude-haiku-4-5"
//! key = "anthropic-main"
//!
//! [budget]                      # hard limits, all optional
//! usd_micros_per_day = 5000000  # $5 a day
//! tokens_per_month = 20000000
//! requests_per_minute = 60
//!
//! [tools.github]                # a tool grant (see `tools::grants`)
//! credential = "github-bot"
//! actions = ["issues.add_labels"]
//! resources = ["acme/support"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::LoadError;
use crate::limits::Limits;

/// Longest agent name.
pub(crate) const MAX_AGENT_NAME_BYTES: usize = 64;
/// Largest manifest file.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

/// An agent manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The agent's name: 1 to 64 bytes of lower-case letters, digits and `-`.
    pub name: String,
    /// What the agent does, for operators.
    #[serde(default)]
    pub description: Option<String>,
    /// Where the component comes from.
    pub component: ComponentSource,
    /// Resource limits; every field has a safe default.
    #[serde(default)]
    pub limits: Limits,
    /// Model bindings by binding name. Default: none (every `model.open`
    /// answers `not-granted`).
    #[serde(default)]
    pub models: BTreeMap<String, ModelBinding>,
    /// Tool grants by tool name. Default: none (every `tool.open` answers
    /// `not-granted`).
    #[serde(default)]
    pub tools: BTreeMap<String, ToolGrant>,
    /// Hard budgets for inference. Default: unlimited.
    #[serde(default)]
    pub budget: crate::ledger::BudgetLimits,
    /// Events that invoke the agent when it runs in the daemon. Default:
    /// none (it runs only when invoked through the API).
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// How many events of this agent the daemon runs at once, and queues.
    #[serde(default)]
    pub concurrency: Concurrency,
}

/// What invokes an agent in the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// `github`, `slack`, `webhook` or `schedule`.
    pub source: String,
    /// For `github`: `<X-GitHub-Event>.<action>` (`issues.opened`) or just
    /// the event (`push`); for `slack`: event types (`app_mention`). Empty
    /// means every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// The vault id of the webhook's signing secret (provider `webhook`).
    #[serde(default)]
    pub secret: Option<String>,
    /// For `webhook`: the endpoint's name, `POST /hooks/webhook/<name>`.
    #[serde(default)]
    pub name: Option<String>,
    /// For `schedule`: a cron expression in UTC (`0 9 * * MON`).
    #[serde(default)]
    pub cron: Option<String>,
    /// For `schedule`: the event's kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// For `schedule`: the event's payload.
    #[serde(default)]
    pub payload: Option<toml::Value>,
}

/// Concurrency limits of one agent in the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Events run at once (default 8).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// Events waiting for a slot; past this the daemon answers 429 (default
    /// 32).
    #[serde(default = "default_max_queued")]
    pub max_queued: u32,
}

fn default_max_concurrent() -> u32 {
    8
}

fn default_max_queued() -> u32 {
    32
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            max_concurrent: default_max_concurrent(),
            max_queued: default_max_queued(),
        }
    }
}

/// Where an agent's component comes from: exactly one of `path` and
/// `registry`, with an optional sha256 pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSource {
    /// A file, relative to the manifest's directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A registry reference, `namespace/name@version` or `…@sha256:<hex>`.
    #[serde(default)]
    pub registry: Option<String>,
    /// The component's expected sha256, in lower-case hex. When set, any other
    /// bytes are refused.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Checks a cron expression (five fields, UTC), as a `schedule` trigger
/// takes it.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    <croner::Cron as std::str::FromStr>::from_str(expression)
        .map_err(|e| format!("cron {expression:?}: {e}"))
}

/// A model binding: what `model.open(<binding>)` gives the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBinding {
    /// Provider kind: `anthropic`, `openai`, `openai-compatible`, `replay`
    /// (answers from a cassette) or `mock` (answers from `replies`).
    pub provider: String,
    /// The provider's model id.
    pub model: String,
    /// Id of the API key in the host's key vault (never the key itself).
    pub key: Option<String>,
    /// The provider's API root, version path included, for every provider:
    /// `https://api.anthropic.com/v1` (the default for `anthropic`),
    /// `https://api.openai.com/v1` (for `openai`), `http://127.0.0.1:8080/v1`.
    /// A URL with no path gets `/v1`; the host appends `/messages` or
    /// `/chat/completions`. Required for `openai-compatible`. Plain http only
    /// to loopback, unless `allow_http`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// For `replay`: the cassette file, relative to the manifest.
    #[serde(default)]
    pub cassette: Option<PathBuf>,
    /// For `mock`: the scripted answers (see [`crate::providers::mock`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replies: Vec<crate::providers::mock::MockReply>,
    /// Cap on `max-tokens` per request.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Allowed temperature range, `[min, max]`.
    #[serde(default)]
    pub temperature: Option<[f32; 2]>,
    /// Plain `http://` to a host that is not loopback. Default: refused,
    /// since the key and every prompt would cross the network in clear.
    #[serde(default)]
    pub allow_http: bool,
    /// For `openai-compatible`: `classic` (the default) sends
    /// `max_tokens`, which every server knows; `openai` speaks exactly as
    /// OpenAI does (`max_completion_tokens`), for servers that want that.
    #[serde(default)]
    pub dialect: Option<String>,
    /// Time limits of a call; see [`ModelTimeouts`].
    #[serde(default)]
    pub timeouts: ModelTimeouts,
    /// Models tried in order when this one answers 429 or 5xx, times out,
    /// cannot be reached or refuses its key. Each attempt is charged to the
    /// agent's budget and recorded; all share the event's deadline.
    /// Default: none.
    #[serde(default)]
    pub fallbacks: Vec<ModelFallback>,
}

/// Time limits of a model call, in milliseconds. Each must be below the
/// agent's `limits.deadline_ms`; the event's deadline bounds them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTimeouts {
    /// Connecting (TCP and TLS). Default 5 000.
    #[serde(default)]
    pub connect_ms: Option<u64>,
    /// From the start of the request (connecting included) to the answer's
    /// first bytes: an unstreamed completion's headers (sent once the
    /// answer is ready), a stream's first event. Default 20 000.
    #[serde(default)]
    pub first_byte_ms: Option<u64>,
    /// Longest quiet time while a body or a stream is read. Default 10 000.
    #[serde(default)]
    pub idle_ms: Option<u64>,
}

/// A fallback of a model binding: another provider, model or key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFallback {
    /// Provider kind: `anthropic`, `openai` or `openai-compatible`.
    pub provider: String,
    /// The provider's model id.
    pub model: String,
    /// Id of the API key in the host's key vault.
    #[serde(default)]
    pub key: Option<String>,
    /// The provider's base URL (see [`ModelBinding::base_url`]).
    #[serde(default)]
    pub base_url: Option<String>,
    /// See [`ModelBinding::allow_http`].
    #[serde(default)]
    pub allow_http: bool,
    /// See [`ModelBinding::dialect`].
    #[serde(default)]
    pub dialect: Option<String>,
    /// See [`ModelBinding::timeouts`].
    #[serde(default)]
    pub timeouts: ModelTimeouts,
}

/// A tool grant: what `tool.open(<name>)` gives the agent. See
/// [`crate::tools::grants`] for what each kind accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolGrant {
    /// `github`, `slack`, `notion` or `http`; defaults to the tool's name.
    #[serde(default)]
    pub kind: Option<String>,
    /// Id of the credential in the host's vault (never the secret itself).
    #[serde(default)]
    pub credential: Option<String>,
    /// The actions granted.
    pub actions: Vec<String>,
    /// The resources the actions may touch: repository patterns, channel
    /// ids, or Notion page and database ids.
    #[serde(default)]
    pub resources: Vec<String>,
    /// The service's base URL (GitHub Enterprise, tests); the public API by
    /// default.
    #[serde(default)]
    pub base_url: Option<String>,
    /// For `http`: what may be requested.
    #[serde(default)]
    pub rules: Vec<HttpRuleSpec>,
    /// For `http`: the header the credential goes in (default
    /// `authorization`).
    #[serde(default)]
    pub credential_header: Option<String>,
    /// For `http`: the header's value, with `{credential}` replaced (default
    /// `Bearer {credential}`).
    #[serde(default)]
    pub credential_format: Option<String>,
    /// Largest response read, in bytes (default 4 MiB).
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
    /// Time allowed for one request, in milliseconds (default 30 000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Hosts that may be reached over plain http. Default: none.
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Hosts that may resolve to loopback, private, link-local or metadata
    /// addresses. Default: none.
    #[serde(default)]
    pub allow_private: Vec<String>,
    /// Answer calls from this cassette (relative to the manifest) instead
    /// of the service: schemas and scopes are still checked, nothing is
    /// sent, and no credential is needed.
    #[serde(default)]
    pub cassette: Option<PathBuf>,
}

/// A rule of an `http` tool grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRuleSpec {
    /// Allowed methods (`GET`, `POST`, …).
    pub methods: Vec<String>,
    /// The URL prefix: scheme, host, optional port and path prefix.
    pub url: String,
}

impl Manifest {
    /// Parses and validates a manifest from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, LoadError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| LoadError::Manifest(e.to_string()))?;
        manifest.validate().map_err(LoadError::Manifest)?;
        Ok(manifest)
    }

    /// Reads, parses and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = crate::fsutil::read_bounded(path, MAX_MANIFEST_BYTES)?;
        let text = String::from_utf8(text)
            .map_err(|_| LoadError::Manifest("the file is not UTF-8".into()))?;
        Self::from_toml(&text)
    }

    /// Checks everything serde cannot.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_AGENT_NAME_BYTES
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.name.starts_with('-');
        if !name_ok {
            return Err(format!(
                "name {:?} must be 1 to {MAX_AGENT_NAME_BYTES} lower-case letters, digits and `-`",
                self.name
            ));
        }
        match (&self.component.path, &self.component.registry) {
            (Some(_), Some(_)) => {
                return Err("component: set either `path` or `registry`, not both".into());
            }
            (None, None) => return Err("component: set `path` or `registry`".into()),
            _ => {}
        }
        if let Some(pin) = &self.component.sha256
            && !(pin.len() == 64
                && pin
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(format!(
                "component.sha256 {pin:?} is not 64 lower-case hex digits"
            ));
        }
        self.limits.validate()?;
        self.budget.validate()?;
        for (binding, model) in &self.models {
            crate::text::validate_name(
                "model binding",
                binding,
                crate::inference::MAX_BINDING_NAME_BYTES,
            )?;
            if let Some([lo, hi]) = model.temperature
                && !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi && hi <= 2.0)
            {
                return Err(format!(
                    "models.{binding}.temperature [{lo}, {hi}] is not a range within 0.0..=2.0"
                ));
            }
            if model.max_tokens == Some(0) {
                return Err(format!("models.{binding}.max_tokens must be at least 1"));
            }
        }
        for (tool, grant) in &self.tools {
            crate::text::validate_name("tool", tool, crate::tools::MAX_TOOL_NAME_BYTES)?;
            if grant.actions.is_empty() {
                return Err(format!(
                    "tools.{tool}.actions must name at least one action"
                ));
            }
        }
        for (index, trigger) in self.triggers.iter().enumerate() {
            let at = format!("triggers[{index}]");
            let needs_secret = matches!(trigger.source.as_str(), "github" | "slack" | "webhook");
            match trigger.source.as_str() {
                "github" | "slack" => {}
                "webhook" => {
                    let name = trigger.name.as_deref().unwrap_or_default();
                    crate::text::validate_name(&format!("{at}.name"), name, 64)?;
                }
                "schedule" => {
                    let (Some(cron), Some(_)) = (&trigger.cron, &trigger.kind) else {
                        return Err(format!("{at}: a schedule needs `cron` and `kind`"));
                    };
                    parse_cron(cron).map_err(|e| format!("{at}: {e}"))?;
                }
                other => {
                    return Err(format!(
                        "{at}.source {other:?} is not github, slack, webhook or schedule"
                    ));
                }
            }
            if needs_secret && trigger.secret.is_none() {
                return Err(format!(
                    "{at}: a {} trigger needs `secret`, the vault id of its signing secret",
                    trigger.source
                ));
            }
        }
        if !(1..=1024).contains(&self.concurrency.max_concurrent)
            || self.concurrency.max_queued > 100_000
        {
            return Err(
                "concurrency: max_concurrent must be 1 to 1024 and max_queued at most 100000"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"hello\"\n[component]\npath = \"hello.wasm\"\n";

    #[test]
    fn minimal_manifest_gets_safe_defaults() {
        let m = Manifest::from_toml(MINIMAL).unwrap();
        assert_eq!(m.limits, Limits::default());
        assert!(m.models.is_empty() && m.tools.is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Manifest::from_toml(&format!("{MINIMAL}[limits]\nmemory = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `memory`"), "{err}");
        let err = Manifest::from_toml(&format!("{MINIMAL}env = []\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        for (toml, needle) in [
            ("name = \"Bad Name\"\n[component]\npath = \"x\"\n", "name"),
            ("name = \"a\"\n[component]\n", "set `path` or `registry`"),
            (
                "name = \"a\"\n[component]\npath = \"x\"\nsha256 = \"abc\"\n",
                "sha256",
            ),
            (
                "name = \"a\"\n[component]\npath = \"x\"\n[limits]\nmemory_bytes = 99999999999\n",
                "memory_bytes",
            ),
            (
                "name = \"a\"\n[component]\npath = \"x\"\n[limits]\ndeadline_ms = 0\n",
                "deadline_ms",
            ),
            (
                "name = \"a\"\n[component]\npath = \"x\"\n[models.default]\nprovider = \"openai\"\nmodel = \"m\"\ntemperature = [1.5, 0.5]\n",
                "temperature",
            ),
        ] {
            let err = Manifest::from_toml(toml).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{toml:?} gave {err:?}, expected it to mention {needle:?}"
            );
        }
    }
}
