//! Carrying health across a reload that changed the upstream
//!
//! An unchanged upstream keeps its whole table across `nginx -s reload`
//! (see [`crate::table::Table::attach`]). A changed one — a server added,
//! a weight edited — gets a fresh table, but what was learnt about the
//! servers that stayed should not be forgotten: a server disabled by
//! `max_fails` stays disabled until its `fail_timeout` runs out, and its
//! latency estimate is kept. Peers are matched by identity (upstream name,
//! `server` string and address, hashed at init); a server written several
//! times matches occurrence by occurrence.
//!
//! In-flight counts are not carried: the old generation's workers still
//! hold those requests and release them in the old table.

use core::sync::atomic::Ordering::Relaxed;
use std::collections::HashMap;

use crate::table::Table;

impl Table<'_> {
    /// Copies failure state and latency estimates of peers that `old`
    /// also has into this (fresh) table; the number of peers carried.
    pub fn inherit(&self, old: Table<'_>) -> usize {
        let mut by_id: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, c) in old.confs().iter().enumerate().rev() {
            by_id.entry(c.id_hash).or_default().push(i);
        }
        let (old_states, new_states) = (old.states(), self.states());
        let mut carried = 0;
        for (i, c) in self.confs().iter().enumerate() {
            let Some(j) = by_id.get_mut(&c.id_hash).and_then(Vec::pop) else {
                continue;
            };
            let (from, to) = (&old_states[j], &new_states[i]);
            to.fails.store(from.fails.load(Relaxed), Relaxed);
            to.checked_ms.store(from.checked_ms.load(Relaxed), Relaxed);
            to.accessed_ms
                .store(from.accessed_ms.load(Relaxed), Relaxed);
            to.ewma_bits.store(from.ewma_bits.load(Relaxed), Relaxed);
            to.ewma_stamp_ms
                .store(from.ewma_stamp_ms.load(Relaxed), Relaxed);
            carried += 1;
        }
        carried
    }
}

#[cfg(test)]
mod tests {
    use crate::selection::Outcome;
    use crate::spec::{PeerSpec, Policy, UpstreamSpec};
    use crate::testing::{OwnedAttempt, OwnedTable};

    #[test]
    fn disabled_peer_stays_disabled_in_the_new_table() {
        let old_peers = [
            PeerSpec::new(b"up\0a"),
            PeerSpec::new(b"up\0b"),
            PeerSpec::new(b"up\0b"),
        ];
        let old = OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &old_peers,
        })
        .unwrap();
        // Fail "a" once (max_fails=1): disabled for 10 s from t=1000.
        let mut a = OwnedAttempt::new(old.table(), 1000);
        let p = old.table().get(&mut a.attempt(), 1000).unwrap();
        assert_eq!(p.peer, 0);
        old.table()
            .free(&mut a.attempt(), Outcome::Failed, 1000)
            .unwrap();
        // The second "b" has a latency estimate.
        old.table().states()[2]
            .ewma_bits
            .store(5.0f64.to_bits(), core::sync::atomic::Ordering::Relaxed);

        // Reload: "c" added in front, "a" reweighted (its identity is the
        // same), one "b" kept.
        let new_peers = [
            PeerSpec::new(b"up\0c"),
            PeerSpec::new(b"up\0a").weight(3),
            PeerSpec::new(b"up\0b"),
            PeerSpec::new(b"up\0b"),
        ];
        let new = OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &new_peers,
        })
        .unwrap();
        assert_eq!(new.table().inherit(old.table()), 3);
        let s = new.table().states();
        assert_eq!(s[1].fails.load(core::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            f64::from_bits(s[3].ewma_bits.load(core::sync::atomic::Ordering::Relaxed)),
            5.0
        );
        for _ in 0..20 {
            let mut a = OwnedAttempt::new(new.table(), 2000);
            let p = new.table().get(&mut a.attempt(), 2000).unwrap();
            assert_ne!(p.peer, 1, "a is still inside its failure window");
            new.table()
                .free(&mut a.attempt(), Outcome::Ok, 2000)
                .unwrap();
        }
        assert!(s
            .iter()
            .all(|p| p.in_flight.load(core::sync::atomic::Ordering::Relaxed) == 0));
    }
}
