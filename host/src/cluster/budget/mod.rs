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
//! - **The row is the truth.** After every transaction the lease in memory
//!   is reconciled with its row: memory may spend only what the row backs.
//!   A call that used more than its worst case leaves a debt, paid from
//!   what later calls give back; a report whose commit is in doubt is
//!   counted again (a budget may be under-spent, never over-spent).
//! - **A daemon that dies** stops renewing. After [`RECLAIM_AFTER`] any
//!   daemon reclaims its leases, counting their unreported remainder as
//!   spent: its calls may have used it.
//! - **A daemon that cannot reach the database** stops spending from a
//!   lease [`USABLE_FOR`] after the start of its last successful renewal,
//!   well before others may reclaim it, and its calls fail as unavailable.
//!
//! Lock order, everywhere: the day window's row, the month window's row,
//! then lease rows; so transactions of different daemons never deadlock.
//! Windows are UTC days and months by each daemon's clock; the lease
//! deadlines use the database's clock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::Transaction;

mod lease;
use lease::{Amount, Lease, LeaseKey, to_u64};

use super::{ClusterDb, ClusterError};
use crate::ledger::{BudgetError, BudgetLimits, SharedBudgets, SharedHold, day_start, month_start};

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
/// Any one transaction's limit, so a database that stopped answering
/// fails calls instead of holding them.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(4);
/// Window rows older than this are deleted (usage rows keep the history).
const KEEP_WINDOWS_SECS: i64 = 90 * 86_400;
/// The largest amount one row counts, far from `BIGINT`'s end.
pub(super) const MAX_AMOUNT: u64 = (i64::MAX / 8) as u64;

