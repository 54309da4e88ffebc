//! Budgets that stay exact across daemons: leased slices.
//!
//! Each agent's day and month windows live in PostgreSQL
//! (`budget_windows`) with two running totals: what calls used (settled)
//! and what daemons hold (leased). A daemon that needs budget for a call
//! takes a *slice* in one transaction, with both windows' rows locked, and
//! only if settled + leased + slice stays within every limit. Calls then
//! reserve from the daemon's slice in memory (the fast path: a mutex and
//! some arithmetic, no round trip), and give back what they did not use.
//! So the daemons together never let more than the limit through, whatever
//! their number and however their calls interleave.
//!
//! - **Slices** are a fraction ([`SLICE_DIVISOR`]) of what is left in the
//!   window, and never less than the call's shortfall: a large budget is
//!   spent from memory, and as the window fills the slices shrink to the
//!   call's own worst case, so no daemon sits on budget another needs.
//! - **Renewal.** Every [`RENEW_EVERY`] a daemon reports what its calls
//!   used (leased becomes settled) and renews its leases; a lease idle for
//!   [`RETURN_IDLE_AFTER`] is handed back whole.
//! - **A daemon that dies** stops renewing. After [`RECLAIM_AFTER`] any
//!   daemon reclaims its leases, counting their unreported remainder as
//!   spent: its calls may have used it, and a budget must never be
//!   exceeded, only, at worst, under-spent by one slice.
//! - **A daemon that cannot reach the database** stops spending from its
//!   slices after [`USABLE_FOR`] without a renewal (well before others may
//!   reclaim them), and its calls fail as unavailable.
//!
//! Windows are UTC days and months by each daemon's clock; the lease
//! deadlines use the database's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::{ClusterDb, ClusterError};
use crate::ledger::{BudgetError, BudgetLimits, day_start, month_start};

/// A slice is at least this fraction of what is left in the window.
pub const SLICE_DIVISOR: u64 = 8;
/// How often a daemon reports usage and renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A lease with no call for this long is handed back.
pub const RETURN_IDLE_AFTER: Duration = Duration::from_secs(2);
/// Without a renewal for this long, a daemon stops spending from a lease.
pub const USABLE_FOR: Duration = Duration::from_secs(10);
/// A lease not renewed for this long (database clock) is reclaimed.
pub const RECLAIM_AFTER: Duration = Duration::from_secs(30);

/// Which lease: one per agent and UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LeaseKey {
    agent: Arc<str>,
    day_start: i64,
}

/// A slice this daemon holds, as it stands in memory.
#[derive(Debug)]
struct Lease {
    month_start: i64,
    /// Bumped when the lease is found reclaimed: holds of an older
    /// generation settle into nothing (the reclaim counted them as spent).
    generation: u64,
    /// What the lease's row holds: free + held by calls + used.
    tokens: u64,
    cost_micros: u64,
    /// Not held by a call.
    free_tokens: u64,
    free_cost_micros: u64,
    /// Used by settled calls, not yet reported.
    used_tokens: u64,
    used_cost_micros: u64,
    in_flight: u32,
    last_call: Instant,
    usable_until: Instant,
}

struct Inner {
    db: ClusterDb,
    daemon: String,
    leases: Mutex<HashMap<LeaseKey, Lease>>,
    /// One slow-path acquisition at a time: a burst of calls makes a few
    /// round trips, not one each.
    acquiring: tokio::sync::Mutex<()>,
    generations: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<LeaseKey, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// This daemon's leases on the cluster's budgets. Cheap to clone.
#[derive(Clone)]
pub struct BudgetLeases {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BudgetLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetLeases")
            .field("daemon", &self.inner.daemon)
            .finish_non_exhaustive()
    }
}

/// Budget a call holds from a lease. Settle it with the call's usage;
/// dropped unsettled, it goes back to the lease.
#[must_use = "a hold must be settled, or dropped when nothing was used"]
pub struct LeaseHold {
    inner: Arc<Inner>,
    key: LeaseKey,
    generation: u64,
    tokens: u64,
    cost_micros: u64,
    done: bool,
}

