//! The list of recent invocations: one row per event an agent ran, metadata
//! only (never a payload, a prompt or a result), with the tokens and cost
//! of the model calls the event made.
//!
//! A row is written with the event's audit record, in its transaction (an
//! audit [`Companion`]): one writer thread and one commit per batch for
//! both, and never a listed invocation without its record or the reverse.
//! Rows are bounded: past [`MAX_INVOCATION_ROWS`] the oldest are deleted
//! (every [`PRUNE_EVERY`] rows, so at most that many more are ever kept),
//! and a flood of webhook deliveries cannot fill the disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::audit::{AuditEvent, AuditLog, Companion};
use crate::batch::BatchError;
use crate::db::{Database, DbError};

/// Most invocation rows kept; the oldest go first.
pub(crate) const MAX_INVOCATION_ROWS: i64 = 200_000;
/// Rows written between two deletions of the oldest: one range delete per
/// few thousand rows, rather than one per batch.
pub(crate) const PRUNE_EVERY: u64 = 4_096;
/// Most rows one listing returns.
pub(crate) const MAX_LISTED: usize = 1_000;

/// One invocation as it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationRow {
    /// The event's id.
    pub event_id: String,
    /// The agent.
    pub agent: String,
    /// Where the event came from (`api`, `github`, `schedule`, …).
    pub source: String,
    /// The event's kind.
    pub kind: String,
    /// When it started, in Unix milliseconds.
    pub started_at_ms: i64,
    /// How long it ran.
    pub duration_ms: u64,
    /// `ok`, or the error kind.
    pub outcome: String,
}

/// One invocation as it is listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invocation {
    /// Its row in the list (for [`InvocationLog::get`]).
    pub id: i64,
    /// The event's id.
    pub event_id: String,
    /// The agent.
    pub agent: String,
    /// Where the event came from.
    pub source: String,
    /// The event's kind.
    pub kind: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// How long it ran.
    pub duration_ms: u64,
    /// `ok`, or the error kind.
    pub outcome: String,
    /// Model calls the event made.
    pub model_calls: u64,
    /// Their tokens, input and output.
    pub tokens: u64,
    /// Their cost, in micro-dollars.
    pub cost_micros: u64,
}

/// Which invocations to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationFilter {
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this outcome (`ok`, or an error kind).
    pub outcome: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only those started at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only rows older than this row id (the next page of a listing).
    pub before: Option<i64>,
    /// At most this many (at most [`MAX_LISTED`]).
    pub limit: usize,
}

/// The invocation log of a daemon.
pub struct InvocationLog {
    db: Arc<Database>,
    audit: AuditLog,
    /// Rows recorded so far: every [`PRUNE_EVERY`]th prunes, the first too.
    recorded: AtomicU64,
}

impl std::fmt::Debug for InvocationLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationLog").finish_non_exhaustive()
    }
}

impl InvocationLog {
    /// The log in `db`, written through `audit`'s writer.
    pub fn new(db: Arc<Database>, audit: AuditLog) -> Self {
        Self {
            db,
            audit,
            recorded: AtomicU64::new(0),
        }
    }