struct Inner {
    db: ClusterDb,
    daemon: String,
    leases: Mutex<HashMap<LeaseKey, Lease>>,
    /// One transaction at a time per lease (an acquisition or a report),
    /// so each sees the lease in memory as its row left it; leases do not
    /// wait for each other.
    turns: Mutex<HashMap<LeaseKey, Arc<tokio::sync::Mutex<()>>>>,
    generations: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn next_generation(&self) -> u64 {
        self.generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LeaseKey, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The turn of one lease's transactions.
    fn turn(&self, key: &LeaseKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(key.clone()).or_default().clone()
    }

    /// Forgets a lease that holds nothing, and its turn.
    fn forget_if_empty(&self, key: &LeaseKey) {
        let mut leases = self.lock();
        if leases.get(key).is_some_and(Lease::is_empty) {
            leases.remove(key);
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            if turns.get(key).is_some_and(|t| Arc::strong_count(t) == 1) {
                turns.remove(key);
            }
        }
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
    amount: Amount,
    done: bool,
}

impl std::fmt::Debug for LeaseHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHold")
            .field("agent", &self.key.agent)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl LeaseHold {
    /// Replaces the hold with what the call used; the rest goes back to
    /// the lease. Usage beyond the hold is taken from the free part, or
    /// owed.
    pub fn settle(mut self, tokens: u64, cost_micros: u64) {
        self.done = true;
        self.finish(Amount::new(tokens, cost_micros));
    }

    fn finish(&self, used: Amount) {
        let mut leases = self.inner.lock();
        let Some(lease) = leases.get_mut(&self.key) else {
            return;
        };
        if lease.generation != self.generation {
            return;
        }
        lease.end_hold(self.amount, used);
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        if !self.done {
            // Nothing was used.
            self.finish(Amount::default());
        }
    }
}

/// One window's totals, as read under its row lock.
#[derive(Debug, Clone, Copy, Default)]
struct WindowTotals {
    settled: Amount,
    leased: Amount,
}

/// What is left under `limit`, if there is one.
fn room(limit: Option<u64>, settled: u64, leased: u64) -> Option<u64> {
    limit.map(|max| {
        max.min(MAX_AMOUNT)
            .saturating_sub(settled.saturating_add(leased))
    })
}

/// The slice to take for a shortfall, given the room left (none: no limit).
fn slice(shortfall: u64, room: Option<u64>) -> Option<u64> {
    match room {
        None => Some(shortfall),
        Some(room) if room < shortfall => None,
        Some(room) => Some(shortfall.max(room / SLICE_DIVISOR).min(room)),
    }
}

/// Runs a database step with [`TRANSACTION_TIMEOUT`].
async fn timed<T>(step: impl Future<Output = Result<T, ClusterError>>) -> Result<T, ClusterError> {
    tokio::time::timeout(TRANSACTION_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(ClusterError::Unavailable(format!(
                "no answer within {TRANSACTION_TIMEOUT:?}"
            )))
        })
}

/// Locks an agent's day and month window rows, in that order, and reads
/// them (each zero if absent).
async fn lock_windows(
    tx: &Transaction<'_>,
    agent: &str,
    day_start: i64,
    month_start: i64,
) -> Result<(WindowTotals, WindowTotals), ClusterError> {
    let rows = tx
        .query(
            "SELECT span, settled_tokens, settled_cost_micros, leased_tokens, leased_cost_micros FROM budget_windows \
             WHERE agent = $1 AND ((span = 'day' AND start_at = $2) OR (span = 'month' AND start_at = $3)) \
             ORDER BY span FOR UPDATE",
            &[&agent, &day_start, &month_start],
        )
        .await?;
    let mut day = WindowTotals::default();
    let mut month = WindowTotals::default();
    for row in &rows {
        let totals = WindowTotals {
            settled: Amount::new(to_u64(row.get(1)), to_u64(row.get(2))),
            leased: Amount::new(to_u64(row.get(3)), to_u64(row.get(4))),
        };
        if row.get::<_, &str>(0) == "day" {
            day = totals;
        } else {
            month = totals;
        }
    }
    Ok((day, month))
}

/// Adds `settled` to the settled totals and takes `released` off the
/// leased totals of a day and its month (their rows already locked).
async fn move_totals(
    tx: &Transaction<'_>,
    agent: &str,
    day_start: i64,
    month_start: i64,
    settled: Amount,
    released: Amount,
) -> Result<(), ClusterError> {
    let (settled_tokens, settled_cost) = settled.sql();
    let (released_tokens, released_cost) = released.sql();
    tx.execute(
        "UPDATE budget_windows SET settled_tokens = settled_tokens + $4, settled_cost_micros = settled_cost_micros + $5, \
         leased_tokens = GREATEST(leased_tokens - $6, 0), leased_cost_micros = GREATEST(leased_cost_micros - $7, 0) \
         WHERE agent = $1 AND ((span = 'day' AND start_at = $2) OR (span = 'month' AND start_at = $3))",
        &[
            &agent,
            &day_start,
            &month_start,
            &settled_tokens,
            &settled_cost,
            &released_tokens,
            &released_cost,
        ],
    )
    .await?;
    Ok(())
}

impl BudgetLeases {
    /// Leases for this daemon on `db`, and the task that renews them every
    /// [`RENEW_EVERY`]; the task ends when the last clone is dropped.
    /// `daemon` names the daemon in logs and rows; a random suffix makes
    /// it unique to this process, since a restarted daemon must not take
    /// its previous life's leases for its own.
    pub fn start(db: ClusterDb, daemon: impl Into<String>) -> Self {
        let mut suffix = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix);
        let inner = Arc::new(Inner {
            db,
            daemon: format!("{}-{}", daemon.into(), hex::encode(suffix)),
            leases: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
            generations: std::sync::atomic::AtomicU64::new(1),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(renew_loop(weak));
        Self { inner }
    }

    /// This daemon's id, as its lease rows name it.
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
        let need = Amount::new(tokens, cost_micros);
        if let Some(hold) = self.take_local(&key, need) {
            return Ok(hold);
        }
        // The slow path, one transaction at a time for this lease: whoever
        // waited may find that the acquisition before it left enough.
        let turn = self.inner.turn(&key);
        let _turn = turn.lock().await;
        if let Some(hold) = self.take_local(&key, need) {
            return Ok(hold);
        }
        let result = self
            .acquire(&key, month_start(now_unix), limits, need)
            .await;
        drop(_turn);
        if result.is_err() {
            self.inner.forget_if_empty(&key);
        }
        result
    }

