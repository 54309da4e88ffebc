//! The per-event store state: a fresh one for every event, so nothing an
//! agent does survives into the next event.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::inference::{InferenceCtx, InferenceView, ModelBindings};
use crate::limits::{Limits, StoreLimiter};
use crate::log::LogCtx;
use crate::output::CapturedOutput;
use crate::tools::{ToolGrants, ToolsCtx, ToolsView};

/// Everything one event's store holds.
pub struct AgentState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: StoreLimiter,
    pub(crate) log: LogCtx,
    pub(crate) inference: InferenceCtx,
    pub(crate) tools: ToolsCtx,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

/// Builds the state for one event.
///
/// What the guest gets, always:
/// - no environment variables and no arguments;
/// - no preopened directories, so no files at all;
/// - no network: TCP, UDP and name lookups are disabled, and every socket
///   address is denied;
/// - a closed stdin (reads see end of stream);
/// - stdout and stderr captured into bounded buffers
///   ([`MAX_CAPTURED_OUTPUT_BYTES`](crate::limits::MAX_CAPTURED_OUTPUT_BYTES)
///   each) that become log lines;
/// - clocks and random numbers, which reveal nothing of the host;
/// - at most [`MAX_RESOURCE_HANDLES`](crate::limits::MAX_RESOURCE_HANDLES)
///   resources held at once.
///
/// And by default:
/// - no model bindings and no tools ([`AgentStateBuilder::models`] and
///   [`AgentStateBuilder::tools`] grant them);
/// - the default [`Limits`];
/// - log lines forwarded to `tracing` only, not kept.
#[derive(Default)]
pub struct AgentStateBuilder {
    agent: Arc<str>,
    event_id: Arc<str>,
    limits: Limits,
    models: Arc<ModelBindings>,
    tools: Arc<ToolGrants>,
    capture_logs: bool,
    deadline: Option<std::time::Instant>,
}

impl AgentStateBuilder {
    /// A builder for an event `event_id` of agent `agent`.
    pub fn new(agent: Arc<str>, event_id: Arc<str>) -> Self {
        Self {
            agent,
            event_id,
            ..Self::default()
        }
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Grants these model bindings.
    pub fn models(mut self, models: Arc<ModelBindings>) -> Self {
        self.models = models;
        self
    }

    /// Grants these tools.
    pub fn tools(mut self, tools: Arc<ToolGrants>) -> Self {
        self.tools = tools;
        self
    }

    /// The event's deadline, which host calls (inference, tools) honour too.
    /// Default: now plus the limits' deadline.
    pub fn deadline(mut self, deadline: std::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Keeps log lines in memory for the caller, besides tracing them.
    pub(crate) fn capture_logs(mut self, capture: bool) -> Self {
        self.capture_logs = capture;
        self
    }

    /// Builds the state.
    pub fn build(self) -> AgentState {
        let stdout = CapturedOutput::default();
        let stderr = CapturedOutput::default();
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(crate::limits::MAX_RESOURCE_HANDLES);
        AgentState {
            wasi,
            table,
            limiter: StoreLimiter::new(&self.limits),
            inference: InferenceCtx::new(
                self.models,
                crate::inference::CallContext {
                    deadline: self
                        .deadline
                        .unwrap_or_else(|| std::time::Instant::now() + self.limits.deadline()),
                    event_id: self.event_id.clone(),
                },
            ),
            tools: ToolsCtx::for_event(self.tools, self.event_id.clone()),
            log: LogCtx::new(self.agent, self.event_id, self.capture_logs),
            stdout,
            stderr,
        }
    }
}

impl AgentState {
    pub(crate) fn inference_view(&mut self) -> InferenceView<'_> {
        InferenceView {
            ctx: &mut self.inference,
            table: &mut self.table,
        }
    }

    pub(crate) fn tools_view(&mut self) -> ToolsView<'_> {
        ToolsView {
            ctx: &mut self.tools,
            table: &mut self.table,
        }
    }

    /// Moves captured stdout and stderr into the log.
    pub(crate) fn flush_output(&mut self) {
        for (stream, output) in [
            (crate::log::LogStream::Stdout, &self.stdout),
            (crate::log::LogStream::Stderr, &self.stderr),
        ] {
            let (bytes, dropped) = output.take();
            self.log.record_output(stream, &bytes, dropped);
        }
    }
}

impl WasiView for AgentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
