//! Session binding: the index that finds a server by its session id
//!
//! nginx's `sticky` names each server by a session id (its route, or the
//! hex MD5 of its address) and finds the server a request is bound to by
//! comparing that id with every server's (`ngx_http_upstream_get_rr_peer_by_sid`,
//! O(n) per request). Here every generation of an upstream that binds
//! sessions freezes an open-addressing index of its members' ids: a power
//! of two entries, at least twice the members, each the id's 64-bit hash
//! ([`crate::spec::sid_hash`]) and the member's slot + 1 (zeros: empty),
//! at the position of the hash's low bits, probed linearly. A lookup
//! hashes the id, probes until an empty entry and takes the entry with
//! that hash: O(1) expected, one line of the index (16 bytes per entry).
//! nginx compares the ids' bytes; here equal 64-bit hashes stand for
//! equal ids, which reading the id's bytes from the names would confirm
//! at the cost of one more cache miss per bound request (a third of its
//! time at 10,000 servers). Two different ids share a hash with a chance
//! of 2^-64; an id crafted to collide gains nothing, since a cookie is no
//! secret: any client may send the id of the server it wants.
//!
//! A bound request goes to its server through the same eligibility and
//! acquisition as any pick ([`crate::health::acquire_in`]), with one
//! difference: a draining server still takes it (NGINX Plus's `drain`:
//! bound sessions keep reaching the server, new ones do not). When the
//! server cannot take it (down, unhealthy, ejected, in its failure
//! window, tried already, or full at `max_conns`), the request is
//! balanced as if unbound, and the caller binds the client anew.

use crate::health::{self, Mode};
use crate::layout::Table;
use crate::policy::frozen::Placement;
use crate::spec::{session_id, sid_hash, UpstreamSpec};

/// Entries of the index of a generation of `members` members when the
/// upstream binds sessions (else 0): the least power of two at least
/// twice `members` (and at least 2).
pub fn index_len(spec: &UpstreamSpec<'_>, members: usize) -> usize {
    if !spec.sessions {
        return 0;
    }
    (2 * members).max(2).next_power_of_two()
}

/// Builds the index of `spec`'s peers, placed as `at` says, into `out`
/// (zeroed, [`index_len`] entries).
pub fn build_index(spec: &UpstreamSpec<'_>, at: &Placement<'_>, out: &mut [[u64; 2]]) {
    if out.is_empty() {
        return;
    }
    let mask = out.len() - 1;
    for (k, p) in spec.peers.iter().enumerate() {
        let (sid, len) = session_id(p);
        let hash = sid_hash(&sid[..len]);
        let mut e = hash as usize & mask;
        // At most half full: an empty entry is always found.
        while out[e][1] != 0 {
            e = (e + 1) & mask;
        }
        out[e] = [hash, at.slot(k) as u64 + 1];
    }
}

