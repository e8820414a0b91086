//! Shared-memory records of health: the zone's health line and one row per
//! peer
//!
//! # Layout
//!
//! ```text
//!  health_off ─┬─ HealthLine ........ panic flag, ejected count, epoch
//!              └─ HealthRow × n ..... line 1: check schedule and results
//!                                     (written by the one prober of the
//!                                     peer); line 2: slow start and outlier
//!                                     counters (written by live traffic)
//! ```
//!
//! The two lines of a row have different writers, so a prober updating a
//! peer's check results does not bounce the line that requests to the same
//! peer write. A pick reads neither unless the peer's hot `flags` say so
//! (slow start, ejection).
//!
//! Ordering: the check schedule word `due_ms` is a lease taken by
//! compare-and-swap; the counters are independent and `Relaxed`. The panic
//! evaluation uses `SeqCst` on `epoch` (see [`crate::health::panic`]).

use core::mem::size_of;
use core::sync::atomic::{AtomicU32, AtomicU64};

use super::{round_up, Zone, ALIGN};

/// Zone-wide health words, on their own line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct HealthLine {
    /// 1 while the upstream is in panic (health ignored), else 0. Swapped
    /// by whoever re-evaluates it; the swap's old value tells who logs.
    pub panic: AtomicU32,
    /// Peers currently ejected as outliers (bounded by `max_ejection`):
    /// changed only by the holder of [`HealthLine::ejector`] (+1 before
    /// it sets a peer's `EJECTED` flag, -1 after it clears one, or set to
    /// the flags counted), so it is never below the flags set, and exact
    /// again whenever a holder counts (see `health::outlier`).
    pub ejected: AtomicU32,
    /// Bumped after every change of a peer's health bits: a panic
    /// evaluation that saw it move runs again.
    pub epoch: AtomicU64,
    /// When every slow start begun so far is over (`ngx_current_msec`
    /// clock): the latest `ramp_from_ms + window`, raised with `fetch_max`
    /// before a ramp's `SLOW` flag is set, never lowered. Until then
    /// `least_conn` scans instead of using its tree (loads scale with time).
    pub ramp_until_ms: AtomicU64,
    /// The ejection lease: `pid << 8 | (ledger slot + 1)` of the worker
    /// changing [`HealthLine::ejected`], 0 when free. Taken by CAS from 0,
    /// or from a holder whose ledger slot no longer names it (it died and
    /// its slot was reconciled).
    pub ejector: AtomicU64,
    /// When a health timer last re-evaluated the panic flag whether or
    /// not the epoch moved (`ngx_current_msec` clock): at most once per
    /// [`crate::health::panic::REEVALUATE_MS`] across workers, so that a
    /// health change whose worker died before it bumped the epoch is
    /// still seen.
    pub evaluated_ms: AtomicU64,
    /// Zero.
    pub reserved: [u64; 3],
}

/// `HealthRow::ramp_from_ms` of a peer that joined a running upstream under
/// `mandatory` checks: it slow-starts once its first check passes.
pub(crate) const RAMP_ON_FIRST_PASS: u64 = u64::MAX;

/// One peer's health record: two cache lines.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct HealthRow {
    /// When the next check is due (`ngx_current_msec` clock), 0 before the
    /// first one is scheduled. The lease: a worker takes a check by moving
    /// it forward with a compare-and-swap, so one check per interval goes
    /// out however many workers look.
    pub due_ms: AtomicU64,
    /// When the last check ended.
    pub last_ms: AtomicU64,
    /// Checks made.
    pub checks: AtomicU64,
    /// Checks failed.
    pub fails: AtomicU64,
    /// Times the peer turned unhealthy.
    pub unhealthy: AtomicU64,
    /// Consecutive passed checks (0 after a failure).
    pub rise: AtomicU32,
    /// Consecutive failed checks (0 after a pass).
    pub fall: AtomicU32,
    /// The last check: 0 none yet, 1 passed, 2 failed.
    pub last: AtomicU32,
    /// Worker number (+1) that made the last check claim; for looking.
    pub prober: AtomicU32,
    /// Verdict writers at work on this slot: bit `s` for the worker of
    /// ledger slot `s`, set (before the slot's epoch is compared) while its
    /// verdict writes, cleared after, and by the reconciliation of slot `s`.
    /// A slot is given to a new server only once it is FREE and no bit is
    /// set, so a verdict of the server that left never lands on the one
    /// that came (see `Zone::check_done_epoch`).
    pub writers: AtomicU64,

    /// When the slow start of the peer began (valid while its `SLOW` flag
    /// is set).
    pub ramp_from_ms: AtomicU64,
    /// Slow-start admission accumulator, 16.16 fixed point: a pick adds the
    /// ramp fraction and is admitted when the integer part moves.
    pub credit: AtomicU32,
    /// Consecutive 5xx responses (0 after any other response).
    pub consecutive_5xx: AtomicU32,
    /// Consecutive gateway errors: connection errors, timeouts, 502-504.
    pub consecutive_errors: AtomicU32,
    /// Times ejected (the next ejection lasts one base longer); decays to
    /// zero after a healthy stretch as long as the longest ejection.
    pub ejections: AtomicU32,
    /// When the current ejection ends (valid while `EJECTED` is set).
    pub ejected_until_ms: AtomicU64,
    /// When the last ejection ended, for the decay of `ejections`.
    pub ejection_end_ms: AtomicU64,
    /// Why the last check ended as it did: its
    /// [`crate::health::check::CheckReason`] in the low 16 bits, the
    /// answer's HTTP status (0 without one) in the high 16; 0 before the
    /// first check. Stored whole by the peer's prober after each check
    /// (`Relaxed`: a figure to show, read with [`HealthRow::last_ms`]
    /// without being ordered against it), zeroed by nothing else. On
    /// this line although the prober writes it: the first line is full;
    /// one store per check.
    pub last_reason: AtomicU32,
    /// How long the last check took, ms (saturated at `u32::MAX`); same
    /// writer and ordering as `last_reason`.
    pub last_duration_ms: AtomicU32,
    /// Zero.
    pub reserved2: [u64; 2],
}

const _: () = {
    assert!(size_of::<HealthLine>() == 64);
    assert!(size_of::<HealthRow>() == 128);
};

/// Bytes of the health section for `peers` peers.
pub(crate) fn section_len(peers: usize) -> usize {
    round_up(
        size_of::<HealthLine>() + peers * size_of::<HealthRow>(),
        ALIGN,
    )
}

impl<'a> Zone<'a> {
    /// The zone's health line.
    #[inline]
    pub fn health_line(&self) -> &'a HealthLine {
        // SAFETY: the health section starts with its line (layout
        // contract); zero-initialised atomics.
        unsafe {
            &*self
                .as_ptr()
                .add(self.root().health_off as usize)
                .cast::<HealthLine>()
        }
    }

    /// Health rows of every peer.
    #[inline]
    pub fn health_rows(&self) -> &'a [HealthRow] {
        let off = self.root().health_off + size_of::<HealthLine>() as u64;
        // SAFETY: `peers` rows follow the health line (layout contract);
        // zero-initialised atomics, 64-byte aligned.
        unsafe {
            core::slice::from_raw_parts(
                self.as_ptr().add(off as usize).cast::<HealthRow>(),
                self.peers(),
            )
        }
    }
}
