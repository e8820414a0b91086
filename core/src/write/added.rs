//! Servers added and removed at run time through the API (NGINX Plus's
//! POST and DELETE)
//!
//! An upstream with `ha_api_max N` keeps room for `N` servers added through
//! the API: its zone has at least `configured + N` slots
//! ([`Zone::init_api`]) and records `N` in its root
//! ([`crate::layout::Root::api_max`]). A slot filled through the API is
//! marked [`PeerCold::API`] ([`PeerCold::origin`]); at most `N` LIVE slots
//! are.
//!
//! Adding and removing are membership changes, made by the code of
//! [`Zone::apply_membership`] (see [`crate::write::membership`]): under the
//! builder lease, the LIVE members as the zone holds them (identity,
//! `server` string, configured weight, limits, `backup`, configured
//! `down`, id, session id; in the serving generation's order), plus or
//! minus one server, are applied as a list: slot choice, the new-server
//! rules (slow start, or `checking` under `mandatory` checks), every
//! policy's build, one generation published with the serving one's
//! source (so that a resolve never takes it for a new list). Every other
//! server keeps every bit of its state (admin state, weight override,
//! statistics, health): a kept slot takes only its own configuration
//! again.
//!
//! - A server added takes a FREE slot (never-used ones first, then one
//!   the reuse rule frees) and a new id from the counter resolved servers
//!   use ([`crate::layout::Sync::ids`]): an id is never given twice in a
//!   zone's life, so a server removed and added again is a new server,
//!   with a new id and fresh statistics, as in NGINX Plus.
//! - A server removed turns RETIRING: no new pick in any generation,
//!   its requests in flight finish, and the reuse rule frees the slot
//!   later. Only servers added through the API can be removed.
//!
//! In an upstream with resolved servers the two compose: a list the
//! resolve path applies keeps every LIVE server of the API's, and may
//! fill only the slots beyond `ha_api_max` (see "Lists and the API's
//! servers" in [`crate::write::membership`]).
//!
//! Crash consistency needs nothing new: every shared write is the
//! membership change's (crash points `apply.*` and `publish.*`). The
//! origin mark is written with the identity, before the slot turns LIVE;
//! a builder killed before its generation is published leaves a LIVE slot
//! no generation names, which the next lease holder turns RETIRING
//! (`Zone::repair_membership`): a mark on a RETIRING slot counts for
//! nothing, and is rewritten when the slot is given to another server.
//!
//! Across a reload that rebuilds the zone, [`Zone::carry_from`] adds the
//! old zone's API servers to the new one; at a restart, the state file's
//! are added back with [`Zone::add_server`].

use core::sync::atomic::Ordering::{Acquire, Relaxed};

use super::membership::{SlotMark, LIVE};
use crate::error::Error;
use crate::layout::{PeerCold, PeerState, Zone};
use crate::spec::{PeerSpec, UpstreamSpec};

/// A server [`Zone::add_server`] added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Its slot.
    pub slot: usize,
    /// Its position, the API's `id`: never given before in this zone.
    pub position: u32,
}

/// Why [`Zone::add_server`] added nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddRefusal {
    /// A LIVE server has the same identity.
    Exists,
    /// `max` servers added through the API are LIVE already (`max` 0: the
    /// upstream takes none, it has no `ha_api_max`).
    Full {
        /// The upstream's `ha_api_max`.
        max: u32,
    },
    /// The builder lease could not be had ([`Error::Busy`]), or the list
    /// with the new server could not be put in force, as
    /// [`Zone::apply_membership`] says: [`Error::NoSpace`] (no FREE slot
    /// now, removed servers still finishing requests; or no room in the
    /// arena), [`Error::Pinned`] (older generations still hold the
    /// arena's room), [`Error::TooLarge`] (an identity longer than a slot
    /// holds, or weights too large), [`Error::InvalidArgument`] (a server
    /// the upstream cannot take: `backup` under a policy without backups,
    /// a weight of 0, a session id too long).
    Publish(Error),
}

/// Why [`Zone::remove_server`] removed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveRefusal {
    /// The slot no longer holds the server it held when looked up (freed,
    /// given to another server, or removed already).
    Gone,
    /// The server was not added through the API: configured servers are
    /// not removed at run time.
    NotApi,
    /// The builder lease could not be had, or the list without the server
    /// could not be put in force (as [`AddRefusal::Publish`]).
    Publish(Error),
}

impl<'a> Zone<'a> {
    /// Servers the API may add (`ha_api_max`; 0: none).
    #[inline]
    pub fn api_max(&self) -> u32 {
        self.root().api_max
    }

    /// Whether slot `i` holds a server added through the API (LIVE, or
    /// RETIRING after its removal).
    pub fn added_through_api(&self, i: usize) -> bool {
        self.colds().get(i).is_some_and(|c| {
            c.status.load(Acquire) != super::membership::FREE
                && c.origin.load(Relaxed) & PeerCold::API != 0
        })
    }

