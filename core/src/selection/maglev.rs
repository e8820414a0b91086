//! Weighted Maglev consistent hashing
//!
//! Maglev (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016) fills a lookup table of prime size `M` with
//! peer indices; a key goes to `table[key_hash % M]`. Each peer walks its own
//! permutation of the slots, `(offset + j * skip) % M`, claiming the first
//! free slot on each of its turns. Since `M` is prime and `1 <= skip < M`,
//! every permutation visits every slot, so a turn always finds a free slot
//! while one is left.
//!
//! # Names
//!
//! `offset = h1(name) % M` and `skip = h2(name) % (M - 1) + 1`, where `h1`
//! and `h2` are 64-bit FNV-1a of the name with two different offset bases,
//! each passed through the SplitMix64 finalizer. Both are pure byte
//! arithmetic, so a table is identical across builds and platforms.
//!
//! # Weights
//!
//! As in Envoy: in round `r = 1, 2, ...` every peer earns
//! `weight / max_weight` of a turn and takes one turn per whole unit
//! earned, so peer `i` takes its `k`-th turn in round
//! `ceil(k * max_weight / weight_i)`; within a round, turns go in peer
//! order. The heaviest peers take a turn every round. Peers of weight 0 get
//! no entries. Turns are drawn from a heap keyed by (round, peer), so
//! building costs `O(M log n)` for the turns plus the permutation walks,
//! `O(M log M)` expected as in the paper (each walk is at most `M` steps).
//!
//! # Table size
//!
//! [`table_size`] is the smallest prime `>= max(100 * n, 257)`. Turn-taking
//! hands out entries in exact proportion up to one entry, so with at least
//! 100 slots per peer a peer's share is within about 1% (relative) of its
//! weight's share. Disruption also shrinks as `M / n` grows: at 100 slots
//! per peer, removing one of 10 peers moves its own tenth of the keys plus
//! about 2-4% of the others' (about 0.7% at 1,000 slots per peer). Keep `M`
//! fixed when peers go away (give them weight 0) so the remaining
//! permutations, and hence most entries, are unchanged.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Fewest table slots per peer.
pub const SLOTS_PER_PEER: usize = 100;

/// Smallest table size.
pub const MIN_TABLE_SIZE: usize = 257;

/// Peer count above which [`table_size`] stops growing, so that the table
/// size fits in a `u32` (the largest size is just above 4,000,000,000).
pub const MAX_PEERS: usize = 40_000_000;

/// Entry value meaning "no peer": a table whose peers all have weight 0,
/// or a lookup in an empty table.
pub const NO_PEER: u32 = u32::MAX;

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;
const SEED_OFFSET: u64 = 0x6D61_676C_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x6D61_676C_6576_3032; // "maglev02"

