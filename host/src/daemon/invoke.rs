//! Invocations: queueing within each agent's bounds and the global limit,
//! the disk reserve, async results, and the record of every run.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Daemon, DaemonError, invocations, random_id};
use crate::Event;
use crate::error::InvokeError;

/// How long a free-space reading is used before the disk is asked again.
const DISK_CHECK_INTERVAL_MS: u64 = 500;

/// Async invocation results kept for polling.
pub const MAX_KEPT_RESULTS: usize = 10_000;

/// A finished invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The invocation's id.
    pub id: String,
    /// The agent.
    pub agent: String,
    /// The handler's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Why there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OutcomeError>,
    /// Wall time.
    pub elapsed_ms: f64,
}

/// An invocation's failure, for API answers.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeError {
    /// `invalid-event`, `agent-error`, `limit`, `crashed`,
    /// `result-too-large`, `busy` or `host-error`.
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

/// The label of an invocation failure.
pub fn error_kind(error: &InvokeError) -> &'static str {
    match error {
        InvokeError::InvalidEvent { .. } => "invalid-event",
        InvokeError::Agent { .. } => "agent-error",
        InvokeError::LimitExceeded { .. } => "limit",
        InvokeError::Crashed { .. } => "crashed",
        InvokeError::ResultTooLarge { .. } => "result-too-large",
        InvokeError::Busy { .. } => "busy",
        InvokeError::Host { .. } => "host-error",
    }
}

/// An async invocation's state.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Pending {
    /// Still running or queued.
    Running {
        /// Its id.
        id: String,
    },
    /// Finished.
    Done(Outcome),
}

/// A fresh event id: a random prefix chosen once per process and a counter,
/// unique without a system call per event.
fn event_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| random_id("evt_"));
    format!(
        "{prefix}{:08x}",
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Counts an invocation in flight for the drain.
struct InFlight<'d> {
    daemon: &'d Daemon,
}

impl<'d> InFlight<'d> {
    fn enter(daemon: &'d Daemon) -> Self {
        daemon.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { daemon }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.daemon.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.daemon.idle.notify_waiters();
        }
    }
}

impl Daemon {
    /// Refuses a new event when the state directory's disk has less free
    /// space than the reserve. One `statvfs` call: cheap next to an event.
    pub(super) fn check_disk(&self, agent: &str) -> Result<(), DaemonError> {
        let min = self.options.min_free_disk_bytes;
        if min == 0 {
            return Ok(());
        }
        let free = self.free_disk();
        if free >= min {
            return Ok(());
        }
        self.metrics.add(
            "clawcage_rejections_total",
            &[("agent", agent), ("reason", "disk-full")],
            1,
        );
        tracing::warn!(
            free_bytes = free,
            min_free_bytes = min,
            "refusing an event: the state directory's disk is nearly full"
        );
        Err(DaemonError::DiskFull {
            free_mib: free >> 20,
            min_mib: min >> 20,
        })
    }

    /// Free bytes on the state directory's disk, asked at most every
    /// [`DISK_CHECK_INTERVAL_MS`]: one system call per interval rather than
    /// per event. (The reserve is hundreds of MiB; what events write in
    /// that time is kilobytes.)
    fn free_disk(&self) -> u64 {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let checked = self.disk_checked_ms.load(Ordering::Acquire);
        if checked != 0 && now.saturating_sub(checked) < DISK_CHECK_INTERVAL_MS {
            return self.disk_free.load(Ordering::Acquire);
        }
        // A state directory whose disk cannot even be asked about cannot be
        // counted on to take the event's records either: refuse (free 0).
        let free = rustix::fs::statvfs(&self.options.state_dir)
            .map_or(0, |stats| stats.f_bavail.saturating_mul(stats.f_frsize));
        self.disk_free.store(free, Ordering::Release);
        self.disk_checked_ms.store(now, Ordering::Release);
        free
    }

