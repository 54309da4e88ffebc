//! Usage accounting and hard budgets.
//!
//! Every inference call goes through one path:
//! 1. [`Ledger::reserve`] holds the call's worst-case tokens and cost
//!    against the agent's budgets, atomically under one lock, so concurrent
//!    calls cannot overshoot. Over budget, or over the requests-per-minute
//!    limit, it refuses and nothing is sent.
//! 2. [`Ledger::settle`] replaces the reservation with the actual usage
//!    (for streams, from the final usage event). A reservation dropped
//!    without settling (the call failed before using anything, or its task
//!    was cancelled) is released by its `Drop`.
//!
//! Budgets are checked in memory: the running totals of each agent's
//! current day and month are loaded from the database the first time the
//! agent calls a model, and kept up to date by every settlement. Usage rows
//! are written by a background thread in batches, off the call path, so a
//! call pays a few hundred nanoseconds for accounting rather than a SQLite
//! transaction. [`Ledger::flush`] waits until everything settled so far is
//! on disk; [`Ledger::summary`] flushes first.
//!
//! Because the totals live in one process, that process must be the only
//! one spending from a state directory: [`Ledger::exclusive`] takes an
//! advisory lock on it (`clawcage run` and the daemon do), so a second
//! process refuses to start instead of silently doubling a budget.
//! Windows are calendar days and months in UTC.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use rusqlite::OptionalExtension;

use crate::batch::{BatchError, BatchWriter, WriteError};
use crate::db::{Database, DbError, now_unix};

/// The advisory lock file inside a state directory, held by the one process
/// that enforces budgets.
pub(crate) const LOCK_FILE: &str = "host.lock";

/// At most this many usage rows are written in one transaction.
const MAX_BATCH: usize = 512;
/// How long the writer waits for more rows before writing a batch: the
/// most a crash can lose (budgets themselves are enforced in memory).
const WRITE_LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// An agent's budgets. Every field is optional; none set means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetLimits {
    /// Tokens (input + output) per UTC day.
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    /// Tokens per UTC month.
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
    /// Spend per UTC day, in micro-dollars.
    #[serde(default)]
    pub usd_micros_per_day: Option<u64>,
    /// Spend per UTC month, in micro-dollars.
    #[serde(default)]
    pub usd_micros_per_month: Option<u64>,
    /// Calls started per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

impl BudgetLimits {
    /// Refuses a limit of 0: it would refuse every call while telling the
    /// agent to retry (to stop an agent's model calls, remove its bindings).
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("tokens_per_day", self.tokens_per_day),
            ("tokens_per_month", self.tokens_per_month),
            ("usd_micros_per_day", self.usd_micros_per_day),
            ("usd_micros_per_month", self.usd_micros_per_month),
            (
                "requests_per_minute",
                self.requests_per_minute.map(u64::from),
            ),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "budget.{field} = 0 would refuse every call; leave it out for no limit, or remove the agent's model bindings"
                ));
            }
        }
        Ok(())
    }
}

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A budget would be exceeded.
    #[error("{0}")]
    Exceeded(String),
    /// The requests-per-minute limit is reached.
    #[error("more than {limit} calls per minute")]
    RateLimited {
        /// The limit.
        limit: u32,
        /// Seconds until a call may start again.
        retry_after_secs: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The budgets shared with other daemons could not be reached.
    #[error("{0}")]
    Shared(String),
}

/// Budgets shared with other daemons (cluster mode): each call's worst
/// case is held against them too. Implemented by the cluster's leases;
/// the ledger knows only this.
#[async_trait::async_trait]
pub trait SharedBudgets: Send + Sync + std::fmt::Debug {
    /// Holds a call's worst case for `agent` against `limits`, or refuses.
    async fn take(
        &self,
        agent: &str,
        limits: &BudgetLimits,
        tokens: u64,
        cost_micros: u64,
        now_unix: i64,
    ) -> Result<Box<dyn SharedHold>, BudgetError>;
}

/// A call's hold on shared budgets; dropped unsettled, it is released.
pub trait SharedHold: Send + Sync + std::fmt::Debug {
    /// Replaces the hold with what the call used.
    fn settle(self: Box<Self>, tokens: u64, cost_micros: u64);
}