    /// Records an invocation: its audit record, and its row with it (both
    /// written in the background, in one transaction).
    pub fn record(&self, row: InvocationRow) {
        let event = AuditEvent::Invocation {
            agent: row.agent.clone(),
            event_id: row.event_id.clone(),
            source: row.source.clone(),
            duration_ms: row.duration_ms,
            outcome: row.outcome.clone(),
        };
        let prune = self
            .recorded
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY);
        let keep = prune.then_some(MAX_INVOCATION_ROWS);
        let companion: Companion = Box::new(move |tx| write(tx, &row, keep));
        self.audit.append_with(event, Some(companion));
    }

    /// Waits until every row recorded so far is written.
    pub fn flush(&self) -> Result<(), BatchError> {
        self.audit.flush()
    }

    /// Invocations matching `filter`, newest first, with their model calls
    /// added up.
    pub fn list(&self, filter: &InvocationFilter) -> Result<Vec<Invocation>, DbError> {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "listing invocations after a failed flush");
        }
        let conn = self.db.lock();
        let mut statement = conn.prepare_cached(
            "SELECT i.event_id, i.agent, i.source, i.kind, i.started_at, i.duration_ms, i.outcome,
                    COUNT(u.id), COALESCE(SUM(u.input_tokens + u.output_tokens), 0), COALESCE(SUM(u.cost_micros), 0), i.id
             FROM invocations i
             LEFT JOIN usage u ON u.event_id = i.event_id AND u.agent = i.agent
             WHERE (?1 IS NULL OR i.agent = ?1) AND (?2 IS NULL OR i.outcome = ?2)
               AND (?3 IS NULL OR i.source = ?3) AND (?4 IS NULL OR i.started_at >= ?4 * 1000)
               AND i.id < COALESCE(?6, 9223372036854775807)
             GROUP BY i.id ORDER BY i.id DESC LIMIT ?5",
        )?;
        let rows = statement
            .query_map(
                rusqlite::params![
                    filter.agent,
                    filter.outcome,
                    filter.source,
                    filter.since,
                    filter.limit.clamp(1, MAX_LISTED) as i64,
                    filter.before,
                ],
                invocation_of_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One invocation, by its row id, and the model calls it made:
    /// metadata only.
    pub fn get(&self, id: i64) -> Result<Option<(Invocation, Vec<ModelCall>)>, DbError> {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "reading an invocation after a failed flush");
        }
        let conn = self.db.lock();
        let invocation = conn
            .prepare_cached(
                "SELECT i.event_id, i.agent, i.source, i.kind, i.started_at, i.duration_ms, i.outcome,
                        COUNT(u.id), COALESCE(SUM(u.input_tokens + u.output_tokens), 0), COALESCE(SUM(u.cost_micros), 0), i.id
                 FROM invocations i
                 LEFT JOIN usage u ON u.event_id = i.event_id AND u.agent = i.agent
                 WHERE i.id = ?1 GROUP BY i.id",
            )?
            .query_row([id], invocation_of_row);
        let invocation = match invocation {
            Ok(invocation) => invocation,
            Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let calls = conn
            .prepare_cached(
                "SELECT at, binding, provider, model, key_id, input_tokens, output_tokens, cost_micros, latency_ms, outcome, fallback, estimated
                 FROM usage WHERE event_id = ?1 AND agent = ?2 ORDER BY id LIMIT 1000",
            )?
            .query_map(rusqlite::params![invocation.event_id, invocation.agent], |r| {
                Ok(ModelCall {
                    at: r.get(0)?,
                    binding: r.get(1)?,
                    provider: r.get(2)?,
                    model: r.get(3)?,
                    key_id: r.get(4)?,
                    input_tokens: r.get::<_, i64>(5)? as u64,
                    output_tokens: r.get::<_, i64>(6)? as u64,
                    cost_micros: r.get::<_, i64>(7)? as u64,
                    latency_ms: r.get::<_, i64>(8)? as u64,
                    outcome: r.get(9)?,
                    fallback: r.get::<_, i64>(10)? as u64,
                    estimated: r.get(11)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((invocation, calls)))
    }
}

/// One model call of an invocation, as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCall {
    /// Unix seconds.
    pub at: i64,
    /// The binding.
    pub binding: String,
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// The key's vault id (never its value).
    pub key_id: Option<String>,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost, in micro-dollars.
    pub cost_micros: u64,
    /// How long the provider took.
    pub latency_ms: u64,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// Fallback attempts before it.
    pub fallback: u64,
    /// Whether its tokens were estimated.
    pub estimated: bool,
}

fn invocation_of_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Invocation> {
    let started: i64 = r.get(4)?;
    Ok(Invocation {
        id: r.get(10)?,
        event_id: r.get(0)?,
        agent: r.get(1)?,
        source: r.get(2)?,
        kind: r.get(3)?,
        started_at: chrono::DateTime::from_timestamp_millis(started)
            .map_or_else(|| started.to_string(), |t| t.to_rfc3339()),
        duration_ms: r.get::<_, i64>(5)? as u64,
        outcome: r.get(6)?,
        model_calls: r.get::<_, i64>(7)? as u64,
        tokens: r.get::<_, i64>(8)? as u64,
        cost_micros: r.get::<_, i64>(9)? as u64,
    })
}

/// Writes `row` on `conn` (inside the caller's transaction); with `keep`,
/// deletes all but the newest `keep` rows too.
fn write(
    conn: &rusqlite::Connection,
    row: &InvocationRow,
    keep: Option<i64>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO invocations (event_id, agent, source, kind, started_at, duration_ms, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(rusqlite::params![
        row.event_id,
        row.agent,
        row.source,
        row.kind,
        row.started_at_ms,
        i64::try_from(row.duration_ms).unwrap_or(i64::MAX),
        row.outcome,
    ])?;
    // Keep the newest rows only.
    if let Some(keep) = keep {
        conn.prepare_cached(
            "DELETE FROM invocations WHERE id <= (SELECT MAX(id) FROM invocations) - ?1",
        )?
        .execute([keep])?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(event: &str, agent: &str, outcome: &str, at: i64) -> InvocationRow {
        InvocationRow {
            event_id: event.into(),
            agent: agent.into(),
            source: "api".into(),
            kind: "greet".into(),
            started_at_ms: at,
            duration_ms: 3,
            outcome: outcome.into(),
        }
    }

    #[test]
    fn a_prune_keeps_only_the_newest_rows() {
        let db = Database::in_memory().unwrap();
        let conn = db.lock();
        for i in 0..10 {
            let keep = (i == 9).then_some(4);
            write(&conn, &row(&format!("e{i}"), "a", "ok", i), keep).unwrap();
        }
        let kept: Vec<String> = conn
            .prepare("SELECT event_id FROM invocations ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kept, ["e6", "e7", "e8", "e9"]);
    }

    #[test]
    fn invocations_are_listed_newest_first_filtered_with_their_model_calls() {
        let db = Arc::new(Database::in_memory().unwrap());
        let ledger = crate::ledger::Ledger::new(db.clone());
        ledger.record(&crate::ledger::UsageRecord {
            agent: "a".into(),
            event_id: Some("e2".into()),
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: 7,
            ..Default::default()
        });
        ledger.flush().unwrap();
        let audit = AuditLog::new(db.clone());
        let log = InvocationLog::new(db.clone(), audit.clone());
        log.record(row("e1", "a", "ok", 1_000));
        log.record(row("e2", "a", "crashed", 2_000));
        log.record(row("e3", "b", "ok", 3_000));
        let all = log
            .list(&InvocationFilter {
                limit: 10,
                ..InvocationFilter::default()
            })
            .unwrap();
        let ids: Vec<&str> = all.iter().map(|i| i.event_id.as_str()).collect();
        assert_eq!(ids, ["e3", "e2", "e1"]);
        // Each row came with its audit record.
        let records = audit.read(0, 10).unwrap();
        let audited: Vec<&str> = records
            .iter()
            .filter_map(|r| r.event.get("event_id").and_then(|e| e.as_str()))
            .collect();
        assert_eq!(audited, ["e1", "e2", "e3"]);
        assert_eq!(
            (all[1].model_calls, all[1].tokens, all[1].cost_micros),
            (1, 15, 7)
        );
        assert_eq!(all[0].started_at, "1970-01-01T00:00:03+00:00");
        let failed = log
            .list(&InvocationFilter {
                agent: Some("a".into()),
                outcome: Some("crashed".into()),
                limit: 10,
                ..InvocationFilter::default()
            })
            .unwrap();
        assert_eq!(failed.len(), 1);
        let recent = log
            .list(&InvocationFilter {
                since: Some(2),
                limit: 1,
                ..InvocationFilter::default()
            })
            .unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].event_id, "e3");
    }
}
