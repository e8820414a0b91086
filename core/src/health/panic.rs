//! Panic threshold: when too few primaries are healthy, ignore health
//!
//! `ha_panic P%`: when fewer than P% of the primaries that are in service
//! (not `down` by configuration or through the API, not draining) pass
//! their health — not `checking`, `unhealthy` or ejected — the upstream is
//! in panic: every pick ignores the health bits and spreads over all the
//! primaries in service, as Envoy's `healthy_panic_threshold` does, rather
//! than crushing the few that are left. Passive `max_fails` windows and
//! `max_conns` still apply (they are nginx's own rules, not health
//! verdicts); backups still serve only when no primary is eligible, which
//! in panic means when none is in service.
//!
//! The flag lives on the zone's health line and is read once per pick
//! (only in upstreams with `ha_panic`). It is re-evaluated by whoever
//! changes a peer's health bits, right after the change, and by every
//! worker's health timer when the health epoch moved (admin changes bump
//! it too): a count over the primaries, O(n), only on such changes. Two
//! evaluations racing each recount after their own change, and one that
//! sees the epoch move during its count counts again, so the flag settles
//! on the latest state; the `swap` that changes it tells its caller to
//! log.

use core::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::layout::{PeerState, Zone};

/// What an evaluation did to the panic flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanicChange {
    /// Nothing.
    #[default]
    None,
    /// This evaluation put the upstream in panic.
    Entered,
    /// This evaluation ended it.
    Left,
}

/// The outcome of an evaluation, with the counts it was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PanicReport {
    /// The change, if this caller made one.
    pub change: PanicChange,
    /// Primaries in service and healthy.
    pub healthy: u32,
    /// Primaries in service.
    pub total: u32,
}

/// Bounded recounts when the epoch keeps moving.
const RECOUNTS: usize = 4;

impl Zone<'_> {
    /// Marks a change of health or admin bits (call after the change).
    #[inline]
    pub(crate) fn health_changed(&self) {
        self.health_line().epoch.fetch_add(1, SeqCst);
    }

    /// Re-evaluates the panic flag (see the module note).
    pub fn update_panic(&self) -> PanicReport {
        let pct = self.root().health.panic_percent;
        let line = self.health_line();
        if pct == 0 {
            return PanicReport::default();
        }
        let mut report = PanicReport::default();
        for _ in 0..RECOUNTS {
            let epoch = line.epoch.load(SeqCst);
            let (mut healthy, mut total) = (0u32, 0u32);
            let states = self.states();
            // The serving primaries, from the slots' flags (no generation
            // bytes): backups are flagged, and slots outside the serving
            // membership are RETIRED, which OUT covers.
            for s in states {
                let f = s.flags.load(Relaxed);
                if f & (PeerState::OUT | PeerState::BACKUP) != 0 {
                    continue;
                }
                total += 1;
                if f & PeerState::HEALTH == 0 {
                    healthy += 1;
                }
            }
            let panic = total != 0 && u64::from(healthy) * 100 < u64::from(pct) * u64::from(total);
            let old = line.panic.swap(u32::from(panic), SeqCst) != 0;
            report.healthy = healthy;
            report.total = total;
            if old != panic {
                report.change = if panic {
                    PanicChange::Entered
                } else {
                    PanicChange::Left
                };
            }
            if line.epoch.load(SeqCst) == epoch {
                break;
            }
        }
        report
    }

    /// The health epoch (see [`Zone::update_panic`]).
    pub fn health_epoch(&self) -> u64 {
        self.health_line().epoch.load(SeqCst)
    }

    /// Whether a health timer at `now` should re-evaluate the panic flag
    /// although the epoch did not move: true for one caller per
    /// [`REEVALUATE_MS`] (a compare-and-swap on the health line), and only
    /// when the upstream has a panic threshold. A worker killed between a
    /// health bit's change and its epoch bump leaves the flag stale for
    /// at most that long.
    pub fn panic_due(&self, now: u64) -> bool {
        if self.root().health.panic_percent == 0 {
            return false;
        }
        let at = &self.health_line().evaluated_ms;
        let last = at.load(Relaxed);
        now.saturating_sub(last) >= REEVALUATE_MS
            && at.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    }

    /// Whether the upstream is in panic now.
    pub fn in_panic(&self) -> bool {
        self.health_line().panic.load(Relaxed) != 0
    }
}

