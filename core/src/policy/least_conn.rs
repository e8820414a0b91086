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
//! tree of load ratios ([`crate::layout::tree`]): O(log peers) per pick and per
//! release. The scan (O(peers), one counter read per peer) stays the exact
//! answer whenever the tree cannot give it:
//!
//! - while any slow start of the zone may still be ramping (a ramping
//!   peer's load is scaled by a fraction that grows with time, which no
//!   leaf can follow) and in panic (health is ignored, and the tree
//!   excludes unhealthy peers);
//! - when the tree has no candidate, or its search meets more than
//!   [`BUDGET`] tried or failing peers.
//!
//! Zones of at most 32 peers have no tree and always scan.
//! Design, exactness and races: docs/least_conn-design.md.

use core::sync::atomic::Ordering::Relaxed;

use crate::attempt::Attempt;
use crate::health::{self, slow_start, Eligibility, Mode};
use crate::layout::{Members, PeerState, Table};

use crate::layout::tree::{below, least, same, Tree, NONE};

/// Rejected leaves (tried, in a failure window, excluded since their last
/// refresh) a search visits before it leaves the pick to the scan.
pub const BUDGET: usize = 32;

/// What a search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The least loaded candidate: its table-wide index, and whether
    /// another leaf seemed to hold the same least ratio (a subtree of that
    /// least ratio was pruned: in quiescence, true whenever another
    /// eligible, untried peer ties; it may also be a tried or ineligible
    /// one).
    Peer(usize, bool),
    /// The tree has no candidate (every peer out, tried or waiting).
    Nothing,
    /// Too many rejected leaves: scan instead.
    GaveUp,
}

