//! Peak-EWMA: latency-aware two choices (Finagle, Linkerd)
//!
//! Each peer keeps an exponentially weighted moving average of its
//! response latency, measured from `get` to `free` of successful tries.
//! "Peak": a sample above the average replaces it at once, so a peer that
//! turns slow is avoided immediately and trusted again only gradually. The
//! average decays with time constant `decay`: weight `exp(-Δt / decay)` for
//! the old value. A pick draws two distinct candidates by weight (as p2c)
//! and keeps the lower `latency × (in_flight + 1)`, ties to the first draw.
//!
//! # Weight counts once
//!
//! Weight is in the draw only, not in the cost. With equal estimates and no
//! request in flight the costs tie, the first draw wins, and the first
//! draw is a plain weighted draw: each peer's share is exactly its weight
//! share (5,1,1 → 5/7, 1/7, 1/7; `tests::equal_latencies_follow_weights`).
//! Dividing the cost by weight as well would let the heavier candidate win
//! every tie (5,1,1 → 40/42, 1/42, 1/42); drawing uniformly and dividing
//! by weight would not follow weights either (5,1,1 → 2/3, 1/6, 1/6).
//! Under load the raw in-flight count is compared, so a heavier peer that
//! holds more requests loses more comparisons: weight sets how often a peer
//! is a candidate, latency and in-flight decide between candidates.
//!
//! A new or recovered peer has no estimate (0.0): comparisons involving it
//! use the other candidate's estimate for both, i.e. fall back to
//! in-flight counts, so the newcomer is neither flooded (as an estimate of 0 would)
//! nor starved (as a pessimistic one would).
//!
//! The estimate is updated with a plain load/store: concurrent updates by
//! two workers may lose one sample, which an average tolerates; no lock.

use core::sync::atomic::Ordering::Relaxed;

use crate::attempt::Attempt;
use crate::health::Mode;
use crate::layout::{PeerState, Table};

/// Smallest recorded latency, ms: one tick of nginx's millisecond clock.
/// A try shorter than a tick measures 0 or 1 ms depending on where it fell
/// between ticks; both mean "about a millisecond or less". A lower floor
/// (it was 0.01) made one 1 ms sample look 100 times slower than a 0 ms
/// one, and sub-millisecond backends were shunned at random for seconds.
/// Also keeps 0.0 free to mean "unknown".
const FLOOR_MS: f64 = 1.0;

/// `e^-x` for `x >= 0`, within 2e-5 relative, without libm: a pick
/// evaluates it twice and must stay in tens of nanoseconds.
/// `e^-x = 2^-n · e^-y` with `n` whole and `y = (x·log2 e − n)·ln 2` in
/// `[0, ln 2)`, where a degree-7 Taylor polynomial of `e^-y` is accurate.
#[inline]
fn exp_neg(x: f64) -> f64 {
    // Zero, negative and NaN: no decay.
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    if x > 700.0 {
        return 0.0;
    }
    let t = x * core::f64::consts::LOG2_E;
    // floor(t) by truncation (t is in [0, 1010)): `f64::floor` is a libm
    // call on baseline x86-64 (the module carried compiler-builtins'
    // `floor` for it).
    let n = t as u64;
    let y = (t - n as f64) * core::f64::consts::LN_2;
    let p = 1.0
        - y * (1.0
            - y / 2.0
                * (1.0
                    - y / 3.0
                        * (1.0 - y / 4.0 * (1.0 - y / 5.0 * (1.0 - y / 6.0 * (1.0 - y / 7.0))))));
    // 2^-n as an f64: exponent field 1023 - n, n <= 1010 here.
    p * f64::from_bits((1023 - n) << 52)
}

/// The estimate of `s` at `now`, decayed since its last update; 0.0 when
/// unknown.
#[inline]
pub fn estimate(s: &PeerState, now: u64, decay_ms: u32) -> f64 {
    let e = f64::from_bits(s.ewma_bits.load(Relaxed));
    if e == 0.0 {
        return 0.0;
    }
    let dt = now.saturating_sub(s.ewma_stamp_ms.load(Relaxed));
    if dt == 0 {
        // Updated this millisecond (common under load): nothing to decay.
        return e;
    }
    (e * exp_neg(dt as f64 / f64::from(decay_ms.max(1)))).max(FLOOR_MS)
}

/// Records a successful try's latency.
pub fn observe(s: &PeerState, rtt_ms: u64, now: u64, decay_ms: u32) {
    let rtt = (rtt_ms as f64).max(FLOOR_MS);
    let prev = f64::from_bits(s.ewma_bits.load(Relaxed));
    let next = if prev == 0.0 || rtt >= prev {
        rtt
    } else {
        let dt = now.saturating_sub(s.ewma_stamp_ms.load(Relaxed)) as f64;
        let w = exp_neg(dt / f64::from(decay_ms.max(1)));
        (prev * w + rtt * (1.0 - w)).max(FLOOR_MS)
    };
    s.ewma_bits.store(next.to_bits(), Relaxed);
    s.ewma_stamp_ms.store(now, Relaxed);
}

/// Drops the estimate: the peer starts neutral again.
pub fn forget(s: &PeerState) {
    s.ewma_bits.store(0, Relaxed);
}

