//! Crash points: named steps of the shared-memory protocols where a test
//! build kills the process
//!
//! Every step of a protocol that several processes share (see
//! `docs/design.md`, "Crash consistency") calls `crash_point` with the
//! step's name. In a normal build that is nothing at all. With the
//! `crash-points` feature, a test arms one point and an occurrence in a
//! forked child (`arm`); when the child reaches it, the armed hook runs
//! (a test's hook sends the process SIGKILL), and the parent then checks
//! the protocol's invariant after reconciliation. `counting` instead
//! counts the hits of every point, so a driver knows how many occurrences
//! a scenario has and that every point was reached.
//!
//! Process-local state only (atomics, no allocation, no lock): a forked
//! child of a multi-threaded test binary may use it.

/// Every crash point, in protocol order.
pub const POINTS: &[&str] = &[
    // A worker counts a request (flight.rs).
    "flight.acquire.intent",
    "flight.acquire.counted",
    "flight.acquire.ledgered",
    // A worker uncounts a request (flight.rs).
    "flight.release.intent",
    "flight.release.counted",
    "flight.release.ledgered",
    // A worker counts a try in its statistics rows (layout/stats.rs):
    // counted, in the latency histograms, its row's window moved on.
    "stats.requests",
    "stats.histogram",
    "stats.window",
    // A worker refreshes a least_conn tree path (layout/tree.rs).
    "lc.stored",
    // A worker reconciles a dead one's ledger slot (ledger.rs).
    "reconcile.claimed",
    "reconcile.drain.intent",
    "reconcile.drain.returned",
    "reconcile.drain.cleared",
    "reconcile.tree",
    "reconcile.pins",
    "reconcile.writers",
    // A request pins and unpins a generation (generation.rs).
    "pin.counted",
    "pin.checked",
    "unpin.counted",
    // A builder publishes a generation (generation.rs), holding the lease.
    "publish.built",
    "publish.described",
    "publish.published",
    // A builder applies a new server list (membership.rs), or adds or
    // removes a server through the API (added.rs), then publishes.
    "apply.freed",
    "apply.filled",
    "apply.kept",
    "apply.retiring",
    "apply.retired",
    // An API change of a server (admin.rs): looked up, then under the
    // lease when it changes a weight or the zone reuses slots.
    "admin.found",
    "admin.checked",
    "admin.weighted",
    // Outlier ejection under the ejection lease (health/outlier.rs).
    "eject.taken_over",
    "eject.counted",
    "eject.flagged",
    "eject.cleared",
    // A worker takes a check (health/check.rs): its due time moved.
    "claim.taken",
    // A check's verdict (health/check.rs).
    "check.compared",
    "check.counted",
    "check.unhealthy_first",
    "check.flagged",
    // A worker learns a session (learn.rs): an append number taken, the
    // overwritten record's way cleared, half the record written, all of
    // it, the way installed or moved; or a refresh in place.
    "learn.claimed",
    "learn.cleared",
    "learn.written",
    "learn.published",
    "learn.indexed",
    "learn.refreshed",
    // A request enters the queue (layout/queue.rs): counted in `size`,
    // its cell claimed, `tail` moved past it.
    "queue.enter.counted",
    "queue.enter.claimed",
    "queue.enter.published",
    // The head picked a server (counted in flight), not yet out.
    "queue.try.picked",
    // A waiter leaves: its cell gone, `size` released, `head` helped on.
    "queue.leave.gone",
    "queue.leave.released",
    "queue.head.advanced",
    // A dead worker's waiters reconciled (layout/queue.rs, called by the
    // ledger's reconciliation): each cell gone, its part of `size` drained.
    "reconcile.queue.cells",
    "reconcile.queue.size",
];

/// Marks step `name` of a shared-memory protocol (see the module note).
#[inline(always)]
pub(crate) fn crash_point(name: &'static str) {
    #[cfg(feature = "crash-points")]
    armed::hit(name);
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}

#[cfg(feature = "crash-points")]
pub use armed::{arm, counting, disarm, hits};

#[cfg(feature = "crash-points")]
mod armed {
    use core::sync::atomic::Ordering::Relaxed;
    use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize};

    use crate::crash::POINTS;

    /// Index in [`POINTS`] of the armed point, `usize::MAX` for none.
    static ARMED: AtomicUsize = AtomicUsize::new(usize::MAX);
    /// Hits of the armed point still to pass before the hook runs.
    static LEFT: AtomicU32 = AtomicU32::new(0);
    /// The hook, a `fn()`.
    static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
    /// Whether every point's hits are counted.
    static COUNTING: AtomicU32 = AtomicU32::new(0);
    /// Hits per point while counting.
    static HITS: [AtomicU32; 64] = [const { AtomicU32::new(0) }; 64];

    fn index(name: &str) -> Option<usize> {
        POINTS.iter().position(|p| *p == name)
    }

    pub(super) fn hit(name: &'static str) {
        // Unarmed and not counting: two loads, no name lookup.
        if ARMED.load(Relaxed) == usize::MAX && COUNTING.load(Relaxed) == 0 {
            return;
        }
        let Some(k) = index(name) else {
            // An unlisted point is a bug in this file's list.
            panic!("crash point {name:?} is not in crash::POINTS");
        };
        if COUNTING.load(Relaxed) != 0 {
            HITS[k].fetch_add(1, Relaxed);
        }
        if ARMED.load(Relaxed) != k {
            return;
        }
        if LEFT.fetch_sub(1, Relaxed) == 1 {
            let hook = HOOK.load(Relaxed);
            if !hook.is_null() {
                // SAFETY: only `arm` stores HOOK, and it stores a `fn()`.
                let f: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(hook) };
                f();
            }
        }
    }

    /// Runs `hook` at the `nth` (from 1) hit of point `name`; `false` if
    /// `name` is no point.
    pub fn arm(name: &str, nth: u32, hook: fn()) -> bool {
        let Some(k) = index(name) else {
            return false;
        };
        HOOK.store(hook as *mut (), Relaxed);
        LEFT.store(nth.max(1), Relaxed);
        ARMED.store(k, Relaxed);
        true
    }

    /// Disarms the armed point and stops counting.
    pub fn disarm() {
        ARMED.store(usize::MAX, Relaxed);
        COUNTING.store(0, Relaxed);
    }

    /// Counts every point's hits from now on (from zero).
    pub fn counting() {
        for h in &HITS {
            h.store(0, Relaxed);
        }
        COUNTING.store(1, Relaxed);
    }

    /// The hits of point `name` counted so far.
    pub fn hits(name: &str) -> u32 {
        index(name).map_or(0, |k| HITS[k].load(Relaxed))
    }
}
