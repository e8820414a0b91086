//! Outlier ejection from live traffic
//!
//! `ha_outlier consecutive_5xx=N consecutive_errors=M base_ejection=T
//! max_ejection=P% max_ejection_time=U`: a server whose responses are N 5xx
//! in a row, or M gateway errors in a row (a connection error or timeout
//! before the response header, 502, 503, 504), is ejected — no traffic —
//! for `base_ejection` times the number of times it has been ejected,
//! capped at `max_ejection_time`; then it returns, through slow start when
//! one is configured. Never more than `max_ejection` percent of the
//! upstream's servers (at least one) are ejected at once: an ejection that
//! would exceed it does not happen, and the counters go on. The ejection
//! count decays to zero once a server has stayed in for as long as the
//! longest ejection. These are Envoy's `consecutive_5xx`,
//! `consecutive_gateway_failure`, `base_ejection_time`,
//! `max_ejection_percent` and `max_ejection_time`, evaluated on every try
//! rather than on a sweep interval.
//!
//! The counters are on the second line of the peer's health row; a try
//! writes them only when they change (a success on a peer with no
//! failures in a row writes nothing). An ejection is decided by the
//! compare-and-swap that takes the upstream's ejection budget and then the
//! flag; its end by the `fetch_and` that clears the flag, in whichever
//! worker's health timer sees it first ([`Zone::end_ejections`]).
//!
//! # Crash consistency
//!
//! The budget ([`crate::layout::health::HealthLine::ejected`]) and a
//! peer's flag are two words: a worker killed between them would leave
//! the budget taken with nothing ejected, for good (with `max_ejection`
//! one server, no ejection ever again). So the budget changes only under
//! the *ejection lease* (`HealthLine::ejector`), held by a worker with a
//! ledger slot for the few instructions of an ejection or of ending
//! ejections, and always in the order that over-counts: +1 before a flag
//! is set, -1 after one is cleared (a builder freeing a slot clears its
//! flag outside the lease and leaves the count alone). The count is
//! therefore never below the flags set, so "nothing ejected" (0) is never
//! wrong; and a holder that takes the lease over from a dead one, or that
//! ends ejections, sets it to the flags counted, exact. Workers without a
//! ledger slot (beyond 32) eject nothing: the next failure seen by a
//! worker with one does.

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::crash::crash_point;
use crate::layout::ledger::RECLAIMING;
use crate::layout::{PeerState, Zone};

/// The ejection lease while held ([`Zone::ejection_lease`]); given back on
/// drop.
struct Lease<'a>(&'a AtomicU64);

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

/// Why a server was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `consecutive_5xx` responses in a row.
    Consecutive5xx,
    /// `consecutive_errors` gateway errors in a row.
    ConsecutiveErrors,
}

/// An ejection a try just made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Why.
    pub reason: Reason,
    /// How many in a row.
    pub count: u32,
    /// For how long, ms.
    pub ms: u64,
}

/// Default `max_ejection_time`, ms (Envoy's).
pub const DEFAULT_MAX_EJECTION_MS: u32 = 300_000;