    /// The fast path: a hold on the lease in memory, if it covers the call.
    fn take_local(&self, key: &LeaseKey, need: Amount) -> Option<LeaseHold> {
        let mut leases = self.inner.lock();
        let lease = leases.get_mut(key)?;
        take_from(&self.inner, key, lease, need)
    }

    /// Takes a slice from the cluster big enough for the call and holds
    /// the call on it, or refuses.
    async fn acquire(
        &self,
        key: &LeaseKey,
        month_start: i64,
        limits: &BudgetLimits,
        need: Amount,
    ) -> Result<LeaseHold, BudgetError> {
        let agent: &str = &key.agent;
        // Leases of daemons that are gone go back first.
        timed(reclaim_dead(&self.inner.db, Some(agent)))
            .await
            .map_err(shared)?;

        let started = Instant::now();
        let (free, usable, known_row) = {
            let leases = self.inner.lock();
            leases
                .get(key)
                .map_or((Amount::default(), false, None), |l| {
                    (l.free, started < l.usable_until, Some(l.row))
                })
        };
        // A lease past its deadline is not spent from until its row is
        // read again: ask for the whole call.
        let short = if usable { need.minus(free) } else { need };
        let daemon = self.inner.daemon.clone();
        let outcome = timed(async {
            let mut client = self.inner.db.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO budget_windows (agent, span, start_at) VALUES ($1, 'day', $2), ($1, 'month', $3) ON CONFLICT DO NOTHING",
                &[&agent, &key.day_start, &month_start],
            )
            .await?;
            let (day, month) = lock_windows(&tx, agent, key.day_start, month_start).await?;
            let decision = decide(limits, day, month, short, need, free);
            let grant = match decision {
                Ok(grant) => grant,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let (grant_tokens, grant_cost) = grant.sql();
            tx.execute(
                "UPDATE budget_windows SET leased_tokens = leased_tokens + $4, leased_cost_micros = leased_cost_micros + $5 \
                 WHERE agent = $1 AND ((span = 'day' AND start_at = $2) OR (span = 'month' AND start_at = $3))",
                &[&agent, &key.day_start, &month_start, &grant_tokens, &grant_cost],
            )
            .await?;
            let previous = tx
                .query_opt(
                    "SELECT tokens FROM budget_leases WHERE daemon = $1 AND agent = $2 AND day_start = $3 FOR UPDATE",
                    &[&daemon, &agent, &key.day_start],
                )
                .await?
                .is_some();
            let row = tx
                .query_one(
                    "INSERT INTO budget_leases (daemon, agent, day_start, month_start, tokens, cost_micros) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (daemon, agent, day_start) DO UPDATE SET tokens = budget_leases.tokens + EXCLUDED.tokens, \
                     cost_micros = budget_leases.cost_micros + EXCLUDED.cost_micros, renewed_at = now() \
                     RETURNING tokens, cost_micros",
                    &[&daemon, &agent, &key.day_start, &month_start, &grant_tokens, &grant_cost],
                )
                .await?;
            tx.commit().await?;
            Ok(Ok((
                Amount::new(to_u64(row.get(0)), to_u64(row.get(1))),
                previous,
            )))
        })
        .await
        .map_err(shared)?;
        let (row, previous) = outcome?;

        let mut leases = self.inner.lock();
        let lease = leases
            .entry(key.clone())
            .or_insert_with(|| Lease::empty(month_start, self.inner.next_generation(), started));
        if known_row.is_some_and(|known| !known.is_zero()) && !previous {
            // The row was reclaimed while this daemon could not renew: what
            // it held then was counted as spent. Start anew.
            *lease = Lease::empty(month_start, self.inner.next_generation(), started);
        }
        lease.reconcile(row);
        lease.usable_until = started + USABLE_FOR;
        take_from(&self.inner, key, lease, need).ok_or_else(|| {
            BudgetError::Exceeded(
                "the cluster's budget lease does not cover this call; try again".into(),
            )
        })
    }

