//! Smooth weighted round robin over a shared schedule
//!
//! The table holds one period of nginx's smooth WRR sequence per group
//! (see [`crate::algo::schedule`]). A pick takes the next position with one
//! `fetch_add` on the group's cursor, so concurrent workers share one
//! sequence: sequential requests through any mix of workers follow nginx's
//! order exactly. Positions whose peer is tried, down, full or failing are
//! skipped (consumed), which leaves the remaining peers in the same smooth
//! proportions. After `walk_limit` steps without success the group
//! is scanned linearly, so a pick fails only when no peer is eligible.
//!
//! The cursor is `Relaxed`: it orders nothing but itself.

use core::sync::atomic::Ordering::Relaxed;

use super::frozen::{live_weights, Placement};
use crate::algo::schedule;
use crate::attempt::Attempt;
use crate::error::Error;
use crate::health::{self, Mode};
use crate::layout::{Table, BACKUP, PRIMARY};
use crate::spec::UpstreamSpec;

/// Picks from group `g` and acquires the peer; its table-wide index.
pub fn pick(t: &Table<'_>, g: usize, attempt: &Attempt<'_>, now: u64, mode: Mode) -> Option<usize> {
    let sched = t.schedule(g);
    if sched.is_empty() {
        return None;
    }
    let (states, cursor) = (t.states(), t.cursor(g));
    let len = sched.len() as u64;
    // The common case, the first entry taken, before the walk's bound is
    // computed (the loop's setup cost as much as the pick).
    let mut pos = cursor.value.fetch_add(1, Relaxed);
    let i = sched[(pos % len) as usize] as usize;
    if !attempt.tried(i) && health::acquire_in(t, states, i, now, mode) {
        return Some(i);
    }
    for _ in 1..crate::algo::schedule::walk_limit(t.group(g).len(), sched.len()) {
        pos = cursor.value.fetch_add(1, Relaxed);
        let i = sched[(pos % len) as usize] as usize;
        if !attempt.tried(i) && health::acquire_in(t, states, i, now, mode) {
            return Some(i);
        }
    }
    t.scan_acquire(g, attempt, now, mode, pos as usize)
}

/// Entries of the smooth schedules of the primaries and of the backups,
/// for a policy that walks them (round robin, least_conn's ties, hash's
/// fallback; none for the others).
pub(crate) fn schedule_lens(spec: &UpstreamSpec<'_>) -> Result<[usize; 2], Error> {
    let mut lens = [0; 2];
    if spec.policy.walks_schedule() {
        let (primaries, peers) = (spec.primaries(), spec.peers.len());
        for (g, range) in [(PRIMARY, 0..primaries), (BACKUP, primaries..peers)] {
            lens[g] = schedule::period(&live_weights(spec, range))?;
        }
    }
    Ok(lens)
}

/// Builds both groups' schedules into `out` (their planned lengths); the
/// entries are slots.
pub(crate) fn build_schedules(
    spec: &UpstreamSpec<'_>,
    at: &Placement<'_>,
    out: [&mut [u32]; 2],
) -> Result<(), Error> {
    if !spec.policy.walks_schedule() {
        return Ok(());
    }
    let (primaries, peers) = (at.primaries, spec.peers.len());
    for (out, range) in out.into_iter().zip([0..primaries, primaries..peers]) {
        schedule::build(&live_weights(spec, range.clone()), out)?;
        for e in out.iter_mut() {
            *e = at.slot(range.start + *e as usize) as u32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::request::tests::{one, table, IDS};
    use crate::spec::{PeerSpec, Policy};

    #[test]
    fn nginx_sequence_5_1_1() {
        let peers = [
            PeerSpec::new(IDS[0]).weight(5),
            PeerSpec::new(IDS[1]),
            PeerSpec::new(IDS[2]),
        ];
        let t = table(Policy::RoundRobin, &peers);
        let s: String = (0..14).map(|_| one(&t, 0)).collect();
        assert_eq!(s, "aabacaaaabacaa");
    }

    #[test]
    fn skipped_peer_leaves_smooth_proportions() {
        let peers = [
            PeerSpec::new(IDS[0]).weight(2),
            PeerSpec {
                down: true,
                ..PeerSpec::new(IDS[1])
            },
            PeerSpec::new(IDS[2]),
        ];
        let t = table(Policy::RoundRobin, &peers);
        let s: String = (0..6).map(|_| one(&t, 0)).collect();
        assert_eq!(s, "acaaca");
    }
}