impl From<rusqlite::Error> for BudgetError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(DbError::Sqlite(e))
    }
}

/// A held reservation. [`Ledger::settle`] it with the call's usage;
/// dropping it releases the hold (nothing was used).
#[must_use = "a reservation must be settled, or dropped when nothing was used"]
pub struct Reservation {
    ledger: Arc<Shared>,
    agent: Arc<str>,
    id: u64,
    tokens: u64,
    cost_micros: u64,
    /// The same hold on the budgets shared with other daemons, in
    /// cluster mode.
    lease: Option<Box<dyn SharedHold>>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("agent", &self.agent)
            .field("tokens", &self.tokens)
            .field("cost_micros", &self.cost_micros)
            .finish_non_exhaustive()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut books = self.ledger.lock_books();
        // Only a reservation still pending is released: settled ones have
        // already moved from held to used.
        if let Some(book) = books.get_mut(&*self.agent)
            && book.pending.remove(&self.id)
        {
            book.held_tokens = book.held_tokens.saturating_sub(self.tokens);
            book.held_cost = book.held_cost.saturating_sub(self.cost_micros);
            // Nothing was sent, so the call does not count as a request.
            book.recent_starts.retain(|(_, id)| *id != self.id);
        }
    }
}

/// One call's actual usage. Metadata only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    /// The agent.
    pub agent: String,
    /// The binding it opened.
    pub binding: String,
    /// Provider kind.
    pub provider: String,
    /// Model id, as the operator configured it (never an id the provider
    /// reported, which is upstream text).
    pub model: String,
    /// Vault id of the key used.
    pub key_id: Option<String>,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// The part of `input_tokens` read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// The part of `input_tokens` written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// The provider reported no token counts; they were estimated.
    pub estimated: bool,
    /// Which model of the binding's chain this was: 0 for the binding's
    /// own, 1 for its first fallback, …
    pub fallback: u32,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
    /// Wall time of the call.
    pub latency_ms: u64,
    /// `ok`, or the error kind.
    pub outcome: String,
    /// The event during which the call was made (the audit log and the
    /// invocation list add up an event's calls by it).
    pub event_id: Option<String>,
}

/// Where an agent stands against its budgets now: what its calls used in
/// the current UTC day and month, and what calls in flight hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Standing {
    /// Tokens used today (UTC).
    pub day_tokens: u64,
    /// Spend today, in micro-dollars.
    pub day_cost_micros: u64,
    /// Tokens used this month (UTC).
    pub month_tokens: u64,
    /// Spend this month, in micro-dollars.
    pub month_cost_micros: u64,
    /// Tokens held by calls in flight (their worst case).
    pub held_tokens: u64,
    /// Spend held by calls in flight.
    pub held_cost_micros: u64,
}

/// Usage summed per agent, provider, model and key (and per UTC day, when
/// asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageSummary {
    /// The UTC day (`YYYY-MM-DD`), for a summary by day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// The agent.
    pub agent: String,
    /// Provider kind.
    pub provider: String,
    /// Model id.
    pub model: String,
    /// Vault id of the key.
    pub key_id: Option<String>,
    /// Calls.
    pub calls: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// Calls whose token counts the host estimated (the provider reported
    /// none): their tokens and cost are estimates too.
    pub estimated_calls: u64,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
}

/// Settled tokens and cost in one calendar window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    tokens: u64,
    cost_micros: u64,
}

impl Window {
    /// Moves to the window starting at `start` if time has passed into it.
    /// The ledger's process is the only one spending, so a new window starts
    /// empty.
    fn roll_to(&mut self, start: i64) {
        if start > self.start {
            *self = Window {
                start,
                tokens: 0,
                cost_micros: 0,
            };
        }
    }
}

/// One agent's running totals and holds.
#[derive(Debug)]
struct Book {
    name: Arc<str>,
    day: Window,
    month: Window,
    held_tokens: u64,
    held_cost: u64,
    /// Reservations not yet settled or dropped, by id.
    pending: std::collections::HashSet<u64>,
    /// Start times (Unix seconds) of calls in the last minute, oldest
    /// first, for the requests-per-minute limit. Each stays counted after
    /// its reservation settles, but one dropped unsettled (nothing sent) is
    /// removed.
    recent_starts: VecDeque<(i64, u64)>,
}

