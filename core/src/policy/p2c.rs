//! Power of two choices
//!
//! Two distinct weighted random draws among the eligible primaries not yet
//! tried; the one with fewer in-flight requests per weight (compared by
//! cross-multiplication, over the counts shared by all workers) wins, ties
//! to the first. Mitzenmacher's result: the maximum load drops from
//! O(log n / log log n) to O(log log n) with two choices instead of one,
//! at O(1) cost per pick. [`pick_two`] is shared with peak-EWMA, which only
//! changes the comparison.

use core::sync::atomic::Ordering::Relaxed;

use crate::algo::alias;
use crate::attempt::Attempt;
use crate::health::{self, Eligibility, Mode};
use crate::layout::{Table, PRIMARY};

use super::random::DRAWS;

/// Picks by in-flight / weight.
pub fn pick(t: &Table<'_>, attempt: &mut Attempt<'_>, now: u64, mode: Mode) -> Option<usize> {
    let states = t.states();
    pick_two(t, attempt, now, mode, |a, b| {
        let (ca, wa) = (
            u64::from(states[a].in_flight.load(Relaxed)),
            u64::from(states[a].weight()),
        );
        let (cb, wb) = (
            u64::from(states[b].in_flight.load(Relaxed)),
            u64::from(states[b].weight()),
        );
        ca * wb <= cb * wa
    })
}

/// Draws two distinct candidates, keeps the first unless `first_wins(a,
/// b)` is false, and acquires it; retries a few times if another worker
/// got there first, then scans.
pub fn pick_two(
    t: &Table<'_>,
    attempt: &mut Attempt<'_>,
    now: u64,
    mode: Mode,
    first_wins: impl Fn(usize, usize) -> bool,
) -> Option<usize> {
    let (table, states) = (t.alias(), t.states());
    if table.is_empty() {
        return None;
    }
    let usable = |i: usize, attempt: &Attempt<'_>| {
        !attempt.tried(i) && health::eligibility(&states[i], now, mode) != Eligibility::No
    };
    for _ in 0..4 {
        let mut first = None;
        let mut second = None;
        for _ in 0..DRAWS {
            let i = alias::draw(table, attempt.random());
            if first == Some(i) || !usable(i, attempt) {
                continue;
            }
            if first.is_none() {
                first = Some(i);
            } else {
                second = Some(i);
                break;
            }
        }
        let chosen = match (first, second) {
            (Some(a), Some(b)) => {
                if first_wins(a, b) {
                    a
                } else {
                    b
                }
            }
            (Some(a), None) => a,
            _ => break,
        };
        if health::acquire_in(t, states, chosen, now, mode) {
            return Some(chosen);
        }
    }
    let start = attempt.random() as usize;
    t.scan_acquire(PRIMARY, attempt, now, mode, start)
}

#[cfg(test)]
mod tests {
    use crate::request::tests::{table, IDS};
    use crate::request::Outcome;
    use crate::spec::{PeerSpec, Policy};
    use crate::testing::OwnedAttempt;

    #[test]
    fn loaded_peer_gets_less() {
        let peers = [
            PeerSpec::new(IDS[0]),
            PeerSpec::new(IDS[1]),
            PeerSpec::new(IDS[2]),
        ];
        let t = table(Policy::P2c, &peers);
        // Peer 0 holds 5 requests open.
        t.table().states()[0]
            .in_flight
            .store(5, core::sync::atomic::Ordering::Relaxed);
        let mut counts = [0usize; 3];
        let mut a = OwnedAttempt::new(t.table(), 0);
        for k in 0..3000u64 {
            let mut at = a.attempt();
            at.reset(0);
            at.seed(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let p = t.table().get(&mut at, 0).unwrap();
            counts[p.peer as usize] += 1;
            t.table().free(&mut at, Outcome::Ok, 0).unwrap();
        }
        // Peer 0 only wins when both draws are peer 0's... never: draws
        // are distinct, and it always loses against an idle peer.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1200 && counts[2] > 1200, "{counts:?}");
    }
}