impl Table<'_> {
    /// The member whose session id hashes to `hash`: its slot.
    #[inline]
    pub fn find_sid(&self, hash: u64) -> Option<usize> {
        let index = self.sids();
        if index.is_empty() {
            return None;
        }
        let mask = index.len() - 1;
        let mut e = hash as usize & mask;
        for _ in 0..index.len() {
            let [h, v] = index[e];
            if v == 0 {
                return None;
            }
            if h == hash {
                return Some(v as usize - 1);
            }
            e = (e + 1) & mask;
        }
        None
    }

    /// Claims `slot`, the server a request is bound to, for its next try
    /// when it can take it: as any pick, but a draining server still
    /// takes bound requests. `false`: balance the request as unbound.
    #[inline]
    pub(crate) fn acquire_bound(&self, slot: usize, tried: bool, now: u64, mode: Mode<'_>) -> bool {
        if tried {
            return false;
        }
        health::acquire_in(self, self.states(), slot, now, mode.with_bound(true))
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::PeerState;
    use crate::request::tests::all;
    use crate::spec::{identity_address, session_id, sid_hash, PeerSpec, Policy, UpstreamSpec};
    use crate::testing::{OwnedAttempt, OwnedTable};
    use crate::{Binding, Outcome};
    use core::sync::atomic::Ordering::Relaxed;

    const IDS: [&[u8]; 4] = [
        b"app\0a:80\x00127.0.0.1:8001",
        b"app\0b:80\x00127.0.0.1:8002",
        b"app\0c:80\x00127.0.0.1:8003",
        b"app\0d:80\x00127.0.0.1:8004",
    ];

    fn sticky(policy: Policy, peers: &[PeerSpec<'_>]) -> OwnedTable {
        OwnedTable::new(&UpstreamSpec {
            policy,
            peers,
            health: Default::default(),
            schedule_room: 0,
            sessions: true,
        })
        .unwrap()
    }

    fn four() -> Vec<PeerSpec<'static>> {
        IDS.iter().map(|id| PeerSpec::new(id)).collect()
    }

    fn sid_of(id: &[u8]) -> [u8; 32] {
        crate::algo::md5::hex(identity_address(id))
    }

    /// nginx's formula: the hex MD5 of the address nginx prints.
    #[test]
    fn a_servers_session_id_is_the_md5_of_its_address_or_its_route() {
        let p = PeerSpec::new(b"app\x00127.0.0.1:8080\x00127.0.0.1:8080");
        assert_eq!(identity_address(p.id), b"127.0.0.1:8080");
        let (sid, n) = session_id(&p);
        assert_eq!(&sid[..n], b"5958c386bf5e9109ac10d2a628645aea");
        let r = PeerSpec {
            sid: b"a1",
            ..PeerSpec::new(b"app\0x\x00127.0.0.1:8080")
        };
        let (sid, n) = session_id(&r);
        assert_eq!(&sid[..n], b"a1");
    }

    #[test]
    fn every_server_is_found_by_its_ids_hash() {
        let t = sticky(Policy::RoundRobin, &four());
        let g = t.table();
        assert_eq!(g.sids().len(), 8);
        for (k, id) in IDS.iter().enumerate() {
            let sid = sid_of(id);
            assert_eq!(t.zone().sid(k), &sid[..]);
            assert_eq!(g.find_sid(sid_hash(&sid)), Some(k));
        }
        assert_eq!(g.find_sid(sid_hash(b"nope")), None);
    }

    #[test]
    fn an_upstream_without_sessions_has_no_index() {
        let t = OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &four(),
            health: Default::default(),
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        assert!(t.table().sids().is_empty());
        assert_eq!(t.zone().sid(0), b"");
        let mut r = OwnedAttempt::new(t.zone(), 0);
        let sid = sid_of(IDS[2]);
        let p = r.pick_bound(Binding::Sid(&sid), 0).unwrap();
        assert!(!p.bound);
    }

    /// Every policy: a bound request reaches its server every time, a
    /// draining one included; an unbound one never reaches a draining
    /// server.
    #[test]
    fn bound_requests_reach_their_server_draining_or_not() {
        for policy in all() {
            let t = sticky(policy, &four());
            let z = t.zone();
            let sid = sid_of(IDS[2]);
            for round in 0..2 {
                if round == 1 {
                    z.set_admin(2, None, Some(true), 0).unwrap();
                }
                for n in 0..100 {
                    let mut r = OwnedAttempt::new(z, n);
                    let p = r.pick_bound(Binding::Sid(&sid), n).unwrap();
                    assert_eq!((p.peer, p.bound), (2, true), "{policy:?} round {round}");
                    r.release(Outcome::Ok, n).unwrap();
                    let mut u = OwnedAttempt::new(z, n);
                    let p = u.pick_keyed(format!("k{n}").as_bytes(), n).unwrap();
                    assert!(!p.bound);
                    if round == 1 {
                        assert_ne!(p.peer, 2, "{policy:?}: a new session on a draining server");
                    }
                    u.release(Outcome::Ok, n).unwrap();
                }
            }
            let s = z.stats(2, 0).unwrap();
            assert_eq!(s.bound, 200, "{policy:?}");
        }
    }

    /// Down, unhealthy, ejected or failed: the request is balanced as if
    /// unbound (and the caller binds it anew).
    #[test]
    fn a_bound_server_that_cannot_take_the_request_is_passed_over() {
        for policy in all() {
            for bit in [
                PeerState::ADMIN_DOWN,
                PeerState::UNHEALTHY,
                PeerState::EJECTED,
            ] {
                let t = sticky(policy, &four());
                let z = t.zone();
                z.states()[1].flags.fetch_or(bit, Relaxed);
                let sid = sid_of(IDS[1]);
                for n in 0..20 {
                    let mut r = OwnedAttempt::new(z, n);
                    let p = r.pick_bound(Binding::Sid(&sid), n).unwrap();
                    assert!(!p.bound && p.peer != 1, "{policy:?} {bit}");
                    r.release(Outcome::Ok, n).unwrap();
                }
            }
            // Failed (max_fails=1): out for fail_timeout.
            let t = sticky(policy, &four());
            let z = t.zone();
            let sid = sid_of(IDS[1]);
            let mut r = OwnedAttempt::new(z, 0);
            assert!(r.pick_bound(Binding::Sid(&sid), 0).unwrap().bound);
            r.release(Outcome::Failed, 0).unwrap();
            // The retry of the same request goes elsewhere.
            let p = r.pick_bound(Binding::Sid(&sid), 0).unwrap();
            assert!(!p.bound && p.peer != 1, "{policy:?}");
            r.release(Outcome::Ok, 0).unwrap();
            let mut s = OwnedAttempt::new(z, 1);
            let p = s.pick_bound(Binding::Sid(&sid), 1).unwrap();
            assert!(!p.bound && p.peer != 1, "{policy:?}");
        }
    }

    /// max_conns holds for bound requests: a full server passes them on.
    #[test]
    fn max_conns_holds_for_bound_requests() {
        for policy in all() {
            let mut peers = four();
            peers[3].max_conns = 1;
            let t = sticky(policy, &peers);
            let z = t.zone();
            let sid = sid_of(IDS[3]);
            let mut a = OwnedAttempt::new(z, 0);
            assert_eq!(a.pick_bound(Binding::Sid(&sid), 0).unwrap().peer, 3);
            let mut b = OwnedAttempt::new(z, 0);
            let p = b.pick_bound(Binding::Sid(&sid), 0).unwrap();
            assert!(!p.bound && p.peer != 3, "{policy:?}");
            assert_eq!(z.states()[3].in_flight.load(Relaxed), 1);
        }
    }

    /// A bound backup serves only once no primary can (nginx's rule for
    /// backups), and a bound primary is preferred to the backups.
    #[test]
    fn a_bound_backup_serves_only_when_no_primary_can() {
        for policy in [Policy::RoundRobin, Policy::LeastConn] {
            let mut peers = four();
            peers[3].backup = true;
            let t = sticky(policy, &peers);
            let z = t.zone();
            let sid = sid_of(IDS[3]);
            let mut r = OwnedAttempt::new(z, 0);
            let p = r.pick_bound(Binding::Sid(&sid), 0).unwrap();
            assert!(!p.bound && p.peer < 3, "{policy:?}");
            r.release(Outcome::Ok, 0).unwrap();
            for i in 0..3 {
                z.set_admin(i, Some(true), None, 0).unwrap();
            }
            let mut r = OwnedAttempt::new(z, 0);
            let p = r.pick_bound(Binding::Sid(&sid), 0).unwrap();
            assert_eq!((p.peer, p.bound, p.backup), (3, true, true), "{policy:?}");
        }
    }

    /// Routes name servers instead of their addresses.
    #[test]
    fn routes_name_their_servers() {
        let routes: [&[u8]; 4] = [b"r1", b"r2", b"r3", b"r4"];
        let peers: Vec<PeerSpec<'_>> = IDS
            .iter()
            .zip(routes)
            .map(|(id, sid)| PeerSpec {
                sid,
                ..PeerSpec::new(id)
            })
            .collect();
        let t = sticky(Policy::LeastConn, &peers);
        for (k, route) in routes.iter().enumerate() {
            let mut r = OwnedAttempt::new(t.zone(), 0);
            let p = r.pick_bound(Binding::Sid(route), 0).unwrap();
            assert_eq!((p.peer as usize, p.bound), (k, true));
            assert_eq!(t.zone().sid(k), *route);
        }
    }

    /// A dynamic zone: servers that come at run time get their ids (and
    /// the index follows the membership); one that left is not found.
    #[test]
    fn resolved_servers_are_indexed_as_they_come_and_go() {
        let spec = |peers| UpstreamSpec {
            policy: Policy::RoundRobin,
            peers,
            health: Default::default(),
            schedule_room: 0,
            sessions: true,
        };
        let t = OwnedTable::with_capacity(&spec(&[]), 8).unwrap();
        let z = t.zone();
        let list = four();
        z.apply_membership(&spec(&list), [1, 1], 7, |_| true, 0)
            .unwrap();
        for id in IDS {
            let sid = sid_of(id);
            let mut r = OwnedAttempt::new(z, 0);
            let p = r.pick_bound(Binding::Sid(&sid), 0).unwrap();
            assert!(p.bound);
            assert_eq!(z.identity(p.peer as usize), id);
            r.release(Outcome::Ok, 0).unwrap();
        }
        z.apply_membership(&spec(&list[1..]), [2, 1], 7, |_| true, 0)
            .unwrap();
        let sid = sid_of(IDS[0]);
        let mut r = OwnedAttempt::new(z, 0);
        assert!(!r.pick_bound(Binding::Sid(&sid), 0).unwrap().bound);
    }
}