impl Tree<'_> {
    /// The least loaded peer of the group that `attempt` has not tried and
    /// that is eligible at `now`: branch and bound from the root, the less
    /// loaded child first, pruning subtrees whose least ratio is not below
    /// the best leaf found. A pruned subtree whose least ratio equals the
    /// best's tells that the best is tied.
    pub fn search(
        &self,
        states: &[PeerState],
        attempt: &Attempt<'_>,
        now: u64,
        mode: Mode,
    ) -> Found {
        if self.nodes.is_empty() {
            return Found::Nothing;
        }
        let cap = self.cap();
        let (mut best, mut best_i, mut tied) = (NONE, 0usize, false);
        let mut rejected = 0usize;
        // The root's least ratio, and whether the two children of a node on
        // the way down had equal ratios.
        let (mut root, mut path_tie) = (NONE, false);
        // Depth-first: at most one pending sibling per level, plus one.
        let mut stack = [0u32; 66];
        let mut sp = 1usize;
        stack[0] = 1;
        while sp > 0 {
            sp -= 1;
            let k = stack[sp] as usize;
            // Leaves are read live from the peer.
            let v = if k < cap {
                self.nodes[k].load(Relaxed)
            } else {
                self.word(states, k)
            };
            if v == NONE {
                continue;
            }
            if k == 1 {
                root = v;
            }
            if best != NONE && !below(v, best) {
                tied |= same(v, best);
                continue;
            }
            if k >= cap {
                let j = k - cap;
                let i = self.start + j;
                match states.get(i) {
                    Some(s)
                        if j < self.len
                            && !attempt.tried(i)
                            && health::eligibility(s, now, mode) != Eligibility::No =>
                    {
                        if rejected == 0 && !below(root, v) {
                            // The first leaf, straight down the less loaded
                            // children, at the root's ratio: nothing is
                            // below it, and it ties when a sibling on the
                            // way did.
                            return Found::Peer(i, path_tie);
                        }
                        (best, best_i, tied) = (v, i, false);
                    }
                    _ => {
                        rejected += 1;
                        if rejected > BUDGET {
                            return Found::GaveUp;
                        }
                    }
                }
                continue;
            }
            let (l, r) = (self.word(states, 2 * k), self.word(states, 2 * k + 1));
            if sp + 2 > stack.len() {
                // Deeper than any group of u32-indexed peers: never.
                return Found::GaveUp;
            }
            // The less loaded child is popped first.
            path_tie |= l != NONE && same(l, r);
            let (first, second) = if least(l, r) == l && l != NONE {
                (2 * k, 2 * k + 1)
            } else {
                (2 * k + 1, 2 * k)
            };
            stack[sp] = second as u32;
            stack[sp + 1] = first as u32;
            sp += 2;
        }
        if best == NONE {
            Found::Nothing
        } else {
            Found::Peer(best_i, tied)
        }
    }
}

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
fn load(t: &Table<'_>, s: &crate::layout::PeerState, i: usize, ramp: bool, now: u64) -> u64 {
    let c = s.in_flight.load(Relaxed);
    if ramp && s.flags.load(Relaxed) & crate::layout::PeerState::SLOW != 0 {
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
    for _ in 0..crate::algo::schedule::walk_limit(t.group(g).len(), sched.len()) {
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
                && states[i].flags.load(Relaxed) & crate::layout::PeerState::SLOW != 0
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
    use crate::request::tests::{one, table, IDS};
    use crate::request::Outcome;
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

#[cfg(test)]
mod tree_tests {
    use super::*;
    use crate::layout::tree::{pack, MIN_PEERS, OUT};
    use crate::layout::{Zone, PRIMARY};
    use crate::request::Outcome;
    use crate::spec::{PeerSpec, Policy, UpstreamSpec};
    use crate::testing::{OwnedAttempt, OwnedTable};

    fn check_exact(z: Zone<'_>) {
        let tree = z.lc_tree(PRIMARY).unwrap();
        assert_eq!(tree.first_stale(z.states()), None);
    }

    /// The scan's least ratio over every peer not out (no failures).
    fn scan_least(z: Zone<'_>) -> Option<(u64, u64)> {
        let mut best: Option<(u64, u64)> = None;
        for p in z.states() {
            let (c, w) = (u64::from(p.in_flight.load(Relaxed)), u64::from(p.weight()));
            if p.flags.load(Relaxed) & OUT != 0
                || (p.max_conns() != 0 && c >= u64::from(p.max_conns()))
            {
                continue;
            }
            if best.is_none_or(|(bc, bw)| c * bw < bc * w) {
                best = Some((c, w));
            }
        }
        best
    }

    fn ids(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("p{i}").into_bytes()).collect()
    }

    fn lc(peers: &[PeerSpec<'_>]) -> OwnedTable {
        OwnedTable::new(&UpstreamSpec {
            policy: Policy::LeastConn,
            peers,
            health: Default::default(),
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    #[test]
    fn words_compare_by_ratio() {
        assert!(same(pack(0, 1), pack(0, 5)));
        assert!(same(pack(2, 4), pack(1, 2)));
        assert!(!same(pack(1, 2), pack(1, 3)));
        assert!(!same(NONE, pack(0, 1)));
        assert!(same(NONE, NONE));
        assert!(below(pack(1, 3), pack(1, 2)));
        assert_eq!(least(pack(1, 2), pack(2, 4)), pack(1, 2), "left on equal");
        assert_eq!(least(NONE, pack(7, 1)), pack(7, 1));
        assert_eq!(
            least(pack(u32::MAX, 1), pack(0, 1_000_000)),
            pack(0, 1_000_000)
        );
    }

    #[test]
    fn tree_tracks_random_picks_and_releases_exactly() {
        let ids = ids(37);
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PeerSpec {
                max_conns: if i % 7 == 3 { 2 } else { 0 },
                ..PeerSpec::new(id).weight(1 + (i % 4) as u32)
            })
            .collect();
        let t = lc(&peers);
        let z = t.zone();
        let mut held: Vec<OwnedAttempt> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 != 0 || held.is_empty() {
                let want = scan_least(z);
                let mut a = OwnedAttempt::new(z, 0);
                match a.pick(0) {
                    Ok(p) => {
                        let s = &z.states()[p.peer as usize];
                        let (c, w) = (
                            u64::from(s.in_flight.load(Relaxed)) - 1,
                            u64::from(s.weight()),
                        );
                        let (wc, ww) = want.unwrap();
                        assert_eq!(
                            c * ww,
                            wc * w,
                            "step {step}: peer {} at {c}/{w}, least {wc}/{ww}",
                            p.peer
                        );
                        held.push(a);
                    }
                    Err(_) => assert_eq!(want, None),
                }
            } else {
                let mut a = held.swap_remove((x >> 8) as usize % held.len());
                a.release(Outcome::Ok, 0).unwrap();
            }
            if step % 97 == 0 {
                z.set_admin((x >> 20) as usize % 37, None, Some(x & 1 == 0), 0)
                    .unwrap();
            }
            check_exact(z);
        }
    }

    #[test]
    fn a_pick_among_idle_peers_writes_no_node() {
        let ids = ids(64);
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        let t = lc(&peers);
        let z = t.zone();
        let tree = z.lc_tree(PRIMARY).unwrap();
        let before: Vec<u64> = tree.nodes.iter().map(|n| n.load(Relaxed)).collect();
        let mut a = OwnedAttempt::new(z, 0);
        let p = a.pick(0).unwrap().peer as usize;
        let changed: Vec<usize> = (1..tree.nodes.len())
            .filter(|&k| tree.nodes[k].load(Relaxed) != before[k])
            .collect();
        assert_eq!(z.states()[p].in_flight.load(Relaxed), 1);
        assert_eq!(changed, Vec::<usize>::new(), "the leaf is the peer itself");
        a.release(Outcome::Ok, 0).unwrap();
        let after: Vec<u64> = tree.nodes.iter().map(|n| n.load(Relaxed)).collect();
        assert_eq!(after, before);
    }

    #[test]
    fn many_failing_idle_peers_fall_back_to_the_scan_then_get_probed() {
        let ids = ids(50);
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .map(|id| PeerSpec {
                max_fails: 1,
                fail_timeout_ms: 10_000,
                ..PeerSpec::new(id)
            })
            .collect();
        let t = lc(&peers);
        let z = t.zone();
        // 40 peers fail once (idle, in their window); the other 10 carry a
        // request each.
        for i in 0..40 {
            crate::health::record_failure(&z.states()[i], 1_000);
        }
        let mut held = Vec::new();
        for _ in 0..10 {
            let mut a = OwnedAttempt::new(z, 1_000);
            let p = a.pick(1_000).unwrap();
            assert!(p.peer >= 40, "{p:?}");
            held.push(a);
        }
        // More rejected leaves than the budget: the scan answers, exactly.
        let tree = z.lc_tree(PRIMARY).unwrap();
        let mut a = OwnedAttempt::new(z, 1_000);
        assert_eq!(
            tree.search(z.states(), &a.attempt(), 1_000, Mode::default()),
            Found::GaveUp
        );
        drop(a);
        let mut b = OwnedAttempt::new(z, 1_000);
        assert!(b.pick(1_000).unwrap().peer >= 40);
        // Past the window the failed peers are candidates again (probes),
        // idle: the pick goes to an idle peer.
        let mut c = OwnedAttempt::new(z, 11_001);
        let p = c.pick(11_001).unwrap();
        assert_eq!(z.states()[p.peer as usize].in_flight.load(Relaxed), 1);
        let Found::Peer(i, tied) = tree.search(
            z.states(),
            &OwnedAttempt::new(z, 11_001).attempt(),
            11_001,
            Mode::default(),
        ) else {
            panic!("a candidate");
        };
        assert!(tied, "39 idle peers");
        assert_eq!(z.states()[i].in_flight.load(Relaxed), 0);
        drop((held, b, c));
        check_exact(z);
        assert!(z.states().iter().all(|s| s.in_flight.load(Relaxed) == 0));
    }

    #[test]
    fn small_zones_scan_without_a_tree() {
        let ids = ids(MIN_PEERS + 1);
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        assert!(lc(&peers[..MIN_PEERS]).zone().lc_tree(PRIMARY).is_none());
        assert!(lc(&peers).zone().lc_tree(PRIMARY).is_some());
    }

    #[test]
    fn weight_changes_rebuild_the_tree() {
        let ids = ids(40);
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        let t = lc(&peers);
        let z = t.zone();
        let mut held = Vec::new();
        for _ in 0..40 {
            let mut a = OwnedAttempt::new(z, 0);
            a.pick(0).unwrap();
            held.push(a);
        }
        // Every peer at 1; weight 3 on peer 4 makes it the least loaded.
        z.set_weight(4, Some(3)).unwrap();
        z.publish(7, |_| true).unwrap();
        check_exact(z);
        let mut a = OwnedAttempt::new(z, 0);
        assert_eq!(a.pick(0).unwrap().peer, 4);
        held.push(a);
        drop(held);
        check_exact(z);
    }

    #[test]
    fn equal_loads_follow_the_smooth_schedule() {
        let ids = ids(40);
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PeerSpec::new(id).weight(if i == 0 { 5 } else { 1 + (i % 3) as u32 }))
            .collect();
        let t = lc(&peers);
        let z = t.zone();
        let sched: Vec<u32> = z.serving().schedule(PRIMARY).to_vec();
        // Sequential requests: every load is 0 at each pick, every peer
        // ties, and the picks are nginx's smooth sequence, twice over.
        for k in 0..2 * sched.len() {
            let mut a = OwnedAttempt::new(z, 0);
            assert_eq!(a.pick(0).unwrap().peer, sched[k % sched.len()], "pick {k}");
            a.release(Outcome::Ok, 0).unwrap();
        }
    }

    #[test]
    fn unique_least_takes_no_schedule_position() {
        let ids = ids(40);
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        let t = lc(&peers);
        let z = t.zone();
        let mut held = Vec::new();
        for _ in 0..39 {
            let mut a = OwnedAttempt::new(z, 0);
            a.pick(0).unwrap();
            held.push(a);
        }
        let idle = (0..40)
            .find(|&i| z.states()[i].in_flight.load(Relaxed) == 0)
            .unwrap();
        let cursor = |z: Zone<'_>| z.serving().cursor(PRIMARY).value.load(Relaxed);
        let at = cursor(z);
        let mut a = OwnedAttempt::new(z, 0);
        assert_eq!(a.pick(0).unwrap().peer as usize, idle);
        assert_eq!(cursor(z), at, "as the scan: no tie, no walk");
    }

    #[test]
    fn concurrent_picks_releases_and_flag_changes_leave_an_exact_tree() {
        let ids = ids(100);
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PeerSpec {
                max_conns: if i % 10 == 0 { 1 } else { 0 },
                ..PeerSpec::new(id).weight(1 + (i % 3) as u32)
            })
            .collect();
        let t = lc(&peers);
        let z = t.zone();
        std::thread::scope(|scope| {
            for th in 0..3u64 {
                scope.spawn(move || {
                    let mut x = 0x2545_f491_4f6c_dd1du64.wrapping_mul(th + 1);
                    let mut held: Vec<OwnedAttempt> = Vec::new();
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if th == 2 {
                            // An operator draining and restoring peers.
                            let i = (x % 100) as usize;
                            z.set_admin(i, None, Some(x & 2 == 0), 0).unwrap();
                            continue;
                        }
                        if held.len() < 16 && (x % 3 != 0 || held.is_empty()) {
                            let mut a = OwnedAttempt::new(z, 0);
                            if a.pick(0).is_ok() {
                                held.push(a);
                            }
                        } else {
                            let k = (x >> 8) as usize % held.len();
                            held.swap_remove(k);
                        }
                    }
                });
            }
        });
        check_exact(z);
        for i in 0..100 {
            z.set_admin(i, None, Some(false), 0).unwrap();
        }
        check_exact(z);
        assert!(z.states().iter().all(|s| s.in_flight.load(Relaxed) == 0));
        let root = z.lc_tree(PRIMARY).unwrap().root();
        assert!(same(root, pack(0, 1)), "idle: least ratio 0");
    }
}
