//! Backend selection: the per-request `get` / `free` pair
//!
//! [`Table::get`] picks a peer for the next try of an attempt, skipping
//! peers already tried, and moves the attempt to the backup servers once no
//! primary is eligible (nginx: backups only when no primary is). Each policy
//! lives in its own file and only chooses among one group of peers.
//! [`Table::free`] ends the try and updates passive health.
//!
//! A request goes through its zone: [`Zone::begin`] pins the generation
//! serving at its start, [`Zone::get_keyed`] and [`Zone::free`] run each
//! try on that generation (so a retry never mixes indices of two
//! generations), and [`Zone::end`] drops the pin.
//!
//! In a dynamic zone (peer slots, see [`crate::write::membership`]) a try
//! instead starts on the newest generation: when another was published
//! since the request pinned its own, [`Zone::get_keyed`] pins the new one
//! and then drops the old (*re-plans*). Peer indices are slots in every
//! generation, so the tried set stays valid: tried slots stay excluded,
//! slots that left are absent, servers that came are candidates, and a
//! retry is refused only when nothing untried is eligible — never because
//! the membership changed under it. Only a try's end may be followed by a
//! re-plan, so the slot of a try in progress always stays named by the
//! pinned generation (the reuse rule's premise).

use crate::attempt::Attempt;
use crate::error::Error;
use crate::health::outlier::Ejection;
use crate::health::panic::PanicReport;
use crate::health::{self, Mode, Transition};
use crate::layout::queue::Wake;
use crate::layout::stats::TryInfo;
use crate::layout::{flight, Table, Zone, BACKUP, TOTAL};
use crate::policy::{self, ewma};
use crate::spec::Policy;

/// The peer chosen for one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Table-wide peer index (primaries first, then backups).
    pub peer: u32,
    /// Whether it is a backup server.
    pub backup: bool,
    /// Whether it is the server the request is bound to (`ha_sticky`);
    /// `false`: the policy chose it.
    pub bound: bool,
}

/// The server a request is bound to, as the request names it
/// (`ha_sticky`; see [`crate::policy::sticky`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'k> {
    /// Not bound.
    None,
    /// By session id: a cookie's or a route variable's value.
    Sid(&'k [u8]),
    /// By the hash of a session id ([`crate::spec::sid_hash`]): what a
    /// learnt session maps to.
    Hash(u64),
}

/// How a try ended, as nginx reports it to `free`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response was accepted.
    Ok,
    /// Connection error, timeout, or a status listed in
    /// `proxy_next_upstream`: counts toward `max_fails`.
    Failed,
    /// Passed on to the next peer without blame (403/404).
    Next,
}

/// What `free` tells the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The peer of the finished try.
    pub peer: u32,
    /// A health change worth logging.
    pub transition: Transition,
    /// Single peer: nginx does not retry it.
    pub last_try: bool,
    /// With [`Transition::Recovered`]: how long the peer was unavailable,
    /// ms.
    pub down_ms: u64,
    /// The outlier ejection this try caused, if any.
    pub ejection: Option<Ejection>,
    /// The panic evaluation that followed the ejection.
    pub panic: PanicReport,
    /// In a zone with a request queue (`ha_queue`): the worker to wake
    /// because this try's release freed capacity while a request heads
    /// the queue (its ledger slot and wake channel). The caller must
    /// deliver it: the queue sends no other wake to that worker until it
    /// says it was woken ([`crate::layout::queue::Queue::woken`]).
    pub wake: Option<Wake>,
}

/// What releasing a try without a verdict gives ([`Table::abandon`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// The peer's slot.
    pub peer: u32,
    /// The worker to wake, as [`Report::wake`].
    pub wake: Option<Wake>,
}

impl<'a> Zone<'a> {
    /// Starts a request: pins the serving generation in `attempt` (fresh
    /// from [`Attempt::init`], its ledger slot set).
    pub fn begin(&self, attempt: &mut Attempt<'_>) -> Result<(), Error> {
        if attempt.pin().is_some() || !attempt.fits(self.peers()) {
            return Err(Error::InvalidArgument);
        }
        let (pin, _) = self.pin(attempt.slot())?;
        attempt.set_pin(Some(pin));
        Ok(())
    }

