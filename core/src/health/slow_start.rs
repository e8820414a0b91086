//! Slow start: a returning server's share ramps up over `ha_slow_start`
//!
//! A server that comes back — healthy again after failed checks, back from
//! `unavail` (`max_fails`), from an outlier ejection, from `down` through
//! the API, or added to a running upstream — takes a fraction of its
//! weight that grows linearly from [`FLOOR_Q16`] (10%) to 1 over the
//! window: `f = max(10%, elapsed / window)`, as Envoy's linear slow start
//! with its default `min_weight_percent`.
//!
//! How each policy honours it, without making picks O(n):
//!
//! - round robin, p2c, ewma, random: a pick that lands on a ramping peer
//!   is admitted with frequency `f` — a shared 16.16 fixed-point
//!   accumulator per peer, to which every such pick adds `f`; the pick is
//!   admitted when the integer part moves (exact frequency, no random
//!   numbers) — and otherwise moves on as if the peer were busy;
//! - least_conn: the ramping peer's in-flight count is divided by `f` in
//!   the comparison (at a tenth of its weight each request counts ten
//!   times), so it holds `f` of its share of the load; among peers tied on
//!   load (at low concurrency every load is 0) it is admitted with
//!   frequency `f`, as in round robin;
//! - hash policies do not ramp: holding a key's requests back would send
//!   them to another server and break the affinity the policy exists for
//!   (NGINX Plus refuses `slow_start` with hash for the same reason); a
//!   returning server gets its keys back at once.
//!
//! The fallback scan of a pick ignores the ramp, so a group whose only
//! eligible peer is ramping still serves. A single-server upstream never
//! ramps.
//!
//! A ramp is on while the peer's `SLOW` flag is set; the first pick that
//! finds it over clears the flag. `ramp_from_ms` is written before the flag
//! is set (a pick that sees the flag with an older start only computes a
//! larger fraction: harmless).

use core::sync::atomic::Ordering::Relaxed;

use crate::layout::{PeerState, Zone};

/// The smallest fraction, 16.16 fixed point: 10%.
pub const FLOOR_Q16: u32 = 6554;

/// One, 16.16 fixed point.
const ONE_Q16: u64 = 1 << 16;

impl Zone<'_> {
    /// Starts the slow start of peer `i` at `now`, if the upstream has one
    /// and more than one server.
    pub(crate) fn begin_slow_start(&self, i: usize, now: u64) {
        let window = self.root().health.slow_start_ms;
        if window == 0 || self.members_now() < 2 {
            return;
        }
        let (Some(s), Some(row)) = (self.states().get(i), self.health_rows().get(i)) else {
            return;
        };
        row.ramp_from_ms.store(now, Relaxed);
        row.credit.store(0, Relaxed);
        self.note_ramp(now);
        s.flags.fetch_or(PeerState::SLOW, Relaxed);
    }

    /// Records that a ramp began at `from`: [`HealthLine::ramp_until_ms`]
    /// moves to its end if that is later.
    ///
    /// [`HealthLine::ramp_until_ms`]: crate::layout::health::HealthLine
    pub(crate) fn note_ramp(&self, from: u64) {
        let window = u64::from(self.root().health.slow_start_ms);
        if window != 0 {
            self.health_line()
                .ramp_until_ms
                .fetch_max(from.saturating_add(window), Relaxed);
        }
    }

    /// Whether a slow start may still be ramping at `now`.
    #[inline]
    pub fn ramping(&self, now: u64) -> bool {
        let window = self.root().health.slow_start_ms;
        window != 0 && now < self.health_line().ramp_until_ms.load(Relaxed)
    }
}

/// The fraction of its weight peer `i` takes at `now`, 16.16 fixed point;
/// `None` (and the ramp ended) when it takes all of it.
pub fn fraction_q16(zone: Zone<'_>, i: usize, now: u64) -> Option<u32> {
    let s = &zone.states()[i];
    if s.flags.load(Relaxed) & PeerState::SLOW == 0 {
        return None;
    }
    let window = u64::from(zone.root().health.slow_start_ms);
    let elapsed = now.saturating_sub(zone.health_rows()[i].ramp_from_ms.load(Relaxed));
    if window == 0 || elapsed >= window {
        s.flags.fetch_and(!PeerState::SLOW, Relaxed);
        return None;
    }
    let f = (elapsed * ONE_Q16 / window) as u32;
    Some(f.max(FLOOR_Q16))
}

/// Whether a pick landing on ramping peer `i` is admitted (see the module
/// note).
#[inline]
pub fn admit(zone: Zone<'_>, i: usize, now: u64) -> bool {
    let Some(f) = fraction_q16(zone, i, now) else {
        return true;
    };
    let prev = zone.health_rows()[i].credit.fetch_add(f, Relaxed);
    (prev.wrapping_add(f) >> 16) != (prev >> 16)
}

