//! Usage accounting and hard budgets.
//!
//! Every inference call goes through one path:
//! 1. [`Ledger::reserve`] holds the call's worst-case tokens and cost
//!    against the agent's budgets, atomically (one `BEGIN IMMEDIATE`
//!    transaction, so concurrent calls, even from several processes, cannot
//!    overshoot). Over budget, or over the requests-per-minute limit, it
//!    refuses and nothing is sent.
//! 2. [`Ledger::settle`] replaces the reservation with the actual usage
//!    (for streams, from the final usage event), or [`Ledger::release`]
//!    drops it when the call failed before using anything.
//!
//! Reservations left behind by a crash expire after [`RESERVATION_TTL_SECS`].
//! Windows are calendar days and months in UTC.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use rusqlite::OptionalExtension;

use crate::db::{Database, DbError, now_unix};

/// How long an unsettled reservation counts against a budget: longer than
/// any event's deadline.
pub const RESERVATION_TTL_SECS: i64 = 20 * 60;

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
}

impl From<rusqlite::Error> for BudgetError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(DbError::Sqlite(e))
    }
}

/// A held reservation. Settle or release it; dropping it leaves it to
/// expire.
#[derive(Debug)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    id: i64,
}

/// One call's actual usage. Metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    /// The agent.
    pub agent: String,
    /// The binding it opened.
    pub binding: String,
    /// Provider kind.
    pub provider: String,
    /// Model id (as the provider reported it, when it did).
    pub model: String,
    /// Vault id of the key used.
    pub key_id: Option<String>,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
    /// Wall time of the call.
    pub latency_ms: u64,
    /// `ok`, or the error kind.
    pub outcome: String,
}

/// Usage summed per agent, provider, model and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageSummary {
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
    /// Cost in micro-dollars.
    pub cost_micros: u64,
}

/// The usage ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    db: Arc<Database>,
}

/// Start of the UTC day containing `now` (Unix seconds).
pub fn day_start(now: i64) -> i64 {
    now - now.rem_euclid(86_400)
}