    /// The generation `attempt` pinned.
    #[inline]
    fn pinned_table(&self, attempt: &Attempt<'_>) -> Result<Table<'a>, Error> {
        let pin = attempt.pin().ok_or(Error::InvalidArgument)?;
        if pin.slot as usize >= crate::layout::GENS
            || self
                .slot(pin.slot as usize)
                .seq
                .load(core::sync::atomic::Ordering::Relaxed)
                != pin.seq
        {
            return Err(Error::InvalidArgument);
        }
        Ok(self.pinned(pin))
    }

    /// [`Table::get_keyed`] on the generation the request pinned (in a
    /// dynamic zone, first re-planned on the newest one).
    #[inline]
    pub fn get_keyed(
        &self,
        attempt: &mut Attempt<'_>,
        key: &[u8],
        now: u64,
    ) -> Result<Pick, Error> {
        self.get_bound(attempt, key, Binding::None, now)
    }

    /// [`Table::get_bound`] on the generation the request pinned (in a
    /// dynamic zone, first re-planned on the newest one).
    #[inline]
    pub fn get_bound(
        &self,
        attempt: &mut Attempt<'_>,
        key: &[u8],
        binding: Binding<'_>,
        now: u64,
    ) -> Result<Pick, Error> {
        if self.dynamic() {
            self.replan(attempt)?;
        }
        self.pinned_table(attempt)?
            .get_bound(attempt, key, binding, now)
    }

    /// Moves `attempt`'s pin to the serving generation if another one
    /// serves now: the new pin is taken before the old one is dropped, so
    /// the request always holds one. Not while a try is in progress.
    fn replan(&self, attempt: &mut Attempt<'_>) -> Result<(), Error> {
        let Some(old) = attempt.pin() else {
            return Err(Error::InvalidArgument);
        };
        if attempt.current().is_some() || self.current_pin() == Some(old) {
            return Ok(());
        }
        let (pin, _) = self.pin(attempt.slot())?;
        attempt.set_pin(Some(pin));
        self.unpin(attempt.slot(), old);
        // A hash walk's position was in the old ring or table.
        attempt.restart_hash();
        Ok(())
    }

    /// [`Table::free`] on the generation the request pinned.
    #[inline]
    pub fn free(
        &self,
        attempt: &mut Attempt<'_>,
        outcome: Outcome,
        now: u64,
    ) -> Result<Report, Error> {
        self.free_with(attempt, outcome, &TryInfo::NONE, now)
    }

    /// [`Table::free_with`] on the generation the request pinned.
    #[inline]
    pub fn free_with(
        &self,
        attempt: &mut Attempt<'_>,
        outcome: Outcome,
        info: &TryInfo,
        now: u64,
    ) -> Result<Report, Error> {
        self.pinned_table(attempt)?
            .free_with(attempt, outcome, info, now)
    }

    /// [`Table::abandon`] on the generation the request pinned.
    #[inline]
    pub fn abandon(&self, attempt: &mut Attempt<'_>) -> Result<Released, Error> {
        self.pinned_table(attempt)?.abandon(attempt)
    }

    /// The source ([`crate::layout::GenHeader::source`]) of the generation
    /// `attempt` runs on now.
    pub fn attempt_source(&self, attempt: &Attempt<'_>) -> Result<[u64; 2], Error> {
        Ok(self.pinned_table(attempt)?.header().source)
    }

    /// Ends the request: drops its pin (a try still in progress is
    /// released as passed on first: the wake that release gives, as
    /// [`Report::wake`]). Calling it again does nothing.
    pub fn end(&self, attempt: &mut Attempt<'_>) -> Option<Wake> {
        let mut wake = None;
        if attempt.current().is_some() {
            wake = self
                .free(attempt, Outcome::Next, attempt.try_start_ms())
                .ok()
                .and_then(|r| r.wake);
        }
        if let Some(pin) = attempt.pin() {
            self.unpin(attempt.slot(), pin);
            attempt.set_pin(None);
        }
        wake
    }
}

impl Table<'_> {
    /// Picks a peer for the next try of `attempt` and counts it in flight.
    #[inline]
    pub fn get(&self, attempt: &mut Attempt<'_>, now: u64) -> Result<Pick, Error> {
        self.get_keyed(attempt, &[], now)
    }

    /// As [`Table::get`], with the request's key for hash policies (the
    /// same key on every try of the attempt; ignored by other policies).
    #[inline]
    pub fn get_keyed(
        &self,
        attempt: &mut Attempt<'_>,
        key: &[u8],
        now: u64,
    ) -> Result<Pick, Error> {
        self.get_bound(attempt, key, Binding::None, now)
    }

