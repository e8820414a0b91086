//! Per-worker in-flight ledger: a worker that dies mid-request leaks nothing
//!
//! In-flight counts are shared by all workers, so a worker killed while
//! holding requests would leave them counted forever: `least_conn` and
//! `p2c` would shun those peers and a `max_conns` peer could stay full. Each
//! worker therefore claims a ledger slot when it starts and counts, in its
//! own row, the requests it has in flight per peer. When a later worker
//! starts (nginx respawns a dead one) it reconciles the slots whose owner is
//! gone: their counts are subtracted from the shared ones and the slot is
//! freed. A worker that exits cleanly releases its slot the same way.
//!
//! Owners are process ids; the caller says whether one is still alive
//! (nginx: `kill(pid, 0)`), so the core makes no system call. A reused pid
//! looks alive and only delays reconciliation. With more live workers than
//! [`LEDGER_SLOTS`] the extras run without a slot: their requests are
//! counted in flight as usual, just not reconciled if they die.
//!
//! A zone with a request queue (`ha_queue`) keeps each slot's part of the
//! queue's size and its wake fields in the queue's own slot lines,
//! indexed by the same ledger slot; reconciling a slot also returns its
//! waiters ([`crate::layout::queue::Queue::reconcile`]).
//!
//! The same row counts, per generation descriptor, the generations the
//! worker's requests have pinned (see [`crate::write::generation`]); reconciling
//! zeroes them, so a dead worker cannot keep an old generation alive.
//!
//! The in-flight counts are kept exactly across a kill at any instruction
//! by the protocol of [`super::flight`]: every shared in-flight word
//! carries a parity bit per slot, and each row entry records what its
//! worker was about to do.
//!
//! Owner word transitions: `0` (free) → `pid` (claimed, by CAS) →
//! `RECLAIMING | reconciler` (by whoever reconciles it, by CAS) → `0`. A
//! reconciler killed half-way leaves `RECLAIMING | its pid`; the next
//! claimer that finds that pid gone takes the slot over (CAS) and runs the
//! reconciliation again from the start: every step of it reads what the
//! earlier run did (`flight::drain`) or is a plain store of zero,
//! so running it twice returns nothing twice. Rows are written only by
//! their owner while it lives (plain stores, no locked instruction), and
//! by the one reconciler after.

use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

use crate::crash::crash_point;
use crate::layout::{flight, Zone};

pub use crate::layout::LEDGER_SLOTS;

/// Owner word bit while a slot is being reconciled; the low bits name the
/// reconciler.
pub const RECLAIMING: u64 = 1 << 63;