impl Book {
    fn roll(&mut self, now: i64) {
        self.day.roll_to(day_start(now));
        self.month.roll_to(month_start(now));
        while self
            .recent_starts
            .front()
            .is_some_and(|(at, _)| *at <= now - 60)
        {
            self.recent_starts.pop_front();
        }
    }

    fn add_usage(&mut self, tokens: u64, cost_micros: u64) {
        for window in [&mut self.day, &mut self.month] {
            window.tokens = window.tokens.saturating_add(tokens);
            window.cost_micros = window.cost_micros.saturating_add(cost_micros);
        }
    }
}

/// What every clone of a ledger shares.
struct Shared {
    db: Arc<Database>,
    books: Mutex<HashMap<String, Book>>,
    next_id: AtomicU64,
    writer: BatchWriter<(UsageRecord, i64)>,
    /// Held for the ledger's life when it is the state directory's budget
    /// authority.
    _lock: Option<std::fs::File>,
    /// Told about every settled call (the daemon's audit log and metrics).
    usage_hook: std::sync::OnceLock<UsageHook>,
    /// In cluster mode, the budgets every daemon shares.
    leases: std::sync::OnceLock<Box<dyn SharedBudgets>>,
}

/// A function told about every settled call.
pub(crate) type UsageHook = Arc<dyn Fn(&UsageRecord) + Send + Sync>;

impl Shared {
    fn lock_books(&self) -> MutexGuard<'_, HashMap<String, Book>> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The usage ledger. Cheap to clone; clones share totals and the writer.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("db", &self.shared.db)
            .finish_non_exhaustive()
    }
}

/// Start of the UTC day containing `now` (Unix seconds).
pub(crate) fn day_start(now: i64) -> i64 {
    now - now.rem_euclid(86_400)
}

/// Start of the UTC month containing `now` (Unix seconds).
pub(crate) fn month_start(now: i64) -> i64 {
    // Days since the epoch to a civil date and back (H. Hinnant's algorithms).
    let days = now.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day_of_month = doy - (153 * mp + 2) / 5; // 0-based
    (days - day_of_month) * 86_400
}

/// Unix seconds at the start of a UTC civil date (H. Hinnant's algorithm).
pub(crate) fn date_start(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400
}

