//! Key hashing: nginx's `hash`, nginx's `hash consistent` (ketama), Maglev,
//! and bounded load
//!
//! All three keep nginx's retry rules: a peer that is tried, down, failing
//! or full moves the request to the next candidate (plain: rehash with the
//! rehash count prefixed; ketama: the next point; Maglev: the next table
//! entry); after [`ketama::MAX_TRIES`] misses in one request, or with an
//! empty key or a single peer, the request falls back to round robin, as
//! nginx does. The walk state (tries, position) lives in the attempt, so
//! retries of a request continue where the previous try stopped.
//!
//! With `balance_factor=N` (consistent or maglev) a candidate is also
//! skipped while its in-flight count is at or above
//! `ceil(N/100 × (total in flight + 1) / live peers)`: consistent hashing
//! with bounded loads (Mirrokni, Thorup, Zadimoghaddam, 2018), over the
//! counts shared by all workers. The walk then goes on for up to one
//! candidate per live peer before falling back.

use core::sync::atomic::Ordering::Relaxed;

use super::frozen::{FrozenLens, Placement};
use crate::algo::crc32::crc32;
use crate::algo::ketama::{self, Point};
use crate::algo::maglev;
use crate::attempt::Attempt;
use crate::error::Error;
use crate::health::{self, Mode};
use crate::layout::{Table, PRIMARY, TOTAL};
use crate::spec::{identity_hash, HashMode, PeerSpec, Policy, UpstreamSpec};

/// Picks a primary for `key` and acquires it.
pub fn pick(
    t: &Table<'_>,
    attempt: &mut Attempt<'_>,
    key: &[u8],
    now: u64,
    how: Mode,
) -> Option<usize> {
    // Slow start would move keys: a returning server gets its keys back
    // at once (see health::slow_start).
    let how = how.with_ramp(false);
    let Policy::Hash {
        mode,
        balance_factor,
        ..
    } = t.policy()
    else {
        return None;
    };
    let (started, mut tries, mut pos) = attempt.hash_state();
    let primaries = t.primaries();
    let fallback = key.is_empty()
        || match mode {
            HashMode::Plain => primaries < 2,
            _ => how.single(),
        };
    let live = (t.header().live_primaries as usize).max(1);
    let limit = if balance_factor == 0 {
        ketama::MAX_TRIES
    } else {
        ketama::MAX_TRIES.max(live as u32 + 1)
    };
    if fallback || tries > limit {
        return super::round_robin::pick(t, PRIMARY, attempt, now, how);
    }
    let capacity = (balance_factor != 0).then(|| {
        let total = u64::from(crate::layout::flight::count(
            t.cursor(TOTAL).value.load(Relaxed),
        ));
        (u64::from(balance_factor) * (total + 1)).div_ceil(100 * live as u64)
    });
    if !started {
        pos = match mode {
            HashMode::Plain => 0,
            HashMode::Consistent => ketama::find(t.ring(), crc32(key)) as u64,
            HashMode::Maglev => u64::from(crc32(key)),
        };
    }
    let found = loop {
        let candidate = match mode {
            HashMode::Plain => {
                // pos: previous hash (low half), rehash count (high half).
                let (prev, rehash) = (pos as u32, (pos >> 32) as u32);
                let h = ketama::plain_hash_step(key, rehash, prev);
                pos = u64::from(h) | (u64::from(rehash.wrapping_add(1)) << 32);
                Some(plain_peer(t, h))
            }
            HashMode::Consistent => {
                let ring = t.ring();
                if ring.is_empty() {
                    None
                } else {
                    Some(ketama::server_at(ring, pos as usize) as usize)
                }
            }
            HashMode::Maglev => {
                let table = t.maglev();
                if table.is_empty() {
                    None
                } else {
                    Some(table[(pos % table.len() as u64) as usize] as usize)
                }
            }
        };
        if let Some(i) = candidate.and_then(|c| claim(t, attempt, c, mode, capacity, now, how)) {
            break Some(i);
        }
        if mode != HashMode::Plain {
            pos = pos.wrapping_add(1);
        }
        tries += 1;
        if tries > limit {
            break None;
        }
    };
    attempt.set_hash_state(tries, pos);
    found.or_else(|| super::round_robin::pick(t, PRIMARY, attempt, now, how))
}

