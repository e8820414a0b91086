//! Smooth weighted round robin schedules
//!
//! nginx picks, at every request, the peer with the largest
//! `current_weight` after adding each peer's weight to it, then subtracts
//! the total weight from the winner (ties go to the earlier peer). With
//! fixed weights that sequence is periodic: after `total / gcd` picks every
//! current weight is back at zero. We run nginx's algorithm once, at
//! configuration time, and store one period; a shared atomic cursor then
//! walks it, which gives every worker nginx's exact sequence in O(1) per
//! pick and without a lock.
//!
//! Building costs O(period × distinct weights). Past [`EXACT_WORK_LIMIT`]
//! the builder switches to stride scheduling over a heap (O(period × log
//! peers)): the
//! same proportions and smoothness, not necessarily nginx's order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::error::Error;

/// Longest schedule (entries) one group of peers may have.
pub const MAX_PERIOD: u64 = 1 << 22;

/// Largest period × distinct weights product built with nginx's exact
/// algorithm.
pub const EXACT_WORK_LIMIT: u64 = 1 << 31;

/// Upper bound on schedule steps a pick walks before scanning the group.
#[inline]
pub(crate) fn walk_limit(group_len: usize, sched_len: usize) -> usize {
    sched_len.min(2 * group_len + 16)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Length of the schedule for `weights` (zero weights are left out).
pub fn period(weights: &[u32]) -> Result<usize, Error> {
    let mut g = 0u64;
    let mut total = 0u64;
    for &w in weights.iter().filter(|&&w| w > 0) {
        g = gcd(g, u64::from(w));
        total += u64::from(w);
    }
    if total == 0 {
        return Ok(0);
    }
    let len = total / g;
    if len > MAX_PERIOD {
        return Err(Error::TooLarge);
    }
    Ok(len as usize)
}

/// Writes one period of the smooth weighted round robin sequence over
/// `weights` into `out` (whose length must be [`period`]); entries are
/// indices into `weights`. Peers of weight 0 never appear.
pub fn build(weights: &[u32], out: &mut [u32]) -> Result<(), Error> {
    let len = period(weights)?;
    if out.len() != len {
        return Err(Error::InvalidArgument);
    }
    if len == 0 {
        return Ok(());
    }
    let g = weights
        .iter()
        .filter(|&&w| w > 0)
        .fold(0u64, |g, &w| gcd(g, u64::from(w)));
    let reduced: Vec<i64> = weights.iter().map(|&w| (u64::from(w) / g) as i64).collect();
    let mut distinct: Vec<i64> = reduced.iter().copied().filter(|&w| w > 0).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if (len as u64).saturating_mul(distinct.len() as u64) <= EXACT_WORK_LIMIT {
        build_exact(&reduced, out);
    } else {
        build_stride(&reduced, out);
    }
    Ok(())
}

/// nginx's `ngx_http_upstream_get_peer`, with every peer eligible, by
/// weight class.
///
/// Before the subtraction at step `k` (from 1), peer `i`'s current weight
/// is `k × w_i − total × picks_i`; nginx takes the largest, the lowest index
/// on ties. Peers of equal weight differ only by their pick counts, so
/// within a class the next winner is the member with the fewest picks and
/// the lowest index: the class is served in index order, cyclically. Each
/// step therefore compares one candidate per distinct weight: O(period ×
/// classes) instead of O(period × peers), with the same sequence.
fn build_exact(weights: &[i64], out: &mut [u32]) {
    let total: i64 = weights.iter().filter(|&&w| w > 0).sum();
    let mut by_weight: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for (i, &w) in weights.iter().enumerate().filter(|(_, &w)| w > 0) {
        by_weight.entry(w).or_default().push(i as u32);
    }
    // (weight, members in index order, picks so far)
    let mut classes: Vec<(i64, Vec<u32>, u64)> =
        by_weight.into_iter().map(|(w, m)| (w, m, 0)).collect();
    for (k, slot) in out.iter_mut().enumerate() {
        let step = k as i64 + 1;
        let mut best: Option<(i64, u32, usize)> = None;
        for (c, (w, members, picks)) in classes.iter().enumerate() {
            let len = members.len() as u64;
            let candidate = members[(*picks % len) as usize];
            let value = step * w - total * (*picks / len) as i64;
            let better = match best {
                None => true,
                Some((v, idx, _)) => value > v || (value == v && candidate < idx),
            };
            if better {
                best = Some((value, candidate, c));
            }
        }
        let Some((_, idx, c)) = best else {
            return;
        };
        classes[c].2 += 1;
        *slot = idx;
    }
}

/// Stride scheduling: each peer's next virtual finish time is
/// `(picks + 1) / weight`; the earliest goes next, ties to the lower index.
fn build_stride(weights: &[i64], out: &mut [u32]) {
    // Compare (picks+1)/w exactly as fractions scaled to a common base:
    // key = (picks+1) * (L / w) where L is the period (a multiple of every
    // reduced weight's contribution is not guaranteed, so use u128 cross
    // multiplication through a wrapper).
    #[derive(PartialEq, Eq)]
    struct Due {
        num: u64,
        den: u64,
        idx: u32,
    }
    impl Ord for Due {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            let a = u128::from(self.num) * u128::from(other.den);
            let b = u128::from(other.num) * u128::from(self.den);
            a.cmp(&b).then(self.idx.cmp(&other.idx))
        }
    }
    impl PartialOrd for Due {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    let mut heap: BinaryHeap<Reverse<Due>> = weights
        .iter()
        .enumerate()
        .filter(|(_, &w)| w > 0)
        .map(|(i, &w)| {
            Reverse(Due {
                num: 1,
                den: w as u64,
                idx: i as u32,
            })
        })
        .collect();
    for slot in out.iter_mut() {
        let Some(Reverse(mut due)) = heap.pop() else {
            return;
        };
        *slot = due.idx;
        due.num += 1;
        heap.push(Reverse(due));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schedule_room=` may ask for the longest schedule, no longer.
    #[test]
    fn the_largest_room_is_the_longest_schedule() {
        assert_eq!(u64::from(crate::spec::MAX_SCHEDULE_ROOM), MAX_PERIOD);
    }

    fn names(weights: &[u32]) -> String {
        let mut out = vec![0; period(weights).unwrap()];
        build(weights, &mut out).unwrap();
        out.iter().map(|&i| (b'a' + i as u8) as char).collect()
    }

    #[test]
    fn nginx_sequences() {
        // Sequences as nginx's ngx_http_upstream_get_peer produces them.
        let cases: &[(&[u32], &str)] = &[
            (&[5, 1, 1], "aabacaa"),
            (&[1, 1, 1], "abc"),
            (&[2, 1], "aba"),
            (&[3, 2], "ababa"),
            (&[4, 2, 2], "abca"),
            (&[1, 0, 1], "ac"),
            (&[10, 10], "ab"),
        ];
        for (w, want) in cases {
            assert_eq!(names(w), *want, "weights {w:?}");
        }
    }

    /// nginx's loop, literally: the oracle for the class-based builder.
    fn nginx_naive(weights: &[i64], len: usize) -> Vec<u32> {
        let total: i64 = weights.iter().filter(|&&w| w > 0).sum();
        let mut current = vec![0i64; weights.len()];
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                current[i] += w;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            current[b] -= total;
            out.push(b as u32);
        }
        out
    }

    #[test]
    fn class_builder_equals_nginx_loop() {
        let mut x = 0x853c_49e6_748f_ea9bu64;
        for case in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = 1 + (x % 12) as usize;
            let weights: Vec<u32> = (0..n)
                .map(|i| ((x >> (i * 5)) % if case % 3 == 0 { 3 } else { 7 }) as u32)
                .collect();
            let len = period(&weights).unwrap();
            let mut got = vec![0; len];
            build(&weights, &mut got).unwrap();
            let g = weights
                .iter()
                .filter(|&&w| w > 0)
                .fold(0u64, |g, &w| gcd(g, u64::from(w)))
                .max(1);
            let reduced: Vec<i64> = weights.iter().map(|&w| (u64::from(w) / g) as i64).collect();
            assert_eq!(got, nginx_naive(&reduced, len), "weights {weights:?}");
            // And over a second period too: nginx's sequence is periodic.
            let full: Vec<i64> = weights.iter().map(|&w| i64::from(w)).collect();
            let twice = nginx_naive(&full, 2 * len);
            assert_eq!(&twice[..len], &twice[len..], "weights {weights:?}");
            assert_eq!(got, twice[..len], "weights {weights:?}");
        }
    }

    #[test]
    fn counts_match_weights() {
        let w = [7u32, 3, 5, 1, 9];
        let mut out = vec![0; period(&w).unwrap()];
        build(&w, &mut out).unwrap();
        for (i, &wi) in w.iter().enumerate() {
            assert_eq!(out.iter().filter(|&&x| x == i as u32).count(), wi as usize);
        }
    }

    #[test]
    fn stride_has_exact_proportions() {
        let w = [7i64, 3, 5, 1, 9];
        let mut out = vec![0; 25];
        build_stride(&w, &mut out);
        for (i, &wi) in w.iter().enumerate() {
            assert_eq!(out.iter().filter(|&&x| x == i as u32).count(), wi as usize);
        }
    }

    #[test]
    fn too_large_is_refused() {
        assert_eq!(period(&[1 << 23, 1]), Err(Error::TooLarge));
        assert_eq!(period(&[]), Ok(0));
        assert_eq!(period(&[0, 0]), Ok(0));
    }
}