    /// As [`Table::get_keyed`], for a request bound to a server: while
    /// that server can take the try (a draining one can), it gets it;
    /// otherwise the policy picks as for an unbound request. A bound
    /// backup is considered only once the request moved on to the
    /// backups (as nginx, backups serve only when no primary can).
    #[inline]
    pub fn get_bound(
        &self,
        attempt: &mut Attempt<'_>,
        key: &[u8],
        binding: Binding<'_>,
        now: u64,
    ) -> Result<Pick, Error> {
        if attempt.current().is_some() || !attempt.fits(self.zone().peers()) {
            return Err(Error::InvalidArgument);
        }
        let mode = Mode::of(self, self.zone().hold(attempt.slot()));
        let policy = self.policy();
        let bound = match binding {
            Binding::None => None,
            Binding::Sid(sid) => self.find_sid(crate::spec::sid_hash(sid)),
            Binding::Hash(h) => self.find_sid(h),
        };
        if !attempt.in_backup() {
            if let Some(i) = bound {
                let backup = self.states()[i]
                    .flags
                    .load(core::sync::atomic::Ordering::Relaxed)
                    & crate::layout::PeerState::BACKUP
                    != 0;
                if !backup && self.acquire_bound(i, attempt.tried(i), now, mode) {
                    return Ok(self.take(attempt, i, (false, true), policy, now, mode));
                }
            }
            let picked = policy::pick_primary(policy, self, attempt, key, now, mode);
            if let Some(i) = picked {
                return Ok(self.take(attempt, i, (false, false), policy, now, mode));
            }
            if self.group(BACKUP).is_empty() {
                return Err(Error::Busy);
            }
            attempt.set_in_backup();
        }
        let backup = mode.with_single(false);
        if let Some(i) = bound {
            let flags = self.states()[i]
                .flags
                .load(core::sync::atomic::Ordering::Relaxed);
            if flags & crate::layout::PeerState::BACKUP != 0
                && self.acquire_bound(i, attempt.tried(i), now, backup)
            {
                return Ok(self.take(attempt, i, (true, true), policy, now, mode));
            }
        }
        match policy::pick(policy, self, BACKUP, attempt, now, backup) {
            Some(i) => Ok(self.take(attempt, i, (true, false), policy, now, mode)),
            None => Err(Error::Busy),
        }
    }

    /// Records the try on peer `i`, already counted in flight (and in the
    /// worker's ledger row) by the pick.
    fn take(
        &self,
        attempt: &mut Attempt<'_>,
        i: usize,
        (backup, bound): (bool, bool),
        policy: Policy,
        now: u64,
        mode: Mode<'_>,
    ) -> Pick {
        attempt.set_tried(i);
        attempt.set_current(Some(i as u32));
        attempt.set_bound(bound);
        attempt.set_try_start(now);
        if bound {
            // The pick bypassed the policy: the least_conn tree sees the
            // count as `free` will.
            self.zone().lc_refresh_counted(i);
        }
        if policy.bounded_load() {
            let z = self.zone();
            flight::acquire(&self.cursor(TOTAL).value, 0, mode.hold, z.total_entry());
        }
        Pick {
            peer: i as u32,
            backup,
            bound,
        }
    }

    /// Scans group `g` from `start` for the first peer not tried that can
    /// be acquired: the fallback when the schedule walk found none.
    pub(crate) fn scan_acquire(
        &self,
        g: usize,
        attempt: &Attempt<'_>,
        now: u64,
        mode: Mode,
        start: usize,
    ) -> Option<usize> {
        let range = self.group(g);
        let n = range.len();
        // The last resort: slow start holds nothing back here, or a group
        // whose only eligible peer ramps would answer busy.
        let mode = mode.with_ramp(false);
        let states = self.states();
        (0..n).map(|k| range.get((start + k) % n)).find(|&i| {
            if attempt.tried(i) {
                return false;
            }
            let ok = health::acquire_in(self, states, i, now, mode);
            // The least_conn tree, if the zone has one, sees the count (as
            // `free` does).
            self.zone().lc_refresh_counted(i);
            ok
        })
    }