fn fnv1a64(basis: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(basis, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The SplitMix64 output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `(h1, h2)` of a peer name.
fn name_hashes(name: &[u8]) -> (u64, u64) {
    (
        mix(fnv1a64(FNV_OFFSET ^ SEED_OFFSET, name)),
        mix(fnv1a64(FNV_OFFSET ^ SEED_SKIP, name)),
    )
}

fn is_prime(m: usize) -> bool {
    if m < 4 {
        return m >= 2;
    }
    if m % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d * d <= m {
        if m % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Table size for `n_peers` peers: the smallest prime
/// `>= max(100 * n_peers, 257)`, with `n_peers` capped at [`MAX_PEERS`].
pub fn table_size(n_peers: usize) -> usize {
    let mut m = (n_peers.min(MAX_PEERS) * SLOTS_PER_PEER).max(MIN_TABLE_SIZE);
    while !is_prime(m) {
        m += 1;
    }
    m
}

/// Fills `out` with peer indices (positions in `names`), peer `i` getting a
/// share of about `weights[i] / sum(weights)`. Every entry is filled unless
/// all weights are 0, in which case every entry is [`NO_PEER`].
///
/// `out.len()` is normally [`table_size`]`(names.len())`; any prime works,
/// and keeping it while peers come and go keeps disruption minimal.
///
/// # Panics
///
/// If `names` and `weights` differ in length, if there are `u32::MAX` names
/// or more, or if `out.len()` is not prime.
pub fn build(names: &[&[u8]], weights: &[u32], out: &mut [u32]) {
    assert_eq!(names.len(), weights.len(), "one weight per name");
    assert!(names.len() < NO_PEER as usize, "too many peers");
    let m = out.len();
    assert!(is_prime(m), "table size {m} is not prime");
    out.fill(NO_PEER);

    let max = u64::from(weights.iter().copied().max().unwrap_or(0));
    if max == 0 {
        return;
    }
    let m64 = m as u64;
    // Per peer: next slot of its permutation, skip, and turns taken.
    let mut walk: Vec<(u64, u64, u64)> = names
        .iter()
        .map(|name| {
            let (h1, h2) = name_hashes(name);
            (h1 % m64, h2 % (m64 - 1) + 1, 0)
        })
        .collect();
    // Round of the k-th turn (k >= 1) of a peer of weight w.
    let round = |k: u64, w: u32| (k * max).div_ceil(u64::from(w));
    let mut turns: BinaryHeap<Reverse<(u64, u32)>> = weights
        .iter()
        .enumerate()
        .filter(|&(_, &w)| w > 0)
        .map(|(i, &w)| Reverse((round(1, w), i as u32)))
        .collect();

    for filled in 1..=m {
        let Some(Reverse((_, peer))) = turns.pop() else {
            unreachable!("a peer has positive weight");
        };
        let (pos, skip, taken) = &mut walk[peer as usize];
        // A full cycle over the slots: ends while any slot is free.
        while out[*pos as usize] != NO_PEER {
            *pos = (*pos + *skip) % m64;
        }
        out[*pos as usize] = peer;
        *pos = (*pos + *skip) % m64;
        *taken += 1;
        if filled < m {
            turns.push(Reverse((round(*taken + 1, weights[peer as usize]), peer)));
        }
    }
}

/// The peer for a key hash: `table[key_hash % table.len()]`; [`NO_PEER`]
/// for an empty table.
pub fn lookup(table: &[u32], key_hash: u64) -> u32 {
    if table.is_empty() {
        return NO_PEER;
    }
    table[(key_hash % table.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn table(names: &[String], weights: &[u32], m: usize) -> Vec<u32> {
        let names: Vec<&[u8]> = names.iter().map(|s| s.as_bytes()).collect();
        let mut out = vec![0; m];
        build(&names, weights, &mut out);
        out
    }

    fn counts(t: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &p in t {
            c[p as usize] += 1;
        }
        c
    }

    #[test]
    fn table_sizes() {
        let cases: &[(usize, usize)] = &[
            (0, 257),
            (1, 257),
            (2, 257),
            (3, 307),
            (10, 1009),
            (100, 10_007),
            (1000, 100_003),
            (10_000, 1_000_003),
        ];
        for &(n, m) in cases {
            assert_eq!(table_size(n), m, "{n} peers");
        }
        let top = table_size(usize::MAX);
        assert_eq!(top, table_size(MAX_PEERS));
        assert!(u32::try_from(top).is_ok() && is_prime(top));
    }

    #[test]
    fn name_hashes_are_pinned() {
        // FNV-1a 64 with offset basis 0xcbf29ce484222325 ^ seed, then the
        // SplitMix64 finalizer (computed independently in Python).
        let cases: &[(&[u8], u64, u64)] = &[
            (b"", 0x44D9_6FB2_EFC8_0DBE, 0x9EC8_335C_FEA3_FBFD),
            (b"10.0.0.1:80", 0xC99E_EB80_80F6_B8A8, 0x1D55_96D0_3526_3F7A),
        ];
        for &(name, h1, h2) in cases {
            assert_eq!(name_hashes(name), (h1, h2), "{:?}", name);
        }
    }

    #[test]
    fn every_entry_filled_and_weight_zero_gets_none() {
        let cases: &[&[u32]] = &[
            &[1],
            &[1, 1, 1],
            &[5, 1, 1],
            &[0, 3, 0, 1],
            &[1_000_000, 1, 1],
            &[u32::MAX, 7, u32::MAX],
        ];
        for &weights in cases {
            let n = weights.len();
            let t = table(&names(n), weights, table_size(n));
            assert!(t.iter().all(|&p| (p as usize) < n), "{weights:?}");
            for (i, c) in counts(&t, n).into_iter().enumerate() {
                if weights[i] == 0 {
                    assert_eq!(c, 0, "{weights:?} peer {i}");
                }
            }
        }
    }

    #[test]
    fn no_weight_no_peer() {
        let cases: &[&[u32]] = &[&[], &[0], &[0, 0, 0]];
        for &weights in cases {
            let t = table(&names(weights.len()), weights, 257);
            assert!(t.iter().all(|&p| p == NO_PEER), "{weights:?}");
        }
        assert_eq!(lookup(&[], 5), NO_PEER);
    }

    #[test]
    fn shares_follow_weights() {
        let cases: &[&[u32]] = &[&[1, 1, 1], &[5, 1, 1], &[3, 1, 2, 4], &[1; 10]];
        for &weights in cases {
            let n = weights.len();
            let m = table_size(n);
            let total: u32 = weights.iter().sum();
            let c = counts(&table(&names(n), weights, m), n);
            for i in 0..n {
                let got = c[i] as f64 / m as f64;
                let want = f64::from(weights[i]) / f64::from(total);
                assert!(
                    (got - want).abs() <= 0.02,
                    "{weights:?} peer {i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn deterministic() {
        let n = names(7);
        let w = [1, 2, 3, 1, 2, 3, 1];
        assert_eq!(table(&n, &w, 701), table(&n, &w, 701));
    }

    #[test]
    fn removing_a_peer_moves_about_one_nth() {
        // Measured at M = 1009: 9.9% to 13.9% of entries move in all, of
        // which 2.0% to 3.9% (mean 2.8%) belonged to surviving peers.
        const N: usize = 10;
        let all = names(N);
        let m = table_size(N);
        let before = table(&all, &[1; N], m);
        let mut stray_sum = 0.0;
        for removed in 0..N {
            // Same size, removed peer at weight 0, and removed from the
            // name list altogether (indices shift): the same table.
            let mut w = [1; N];
            w[removed] = 0;
            let zeroed = table(&all, &w, m);
            let mut rest = all.clone();
            rest.remove(removed);
            let shifted: Vec<u32> = table(&rest, &[1; N - 1], m)
                .into_iter()
                .map(|p| if p as usize >= removed { p + 1 } else { p })
                .collect();
            assert_eq!(zeroed, shifted);

            let moved = before.iter().zip(&zeroed).filter(|(a, b)| a != b).count();
            let survivors = before
                .iter()
                .zip(&zeroed)
                .filter(|&(&a, &b)| a != b && a as usize != removed)
                .count();
            let frac = moved as f64 / m as f64;
            let stray = survivors as f64 / m as f64;
            assert!(frac <= 1.5 / N as f64, "removed {removed}: moved {frac}");
            assert!(stray < 0.05, "removed {removed}: survivors moved {stray}");
            stray_sum += stray;
        }
        let mean = stray_sum / N as f64;
        assert!(mean < 0.035, "survivors moved {mean} on average");
    }

    #[test]
    fn lookup_wraps() {
        let t = [4, 5, 6];
        let cases: &[(u64, u32)] = &[(0, 4), (1, 5), (2, 6), (3, 4), (u64::MAX, 4)];
        for &(h, p) in cases {
            assert_eq!(lookup(&t, h), p, "hash {h}");
        }
    }
}
