//! Smooth weighted round robin over a shared schedule
//!
//! The table holds one period of nginx's smooth WRR sequence per group
//! (see [`crate::algo::schedule`]). A pick takes the next position with one
//! `fetch_add` on the group's cursor, so concurrent workers share one
//! sequence: sequential requests through any mix of workers follow nginx's
//! order exactly. Positions whose peer is tried, down, full or failing are
//! skipped (consumed), which leaves the remaining peers in the same smooth
//! proportions. After [`crate::algo::schedule::walk_limit`] steps without success the group
//! is scanned linearly, so a pick fails only when no peer is eligible.
//!
//! The cursor is `Relaxed`: it orders nothing but itself.

use core::sync::atomic::Ordering::Relaxed;

use crate::attempt::Attempt;
use crate::health::{self, Mode};
use crate::layout::Table;

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