impl Zone<'_> {
    /// Reconciles the slots of owners (or reconcilers) `alive` says are
    /// gone, then claims a free slot for `owner` (non-zero, below
    /// [`RECLAIMING`]). `None` when every slot is taken.
    pub fn claim_slot(&self, owner: u64, alive: impl Fn(u64) -> bool) -> Option<u32> {
        if owner == 0 || owner & RECLAIMING != 0 {
            return None;
        }
        self.reconcile_dead(owner, true, &alive);
        let s = (0..LEDGER_SLOTS).find_map(|s| {
            let (word, _) = self.ledger_slot(s)?;
            word.compare_exchange(0, owner, AcqRel, Relaxed)
                .is_ok()
                .then_some(s as u32)
        })?;
        self.mark_rows_used(s);
        Some(s)
    }

    /// Reconciles the slots whose owners (or reconcilers) `alive` says
    /// are gone, as [`Zone::claim_slot`] does first, without claiming one:
    /// for a worker that waits on a dead worker's queue head and that
    /// nginx will not replace (an old cycle's). `me` names the caller
    /// while it reconciles (its own pid). The number of slots reconciled.
    pub fn reap(&self, me: u64, alive: impl Fn(u64) -> bool) -> u32 {
        if me == 0 || me & RECLAIMING != 0 {
            return 0;
        }
        self.reconcile_dead(me, false, &alive)
    }

    /// Reconciles every slot held by an owner `alive` says is gone, and
    /// with `own` those held by `me` (a previous life of the same pid).
    fn reconcile_dead(&self, me: u64, own: bool, alive: &impl Fn(u64) -> bool) -> u32 {
        let mut n = 0;
        for s in 0..LEDGER_SLOTS {
            let Some((word, _)) = self.ledger_slot(s) else {
                break;
            };
            let o = word.load(Acquire);
            let who = o & !RECLAIMING;
            if o != 0 && (if who == me { own } else { !alive(who) }) && self.reconcile(s, o, me) {
                n += 1;
            }
        }
        n
    }

    /// Gives back `owner`'s slot, returning whatever it still counts.
    pub fn release_slot(&self, slot: u32, owner: u64) {
        if owner != 0 && owner & RECLAIMING == 0 {
            let _ = self.reconcile(slot as usize, owner, owner);
        }
    }

    /// Returns slot `s`'s counts to the shared ones and frees it, if its
    /// owner word is still `seen` (one reconciler wins; `me` names it while
    /// it works).
    fn reconcile(&self, s: usize, seen: u64, me: u64) -> bool {
        let Some((word, row)) = self.ledger_slot(s) else {
            return false;
        };
        if word
            .compare_exchange(seen, RECLAIMING | me, AcqRel, Relaxed)
            .is_err()
        {
            return false;
        }
        crash_point("reconcile.claimed");
        let slot = s as u32;
        let states = self.states();
        let peers = self.peers();
        for (i, state) in states.iter().enumerate() {
            flight::drain(state.in_flight.word(), &row[i], slot);
        }
        // The dead worker may have stopped between a change of a peer's
        // count or flags and the refresh of its path, or half-way up it:
        // a node left stale stays so until a change passes through it.
        // Every node recomputed (concurrent refreshes are fine, see
        // `lc_tree`), so the tree is exact again, whatever the dead did.
        self.lc_rebuild();
        crash_point("reconcile.tree");
        // Its waiters are gone too (R1-R3 of the queue: its cells, its
        // part of `size`, its wake fields; each step re-runnable). The
        // head may have been one of them: the caller kicks it
        // (`Queue::kick`) once its claim is done, and delivers the wake.
        if let Some(q) = self.queue() {
            q.reconcile(slot);
        }
        let total = self.total_entry();
        flight::drain(&self.total().value, &row[total], slot);
        // The dead worker's requests are gone: so are their pins.
        for r in &row[peers..total] {
            r.store(0, SeqCst);
        }
        crash_point("reconcile.pins");
        // Nor does it write check verdicts any more.
        let bit = 1u64 << s;
        for r in self.health_rows() {
            if r.writers.load(Relaxed) & bit != 0 {
                r.writers.fetch_and(!bit, SeqCst);
            }
        }
        crash_point("reconcile.writers");
        word.store(0, Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::request::Outcome;
    use crate::spec::{PeerSpec, Policy};
    use crate::testing::{OwnedAttempt, OwnedTable};
    use crate::UpstreamSpec;
    use core::sync::atomic::Ordering::Relaxed;

    fn table(policy: Policy) -> OwnedTable {
        let peers = [
            PeerSpec {
                max_conns: 1,
                ..PeerSpec::new(b"a")
            },
            PeerSpec::new(b"b"),
        ];
        OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    #[test]
    fn dead_worker_counts_are_returned() {
        let t = table(Policy::LeastConn);
        let tb = t.table();
        let dead = tb.zone().claim_slot(100, |_| true).unwrap();
        let live = tb.zone().claim_slot(200, |_| true).unwrap();
        assert_ne!(dead, live);
        // The doomed worker holds two requests, the live one one.
        let mut held = Vec::new();
        for slot in [dead, dead, live] {
            let mut a = OwnedAttempt::with_slot(tb, 0, Some(slot));
            tb.get(&mut a.attempt(), 0).unwrap();
            held.push(a);
        }
        assert_eq!(tb.states()[0].in_flight.load(Relaxed), 1);
        assert_eq!(tb.states()[1].in_flight.load(Relaxed), 2);
        // Worker 100 dies; its replacement reconciles.
        let new = tb.zone().claim_slot(300, |pid| pid != 100).unwrap();
        assert_eq!(new, dead, "the freed slot is reused");
        let total: u32 = tb.states().iter().map(|s| s.in_flight.load(Relaxed)).sum();
        assert_eq!(total, 1, "only the live worker's request remains");
        // The live worker's request ends normally.
        let mut a = held.pop().unwrap();
        tb.free(&mut a.attempt(), Outcome::Ok, 0).unwrap();
        let total: u32 = tb.states().iter().map(|s| s.in_flight.load(Relaxed)).sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn reap_returns_dead_workers_counts_and_spares_the_living() {
        let t = table(Policy::RoundRobin);
        let tb = t.table();
        let me = tb.zone().claim_slot(100, |_| true).unwrap();
        let dead = tb.zone().claim_slot(200, |_| true).unwrap();
        let mut held = Vec::new();
        for slot in [me, dead] {
            let mut a = OwnedAttempt::with_slot(tb, 0, Some(slot));
            tb.get(&mut a.attempt(), 0).unwrap();
            held.push(a);
        }
        let total = || -> u32 { tb.states().iter().map(|s| s.in_flight.load(Relaxed)).sum() };
        assert_eq!(total(), 2);
        // Nobody dead: nothing reaped, the caller's own slot untouched
        // even though its pid is the caller's.
        assert_eq!(tb.zone().reap(100, |_| true), 0);
        assert_eq!(total(), 2);
        // 200 dies: reaped once, and its slot is free again.
        assert_eq!(tb.zone().reap(100, |pid| pid != 200), 1);
        assert_eq!(total(), 1, "only the caller's request remains");
        assert_eq!(tb.zone().reap(100, |pid| pid != 200), 0);
        assert_eq!(tb.ledger_slot(dead as usize).unwrap().0.load(Relaxed), 0);
        assert_eq!(tb.ledger_slot(me as usize).unwrap().0.load(Relaxed), 100);
        assert_eq!(tb.zone().reap(0, |_| false), 0, "0 names nobody");
    }

    #[test]
    fn release_returns_leftovers_and_frees_the_slot() {
        let t = table(Policy::RoundRobin);
        let tb = t.table();
        let s = tb.zone().claim_slot(7, |_| true).unwrap();
        let mut a = OwnedAttempt::with_slot(tb, 0, Some(s));
        tb.get(&mut a.attempt(), 0).unwrap();
        tb.zone().release_slot(s, 7);
        assert!(tb.states().iter().all(|p| p.in_flight.load(Relaxed) == 0));
        assert_eq!(tb.zone().claim_slot(8, |_| true), Some(s));
        // A stale release by the old owner does nothing.
        tb.zone().release_slot(s, 7);
        assert_eq!(tb.ledger_slot(s as usize).unwrap().0.load(Relaxed), 8);
    }

    #[test]
    fn slots_run_out_gracefully() {
        let t = table(Policy::RoundRobin);
        let tb = t.table();
        for pid in 1..=super::LEDGER_SLOTS as u64 {
            assert!(tb.zone().claim_slot(pid, |_| true).is_some());
        }
        assert_eq!(tb.zone().claim_slot(999, |_| true), None);
        // Without a slot, requests still work.
        let mut a = OwnedAttempt::new(tb, 0);
        tb.get(&mut a.attempt(), 0).unwrap();
        tb.free(&mut a.attempt(), Outcome::Ok, 0).unwrap();
        assert_eq!(tb.zone().claim_slot(0, |_| true), None);
    }
}
