//! Events delivered to agents, and their validation.

use serde::{Deserialize, Serialize};

use crate::bindings::types::Event as WitEvent;
use crate::limits::{MAX_EVENT_FIELD_BYTES, MAX_EVENT_PAYLOAD_BYTES};

/// An event for an agent's handler. As JSON:
///
/// ```json
/// { "id": "optional", "source": "github", "kind": "issues.opened", "payload": { } }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Unique id; a random one is chosen when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Where it came from (`http`, `github`, `slack`, `schedule`, `cli`, …).
    pub source: String,
    /// What happened.
    pub kind: String,
    /// The body. Defaults to `{}`.
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl Event {
    /// An event with a fresh id.
    pub fn new(
        source: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            id: None,
            source: source.into(),
            kind: kind.into(),
            payload,
        }
    }

    /// Parses an event from JSON text, with a clear error.
    pub(crate) fn from_json(text: &str) -> Result<Self, String> {
        if text.len() > MAX_EVENT_PAYLOAD_BYTES + 4 * MAX_EVENT_FIELD_BYTES {
            return Err(format!("event is {} bytes, more than allowed", text.len()));
        }
        serde_json::from_str(text).map_err(|e| format!("event is not valid JSON for an event: {e}"))
    }

    /// Validates the event and turns it into the WIT record, choosing an id
    /// when it has none.
    pub fn into_wit(self) -> Result<WitEvent, String> {
        let id = match self.id {
            Some(id) => id,
            None => random_id(),
        };
        check_field("id", &id)?;
        check_field("source", &self.source)?;
        check_field("kind", &self.kind)?;
        let payload = self.payload.to_string();
        if payload.len() > MAX_EVENT_PAYLOAD_BYTES {
            return Err(format!(
                "payload is {} bytes, more than {MAX_EVENT_PAYLOAD_BYTES}",
                payload.len()
            ));
        }
        Ok(WitEvent {
            id,
            source: self.source,
            kind: self.kind,
            payload,
        })
    }
}

fn check_field(name: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_EVENT_FIELD_BYTES {
        return Err(format!("{name} must be 1 to {MAX_EVENT_FIELD_BYTES} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "{name} {:?} contains control characters",
            crate::text::truncate_at_char_boundary(value, 80)
        ));
    }
    Ok(())
}

/// A fresh event id: 32 hex digits, a random per-process prefix and a
/// counter. Unique and unguessable across restarts without a system call per
/// event (ids need not be secret, only distinct).
pub(crate) fn random_id() -> String {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: LazyLock<u64> = LazyLock::new(|| {
        let mut bytes = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("the OS random number generator failed");
        u64::from_le_bytes(bytes)
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:016x}{:016x}",
        *PREFIX,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fills_defaults() {
        let event = Event::from_json(r#"{"source":"cli","kind":"hello"}"#).unwrap();
        let wit = event.into_wit().unwrap();
        assert_eq!(wit.payload, "{}");
        assert_eq!(wit.id.len(), 32);
        assert_ne!(random_id(), random_id());
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(
            Event::from_json(r#"{"source":"cli","kind":"k","extra":1}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        let err = Event::new("cli", "a\u{7}b", serde_json::json!({}))
            .into_wit()
            .unwrap_err();
        assert!(err.contains("control"), "{err}");
        let err = Event::new("", "k", serde_json::json!({}))
            .into_wit()
            .unwrap_err();
        assert!(err.contains("source"), "{err}");
    }
}
