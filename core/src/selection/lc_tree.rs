//! Tournament tree of least load ratios for `least_conn`
//!
//! One tree per peer group in the zone's tree section (see
//! [`crate::table`]'s layout), heap-ordered: node 1 is the root, node `k`'s
//! children are `2k` and `2k + 1`, the leaf of the group's `j`-th peer is
//! `cap + j` (`cap`, the group's size rounded up to a power of two). Each
//! node is one word `in_flight << 32 | weight`, a load ratio, or [`NONE`]
//! when the subtree has no candidate:
//!
//! - a leaf is not stored: it is its peer's own hot line (`PeerState`),
//!   read as its count and weight in force, or [`NONE`] while the peer is
//!   out — configured `down`, set down, draining, checking, unhealthy,
//!   ejected, or at `max_conns` ([`Tree::leaf_value`]);
//! - an internal node (stored, `cap` words) holds the least ratio of its
//!   two children (compared by cross-multiplication), **not which peer has
//!   it**: the word of the less loaded child, the left one on equal ratios.
//!
//! Because an internal node holds only a ratio, a change below that leaves
//! a subtree's least ratio as it was stops there: with many idle peers the
//! root's ratio is 0 and is never written, and a pick or release writes
//! only its own peer's line (its counter) and the few nodes whose minimum
//! it really moves. Two
//! words of equal ratio (`0/1` and `0/5`) are the same value: a refresh
//! compares ratios, not words ([`same`]).
//!
//! Peers in a failure window are left in (their eligibility changes with
//! time, with no event to refresh a leaf): the pick rejects them at the
//! leaf. Slow start and panic are not represented at all: the pick leaves
//! them to the scan (see [`super::least_conn`]).
//!
//! Whoever changes a leaf's inputs (in flight, flags, weight) refreshes its
//! path ([`Tree::refresh`], [`Tree::refresh_counted`]). With every load and
//! store of the refresh `SeqCst` (and a fence after a caller's relaxed
//! update; acquire and release count `SeqCst`), once no
//! update is in progress every node's ratio equals the least of its
//! children's; docs/least_conn-design.md has the argument. Nothing is ever
//! held; a refresh repeats a node only when another one made progress.
//!
//! Picks read the words `Relaxed`: a word is a hint whose staleness is the
//! race the design note describes (a pick concurrent with other picks and
//! releases may not see their counts yet, as the scan does not), and the
//! pick re-checks its candidate at the leaf.

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::attempt::Attempt;
use crate::crash::crash_point;
use crate::health::{self, Eligibility, Mode};
use crate::table::PeerState;

/// A node without a candidate (no peer has weight 0).
pub const NONE: u64 = 0;

/// Rejected leaves (tried, in a failure window, excluded since their last
/// refresh) a search visits before it leaves the pick to the scan.
pub const BUDGET: usize = 32;

/// Zones of at most this many peers keep no tree: their picks scan, as
/// cheap as a search at that size, and nothing shared is written.
pub const MIN_PEERS: usize = 32;

/// The flag bits that take a peer out of the tree: admin and configured
/// `down`, and health (the tree is not used in panic).
pub const OUT: u32 = PeerState::OUT | PeerState::HEALTH;

/// Internal nodes of a group's tree, stored: `cap` words (node 0 unused),
/// with `cap` the group's size rounded up to a power of two, at least 2.
/// The leaves are not stored: leaf `cap + j` is computed from peer `j`'s
/// own hot line ([`Tree::leaf_value`]).
#[inline]
pub fn nodes_len(group_len: usize) -> usize {
    if group_len == 0 {
        0
    } else {
        group_len.next_power_of_two().max(2)
    }
}

/// A leaf's word: `c` requests in flight on weight `w` (at least 1).
#[inline]
fn pack(c: u32, w: u32) -> u64 {
    (u64::from(c) << 32) | u64::from(w.max(1))
}

/// `(in_flight, weight)` of a set word.
#[inline]
pub fn unpack(v: u64) -> (u64, u64) {
    (v >> 32, v & 0xffff_ffff)
}

/// Whether set word `a` is a strictly lower ratio than set word `b`.
#[inline]
fn below(a: u64, b: u64) -> bool {
    let ((ca, wa), (cb, wb)) = (unpack(a), unpack(b));
    // c < 2^32, w <= MAX_WEIGHT < 2^21: the products fit.
    ca * wb < cb * wa
}

/// Whether two words are the same value: both empty, or equal ratios.
#[inline]
pub fn same(a: u64, b: u64) -> bool {
    if a == NONE || b == NONE {
        return a == b;
    }
    let ((ca, wa), (cb, wb)) = (unpack(a), unpack(b));
    ca * wb == cb * wa
}