/// Picks by peak-EWMA cost among two random candidates.
pub fn pick(
    t: &Table<'_>,
    attempt: &mut Attempt<'_>,
    now: u64,
    mode: Mode,
    decay_ms: u32,
) -> Option<usize> {
    let states = t.states();
    super::p2c::pick_two(t, attempt, now, mode, |a, b| {
        let (mut ea, mut eb) = (
            estimate(&states[a], now, decay_ms),
            estimate(&states[b], now, decay_ms),
        );
        if ea == 0.0 {
            ea = if eb == 0.0 { 1.0 } else { eb };
        }
        if eb == 0.0 {
            eb = ea;
        }
        // Weight is already in the draw (see the module note): not here.
        let na = f64::from(states[a].in_flight.load(Relaxed)) + 1.0;
        let nb = f64::from(states[b].in_flight.load(Relaxed)) + 1.0;
        ea * na <= eb * nb
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::tests::{table, IDS};
    use crate::request::Outcome;
    use crate::spec::{PeerSpec, Policy};
    use crate::testing::OwnedAttempt;

    #[test]
    fn exp_neg_is_accurate() {
        let mut x = 0.0f64;
        while x < 60.0 {
            let (got, want) = (exp_neg(x), (-x).exp());
            assert!(((got - want) / want).abs() < 2e-5, "x={x}: {got} vs {want}");
            x += 0.0137;
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-1.0), 1.0);
        assert_eq!(exp_neg(f64::NAN), 1.0);
        assert_eq!(exp_neg(1e9), 0.0);
    }

    #[test]
    fn peak_then_decay() {
        let t = table(
            Policy::Ewma { decay_ms: 1000 },
            &[PeerSpec::new(IDS[0]), PeerSpec::new(IDS[1])],
        );
        let s = &t.table().states()[0];
        assert_eq!(estimate(s, 0, 1000), 0.0);
        observe(s, 10, 1000, 1000);
        assert_eq!(estimate(s, 1000, 1000), 10.0);
        observe(s, 100, 1001, 1000);
        assert!(
            (estimate(s, 1001, 1000) - 100.0).abs() < 1e-9,
            "peak taken at once"
        );
        // Fast samples pull it down gradually.
        observe(s, 10, 2001, 1000);
        let e = estimate(s, 2001, 1000);
        assert!(e > 10.0 && e < 100.0, "{e}");
        forget(s);
        assert_eq!(estimate(s, 2001, 1000), 0.0);
    }

    /// Binomial band: `n` picks of a peer with share `p` fall within
    /// `n·p ± 5·sqrt(n·p·(1−p))` except with probability below 1e-6.
    fn assert_share(got: usize, n: usize, p: f64, what: &str) {
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        assert!(
            (got as f64 - mean).abs() <= 5.0 * sd,
            "{what}: {got} of {n}, want {mean:.0} ± {:.0} (5 sd)",
            5.0 * sd
        );
    }

    #[test]
    fn equal_latencies_follow_weights() {
        // Weights 5,1,1, nothing in flight, equal estimates (all unknown,
        // or all 10 ms): shares 5/7, 1/7, 1/7. n = 7000: 5000 ± 189 and
        // 1000 ± 146 (5 sd). Weight counted twice gave the weight-1 peers
        // 1/42 each (167 of 7000), far outside the band.
        for known in [false, true] {
            let peers = [
                PeerSpec::new(IDS[0]).weight(5),
                PeerSpec::new(IDS[1]),
                PeerSpec::new(IDS[2]),
            ];
            let t = table(Policy::Ewma { decay_ms: 2000 }, &peers);
            let now = 1000;
            if known {
                for s in t.table().states() {
                    observe(s, 10, now, 2000);
                }
            }
            let n = 7000;
            let mut counts = [0usize; 3];
            let mut a = OwnedAttempt::new(t.table(), now);
            for k in 0..n as u64 {
                let mut at = a.attempt();
                at.reset(now);
                at.seed(k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let p = t.table().get(&mut at, now).unwrap();
                counts[p.peer as usize] += 1;
                // Next: no latency sample, the estimates stay equal.
                t.table().free(&mut at, Outcome::Next, now).unwrap();
            }
            for (i, w) in [5.0, 1.0, 1.0].into_iter().enumerate() {
                let what = format!("known={known} peer {i} {counts:?}");
                assert_share(counts[i], n, w / 7.0, &what);
            }
        }
    }

    #[test]
    fn slow_peer_gets_less() {
        let peers = [
            PeerSpec::new(IDS[0]),
            PeerSpec::new(IDS[1]),
            PeerSpec::new(IDS[2]),
        ];
        let t = table(Policy::Ewma { decay_ms: 10_000 }, &peers);
        let mut counts = [0usize; 3];
        let mut a = OwnedAttempt::new(t.table(), 0);
        let mut now = 1000;
        for k in 0..3000u64 {
            let mut at = a.attempt();
            at.reset(now);
            at.seed(k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let p = t.table().get(&mut at, now).unwrap();
            counts[p.peer as usize] += 1;
            // Peer 0 answers in 50 ms, the others in 5 ms.
            now += if p.peer == 0 { 50 } else { 5 };
            t.table().free(&mut at, Outcome::Ok, now).unwrap();
        }
        assert!(
            counts[0] * 5 < counts[1] && counts[0] * 5 < counts[2],
            "{counts:?}"
        );
        assert!(counts[0] > 0, "the slow peer is still probed: {counts:?}");
    }
}
