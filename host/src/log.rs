//! The `log` capability: leveled log lines from the guest, bounded, forwarded
//! to `tracing` with the agent's name and the event id.
//!
//! Defaults (see [`LogCtx::new`]):
//! - each line is cut to [`MAX_LOG_LINE_BYTES`];
//! - at most [`MAX_LOG_LINES`] lines per event, counting stdout and stderr
//!   lines too; the rest are dropped and counted in [`LogCtx::dropped`];
//! - lines are forwarded to `tracing` under the `clawcage::guest` target and,
//!   when capture is on, kept for the caller (the CLI prints them, tests read
//!   them).

use crate::text::truncate_at_char_boundary;
use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::{HasData, Linker};

use crate::bindings::log::{Host, Level};
use crate::limits::{MAX_LOG_LINE_BYTES, MAX_LOG_LINES};

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The `log` interface.
    Log,
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr (Rust panics print here).
    Stderr,
}

/// One kept log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Its level (stdout lines are `info`, stderr lines `warn`).
    pub level: LogLevel,
    /// Where it came from.
    pub stream: LogStream,
    /// The text, cut to [`MAX_LOG_LINE_BYTES`].
    pub message: String,
}

/// A log level, as the host records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging information.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected.
    Warn,
    /// Something failed.
    Error,
}

impl From<Level> for LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

/// Per-invocation state of the `log` capability.
#[derive(Debug)]
pub(crate) struct LogCtx {
    agent: Arc<str>,
    event_id: Arc<str>,
    capture: bool,
    accepted: usize,
    kept: Vec<LogLine>,
    dropped: u64,
}

impl LogCtx {
    /// A log context for one event of one agent. With `capture`, lines are
    /// also kept in memory for [`LogCtx::take_lines`].
    pub fn new(agent: Arc<str>, event_id: Arc<str>, capture: bool) -> Self {
        Self {
            agent,
            event_id,
            capture,
            accepted: 0,
            kept: Vec::new(),
            dropped: 0,
        }
    }

    /// Records one line, unless the per-event budget is spent.
    pub fn record(&mut self, level: LogLevel, stream: LogStream, message: &str) {
        if self.accepted >= MAX_LOG_LINES {
            self.dropped += 1;
            return;
        }
        self.accepted += 1;
        let escaped = escape_controls(truncate_at_char_boundary(message, MAX_LOG_LINE_BYTES));
        let message = truncate_at_char_boundary(&escaped, MAX_LOG_LINE_BYTES);
        let (agent, event_id) = (&*self.agent, &*self.event_id);
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "clawcage::guest", agent, event_id, ?stream, "{message}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "clawcage::guest", agent, event_id, ?stream, "{message}")
            }
            LogLevel::Info => {
                tracing::info!(target: "clawcage::guest", agent, event_id, ?stream, "{message}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "clawcage::guest", agent, event_id, ?stream, "{message}")
            }
            LogLevel::Error => {
                tracing::error!(target: "clawcage::guest", agent, event_id, ?stream, "{message}")
            }
        }
        if self.capture {
            self.kept.push(LogLine {
                level,
                stream,
                message: message.to_string(),
            });
        }
    }

    /// Turns captured stdout or stderr bytes into log lines.
    pub(crate) fn record_output(&mut self, stream: LogStream, bytes: &[u8], dropped_bytes: u64) {
        let level = match stream {
            LogStream::Stderr => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines().filter(|line| !line.is_empty()) {
            self.record(level, stream, line);
        }
        if dropped_bytes > 0 {
            self.record(
                LogLevel::Warn,
                stream,
                &format!("[{dropped_bytes} more bytes of {stream:?} output were discarded]"),
            );
        }
    }

    /// How many lines were dropped because the per-event budget was spent.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes the captured lines (empty unless capture is on).
    pub(crate) fn take_lines(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.kept)
    }
}

/// Escapes control characters (all but tab), so guest text cannot forge
/// extra log lines with newlines or drive a terminal with escape sequences.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

impl Host for LogCtx {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.record(level.into(), LogStream::Log, &message);
        Ok(())
    }
}

impl crate::bindings::types::Host for LogCtx {}

struct HasLog;

impl HasData for HasLog {
    type Data<'a> = &'a mut LogCtx;
}

/// Adds the `log` (and the shared `types`) interface to `linker`, projecting
/// the store's state onto its [`LogCtx`].
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut LogCtx,
) -> wasmtime::Result<()> {
    crate::bindings::log::add_to_linker::<T, HasLog>(linker, get)?;
    crate::bindings::types::add_to_linker::<T, HasLog>(linker, get)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_at_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_at_char_boundary("héllo", 3), "hé");
        assert_eq!(truncate_at_char_boundary("abc", 10), "abc");
    }

    #[test]
    fn lines_past_the_budget_are_dropped_and_counted() {
        let mut ctx = LogCtx::new("a".into(), "e".into(), true);
        for i in 0..MAX_LOG_LINES + 5 {
            ctx.record(LogLevel::Info, LogStream::Log, &i.to_string());
        }
        assert_eq!(ctx.take_lines().len(), MAX_LOG_LINES);
        assert_eq!(ctx.dropped(), 5);
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut ctx = LogCtx::new("a".into(), "e".into(), true);
        ctx.record(
            LogLevel::Info,
            LogStream::Log,
            "one\nINFO forged\u{1b}]52;c;aGk=\u{7}\tok",
        );
        assert_eq!(
            ctx.take_lines()[0].message,
            "one\\nINFO forged\\u{1b}]52;c;aGk=\\u{7}\tok"
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let mut ctx = LogCtx::new("a".into(), "e".into(), true);
        ctx.record(
            LogLevel::Info,
            LogStream::Log,
            &"x".repeat(MAX_LOG_LINE_BYTES * 2),
        );
        assert_eq!(ctx.take_lines()[0].message.len(), MAX_LOG_LINE_BYTES);
    }
}
