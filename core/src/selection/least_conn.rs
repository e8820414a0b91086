//! Weighted least connections on global in-flight counts
//!
//! nginx's `least_conn`: among eligible peers not yet tried, the one with
//! the fewest in-flight requests per weight wins, compared by
//! cross-multiplication (`a.conns * b.weight < b.conns * a.weight`). Ties go
//! to smooth weighted round robin among the tied peers; here that is the
//! next entry of the group's shared smooth schedule that belongs to a tied
//! peer, so with equal loads (e.g. sequential requests) the order is
//! exactly nginx's round robin sequence.
//!
//! Above 32 peers the least loaded peer comes from the zone's tournament
//! tree of load ratios ([`super::lc_tree`]): O(log peers) per pick and per
//! release. The scan (O(peers), one counter read per peer) stays the exact
//! answer whenever the tree cannot give it:
//!
//! - while any slow start of the zone may still be ramping (a ramping
//!   peer's load is scaled by a fraction that grows with time, which no
//!   leaf can follow) and in panic (health is ignored, and the tree
//!   excludes unhealthy peers);
//! - when the tree has no candidate, or its search meets more than
//!   [`super::lc_tree::BUDGET`] tried or failing peers.
//!
//! Zones of at most 32 peers have no tree and always scan.
//! Design, exactness and races: docs/least_conn-design.md.

use core::sync::atomic::Ordering::Relaxed;

use crate::attempt::Attempt;
use crate::health::{self, slow_start, Eligibility, Mode};
use crate::table::{Members, PeerState, Table};

use super::lc_tree::{Found, Tree};

const RACE_RETRIES: usize = 4;

/// Schedule entries the tie-break after a tree search looks at.
const TIE_WALK: usize = 64;

/// Picks from group `g` and acquires the peer; its table-wide index.
pub fn pick(t: &Table<'_>, g: usize, attempt: &Attempt<'_>, now: u64, mode: Mode) -> Option<usize> {
    let zone = t.zone();
    let tree = zone.lc_tree(g);
    if let Some(tree) = tree {
        if !mode.panic() && !zone.ramping(now) {
            return tree_pick(t, tree, g, attempt, now, mode);
        }
    }
    scan(t, tree, g, attempt, now, mode)
}

/// The pick through the tree: search, tie-break near the schedule's
/// cursor, acquire, refresh the leaf.
fn tree_pick(
    t: &Table<'_>,
    tree: Tree<'_>,
    g: usize,
    attempt: &Attempt<'_>,
    now: u64,
    mode: Mode,
) -> Option<usize> {
    let states = t.states();
    // No peer ramps (the caller checked): loads are plain counts.
    let mode = mode.with_ramp(false);
    for _ in 0..RACE_RETRIES {
        let (bi, tied) = match tree.search(states, attempt, now, mode) {
            Found::Peer(i, tied) => (i, tied),
            Found::Nothing | Found::GaveUp => return scan(t, Some(tree), g, attempt, now, mode),
        };
        let chosen = if tied {
            let (bc, bw) = (
                u64::from(states[bi].in_flight.load(Relaxed)),
                u64::from(states[bi].weight()),
            );
            tie_break_near(t, g, attempt, now, mode, bc, bw).unwrap_or(bi)
        } else {
            bi
        };
        let ok = health::acquire(t, chosen, now, mode);
        // Also after a failure: a lost probe counts and uncounts itself.
        tree.refresh_counted(states, chosen);
        if ok {
            return Some(chosen);
        }
        // Another worker filled it or won its probe: look again.
    }
    t.scan_acquire(g, attempt, now, mode, 0)
}

/// The next tied candidate within [`TIE_WALK`] positions of the shared
/// schedule: one `fetch_add` claims the next position (with equal loads it
/// ties, as in the scan's walk); past it the walk reads ahead and claims
/// the positions up to the one it takes with one more `fetch_add`. Unlike
/// the scan's walk an entry must also be eligible (as in nginx's loop
/// over tied peers): the read-ahead would otherwise repeat a full peer.
fn tie_break_near(
    t: &Table<'_>,
    g: usize,
    attempt: &Attempt<'_>,
    now: u64,
    mode: Mode,
    bc: u64,
    bw: u64,
) -> Option<usize> {
    let sched = t.schedule(g);
    if sched.is_empty() {
        return None;
    }
    let (states, cursor) = (t.states(), t.cursor(g));
    let len = sched.len() as u64;
    let tied = |i: usize| {
        !attempt.tried(i)
            && u64::from(states[i].in_flight.load(Relaxed)) * bw
                == bc * u64::from(states[i].weight())
            && health::eligibility(&states[i], now, mode) != Eligibility::No
    };
    let at = cursor.value.fetch_add(1, Relaxed);
    let first = sched[(at % len) as usize] as usize;
    if tied(first) {
        return Some(first);
    }
    for d in 1..TIE_WALK.min(sched.len()) as u64 {
        let i = sched[((at + d) % len) as usize] as usize;
        if tied(i) {
            cursor.value.fetch_add(d, Relaxed);
            return Some(i);
        }
    }
    None
}

