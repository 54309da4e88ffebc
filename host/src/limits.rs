//! Resource limits for one invocation, and the named bounds the host applies
//! to everything a guest hands it.
//!
//! Every constant here protects the host (or other agents) from one agent;
//! its doc says from what.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest linear memory any agent may be given. The pooling allocator sizes
/// its slots for this, so a manifest cannot ask for more.
pub(crate) const MAX_MEMORY_BYTES: u64 = 1 << 30;
/// Default linear memory limit for an agent: enough for JSON-heavy agents,
/// small enough that a memory bomb cannot take the host down.
pub(crate) const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
/// Largest table any agent may be given (function-pointer tables of big
/// Rust guests stay far below this).
pub(crate) const MAX_TABLE_ELEMENTS: u32 = 100_000;
/// Default table element limit.
pub(crate) const DEFAULT_TABLE_ELEMENTS: u32 = 20_000;
/// Core instances one component may create; a Rust agent with WASI needs a
/// handful, so this only stops pathological components. The instance pool
/// reserves this many per slot, so one agent can never take another's share.
pub(crate) const MAX_INSTANCES: u32 = 16;
/// Linear memories one component may have (a Rust agent has one).
pub(crate) const MAX_MEMORIES: u32 = 2;
/// Tables one component may have (a Rust agent has one or two).
pub(crate) const MAX_TABLES: u32 = 4;
/// Bytes a guest may hand the host in one call (strings and lists, counted
/// as wasmtime copies them). Bounds what a hostile guest can make the host
/// allocate, including requests whose lists all point at the same bytes.
pub const MAX_HOSTCALL_BYTES: usize = 16 << 20;
/// Resources (streams, models, tools, WASI handles) one event may hold at
/// once in the host's resource table.
pub const MAX_RESOURCE_HANDLES: usize = 1_024;
/// Default wall-clock deadline for one event.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// Longest deadline a manifest may ask for.
pub(crate) const MAX_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// Largest result (or error message) a handler may return. Bigger results are
/// refused with [`crate::InvokeError::ResultTooLarge`] rather than passed on.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// Longest log line kept; longer lines are cut at a character boundary.
pub(crate) const MAX_LOG_LINE_BYTES: usize = 4 * 1024;
/// Most log lines (from the `log` interface and from stdout/stderr together)
/// kept per event; further lines are dropped and counted.
pub const MAX_LOG_LINES: usize = 1_000;
/// Bytes of stdout and of stderr captured per event; the rest is discarded.
pub const MAX_CAPTURED_OUTPUT_BYTES: usize = 64 * 1024;
/// Largest event payload handed to a guest.
pub(crate) const MAX_EVENT_PAYLOAD_BYTES: usize = 1 << 20;
/// Longest event id, source or kind.
pub(crate) const MAX_EVENT_FIELD_BYTES: usize = 256;
/// Largest component file the host will load.
pub const MAX_COMPONENT_BYTES: u64 = 64 << 20;

/// Limits for one invocation of an agent. Defaults are safe; a manifest can
/// tighten or (up to the `MAX_*` bounds) loosen them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory, in bytes, per memory (a Rust agent has one).
    /// Default 64 MiB, at most 1 GiB.
    pub memory_bytes: u64,
    /// Elements per table. Default 20 000.
    pub table_elements: u32,
    /// Core instances per component. Default and maximum 16.
    pub instances: u32,
    /// Wall-clock deadline for one event, in milliseconds. Default 30 000.
    pub deadline_ms: u64,
    /// Optional fuel (roughly, wasm instructions) per event. Needs an engine
    /// with fuel enabled; `clawcage run` enables it when a manifest asks.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            instances: MAX_INSTANCES,
            deadline_ms: DEFAULT_DEADLINE.as_millis() as u64,
            fuel: None,
        }
    }
}

impl Limits {
    /// The deadline as a [`Duration`].
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Checks every limit against its hard bound.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.memory_bytes == 0 || self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(format!(
                "limits.memory_bytes = {} is outside 1..={MAX_MEMORY_BYTES}",
                self.memory_bytes
            ));
        }
        if self.table_elements == 0 || self.table_elements > MAX_TABLE_ELEMENTS {
            return Err(format!(
                "limits.table_elements = {} is outside 1..={MAX_TABLE_ELEMENTS}",
                self.table_elements
            ));
        }
        if self.instances == 0 || self.instances > MAX_INSTANCES {
            return Err(format!(
                "limits.instances = {} is outside 1..={MAX_INSTANCES}",
                self.instances
            ));
        }
        let max_ms = MAX_DEADLINE.as_millis() as u64;
        if self.deadline_ms == 0 || self.deadline_ms > max_ms {
            return Err(format!(
                "limits.deadline_ms = {} is outside 1..={max_ms}",
                self.deadline_ms
            ));
        }
        if self.fuel == Some(0) {
            return Err("limits.fuel = 0 would stop every agent at once".to_string());
        }
        Ok(())
    }
}

/// Which limit stopped an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitKind {
    /// The wall-clock deadline passed.
    Deadline,
    /// The guest tried to grow its memory past the limit.
    Memory,
    /// The guest tried to grow a table past the limit.
    Table,
    /// The guest ran out of fuel.
    Fuel,
    /// The guest exhausted its call stack.
    Stack,
    /// The guest passed the host more data in one call than allowed.
    Transfer,
    /// The guest held too many resources (handles) at once.
    Handles,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Deadline => "deadline",
            LimitKind::Memory => "memory",
            LimitKind::Table => "table",
            LimitKind::Fuel => "fuel",
            LimitKind::Stack => "stack",
            LimitKind::Transfer => "host-call data",
            LimitKind::Handles => "handle",
        })
    }
}

/// Enforces [`Limits`] on a store and remembers which limit, if any, the
/// guest ran into, so a later trap can be reported as "memory limit" rather
/// than a bare `unreachable`.
///
/// Growth past a limit is refused (`memory.grow` returns -1) rather than
/// trapped, so a guest that handles allocation failure can recover.
#[derive(Debug)]
pub(crate) struct StoreLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    /// The first limit the guest ran into.
    pub hit: Option<LimitKind>,
}

impl StoreLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            table_elements: limits.table_elements as usize,
            instances: limits.instances as usize,
            hit: None,
        }
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit.get_or_insert(LimitKind::Memory);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit.get_or_insert(LimitKind::Table);
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        MAX_TABLES as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES as usize
    }
}