/// Parses when a usage report starts: `today`, `month` (this UTC month),
/// a date `YYYY-MM-DD`, or Unix seconds.
pub(crate) fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    match text {
        "today" => return Ok(day_start(now)),
        "month" => return Ok(month_start(now)),
        _ => {}
    }
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    // A time ago: `7d`, `36h`, `90m`.
    for (suffix, unit) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if let Some(count) = text.strip_suffix(suffix)
            && !count.is_empty()
            && count.bytes().all(|b| b.is_ascii_digit())
        {
            return count
                .parse::<i64>()
                .ok()
                .and_then(|n| n.checked_mul(unit))
                .filter(|ago| *ago <= 100 * 365 * 86_400)
                .map(|ago| now - ago)
                .ok_or_else(|| format!("--since {text:?} is too far back"));
        }
    }
    // A calendar date that exists (2026-02-31 is refused, not 3 March).
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        use chrono::Datelike;
        return Ok(date_start(i64::from(date.year()), date.month(), date.day()));
    }
    Err(format!(
        "--since {text:?}: use today, month, a date (YYYY-MM-DD), a time ago (7d, 36h, 90m) or Unix seconds"
    ))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Ledger {
    /// A ledger on `db`, without the state directory lock: for in-memory
    /// databases, tests, and reading reports.
    pub fn new(db: Arc<Database>) -> Self {
        Self::with_lock(db, None)
    }

    /// A ledger that is the budget authority for `state_dir`: it takes the
    /// directory's advisory lock, and fails if another process holds it.
    pub(crate) fn exclusive(db: Arc<Database>, state_dir: &Path) -> Result<Self, DbError> {
        let path = state_dir.join(LOCK_FILE);
        let state_error = |reason: String| DbError::StateDir {
            path: state_dir.display().to_string(),
            reason,
        };
        let file = crate::fsutil::open_private_file(&path)
            .map_err(|e| state_error(format!("{LOCK_FILE}: {e}")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(state_error(
                    "another clawcage process is running agents on this state directory; budgets are enforced by one process at a time".into(),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(state_error(format!("{LOCK_FILE}: {e}")));
            }
        }
        Ok(Self::with_lock(db, Some(file)))
    }

    fn with_lock(db: Arc<Database>, lock: Option<std::fs::File>) -> Self {
        let writer = {
            let db = db.clone();
            BatchWriter::spawn(
                "ledger",
                WRITE_LINGER,
                MAX_BATCH,
                move |rows: &[(UsageRecord, i64)]| {
                    let mut conn = db.lock();
                    // Budgets stay enforced in memory; the rows of this batch
                    // are lost, and the next flush says so.
                    write_batch(&mut conn, rows).map_err(|e| {
                    tracing::error!(rows = rows.len(), error = %e, "cannot write usage rows; budgets stay enforced in memory");
                    WriteError::Batch(e.to_string())
                })
                },
            )
        };
        Self {
            shared: Arc::new(Shared {
                db,
                books: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                writer,
                _lock: lock,
                usage_hook: std::sync::OnceLock::new(),
                leases: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Holds `tokens` and `cost_micros` (the call's worst case) for `agent`
    /// against `limits`, or refuses.
    pub fn reserve(
        &self,
        agent: &str,
        limits: &BudgetLimits,
        tokens: u64,
        cost_micros: u64,
    ) -> Result<Reservation, BudgetError> {
        self.reserve_at(agent, limits, tokens, cost_micros, now_unix())
    }

    fn reserve_at(
        &self,
        agent: &str,
        limits: &BudgetLimits,
        tokens: u64,
        cost_micros: u64,
        now: i64,
    ) -> Result<Reservation, BudgetError> {
        let mut books = self.shared.lock_books();
        let book = self.book(&mut books, agent, now)?;
        book.roll(now);

        for (window, span, max_tokens, max_cost) in [
            (
                book.day,
                "day",
                limits.tokens_per_day,
                limits.usd_micros_per_day,
            ),
            (
                book.month,
                "month",
                limits.tokens_per_month,
                limits.usd_micros_per_month,
            ),
        ] {
            let used_tokens = window.tokens.saturating_add(book.held_tokens);
            let used_cost = window.cost_micros.saturating_add(book.held_cost);
            if let Some(max) = max_tokens
                && used_tokens.saturating_add(tokens) > max
            {
                return Err(BudgetError::Exceeded(format!(
                    "this call could use {tokens} tokens; {used_tokens} of the {max} tokens per {span} are used or held"
                )));
            }
            if let Some(max) = max_cost
                && used_cost.saturating_add(cost_micros) > max
            {
                return Err(BudgetError::Exceeded(format!(
                    "this call could cost ${:.6}; ${:.6} of the ${:.6} per {span} is spent or held",
                    cost_micros as f64 / 1e6,
                    used_cost as f64 / 1e6,
                    max as f64 / 1e6
                )));
            }
        }

        if let Some(limit) = limits.requests_per_minute
            && book.recent_starts.len() >= limit as usize
        {
            let retry_after_secs = book
                .recent_starts
                .front()
                .map_or(60, |(oldest, _)| (oldest + 60 - now).clamp(1, 60) as u64);
            return Err(BudgetError::RateLimited {
                limit,
                retry_after_secs,
            });
        }

        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        book.held_tokens = book.held_tokens.saturating_add(tokens);
        book.held_cost = book.held_cost.saturating_add(cost_micros);
        book.pending.insert(id);
        book.recent_starts.push_back((now, id));
        Ok(Reservation {
            ledger: self.shared.clone(),
            agent: book.name.clone(),
            id,
            tokens,
            cost_micros,
            lease: None,
        })
    }

    /// Makes this ledger spend from budgets shared with other daemons:
    /// [`Ledger::reserve_shared`] holds each call against the cluster's
    /// budget too. Only the first one set counts.
    pub fn share_budgets(&self, budgets: impl SharedBudgets + 'static) {
        let _ = self.shared.leases.set(Box::new(budgets));
    }

    /// [`Ledger::reserve`], and in cluster mode the same hold on the budget
    /// every daemon shares (taking a lease from the cluster's database when
    /// this daemon's is used up). The inference path reserves here.
    pub async fn reserve_shared(
        &self,
        agent: &str,
        limits: &BudgetLimits,
        tokens: u64,
        cost_micros: u64,
    ) -> Result<Reservation, BudgetError> {
        let now = now_unix();
        let mut reservation = self.reserve_at(agent, limits, tokens, cost_micros, now)?;
        let spend_limited = limits.tokens_per_day.is_some()
            || limits.tokens_per_month.is_some()
            || limits.usd_micros_per_day.is_some()
            || limits.usd_micros_per_month.is_some();
        if let Some(leases) = self.shared.leases.get()
            && spend_limited
        {
            // On refusal the local hold drops with `reservation`.
            reservation.lease = Some(leases.take(agent, limits, tokens, cost_micros, now).await?);
        }
        Ok(reservation)
    }

    /// The agent's book, loading its current totals from the database the
    /// first time.
    fn book<'b>(
        &self,
        books: &'b mut HashMap<String, Book>,
        agent: &str,
        now: i64,
    ) -> Result<&'b mut Book, BudgetError> {
        if !books.contains_key(agent) {
            let conn = self.shared.db.lock();
            let totals = |window: &str, start: i64| -> rusqlite::Result<Window> {
                let (tokens, cost): (i64, i64) = conn
                    .query_row(
                        "SELECT tokens, cost_micros FROM usage_totals WHERE agent = ?1 AND window = ?2 AND window_start = ?3",
                        rusqlite::params![agent, window, start],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?
                    .unwrap_or((0, 0));
                Ok(Window {
                    start,
                    tokens: tokens.max(0) as u64,
                    cost_micros: cost.max(0) as u64,
                })
            };
            let day = totals("day", day_start(now))?;
            let month = totals("month", month_start(now))?;
            let recent: Vec<i64> = conn
                .prepare("SELECT at FROM usage WHERE agent = ?1 AND at > ?2 ORDER BY at")?
                .query_map(rusqlite::params![agent, now - 60], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            drop(conn);
            books.insert(
                agent.to_string(),
                Book {
                    name: Arc::from(agent),
                    day,
                    month,
                    held_tokens: 0,
                    held_cost: 0,
                    pending: Default::default(),
                    recent_starts: recent.into_iter().map(|at| (at, 0)).collect(),
                },
            );
        }
        let book = books
            .get_mut(agent)
            .ok_or_else(|| BudgetError::Exceeded("the usage ledger lost an agent".into()))?;
        Ok(book)
    }

    /// When a call last used key `key_id` (Unix seconds), if ever.
    pub fn key_last_used(&self, key_id: &str) -> Result<Option<i64>, BudgetError> {
        let conn = self.shared.db.lock();
        let at = conn
            .prepare_cached("SELECT MAX(at) FROM usage WHERE key_id = ?1")?
            .query_row([key_id], |r| r.get(0))?;
        Ok(at)
    }

    /// Where `agent` stands now against its day and month budgets, holds
    /// included: the numbers [`Ledger::reserve`] checks.
    pub fn standing(&self, agent: &str) -> Result<Standing, BudgetError> {
        let now = now_unix();
        let mut books = self.shared.lock_books();
        let book = self.book(&mut books, agent, now)?;
        book.roll(now);
        Ok(Standing {
            day_tokens: book.day.tokens,
            day_cost_micros: book.day.cost_micros,
            month_tokens: book.month.tokens,
            month_cost_micros: book.month.cost_micros,
            held_tokens: book.held_tokens,
            held_cost_micros: book.held_cost,
        })
    }

    /// Replaces a reservation with the call's actual usage.
    pub fn settle(&self, mut reservation: Reservation, record: &UsageRecord) {
        let now = now_unix();
        if let Some(hold) = reservation.lease.take() {
            hold.settle(
                record.input_tokens.saturating_add(record.output_tokens),
                record.cost_micros,
            );
        }
        {
            let mut books = self.shared.lock_books();
            if let Some(book) = books.get_mut(&*reservation.agent)
                && book.pending.remove(&reservation.id)
            {
                book.held_tokens = book.held_tokens.saturating_sub(reservation.tokens);
                book.held_cost = book.held_cost.saturating_sub(reservation.cost_micros);
                book.roll(now);
                book.add_usage(
                    record.input_tokens.saturating_add(record.output_tokens),
                    record.cost_micros,
                );
            }
        }
        // No longer pending, so its Drop releases nothing; the call stays
        // counted among the last minute's starts.
        drop(reservation);
        self.enqueue(record, now);
    }

    /// Records usage that had no reservation.
    pub fn record(&self, record: &UsageRecord) {
        let now = now_unix();
        {
            let mut books = self.shared.lock_books();
            if let Ok(book) = self.book(&mut books, &record.agent, now) {
                book.roll(now);
                book.add_usage(
                    record.input_tokens.saturating_add(record.output_tokens),
                    record.cost_micros,
                );
                book.recent_starts.push_back((now, 0));
            }
        }
        self.enqueue(record, now);
    }

    /// Installs the function told about every settled call; only the first
    /// one installed counts.
    pub(crate) fn set_usage_hook(&self, hook: UsageHook) {
        let _ = self.shared.usage_hook.set(hook);
    }

    fn enqueue(&self, record: &UsageRecord, at: i64) {
        if let Some(hook) = self.shared.usage_hook.get() {
            hook(record);
        }
        if let Err(error) = self.shared.writer.push((record.clone(), at)) {
            tracing::error!(agent = %record.agent, %error, "usage row not stored");
        }
    }

    /// Waits until every usage row settled so far is written; fails if the
    /// writer stopped or rows were lost.
    pub fn flush(&self) -> Result<(), BatchError> {
        self.shared.writer.flush()
    }

    /// Usage since `since` (Unix seconds), optionally for one agent. Flushes
    /// first, so it includes every call settled before it.
    pub fn summary(
        &self,
        agent: Option<&str>,
        since: i64,
    ) -> Result<Vec<UsageSummary>, BudgetError> {
        self.summary_by(agent, since, false)
    }

    /// As [`Ledger::summary`], also split by UTC day when `by_day`.
    pub(crate) fn summary_by(
        &self,
        agent: Option<&str>,
        since: i64,
        by_day: bool,
    ) -> Result<Vec<UsageSummary>, BudgetError> {
        if let Err(error) = self.flush() {
            // The report still reads what was written.
            tracing::warn!(%error, "usage report after a failed flush");
        }
        let day = if by_day {
            "strftime('%Y-%m-%d', at, 'unixepoch')"
        } else {
            "NULL"
        };
        let conn = self.shared.db.lock();
        let mut statement = conn.prepare(&format!(
            "SELECT agent, provider, model, key_id, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_micros),
                    SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(estimated), {day} AS day
             FROM usage WHERE at >= ?1 AND (?2 IS NULL OR agent = ?2)
             GROUP BY day, agent, provider, model, key_id ORDER BY day, agent, provider, model, key_id"
        ))?;
        let rows = statement
            .query_map(rusqlite::params![since, agent], |r| {
                Ok(UsageSummary {
                    day: r.get(11)?,
                    agent: r.get(0)?,
                    provider: r.get(1)?,
                    model: r.get(2)?,
                    key_id: r.get(3)?,
                    calls: r.get::<_, i64>(4)? as u64,
                    input_tokens: r.get::<_, i64>(5)? as u64,
                    output_tokens: r.get::<_, i64>(6)? as u64,
                    cost_micros: r.get::<_, i64>(7)? as u64,
                    cache_read_tokens: r.get::<_, i64>(8)? as u64,
                    cache_write_tokens: r.get::<_, i64>(9)? as u64,
                    estimated_calls: r.get::<_, i64>(10)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn write_batch(
    conn: &mut rusqlite::Connection,
    batch: &[(UsageRecord, i64)],
) -> rusqlite::Result<()> {
    // One upsert per agent and window for the whole batch, not per row.
    let mut totals: HashMap<(&str, &str, i64), (i64, i64)> = HashMap::new();
    for (record, at) in batch {
        let tokens = to_i64(record.input_tokens.saturating_add(record.output_tokens));
        for (window, start) in [("day", day_start(*at)), ("month", month_start(*at))] {
            let entry = totals
                .entry((record.agent.as_str(), window, start))
                .or_default();
            entry.0 = entry.0.saturating_add(tokens);
            entry.1 = entry.1.saturating_add(to_i64(record.cost_micros));
        }
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO usage_totals (agent, window, window_start, tokens, cost_micros) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (agent, window, window_start)
             DO UPDATE SET tokens = tokens + excluded.tokens, cost_micros = cost_micros + excluded.cost_micros",
        )?;
        for ((agent, window, start), (tokens, cost)) in &totals {
            upsert.execute(rusqlite::params![agent, window, start, tokens, cost])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO usage (at, agent, binding, provider, model, key_id, input_tokens, output_tokens, cost_micros, latency_ms, outcome,
                                cache_read_tokens, cache_write_tokens, estimated, fallback, event_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for (record, at) in batch {
            insert.execute(rusqlite::params![
                at,
                record.agent,
                record.binding,
                record.provider,
                record.model,
                record.key_id,
                to_i64(record.input_tokens),
                to_i64(record.output_tokens),
                to_i64(record.cost_micros),
                to_i64(record.latency_ms),
                record.outcome,
                to_i64(record.cache_read_tokens),
                to_i64(record.cache_write_tokens),
                record.estimated,
                record.fallback,
                record.event_id,
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        Ledger::new(Arc::new(Database::in_memory().unwrap()))
    }

    fn record(agent: &str, tokens: u64, cost: u64) -> UsageRecord {
        UsageRecord {
            agent: agent.into(),
            binding: "default".into(),
            provider: "anthropic".into(),
            model: "claude-haiku-4-5".into(),
            key_id: Some("main".into()),
            input_tokens: tokens / 2,
            output_tokens: tokens - tokens / 2,
            cost_micros: cost,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            estimated: false,
            fallback: 0,
            latency_ms: 5,
            outcome: "ok".into(),
            event_id: None,
        }
    }

    #[test]
    fn calendar_windows() {
        // 2026-11-27T10:00:00Z
        let now = 1_795_773_600;
        assert_eq!(day_start(now), 1_795_737_600); // 2026-11-27T00:00:00Z
        assert_eq!(month_start(now), 1_793_491_200); // 2026-11-01T00:00:00Z
        assert_eq!(month_start(951_782_400), 949_363_200); // 2000-02-29 -> 2000-02-01
        assert_eq!(month_start(0), 0);
    }

    #[test]
    fn since_parsing() {
        let now = 1_795_773_600;
        assert_eq!(parse_since("today", now).unwrap(), 1_795_737_600);
        assert_eq!(parse_since("month", now).unwrap(), 1_793_491_200);
        assert_eq!(parse_since("2026-11-01", now).unwrap(), 1_793_491_200);
        assert_eq!(parse_since("2000-02-29", now).unwrap(), 951_782_400);
        assert_eq!(parse_since("12345", now).unwrap(), 12_345);
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("2026-13-01", now).is_err());
        assert!(parse_since("2026-02-31", now).is_err(), "not 3 March");
        assert!(parse_since("2026-2-1x", now).is_err());
        assert_eq!(parse_since("7d", now).unwrap(), now - 7 * 86_400);
        assert_eq!(parse_since("36h", now).unwrap(), now - 36 * 3_600);
        assert_eq!(parse_since("90m", now).unwrap(), now - 90 * 60);
        assert!(parse_since("-3d", now).is_err());
        assert!(parse_since("99999999999d", now).is_err());
    }

    #[test]
    fn budgets_of_zero_are_refused() {
        let zero = BudgetLimits {
            requests_per_minute: Some(0),
            ..BudgetLimits::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .starts_with("budget.requests_per_minute = 0")
        );
        assert_eq!(BudgetLimits::default().validate(), Ok(()));
    }

    #[test]
    fn fifty_concurrent_reservations_never_overshoot_a_budget_for_ten() {
        let ledger = ledger();
        let limits = BudgetLimits {
            usd_micros_per_day: Some(10 * 1_000),
            ..BudgetLimits::default()
        };
        let granted = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..50)
                .map(|_| scope.spawn(|| ledger.reserve("a", &limits, 100, 1_000)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter_map(Result::ok)
                .collect::<Vec<_>>()
        });
        assert_eq!(granted.len(), 10);
        // Settling for less than reserved frees room for more calls.
        for reservation in granted {
            ledger.settle(reservation, &record("a", 10, 100));
        }
        let more: Vec<_> = (0..20)
            .filter_map(|_| ledger.reserve("a", &limits, 100, 1_000).ok())
            .collect();
        assert_eq!(more.len(), 9); // 10 × 100 spent, 9 × 1 000 more fit in 10 000
        let err = ledger.reserve("a", &limits, 100, 1_000).unwrap_err();
        assert!(
            matches!(err, BudgetError::Exceeded(ref m) if m.contains("per day")),
            "{err}"
        );
        // Another agent's budget is its own.
        assert!(ledger.reserve("b", &limits, 100, 1_000).is_ok());
    }

    #[test]
    fn dropped_reservations_stop_counting_and_windows_roll() {
        let ledger = ledger();
        let limits = BudgetLimits {
            tokens_per_day: Some(1_000),
            ..BudgetLimits::default()
        };
        let held = ledger.reserve("a", &limits, 1_000, 0).unwrap();
        assert!(ledger.reserve("a", &limits, 1, 0).is_err());
        drop(held);
        let held = ledger.reserve("a", &limits, 1_000, 0).unwrap();
        ledger.settle(held, &record("a", 1_000, 0));
        assert!(ledger.reserve("a", &limits, 1, 0).is_err());
        // The next UTC day starts empty.
        let tomorrow = day_start(now_unix()) + 86_400;
        assert!(ledger.reserve_at("a", &limits, 1_000, 0, tomorrow).is_ok());
    }

    #[test]
    fn totals_survive_a_restart() {
        let db = Arc::new(Database::in_memory().unwrap());
        let limits = BudgetLimits {
            tokens_per_month: Some(100),
            ..BudgetLimits::default()
        };
        let first = Ledger::new(db.clone());
        let r = first.reserve("a", &limits, 100, 0).unwrap();
        first.settle(r, &record("a", 80, 0));
        drop(first); // drains the writer
        let second = Ledger::new(db);
        assert!(second.reserve("a", &limits, 21, 0).is_err());
        assert!(second.reserve("a", &limits, 20, 0).is_ok());
    }

    #[test]
    fn one_budget_authority_per_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let db = Arc::new(Database::create(&state).unwrap());
        let first = Ledger::exclusive(db.clone(), &state).unwrap();
        let err = Ledger::exclusive(db.clone(), &state)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another clawcage process"), "{err}");
        drop(first);
        assert!(Ledger::exclusive(db, &state).is_ok());
    }

    #[test]
    fn requests_per_minute() {
        let ledger = ledger();
        let limits = BudgetLimits {
            requests_per_minute: Some(3),
            ..BudgetLimits::default()
        };
        // A call dropped before sending does not count.
        drop(ledger.reserve("a", &limits, 1, 0).unwrap());
        for _ in 0..3 {
            let r = ledger.reserve("a", &limits, 1, 0).unwrap();
            ledger.settle(r, &record("a", 1, 0));
        }
        let err = ledger.reserve("a", &limits, 1, 0).unwrap_err();
        assert!(
            matches!(err, BudgetError::RateLimited { limit: 3, retry_after_secs } if (1..=60).contains(&retry_after_secs))
        );
    }

    #[test]
    fn summary_groups_by_agent_model_and_key() {
        let ledger = ledger();
        ledger.record(&record("a", 10, 7));
        ledger.record(&record("a", 20, 8));
        ledger.record(&record("b", 5, 1));
        let all = ledger.summary(None, 0).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (
                all[0].calls,
                all[0].input_tokens + all[0].output_tokens,
                all[0].cost_micros
            ),
            (2, 30, 15)
        );
        assert_eq!(ledger.summary(Some("b"), 0).unwrap().len(), 1);
    }
}