/// The least of two children's words: the lower ratio, the left on equal
/// ratios, the other when one is empty.
#[inline]
fn least(l: u64, r: u64) -> u64 {
    if l == NONE || (r != NONE && below(r, l)) {
        r
    } else {
        l
    }
}

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

/// One group's tree, in the zone.
#[derive(Debug, Clone, Copy)]
pub struct Tree<'a> {
    /// `cap` words: the internal nodes `1..cap` (node 0 unused).
    pub(crate) nodes: &'a [AtomicU64],
    /// Table-wide index of the group's first peer.
    pub(crate) start: usize,
    /// Peers in the group.
    pub(crate) len: usize,
}

impl<'a> Tree<'a> {
    #[inline]
    fn cap(&self) -> usize {
        self.nodes.len()
    }

    /// The word of node `k`: stored for an internal node, computed from
    /// the peer for a leaf.
    #[inline]
    fn word(&self, states: &[PeerState], k: usize) -> u64 {
        let cap = self.cap();
        if k < cap {
            self.nodes[k].load(SeqCst)
        } else {
            match states.get(self.start + (k - cap)) {
                Some(s) if k - cap < self.len => Self::leaf_value(s),
                _ => NONE,
            }
        }
    }

    /// The word leaf `j`'s peer should have now.
    #[inline]
    pub fn leaf_value(s: &PeerState) -> u64 {
        let c = s.in_flight.load(SeqCst);
        if s.flags.load(SeqCst) & OUT != 0 || {
            let max = s.max_conns();
            max != 0 && c >= max
        } {
            NONE
        } else {
            pack(c, s.weight.load(SeqCst))
        }
    }

    /// What internal node `k` should hold given its inputs now.
    #[inline]
    fn value(&self, states: &[PeerState], k: usize) -> u64 {
        least(self.word(states, 2 * k), self.word(states, 2 * k + 1))
    }

    /// Brings the path of table-wide peer `i` up to date after a change of
    /// its count, flags or weight.
    ///
    /// Per node: compute its value; if the node already has it (same
    /// ratio) and this refresh did not store here, stop — nothing changes
    /// above. Else store it, compute once more and, if an input moved in
    /// between, redo the node; go up only once the node matched a
    /// computation made after this refresh's last store to it.
    pub fn refresh(&self, states: &[PeerState], i: usize) {
        // Orders the caller's relaxed update of the flags or counter
        // before the loads below (the store-load pattern of the argument).
        core::sync::atomic::fence(SeqCst);
        self.refresh_counted(states, i);
    }

    /// [`Tree::refresh`] after a `SeqCst` read-modify-write of the peer's
    /// count (acquire, release): that already orders the change before
    /// the loads below, no fence needed.
    pub fn refresh_counted(&self, states: &[PeerState], i: usize) {
        if i < self.start || i >= self.start + self.len {
            return;
        }
        // The leaf is the peer's own state: start at its parent.
        let mut k = (self.cap() + (i - self.start)) / 2;
        let mut stored = false;
        loop {
            let v = self.value(states, k);
            let had = self.nodes[k].load(SeqCst);
            if same(had, v) {
                if !stored {
                    // Unchanged: the parent's input did not move either.
                    return;
                }
            } else {
                self.nodes[k].store(v, SeqCst);
                crash_point("lc.stored");
                stored = true;
            }
            if !same(self.value(states, k), v) {
                // An input moved meanwhile: recompute this node.
                continue;
            }
            if k == 1 {
                return;
            }
            k /= 2;
            stored = false;
        }
    }

    /// Recomputes every node, bottom up (at init, after a change of
    /// weights, or of many peers at once). Stores every node, so it is the
    /// refresh of every input it changed.
    pub fn rebuild(&self, states: &[PeerState]) {
        core::sync::atomic::fence(SeqCst);
        for k in (1..self.cap()).rev() {
            loop {
                let v = self.value(states, k);
                self.nodes[k].store(v, SeqCst);
                if same(self.value(states, k), v) {
                    break;
                }
            }
        }
    }

    /// The first node whose value differs from what its inputs give now
    /// (none in quiescence): for tests.
    #[doc(hidden)]
    pub fn first_stale(&self, states: &[PeerState]) -> Option<usize> {
        (1..self.cap()).find(|&k| !same(self.nodes[k].load(SeqCst), self.value(states, k)))
    }

    /// The root's word: the group's least ratio (in quiescence).
    #[doc(hidden)]
    pub fn root(&self) -> u64 {
        self.nodes.get(1).map_or(NONE, |n| n.load(Relaxed))
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::Outcome;
    use crate::spec::{PeerSpec, Policy, UpstreamSpec};
    use crate::table::{Zone, PRIMARY};
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