    /// Reports usage and renews every lease now; hands back the idle ones
    /// (all of them with `return_all`, as a daemon does when it stops).
    pub async fn renew(&self, return_all: bool) -> Result<(), ClusterError> {
        renew_all(&self.inner, return_all).await
    }
}

fn shared(error: ClusterError) -> BudgetError {
    BudgetError::Shared(error.to_string())
}

#[async_trait::async_trait]
impl SharedBudgets for BudgetLeases {
    async fn take(
        &self,
        agent: &str,
        limits: &BudgetLimits,
        tokens: u64,
        cost_micros: u64,
        now_unix: i64,
    ) -> Result<Box<dyn SharedHold>, BudgetError> {
        let hold = BudgetLeases::take(self, agent, limits, tokens, cost_micros, now_unix).await?;
        Ok(Box::new(hold))
    }
}

impl SharedHold for LeaseHold {
    fn settle(self: Box<Self>, tokens: u64, cost_micros: u64) {
        LeaseHold::settle(*self, tokens, cost_micros);
    }
}

/// A hold on `lease`, if it is usable and covers `need`.
fn take_from(
    inner: &Arc<Inner>,
    key: &LeaseKey,
    lease: &mut Lease,
    need: Amount,
) -> Option<LeaseHold> {
    let now = Instant::now();
    if now >= lease.usable_until || !lease.free.covers(need) {
        return None;
    }
    lease.free = lease.free.minus(need);
    lease.held = lease.held.plus(need);
    lease.in_flight += 1;
    lease.last_call = now;
    Some(LeaseHold {
        inner: inner.clone(),
        key: key.clone(),
        generation: lease.generation,
        amount: need,
        done: false,
    })
}

/// What to add to the lease: enough for the shortfall, a slice of what is
/// left when there is plenty; or the refusal.
fn decide(
    limits: &BudgetLimits,
    day: WindowTotals,
    month: WindowTotals,
    short: Amount,
    need: Amount,
    free: Amount,
) -> Result<Amount, BudgetError> {
    let mut token_room: Option<u64> = None;
    let mut cost_room: Option<u64> = None;
    for (span, totals, max_tokens, max_cost) in [
        ("day", day, limits.tokens_per_day, limits.usd_micros_per_day),
        (
            "month",
            month,
            limits.tokens_per_month,
            limits.usd_micros_per_month,
        ),
    ] {
        if let Some(room) = room(max_tokens, totals.settled.tokens, totals.leased.tokens) {
            if room < short.tokens {
                let max = max_tokens.unwrap_or_default();
                let used = totals.settled.tokens + totals.leased.tokens;
                return Err(BudgetError::Exceeded(format!(
                    "this call could use {} tokens; {} of the {max} tokens per {span} are used or held across the cluster",
                    need.tokens,
                    used.saturating_sub(free.tokens).min(max)
                )));
            }
            token_room = Some(token_room.map_or(room, |r| r.min(room)));
        }
        if let Some(room) = room(max_cost, totals.settled.cost, totals.leased.cost) {
            if room < short.cost {
                let max = max_cost.unwrap_or_default();
                let used = totals.settled.cost + totals.leased.cost;
                return Err(BudgetError::Exceeded(format!(
                    "this call could cost ${:.6}; ${:.6} of the ${:.6} per {span} is spent or held across the cluster",
                    need.cost as f64 / 1e6,
                    used.saturating_sub(free.cost).min(max) as f64 / 1e6,
                    max as f64 / 1e6
                )));
            }
            cost_room = Some(cost_room.map_or(room, |r| r.min(room)));
        }
    }
    match (
        slice(short.tokens, token_room),
        slice(short.cost, cost_room),
    ) {
        (Some(tokens), Some(cost)) => Ok(Amount::new(tokens, cost)),
        _ => Err(BudgetError::Exceeded(
            "the cluster's budget cannot cover this call".into(),
        )),
    }
}

/// Renews the leases every [`RENEW_EVERY`] while the leases exist, and
/// now and then reclaims dead daemons' leases and prunes old windows.
async fn renew_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0u64;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(error) = renew_all(&inner, false).await {
            tracing::warn!(%error, "cannot renew budget leases; spending from them stops {USABLE_FOR:?} after the last renewal");
        }
        rounds += 1;
        if rounds.is_multiple_of(10)
            && let Err(error) = timed(reclaim_dead(&inner.db, None)).await
        {
            tracing::warn!(%error, "cannot reclaim dead daemons' budget leases");
        }
        if rounds % 3600 == 1
            && let Err(error) = timed(prune_windows(&inner.db)).await
        {
            tracing::warn!(%error, "cannot prune old budget windows");
        }
    }
}