/// How often, at most, one health timer across the workers re-evaluates
/// the panic flag without an epoch change ([`Zone::panic_due`]), ms.
pub const REEVALUATE_MS: u64 = 1_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Outcome;
    use crate::spec::{HealthSpec, PeerSpec, Policy, UpstreamSpec};
    use crate::testing::{OwnedAttempt, OwnedTable};

    fn table(pct: u32, policy: Policy) -> OwnedTable {
        let peers = [
            PeerSpec::new(b"a"),
            PeerSpec::new(b"b"),
            PeerSpec::new(b"c"),
            PeerSpec::new(b"d"),
        ];
        OwnedTable::new(&UpstreamSpec {
            policy,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
            health: HealthSpec {
                flags: HealthSpec::CHECK,
                interval_ms: 1000,
                timeout_ms: 500,
                fails: 1,
                passes: 1,
                panic_percent: pct,
                ..HealthSpec::default()
            },
        })
        .unwrap()
    }

    fn picks(t: &OwnedTable, n: usize) -> Vec<u32> {
        (0..n)
            .map(|k| {
                let mut a = OwnedAttempt::new(t.zone(), 0);
                a.attempt()
                    .seed((k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let p = a.pick_keyed(format!("k{k}").as_bytes(), 1).map(|p| p.peer);
                if p.is_ok() {
                    a.release(Outcome::Ok, 1).unwrap();
                }
                a.end();
                p.unwrap_or(u32::MAX)
            })
            .collect()
    }

    #[test]
    fn below_the_threshold_health_is_ignored() {
        for policy in crate::request::tests::all() {
            let t = table(50, policy);
            let z = t.zone();
            // Two of four unhealthy: 50% healthy is not below 50%.
            for i in [0, 1] {
                z.states()[i].flags.fetch_or(PeerState::UNHEALTHY, Relaxed);
            }
            z.health_changed();
            assert_eq!(z.update_panic().change, PanicChange::None);
            assert!(picks(&t, 40).iter().all(|&p| p >= 2), "{policy:?}");
            // Three of four: panic, and every in-service server serves.
            z.states()[2].flags.fetch_or(PeerState::UNHEALTHY, Relaxed);
            z.health_changed();
            let r = z.update_panic();
            assert_eq!((r.change, r.healthy, r.total), (PanicChange::Entered, 1, 4));
            assert_eq!(z.update_panic().change, PanicChange::None, "logged once");
            let got = picks(&t, 200);
            for peer in 0..4 {
                assert!(got.contains(&peer), "{policy:?}: {peer} never picked");
            }
            // Admin down is out of the count and out of rotation even in
            // panic.
            z.set_admin(0, Some(true), None, 0).unwrap();
            assert!(picks(&t, 100).iter().all(|&p| p != 0), "{policy:?}");
            for i in [1, 2] {
                z.states()[i]
                    .flags
                    .fetch_and(!PeerState::UNHEALTHY, Relaxed);
            }
            z.health_changed();
            let r = z.update_panic();
            assert_eq!((r.change, r.healthy, r.total), (PanicChange::Left, 3, 3));
        }
    }

    #[test]
    fn off_without_the_directive() {
        let t = table(0, Policy::RoundRobin);
        let z = t.zone();
        for s in z.states() {
            s.flags.fetch_or(PeerState::UNHEALTHY, Relaxed);
        }
        assert_eq!(z.update_panic(), PanicReport::default());
        assert!(picks(&t, 4).iter().all(|&p| p == u32::MAX));
    }
}