    /// Runs one event through an agent, waiting for a slot (within the
    /// agent's queue bound).
    pub async fn invoke(
        &self,
        name: &str,
        mut event: Event,
        source: &str,
    ) -> Result<Outcome, DaemonError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(DaemonError::ShuttingDown);
        }
        self.check_disk(name)?;
        self.check_not_paused(name)?;
        let deployed = self
            .agent(name)
            .ok_or_else(|| DaemonError::UnknownAgent(name.to_string()))?;
        let max_queued = deployed.manifest.concurrency.max_queued as usize;
        let queued = deployed.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= max_queued {
            deployed.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.add(
                "clawcage_rejections_total",
                &[("agent", name), ("reason", "busy")],
                1,
            );
            return Err(DaemonError::Busy {
                agent: name.to_string(),
                queued,
            });
        }
        let _in_flight = InFlight::enter(self);
        let slot = deployed.slots.acquire().await;
        let global = self.global.acquire().await;
        deployed.queued.fetch_sub(1, Ordering::AcqRel);
        let (Ok(_slot), Ok(_global)) = (slot, global) else {
            return Err(DaemonError::ShuttingDown);
        };
        let id = event.id.clone().unwrap_or_else(event_id);
        event.id = Some(id.clone());
        let kind = event.kind.clone();
        let started_at_ms = chrono::Utc::now().timestamp_millis();
        let invocation = deployed.agent.invoke(event).await;
        let (result, error) = match invocation.outcome {
            Ok(result) => (Some(result), None),
            Err(error) => (
                None,
                Some(OutcomeError {
                    kind: error_kind(&error),
                    message: error.to_string(),
                }),
            ),
        };
        let outcome_label = error.as_ref().map_or("ok", |e| e.kind);
        self.metrics.add(
            "clawcage_invocations_total",
            &[("agent", name), ("outcome", outcome_label)],
            1,
        );
        self.metrics.add(
            "clawcage_invocation_microseconds_total",
            &[("agent", name)],
            invocation.elapsed.as_micros() as u64,
        );
        // Its audit record and its row in the list, in one transaction.
        self.invocations.record(invocations::InvocationRow {
            event_id: id.clone(),
            agent: name.to_string(),
            source: source.to_string(),
            kind,
            started_at_ms,
            duration_ms: invocation.elapsed.as_millis() as u64,
            outcome: outcome_label.to_string(),
        });
        tracing::info!(agent = %name, event_id = %id, source, outcome = outcome_label, elapsed_ms = invocation.elapsed.as_millis() as u64, "invocation");
        Ok(Outcome {
            id,
            agent: name.to_string(),
            result,
            error,
            elapsed_ms: invocation.elapsed.as_secs_f64() * 1000.0,
        })
    }

    /// Starts an invocation in the background and returns its invocation id;
    /// poll it with [`Daemon::result`].
    pub(crate) fn invoke_async(
        self: &Arc<Self>,
        name: &str,
        mut event: Event,
        source: &str,
    ) -> Result<String, DaemonError> {
        if self.agent(name).is_none() {
            return Err(DaemonError::UnknownAgent(name.to_string()));
        }
        self.check_disk(name)?;
        self.check_not_paused(name)?;
        if event.id.is_none() {
            event.id = Some(event_id());
        }
        // Results are kept under an id of the daemon's own, so a caller
        // reusing an event id cannot replace another invocation's result.
        let id = random_id("inv_");
        self.keep_result(id.clone(), Pending::Running { id: id.clone() });
        let daemon = self.clone();
        let name = name.to_string();
        let source = source.to_string();
        let task_id = id.clone();
        tokio::spawn(async move {
            let done = match daemon.invoke(&name, event, &source).await {
                Ok(outcome) => outcome,
                Err(refusal) => Outcome {
                    id: task_id.clone(),
                    agent: name,
                    result: None,
                    error: Some(OutcomeError {
                        kind: "busy",
                        message: refusal.to_string(),
                    }),
                    elapsed_ms: 0.0,
                },
            };
            daemon.keep_result(task_id, Pending::Done(done));
        });
        Ok(id)
    }

    pub(super) fn keep_result(&self, id: String, state: Pending) {
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *results;
        if map.insert(id.clone(), state).is_none() {
            order.push_back(id);
        }
        while order.len() > MAX_KEPT_RESULTS {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }

    /// An async invocation's state.
    pub fn result(&self, id: &str) -> Option<Pending> {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(id)
            .cloned()
    }
}
