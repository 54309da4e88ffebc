use serde::de::DeserializeOwned;

use crate::wit::clawcage::agent::types;

/// An event delivered to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id of the event.
    pub id: String,
    /// Where it came from: `http`, `github`, `slack`, `schedule`, `cli`, …
    pub source: String,
    /// What happened, for example `issues.opened`.
    pub kind: String,
    /// The body, as JSON text.
    pub payload: String,
}

impl Event {
    /// Deserializes the payload into `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }

    /// The payload as a JSON value.
    pub fn payload_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

impl From<types::Event> for Event {
    fn from(event: types::Event) -> Self {
        Self {
            id: event.id,
            source: event.source,
            kind: event.kind,
            payload: event.payload,
        }
    }
}
