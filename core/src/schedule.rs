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
//! Building costs O(period × peers). Past [`EXACT_WORK_LIMIT`] the builder
//! switches to stride scheduling over a heap (O(period × log peers)): the
//! same proportions and smoothness, not necessarily nginx's order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::error::Error;

/// Longest schedule (entries) one group of peers may have.
pub const MAX_PERIOD: u64 = 1 << 22;

/// Largest period × peers product built with nginx's exact algorithm.
pub const EXACT_WORK_LIMIT: u64 = 1 << 31;

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
    let live = reduced.iter().filter(|&&w| w > 0).count() as u64;
    if (len as u64).saturating_mul(live) <= EXACT_WORK_LIMIT {
        build_exact(&reduced, out);
    } else {
        build_stride(&reduced, out);
    }
    Ok(())
}

/// nginx's `ngx_http_upstream_get_peer`, with every peer eligible.
fn build_exact(weights: &[i64], out: &mut [u32]) {
    let live: Vec<(u32, i64)> = weights
        .iter()
        .enumerate()
        .filter(|(_, &w)| w > 0)
        .map(|(i, &w)| (i as u32, w))
        .collect();
    let total: i64 = live.iter().map(|&(_, w)| w).sum();
    let mut current = vec![0i64; live.len()];
    for slot in out.iter_mut() {
        let mut best = 0;
        for (k, &(_, w)) in live.iter().enumerate() {
            current[k] += w;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        *slot = live[best].0;
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
