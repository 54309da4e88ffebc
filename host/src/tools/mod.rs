//! The `tools` capability: a guest opens a tool by name and calls the actions
//! the operator granted; credentials stay in the host.
//!
//! Deny by default ([`ToolsCtx::default`]):
//! - no tools, so `tool.open(..)` answers `not-granted` for every name;
//! - an opened tool offers only the actions its grant lists; any other action
//!   answers `not-granted` without reaching the backend;
//! - inputs must be a JSON object of at most [`MAX_TOOL_INPUT_BYTES`];
//! - connectors ([`github`], [`slack`], [`notion`], [`http`]) then check the
//!   input against the action's schema and the grant's scope, record the
//!   decision, and reach the network only through the [`crate::egress`]
//!   policy; see [`grants`] for how a manifest's grants become tools.

pub mod connector;
pub mod github;
pub mod grants;
pub mod http;
pub mod notion;
pub mod schema;
pub mod slack;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

pub use crate::bindings::tools::{ActionInfo, Error as ToolError, ToolInfo};
use crate::bindings::tools::{Host, HostTool};
use crate::text::{quote, validate_name};

/// Longest tool name a guest may pass to `tool.open`.
pub(crate) const MAX_TOOL_NAME_BYTES: usize = 64;
/// Longest action name.
pub(crate) const MAX_ACTION_NAME_BYTES: usize = 64;
/// Largest JSON input to one call.
pub(crate) const MAX_TOOL_INPUT_BYTES: usize = 1 << 20;
/// Most tools one invocation may hold open at once.
pub(crate) const MAX_OPEN_TOOLS: usize = 32;

/// A tool granted to an agent: a connector plus the scopes of the grant.
/// Connectors implement this; the guest sees only [`ActionInfo`]s.
#[async_trait::async_trait]
pub trait ToolBackend: Send + Sync + 'static {
    /// The actions granted, with their input schemas.
    fn actions(&self) -> Vec<ActionInfo>;
    /// Runs a granted `action` with a JSON object `input`; returns JSON.
    async fn call(&self, action: &str, input: serde_json::Value) -> Result<String, ToolError>;
}

/// The tools granted to one agent, by name.
pub type ToolGrants = BTreeMap<String, Arc<dyn ToolBackend>>;

/// Per-invocation state of the `tools` capability.
#[derive(Default)]
pub struct ToolsCtx {
    grants: Arc<ToolGrants>,
    open_tools: usize,
    event_id: Option<Arc<str>>,
}

tokio::task_local! {
    /// The event whose tool call is running, for decisions and leak reports.
    static CURRENT_EVENT: Arc<str>;
}

/// The event whose tool call is running, if any.
pub(crate) fn current_event() -> Option<Arc<str>> {
    CURRENT_EVENT.try_with(Arc::clone).ok()
}

impl std::fmt::Debug for ToolsCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolsCtx")
            .field("grants", &self.grants.keys().collect::<Vec<_>>())
            .field("open_tools", &self.open_tools)
            .finish()
    }
}

impl ToolsCtx {
    /// A context granting exactly `grants`.
    pub fn new(grants: Arc<ToolGrants>) -> Self {
        Self {
            grants,
            open_tools: 0,
            event_id: None,
        }
    }

    /// The same, for calls made while handling event `event_id`.
    pub(crate) fn for_event(grants: Arc<ToolGrants>, event_id: Arc<str>) -> Self {
        Self {
            event_id: Some(event_id),
            ..Self::new(grants)
        }
    }
}

/// The guest's handle to an opened tool.
pub struct ToolHandle {
    name: String,
    backend: Arc<dyn ToolBackend>,
}

/// What the `tools` host functions operate on.
pub struct ToolsView<'a> {
    /// The capability's state.
    pub ctx: &'a mut ToolsCtx,
    /// The store's resource table, shared with WASI.
    pub table: &'a mut ResourceTable,
}

struct HasTools;

impl HasData for HasTools {
    type Data<'a> = ToolsView<'a>;
}

/// Adds the `tools` interface to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ToolsView<'_>,
) -> wasmtime::Result<()> {
    crate::bindings::tools::add_to_linker::<T, HasTools>(linker, get)
}

impl HostTool for ToolsView<'_> {
    async fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<ToolHandle>, ToolError>> {
        let Some(backend) = self.ctx.grants.get(&name).cloned() else {
            return Ok(Err(ToolError::NotGranted(format!(
                "tool {} is not granted to this agent",
                quote(&name)
            ))));
        };
        if self.ctx.open_tools >= MAX_OPEN_TOOLS {
            return Ok(Err(ToolError::InvalidInput(format!(
                "more than {MAX_OPEN_TOOLS} tools open at once"
            ))));
        }
        let handle = self.table.push(ToolHandle { name, backend })?;
        self.ctx.open_tools += 1;
        Ok(Ok(handle))
    }

    async fn describe(&mut self, tool: Resource<ToolHandle>) -> wasmtime::Result<ToolInfo> {
        let handle = self.table.get(&tool)?;
        Ok(ToolInfo {
            name: handle.name.clone(),
            actions: handle.backend.actions(),
        })
    }

    async fn call(
        &mut self,
        tool: Resource<ToolHandle>,
        action: String,
        input: String,
    ) -> wasmtime::Result<Result<String, ToolError>> {
        let handle = self.table.get(&tool)?;
        let backend = handle.backend.clone();
        if let Err(reason) = validate_name("action", &action, MAX_ACTION_NAME_BYTES) {
            return Ok(Err(ToolError::InvalidInput(reason)));
        }
        if !backend.actions().iter().any(|a| a.name == action) {
            return Ok(Err(ToolError::NotGranted(format!(
                "action {} of tool {} is not granted to this agent",
                quote(&action),
                quote(&handle.name)
            ))));
        }
        if input.len() > MAX_TOOL_INPUT_BYTES {
            return Ok(Err(ToolError::InvalidInput(format!(
                "input is {} bytes, more than {MAX_TOOL_INPUT_BYTES}",
                input.len()
            ))));
        }
        let input = match serde_json::from_str::<serde_json::Value>(&input) {
            Ok(input @ serde_json::Value::Object(_)) => input,
            Ok(_) => {
                return Ok(Err(ToolError::InvalidInput(
                    "input must be a JSON object".into(),
                )));
            }
            Err(e) => {
                return Ok(Err(ToolError::InvalidInput(format!(
                    "input is not valid JSON: {e}"
                ))));
            }
        };
        Ok(match self.ctx.event_id.clone() {
            Some(event_id) => {
                CURRENT_EVENT
                    .scope(event_id, backend.call(&action, input))
                    .await
            }
            None => backend.call(&action, input).await,
        })
    }

    async fn drop(&mut self, tool: Resource<ToolHandle>) -> wasmtime::Result<()> {
        self.table.delete(tool)?;
        self.ctx.open_tools = self
            .ctx
            .open_tools
            .checked_sub(1)
            .ok_or_else(|| wasmtime::format_err!("tool handle count underflow"))?;
        Ok(())
    }
}

impl Host for ToolsView<'_> {}