    /// The LIVE servers added through the API, and how many may be
    /// (`ha_api_max`). A count of slots, outside the lease: a change in
    /// progress may be counted or not.
    pub fn api_servers(&self) -> (u32, u32) {
        let n = self
            .colds()
            .iter()
            .filter(|c| {
                c.status.load(Acquire) == LIVE && c.origin.load(Relaxed) & PeerCold::API != 0
            })
            .count();
        (n as u32, self.api_max())
    }

    /// The serving generation's members, in its order. Lease holders.
    pub(super) fn member_slots(&self) -> Vec<usize> {
        match self.current_slot() {
            Some(d) => self.table(d).members().iter().collect(),
            None => (0..self.configured()).collect(),
        }
    }

    /// Slot `i`'s server as its configuration gave it (the configured
    /// weight, not the override; the configured `down`, not the API's),
    /// with its id. Lease holders (or a zone nobody changes: a reload's
    /// old one, for its slots' own fields).
    pub(super) fn member_spec(&self, i: usize) -> PeerSpec<'a> {
        let (s, c) = (&self.states()[i], &self.colds()[i]);
        let flags = s.flags.load(Relaxed);
        PeerSpec {
            id: self.identity(i),
            server: self.server(i),
            weight: c.conf_weight.load(Relaxed),
            max_conns: s.max_conns(),
            max_fails: s.max_fails(),
            fail_timeout_ms: s.fail_timeout_ms(),
            backup: flags & PeerState::BACKUP != 0,
            down: flags & PeerState::DOWN != 0,
            position: Some(c.position.load(Relaxed)),
            sid: self.sid(i),
        }
    }

    /// Adds `peers`, servers new to the running upstream, through the
    /// API, at `now`: the LIVE members and them as one list (primaries,
    /// then new primaries, backups, new backups), applied and published
    /// with the serving generation's source. The slot of each, in order.
    /// Lease holders; the caller checked what the API allows (identities
    /// not LIVE, room under `ha_api_max`).
    pub(super) fn add_locked(&self, peers: &[PeerSpec<'_>], now: u64) -> Result<Vec<usize>, Error> {
        let Some(d) = self.current_slot() else {
            // `init` publishes the first generation: never here.
            return Err(Error::InvalidArgument);
        };
        let source = self.table(d).header().source;
        let members = self.member_slots();
        let specs: Vec<PeerSpec<'_>> = members.iter().map(|&i| self.member_spec(i)).collect();
        let fresh = peers.iter().map(|p| PeerSpec {
            position: None,
            ..*p
        });
        // (spec, added, index among the added)
        let mut list: Vec<(PeerSpec<'_>, Option<usize>)> = Vec::new();
        for backup in [false, true] {
            list.extend(
                specs
                    .iter()
                    .filter(|p| p.backup == backup)
                    .map(|p| (*p, None)),
            );
            list.extend(
                fresh
                    .clone()
                    .enumerate()
                    .filter(|(_, p)| p.backup == backup)
                    .map(|(k, p)| (p, Some(k))),
            );
        }
        let all: Vec<PeerSpec<'_>> = list.iter().map(|&(p, _)| p).collect();
        let api: Vec<bool> = list.iter().map(|&(_, a)| a.is_some()).collect();
        let spec = UpstreamSpec {
            policy: self.policy(),
            peers: &all,
            health: *self.health_spec(),
            schedule_room: 0,
            sessions: self.sessions(),
        };
        spec.validate()?;
        let (_, slots) = self.apply_locked(&spec, source, now, &api)?;
        let mut out = vec![0usize; peers.len()];
        for (&(_, a), &s) in list.iter().zip(&slots) {
            if let Some(k) = a {
                out[k] = s as usize;
            }
        }
        Ok(out)
    }

    /// Adds server `p` through the API (NGINX Plus's POST) at `now`, for
    /// `owner` (a pid; `alive` as for [`Zone::publish`]; a busy lease is
    /// waited for up to [`super::LEASE_WAIT_MS`]): see the module note.
    /// `p.position` is ignored: the server gets a new id.
    ///
    /// Works on a fresh zone as on a running one (the state file's
    /// servers are added back this way at a restart).
    pub fn add_server(
        &self,
        p: &PeerSpec<'_>,
        now: u64,
        owner: u64,
        alive: impl Fn(u64) -> bool,
    ) -> Result<Added, AddRefusal> {
        let max = self.api_max();
        if max == 0 {
            return Err(AddRefusal::Full { max });
        }
        let _lease = self
            .lease_waiting(owner, &alive)
            .map_err(AddRefusal::Publish)?;
        // Under the lease: the membership stays as read.
        if self
            .member_slots()
            .iter()
            .any(|&i| self.identity(i) == p.id)
        {
            return Err(AddRefusal::Exists);
        }
        if self.api_servers().0 >= max {
            return Err(AddRefusal::Full { max });
        }
        let slot = self
            .add_locked(core::slice::from_ref(p), now)
            .map_err(AddRefusal::Publish)?[0];
        Ok(Added {
            slot,
            position: self.colds()[slot].position.load(Relaxed),
        })
    }

    /// Removes server `i`, added through the API, the slot as `mark` says
    /// it was seen ([`Zone::by_position`]), at `now` (NGINX Plus's
    /// DELETE), for `owner` (as [`Zone::add_server`]): it turns RETIRING,
    /// takes no new request from any generation, and its requests in
    /// flight finish; a generation without it is published.
    pub fn remove_server(
        &self,
        i: usize,
        mark: SlotMark,
        now: u64,
        owner: u64,
        alive: impl Fn(u64) -> bool,
    ) -> Result<(), RemoveRefusal> {
        if i >= self.peers() {
            return Err(RemoveRefusal::Gone);
        }
        let _lease = self
            .lease_waiting(owner, &alive)
            .map_err(RemoveRefusal::Publish)?;
        if !self.slot_unchanged(i, mark) || self.slot_status(i) != Some(LIVE) {
            return Err(RemoveRefusal::Gone);
        }
        if self.colds()[i].origin.load(Relaxed) & PeerCold::API == 0 {
            return Err(RemoveRefusal::NotApi);
        }
        let Some(d) = self.current_slot() else {
            return Err(RemoveRefusal::Gone);
        };
        let source = self.table(d).header().source;
        let rest: Vec<PeerSpec<'_>> = self
            .member_slots()
            .into_iter()
            .filter(|&s| s != i)
            .map(|s| self.member_spec(s))
            .collect();
        let spec = UpstreamSpec {
            policy: self.policy(),
            peers: &rest,
            health: *self.health_spec(),
            schedule_room: 0,
            sessions: self.sessions(),
        };
        self.apply_locked(&spec, source, now, &[])
            .map(|_| ())
            .map_err(RemoveRefusal::Publish)
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::request::Outcome;
    use crate::spec::Policy;
    use crate::testing::{OwnedAttempt, OwnedTable};
    use crate::write::generation::INIT_OWNER;
    use crate::write::membership::{FREE, RETIRING};

    fn spec<'a>(policy: Policy, peers: &'a [PeerSpec<'a>]) -> UpstreamSpec<'a> {
        UpstreamSpec {
            policy,
            peers,
            health: Default::default(),
            schedule_room: 0,
            sessions: false,
        }
    }

    /// `configured` servers `c0`.. and room for `api_max` added ones.
    fn zone(policy: Policy, configured: usize, api_max: u32) -> OwnedTable {
        let ids: Vec<Vec<u8>> = (0..configured)
            .map(|k| format!("up\0c{k}:80\0127.0.0.1:{}", 8000 + k).into_bytes())
            .collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        OwnedTable::with_api(
            &spec(policy, &peers),
            configured + api_max as usize,
            api_max,
        )
        .unwrap()
    }

    fn id(k: usize) -> Vec<u8> {
        format!("up\x0010.0.0.{k}:80\x0010.0.0.{k}:80").into_bytes()
    }

    fn add(z: Zone<'_>, id: &[u8]) -> Result<Added, AddRefusal> {
        z.add_server(&PeerSpec::new(id), 1_000, 9, |_| true)
    }

    fn remove(z: Zone<'_>, i: usize) -> Result<(), RemoveRefusal> {
        let mark = z.listed(i).ok_or(RemoveRefusal::Gone)?;
        z.remove_server(i, mark, 1_000, 9, |_| true)
    }

    /// The peers `n` requests (keys `k0`.., one a millisecond from 1 s:
    /// the random policies' draws differ) are sent to.
    fn picks(z: Zone<'_>, n: usize) -> Vec<usize> {
        (0..n)
            .map(|k| {
                let now = 1_000 + k as u64;
                let mut a = OwnedAttempt::new(z, now);
                let p = a.pick_keyed(format!("k{k}").as_bytes(), now).unwrap();
                a.release(Outcome::Ok, now).unwrap();
                p.peer as usize
            })
            .collect()
    }

    #[test]
    fn an_added_server_takes_requests_under_every_policy() {
        for policy in crate::request::tests::all() {
            let t = zone(policy, 2, 2);
            let z = t.zone();
            assert_eq!(z.api_servers(), (0, 2), "{policy:?}");
            let before = z.generation();
            // Ids after the configured servers' (which are `configured +
            // slot` here, without positions of their own).
            let a = add(z, &id(1)).unwrap();
            assert_eq!(
                a,
                Added {
                    slot: 2,
                    position: 4
                },
                "{policy:?}"
            );
            assert_eq!(z.generation(), before + 1);
            assert_eq!(z.api_servers(), (1, 2));
            assert!(z.added_through_api(2) && !z.added_through_api(0));
            let v = z.view(2, 1_000).unwrap();
            assert!(v.api && v.identity == &id(1)[..] && v.position == 4);
            assert!(!z.view(0, 1_000).unwrap().api);
            let got = picks(z, 300);
            assert!(got.contains(&2), "{policy:?}: the new server is picked");
            assert!(got.contains(&0) && got.contains(&1), "{policy:?}");
            // The serving generation's source is kept (a resolve does not
            // take the change for a list of its own).
            assert_eq!(z.source(None).unwrap(), [0, 0]);
            let b = add(z, &id(2)).unwrap();
            assert_eq!(
                b,
                Added {
                    slot: 3,
                    position: 5
                },
                "{policy:?}"
            );
            assert!(picks(z, 300).contains(&3), "{policy:?}");
        }
    }

    #[test]
    fn exists_full_and_no_room() {
        let t = zone(Policy::RoundRobin, 2, 2);
        let z = t.zone();
        let configured = z.identity(0).to_vec();
        assert_eq!(add(z, &configured), Err(AddRefusal::Exists));
        add(z, &id(1)).unwrap();
        assert_eq!(add(z, &id(1)), Err(AddRefusal::Exists));
        add(z, &id(2)).unwrap();
        let seq = z.generation();
        assert_eq!(add(z, &id(3)), Err(AddRefusal::Full { max: 2 }));
        assert_eq!(z.generation(), seq, "nothing published");
        // No ha_api_max: none, in a static zone as in one with slots for
        // resolved servers.
        let none = zone(Policy::RoundRobin, 2, 0);
        assert_eq!(add(none.zone(), &id(1)), Err(AddRefusal::Full { max: 0 }));
        let peers = [PeerSpec::new(b"up\0a")];
        let slots = OwnedTable::with_capacity(&spec(Policy::RoundRobin, &peers), 4).unwrap();
        assert_eq!(add(slots.zone(), &id(1)), Err(AddRefusal::Full { max: 0 }));
        // What the upstream cannot take: a backup under hash, an identity
        // longer than a slot, a zero weight.
        let h = zone(
            Policy::Hash {
                mode: crate::spec::HashMode::Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            1,
            2,
        );
        let backup = PeerSpec {
            backup: true,
            ..PeerSpec::new(b"up\0b")
        };
        assert_eq!(
            h.zone().add_server(&backup, 0, 9, |_| true),
            Err(AddRefusal::Publish(Error::InvalidArgument))
        );
        let long = vec![b'x'; crate::layout::SLOT_ID_MAX + 1];
        assert_eq!(
            add(h.zone(), &long),
            Err(AddRefusal::Publish(Error::TooLarge))
        );
        assert_eq!(
            h.zone()
                .add_server(&PeerSpec::new(b"up\0w").weight(0), 0, 9, |_| true),
            Err(AddRefusal::Publish(Error::InvalidArgument))
        );
        assert_eq!(h.zone().api_servers(), (0, 2));
        // Another builder: busy (after the lease wait).
        z.sync().builder.store(42, Relaxed);
        let t2 = zone(Policy::RoundRobin, 1, 1);
        t2.zone().sync().builder.store(42, Relaxed);
        assert_eq!(
            add(t2.zone(), &id(1)),
            Err(AddRefusal::Publish(Error::Busy))
        );
        z.sync().builder.store(0, Relaxed);
        // Invalid room: more API servers than slots beyond the configured.
        let peers = [PeerSpec::new(b"up\0a")];
        assert_eq!(
            OwnedTable::with_api(&spec(Policy::RoundRobin, &peers), 3, 3).unwrap_err(),
            Error::InvalidArgument
        );
    }

    #[test]
    fn adding_and_removing_leaves_the_others_as_they_were() {
        let t = zone(Policy::RoundRobin, 3, 2);
        let z = t.zone();
        z.set_admin(0, Some(true), None, 0).unwrap();
        z.set_admin(1, None, Some(true), 0).unwrap();
        z.set_weight(2, Some(5)).unwrap();
        z.publish(9, |_| true).unwrap();
        // Some statistics on server 2.
        for _ in 0..5 {
            let mut a = OwnedAttempt::new(z, 1_000);
            assert_eq!(a.pick(1_000).unwrap().peer, 2);
            a.release(Outcome::Ok, 1_000).unwrap();
        }
        z.states()[2].ewma_bits.store(7.5f64.to_bits(), Relaxed);
        type Seen = (
            bool,
            bool,
            bool,
            u32,
            Option<u32>,
            u32,
            crate::layout::stats::PeerStats,
            u32,
            Option<f64>,
            u32,
        );
        let seen = |i: usize| -> Seen {
            let v = z.view(i, 2_000).unwrap();
            (
                v.down,
                v.admin_down,
                v.drain,
                v.weight,
                v.weight_override,
                v.fails,
                v.stats,
                v.position,
                v.latency_ms,
                v.configured_weight,
            )
        };
        let before: Vec<Seen> = (0..3).map(seen).collect();
        let a = add(z, &id(1)).unwrap();
        assert_eq!((0..3).map(seen).collect::<Vec<_>>(), before);
        // The new server is picked beside server 2 (5 to 1).
        let got = picks(z, 60);
        assert_eq!(got.iter().filter(|&&p| p == a.slot).count(), 10);
        assert!(got.iter().all(|&p| p == 2 || p == a.slot));
        let before: Vec<Seen> = (0..3).map(seen).collect();
        remove(z, a.slot).unwrap();
        assert_eq!((0..3).map(seen).collect::<Vec<_>>(), before);
        assert!(picks(z, 10).iter().all(|&p| p == 2));
    }

    #[test]
    fn a_removed_server_finishes_its_requests_and_its_slot_is_reused_later() {
        let t = zone(Policy::LeastConn, 2, 1);
        let z = t.zone();
        let a = add(z, &id(1)).unwrap();
        // A request in flight on it.
        let mut held = loop {
            let mut r = OwnedAttempt::new(z, 1_000);
            if r.pick(1_000).unwrap().peer as usize == a.slot {
                break r;
            }
            r.release(Outcome::Ok, 1_000).unwrap();
        };
        let seq = z.generation();
        remove(z, a.slot).unwrap();
        assert_eq!(z.generation(), seq + 1);
        assert_eq!(z.slot_status(a.slot), Some(RETIRING));
        assert_eq!(z.api_servers(), (0, 1));
        assert_eq!(z.states()[a.slot].in_flight.load(Relaxed), 1);
        let v = z.view(a.slot, 1_000).unwrap();
        assert_eq!(v.state, crate::write::ServerState::Draining);
        assert!(z.listed(a.slot).is_some(), "listed while its request runs");
        assert!(picks(z, 50).iter().all(|&p| p != a.slot), "no new request");
        // Removing it again: gone.
        let m = z.listed(a.slot).unwrap();
        assert_eq!(
            z.remove_server(a.slot, m, 1_000, 9, |_| true),
            Err(RemoveRefusal::Gone)
        );
        // Its slot is the only room: held by the request (in flight, and
        // its pin names it), so no add now.
        assert_eq!(add(z, &id(2)), Err(AddRefusal::Publish(Error::NoSpace)));
        held.release(Outcome::Ok, 1_000).unwrap();
        assert_eq!(z.states()[a.slot].in_flight.load(Relaxed), 0);
        assert_eq!(
            add(z, &id(2)),
            Err(AddRefusal::Publish(Error::NoSpace)),
            "its pin still names the slot"
        );
        drop(held);
        assert!(z.listed(a.slot).is_none());
        // Added again, the same identity: the same slot, a new server (a
        // new id, fresh statistics), as NGINX Plus.
        let b = add(z, &id(1)).unwrap();
        assert_eq!(b.slot, a.slot);
        assert_eq!(b.position, a.position + 1);
        assert_eq!(z.by_position(a.position), None, "an id never comes back");
        assert_eq!(z.by_position(b.position).map(|(i, _)| i), Some(b.slot));
        assert_eq!(z.view(b.slot, 1_000).unwrap().stats.requests, 0);
        assert!(picks(z, 30).contains(&b.slot));
    }

    #[test]
    fn a_removed_identity_added_while_its_requests_run_is_a_new_server() {
        let t = zone(Policy::RoundRobin, 1, 2);
        let z = t.zone();
        let a = add(z, &id(1)).unwrap();
        let held = loop {
            let mut r = OwnedAttempt::new(z, 1_000);
            if r.pick(1_000).unwrap().peer as usize == a.slot {
                break r;
            }
            r.release(Outcome::Ok, 1_000).unwrap();
        };
        remove(z, a.slot).unwrap();
        // Its RETIRING slot is not taken back: a FREE one, a new id.
        let b = add(z, &id(1)).unwrap();
        assert_ne!(b.slot, a.slot);
        assert_eq!(b.position, a.position + 1);
        assert_eq!(z.slot_status(a.slot), Some(RETIRING));
        assert_eq!(z.api_servers(), (1, 2));
        drop(held);
        // Removing the new one, adding it again: the old slot is reused.
        remove(z, b.slot).unwrap();
        let c = add(z, &id(1)).unwrap();
        assert_eq!(c.position, b.position + 1);
        assert_eq!(z.slot_status(c.slot), Some(LIVE));
    }

    #[test]
    fn configured_servers_are_not_removed() {
        let t = zone(Policy::RoundRobin, 2, 2);
        let z = t.zone();
        assert_eq!(remove(z, 0), Err(RemoveRefusal::NotApi));
        assert_eq!(remove(z, 2), Err(RemoveRefusal::Gone), "a FREE slot");
        let a = add(z, &id(1)).unwrap();
        let m = z.listed(a.slot).unwrap();
        // The slot given to another server since the lookup: gone.
        remove(z, a.slot).unwrap();
        assert_eq!(
            z.remove_server(a.slot, m, 0, 9, |_| true),
            Err(RemoveRefusal::Gone)
        );
        assert_eq!(
            z.remove_server(99, m, 0, 9, |_| true),
            Err(RemoveRefusal::Gone)
        );
        // Resolved servers (a slot a list filled) are not the API's.
        let peers = [PeerSpec::new(b"up\0a")];
        let r = OwnedTable::with_api(&spec(Policy::RoundRobin, &peers), 3, 1).unwrap();
        let rz = r.zone();
        let list = [PeerSpec::new(b"up\0a"), PeerSpec::new(b"up\0r")];
        rz.apply_membership(&spec(Policy::RoundRobin, &list), [1, 1], 9, |_| true, 0)
            .unwrap();
        assert_eq!(remove(rz, 1), Err(RemoveRefusal::NotApi));
        assert_eq!(rz.api_servers(), (0, 1));
    }

    #[test]
    fn backups_and_primaries_keep_their_groups() {
        let peers = [
            PeerSpec::new(b"up\0p"),
            PeerSpec {
                backup: true,
                ..PeerSpec::new(b"up\0b")
            },
        ];
        let t = OwnedTable::with_api(&spec(Policy::RoundRobin, &peers), 4, 2).unwrap();
        let z = t.zone();
        let p = add(z, &id(1)).unwrap();
        let b = z
            .add_server(
                &PeerSpec {
                    backup: true,
                    ..PeerSpec::new(&id(2))
                },
                0,
                9,
                |_| true,
            )
            .unwrap();
        let s = z.serving();
        let primaries: Vec<usize> = s.group(crate::layout::PRIMARY).iter().collect();
        let backups: Vec<usize> = s.group(crate::layout::BACKUP).iter().collect();
        assert_eq!(primaries, [0, p.slot]);
        assert_eq!(backups, [1, b.slot]);
        assert!(z.view(b.slot, 0).unwrap().backup);
        // The backup is used only when the primaries are down.
        assert!(picks(z, 20).iter().all(|&k| k == 0 || k == p.slot));
        z.set_admin(0, Some(true), None, 0).unwrap();
        z.set_admin(p.slot, Some(true), None, 0).unwrap();
        let got = picks(z, 20);
        assert!(got.contains(&1) && got.contains(&b.slot), "{got:?}");
    }

    #[test]
    fn a_fresh_zone_takes_servers_back_before_and_after_workers_start() {
        // At config time (the master, the state file), then as a worker.
        let t = zone(Policy::RoundRobin, 1, 3);
        let z = t.zone();
        let a = z
            .add_server(&PeerSpec::new(&id(1)), 0, INIT_OWNER, |_| true)
            .unwrap();
        assert_eq!(z.sync().builder.load(Relaxed), 0, "lease given back");
        let b = z
            .add_server(&PeerSpec::new(&id(2)).weight(3), 0, 4242, |_| true)
            .unwrap();
        assert_eq!((a.position, b.position), (2, 3));
        assert_eq!(z.view(b.slot, 0).unwrap().configured_weight, 3);
        // A server's own position is ignored: the zone numbers it.
        let c = z
            .add_server(
                &PeerSpec {
                    position: Some(0),
                    ..PeerSpec::new(&id(3))
                },
                0,
                9,
                |_| true,
            )
            .unwrap();
        assert_eq!(c.position, 4);
        assert_eq!(z.api_servers(), (3, 3));
    }

    #[test]
    fn new_servers_follow_the_new_server_rules() {
        let ids: Vec<Vec<u8>> = (0..2).map(|k| format!("up\0c{k}").into_bytes()).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|i| PeerSpec::new(i)).collect();
        let slow = UpstreamSpec {
            health: crate::spec::HealthSpec {
                slow_start_ms: 10_000,
                ..Default::default()
            },
            ..spec(Policy::RoundRobin, &peers)
        };
        let t = OwnedTable::with_api(&slow, 3, 1).unwrap();
        let a = add(t.zone(), &id(1)).unwrap();
        assert!(t
            .zone()
            .view(a.slot, 2_000)
            .unwrap()
            .slow_start_percent
            .is_some());
        let mandatory = UpstreamSpec {
            health: crate::spec::HealthSpec {
                flags: crate::spec::HealthSpec::CHECK | crate::spec::HealthSpec::MANDATORY,
                interval_ms: 1_000,
                timeout_ms: 500,
                fails: 1,
                passes: 1,
                ..Default::default()
            },
            ..spec(Policy::RoundRobin, &peers)
        };
        let t = OwnedTable::with_api(&mandatory, 3, 1).unwrap();
        let a = add(t.zone(), &id(1)).unwrap();
        assert_eq!(
            t.zone().view(a.slot, 0).unwrap().state,
            crate::write::ServerState::Checking
        );
    }

    #[test]
    fn a_rebuild_carries_api_servers_into_the_new_room() {
        let old = zone(Policy::RoundRobin, 2, 3);
        let oz = old.zone();
        let x = add(oz, &id(1)).unwrap();
        let y = add(oz, &id(2)).unwrap();
        let w = add(oz, &id(3)).unwrap();
        // A removed one stays removed.
        let gone = add(oz, &id(4));
        assert_eq!(gone, Err(AddRefusal::Full { max: 3 }));
        oz.set_admin(x.slot, None, Some(true), 0).unwrap();
        oz.set_weight(y.slot, Some(4)).unwrap();
        oz.publish(9, |_| true).unwrap();
        for _ in 0..40 {
            let mut a = OwnedAttempt::new(oz, 1_000);
            a.pick(1_000).unwrap();
            a.release(Outcome::Ok, 1_000).unwrap();
        }
        let y_requests = oz.view(y.slot, 1_000).unwrap().stats.requests;
        assert!(y_requests > 0);
        // The new configuration: c0, c1 and y's address as a configured
        // server of its own; room for one API server.
        let ids: Vec<Vec<u8>> = (0..2)
            .map(|k| oz.identity(k).to_vec())
            .chain([id(2)])
            .collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|i| PeerSpec::new(i)).collect();
        let new = OwnedTable::with_api(&spec(Policy::RoundRobin, &peers), 4, 1).unwrap();
        let z = new.zone();
        let c = z.carry_from(oz, 5_000);
        assert_eq!(c.api_added, 1);
        assert_eq!(c.api_dropped, [w.slot], "past the new ha_api_max");
        assert_eq!(c.carried, 4, "c0, c1, y (configured now), x");
        // x: added back, marked, its drain carried, a new id.
        let xi = (0..z.peers())
            .find(|&i| z.slot_status(i) == Some(LIVE) && z.identity(i) == &id(1)[..])
            .unwrap();
        assert!(z.added_through_api(xi));
        let v = z.view(xi, 5_000).unwrap();
        assert!(v.drain && v.slow_start_percent.is_none());
        assert_eq!(v.position, 6, "the new zone's first id for a newcomer");
        // y: configured now, its state carried (override, statistics).
        let v = z.view(2, 5_000).unwrap();
        assert!(!v.api);
        assert_eq!((v.weight_override, v.weight), (Some(4), 4));
        assert_eq!(v.stats.requests, y_requests);
        assert_eq!(z.api_servers(), (1, 1));
        // w is nowhere.
        assert!(
            (0..z.peers()).all(|i| z.slot_status(i) == Some(FREE) || z.identity(i) != &id(3)[..])
        );
        // A zone without ha_api_max drops every one.
        let plain = OwnedTable::new(&spec(Policy::RoundRobin, &peers[..2])).unwrap();
        let c = plain.zone().carry_from(oz, 5_000);
        assert_eq!((c.api_added, c.api_dropped.len()), (0, 3));
        assert_eq!(c.carried, 2);
        // Picks: the drained x takes nothing, the rest do.
        let got = picks(z, 40);
        assert!(!got.contains(&xi));
    }

    /// An upstream of `c0` and a resolved name, room for `resolve_max`
    /// resolved servers and `api_max` added ones.
    fn resolving(resolve_max: usize, api_max: u32) -> OwnedTable {
        let peers = [PeerSpec::new(b"up\0c0:80\x00127.0.0.1:8000")];
        OwnedTable::with_api(
            &spec(Policy::RoundRobin, &peers),
            1 + resolve_max + api_max as usize,
            api_max,
        )
        .unwrap()
    }

    fn resolved(k: usize) -> Vec<u8> {
        format!("up\0r:80\x0010.1.0.{k}:80").into_bytes()
    }

    /// The resolve path's list `c0` and `ids`, from list `list_id`.
    fn resolve(z: Zone<'_>, ids: &[Vec<u8>], list_id: u64) -> crate::write::membership::Resolved {
        let c0 = z.identity(0).to_vec();
        let mut peers = vec![PeerSpec::new(&c0)];
        peers.extend(ids.iter().map(|i| PeerSpec::new(i)));
        z.resolve(
            &spec(Policy::RoundRobin, &peers),
            [list_id, 1],
            None,
            9,
            |_| true,
            1_000,
        )
        .unwrap()
    }

    fn live(z: Zone<'_>) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = z
            .member_slots()
            .into_iter()
            .filter(|&i| z.slot_status(i) == Some(LIVE))
            .map(|i| z.identity(i).to_vec())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_resolve_after_an_add_keeps_the_api_server() {
        let t = resolving(2, 2);
        let z = t.zone();
        let a = add(z, &id(1)).unwrap();
        z.set_weight(a.slot, Some(3)).unwrap();
        let r = resolve(z, &[resolved(1), resolved(2)], 1);
        assert_eq!(r.refused, None);
        assert_eq!(r.applied.unwrap().added, 2);
        assert_eq!(z.slot_status(a.slot), Some(LIVE));
        assert!(z.added_through_api(a.slot));
        assert_eq!(z.api_servers(), (1, 2));
        let v = z.view(a.slot, 1_000).unwrap();
        assert_eq!((v.position, v.weight), (a.position, 3), "its own state");
        assert!(picks(z, 40).contains(&a.slot));
        // A DNS change: one address out, one in; the API's stays.
        let r = resolve(z, &[resolved(2), resolved(3)], 2);
        assert_eq!(r.refused, None);
        let ap = r.applied.unwrap();
        assert_eq!((ap.retired, ap.added, ap.deferred), (1, 1, 0));
        let mut want = vec![z.identity(0).to_vec(), id(1), resolved(2), resolved(3)];
        want.sort();
        assert_eq!(live(z), want);
        assert!(z.added_through_api(a.slot));
        // An empty list: the API's server still serves.
        resolve(z, &[], 4);
        assert_eq!(z.slot_status(a.slot), Some(LIVE));
        assert!(picks(z, 20).contains(&a.slot));
    }

    #[test]
    fn a_list_past_its_room_is_refused_and_the_api_keeps_its_own() {
        let t = resolving(2, 2);
        let z = t.zone();
        let a = add(z, &id(1)).unwrap();
        let seq = z.generation();
        // c0 and three resolved: 4 > 5 − 2.
        let r = resolve(z, &[resolved(1), resolved(2), resolved(3)], 1);
        assert_eq!(r.refused, Some(Error::NoSpace));
        assert_eq!(z.generation(), seq);
        assert_eq!(z.slot_status(a.slot), Some(LIVE));
        assert_eq!(z.api_servers(), (1, 2));
        // Without any API server, the same room.
        let t = resolving(2, 2);
        let r = resolve(t.zone(), &[resolved(1), resolved(2), resolved(3)], 1);
        assert_eq!(r.refused, Some(Error::NoSpace));
        // Within its room: DNS leaves the API's two slots free.
        let r = resolve(t.zone(), &[resolved(1), resolved(2)], 2);
        assert_eq!(r.refused, None);
        add(t.zone(), &id(1)).unwrap();
        add(t.zone(), &id(2)).unwrap();
        assert_eq!(add(t.zone(), &id(3)), Err(AddRefusal::Full { max: 2 }));
        assert_eq!(t.zone().api_servers(), (2, 2));
        assert_eq!(live(t.zone()).len(), 5);
    }

    #[test]
    fn adds_and_removes_after_a_resolve_leave_dns_servers_alone() {
        let t = resolving(2, 2);
        let z = t.zone();
        resolve(z, &[resolved(1), resolved(2)], 1);
        let source = z.serving().header().source;
        let a = add(z, &id(1)).unwrap();
        assert_eq!(z.serving().header().source, source, "not a new list");
        assert_eq!(live(z).len(), 4);
        // The same list again (every worker sees it): nothing to do, the
        // API's server stays.
        let r = resolve(z, &[resolved(1), resolved(2)], 1);
        assert_eq!(r.applied, None);
        assert_eq!(z.slot_status(a.slot), Some(LIVE));
        // A resolved server is not the API's to remove.
        let r1 = r.lookup.slots[1].unwrap() as usize;
        assert_eq!(remove(z, r1), Err(RemoveRefusal::NotApi));
        remove(z, a.slot).unwrap();
        assert_eq!(z.slot_status(a.slot), Some(RETIRING));
        let mut want = vec![z.identity(0).to_vec(), resolved(1), resolved(2)];
        want.sort();
        assert_eq!(live(z), want);
        // A list naming the removed server's identity does not revive
        // its slot: a new slot, not the API's.
        let r = resolve(z, &[resolved(1), id(1)], 2);
        assert_eq!(r.refused, None);
        let s = r.lookup.slots[2].unwrap() as usize;
        assert!(!z.added_through_api(s));
    }

    #[test]
    fn an_identity_is_one_live_slot_whoever_lists_it() {
        let t = resolving(2, 2);
        let z = t.zone();
        // POSTed first: DNS's list leaves it out, its lookup finds the
        // API's slot, and the list's room is not spent on it.
        let a = add(z, &id(7)).unwrap();
        let r = resolve(z, &[id(7), resolved(1), resolved(2)], 1);
        assert_eq!(r.refused, None);
        assert_eq!(r.lookup.slots[1], Some(a.slot as u32));
        assert!(z.added_through_api(a.slot));
        assert_eq!(live(z).len(), 4);
        // Listed first: a POST of it is refused.
        assert_eq!(add(z, &resolved(1)), Err(AddRefusal::Exists));
        assert_eq!(z.api_servers(), (1, 2));
    }
}
