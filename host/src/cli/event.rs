//! The event a command sends: a JSON file, stdin, or a `cli` event made
//! from `--payload` and `--kind`. Shared by `run` and `invoke`.

use std::io::Read;
use std::path::Path;

use crate::error::LoadError;

/// Where an event comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    /// The event as JSON: a file, or `-` for stdin. Default: a `cli` event
    /// made from `--payload` and `--kind`.
    #[arg(long, short, conflicts_with_all = ["payload", "kind"])]
    pub event: Option<String>,
    /// The event's payload as JSON text (instead of `--event`).
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// The `cli` event's kind (default `invoke`).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
}

/// Why the event could not be read.
#[derive(Debug)]
pub(crate) enum EventError {
    /// The event file could not be read.
    File(LoadError),
    /// The event is not valid.
    Invalid(String),
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(e) => e.fmt(f),
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

impl EventArgs {
    /// The event's JSON text, read within the event size bound.
    pub(crate) fn json_text(&self) -> Result<String, EventError> {
        let max = crate::limits::MAX_EVENT_PAYLOAD_BYTES as u64 * 2;
        match self.event.as_deref() {
            None => {
                let payload: serde_json::Value = match &self.payload {
                    Some(text) => serde_json::from_str(text)
                        .map_err(|e| EventError::Invalid(format!("--payload is not JSON: {e}")))?,
                    None => serde_json::json!({}),
                };
                Ok(serde_json::json!({
                    "source": "cli",
                    "kind": self.kind.as_deref().unwrap_or("invoke"),
                    "payload": payload,
                })
                .to_string())
            }
            Some("-") => {
                let mut text = String::new();
                std::io::stdin()
                    .take(max)
                    .read_to_string(&mut text)
                    .map_err(|e| {
                        EventError::Invalid(format!("cannot read the event from stdin: {e}"))
                    })?;
                Ok(text)
            }
            Some(path) => {
                let bytes =
                    crate::fsutil::read_bounded(Path::new(path), max).map_err(EventError::File)?;
                String::from_utf8(bytes)
                    .map_err(|_| EventError::Invalid(format!("event file {path} is not UTF-8")))
            }
        }
    }
}
