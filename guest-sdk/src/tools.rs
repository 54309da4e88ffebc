//! Tools the operator granted to this agent (GitHub, Slack, Notion, HTTP).
//!
//! ```ignore
//! let github = Tool::open("github")?;
//! github.call("issues.add_labels", &json!({"repo": "acme/support", "number": 7, "labels": ["bug"]}))?;
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::inference::ToolSpec;
use crate::wit::clawcage::agent::tools as wit;

pub use crate::errors::ToolError;
pub use wit::{ActionInfo, ToolInfo};

/// A tool opened by name: the capability to call the actions granted on it.
#[derive(Debug)]
pub struct Tool(wit::Tool);

impl Tool {
    /// Opens the tool `name` (for example `"github"`). Fails with
    /// [`ToolError::NotGranted`] when the operator granted no such tool.
    pub fn open(name: &str) -> Result<Self, ToolError> {
        wit::Tool::open(name).map(Self).map_err(Into::into)
    }

    /// The actions granted, with their input schemas.
    pub fn describe(&self) -> ToolInfo {
        self.0.describe()
    }

    /// Calls `action` with `input` serialized as JSON; returns the JSON result.
    pub fn call<I: Serialize + ?Sized>(
        &self,
        action: &str,
        input: &I,
    ) -> Result<serde_json::Value, ToolError> {
        self.call_as(action, input)
    }

    /// Like [`Tool::call`], deserializing the result into `O`.
    pub fn call_as<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        action: &str,
        input: &I,
    ) -> Result<O, ToolError> {
        let input = serde_json::to_string(input)
            .map_err(|e| ToolError::InvalidInput(format!("cannot serialize the input: {e}")))?;
        let output = self.call_raw(action, &input)?;
        serde_json::from_str(&output)
            .map_err(|e| ToolError::InvalidInput(format!("unexpected result from {action}: {e}")))
    }

    /// Calls `action` with JSON text and returns JSON text.
    pub fn call_raw(&self, action: &str, input: &str) -> Result<String, ToolError> {
        self.0.call(action, input).map_err(Into::into)
    }
}

impl ActionInfo {
    /// This action as a tool spec for a model, named `<tool>_<action>` with
    /// dots replaced (model tool names allow only letters, digits, `_`, `-`).
    pub fn to_tool_spec(&self, tool: &str) -> ToolSpec {
        ToolSpec {
            name: format!("{tool}_{}", self.name.replace('.', "_")),
            description: self.description.clone(),
            input_schema: self.input_schema.clone(),
            cache: None,
        }
    }
}
