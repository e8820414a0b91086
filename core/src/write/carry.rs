//! Carrying per-peer state by identity into a fresh zone
//!
//! An unchanged upstream keeps its whole zone across `nginx -s reload`
//! ([`Zone::attach`]). A changed one — a server added, a weight edited —
//! gets a fresh zone, and what was learnt about the servers that stayed is
//! carried over: a server disabled by `max_fails` stays disabled until its
//! `fail_timeout` runs out, its latency estimate is kept, and so are the
//! admin state and weight override set through the API. Peers are matched
//! by identity (upstream name, `server` string and address); a server
//! written several times matches occurrence by occurrence. A server
//! removed from the configuration drops its state, override included.
//!
//! [`carry_peer`] is the one place that moves a peer's state: it names
//! every field of [`PeerState`] and [`PeerCold`] in a destructuring
//! pattern, so adding a field without deciding how it is carried does not
//! compile.
//!
//! Statistics are carried too ([`Zone::carry_stats`]): every counter a
//! server reports is the same after the reload as before.
//!
//! Health is carried as far as the new configuration still has the
//! feature ([`carry_health`]): a server found unhealthy by its checks
//! stays unhealthy (and is checked on its old schedule, so a reload does
//! not set off a burst of checks), one known healthy starts up even under
//! `mandatory` (NGINX Plus's `persistent`, always: the point of keeping
//! health in shared memory), an ejection runs to its end, a slow start
//! goes on. A server new to a running upstream slow-starts, or under
//! `mandatory` starts `checking` and slow-starts once its first check
//! passes.
//!
//! In-flight counts are not carried into a fresh zone: the old workers
//! still hold those requests and release them in the old zone, which they
//! keep until they exit.
//!
//! Servers added through the API (`ha_api_max`, see `added.rs`) are added
//! to the new zone, by identity, into its API room, and then carried as
//! the others are: the old zone's LIVE API slots in slot order, up to the
//! new zone's `ha_api_max` (those past it are [`Carried::api_dropped`],
//! for a warning that names them; all of them when the new configuration
//! has no `ha_api_max`). A server the new configuration lists itself is
//! carried as a configured one. Each added one gets a new id (the new
//! zone's count; its old id might be a configured server's now) and its
//! own configuration as the API gave it (weight, limits, `backup`,
//! `down`); one the new configuration cannot take (a `backup` under a
//! policy without backups) is dropped too. They are added under the
//! builder lease, as [`Zone::add_server`] adds, before the zone is shared:
//! a fresh zone always serves its first generation, so the additions
//! publish a second one, and the carried overrides a last one.
//!
//! The request queue (`ha_queue`) carries its counters (served, timeouts,
//! abandoned, overflows) when both zones have one, not its waiters: they
//! belong to old workers, which serve them from the old zone's capacity
//! or time them out there (docs/queue-design.md §4); newcomers of the new
//! configuration queue in the new zone.

use core::sync::atomic::Ordering::Relaxed;
use std::collections::HashMap;

use crate::layout::{PeerCold, PeerState, Zone};

/// Moves one peer's state from `(from, from_cold)` to `(to, to_cold)`.
pub(crate) fn carry_peer(from: (&PeerState, &PeerCold), to: (&PeerState, &PeerCold)) {
    let (
        PeerState {
            // Held by the old workers, released in the old zone.
            in_flight: _,
            fails,
            checked_ms,
            accessed_ms,
            ewma_bits,
            ewma_stamp_ms,
            // Derived: stored by the next publication.
            weight: _,
            // Configuration: the new one's.
            max_conns: _,
            max_fails: _,
            flags,
            fail_timeout_ms: _,
        },
        PeerCold {
            id_hash: _,
            id_off: _,
            id_len: _,
            server_off: _,
            server_len: _,
            conf_weight: _,
            weight_override,
            position: _,
            // The slot's life cycle is the new zone's own.
            status: _,
            epoch: _,
            // Configuration: the new zone's.
            sid_len: _,
            sid_hash: _,
            sid_off: _,
            // The new zone's: `carry_from` marks the servers it adds back.
            origin: _,
        },
    ) = from;
    let (t, tc) = to;
    t.fails.store(fails.load(Relaxed), Relaxed);
    t.checked_ms.store(checked_ms.load(Relaxed), Relaxed);
    t.accessed_ms.store(accessed_ms.load(Relaxed), Relaxed);
    t.ewma_bits.store(ewma_bits.load(Relaxed), Relaxed);
    t.ewma_stamp_ms.store(ewma_stamp_ms.load(Relaxed), Relaxed);
    // Only the admin bits move; backup and down are the configuration's.
    t.flags
        .fetch_or(flags.load(Relaxed) & PeerState::ADMIN, Relaxed);
    tc.weight_override
        .store(weight_override.load(Relaxed), Relaxed);
}