/// The scan: every peer of the group read once; with a tree, the leaf of
/// every peer it acquires (or tries to) refreshed.
fn scan(
    t: &Table<'_>,
    tree: Option<Tree<'_>>,
    g: usize,
    attempt: &Attempt<'_>,
    now: u64,
    mode: Mode,
) -> Option<usize> {
    let states = t.states();
    // Slow start scales a ramping peer's weight in the comparison instead
    // of holding picks back.
    let ramp = mode.ramp();
    let mode = mode.with_ramp(false);
    for _ in 0..RACE_RETRIES {
        // (index, in_flight, weight) of the least loaded; count of ties.
        // One copy of the scan per kind of group: a dense one (every
        // static upstream) is a plain range.
        let (best, ties) = match t.group(g) {
            Members::Dense(a, b) => least_loaded(t, states, a..b, attempt, now, mode, ramp),
            Members::List(l) => least_loaded(
                t,
                states,
                l.iter().map(|&s| s as usize),
                attempt,
                now,
                mode,
                ramp,
            ),
        };
        let (bi, bc, bw) = best?;
        let chosen = if ties > 1 {
            tie_break(t, g, attempt, bc, bw, ramp, now).unwrap_or(bi)
        } else {
            bi
        };
        let ok = health::acquire(t, chosen, now, mode);
        if let Some(tree) = tree {
            tree.refresh_counted(states, chosen);
        }
        if ok {
            return Some(chosen);
        }
        // Another worker filled it or won its probe: look again.
    }
    t.scan_acquire(g, attempt, now, mode, 0)
}

/// The least loaded eligible peer of `slots` not tried yet, and how many
/// tie with it.
#[inline(always)]
fn least_loaded(
    t: &Table<'_>,
    states: &[PeerState],
    slots: impl Iterator<Item = usize>,
    attempt: &Attempt<'_>,
    now: u64,
    mode: Mode,
    ramp: bool,
) -> (Option<(usize, u64, u64)>, usize) {
    // The best so far as plain words (fewer registers than an Option).
    let (mut bi, mut bc, mut bw) = (usize::MAX, 0u64, 0u64);
    let mut ties = 0usize;
    for i in slots {
        if attempt.tried(i) {
            continue;
        }
        let s = &states[i];
        if health::eligibility(s, now, mode) == Eligibility::No {
            continue;
        }
        let (c, w) = (load(t, s, i, ramp, now), u64::from(s.weight()));
        if bi == usize::MAX || c * bw < bc * w {
            (bi, bc, bw) = (i, c, w);
            ties = 1;
        } else if c * bw == bc * w {
            ties += 1;
        }
    }
    ((bi != usize::MAX).then_some((bi, bc, bw)), ties)
}

/// Requests in flight on peer `i`, as the comparison counts them: divided
/// by its slow-start fraction while it ramps (a peer at a tenth of its
/// weight counts each request ten times).
#[inline]
fn load(t: &Table<'_>, s: &crate::table::PeerState, i: usize, ramp: bool, now: u64) -> u64 {
    let c = s.in_flight.load(Relaxed);
    if ramp && s.flags.load(Relaxed) & crate::table::PeerState::SLOW != 0 {
        slow_start::scaled_load(t.zone(), i, c, now)
    } else {
        u64::from(c)
    }
}

/// The next peer in the shared smooth schedule whose load ratio equals
/// `bc / bw` and that is still a candidate.
fn tie_break(
    t: &Table<'_>,
    g: usize,
    attempt: &Attempt<'_>,
    bc: u64,
    bw: u64,
    ramp: bool,
    now: u64,
) -> Option<usize> {
    let sched = t.schedule(g);
    if sched.is_empty() {
        return None;
    }
    let (states, cursor) = (t.states(), t.cursor(g));
    let len = sched.len() as u64;
    for _ in 0..super::walk_limit(t.group(g).len(), sched.len()) {
        let i = sched[(cursor.value.fetch_add(1, Relaxed) % len) as usize] as usize;
        if attempt.tried(i) {
            continue;
        }
        let (c, w) = (
            load(t, &states[i], i, ramp, now),
            u64::from(states[i].weight()),
        );
        if c * bw == bc * w {
            // A ramping peer among equals takes its fraction of the ties
            // (at low concurrency every load is 0 and ties are all there
            // is); the others take the rest.
            if ramp
                && states[i].flags.load(Relaxed) & crate::table::PeerState::SLOW != 0
                && !slow_start::admit(t.zone(), i, now)
            {
                continue;
            }
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::{one, table, IDS};
    use crate::selection::Outcome;
    use crate::spec::{PeerSpec, Policy};
    use crate::testing::OwnedAttempt;

    #[test]
    fn equal_load_follows_smooth_sequence() {
        let peers = [
            PeerSpec::new(IDS[0]).weight(5),
            PeerSpec::new(IDS[1]),
            PeerSpec::new(IDS[2]),
        ];
        let t = table(Policy::LeastConn, &peers);
        let s: String = (0..7).map(|_| one(&t, 0)).collect();
        assert_eq!(s, "aabacaa");
    }

    #[test]
    fn least_loaded_per_weight_wins() {
        let peers = [
            PeerSpec::new(IDS[0]).weight(2),
            PeerSpec::new(IDS[1]),
            PeerSpec::new(IDS[2]),
        ];
        let t = table(Policy::LeastConn, &peers);
        // Hold requests open: loads per weight decide.
        let mut held = Vec::new();
        let mut picks = String::new();
        for _ in 0..8 {
            let mut a = OwnedAttempt::new(t.table(), 0);
            let p = t.table().get(&mut a.attempt(), 0).unwrap();
            picks.push((b'a' + p.peer as u8) as char);
            held.push(a);
        }
        let count = |ch| picks.chars().filter(|&c| c == ch).count();
        assert_eq!((count('a'), count('b'), count('c')), (4, 2, 2), "{picks}");
        for mut a in held {
            t.table().free(&mut a.attempt(), Outcome::Ok, 0).unwrap();
        }
    }
}