/// nginx's plain hash: the peer where `hash % total weight` falls, walking
/// the primaries (down ones included) by weight; when all have the same
/// weight, the same peer by one division.
fn plain_peer(t: &Table<'_>, hash: u32) -> usize {
    let header = t.header();
    let mut w = u64::from(hash) % header.total_weight.max(1);
    let members = t.group(PRIMARY);
    if header.uniform_weight != 0 {
        let k = (w / u64::from(header.uniform_weight)) as usize;
        return members.get(k.min(members.len().saturating_sub(1)));
    }
    // The walk in generation order (nginx's), then the slot of where it
    // stopped.
    let confs = &t.confs()[..t.primaries()];
    let mut k = 0;
    for (j, c) in confs.iter().enumerate() {
        if w < u64::from(c.weight) {
            k = j;
            break;
        }
        w -= u64::from(c.weight);
    }
    members.get(k)
}

/// Acquires `first` or, for consistent hashing, another peer with the same
/// server string (a name that resolved to several addresses).
fn claim(
    t: &Table<'_>,
    attempt: &Attempt<'_>,
    first: usize,
    mode: HashMode,
    capacity: Option<u64>,
    now: u64,
    how: Mode,
) -> Option<usize> {
    let (states, chain) = (t.states(), t.chain());
    let mut i = first;
    if i >= states.len() {
        // Maglev's empty entry (no primary).
        return None;
    }
    for _ in 0..t.peers() {
        let under = capacity.is_none_or(|cap| u64::from(states[i].in_flight.load(Relaxed)) < cap);
        if !attempt.tried(i) && under && health::acquire_in(t, states, i, now, how) {
            return Some(i);
        }
        if mode != HashMode::Consistent {
            return None;
        }
        match chain.get(i) {
            Some(&next) if next != u32::MAX => i = next as usize,
            _ => return None,
        }
    }
    None
}

/// The lengths of `hash`'s sections in `lens` for a slot space of
/// `space`: chains over the slots, and the ring (consistent) or the Maglev
/// table.
pub(crate) fn frozen_lens(
    spec: &UpstreamSpec<'_>,
    space: usize,
    lens: &mut FrozenLens,
) -> Result<(), Error> {
    let Policy::Hash {
        mode, maglev_size, ..
    } = spec.policy
    else {
        return Ok(());
    };
    if maglev_size != 0 && (maglev_size as usize) < space {
        // Every slot may become a primary: the table must have room for
        // each.
        return Err(Error::InvalidArgument);
    }
    lens.chain = space;
    match mode {
        HashMode::Plain => {}
        HashMode::Consistent => {
            let weights = ring_weights(spec).ok_or(Error::TooLarge)?;
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            lens.ring = (total * u64::from(ketama::POINTS_PER_WEIGHT)) as usize;
        }
        HashMode::Maglev => lens.maglev = maglev::table_size(space, maglev_size),
    }
    Ok(())
}

/// [`ketama::ring_weights`] of the peers' weights in force.
pub(crate) fn ring_weights(spec: &UpstreamSpec<'_>) -> Option<Vec<u32>> {
    let weights: Vec<u32> = spec.peers.iter().map(|p| p.weight).collect();
    ketama::ring_weights(&weights)
}

/// The ketama ring and its shadow of a generation (`cap` points in all),
/// over the slot space (a slot that is no member weighs 0), so that its
/// points name slots and the ring of the next membership can be rebuilt
/// from this one: from `prev`, the serving generation of the same zone,
/// when it has a ring over the same slots (only the slots whose weight or
/// identity changed are regenerated). Build-time work that allocates
/// (process-local), before the generation's bytes are written.
pub(crate) fn ring(
    spec: &UpstreamSpec<'_>,
    at: &Placement<'_>,
    prev: Option<Table<'_>>,
    cap: usize,
) -> Result<(Vec<Point>, Vec<Point>), Error> {
    if cap == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    // The weights the ring is built with: nginx's, or scaled down above
    // nginx's ring size (ketama::ring_weights).
    let weights = ring_weights(spec).ok_or(Error::TooLarge)?;
    let mut servers: Vec<(&[u8], u32)> = vec![(&[], 0); at.space];
    let mut ids = vec![0u64; at.space];
    for (k, p) in spec.peers.iter().enumerate() {
        servers[at.slot(k)] = (at.key(k, p), weights[k]);
        ids[at.slot(k)] = identity_hash(p.id);
    }
    let (ring, shadow) =
        match prev.filter(|t| t.header().ring_len > 0 && t.header().slots as usize == at.space) {
            Some(t) => {
                // What the previous generation had in each slot: (ring
                // weight, identity); any difference regenerates the slot's
                // points. Ring weights as that ring was built: scaled, when
                // one weight moves all may.
                let old_weights: Vec<u32> = t.confs().iter().map(|c| c.weight).collect();
                let old_weights = ketama::ring_weights(&old_weights).ok_or(Error::TooLarge)?;
                let mut old = vec![(0u32, 0u64); at.space];
                for (k, c) in t.confs().iter().enumerate() {
                    if let Some(o) = old.get_mut(t.members().get(k)) {
                        *o = (old_weights[k], c.id_hash);
                    }
                }
                let changed: Vec<bool> = (0..at.space)
                    .map(|s| old[s] != (servers[s].1, if servers[s].1 == 0 { 0 } else { ids[s] }))
                    .collect();
                ketama::rebuild(t.ring(), t.ring_shadow(), &servers, &changed)
            }
            None => ketama::build_with_shadow(&servers),
        };
    if ring.len() + shadow.len() != cap {
        // Every generated point is in one of the two: sum(w) × 160.
        return Err(Error::TooLarge);
    }
    Ok((ring, shadow))
}

