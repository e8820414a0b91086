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
//! The size does not depend on the peer count, so that removing a peer
//! leaves every other peer's permutation, and hence most entries, as they
//! were: [`table_size`] is [`DEFAULT_TABLE_SIZE`] (65,537, as Envoy) unless
//! configured (`table_size=`, a prime in [`MIN_TABLE_SIZE`,
//! `MAX_TABLE_SIZE`] and at least the number of peers). Turn-taking hands
//! out entries in exact proportion up to one entry, so with `M / n` slots
//! per peer a peer's share is within about `n / M` (relative) of its
//! weight's share: 1% at 100 slots per peer.
//!
//! The default stays 65,537 up to 65,537 peers (a table needs at least one
//! entry per peer), as Envoy's does; only larger upstreams climb a fixed
//! ladder, [`LADDER`], roughly ×10 per rung, taking the first rung with an
//! entry per peer. Fewer slots per peer mean less even shares (about
//! `n / M` relative: 1.5% at 1,000 peers, 15% at 10,000); `table_size=`
//! buys evenness with build time, which grows with `M` (10,000 peers:
//! milliseconds at 65,537 entries, seconds at 6,553,733 — a rebuild runs
//! in the worker that serves a weight change, so the default keeps it
//! short).
//!
//! Disruption: removing one of `n` peers moves that peer's own `1/n` of
//! the keys plus a small fraction of the others', which shrinks as `M / n`
//! grows (`tests::removal_moves_few_other_keys`, at 65,537 entries: at
//! most 0.14% of the other keys for 6 peers, 0.53% to 0.61% for 100).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Default table size (Envoy's): a prime, 2^16 + 1.
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

/// Default sizes by peer count: the first rung with at least one slot per
/// peer, else the last. All prime.
pub const LADDER: [usize; 4] = [DEFAULT_TABLE_SIZE, 655_373, 6_553_733, 65_537_011];

/// Smallest configurable table size.
pub const MIN_TABLE_SIZE: usize = 257;

/// Largest configurable table size (the top rung: 256 MiB of entries).
pub const MAX_TABLE_SIZE: usize = LADDER[3];

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

/// Whether `m` may be configured as a table size: a prime in
/// [`MIN_TABLE_SIZE`, `MAX_TABLE_SIZE`]. (It must also be at least the
/// number of peers: see [`table_size`].)
pub fn valid_table_size(m: usize) -> bool {
    (MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&m) && is_prime(m)
}

/// Table size for `n_peers` peers: `configured` unless it is 0, else the
/// first [`LADDER`] rung with at least one slot per peer (65,537 up to
/// 65,537 peers), else the top rung. The result is independent of
/// `n_peers` except across the ladder's thresholds. `configured` is
/// checked by the caller ([`valid_table_size`], and `>= n_peers`).
pub fn table_size(n_peers: usize, configured: u32) -> usize {
    if configured != 0 {
        return configured as usize;
    }
    let want = n_peers;
    LADDER
        .iter()
        .copied()
        .find(|&m| m >= want)
        .unwrap_or(MAX_TABLE_SIZE)
}

/// Fills `out` with peer indices (positions in `names`), peer `i` getting a
/// share of about `weights[i] / sum(weights)`. Every entry is filled unless
/// all weights are 0, in which case every entry is [`NO_PEER`].
///
/// `out.len()` is normally [`table_size`]; any prime works, and keeping it
/// while peers come and go keeps disruption minimal.
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
        let cases: &[(usize, u32, usize)] = &[
            (0, 0, 65_537),
            (1, 0, 65_537),
            (6, 0, 65_537),
            (100, 0, 65_537),
            (655, 0, 65_537),
            (10_000, 0, 65_537),
            (65_537, 0, 65_537),
            (65_538, 0, 655_373),
            (655_374, 0, 6_553_733),
            (6_553_734, 0, 65_537_011),
            (usize::MAX, 0, 65_537_011),
            (6, 257, 257),
            (6, 1009, 1009),
        ];
        for &(n, configured, m) in cases {
            assert_eq!(table_size(n, configured), m, "{n} peers, {configured}");
        }
        for m in LADDER {
            assert!(valid_table_size(m), "{m}");
        }
        let cases: &[(usize, bool)] = &[
            (0, false),
            (100, false),
            (251, false),
            (257, true),
            (1000, false),
            (1009, true),
            (65_536, false),
            (65_537, true),
            (65_537_011, true),
            (65_537_013, false),
            (100_000_007, false),
        ];
        for &(m, ok) in cases {
            assert_eq!(valid_table_size(m), ok, "{m}");
        }
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
            let t = table(&names(n), weights, table_size(n, 0));
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
            let m = table_size(n, 0);
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
        let m = 1009;
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

    /// Removing one of `n` equal peers at the default size: the fraction of
    /// all entries that moved although they did not belong to the removed
    /// peer, worst over every choice of removed peer.
    fn worst_stray(n: usize) -> f64 {
        let all = names(n);
        let m = table_size(n, 0);
        let before = table(&all, &vec![1; n], m);
        let mut worst = 0.0f64;
        for removed in 0..n {
            let mut rest = all.clone();
            rest.remove(removed);
            // The table as nginx builds it after the reload: n - 1 names,
            // same size (it does not depend on the count).
            assert_eq!(table_size(n - 1, 0), m);
            let after: Vec<u32> = table(&rest, &vec![1; n - 1], m)
                .into_iter()
                .map(|p| if p as usize >= removed { p + 1 } else { p })
                .collect();
            let mut kept = 0;
            let mut stray = 0;
            for (&a, &b) in before.iter().zip(&after) {
                if a as usize == removed {
                    assert_ne!(b as usize, removed);
                } else {
                    kept += 1;
                    stray += usize::from(a != b);
                }
            }
            worst = worst.max(stray as f64 / kept as f64);
        }
        worst
    }

    #[test]
    fn removal_moves_few_other_keys() {
        // Measured: 6 peers 0.14% at worst; 100 peers (every 10th removed,
        // to keep the debug build quick) 0.53% to 0.61%. The bounds leave
        // room for other names (the e2e test uses real addresses).
        let w6 = worst_stray(6);
        assert!(w6 < 0.01, "6 peers: {w6}");
        let n = 100;
        let all = names(n);
        let m = table_size(n, 0);
        let before = table(&all, &[1; 100], m);
        for removed in (0..n).step_by(10) {
            let mut rest = all.clone();
            rest.remove(removed);
            let after = table(&rest, &[1; 99], m);
            let (mut kept, mut stray) = (0, 0);
            for (&a, &b) in before.iter().zip(&after) {
                let b = if b as usize >= removed { b + 1 } else { b };
                if a as usize != removed {
                    kept += 1;
                    stray += usize::from(a != b);
                }
            }
            let frac = stray as f64 / kept as f64;
            assert!(frac < 0.02, "100 peers, removed {removed}: {frac}");
        }
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
