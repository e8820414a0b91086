//! Tournament tree of least load ratios for `least_conn`
//!
//! One tree per peer group in the zone's tree section (see
//! [`crate::layout`]'s layout), heap-ordered: node 1 is the root, node `k`'s
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
//! them to the scan (see [`crate::policy::least_conn`]).
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

use super::{round_up, Zone, ALIGN, BACKUP, PRIMARY};
use crate::crash::crash_point;
use crate::layout::PeerState;

/// A node without a candidate (no peer has weight 0).
pub const NONE: u64 = 0;

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
pub(crate) fn pack(c: u32, w: u32) -> u64 {
    (u64::from(c) << 32) | u64::from(w.max(1))
}

/// `(in_flight, weight)` of a set word.
#[inline]
pub fn unpack(v: u64) -> (u64, u64) {
    (v >> 32, v & 0xffff_ffff)
}

/// Whether set word `a` is a strictly lower ratio than set word `b`.
#[inline]
pub(crate) fn below(a: u64, b: u64) -> bool {
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
pub(crate) fn least(l: u64, r: u64) -> u64 {
    if l == NONE || (r != NONE && below(r, l)) {
        r
    } else {
        l
    }
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
    pub(crate) fn cap(&self) -> usize {
        self.nodes.len()
    }

    /// The word of node `k`: stored for an internal node, computed from
    /// the peer for a leaf.
    #[inline]
    pub(crate) fn word(&self, states: &[PeerState], k: usize) -> u64 {
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
}

impl<'a> Zone<'a> {
    /// The `least_conn` tree of group `g` ([`PRIMARY`] or [`BACKUP`]);
    /// `None` for other policies, small zones or an empty group.
    #[inline]
    pub fn lc_tree(&self, g: usize) -> Option<Tree<'a>> {
        let r = self.root();
        if r.tree_off == 0 {
            return None;
        }
        let (peers, primaries) = (r.peers as usize, r.primaries as usize);
        let (start, len) = if g == PRIMARY {
            (0, primaries)
        } else {
            (primaries, peers - primaries)
        };
        if len == 0 {
            return None;
        }
        let mut off = r.tree_off as usize;
        if g != PRIMARY {
            off += round_up(nodes_len(primaries) * 8, ALIGN);
        }
        // SAFETY: a tree section (tree_off set) holds each group's nodes at
        // 64-byte aligned offsets (layout contract); zero-initialised
        // atomics, written only through atomics.
        let nodes = unsafe { self.section(off as u64, nodes_len(len)) };
        Some(Tree { nodes, start, len })
    }

    /// [`Zone::lc_refresh`] after a `SeqCst` change of peer `i`'s count.
    #[inline]
    pub(crate) fn lc_refresh_counted(&self, i: usize) {
        if self.root().tree_off == 0 {
            return;
        }
        let g = if i < self.primaries() {
            PRIMARY
        } else {
            BACKUP
        };
        if let Some(t) = self.lc_tree(g) {
            t.refresh_counted(self.states(), i);
        }
    }

    /// Recomputes the `least_conn` trees from every peer's state (after a
    /// publish of new weights, a carry). No-op without a tree.
    pub(crate) fn lc_rebuild(&self) {
        for g in [PRIMARY, BACKUP] {
            if let Some(t) = self.lc_tree(g) {
                t.rebuild(self.states());
            }
        }
    }

    /// Refreshes peer `i` in its `least_conn` tree after a change of its
    /// count, flags or weight (no-op without a tree). Every writer of
    /// those inputs calls it after the write.
    #[inline]
    pub(crate) fn lc_refresh(&self, i: usize) {
        if self.root().tree_off == 0 {
            return;
        }
        let g = if i < self.primaries() {
            PRIMARY
        } else {
            BACKUP
        };
        if let Some(t) = self.lc_tree(g) {
            t.refresh(self.states(), i);
        }
    }
}