/// One lease's report: what to settle and what to hand back.
struct Report {
    key: LeaseKey,
    month_start: i64,
    generation: u64,
    used: Amount,
    returned: Amount,
    /// Delete the row if it ends empty (no call holds any of it).
    may_delete: bool,
}

async fn renew_all(inner: &Arc<Inner>, return_all: bool) -> Result<(), ClusterError> {
    let keys: Vec<LeaseKey> = inner.lock().keys().cloned().collect();
    let mut failure = None;
    for key in keys {
        let turn = inner.turn(&key);
        let _turn = turn.lock().await;
        // Take what is reported out of the lease now, so calls meanwhile
        // cannot spend what is being handed back.
        let started = Instant::now();
        let report = {
            let mut leases = inner.lock();
            let Some(lease) = leases.get_mut(&key) else {
                continue;
            };
            let idle = lease.in_flight == 0
                && (return_all || started.duration_since(lease.last_call) >= RETURN_IDLE_AFTER);
            let returned = if idle { lease.free } else { Amount::default() };
            let report = Report {
                key: key.clone(),
                month_start: lease.month_start,
                generation: lease.generation,
                used: lease.used,
                returned,
                may_delete: idle,
            };
            lease.used = Amount::default();
            lease.free = lease.free.minus(returned);
            report
        };
        let outcome = timed(report_lease(inner, &report)).await;
        {
            let mut leases = inner.lock();
            if let Some(lease) = leases.get_mut(&key)
                && lease.generation == report.generation
            {
                match outcome {
                    Ok(Some(row)) => {
                        lease.reconcile(row);
                        lease.usable_until = started + USABLE_FOR;
                    }
                    Ok(None) => {
                        // Reclaimed: this daemon was taken for gone. What it
                        // held was counted as spent; holds in flight settle
                        // into nothing.
                        leases.remove(&key);
                    }
                    Err(error) => {
                        // The commit may or may not have happened. Usage is
                        // reported again (at worst counted twice: an
                        // under-spend); the returned part is not taken
                        // back; nothing is spent until the row is read.
                        lease.used = lease.used.plus(report.used);
                        lease.usable_until = Instant::now();
                        failure = Some(error);
                    }
                }
            }
        }
        inner.forget_if_empty(&key);
        if failure.is_some() {
            // The database is failing: the other leases wait for the next
            // round rather than each timing out now.
            break;
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Reports one lease; answers what its row holds after, or `None` if it
/// was reclaimed.
async fn report_lease(inner: &Arc<Inner>, report: &Report) -> Result<Option<Amount>, ClusterError> {
    let agent: &str = &report.key.agent;
    let day_start = report.key.day_start;
    let mut client = inner.db.client().await?;
    let tx = client.transaction().await?;
    lock_windows(&tx, agent, day_start, report.month_start).await?;
    let Some(row) = tx
        .query_opt(
            "SELECT tokens, cost_micros FROM budget_leases WHERE daemon = $1 AND agent = $2 AND day_start = $3 FOR UPDATE",
            &[&inner.daemon, &agent, &day_start],
        )
        .await?
    else {
        return Ok(None);
    };
    let held = Amount::new(to_u64(row.get(0)), to_u64(row.get(1)));
    // What leaves the lease: the usage and the returned part, never more
    // than the row holds; all the usage is settled.
    let out = report.used.plus(report.returned).min(held);
    move_totals(&tx, agent, day_start, report.month_start, report.used, out).await?;
    let left = held.minus(out);
    if left.is_zero() && report.may_delete {
        tx.execute(
            "DELETE FROM budget_leases WHERE daemon = $1 AND agent = $2 AND day_start = $3",
            &[&inner.daemon, &agent, &day_start],
        )
        .await?;
    } else {
        let (tokens, cost) = left.sql();
        tx.execute(
            "UPDATE budget_leases SET tokens = $4, cost_micros = $5, renewed_at = now() WHERE daemon = $1 AND agent = $2 AND day_start = $3",
            &[&inner.daemon, &agent, &day_start, &tokens, &cost],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(left))
}

/// Reclaims leases (of `agent`, or of any agent, at most 100 a round)
/// whose daemons stopped renewing them: each one's remainder moves from
/// leased to settled, counted as spent. One transaction per lease, in the
/// lock order of every other.
async fn reclaim_dead(db: &ClusterDb, agent: Option<&str>) -> Result<(), ClusterError> {
    let grace = RECLAIM_AFTER.as_secs_f64();
    let client = db.client().await?;
    let dead = client
        .query(
            "SELECT daemon, agent, day_start, month_start FROM budget_leases \
             WHERE ($1::TEXT IS NULL OR agent = $1) AND renewed_at < now() - make_interval(secs => $2) LIMIT 100",
            &[&agent, &grace],
        )
        .await?;
    drop(client);
    for lease in &dead {
        let (daemon, agent, day, month): (String, String, i64, i64) =
            (lease.get(0), lease.get(1), lease.get(2), lease.get(3));
        let mut client = db.client().await?;
        let tx = client.transaction().await?;
        lock_windows(&tx, &agent, day, month).await?;
        // Still dead now that its windows are locked?
        let Some(row) = tx
            .query_opt(
                "DELETE FROM budget_leases WHERE daemon = $1 AND agent = $2 AND day_start = $3 \
                 AND renewed_at < now() - make_interval(secs => $4) RETURNING tokens, cost_micros",
                &[&daemon, &agent, &day, &grace],
            )
            .await?
        else {
            continue;
        };
        let remainder = Amount::new(to_u64(row.get(0)), to_u64(row.get(1)));
        move_totals(&tx, &agent, day, month, remainder, remainder).await?;
        tx.commit().await?;
        tracing::warn!(
            %daemon,
            %agent,
            tokens = remainder.tokens,
            cost_micros = remainder.cost,
            "reclaimed the budget lease of a daemon that stopped renewing it; its remainder counts as spent"
        );
    }
    Ok(())
}

/// Deletes window rows older than [`KEEP_WINDOWS_SECS`] that nothing holds.
async fn prune_windows(db: &ClusterDb) -> Result<(), ClusterError> {
    let before = crate::db::now_unix() - KEEP_WINDOWS_SECS;
    db.client()
        .await?
        .execute(
            "DELETE FROM budget_windows WHERE start_at < $1 AND leased_tokens = 0 AND leased_cost_micros = 0",
            &[&before],
        )
        .await?;
    Ok(())
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
        // A limit beyond what a row can count is capped, not overflowed.
        assert_eq!(room(Some(u64::MAX), 0, 0), Some(MAX_AMOUNT));
    }
}