/// Builds the primaries' Maglev table into `out`, over the slot space too:
/// entries are slots, and a slot keeps its permutation across memberships
/// (few entries move when one member comes or goes).
pub(crate) fn build_maglev(spec: &UpstreamSpec<'_>, at: &Placement<'_>, out: &mut [u32]) {
    if out.is_empty() {
        return;
    }
    let primaries = &spec.peers[..at.primaries];
    let names = maglev_names(primaries);
    let mut by_slot: Vec<&[u8]> = vec![&[]; if at.dense { names.len() } else { at.space }];
    let mut weights = vec![0u32; by_slot.len()];
    for (k, (name, p)) in names.iter().zip(primaries).enumerate() {
        by_slot[at.slot(k)] = name;
        weights[at.slot(k)] = p.weight;
    }
    maglev::build(&by_slot, &weights, out);
}

/// Maglev names: each peer's identity, with the occurrence number appended
/// to repeats (the same `server` written twice). Identical names would
/// share one permutation, and every copy would re-walk the slots its twins
/// took: quadratic build time.
fn maglev_names(peers: &[PeerSpec<'_>]) -> Vec<Vec<u8>> {
    let mut seen: std::collections::HashMap<&[u8], u32> = Default::default();
    peers
        .iter()
        .map(|p| {
            let n = seen.entry(p.id).or_insert(0);
            let mut name = p.id.to_vec();
            if *n > 0 {
                name.push(0);
                name.extend_from_slice(&n.to_le_bytes());
            }
            *n += 1;
            name
        })
        .collect()
}

/// Builds the same-server chains into `out` (one link per slot): each
/// member links to the next one with the same key, `u32::MAX` ends.
pub(crate) fn build_chains(spec: &UpstreamSpec<'_>, at: &Placement<'_>, out: &mut [u32]) {
    if out.is_empty() {
        return;
    }
    out.fill(u32::MAX);
    // Walk backwards remembering the last slot seen per server.
    let mut next: std::collections::HashMap<&[u8], u32> = Default::default();
    for (k, p) in spec.peers.iter().enumerate().rev() {
        out[at.slot(k)] = next
            .insert(at.key(k, p), at.slot(k) as u32)
            .unwrap_or(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use crate::request::tests::{table, IDS};
    use crate::request::Outcome;
    use crate::spec::{HashMode, PeerSpec, Policy};
    use crate::testing::OwnedAttempt;

    fn pick(t: &crate::testing::OwnedTable, key: &[u8]) -> u32 {
        let mut a = OwnedAttempt::new(t.table(), 0);
        let p = t.table().get_keyed(&mut a.attempt(), key, 0).unwrap();
        t.table().free(&mut a.attempt(), Outcome::Ok, 0).unwrap();
        p.peer
    }

    #[test]
    fn same_key_same_peer_and_keys_spread() {
        for mode in [HashMode::Plain, HashMode::Consistent, HashMode::Maglev] {
            let peers: Vec<PeerSpec<'_>> = IDS[..4].iter().map(|id| PeerSpec::new(id)).collect();
            let t = table(
                Policy::Hash {
                    mode,
                    balance_factor: 0,
                    maglev_size: 0,
                },
                &peers,
            );
            let mut counts = [0usize; 4];
            for k in 0..4000 {
                let key = format!("key-{k}");
                let p = pick(&t, key.as_bytes());
                assert_eq!(p, pick(&t, key.as_bytes()), "{mode:?} {key}");
                counts[p as usize] += 1;
            }
            for c in counts {
                assert!(c > 600, "{mode:?}: {counts:?}");
            }
        }
    }

    #[test]
    fn plain_matches_nginx_formula() {
        let peers = [
            PeerSpec::new(IDS[0]).weight(2),
            PeerSpec::new(IDS[1]),
            PeerSpec::new(IDS[2]),
        ];
        let t = table(
            Policy::Hash {
                mode: HashMode::Plain,
                balance_factor: 0,
                maglev_size: 0,
            },
            &peers,
        );
        for k in 0..200 {
            let key = format!("/{k}");
            let h = crate::algo::ketama::plain_hash_step(key.as_bytes(), 0, 0);
            let want = crate::algo::ketama::plain_pick(h, &[2, 1, 1]) as u32;
            assert_eq!(pick(&t, key.as_bytes()), want, "{key}");
        }
    }

    #[test]
    fn plain_with_equal_weights_matches_the_walk() {
        for (n, weight) in [(2, 1), (7, 1), (5, 3), (64, 100)] {
            let ids: Vec<String> = (0..n)
                .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250))
                .collect();
            let peers: Vec<PeerSpec<'_>> = ids
                .iter()
                .map(|id| PeerSpec::new(id.as_bytes()).weight(weight))
                .collect();
            let t = table(
                Policy::Hash {
                    mode: HashMode::Plain,
                    balance_factor: 0,
                    maglev_size: 0,
                },
                &peers,
            );
            assert_eq!(t.table().header().uniform_weight, weight);
            let weights = vec![weight; n];
            for k in 0..500 {
                let key = format!("/{k}");
                let h = crate::algo::ketama::plain_hash_step(key.as_bytes(), 0, 0);
                let want = crate::algo::ketama::plain_pick(h, &weights) as u32;
                assert_eq!(pick(&t, key.as_bytes()), want, "{n} x {weight}: {key}");
            }
        }
    }

    #[test]
    fn consistent_matches_the_ring() {
        let peers: Vec<PeerSpec<'_>> = IDS[..5].iter().map(|id| PeerSpec::new(id)).collect();
        let t = table(
            Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            &peers,
        );
        for k in 0..500 {
            let key = format!("k{k}");
            let want = crate::algo::ketama::chash_pick(t.table().ring(), key.as_bytes());
            assert_eq!(pick(&t, key.as_bytes()), want);
        }
    }

    #[test]
    fn bounded_load_caps_a_hot_key() {
        let peers: Vec<PeerSpec<'_>> = IDS[..4].iter().map(|id| PeerSpec::new(id)).collect();
        let t = table(
            Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 125,
                maglev_size: 0,
            },
            &peers,
        );
        // One hot key, 40 requests held open: no peer may exceed
        // ceil(1.25 × 40 / 4) = 13.
        let mut held = Vec::new();
        for _ in 0..40 {
            let mut a = OwnedAttempt::new(t.table(), 0);
            t.table().get_keyed(&mut a.attempt(), b"hot", 0).unwrap();
            held.push(a);
        }
        for s in t.table().states() {
            assert!(s.in_flight.load(core::sync::atomic::Ordering::Relaxed) <= 13);
        }
        for mut a in held {
            t.table().free(&mut a.attempt(), Outcome::Ok, 0).unwrap();
        }
        // Unbounded, the same key sends all 40 to one peer.
        let t = table(
            Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            &peers,
        );
        let first = pick(&t, b"hot");
        for _ in 0..40 {
            assert_eq!(pick(&t, b"hot"), first);
        }
    }

    #[test]
    fn maglev_table_size_is_checked_and_used() {
        use crate::spec::UpstreamSpec;
        use crate::testing::OwnedTable;
        let maglev = |maglev_size| Policy::Hash {
            mode: HashMode::Maglev,
            balance_factor: 0,
            maglev_size,
        };
        let few: Vec<PeerSpec<'_>> = IDS[..3].iter().map(|id| PeerSpec::new(id)).collect();
        // (policy, peers, table size or None if refused)
        let many = vec![PeerSpec::new(b"x"); 300];
        let cases: Vec<(Policy, &[PeerSpec<'_>], Option<usize>)> = vec![
            (maglev(0), &few, Some(65_537)),
            (maglev(257), &few, Some(257)),
            (maglev(1009), &few, Some(1009)),
            (maglev(1000), &few, None),
            (maglev(251), &few, None),
            (maglev(65_537_013), &few, None),
            (maglev(257), &many, None),
            (maglev(307), &many, Some(307)),
            (
                Policy::Hash {
                    mode: HashMode::Consistent,
                    balance_factor: 0,
                    maglev_size: 257,
                },
                &few,
                None,
            ),
        ];
        for (policy, peers, want) in cases {
            let got = OwnedTable::new(&UpstreamSpec {
                policy,
                peers,
                health: Default::default(),
                schedule_room: 0,
                sessions: false,
            })
            .ok()
            .map(|t| t.table().maglev().len());
            assert_eq!(got, want, "{policy:?} with {} peers", peers.len());
        }
        // The size survives the header round trip (attach compares it).
        let t = table(maglev(1009), &few);
        assert_eq!(t.table().policy(), maglev(1009));
    }
}