/// `in_flight` of ramping peer `i` as `least_conn` compares it: divided
/// by the fraction, rounded up, at most `u32::MAX`.
#[inline]
pub fn scaled_load(zone: Zone<'_>, i: usize, in_flight: u32, now: u64) -> u64 {
    match fraction_q16(zone, i, now) {
        None => u64::from(in_flight),
        Some(f) => (u64::from(in_flight) * ONE_Q16)
            .div_ceil(u64::from(f))
            .min(u64::from(u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{HealthSpec, PeerSpec, Policy, UpstreamSpec};
    use crate::testing::OwnedTable;

    fn zone_with(window: u32, peers: usize) -> OwnedTable {
        let ids: Vec<Vec<u8>> = (0..peers).map(|i| format!("p{i}").into_bytes()).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
            health: HealthSpec {
                slow_start_ms: window,
                ..HealthSpec::default()
            },
        })
        .unwrap()
    }

    #[test]
    fn fraction_ramps_linearly_from_the_floor_then_ends() {
        let t = zone_with(10_000, 2);
        let z = t.zone();
        z.begin_slow_start(0, 1_000);
        assert_eq!(fraction_q16(z, 0, 1_000), Some(FLOOR_Q16));
        assert_eq!(fraction_q16(z, 0, 2_000), Some(FLOOR_Q16));
        assert_eq!(fraction_q16(z, 0, 6_000), Some(32_768));
        assert_eq!(fraction_q16(z, 1, 6_000), None, "not ramping");
        assert_eq!(fraction_q16(z, 0, 11_000), None);
        assert_eq!(z.states()[0].flags.load(Relaxed) & PeerState::SLOW, 0);
    }

    #[test]
    fn admission_frequency_is_the_fraction() {
        let t = zone_with(10_000, 2);
        let z = t.zone();
        z.begin_slow_start(0, 0);
        let admitted = (0..10_000).filter(|_| admit(z, 0, 5_000)).count();
        assert_eq!(admitted, 5_000);
        let admitted = (0..10_000).filter(|_| admit(z, 0, 500)).count();
        assert!((999..=1_001).contains(&admitted), "{admitted}");
    }

    #[test]
    fn single_server_and_no_window_never_ramp() {
        let t = zone_with(10_000, 1);
        t.zone().begin_slow_start(0, 0);
        assert_eq!(fraction_q16(t.zone(), 0, 1), None);
        let t = zone_with(0, 2);
        t.zone().begin_slow_start(0, 0);
        assert_eq!(fraction_q16(t.zone(), 0, 1), None);
    }

    /// Every weighted policy gives a ramping peer about its fraction of
    /// its share; hash policies do not ramp.
    #[test]
    fn every_weighted_policy_thins_a_ramping_peer() {
        use crate::request::Outcome;
        use crate::spec::HashMode;
        use crate::testing::OwnedAttempt;
        let policies = [
            Policy::RoundRobin,
            Policy::P2c,
            Policy::Ewma { decay_ms: 10_000 },
            Policy::Random,
            Policy::LeastConn,
        ];
        let ids: Vec<Vec<u8>> = (0..4).map(|i| format!("p{i}").into_bytes()).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        let health = HealthSpec {
            slow_start_ms: 10_000,
            ..HealthSpec::default()
        };
        for (policy, sequential) in policies
            .iter()
            .map(|&p| (p, false))
            .chain([(Policy::LeastConn, true)])
        {
            let t = OwnedTable::new(&UpstreamSpec {
                policy,
                peers: &peers,
                health,
                schedule_room: 0,
                sessions: false,
            })
            .unwrap();
            let z = t.zone();
            // Peer 0 at 20% of its weight (2 s into a 10 s ramp).
            z.begin_slow_start(0, 0);
            let now = 2_000;
            // least_conn decides on load: its requests stay in flight, and
            // the share is of the load it holds (the sequential case, all
            // loads 0, is the round robin one: "least_conn, sequential").
            let hold = policy == Policy::LeastConn && !sequential;
            let n = if hold { 800 } else { 4_000 };
            let mut counts = [0usize; 4];
            let mut held = Vec::new();
            for k in 0..n {
                let mut a = OwnedAttempt::new(z, now);
                a.attempt()
                    .seed((k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let p = a.pick(now).unwrap();
                counts[p.peer as usize] += 1;
                if hold {
                    held.push(a);
                } else {
                    a.release(Outcome::Ok, now).unwrap();
                    a.end();
                }
            }
            // The others share what peer 0 leaves; peer 0 keeps about a
            // fifth of an even share (1/4 of the picks): 0.2 / (3 + 0.2)
            // of them, 6.25%; between 3% and 10% allows the policies'
            // own spread (p2c and ewma compare two draws).
            let share = counts[0] as f64 / n as f64;
            assert!(
                (0.03..0.10).contains(&share),
                "{policy:?} (sequential: {sequential}): ramping peer took {share:.3} ({counts:?})"
            );
            for mut a in held {
                a.release(Outcome::Ok, now).unwrap();
                a.end();
            }
        }
        // Hash: the ramping peer keeps its keys.
        let t = OwnedTable::new(&UpstreamSpec {
            policy: Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            peers: &peers,
            health,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let z = t.zone();
        let before: Vec<u32> = (0..200)
            .map(|k| {
                let mut a = OwnedAttempt::new(z, 0);
                let p = a.pick_keyed(format!("k{k}").as_bytes(), 0).unwrap().peer;
                a.release(Outcome::Ok, 0).unwrap();
                p
            })
            .collect();
        z.begin_slow_start(0, 0);
        for (k, want) in before.iter().enumerate() {
            let mut a = OwnedAttempt::new(z, 1);
            assert_eq!(
                a.pick_keyed(format!("k{k}").as_bytes(), 1).unwrap().peer,
                *want
            );
            a.release(Outcome::Ok, 1).unwrap();
        }
    }

    #[test]
    fn scaled_load_divides_by_the_fraction() {
        let t = zone_with(10_000, 2);
        let z = t.zone();
        z.begin_slow_start(0, 0);
        assert_eq!(scaled_load(z, 0, 3, 5_000), 6);
        assert_eq!(scaled_load(z, 0, 0, 5_000), 0);
        assert_eq!(scaled_load(z, 1, 3, 5_000), 3);
        assert_eq!(scaled_load(z, 0, u32::MAX, 0), u64::from(u32::MAX));
    }
}