impl Zone<'_> {
    /// Counts a finished try of peer `i` (its HTTP status, 0 for none;
    /// whether it failed) toward outlier ejection; the ejection it caused,
    /// if any.
    /// `ledger`: the worker's ledger slot (see the module note).
    #[inline]
    pub(crate) fn observe_outlier(
        &self,
        i: usize,
        failed: bool,
        status: u32,
        now: u64,
        ledger: Option<u32>,
    ) -> Option<Ejection> {
        if !self.root().health.outlier() {
            return None;
        }
        self.observe_outlier_slow(i, failed, status, now, ledger)
    }

    /// Takes the ejection lease for the worker owning ledger slot `ledger`
    /// (`None`: no slot, or another live worker holds it). Taken over
    /// from a holder whose slot no longer names it; the count is then
    /// recounted from the flags.
    fn ejection_lease(&self, ledger: Option<u32>) -> Option<Lease<'_>> {
        let s = ledger?;
        let pid = self.ledger_slot(s as usize)?.0.load(Acquire);
        if pid == 0 || pid & RECLAIMING != 0 || pid >> 56 != 0 {
            return None;
        }
        let me = (pid << 8) | (u64::from(s) + 1);
        let lease = &self.health_line().ejector;
        for _ in 0..4 {
            let cur = lease.load(Acquire);
            if cur == 0 {
                if lease.compare_exchange(0, me, AcqRel, Relaxed).is_ok() {
                    return Some(Lease(lease));
                }
                continue;
            }
            let (hs, hp) = (((cur & 0xff) as usize).wrapping_sub(1), cur >> 8);
            let alive = self
                .ledger_slot(hs)
                .is_some_and(|(w, _)| w.load(Acquire) == hp);
            if alive || cur == me {
                return None;
            }
            if lease.compare_exchange(cur, me, AcqRel, Relaxed).is_ok() {
                crash_point("eject.taken_over");
                self.recount_ejected();
                return Some(Lease(lease));
            }
        }
        None
    }

    /// Sets the ejection count to the flags set. Lease holders only.
    fn recount_ejected(&self) -> u32 {
        let n = self
            .states()
            .iter()
            .filter(|s| s.flags.load(Relaxed) & PeerState::EJECTED != 0)
            .count() as u32;
        self.health_line().ejected.store(n, Relaxed);
        n
    }

    /// [`Zone::observe_outlier`] once the upstream has `ha_outlier`.
    #[inline(never)]
    fn observe_outlier_slow(
        &self,
        i: usize,
        failed: bool,
        status: u32,
        now: u64,
        ledger: Option<u32>,
    ) -> Option<Ejection> {
        let hs = self.health_spec();
        if !hs.outlier() || self.members_now() < 2 {
            return None;
        }
        let (c5xx, cerr) = (hs.consecutive_5xx, hs.consecutive_errors);
        let row = self.health_rows().get(i)?;
        let local = failed && status == 0;
        let five = local || (500..=599).contains(&status);
        let gateway = local || (502..=504).contains(&status);
        let bump = |c: &core::sync::atomic::AtomicU32, hit: bool| -> u32 {
            if hit {
                c.fetch_add(1, Relaxed).saturating_add(1)
            } else {
                if c.load(Relaxed) != 0 {
                    c.store(0, Relaxed);
                }
                0
            }
        };
        let n5 = bump(&row.consecutive_5xx, five);
        let ne = bump(&row.consecutive_errors, gateway);
        let reason = if cerr != 0 && ne >= cerr {
            (Reason::ConsecutiveErrors, ne)
        } else if c5xx != 0 && n5 >= c5xx {
            (Reason::Consecutive5xx, n5)
        } else {
            return None;
        };
        self.eject(i, reason, now, ledger)
    }

    fn eject(
        &self,
        i: usize,
        (reason, count): (Reason, u32),
        now: u64,
        ledger: Option<u32>,
    ) -> Option<Ejection> {
        let hs = *self.health_spec();
        let (s, row, line) = (
            &self.states()[i],
            &self.health_rows()[i],
            self.health_line(),
        );
        if s.flags.load(Relaxed) & PeerState::EJECTED != 0 {
            return None;
        }
        let _lease = self.ejection_lease(ledger)?;
        let pct = if hs.max_ejection_percent == 0 {
            100
        } else {
            hs.max_ejection_percent
        };
        let cap = ((self.members_now() as u64 * u64::from(pct)) / 100).max(1) as u32;
        line.ejected
            .fetch_update(Relaxed, Relaxed, |e| (e < cap).then_some(e + 1))
            .ok()?;
        crash_point("eject.counted");
        let max = u64::from(if hs.max_ejection_ms == 0 {
            DEFAULT_MAX_EJECTION_MS.max(hs.base_ejection_ms)
        } else {
            hs.max_ejection_ms
        });
        // The multiplier decays after a stretch in service as long as the
        // longest ejection.
        let end = row.ejection_end_ms.load(Relaxed);
        if end != 0 && now.saturating_sub(end) >= max {
            row.ejections.store(0, Relaxed);
        }
        let times = row.ejections.load(Relaxed).saturating_add(1);
        let ms = (u64::from(hs.base_ejection_ms) * u64::from(times)).min(max);
        row.ejected_until_ms.store(now + ms, Relaxed);
        let old = s.flags.fetch_or(PeerState::EJECTED, Relaxed);
        crash_point("eject.flagged");
        self.state_changed(i, now);
        self.lc_refresh(i);
        if old & PeerState::EJECTED != 0 {
            // Ejected meanwhile (by a lease holder before us): give the
            // budget back.
            line.ejected.fetch_sub(1, Relaxed);
            return None;
        }
        row.ejections.store(times, Relaxed);
        row.consecutive_5xx.store(0, Relaxed);
        row.consecutive_errors.store(0, Relaxed);
        self.health_changed();
        Some(Ejection { reason, count, ms })
    }

    /// Ends the ejections that are over at `now` (every worker's health
    /// timer calls it, with its ledger slot `ledger`): writes the peers
    /// returned by this call to `out` (at most its length; the rest return
    /// at the next call) and returns how many. Under the ejection lease
    /// (none taken, nothing ended, when another live worker holds it: the
    /// next tick does), which also sets the count to the flags left.
    pub fn end_ejections(&self, now: u64, out: &mut [u32], ledger: Option<u32>) -> usize {
        let line = self.health_line();
        if line.ejected.load(Relaxed) == 0 {
            return 0;
        }
        let Some(_lease) = self.ejection_lease(ledger) else {
            return 0;
        };
        let (mut n, mut left, mut whole) = (0, 0u32, true);
        for (i, (s, row)) in self.states().iter().zip(self.health_rows()).enumerate() {
            let flags = s.flags.load(Relaxed);
            if flags & PeerState::EJECTED == 0 {
                continue;
            }
            if n == out.len() || now < row.ejected_until_ms.load(Relaxed) {
                // Out of room: the rest return at the next call.
                whole &= n < out.len();
                left += 1;
                continue;
            }
            let old = s.flags.fetch_and(!PeerState::EJECTED, Relaxed);
            if old & PeerState::EJECTED == 0 {
                continue;
            }
            crash_point("eject.cleared");
            self.lc_refresh(i);
            self.state_changed(i, now);
            let _ = line
                .ejected
                .fetch_update(Relaxed, Relaxed, |e| e.checked_sub(1));
            if old & PeerState::RETIRED != 0 {
                // Out of the membership (and maybe being given to another
                // identity by a builder): the budget is returned, nothing
                // more is written or reported.
                continue;
            }
            row.ejection_end_ms.store(now.max(1), Relaxed);
            crate::policy::ewma::forget(s);
            self.begin_slow_start(i, now);
            self.health_changed();
            out[n] = i as u32;
            n += 1;
        }
        // Flags a builder cleared outside the lease, a holder that died:
        // the count is the flags left (counted in the same pass; no flag
        // is set outside the lease, so none was missed).
        if whole {
            line.ejected.store(left, Relaxed);
        }
        n
    }

    /// When the current ejection of peer `i` ends, if it is ejected.
    pub fn ejected_until(&self, i: usize) -> Option<u64> {
        let s = self.states().get(i)?;
        (s.flags.load(Relaxed) & PeerState::EJECTED != 0)
            .then(|| self.health_rows()[i].ejected_until_ms.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{HealthSpec, PeerSpec, Policy, UpstreamSpec};
    use crate::testing::OwnedTable;

    fn table(n: usize, pct: u32) -> OwnedTable {
        let ids: Vec<Vec<u8>> = (0..n).map(|i| format!("p{i}").into_bytes()).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
            health: HealthSpec {
                consecutive_5xx: 3,
                consecutive_errors: 2,
                base_ejection_ms: 1_000,
                max_ejection_ms: 2_500,
                max_ejection_percent: pct,
                ..HealthSpec::default()
            },
        })
        .unwrap()
    }

    #[test]
    fn consecutive_5xx_eject_and_other_statuses_reset() {
        let t = table(4, 50);
        let z = t.zone();
        // A worker with a ledger slot (the ejection lease needs one).
        let l = z.claim_slot(1, |_| true);
        assert_eq!(z.observe_outlier(0, false, 500, 10, l), None);
        assert_eq!(z.observe_outlier(0, false, 500, 10, l), None);
        assert_eq!(z.observe_outlier(0, false, 404, 10, l), None, "reset");
        assert_eq!(z.observe_outlier(0, false, 500, 10, l), None);
        assert_eq!(z.observe_outlier(0, false, 500, 10, l), None);
        let e = z.observe_outlier(0, false, 500, 10, l).unwrap();
        assert_eq!(
            (e.reason, e.count, e.ms),
            (Reason::Consecutive5xx, 3, 1_000)
        );
        assert_eq!(z.ejected_until(0), Some(1_010));
        let mut out = [0u32; 4];
        assert_eq!(z.end_ejections(1_009, &mut out, l), 0);
        assert_eq!(z.end_ejections(1_010, &mut out, l), 1);
        assert_eq!(out[0], 0);
        assert_eq!(z.end_ejections(1_010, &mut out, l), 0, "once");
        assert_eq!(z.ejected_until(0), None);
    }

    #[test]
    fn gateway_errors_and_growing_capped_ejections() {
        let t = table(4, 50);
        let z = t.zone();
        // A worker with a ledger slot (the ejection lease needs one).
        let l = z.claim_slot(1, |_| true);
        let mut out = [0u32; 4];
        let mut now = 100;
        for want in [1_000, 2_000, 2_500] {
            assert_eq!(z.observe_outlier(1, true, 0, now, l), None);
            let e = z.observe_outlier(1, false, 503, now, l).unwrap();
            assert_eq!((e.reason, e.ms), (Reason::ConsecutiveErrors, want));
            now += e.ms;
            assert_eq!(z.end_ejections(now, &mut out, l), 1);
        }
        // In service for the longest ejection: the multiplier decays.
        now += 2_500;
        z.observe_outlier(1, true, 0, now, l);
        assert_eq!(z.observe_outlier(1, true, 0, now, l).unwrap().ms, 1_000);
    }

    #[test]
    fn a_returning_server_slow_starts() {
        let ids: Vec<Vec<u8>> = (0..2).map(|i| format!("p{i}").into_bytes()).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        let t = OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
            health: HealthSpec {
                consecutive_errors: 1,
                base_ejection_ms: 1_000,
                slow_start_ms: 5_000,
                ..HealthSpec::default()
            },
        })
        .unwrap();
        let z = t.zone();
        // A worker with a ledger slot (the ejection lease needs one).
        let l = z.claim_slot(1, |_| true);
        assert!(z.observe_outlier(0, true, 0, 10, l).is_some());
        let mut out = [0u32; 2];
        assert_eq!(z.end_ejections(1_010, &mut out, l), 1);
        assert_eq!(
            crate::health::slow_start::fraction_q16(z, 0, 1_010),
            Some(crate::health::slow_start::FLOOR_Q16)
        );
    }

    #[test]
    fn never_more_than_max_ejection_at_once() {
        let t = table(4, 50);
        let z = t.zone();
        // A worker with a ledger slot (the ejection lease needs one).
        let l = z.claim_slot(1, |_| true);
        let ejected: Vec<bool> = (0..4)
            .map(|i| {
                z.observe_outlier(i, true, 0, 1, l);
                z.observe_outlier(i, true, 0, 1, l).is_some()
            })
            .collect();
        assert_eq!(ejected, [true, true, false, false]);
        // At least one, even at a small percentage.
        let t = table(4, 1);
        let z = t.zone();
        // A worker with a ledger slot (the ejection lease needs one).
        let l = z.claim_slot(1, |_| true);
        z.observe_outlier(0, true, 0, 1, l);
        assert!(z.observe_outlier(0, true, 0, 1, l).is_some());
    }
}