impl std::fmt::Debug for LeaseHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHold")
            .field("agent", &self.key.agent)
            .field("tokens", &self.tokens)
            .field("cost_micros", &self.cost_micros)
            .finish_non_exhaustive()
    }
}

impl LeaseHold {
    /// Replaces the hold with what the call used; the rest goes back to
    /// the lease.
    pub fn settle(mut self, tokens: u64, cost_micros: u64) {
        self.done = true;
        let mut leases = self.inner.lock();
        let Some(lease) = leases.get_mut(&self.key) else {
            return;
        };
        if lease.generation != self.generation {
            return;
        }
        lease.in_flight = lease.in_flight.saturating_sub(1);
        lease.used_tokens = lease.used_tokens.saturating_add(tokens);
        lease.used_cost_micros = lease.used_cost_micros.saturating_add(cost_micros);
        // A call that used more than its worst case takes the excess from
        // the free part; the report still settles all of it.
        lease.free_tokens = (lease.free_tokens + self.tokens).saturating_sub(tokens);
        lease.free_cost_micros =
            (lease.free_cost_micros + self.cost_micros).saturating_sub(cost_micros);
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut leases = self.inner.lock();
        if let Some(lease) = leases.get_mut(&self.key)
            && lease.generation == self.generation
        {
            lease.in_flight = lease.in_flight.saturating_sub(1);
            lease.free_tokens = lease.free_tokens.saturating_add(self.tokens);
            lease.free_cost_micros = lease.free_cost_micros.saturating_add(self.cost_micros);
        }
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// One window's totals, as read under its row lock.
#[derive(Debug, Clone, Copy, Default)]
struct WindowTotals {
    settled_tokens: u64,
    settled_cost: u64,
    leased_tokens: u64,
    leased_cost: u64,
}

/// What is left under `limit`, if there is one.
fn room(limit: Option<u64>, settled: u64, leased: u64) -> Option<u64> {
    limit.map(|max| max.saturating_sub(settled.saturating_add(leased)))
}

/// The slice to take for a shortfall, given the room left (none: no limit).
fn slice(shortfall: u64, room: Option<u64>) -> Option<u64> {
    match room {
        None => Some(shortfall),
        Some(room) if room < shortfall => None,
        Some(room) => Some(shortfall.max(room / SLICE_DIVISOR).min(room)),
    }
}

impl BudgetLeases {
    /// Leases for this daemon (`daemon`: an id unique to this process) on
    /// `db`, and the task that renews them every [`RENEW_EVERY`]; the task
    /// ends when the last clone is dropped.
    pub fn start(db: ClusterDb, daemon: impl Into<String>) -> Self {
        let inner = Arc::new(Inner {
            db,
            daemon: daemon.into(),
            leases: Mutex::new(HashMap::new()),
            acquiring: tokio::sync::Mutex::new(()),
            generations: std::sync::atomic::AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(renew_loop(weak));
        Self { inner }
    }

    /// This daemon's id.
    pub fn daemon(&self) -> &str {
        &self.inner.daemon
    }

    /// Holds `tokens` and `cost_micros` (a call's worst case) for `agent`
    /// from this daemon's lease, taking a larger lease from the cluster
    /// first if needed; refuses when the cluster's budget cannot cover it.
    pub async fn take(
        &self,
        agent: &str,
        limits: &BudgetLimits,
        tokens: u64,
        cost_micros: u64,
        now_unix: i64,
    ) -> Result<LeaseHold, BudgetError> {
        let key = LeaseKey {
            agent: Arc::from(agent),
            day_start: day_start(now_unix),
        };
        if let Some(hold) = self.take_local(&key, tokens, cost_micros) {
            return Ok(hold);
        }
        // The slow path, one at a time: whoever waited may find that the
        // acquisition before it left enough.
        let _turn = self.inner.acquiring.lock().await;
        if let Some(hold) = self.take_local(&key, tokens, cost_micros) {
            return Ok(hold);
        }
        self.acquire(&key, month_start(now_unix), limits, tokens, cost_micros)
            .await?;
        self.take_local(&key, tokens, cost_micros).ok_or_else(|| {
            BudgetError::Exceeded("the cluster's budget lease ran out; try again".into())
        })
    }

    /// The fast path: a hold on the lease in memory, if it covers the call.
    fn take_local(&self, key: &LeaseKey, tokens: u64, cost_micros: u64) -> Option<LeaseHold> {
        let mut leases = self.inner.lock();
        let lease = leases.get_mut(key)?;
        if Instant::now() >= lease.usable_until
            || lease.free_tokens < tokens
            || lease.free_cost_micros < cost_micros
        {
            return None;
        }
        lease.free_tokens -= tokens;
        lease.free_cost_micros -= cost_micros;
        lease.in_flight += 1;
        lease.last_call = Instant::now();
        Some(LeaseHold {
            inner: self.inner.clone(),
            key: key.clone(),
            generation: lease.generation,
            tokens,
            cost_micros,
            done: false,
        })
    }

    /// Takes a slice from the cluster big enough for the call, or refuses.
    async fn acquire(
        &self,
        key: &LeaseKey,
        month_start: i64,
        limits: &BudgetLimits,
        tokens: u64,
        cost_micros: u64,
    ) -> Result<(), BudgetError> {
        let agent: &str = &key.agent;
        // Leases of daemons that are gone go back first (a transaction of
        // its own, so lock order stays day then month everywhere).
        reclaim_dead(&self.inner.db, agent).await?;

        let (free_tokens, free_cost, usable) = {
            let leases = self.inner.lock();
            leases.get(key).map_or((0, 0, false), |l| {
                (
                    l.free_tokens,
                    l.free_cost_micros,
                    Instant::now() < l.usable_until,
                )
            })
        };
        // A lease past its deadline is not spent from until renewed: ask
        // for the whole call.
        let (short_tokens, short_cost) = if usable {
            (
                tokens.saturating_sub(free_tokens),
                cost_micros.saturating_sub(free_cost),
            )
        } else {
            (tokens, cost_micros)
        };

        let mut client = self.inner.db.client().await.map_err(shared)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "INSERT INTO budget_windows (agent, span, start_at) VALUES ($1, 'day', $2), ($1, 'month', $3) ON CONFLICT DO NOTHING",
            &[&agent, &key.day_start, &month_start],
        )
        .await
        .map_err(pg)?;
        let rows = tx
            .query(
                "SELECT span, settled_tokens, settled_cost_micros, leased_tokens, leased_cost_micros FROM budget_windows \
                 WHERE agent = $1 AND ((span = 'day' AND start_at = $2) OR (span = 'month' AND start_at = $3)) \
                 ORDER BY span FOR UPDATE",
                &[&agent, &key.day_start, &month_start],
            )
            .await
            .map_err(pg)?;
        let mut day = WindowTotals::default();
        let mut month = WindowTotals::default();
        for row in &rows {
            let span: &str = row.get(0);
            let totals = WindowTotals {
                settled_tokens: to_u64(row.get(1)),
                settled_cost: to_u64(row.get(2)),
                leased_tokens: to_u64(row.get(3)),
                leased_cost: to_u64(row.get(4)),
            };
            if span == "day" {
                day = totals;
            } else {
                month = totals;
            }
        }

        // Every limited window must have room for the shortfall.
        let windows = [
            ("day", day, limits.tokens_per_day, limits.usd_micros_per_day),
            (
                "month",
                month,
                limits.tokens_per_month,
                limits.usd_micros_per_month,
            ),
        ];
        let mut token_room: Option<u64> = None;
        let mut cost_room: Option<u64> = None;
        for (span, totals, max_tokens, max_cost) in windows {
            if let Some(room) = room(max_tokens, totals.settled_tokens, totals.leased_tokens) {
                if room < short_tokens {
                    let used = totals.settled_tokens + totals.leased_tokens + free_tokens;
                    return Err(BudgetError::Exceeded(format!(
                        "this call could use {tokens} tokens; {} of the {} tokens per {span} are used or held across the cluster",
                        used.min(max_tokens.unwrap_or(u64::MAX)),
                        max_tokens.unwrap_or_default()
                    )));
                }
                token_room = Some(token_room.map_or(room, |r| r.min(room)));
            }
            if let Some(room) = room(max_cost, totals.settled_cost, totals.leased_cost) {
                if room < short_cost {
                    let max = max_cost.unwrap_or_default();
                    return Err(BudgetError::Exceeded(format!(
                        "this call could cost ${:.6}; ${:.6} of the ${:.6} per {span} is spent or held across the cluster",
                        cost_micros as f64 / 1e6,
                        (totals.settled_cost + totals.leased_cost).min(max) as f64 / 1e6,
                        max as f64 / 1e6
                    )));
                }
                cost_room = Some(cost_room.map_or(room, |r| r.min(room)));
            }
        }
        let (Some(slice_tokens), Some(slice_cost)) = (
            slice(short_tokens, token_room),
            slice(short_cost, cost_room),
        ) else {
            return Err(BudgetError::Exceeded(
                "the cluster's budget cannot cover this call".into(),
            ));
        };

        tx.execute(
            "UPDATE budget_windows SET leased_tokens = leased_tokens + $4, leased_cost_micros = leased_cost_micros + $5 \
             WHERE agent = $1 AND ((span = 'day' AND start_at = $2) OR (span = 'month' AND start_at = $3))",
            &[
                &agent,
                &key.day_start,
                &month_start,
                &to_i64(slice_tokens),
                &to_i64(slice_cost),
            ],
        )
        .await
        .map_err(pg)?;
        let row = tx
            .query_one(
                "INSERT INTO budget_leases (daemon, agent, day_start, month_start, tokens, cost_micros) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (daemon, agent, day_start) DO UPDATE SET tokens = budget_leases.tokens + EXCLUDED.tokens, \
                 cost_micros = budget_leases.cost_micros + EXCLUDED.cost_micros, renewed_at = now() \
                 RETURNING tokens, cost_micros",
                &[
                    &self.inner.daemon,
                    &agent,
                    &key.day_start,
                    &month_start,
                    &to_i64(slice_tokens),
                    &to_i64(slice_cost),
                ],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        let (row_tokens, row_cost) = (to_u64(row.get(0)), to_u64(row.get(1)));

        let mut leases = self.inner.lock();
        let now = Instant::now();
        let lease = leases.entry(key.clone()).or_insert_with(|| Lease {
            month_start,
            generation: self
                .inner
                .generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            tokens: 0,
            cost_micros: 0,
            free_tokens: 0,
            free_cost_micros: 0,
            used_tokens: 0,
            used_cost_micros: 0,
            in_flight: 0,
            last_call: now,
            usable_until: now,
        });
        if row_tokens != lease.tokens.saturating_add(slice_tokens)
            || row_cost != lease.cost_micros.saturating_add(slice_cost)
        {
            // The row was reclaimed while this daemon could not renew: what
            // it held then counts as spent, and the lease starts anew.
            *lease = Lease {
                generation: self
                    .inner
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                tokens: 0,
                cost_micros: 0,
                free_tokens: 0,
                free_cost_micros: 0,
                used_tokens: 0,
                used_cost_micros: 0,
                in_flight: 0,
                ..*lease
            };
        }
        lease.tokens = lease.tokens.saturating_add(slice_tokens);
        lease.cost_micros = lease.cost_micros.saturating_add(slice_cost);
        lease.free_tokens = lease.free_tokens.saturating_add(slice_tokens);
        lease.free_cost_micros = lease.free_cost_micros.saturating_add(slice_cost);
        lease.usable_until = now + USABLE_FOR;
        Ok(())
    }

    /// Reports usage and renews every lease now; hands back the idle ones
    /// (all of them with `return_all`, as a daemon does when it stops).
    pub async fn renew(&self, return_all: bool) -> Result<(), ClusterError> {
        renew_all(&self.inner, return_all).await
    }
}

/// Renews the leases every [`RENEW_EVERY`] while the leases exist.
async fn renew_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(error) = renew_all(&inner, false).await {
            tracing::warn!(%error, "cannot renew budget leases; spending from them stops after {USABLE_FOR:?} without a renewal");
        }
    }
}

/// One lease's report: what to settle and what to hand back.
struct Report {
    key: LeaseKey,
    month_start: i64,
    generation: u64,
    used_tokens: u64,
    used_cost: u64,
    returned_tokens: u64,
    returned_cost: u64,
}

async fn renew_all(inner: &Arc<Inner>, return_all: bool) -> Result<(), ClusterError> {
    // Never at the same time as an acquisition: each compares the lease's
    // row with the lease in memory.
    let _turn = inner.acquiring.lock().await;
    // Take what is reported out of the leases now, so calls meanwhile
    // cannot spend what is being handed back; put it back on failure.
    let reports: Vec<Report> = {
        let mut leases = inner.lock();
        let now = Instant::now();
        leases
            .iter_mut()
            .map(|(key, lease)| {
                let idle = lease.in_flight == 0
                    && (return_all || now.duration_since(lease.last_call) >= RETURN_IDLE_AFTER);
                let (returned_tokens, returned_cost) = if idle {
                    (lease.free_tokens, lease.free_cost_micros)
                } else {
                    (0, 0)
                };
                let report = Report {
                    key: key.clone(),
                    month_start: lease.month_start,
                    generation: lease.generation,
                    used_tokens: lease.used_tokens,
                    used_cost: lease.used_cost_micros,
                    returned_tokens,
                    returned_cost,
                };
                lease.used_tokens = 0;
                lease.used_cost_micros = 0;
                lease.free_tokens -= returned_tokens;
                lease.free_cost_micros -= returned_cost;
                report
            })
            .collect()
    };
    let mut failure = None;
    for report in reports {
        let outcome = report_lease(inner, &report).await;
        let mut leases = inner.lock();
        let Some(lease) = leases.get_mut(&report.key) else {
            continue;
        };
        if lease.generation != report.generation {
            continue;
        }
        match outcome {
            Ok(Some((row_tokens, row_cost))) => {
                lease.tokens = row_tokens;
                lease.cost_micros = row_cost;
                lease.usable_until = Instant::now() + USABLE_FOR;
                if row_tokens == 0
                    && row_cost == 0
                    && lease.in_flight == 0
                    && lease.free_tokens == 0
                    && lease.used_tokens == 0
                {
                    leases.remove(&report.key);
                }
            }
            Ok(None) => {
                // Reclaimed: this daemon was taken for gone. What it held
                // was counted as spent; holds in flight settle into nothing.
                leases.remove(&report.key);
            }
            Err(error) => {
                lease.used_tokens += report.used_tokens;
                lease.used_cost_micros += report.used_cost;
                lease.free_tokens += report.returned_tokens;
                lease.free_cost_micros += report.returned_cost;
                failure = Some(error);
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Reports one lease; answers what its row holds after, or `None` if it
/// was reclaimed.
async fn report_lease(
    inner: &Arc<Inner>,
    report: &Report,
) -> Result<Option<(u64, u64)>, ClusterError> {
    let agent: &str = &report.key.agent;
    let mut client = inner.db.client().await?;
    let tx = client.transaction().await?;
    // What leaves the lease: the reported usage and the returned part,
    // never more than the row holds.
    let out_tokens = to_i64(report.used_tokens.saturating_add(report.returned_tokens));
    let out_cost = to_i64(report.used_cost.saturating_add(report.returned_cost));
    let Some(row) = tx
        .query_opt(
            "SELECT tokens, cost_micros FROM budget_leases WHERE daemon = $1 AND agent = $2 AND day_start = $3 FOR UPDATE",
            &[&inner.daemon, &agent, &report.key.day_start],
        )
        .await?
    else {
        return Ok(None);
    };
    let (held_tokens, held_cost): (i64, i64) = (row.get(0), row.get(1));
    let out_tokens = out_tokens.min(held_tokens);
    let out_cost = out_cost.min(held_cost);
    tx.execute(
        "UPDATE budget_windows SET settled_tokens = settled_tokens + $4, settled_cost_micros = settled_cost_micros + $5, \
         leased_tokens = leased_tokens - $6, leased_cost_micros = leased_cost_micros - $7 \
         WHERE agent = $1 AND ((span = 'day' AND start_at = $2) OR (span = 'month' AND start_at = $3))",
        &[
            &agent,
            &report.key.day_start,
            &report.month_start,
            &to_i64(report.used_tokens),
            &to_i64(report.used_cost),
            &out_tokens,
            &out_cost,
        ],
    )
    .await?;
    let (left_tokens, left_cost) = (held_tokens - out_tokens, held_cost - out_cost);
    if left_tokens == 0 && left_cost == 0 {
        tx.execute(
            "DELETE FROM budget_leases WHERE daemon = $1 AND agent = $2 AND day_start = $3",
            &[&inner.daemon, &agent, &report.key.day_start],
        )
        .await?;
    } else {
        tx.execute(
            "UPDATE budget_leases SET tokens = $4, cost_micros = $5, renewed_at = now() WHERE daemon = $1 AND agent = $2 AND day_start = $3",
            &[&inner.daemon, &agent, &report.key.day_start, &left_tokens, &left_cost],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some((to_u64(left_tokens), to_u64(left_cost))))
}

/// Reclaims `agent`'s leases whose daemons stopped renewing them: each
/// one's remainder moves from leased to settled (counted as spent).
async fn reclaim_dead(db: &ClusterDb, agent: &str) -> Result<(), BudgetError> {
    let mut client = db.client().await.map_err(shared)?;
    let tx = client.transaction().await.map_err(pg)?;
    let grace = RECLAIM_AFTER.as_secs_f64();
    let dead = tx
        .query(
            "DELETE FROM budget_leases WHERE agent = $1 AND renewed_at < now() - make_interval(secs => $2) \
             RETURNING daemon, day_start, month_start, tokens, cost_micros",
            &[&agent, &grace],
        )
        .await
        .map_err(pg)?;
    for row in &dead {
        let (daemon, day, month, tokens, cost): (String, i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        tracing::warn!(
            %daemon,
            agent,
            tokens,
            cost_micros = cost,
            "reclaimed the budget lease of a daemon that stopped renewing it; its remainder counts as spent"
        );
        for (span, start) in [("day", day), ("month", month)] {
            tx.execute(
                "UPDATE budget_windows SET settled_tokens = settled_tokens + $4, settled_cost_micros = settled_cost_micros + $5, \
                 leased_tokens = GREATEST(leased_tokens - $4, 0), leased_cost_micros = GREATEST(leased_cost_micros - $5, 0) \
                 WHERE agent = $1 AND span = $2 AND start_at = $3",
                &[&agent, &span, &start, &tokens, &cost],
            )
            .await
            .map_err(pg)?;
        }
    }
    tx.commit().await.map_err(pg)?;
    Ok(())
}

fn pg(error: tokio_postgres::Error) -> BudgetError {
    BudgetError::Shared(ClusterError::Postgres(error))
}

fn shared(error: ClusterError) -> BudgetError {
    BudgetError::Shared(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_shrink_to_the_shortfall_as_the_window_fills() {
        // Plenty left: an eighth of it, so calls run from memory.
        assert_eq!(slice(1_000, Some(800_000)), Some(100_000));
        // Little left: just the shortfall.
        assert_eq!(slice(1_000, Some(4_000)), Some(1_000));
        // Not enough: refused.
        assert_eq!(slice(1_000, Some(999)), None);
        // No limit on this dimension: the shortfall, for the record.
        assert_eq!(slice(1_000, None), Some(1_000));
        assert_eq!(room(Some(10), 4, 3), Some(3));
        assert_eq!(room(Some(10), 8, 3), Some(0));
        assert_eq!(room(None, 8, 3), None);
    }
}