    /// Takes the try in progress out of flight (its count, the worker's
    /// ledger counter, the bounded-load total); the peer stays tried. In
    /// a zone with a request queue, then runs the queue's release hook
    /// (a `SeqCst` fence, then the head's wake if anyone waits): the wake
    /// to deliver. Without a queue, one branch on a root field.
    #[inline]
    fn leave_flight(
        &self,
        attempt: &mut Attempt<'_>,
        policy: Policy,
    ) -> Result<(u32, Option<Wake>), Error> {
        let Some(peer) = attempt.current() else {
            return Err(Error::InvalidArgument);
        };
        let i = peer as usize;
        if i >= self.zone().peers() {
            return Err(Error::InvalidArgument);
        }
        attempt.set_current(None);
        let z = self.zone();
        let hold = z.hold(attempt.slot());
        health::release(&self.states()[i], hold, i);
        z.lc_refresh_counted(i);
        if policy.bounded_load() {
            flight::release(&self.cursor(TOTAL).value, hold, z.total_entry());
        }
        // After the release: a waiter that entered before it is seen here,
        // or sees the freed count in its own pick (the two fences).
        let wake = z.queue().and_then(|q| q.after_release());
        Ok((peer, wake))
    }

    /// Ends the try in progress as if it had not been made (the caller
    /// could not use the peer: nginx no longer lists it): the peer leaves
    /// flight and stays tried, and nothing is counted — no failure or
    /// success, no statistics, no latency, no outlier observation. The
    /// peer's slot, and the worker to wake ([`Report::wake`]).
    pub fn abandon(&self, attempt: &mut Attempt<'_>) -> Result<Released, Error> {
        let (peer, wake) = self.leave_flight(attempt, self.policy())?;
        Ok(Released { peer, wake })
    }

    /// Ends the try in progress with `outcome`.
    #[inline]
    pub fn free(
        &self,
        attempt: &mut Attempt<'_>,
        outcome: Outcome,
        now: u64,
    ) -> Result<Report, Error> {
        self.free_with(attempt, outcome, &TryInfo::NONE, now)
    }