/// Moves peer `j`'s health in `old` to peer `i` of the fresh zone `new`,
/// keeping only what `new`'s configuration still has.
pub(crate) fn carry_health(new: Zone<'_>, i: usize, old: Zone<'_>, j: usize) {
    let (hs, ohs) = (*new.health_spec(), *old.health_spec());
    let (t, f) = (&new.states()[i], &old.states()[j]);
    let (tr, fr) = (&new.health_rows()[i], &old.health_rows()[j]);
    let oflags = f.flags.load(Relaxed);
    if hs.checks() && ohs.checks() {
        let crate::layout::health::HealthRow {
            due_ms,
            last_ms,
            checks,
            fails,
            unhealthy,
            rise,
            fall,
            last,
            prober,
            ..
        } = fr;
        tr.due_ms.store(due_ms.load(Relaxed), Relaxed);
        tr.last_ms.store(last_ms.load(Relaxed), Relaxed);
        tr.checks.store(checks.load(Relaxed), Relaxed);
        tr.fails.store(fails.load(Relaxed), Relaxed);
        tr.unhealthy.store(unhealthy.load(Relaxed), Relaxed);
        tr.rise.store(rise.load(Relaxed), Relaxed);
        tr.fall.store(fall.load(Relaxed), Relaxed);
        tr.last.store(last.load(Relaxed), Relaxed);
        tr.prober.store(prober.load(Relaxed), Relaxed);
        // Health was known: the old verdict stands, checking included.
        let keep = oflags & (PeerState::CHECKING | PeerState::UNHEALTHY);
        t.flags.fetch_and(!PeerState::CHECKING, Relaxed);
        t.flags.fetch_or(keep, Relaxed);
    }
    if hs.outlier() {
        tr.consecutive_5xx
            .store(fr.consecutive_5xx.load(Relaxed), Relaxed);
        tr.consecutive_errors
            .store(fr.consecutive_errors.load(Relaxed), Relaxed);
        tr.ejections.store(fr.ejections.load(Relaxed), Relaxed);
        tr.ejection_end_ms
            .store(fr.ejection_end_ms.load(Relaxed), Relaxed);
        if oflags & PeerState::EJECTED != 0 {
            tr.ejected_until_ms
                .store(fr.ejected_until_ms.load(Relaxed), Relaxed);
            new.health_line().ejected.fetch_add(1, Relaxed);
            t.flags.fetch_or(PeerState::EJECTED, Relaxed);
        }
    }
    if hs.slow_start_ms != 0 && oflags & PeerState::SLOW != 0 {
        let from = fr.ramp_from_ms.load(Relaxed);
        tr.ramp_from_ms.store(from, Relaxed);
        new.note_ramp(from);
        t.flags.fetch_or(PeerState::SLOW, Relaxed);
    }
}

/// What [`Zone::carry_from`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// Peers whose state was carried (API servers added back included).
    pub carried: usize,
    /// Servers added through the API to the old zone, added back.
    pub api_added: usize,
    /// Servers added through the API to the old zone that the new one
    /// does not take (past its `ha_api_max`, or refused by its
    /// configuration): their slots in the old zone, to name them.
    pub api_dropped: Vec<usize>,
}

