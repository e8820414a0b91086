//! What the policies' frozen sections are made of: the lengths a
//! generation plans for them, where its peers sit, and the weights the
//! builders see
//!
//! A generation freezes, for its policy, some of: an alias table
//! (`random`, and `p2c` and `ewma` drawing from it: [`super::random`]), a
//! ketama ring, a Maglev table and same-server chains (`hash`:
//! [`super::hash`]), and a smooth schedule per group (`round_robin`, and
//! `least_conn` and `hash` falling back on it: [`super::round_robin`]).
//! Each of those files sizes and builds its own sections; the dispatch on
//! the policy is `frozen_lens` and `build_frozen`, and
//! the writer ([`crate::write::generation`]) only carves the bytes.

use crate::algo::alias::Column;
use crate::spec::{PeerSpec, UpstreamSpec};

/// Entries of each frozen section of a generation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrozenLens {
    /// Alias table columns: one per slot.
    pub alias: usize,
    /// Ring points, shadow included.
    pub ring: usize,
    /// Maglev table entries.
    pub maglev: usize,
    /// Chain links: one per slot.
    pub chain: usize,
    /// Schedule entries of the primaries and of the backups.
    pub sched: [usize; 2],
}

/// Where the frozen sections of a generation are written (all but the
/// ring, whose points are made before the generation's bytes are: see
/// `hash::ring`), each exactly its planned length.
#[derive(Debug)]
pub struct FrozenOut<'o> {
    /// Alias table; empty when the generation draws from none.
    pub alias: &'o mut [Column],
    /// Maglev table.
    pub maglev: &'o mut [u32],
    /// Same-server chains.
    pub chain: &'o mut [u32],
    /// Schedules of the primaries and of the backups.
    pub sched: [&'o mut [u32]; 2],
}

/// Where a generation's peers sit: peer `k` (generation order) in slot
/// [`Placement::slot`]; slots from `resolved_from` on hold servers
/// resolved at run time.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'s> {
    /// Peer `k` is slot `k` (and every slot a member).
    pub dense: bool,
    /// Slot of each peer, when not dense.
    pub slots: &'s [u32],
    /// The slot space: the zone's slots.
    pub space: usize,
    /// Peers `0..primaries` are the primaries (the rest backups).
    pub primaries: usize,
    /// First slot of a resolved server.
    pub resolved_from: usize,
}

impl Placement<'_> {
    /// Slot of generation index `k`.
    #[inline]
    pub fn slot(&self, k: usize) -> usize {
        if self.dense {
            k
        } else {
            self.slots[k] as usize
        }
    }

    /// What a consistent hash places and chains peer `k` by: nginx's
    /// `server` string for configured servers (its ring, exactly), the
    /// identity for resolved ones (nginx's formula would give every
    /// address of a name the same points; see docs/discovery-design.md).
    #[inline]
    pub fn key<'p>(&self, k: usize, p: &PeerSpec<'p>) -> &'p [u8] {
        if self.slot(k) >= self.resolved_from {
            p.id
        } else {
            p.server
        }
    }
}

/// Weights of a group as the schedule and alias tables see them (`down`
/// peers weigh 0).
pub fn live_weights(spec: &UpstreamSpec<'_>, range: core::ops::Range<usize>) -> Vec<u32> {
    spec.peers[range]
        .iter()
        .map(|p| if p.down { 0 } else { p.weight })
        .collect()
}