    /// Ends the try in progress with `outcome` and what the caller knows
    /// of it (status, header time, bytes) for the statistics.
    #[inline]
    pub fn free_with(
        &self,
        attempt: &mut Attempt<'_>,
        outcome: Outcome,
        info: &TryInfo,
        now: u64,
    ) -> Result<Report, Error> {
        // Decoded once: whether the total is kept, what the try teaches.
        let policy = self.policy();
        let (peer, wake) = self.leave_flight(attempt, policy)?;
        let i = peer as usize;
        let state = &self.states()[i];
        let duration = now.saturating_sub(attempt.try_start_ms());
        self.zone().count_try(
            attempt.slot(),
            i,
            (outcome == Outcome::Failed, attempt.bound()),
            info,
            attempt.try_start_ms(),
            duration,
        );
        policy::learn(policy, state, outcome == Outcome::Ok, duration, now);
        if self.single() {
            // nginx >= 1.27.3 clears a single peer's failures; it is never
            // retried.
            state.fails.store(0, core::sync::atomic::Ordering::Relaxed);
            return Ok(Report {
                peer,
                transition: Transition::None,
                last_try: true,
                down_ms: 0,
                ejection: None,
                panic: PanicReport::default(),
                wake,
            });
        }
        let transition = match outcome {
            Outcome::Failed => health::record_failure(state, now),
            Outcome::Ok | Outcome::Next => health::record_success(state),
        };
        let mut down_ms = 0;
        match transition {
            Transition::Disabled => self.zone().count_disabled(i, now),
            Transition::Recovered => {
                down_ms = self.zone().count_recovered(i, now);
                // A recovered peer starts from a neutral latency estimate,
                // and with a fraction of its weight.
                ewma::forget(state);
                self.zone().begin_slow_start(i, now);
            }
            Transition::None => {}
        }
        let ejection = self.zone().observe_outlier(
            i,
            outcome == Outcome::Failed,
            info.status,
            now,
            attempt.slot(),
        );
        let panic = match ejection {
            Some(_) => self.zone().update_panic(),
            None => PanicReport::default(),
        };
        Ok(Report {
            peer,
            transition,
            last_try: false,
            down_ms,
            ejection,
            panic,
            wake,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec::{PeerSpec, Policy, UpstreamSpec};
    use crate::testing::{OwnedAttempt, OwnedTable};
    use core::sync::atomic::Ordering::Relaxed;

    pub(crate) const IDS: [&[u8]; 8] = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"];

    pub(crate) fn table(policy: Policy, peers: &[PeerSpec<'_>]) -> OwnedTable {
        OwnedTable::new(&UpstreamSpec {
            policy,
            peers,
            health: Default::default(),
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    /// One request that succeeds on its first try; the peer's letter.
    #[test]
    fn an_abandoned_try_leaves_flight_stays_tried_and_counts_nothing() {
        for policy in all().into_iter().chain(both()) {
            let peers = [
                PeerSpec {
                    max_fails: 1,
                    ..PeerSpec::new(b"a")
                },
                PeerSpec::new(b"b"),
            ];
            let t = OwnedTable::new(&UpstreamSpec {
                health: Default::default(),
                policy,
                peers: &peers,
                schedule_room: 0,
                sessions: false,
            })
            .unwrap();
            let z = t.zone();
            let ledger = z.claim_slot(100, |_| true).unwrap();
            let mut r = OwnedAttempt::with_slot(z, 0, Some(ledger));
            let first = r.pick_keyed(b"k", 5).unwrap().peer as usize;
            let before = z.view(first, 10).unwrap();
            assert_eq!(z.states()[first].in_flight.load(Relaxed), 1);
            assert_eq!(z.abandon(&mut r.attempt()).unwrap().peer, first as u32);
            assert_eq!(z.states()[first].in_flight.load(Relaxed), 0, "{policy:?}");
            let counts = z.ledger_slot(ledger as usize).unwrap().1;
            assert_eq!(flight::Entry(counts[first].load(Relaxed)).count(), 0);
            let after = z.view(first, 10).unwrap();
            assert_eq!(
                (after.stats, after.fails, after.state, after.latency_ms),
                (before.stats, before.fails, before.state, before.latency_ms),
                "{policy:?}"
            );
            assert_eq!(after.stats.fails, 0);
            // Nothing in progress any more.
            assert_eq!(
                z.abandon(&mut r.attempt()).unwrap_err(),
                Error::InvalidArgument
            );
            // The retry avoids it; then nothing is left.
            let second = r.pick_keyed(b"k", 20).unwrap().peer as usize;
            assert_ne!(second, first, "{policy:?}");
            r.release(Outcome::Ok, 30).unwrap();
            assert_eq!(r.pick_keyed(b"k", 40).unwrap_err(), Error::Busy);
            r.end();
            assert!(z.states().iter().all(|s| s.in_flight.load(Relaxed) == 0));
        }
    }

    pub(crate) fn one(t: &OwnedTable, now: u64) -> char {
        let mut a = OwnedAttempt::new(t.table(), now);
        let p = t.table().get(&mut a.attempt(), now).unwrap();
        t.table().free(&mut a.attempt(), Outcome::Ok, now).unwrap();
        (b'a' + p.peer as u8) as char
    }

    fn both() -> [Policy; 2] {
        [Policy::RoundRobin, Policy::LeastConn]
    }

    /// Every policy that has no backups.
    pub(crate) fn all() -> [Policy; 9] {
        use crate::spec::HashMode::*;
        [
            Policy::RoundRobin,
            Policy::LeastConn,
            Policy::P2c,
            Policy::Ewma { decay_ms: 10_000 },
            Policy::Random,
            Policy::Hash {
                mode: Plain,
                balance_factor: 0,
                maglev_size: 0,
            },
            Policy::Hash {
                mode: Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            Policy::Hash {
                mode: Maglev,
                balance_factor: 0,
                maglev_size: 0,
            },
            Policy::Hash {
                mode: Consistent,
                balance_factor: 125,
                maglev_size: 0,
            },
        ]
    }

    #[test]
    fn every_policy_retries_each_peer_once_then_busy() {
        for policy in all() {
            let peers = [
                PeerSpec::new(IDS[0]).weight(3),
                PeerSpec::new(IDS[1]),
                PeerSpec {
                    down: true,
                    ..PeerSpec::new(IDS[2])
                },
                PeerSpec::new(IDS[3]).weight(2),
            ];
            let t = table(policy, &peers);
            let mut a = OwnedAttempt::new(t.table(), 0);
            let mut seen = Vec::new();
            while let Ok(p) = t.table().get_keyed(&mut a.attempt(), b"some-key", 0) {
                seen.push(p.peer);
                t.table()
                    .free(&mut a.attempt(), Outcome::Failed, 0)
                    .unwrap();
                assert!(seen.len() <= 3, "{policy:?}: {seen:?}");
            }
            seen.sort();
            assert_eq!(seen, [0, 1, 3], "{policy:?}");
            for s in t.table().states() {
                assert_eq!(s.in_flight.load(core::sync::atomic::Ordering::Relaxed), 0);
            }
            assert_eq!(
                t.table()
                    .cursor(TOTAL)
                    .value
                    .load(core::sync::atomic::Ordering::Relaxed),
                0
            );
        }
    }

    #[test]
    fn backups_only_when_no_primary_is_eligible() {
        for policy in both() {
            let peers = [
                PeerSpec::new(IDS[0]),
                PeerSpec::new(IDS[1]),
                PeerSpec {
                    backup: true,
                    ..PeerSpec::new(IDS[2])
                },
            ];
            let t = table(policy, &peers);
            for _ in 0..20 {
                assert_ne!(one(&t, 1000), 'c');
            }
            // Both primaries fail once (max_fails=1): the backup takes over.
            for _ in 0..2 {
                let mut a = OwnedAttempt::new(t.table(), 2000);
                t.table().get(&mut a.attempt(), 2000).unwrap();
                t.table()
                    .free(&mut a.attempt(), Outcome::Failed, 2000)
                    .unwrap();
            }
            for _ in 0..5 {
                assert_eq!(one(&t, 3000), 'c', "{policy:?}");
            }
            // After fail_timeout the primaries are probed again.
            assert_ne!(one(&t, 12_001), 'c');
        }
    }

    #[test]
    fn retries_visit_every_peer_once_then_backups_then_busy() {
        for policy in both() {
            let peers = [
                PeerSpec::new(IDS[0]).weight(3),
                PeerSpec::new(IDS[1]),
                PeerSpec {
                    down: true,
                    ..PeerSpec::new(IDS[2])
                },
                PeerSpec {
                    backup: true,
                    ..PeerSpec::new(IDS[3])
                },
                PeerSpec {
                    backup: true,
                    ..PeerSpec::new(IDS[4])
                },
            ];
            let t = table(policy, &peers);
            let mut a = OwnedAttempt::new(t.table(), 0);
            let mut seen = Vec::new();
            loop {
                match t.table().get(&mut a.attempt(), 0) {
                    Ok(p) => {
                        seen.push(p.peer);
                        t.table().free(&mut a.attempt(), Outcome::Next, 0).unwrap();
                    }
                    Err(e) => {
                        assert_eq!(e, Error::Busy);
                        break;
                    }
                }
                assert!(seen.len() <= 5);
            }
            let (prim, back) = seen.split_at(2);
            let mut prim = prim.to_vec();
            prim.sort();
            assert_eq!(prim, [0, 1], "{policy:?}: {seen:?}");
            let mut back = back.to_vec();
            back.sort();
            assert_eq!(back, [3, 4], "{policy:?}: {seen:?}");
            for s in t.table().states() {
                assert_eq!(s.in_flight.load(core::sync::atomic::Ordering::Relaxed), 0);
            }
        }
    }

    #[test]
    fn single_peer_ignores_failures_and_is_last_try() {
        for policy in both() {
            let t = table(policy, &[PeerSpec::new(IDS[0])]);
            for _ in 0..5 {
                let mut a = OwnedAttempt::new(t.table(), 0);
                t.table().get(&mut a.attempt(), 0).unwrap();
                let r = t
                    .table()
                    .free(&mut a.attempt(), Outcome::Failed, 0)
                    .unwrap();
                assert!(r.last_try);
            }
            assert_eq!(one(&t, 1), 'a');
        }
    }

    #[test]
    fn free_without_get_is_refused() {
        let t = table(
            Policy::RoundRobin,
            &[PeerSpec::new(IDS[0]), PeerSpec::new(IDS[1])],
        );
        let mut a = OwnedAttempt::new(t.table(), 0);
        assert_eq!(
            t.table()
                .free(&mut a.attempt(), Outcome::Ok, 0)
                .unwrap_err(),
            Error::InvalidArgument
        );
        t.table().get(&mut a.attempt(), 0).unwrap();
        assert_eq!(
            t.table().get(&mut a.attempt(), 0).unwrap_err(),
            Error::InvalidArgument
        );
    }

    #[test]
    fn all_down_is_busy() {
        for policy in both() {
            let peers = [
                PeerSpec {
                    down: true,
                    ..PeerSpec::new(IDS[0])
                },
                PeerSpec {
                    down: true,
                    ..PeerSpec::new(IDS[1])
                },
            ];
            let t = table(policy, &peers);
            let mut a = OwnedAttempt::new(t.table(), 0);
            assert_eq!(t.table().get(&mut a.attempt(), 0).unwrap_err(), Error::Busy);
        }
    }
}