/// Start of the UTC month containing `now` (Unix seconds).
pub fn month_start(now: i64) -> i64 {
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
pub fn date_start(year: i64, month: u32, day: u32) -> i64 {
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
pub fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    match text {
        "today" => return Ok(day_start(now)),
        "month" => return Ok(month_start(now)),
        _ => {}
    }
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    let parts: Vec<&str> = text.split('-').collect();
    if let [y, m, d] = parts[..]
        && let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>())
        && (1..=12).contains(&m)
        && (1..=31).contains(&d)
    {
        return Ok(date_start(y, m, d));
    }
    Err(format!(
        "--since {text:?}: use today, month, YYYY-MM-DD or Unix seconds"
    ))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Ledger {
    /// A ledger on `db`.
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
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
        let mut conn = self.db.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM reservations WHERE expires_at <= ?1", [now])?;

        let (held_tokens, held_cost): (i64, i64) = tx.query_row(
            "SELECT COALESCE(SUM(tokens), 0), COALESCE(SUM(cost_micros), 0) FROM reservations WHERE agent = ?1",
            [agent],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let spent_since = |window: &str, since: i64| -> rusqlite::Result<(i64, i64)> {
            let (used_tokens, used_cost): (i64, i64) = tx
                .query_row(
                    "SELECT tokens, cost_micros FROM usage_totals WHERE agent = ?1 AND window = ?2 AND window_start = ?3",
                    rusqlite::params![agent, window, since],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .unwrap_or((0, 0));
            Ok((
                used_tokens.saturating_add(held_tokens),
                used_cost.saturating_add(held_cost),
            ))
        };

        for (window, since, max_tokens, max_cost) in [
            (
                "day",
                day_start(now),
                limits.tokens_per_day,
                limits.usd_micros_per_day,
            ),
            (
                "month",
                month_start(now),
                limits.tokens_per_month,
                limits.usd_micros_per_month,
            ),
        ] {
            if max_tokens.is_none() && max_cost.is_none() {
                continue;
            }
            let (used_tokens, used_cost) = spent_since(window, since)?;
            if let Some(max) = max_tokens
                && used_tokens.saturating_add(to_i64(tokens)) > to_i64(max)
            {
                return Err(BudgetError::Exceeded(format!(
                    "this call could use {tokens} tokens; {used_tokens} of the {max} tokens per {window} are used or held"
                )));
            }
            if let Some(max) = max_cost
                && used_cost.saturating_add(to_i64(cost_micros)) > to_i64(max)
            {
                return Err(BudgetError::Exceeded(format!(
                    "this call could cost ${:.6}; ${:.6} of the ${:.6} per {window} is spent or held",
                    cost_micros as f64 / 1e6,
                    used_cost as f64 / 1e6,
                    max as f64 / 1e6
                )));
            }
        }

        if let Some(limit) = limits.requests_per_minute {
            let (recent, oldest): (i64, Option<i64>) = tx.query_row(
                "SELECT COUNT(*), MIN(at) FROM (
                     SELECT at FROM usage WHERE agent = ?1 AND at > ?2
                     UNION ALL SELECT created_at FROM reservations WHERE agent = ?1 AND created_at > ?2)",
                rusqlite::params![agent, now - 60],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if recent >= i64::from(limit) {
                let retry_after_secs =
                    oldest.map_or(60, |oldest| (oldest + 60 - now).clamp(1, 60) as u64);
                return Err(BudgetError::RateLimited {
                    limit,
                    retry_after_secs,
                });
            }
        }

        tx.execute(
            "INSERT INTO reservations (agent, tokens, cost_micros, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![agent, to_i64(tokens), to_i64(cost_micros), now, now + RESERVATION_TTL_SECS],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Reservation { id })
    }

    /// Replaces a reservation with the call's actual usage.
    pub fn settle(
        &self,
        reservation: Reservation,
        record: &UsageRecord,
    ) -> Result<(), BudgetError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM reservations WHERE id = ?1", [reservation.id])?;
        insert_usage(&tx, record, now_unix())?;
        tx.commit()?;
        Ok(())
    }

    /// Drops a reservation whose call used nothing.
    pub fn release(&self, reservation: Reservation) -> Result<(), BudgetError> {
        self.db
            .lock()
            .execute("DELETE FROM reservations WHERE id = ?1", [reservation.id])?;
        Ok(())
    }

    /// Records usage that had no reservation (for example a call refused by
    /// the provider before any budget applied).
    pub fn record(&self, record: &UsageRecord) -> Result<(), BudgetError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert_usage(&tx, record, now_unix())?;
        tx.commit()?;
        Ok(())
    }

    /// Usage since `since` (Unix seconds), optionally for one agent.
    pub fn summary(
        &self,
        agent: Option<&str>,
        since: i64,
    ) -> Result<Vec<UsageSummary>, BudgetError> {
        let conn = self.db.lock();
        let mut statement = conn.prepare(
            "SELECT agent, provider, model, key_id, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_micros)
             FROM usage WHERE at >= ?1 AND (?2 IS NULL OR agent = ?2)
             GROUP BY agent, provider, model, key_id ORDER BY agent, provider, model, key_id",
        )?;
        let rows = statement
            .query_map(rusqlite::params![since, agent], |r| {
                Ok(UsageSummary {
                    agent: r.get(0)?,
                    provider: r.get(1)?,
                    model: r.get(2)?,
                    key_id: r.get(3)?,
                    calls: r.get::<_, i64>(4)? as u64,
                    input_tokens: r.get::<_, i64>(5)? as u64,
                    output_tokens: r.get::<_, i64>(6)? as u64,
                    cost_micros: r.get::<_, i64>(7)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn insert_usage(
    conn: &rusqlite::Connection,
    record: &UsageRecord,
    at: i64,
) -> rusqlite::Result<usize> {
    let tokens = to_i64(record.input_tokens.saturating_add(record.output_tokens));
    for (window, start) in [("day", day_start(at)), ("month", month_start(at))] {
        conn.execute(
            "INSERT INTO usage_totals (agent, window, window_start, tokens, cost_micros) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (agent, window, window_start)
             DO UPDATE SET tokens = tokens + excluded.tokens, cost_micros = cost_micros + excluded.cost_micros",
            rusqlite::params![record.agent, window, start, tokens, to_i64(record.cost_micros)],
        )?;
    }
    conn.execute(
        "INSERT INTO usage (at, agent, binding, provider, model, key_id, input_tokens, output_tokens, cost_micros, latency_ms, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        rusqlite::params![
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
        ],
    )
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
            latency_ms: 5,
            outcome: "ok".into(),
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
            ledger.settle(reservation, &record("a", 10, 100)).unwrap();
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
    fn released_and_expired_reservations_stop_counting() {
        let ledger = ledger();
        let limits = BudgetLimits {
            tokens_per_month: Some(1_000),
            ..BudgetLimits::default()
        };
        let held = ledger.reserve("a", &limits, 1_000, 0).unwrap();
        assert!(ledger.reserve("a", &limits, 1, 0).is_err());
        ledger.release(held).unwrap();
        let _leaked = ledger.reserve("a", &limits, 1_000, 0).unwrap();
        let later = now_unix() + RESERVATION_TTL_SECS + 1;
        assert!(ledger.reserve_at("a", &limits, 1_000, 0, later).is_ok());
    }

    #[test]
    fn requests_per_minute() {
        let ledger = ledger();
        let limits = BudgetLimits {
            requests_per_minute: Some(3),
            ..BudgetLimits::default()
        };
        for _ in 0..3 {
            let r = ledger.reserve("a", &limits, 1, 0).unwrap();
            ledger.settle(r, &record("a", 1, 0)).unwrap();
        }
        let err = ledger.reserve("a", &limits, 1, 0).unwrap_err();
        assert!(
            matches!(err, BudgetError::RateLimited { limit: 3, retry_after_secs } if (1..=60).contains(&retry_after_secs))
        );
    }

    #[test]
    fn summary_groups_by_agent_model_and_key() {
        let ledger = ledger();
        ledger.record(&record("a", 10, 7)).unwrap();
        ledger.record(&record("a", 20, 8)).unwrap();
        ledger.record(&record("b", 5, 1)).unwrap();
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