impl Zone<'_> {
    /// Copies the state of every peer that `old` also has into this
    /// (fresh) zone, after adding back the servers added to `old` through
    /// the API (see the module note), and publishes a generation with the
    /// carried weight overrides. `now` starts the slow start of the
    /// servers `old` did not have. Config time: nobody else uses this
    /// zone yet.
    pub fn carry_from(&self, old: Zone<'_>, now: u64) -> Carried {
        let mut result = Carried::default();
        self.add_back(old, now, &mut result);
        // LIVE slots first, so that an identity both LIVE and RETIRING
        // (removed, then added again) carries the LIVE one's state.
        let mut by_id: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for status in [super::membership::RETIRING, super::membership::LIVE] {
            for j in (0..old.peers()).rev() {
                if old.slot_status(j) == Some(status) {
                    by_id.entry(old.identity(j)).or_default().push(j);
                }
            }
        }
        let (old_states, old_colds) = (old.states(), old.colds());
        let (states, colds) = (self.states(), self.colds());
        let mut carried = 0;
        for i in 0..self.peers() {
            if self.slot_status(i) != Some(super::membership::LIVE) {
                continue;
            }
            let Some(j) = by_id.get_mut(self.identity(i)).and_then(Vec::pop) else {
                // New to a running upstream.
                if states[i].flags.load(Relaxed) & PeerState::CHECKING != 0 {
                    self.health_rows()[i]
                        .ramp_from_ms
                        .store(crate::layout::health::RAMP_ON_FIRST_PASS, Relaxed);
                } else {
                    self.begin_slow_start(i, now);
                }
                continue;
            };
            carry_peer((&old_states[j], &old_colds[j]), (&states[i], &colds[i]));
            carry_health(*self, i, old, j);
            self.carry_stats(i, old, j);
            carried += 1;
        }
        if let (Some(q), Some(oq)) = (self.queue(), old.queue()) {
            q.carry_from(oq);
        }
        self.health_changed();
        self.update_panic();
        // Admin and health flags came over: the least_conn tree excludes
        // on them (a publish below rebuilds it again; harmless).
        self.lc_rebuild();
        if self.weights_pending() {
            // Config time, in the master: nobody else builds.
            let _ = self.publish(super::generation::INIT_OWNER, |_| true);
        }
        result.carried = carried;
        result
    }

    /// Adds `old`'s LIVE API servers that this zone does not list to its
    /// API room, all in one generation, or one by one when that is
    /// refused; each added one starts as a configured server would (no
    /// slow start, `checking` under `mandatory`), for `carry_from` to
    /// carry its state over.
    fn add_back(&self, old: Zone<'_>, now: u64, result: &mut Carried) {
        let api: Vec<usize> = (0..old.peers())
            .filter(|&j| {
                old.slot_status(j) == Some(super::membership::LIVE) && old.added_through_api(j)
            })
            .collect();
        if api.is_empty() {
            return;
        }
        let Ok(_lease) = self.lease_guard(super::generation::INIT_OWNER, &|_| true) else {
            result.api_dropped = api;
            return;
        };
        let listed: std::collections::HashSet<&[u8]> = self
            .member_slots()
            .into_iter()
            .map(|i| self.identity(i))
            .collect();
        let room = self.api_max() as usize;
        let mut take = Vec::new();
        for j in api {
            if listed.contains(old.identity(j)) {
                // Configured now: carried as such.
                continue;
            }
            if take.len() < room {
                take.push(j);
            } else {
                result.api_dropped.push(j);
            }
        }
        let specs: Vec<_> = take.iter().map(|&j| old.member_spec(j)).collect();
        let added: Vec<(usize, usize)> = match self.add_locked(&specs, now) {
            Ok(slots) => take.iter().copied().zip(slots).collect(),
            Err(_) => {
                let mut one_by_one = Vec::new();
                for (k, &j) in take.iter().enumerate() {
                    match self.add_locked(&specs[k..=k], now) {
                        Ok(slots) => one_by_one.push((j, slots[0])),
                        Err(_) => result.api_dropped.push(j),
                    }
                }
                one_by_one
            }
        };
        result.api_dropped.sort_unstable();
        let mandatory = self.health_spec().flags & crate::spec::HealthSpec::MANDATORY != 0;
        for &(_, i) in &added {
            // As `init` starts a configured server: `carry_from` carries
            // the rest (health, slow start in progress) as for one.
            let s = &self.states()[i];
            let flags = s.flags.load(Relaxed);
            let keep = flags & (PeerState::BACKUP | PeerState::DOWN);
            s.flags.store(
                keep | if mandatory { PeerState::CHECKING } else { 0 },
                Relaxed,
            );
            self.health_rows()[i].ramp_from_ms.store(0, Relaxed);
        }
        result.api_added = added.len();
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::Ordering::Relaxed;

    use crate::request::Outcome;
    use crate::spec::{PeerSpec, Policy, UpstreamSpec};
    use crate::testing::{OwnedAttempt, OwnedTable};

    #[test]
    fn state_and_admin_carry_into_the_new_zone() {
        let old_peers = [
            PeerSpec::new(b"up\0a"),
            PeerSpec::new(b"up\0b"),
            PeerSpec::new(b"up\0b"),
            PeerSpec::new(b"up\0gone"),
        ];
        let old = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &old_peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let oz = old.zone();
        // Fail "a" once (max_fails=1): disabled for 10 s from t=1000.
        let mut a = OwnedAttempt::new(oz, 1000);
        assert_eq!(a.pick(1000).unwrap().peer, 0);
        a.release(Outcome::Failed, 1000).unwrap();
        // The second "b" has a latency estimate, is draining, reweighted.
        oz.states()[2].ewma_bits.store(5.0f64.to_bits(), Relaxed);
        oz.set_admin(2, None, Some(true), 0).unwrap();
        oz.set_weight(2, Some(4)).unwrap();
        oz.set_admin(3, Some(true), None, 0).unwrap();

        // Reload: "c" added in front, "a" reweighted (its identity is the
        // same), both "b" kept, "gone" removed.
        let new_peers = [
            PeerSpec::new(b"up\0c"),
            PeerSpec::new(b"up\0a").weight(3),
            PeerSpec::new(b"up\0b"),
            PeerSpec::new(b"up\0b"),
        ];
        let new = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &new_peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let z = new.zone();
        assert_eq!(z.carry_from(oz, 0).carried, 3);
        let s = z.states();
        assert_eq!(s[1].fails.load(Relaxed), 1);
        assert_eq!(f64::from_bits(s[3].ewma_bits.load(Relaxed)), 5.0);
        assert!(z.view(3, 2000).unwrap().drain);
        assert_eq!(
            z.view(3, 2000).unwrap().weight,
            4,
            "override carried and published"
        );
        assert_eq!(z.generation(), 2);
        assert!(!z.view(0, 2000).unwrap().down, "new server starts up");
        for _ in 0..20 {
            let mut a = OwnedAttempt::new(z, 2000);
            let p = a.pick(2000).unwrap();
            assert!(
                p.peer == 0 || p.peer == 2,
                "a is failed, second b drained: {p:?}"
            );
            a.release(Outcome::Ok, 2000).unwrap();
        }
        assert!(s.iter().all(|p| p.in_flight.load(Relaxed) == 0));
    }
}
