//! Typed errors for inference and tool calls, with readable messages.

use std::fmt;
use std::time::Duration;

use crate::wit::clawcage::agent::{inference, tools, types};

pub use inference::TimeoutKind;

/// Why an inference call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InferenceError {
    /// The operator bound no model of that name for this agent.
    NotGranted(String),
    /// The agent's token or spend budget does not allow the call.
    BudgetExceeded(String),
    /// Slow down; try again after `retry_after` when given.
    RateLimited {
        /// How long to wait, when known.
        retry_after: Option<Duration>,
        /// The explanation.
        message: String,
    },
    /// The request is malformed or outside the binding's caps.
    InvalidRequest(String),
    /// The provider answered with an error.
    Provider {
        /// The provider's HTTP status, when it answered.
        status: Option<u16>,
        /// The provider's explanation.
        message: String,
    },
    /// The provider could not be reached, or the key was revoked.
    Unavailable(String),
    /// The provider did not answer in time; the kind says which limit ran
    /// out. Stream events received before it stay valid.
    Timeout(TimeoutKind),
    /// The answer carried the binding's key and was withheld; the binding
    /// stays suspended for this agent until an operator resumes it.
    LeakBlocked(String),
}

/// Why a tool call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The tool, or the action, is not granted to this agent.
    NotGranted(String),
    /// The action is granted, but not on this resource.
    Denied(String),
    /// The input does not match the action's schema.
    InvalidInput(String),
    /// The service answered with an error.
    Upstream {
        /// The service's HTTP status, when it answered.
        status: Option<u16>,
        /// The service's explanation.
        message: String,
    },
    /// Slow down; try again after `retry_after` when given.
    RateLimited {
        /// How long to wait, when known.
        retry_after: Option<Duration>,
        /// The explanation.
        message: String,
    },
    /// The answer carried the grant's credential and was withheld; the
    /// grant stays suspended for this agent until an operator resumes it.
    LeakBlocked(String),
}

fn rate_limited(
    f: &mut fmt::Formatter<'_>,
    retry_after: &Option<Duration>,
    message: &str,
) -> fmt::Result {
    write!(f, "rate limited: {message}")?;
    if let Some(wait) = retry_after {
        write!(f, " (retry after {} ms)", wait.as_millis())?;
    }
    Ok(())
}

fn upstream(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    status: &Option<u16>,
    message: &str,
) -> fmt::Result {
    match status {
        Some(status) => write!(f, "{what} error (HTTP {status}): {message}"),
        None => write!(f, "{what} error: {message}"),
    }
}

impl fmt::Display for InferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted(m) => write!(f, "not granted: {m}"),
            Self::BudgetExceeded(m) => write!(f, "budget exceeded: {m}"),
            Self::RateLimited {
                retry_after,
                message,
            } => rate_limited(f, retry_after, message),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Provider { status, message } => upstream(f, "provider", status, message),
            Self::Unavailable(m) => write!(f, "unavailable: {m}"),
            Self::Timeout(kind) => f.write_str(match kind {
                TimeoutKind::Connect => "timed out connecting to the provider",
                TimeoutKind::FirstByte => "timed out waiting for the provider's answer",
                TimeoutKind::Idle => "timed out: the provider's stream went quiet",
                TimeoutKind::Deadline => "timed out before the event's deadline",
            }),
            Self::LeakBlocked(m) => write!(f, "leak blocked: {m}"),
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted(m) => write!(f, "not granted: {m}"),
            Self::Denied(m) => write!(f, "denied: {m}"),
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Upstream { status, message } => upstream(f, "upstream", status, message),
            Self::RateLimited {
                retry_after,
                message,
            } => rate_limited(f, retry_after, message),
            Self::LeakBlocked(m) => write!(f, "leak blocked: {m}"),
        }
    }
}

impl std::error::Error for InferenceError {}
impl std::error::Error for ToolError {}

fn retry_after(limit: &types::RateLimit) -> Option<Duration> {
    limit.retry_after_ms.map(Duration::from_millis)
}

impl From<inference::Error> for InferenceError {
    fn from(error: inference::Error) -> Self {
        use inference::Error as E;
        match error {
            E::NotGranted(m) => Self::NotGranted(m),
            E::BudgetExceeded(m) => Self::BudgetExceeded(m),
            E::RateLimited(limit) => Self::RateLimited {
                retry_after: retry_after(&limit),
                message: limit.message,
            },
            E::InvalidRequest(m) => Self::InvalidRequest(m),
            E::Provider(e) => Self::Provider {
                status: e.status,
                message: e.message,
            },
            E::Unavailable(m) => Self::Unavailable(m),
            E::Timeout(kind) => Self::Timeout(kind),
            E::LeakBlocked(m) => Self::LeakBlocked(m),
        }
    }
}

impl From<tools::Error> for ToolError {
    fn from(error: tools::Error) -> Self {
        use tools::Error as E;
        match error {
            E::NotGranted(m) => Self::NotGranted(m),
            E::Denied(m) => Self::Denied(m),
            E::InvalidInput(m) => Self::InvalidInput(m),
            E::Upstream(e) => Self::Upstream {
                status: e.status,
                message: e.message,
            },
            E::RateLimited(limit) => Self::RateLimited {
                retry_after: retry_after(&limit),
                message: limit.message,
            },
            E::LeakBlocked(m) => Self::LeakBlocked(m),
        }
    }
}
