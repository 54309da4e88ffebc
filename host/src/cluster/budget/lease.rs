//! A lease as it stands in memory, and the arithmetic that keeps it
//! within what its row in the database backs.

use std::sync::Arc;
use std::time::Instant;

use super::MAX_AMOUNT;

/// Tokens and micro-dollars together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Amount {
    pub(super) tokens: u64,
    pub(super) cost: u64,
}

impl Amount {
    pub(super) fn new(tokens: u64, cost: u64) -> Self {
        Self {
            tokens: tokens.min(MAX_AMOUNT),
            cost: cost.min(MAX_AMOUNT),
        }
    }

    pub(super) fn plus(self, other: Self) -> Self {
        Self::new(
            self.tokens.saturating_add(other.tokens),
            self.cost.saturating_add(other.cost),
        )
    }

    /// `self - other`, at least zero.
    pub(super) fn minus(self, other: Self) -> Self {
        Self {
            tokens: self.tokens.saturating_sub(other.tokens),
            cost: self.cost.saturating_sub(other.cost),
        }
    }

    pub(super) fn min(self, other: Self) -> Self {
        Self {
            tokens: self.tokens.min(other.tokens),
            cost: self.cost.min(other.cost),
        }
    }

    pub(super) fn covers(self, other: Self) -> bool {
        self.tokens >= other.tokens && self.cost >= other.cost
    }

    pub(super) fn is_zero(self) -> bool {
        self.tokens == 0 && self.cost == 0
    }

    pub(super) fn sql(self) -> (i64, i64) {
        (to_i64(self.tokens), to_i64(self.cost))
    }
}

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value.min(MAX_AMOUNT)).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Which lease: one per agent and UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct LeaseKey {
    pub(super) agent: Arc<str>,
    pub(super) day_start: i64,
}

/// A slice this daemon holds, as it stands in memory. Between
/// transactions `row == free + held + used - debt`.
#[derive(Debug)]
pub(super) struct Lease {
    pub(super) month_start: i64,
    /// Bumped when the lease is found reclaimed: holds of an older
    /// generation settle into nothing (the reclaim counted them as spent).
    pub(super) generation: u64,
    /// What the lease's row holds, as of the last transaction.
    pub(super) row: Amount,
    /// Not held by a call.
    pub(super) free: Amount,
    /// Held by calls in flight.
    pub(super) held: Amount,
    /// Used by settled calls, not yet reported.
    pub(super) used: Amount,
    /// What memory counts beyond the row (a call used more than it held):
    /// paid from what calls give back before any of it is free again.
    pub(super) debt: Amount,
    pub(super) in_flight: u32,
    pub(super) last_call: Instant,
    pub(super) usable_until: Instant,
}

impl Lease {
    pub(super) fn empty(month_start: i64, generation: u64, now: Instant) -> Self {
        Self {
            month_start,
            generation,
            row: Amount::default(),
            free: Amount::default(),
            held: Amount::default(),
            used: Amount::default(),
            debt: Amount::default(),
            in_flight: 0,
            last_call: now,
            usable_until: now,
        }
    }

    /// A call that held `held` ends, having used `used`: what it did not
    /// use is free again, what it used beyond its hold is owed.
    pub(super) fn end_hold(&mut self, held: Amount, used: Amount) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.held = self.held.minus(held);
        self.used = self.used.plus(used);
        self.free = self.free.plus(held.minus(used));
        self.debt = self.debt.plus(used.minus(held));
        self.pay_debt();
    }

    /// Pays debt from the free part.
    pub(super) fn pay_debt(&mut self) {
        let pay = self.debt.min(self.free);
        self.debt = self.debt.minus(pay);
        self.free = self.free.minus(pay);
    }

    /// Makes memory agree with the row: spend only what it backs, and
    /// count as free what it backs beyond what memory knew.
    pub(super) fn reconcile(&mut self, row: Amount) {
        self.row = row;
        let counted = self.free.plus(self.held).plus(self.used);
        self.debt = counted.minus(row);
        self.free = self.free.plus(row.minus(counted));
        self.pay_debt();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.in_flight == 0
            && self.row.is_zero()
            && self.free.is_zero()
            && self.used.is_zero()
            && self.held.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(row: u64, free: u64) -> Lease {
        let mut lease = Lease::empty(0, 1, Instant::now());
        lease.row = Amount::new(row, 0);
        lease.free = Amount::new(free, 0);
        lease
    }

    #[test]
    fn memory_never_spends_more_than_the_row_backs() {
        // Row 100, all free; two calls hold 50 each.
        let mut l = lease(100, 0);
        l.held = Amount::new(100, 0);
        l.in_flight = 2;
        // The first uses 80: 30 beyond its hold, and nothing is free.
        l.end_hold(Amount::new(50, 0), Amount::new(80, 0));
        assert_eq!((l.free.tokens, l.debt.tokens), (0, 30));
        // The report settles the 80 and the row keeps 20 for the other
        // call's 50: memory still owes 30.
        l.used = Amount::default();
        l.reconcile(Amount::new(20, 0));
        assert_eq!((l.free.tokens, l.debt.tokens), (0, 30));
        // The second uses 10: the 40 it did not use pays the debt first.
        l.end_hold(Amount::new(50, 0), Amount::new(10, 0));
        assert_eq!((l.free.tokens, l.debt.tokens), (10, 0));
        // Row 20 = free 10 + used 10.
        l.reconcile(Amount::new(20, 0));
        assert_eq!((l.free.tokens, l.debt.tokens, l.in_flight), (10, 0, 0));
    }

    #[test]
    fn a_row_holding_more_than_memory_knew_becomes_free() {
        let mut l = lease(0, 0);
        l.reconcile(Amount::new(300, 0));
        assert_eq!(l.free.tokens, 300);
    }
}
