//! The tamper-evident audit log: an append-only table in which every record
//! carries the hash of the one before it.
//!
//! A record is metadata only: who did what, when, to what, and how it
//! ended. Never a prompt, a response, a tool payload or a secret: callers
//! pass typed [`AuditEvent`]s, which have no field that could hold one.
//!
//! Each row stores `hash = sha256(prev_hash ‖ "\n" ‖ canonical)`, where
//! `canonical` is the record (sequence number, time, kind and fields) as
//! JSON with sorted keys and no whitespace. [`AuditLog::verify`] recomputes the chain and names
//! the first record that was edited, deleted or moved. Removing records from
//! the end leaves a shorter valid chain; to catch that, keep the head hash
//! [`AuditLog::verify`] reports somewhere else (a ticket, a log shipper) and
//! compare.
//!
//! Records are hashed and written by a background thread, in order and in
//! batches, so appending costs a caller a push onto a queue.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::batch::{BatchError, BatchWriter, WriteError};
use crate::db::{Database, DbError, now_unix};

/// The hash before the first record.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

/// Something worth a record. Metadata only, by construction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEvent {
    /// An agent handled an event.
    Invocation {
        /// The agent.
        agent: String,
        /// The event's id.
        event_id: String,
        /// Where it came from (`api`, `github`, `slack`, `schedule`, …).
        source: String,
        /// Wall time in milliseconds.
        duration_ms: u64,
        /// `ok`, or the failure's kind.
        outcome: String,
    },
    /// A model call.
    Inference {
        /// The agent.
        agent: String,
        /// Its binding.
        binding: String,
        /// Provider kind.
        provider: String,
        /// Model id.
        model: String,
        /// Vault key id.
        key_id: Option<String>,
        /// Input tokens.
        input_tokens: u64,
        /// Output tokens.
        output_tokens: u64,
        /// Input tokens read from the prompt cache.
        #[serde(skip_serializing_if = "is_zero")]
        cache_read_tokens: u64,
        /// Input tokens written to the prompt cache.
        #[serde(skip_serializing_if = "is_zero")]
        cache_write_tokens: u64,
        /// The provider reported no token counts; they were estimated.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        estimated: bool,
        /// Which model of the binding's chain: 0 (left out) for the
        /// binding's own, 1 for its first fallback, …
        #[serde(skip_serializing_if = "is_zero_u32")]
        fallback: u32,
        /// Cost in micro-dollars.
        cost_micros: u64,
        /// `ok`, or the error kind.
        status: String,
        /// The event during which the call was made.
        #[serde(skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// A tool call's decision.
    Tool {
        /// The agent.
        agent: String,
        /// The tool.
        tool: String,
        /// The action.
        action: String,
        /// The resource.
        resource: String,
        /// Allowed or denied.
        allowed: bool,
        /// Why it was denied.
        reason: Option<String>,
        /// The event during which the call was made.
        #[serde(skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// A key was added, rotated, revoked or deleted.
    Key {
        /// `add`, `rotate`, `revoke` or `delete`.
        change: String,
        /// The key's id.
        key_id: String,
        /// Its provider.
        provider: String,
        /// Who did it (a token name, or `cli`).
        actor: String,
    },
    /// An API token was created or revoked.
    Token {
        /// `add` or `revoke`.
        change: String,
        /// The token's name (never its value).
        name: String,
        /// `admin`, or `publish:<namespaces>`.
        scope: String,
        /// Who did it (a token name, or `cli`).
        actor: String,
    },
    /// An agent was deployed, updated or removed, or a deployment was
    /// refused.
    Deployment {
        /// `deploy`, `remove` or `refused`; `unloaded` or `loaded` when a
        /// trust policy change stopped or restored a registry agent.
        change: String,
        /// The agent.
        agent: String,
        /// The component's sha256.
        sha256: Option<String>,
        /// Tools granted (names only).
        tools: Vec<String>,
        /// Model bindings (names only).
        models: Vec<String>,
        /// Who did it.
        actor: String,
        /// The registry reference it came from, pinned to the manifest
        /// digest; `None` for a component uploaded with the bundle.
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// The publisher key (hex) whose signature was trusted.
        #[serde(skip_serializing_if = "Option::is_none")]
        signer: Option<String>,
        /// Why it was refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The registry's trust policy changed.
    Trust {
        /// `add`, `remove`, `allow-unsigned` or `deny-unsigned`.
        change: String,
        /// The namespace.
        namespace: String,
        /// The publisher key (hex), when one was added or removed.
        key: Option<String>,
        /// Who did it.
        actor: String,
    },
    /// A manifest pushed to the registry: stored, or refused.
    Push {
        /// The repository.
        repository: String,
        /// The tag or digest it was pushed under.
        reference: String,
        /// The manifest's digest, when stored.
        digest: Option<String>,
        /// `component`, `signature` or `other`.
        artifact: String,
        /// Who pushed (a token name).
        actor: String,
        /// Whether it was stored.
        accepted: bool,
        /// The OCI error code and message, when refused.
        reason: Option<String>,
    },
    /// A blob stored in the registry by an upload. Bounded per token: see
    /// `BlobUploadsSuppressed`.
    BlobUpload {
        /// The repository.
        repository: String,
        /// The blob's digest.
        digest: String,
        /// Its size in bytes.
        size: u64,
        /// Who pushed (a token name).
        actor: String,
    },
    /// Blob upload records of a token not written, past its bound in a
    /// window: how many.
    BlobUploadsSuppressed {
        /// Who pushed.
        actor: String,
        /// Records not written.
        suppressed: u64,
    },
    /// A manifest, tag or blob deleted from the registry.
    RegistryDelete {
        /// The repository.
        repository: String,
        /// `manifest`, `tag` or `blob`.
        what: String,
        /// The digest or tag.
        reference: String,
        /// Who deleted (a token name).
        actor: String,
    },
    /// An operator's assignment of a model or key to an agent's binding,
    /// or its clearing.
    BindingOverride {
        /// The agent.
        agent: String,
        /// The binding.
        binding: String,
        /// `set` or `clear`.
        change: String,
        /// The model assigned.
        model: Option<String>,
        /// The key id assigned (never a secret).
        key: Option<String>,
        /// Who (a token name).
        actor: String,
    },
    /// An operator paused an agent (it takes no event) or resumed it.
    Pause {
        /// The agent.
        agent: String,
        /// `pause` or `resume`.
        change: String,
        /// Who (a token name).
        actor: String,
    },
    /// A request to the admin API, or a refused attempt.
    Admin {
        /// The token's name, or `unknown`.
        actor: String,
        /// Method and route (no query, no body).
        action: String,
        /// Whether it was let in.
        allowed: bool,
    },
    /// An answer that carried its call's own credential was withheld, and
    /// the binding or grant suspended for the agent.
    LeakBlocked {
        /// The agent.
        agent: String,
        /// `model` or `tool`.
        capability: String,
        /// The binding's or tool's name.
        name: String,
        /// The vault key id of the credential.
        key_id: Option<String>,
        /// The event during which it happened.
        event_id: Option<String>,
        /// Which view of the text held it (`raw`, `unescaped`, `base64`, …).
        view: String,
    },
    /// An operator resumed a suspended binding or grant.
    Resumed {
        /// The agent.
        agent: String,
        /// `model` or `tool`.
        capability: String,
        /// The binding's or tool's name.
        name: String,
        /// Who did it.
        actor: String,
    },
    /// One event caused more records than are kept in detail; this counts
    /// the rest.
    RecordsSuppressed {
        /// The agent.
        agent: String,
        /// The event.
        event_id: String,
        /// Records not written.
        suppressed: u64,
    },
    /// Refused attempts not recorded one by one, past the bound of a
    /// window ([`MAX_REFUSALS_PER_WINDOW`]): how many.
    RefusalsSuppressed {
        /// Records not written.
        suppressed: u64,
        /// When the window started (Unix seconds).
        since: i64,
    },
    /// A webhook delivery refused before any agent ran.
    WebhookRefused {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Sequence number, from 1.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// The event, as JSON.
    pub event: Value,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// Every kind of record ([`AuditEvent`]'s `kind`), for a filter's choices.
pub const KINDS: &[&str] = &[
    "admin",
    "binding_override",
    "blob_upload",
    "blob_uploads_suppressed",
    "deployment",
    "inference",
    "invocation",
    "key",
    "leak_blocked",
    "pause",
    "push",
    "records_suppressed",
    "refusals_suppressed",
    "registry_delete",
    "resumed",
    "token",
    "tool",
    "trust",
    "webhook_refused",
];

/// Most records one [`AuditLog::query`] answers.
pub const MAX_PAGE: usize = 10_000;

/// Which audit records to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only records after this sequence number.
    pub after: Option<i64>,
    /// Only records before this sequence number.
    pub before: Option<i64>,
    /// Only records of this kind (`invocation`, `admin`, …).
    pub kind: Option<String>,
    /// Only records about this agent.
    pub agent: Option<String>,
    /// Only records of this actor (a token's name).
    pub actor: Option<String>,
    /// Newest first (else oldest first).
    pub newest_first: bool,
    /// At most this many (at most [`MAX_PAGE`]).
    pub limit: usize,
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// The last record's hash (anchor it elsewhere to detect truncation).
    pub head: String,
    /// The first problem, if any.
    pub problem: Option<String>,
}

/// The audit log. Cheap to clone; clones share the writer.
#[derive(Clone)]
pub struct AuditLog {
    db: Arc<Database>,
    writer: Arc<BatchWriter<Queued>>,
    /// Per event: records written in detail, and records suppressed.
    per_event: Arc<Mutex<std::collections::HashMap<String, (u32, u64)>>>,
    /// Refused attempts recorded in the current window.
    refusals: Arc<Mutex<RefusalWindow>>,
}

/// Refused attempts (a wrong token, a cross-site post, a refused webhook)
/// recorded in detail per [`REFUSAL_WINDOW`]; past it they are counted,
/// and one [`AuditEvent::RefusalsSuppressed`] says how many. Anyone can
/// cause a refusal, so without a bound the log would be a way to fill the
/// disk; with it, a flood costs at most this many records a minute.
pub const MAX_REFUSALS_PER_WINDOW: u64 = 120;
/// The window of [`MAX_REFUSALS_PER_WINDOW`].
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The current window of refusal records.
#[derive(Debug)]
struct RefusalWindow {
    started: std::time::Instant,
    started_at: i64,
    recorded: u64,
    suppressed: u64,
}

impl Default for RefusalWindow {
    fn default() -> Self {
        Self {
            started: std::time::Instant::now(),
            started_at: now_unix(),
            recorded: 0,
            suppressed: 0,
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// The longest string a record keeps: anything longer (a guest-chosen URL,
/// an upstream's message) is cut, so one record stays small.
pub(crate) const MAX_RECORD_STRING_BYTES: usize = 512;

/// How many records one event may cause in detail (tool decisions and model
/// calls); the rest are counted in one [`AuditEvent::RecordsSuppressed`]
/// written before the event's [`AuditEvent::Invocation`] record.
pub(crate) const MAX_DETAILED_RECORDS_PER_EVENT: u32 = 100;

/// Events whose counts are kept at once; past this the counts are dropped
/// (an event that never ends with an invocation record must not grow the
/// map forever).
const MAX_TRACKED_EVENTS: usize = 4_096;

impl AuditEvent {
    /// The agent and event of a record counted per event.
    fn per_event(&self) -> Option<(&str, &str)> {
        match self {
            Self::Tool {
                agent,
                event_id: Some(event_id),
                ..
            }
            | Self::Inference {
                agent,
                event_id: Some(event_id),
                ..
            } => Some((agent, event_id)),
            _ => None,
        }
    }
}

/// A string of a record, cut to [`MAX_RECORD_STRING_BYTES`] with a note of
/// how much was dropped.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_RECORD_STRING_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let kept = crate::text::truncate_at_char_boundary(text, MAX_RECORD_STRING_BYTES);
    std::borrow::Cow::Owned(format!("{kept}…[{} more bytes]", text.len() - kept.len()))
}

/// Cuts every string of a record's JSON to [`MAX_RECORD_STRING_BYTES`].
fn bound_strings(value: &mut Value) {
    match value {
        Value::String(text) if text.len() > MAX_RECORD_STRING_BYTES => {
            *text = bounded(text).into_owned();
        }
        Value::Array(items) => items.iter_mut().for_each(bound_strings),
        Value::Object(map) => map.values_mut().for_each(bound_strings),
        _ => {}
    }
}

/// An event's canonical text: JSON with sorted keys and bounded strings.
fn record_text(event: &AuditEvent) -> String {
    // One invocation record is written per event the daemon runs: it skips
    // the map. Its fields are declared in sorted order, "kind" among them,
    // so serde writes the same text the map would (a test holds the two
    // paths to each other).
    if let AuditEvent::Invocation {
        agent,
        event_id,
        source,
        duration_ms,
        outcome,
    } = event
    {
        #[derive(Serialize)]
        struct Sorted<'a> {
            agent: std::borrow::Cow<'a, str>,
            duration_ms: u64,
            event_id: std::borrow::Cow<'a, str>,
            kind: &'static str,
            outcome: std::borrow::Cow<'a, str>,
            source: std::borrow::Cow<'a, str>,
        }
        let sorted = Sorted {
            agent: bounded(agent),
            duration_ms: *duration_ms,
            event_id: bounded(event_id),
            kind: "invocation",
            outcome: bounded(outcome),
            source: bounded(source),
        };
        if let Ok(text) = serde_json::to_string(&sorted) {
            return text;
        }
    }
    mapped_text(event)
}

/// An event's canonical text through serde_json's sorted map.
fn mapped_text(event: &AuditEvent) -> String {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    bound_strings(&mut value);
    value.to_string()
}

/// A write that belongs with an audit record, such as the row of an index
/// table that lists what the record describes. It runs in the record's
/// transaction, right after it: a busy daemon commits both in one batch,
/// and the two are stored together or not at all.
pub(crate) type Companion = Box<dyn Fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send>;

/// A record waiting for the writer. Its text is serialised by the thread
/// that appends it, so the writer's batches (hashing and inserting only)
/// stay short and the work is spread over the callers.
struct Queued {
    at: i64,
    text: String,
    companion: Option<Companion>,
}

impl Queued {
    fn new(event: &AuditEvent, at: i64, companion: Option<Companion>) -> Self {
        Self {
            at,
            text: record_text(event),
            companion,
        }
    }
}

/// How long the writer collects records before writing a batch.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);
/// Most records written in one transaction. Small on purpose: a batch is a
/// burst of CPU on the writer thread (hashing, inserting, the invocation
/// rows), and on a 2-core machine a burst of a thousand records (about
/// 5 ms) preempts request threads long enough to triple the daemon's p99.
/// Under load full batches go out at once, so 64 records (about 0.4 ms)
/// still make a few hundred commits a second at 20 000 events a second;
/// when idle the linger gathers what comes.
const MAX_BATCH: usize = 64;

/// The canonical text of a record: JSON with sorted keys, no whitespace.
/// `event` is the event's canonical JSON (as stored: serialised through
/// serde_json's ordered map, so its keys are sorted too).
fn canonical(seq: i64, at: i64, event: &str) -> String {
    format!(r#"{{"at":{at},"event":{event},"seq":{seq}}}"#)
}

fn chain_hash(prev: &str, canonical: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(prev.as_bytes());
    context.update(b"\n");
    context.update(canonical.as_bytes());
    hex::encode(context.finish().as_ref())
}

impl AuditLog {
    /// The audit log in `db`, with its writer thread. The writer lingers
    /// briefly to batch records, so a busy daemon writes one transaction
    /// per batch and appending never wakes a thread per record.
    pub fn new(db: Arc<Database>) -> Self {
        let writer = {
            let db = db.clone();
            BatchWriter::spawn("audit", LINGER, MAX_BATCH, move |batch: &[Queued]| {
                append_batch(&db, batch).inspect_err(|e| {
                    tracing::error!(records = batch.len(), error = %e, "cannot write audit records");
                })
            })
        };
        Self {
            db,
            writer: Arc::new(writer),
            per_event: Arc::default(),
            refusals: Arc::default(),
        }
    }

    /// Appends the record of a refused attempt, within
    /// [`MAX_REFUSALS_PER_WINDOW`] a window; past it, counts it. The count
    /// of a window is written when the next refusal comes after it, or by
    /// [`AuditLog::flush_refusals`].
    pub fn append_refusal(&self, event: AuditEvent) {
        let mut window = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if window.started.elapsed() >= REFUSAL_WINDOW {
            self.close_refusal_window(&mut window);
        }
        if window.recorded < MAX_REFUSALS_PER_WINDOW {
            window.recorded += 1;
            self.append(event);
        } else {
            window.suppressed += 1;
        }
    }

    /// Writes how many refusals the current window suppressed, if any, and
    /// starts a new window (at shutdown, so no count is lost).
    pub fn flush_refusals(&self) {
        let mut window = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        self.close_refusal_window(&mut window);
    }

    fn close_refusal_window(&self, window: &mut RefusalWindow) {
        if window.suppressed > 0 {
            self.append(AuditEvent::RefusalsSuppressed {
                suppressed: window.suppressed,
                since: window.started_at,
            });
        }
        *window = RefusalWindow::default();
    }

    /// Appends a record (hashed and written in the background, in order).
    /// Refused, with an error in the log, once the writer stopped: after
    /// the chain's head could not be read nothing more is appended, so no
    /// second chain can start beside the first.
    pub fn append(&self, event: AuditEvent) {
        self.append_with(event, None);
    }

    /// Appends a record with a [`Companion`] write, run in the record's
    /// transaction. A record suppressed by the per-event bound drops its
    /// companion too.
    pub(crate) fn append_with(&self, event: AuditEvent, companion: Option<Companion>) {
        let at = now_unix();
        let mut records = Vec::with_capacity(2);
        {
            let mut per_event = self.per_event.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, event_id)) = event.per_event() {
                if !per_event.contains_key(event_id) && per_event.len() >= MAX_TRACKED_EVENTS {
                    per_event.clear();
                }
                let counts = per_event.entry(event_id.to_string()).or_insert((0, 0));
                if counts.0 >= MAX_DETAILED_RECORDS_PER_EVENT {
                    counts.1 += 1;
                    return;
                }
                counts.0 += 1;
            }
            if let AuditEvent::Invocation {
                agent, event_id, ..
            } = &event
                && let Some((_, suppressed)) = per_event.remove(event_id.as_str())
                && suppressed > 0
            {
                records.push(Queued::new(
                    &AuditEvent::RecordsSuppressed {
                        agent: agent.clone(),
                        event_id: event_id.clone(),
                        suppressed,
                    },
                    at,
                    None,
                ));
            }
        }
        records.push(Queued::new(&event, at, companion));
        let pushed = self.writer.push_with(|queue| {
            let n = records.len() as u64;
            queue.append(&mut records);
            n
        });
        if let Err(error) = pushed {
            tracing::error!(%error, "an audit record was not written");
        }
    }

    /// Waits until every record appended so far is written; fails if the
    /// writer stopped or records were lost.
    pub fn flush(&self) -> Result<(), BatchError> {
        self.writer.flush()
    }

    /// Why appends stopped, if they did for another reason than
    /// [`AuditLog::close`].
    pub fn stopped(&self) -> Option<String> {
        self.writer.stopped().filter(|reason| reason != "closed")
    }

    /// Stops the writer after writing what is queued.
    pub fn close(&self) {
        self.writer.close();
    }

    /// Records with a sequence number above `after`, at most `limit`.
    pub fn read(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, DbError> {
        self.query(&AuditFilter {
            after: Some(after),
            limit,
            ..Default::default()
        })
    }

    /// Records matching `filter`, oldest or newest first, at most its
    /// `limit` (and at most [`MAX_PAGE`]). Flushes first, so it includes
    /// everything appended before it.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, DbError> {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "reading the audit log after a failed flush");
        }
        // Only the clauses in use, so SQLite can use `audit_seq` or
        // `audit_kind` (a `?1 IS NULL OR …` clause would defeat both).
        let mut clauses = Vec::new();
        let mut params: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(after) = filter.after {
            clauses.push("seq > ?");
            params.push(after.into());
        }
        if let Some(before) = filter.before {
            clauses.push("seq < ?");
            params.push(before.into());
        }
        if let Some(kind) = &filter.kind {
            clauses.push("kind = ?");
            params.push(kind.clone().into());
        }
        if let Some(agent) = &filter.agent {
            clauses.push("json_extract(event, '$.agent') = ?");
            params.push(agent.clone().into());
        }
        if let Some(actor) = &filter.actor {
            clauses.push("json_extract(event, '$.actor') = ?");
            params.push(actor.clone().into());
        }
        let condition = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let order = if filter.newest_first { "DESC" } else { "ASC" };
        params.push((filter.limit.min(MAX_PAGE) as i64).into());
        let conn = self.db.lock();
        let mut statement = conn.prepare_cached(&format!(
            "SELECT seq, at, event, prev_hash, hash FROM audit {condition} ORDER BY seq {order} LIMIT ?"
        ))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(params), |r| {
                let event: String = r.get(2)?;
                Ok(AuditRecord {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    event: serde_json::from_str(&event).unwrap_or(Value::String(event)),
                    prev_hash: r.get(3)?,
                    hash: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Recomputes the chain over every record.
    pub fn verify(&self) -> Result<Verification, DbError> {
        let flushed = self.flush();
        let conn = self.db.lock();
        let mut statement =
            conn.prepare("SELECT seq, at, event, prev_hash, hash FROM audit ORDER BY id")?;
        let mut rows = statement.query([])?;
        let mut expected_seq = 1;
        let mut prev = GENESIS.to_string();
        let mut records = 0;
        while let Some(row) = rows.next()? {
            let read = (|| {
                Ok::<_, rusqlite::Error>((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })();
            let (seq, at, event, stored_prev, stored_hash) = match read {
                Ok(row) => row,
                Err(e) => {
                    // A row that is not what the writer writes was
                    // tampered with.
                    return Ok(Verification {
                        records,
                        head: prev,
                        problem: Some(format!(
                            "the record after record {records} cannot be read ({e})"
                        )),
                    });
                }
            };
            let problem = if seq != expected_seq {
                Some(format!(
                    "record {seq} follows record {} (a record was deleted or moved)",
                    expected_seq - 1
                ))
            } else if stored_prev != prev {
                Some(format!(
                    "record {seq} does not link to the record before it (records were reordered or replaced)"
                ))
            } else {
                let hash = chain_hash(&prev, &canonical(seq, at, &event));
                (hash != stored_hash)
                    .then(|| format!("record {seq} was edited (its hash does not match)"))
            };
            if problem.is_some() {
                return Ok(Verification {
                    records,
                    head: prev,
                    problem,
                });
            }
            records += 1;
            expected_seq += 1;
            prev = stored_hash;
        }
        // An intact chain that stopped growing says why.
        let problem = self
            .stopped()
            .map(|reason| format!("appends stopped after record {records}: {reason}"))
            .or_else(|| flushed.err().map(|e| e.to_string()));
        Ok(Verification {
            records,
            head: prev,
            problem,
        })
    }
}

/// Appends `batch` after the chain's head in one transaction. A head that
/// cannot be read is fatal: appending after "no head" would start a second
/// chain and hide the first.
fn append_batch(db: &Database, batch: &[Queued]) -> Result<(), WriteError> {
    let batch_error = |e: rusqlite::Error| WriteError::Batch(e.to_string());
    let mut conn = db.lock();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(batch_error)?;
    let head = tx.query_row(
        "SELECT seq, hash FROM audit ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
    );
    let (mut seq, mut prev) = match head {
        Ok(head) => head,
        Err(rusqlite::Error::QueryReturnedNoRows) => (0, GENESIS.to_string()),
        Err(e) => {
            return Err(WriteError::Fatal(format!(
                "the audit chain's last record cannot be read ({e}); nothing more is appended"
            )));
        }
    };
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO audit (seq, at, event, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(batch_error)?;
        for Queued {
            at,
            text,
            companion,
        } in batch
        {
            seq += 1;
            let hash = chain_hash(&prev, &canonical(seq, *at, text));
            insert
                .execute(rusqlite::params![seq, at, text, prev, hash])
                .map_err(batch_error)?;
            prev = hash;
            // A companion that fails loses its own row, never the chain:
            // SQLite undoes the failed statement and the transaction goes on.
            if let Some(companion) = companion
                && let Err(e) = companion(&tx)
            {
                tracing::error!(seq, error = %e, "a row written with an audit record failed");
            }
        }
    }
    tx.commit().map_err(batch_error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_companion_is_written_with_its_record_and_its_failure_never_loses_the_record() {
        let db = Arc::new(Database::in_memory().unwrap());
        db.lock()
            .execute_batch("CREATE TABLE side (n INTEGER NOT NULL)")
            .unwrap();
        let log = AuditLog::new(db.clone());
        let event = |n: u64| AuditEvent::Invocation {
            agent: "a".into(),
            event_id: format!("e{n}"),
            source: "api".into(),
            duration_ms: n,
            outcome: "ok".into(),
        };
        log.append_with(
            event(1),
            Some(Box::new(|tx| {
                tx.execute("INSERT INTO side (n) VALUES (1)", []).map(drop)
            })),
        );
        // A NOT NULL violation: SQLite undoes the statement, not the batch.
        log.append_with(
            event(2),
            Some(Box::new(|tx| {
                tx.execute("INSERT INTO side (n) VALUES (NULL)", [])
                    .map(drop)
            })),
        );
        log.append(event(3));
        let verification = log.verify().unwrap();
        assert_eq!((verification.records, verification.problem), (3, None));
        let side: Vec<i64> = db
            .lock()
            .prepare("SELECT n FROM side")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(side, [1]);
    }

    #[test]
    fn refusals_are_recorded_within_a_bound_and_the_rest_counted() {
        let db = Arc::new(Database::in_memory().unwrap());
        let log = AuditLog::new(db);
        let refused = || AuditEvent::Admin {
            actor: "unknown".into(),
            action: "GET /v1/agents".into(),
            allowed: false,
        };
        for _ in 0..MAX_REFUSALS_PER_WINDOW + 80 {
            log.append_refusal(refused());
        }
        // Other records are not bounded by it.
        log.append(AuditEvent::Pause {
            agent: "a".into(),
            change: "pause".into(),
            actor: "admin".into(),
        });
        log.flush_refusals();
        let records = log
            .query(&AuditFilter {
                limit: MAX_PAGE,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(records.len() as u64, MAX_REFUSALS_PER_WINDOW + 2);
        let last = &records.last().unwrap().event;
        assert_eq!(
            (&last["kind"], &last["suppressed"]),
            (&"refusals_suppressed".into(), &80.into())
        );
        // A new window records in detail again; nothing suppressed, no count.
        log.append_refusal(refused());
        log.flush_refusals();
        assert_eq!(log.verify().unwrap().records, MAX_REFUSALS_PER_WINDOW + 3);
    }

    #[test]
    fn a_query_filters_by_kind_agent_and_actor_and_pages_newest_first() {
        let db = Arc::new(Database::in_memory().unwrap());
        let log = AuditLog::new(db);
        for n in 0..10u64 {
            log.append(AuditEvent::Invocation {
                agent: if n % 2 == 0 { "even" } else { "odd" }.into(),
                event_id: format!("e{n}"),
                source: "api".into(),
                duration_ms: n,
                outcome: "ok".into(),
            });
            log.append(AuditEvent::Pause {
                agent: "even".into(),
                change: "pause".into(),
                actor: format!("op{}", n % 3),
            });
        }
        let seqs = |filter: AuditFilter| -> Vec<i64> {
            log.query(&filter).unwrap().iter().map(|r| r.seq).collect()
        };
        // Invocations are the odd sequence numbers; "even"'s are 1, 5, 9, …
        let even = AuditFilter {
            kind: Some("invocation".into()),
            agent: Some("even".into()),
            newest_first: true,
            limit: 3,
            ..Default::default()
        };
        assert_eq!(seqs(even.clone()), [17, 13, 9]);
        assert_eq!(
            seqs(AuditFilter {
                before: Some(9),
                ..even.clone()
            }),
            [5, 1]
        );
        assert_eq!(
            seqs(AuditFilter {
                actor: Some("op1".into()),
                limit: 100,
                ..Default::default()
            }),
            [4, 10, 16]
        );
        assert_eq!(
            seqs(AuditFilter {
                after: Some(17),
                limit: 100,
                ..Default::default()
            }),
            [18, 19, 20]
        );
        // Every kind recorded is one the filter offers.
        let conn = log.db.lock();
        let kinds: Vec<String> = conn
            .prepare("SELECT DISTINCT kind FROM audit")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            kinds.iter().all(|k| KINDS.contains(&k.as_str())),
            "{kinds:?}"
        );
    }

    #[test]
    fn invocation_records_take_a_short_path_to_the_same_canonical_text() {
        let long = "é".repeat(MAX_RECORD_STRING_BYTES);
        let odd = "a\"b\\c\u{1}\n\u{2028}😀</script>";
        for (agent, event_id, source, outcome) in [
            ("triage", "evt_1", "api", "ok"),
            (odd, odd, odd, odd),
            (long.as_str(), "e", "github", "crashed"),
            ("", "", "", ""),
        ] {
            let event = AuditEvent::Invocation {
                agent: agent.into(),
                event_id: event_id.into(),
                source: source.into(),
                duration_ms: u64::MAX,
                outcome: outcome.into(),
            };
            let text = record_text(&event);
            assert_eq!(text, mapped_text(&event));
            assert!(text.len() < 3 * MAX_RECORD_STRING_BYTES, "{}", text.len());
        }
        assert!(
            record_text(&AuditEvent::Invocation {
                agent: long.clone(),
                event_id: String::new(),
                source: String::new(),
                duration_ms: 0,
                outcome: String::new(),
            })
            .contains("more bytes]")
        );
    }

    fn log_with(n: usize) -> (Arc<Database>, AuditLog) {
        let db = Arc::new(Database::in_memory().unwrap());
        let log = AuditLog::new(db.clone());
        for i in 0..n {
            log.append(AuditEvent::Invocation {
                agent: "triage".into(),
                event_id: format!("e{i}"),
                source: "api".into(),
                duration_ms: i as u64,
                outcome: "ok".into(),
            });
        }
        log.flush().unwrap();
        (db, log)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_db, log) = log_with(5);
        let v = log.verify().unwrap();
        assert_eq!((v.records, v.problem), (5, None));
        assert_eq!(log.read(3, 10).unwrap().len(), 2);
    }

    #[test]
    fn an_unreadable_chain_head_stops_appends_instead_of_starting_a_new_chain() {
        let (db, log) = log_with(3);
        // The head's hash is not text any more: the writer cannot tell
        // where the chain ends.
        db.lock()
            .execute_batch("UPDATE audit SET hash = X'00FF' WHERE seq = 3")
            .unwrap();
        log.append(AuditEvent::Invocation {
            agent: "triage".into(),
            event_id: "after".into(),
            source: "api".into(),
            duration_ms: 1,
            outcome: "ok".into(),
        });
        let error = log.flush().unwrap_err().to_string();
        assert!(error.contains("lost 1 item"), "{error}");
        assert!(
            log.stopped()
                .unwrap()
                .starts_with("the audit chain's last record cannot be read"),
        );
        // Nothing was appended, now or later.
        log.append(AuditEvent::Invocation {
            agent: "triage".into(),
            event_id: "later".into(),
            source: "api".into(),
            duration_ms: 1,
            outcome: "ok".into(),
        });
        let count: i64 = db
            .lock()
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 3);
        let verification = log.verify().unwrap();
        assert_eq!(verification.records, 2, "{verification:?}");
        assert!(
            verification
                .problem
                .as_deref()
                .is_some_and(|p| p.starts_with("the record after record 2 cannot be read")),
            "{verification:?}"
        );
    }

    #[test]
    fn edits_deletions_and_reordering_are_detected() {
        let cases: [(&str, &str); 4] = [
            (
                "UPDATE audit SET event = replace(event, '\"e2\"', '\"e9\"') WHERE seq = 3",
                "record 3 was edited",
            ),
            (
                "DELETE FROM audit WHERE seq = 2",
                "record 3 follows record 1",
            ),
            (
                "UPDATE audit SET seq = CASE seq WHEN 2 THEN 3 ELSE 2 END WHERE seq IN (2, 3)",
                "record 3 follows record 1",
            ),
            (
                "UPDATE audit SET hash = 'x' WHERE seq = 4",
                "record 4 was edited",
            ),
        ];
        for (tamper, expected) in cases {
            let (db, log) = log_with(5);
            db.lock().execute_batch(tamper).unwrap();
            let problem = log.verify().unwrap().problem.unwrap();
            assert!(problem.contains(expected), "{tamper}: {problem}");
        }
    }
}
