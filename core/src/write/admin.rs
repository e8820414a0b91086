//! Admin state per server: down, drain, weight override
//!
//! `down` and `drain` are bits in the peer's hot `flags` word: every pick in
//! every worker reads them (the one eligibility function,
//! [`crate::health::eligibility`]), so setting one takes effect on the next
//! pick without a rebuild. A weight override is stored in the peer's cold
//! record and takes effect when the next generation is published
//! ([`Zone::publish`]).
//!
//! Transitions of the admin bits (`fetch_or` / `fetch_and`, `Relaxed`:
//! each bit is independent and publishes nothing else): any combination may
//! be set or cleared at any time; the configuration's `down` bit is never
//! touched here.

use core::sync::atomic::Ordering::{Acquire, Relaxed};

use super::membership::SlotMark;
use crate::crash::crash_point;
use crate::error::Error;
use crate::layout::{PeerState, Zone};

/// Largest weight the API accepts.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// Longest a [`Zone::change_server`] waits for a builder lease held by a
/// live builder, in milliseconds (1 ms steps).
pub const LEASE_WAIT_MS: u32 = 50;

/// What one API change of a server sets; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerChange {
    /// Set down (`true`) or back up (`false`) through the API.
    pub down: Option<bool>,
    /// Start or end draining.
    pub drain: Option<bool>,
    /// A weight override (1 to [`MAX_WEIGHT`]), or `Some(None)` to return
    /// to the configured weight.
    pub weight: Option<Option<u32>>,
}

/// Why [`Zone::change_server`] changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server is no longer there: its slot was freed, or given to
    /// another server, since it was looked up.
    Gone,
    /// `down` in the configuration: the API cannot bring it up.
    ConfiguredDown,
    /// A weight outside 1 to [`MAX_WEIGHT`].
    InvalidWeight,
    /// The builder lease could not be had ([`Error::Busy`]), or the new
    /// generation could not be published (`Pinned`, `NoSpace`, ...); for a
    /// schedule that does not fit, the entries it would have had.
    Publish {
        /// Why.
        error: Error,
        /// Entries of the refused schedule (policies with one).
        entries: Option<u64>,
    },
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A server's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Eligible.
    Up,
    /// Drained by the operator, until undrained (with nothing in flight
    /// too); or gone from the list with requests still in flight.
    Draining,
    /// Down: configured or set down; or gone from the list, idle.
    Down,
    /// Disabled by `max_fails` within `fail_timeout`, or ejected as an
    /// outlier.
    Unavail,
    /// Waiting for its first check (`mandatory`).
    Checking,
    /// Failed its active checks.
    Unhealthy,
}

impl ServerState {
    /// The NGINX Plus API name.
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Draining => "draining",
            ServerState::Down => "down",
            ServerState::Unavail => "unavail",
            ServerState::Checking => "checking",
            ServerState::Unhealthy => "unhealthy",
        }
    }
}

/// One server's state, read from the zone.
#[derive(Debug, Clone)]
pub struct PeerView<'a> {
    /// Table index (primaries first, then backups).
    pub index: usize,
    /// Position in configuration order (the API's `id`).
    pub position: u32,
    /// Added through the API ([`Zone::add_server`]): removable.
    pub api: bool,
    /// Identity bytes (upstream, server, address, NUL-separated by nginx).
    pub identity: &'a [u8],
    /// The `server` directive's address as written.
    pub server: &'a [u8],
    /// A backup server.
    pub backup: bool,
    /// Weight in force.
    pub weight: u32,
    /// Configured weight.
    pub configured_weight: u32,
    /// The API's weight override, if any.
    pub weight_override: Option<u32>,
    /// State as reported.
    pub state: ServerState,
    /// Requests in flight, all workers.
    pub active: u32,
    /// `max_conns`, 0 for unlimited.
    pub max_conns: u32,
    /// Set down (configuration or API).
    pub down: bool,
    /// Set down through the API.
    pub admin_down: bool,
    /// Draining.
    pub drain: bool,
    /// Failures counted toward `max_fails`.
    pub fails: u32,
    /// Statistics since the last reset.
    pub stats: crate::layout::stats::PeerStats,
    /// The latency estimate (EWMA), ms, when known.
    pub latency_ms: Option<f64>,
    /// Active check counters, when `ha_check` is configured.
    pub checks: Option<crate::health::check::CheckStats>,
    /// When its outlier ejection ends, while it is ejected.
    pub ejected_until_ms: Option<u64>,
    /// Its slow-start fraction in percent, while it ramps.
    pub slow_start_percent: Option<u32>,
    /// The upstream is in panic (health ignored).
    pub panic: bool,
}

impl<'a> Zone<'a> {
    /// Sets or clears `down` and `drain` of peer `i` at `now`; `None`
    /// leaves a bit as it is. A peer back in service slow-starts.
    pub fn set_admin(
        &self,
        i: usize,
        down: Option<bool>,
        drain: Option<bool>,
        now: u64,
    ) -> Result<(), Error> {
        let s = self.states().get(i).ok_or(Error::InvalidArgument)?;
        for (value, bit) in [(down, PeerState::ADMIN_DOWN), (drain, PeerState::DRAIN)] {
            let Some(set) = value else {
                continue;
            };
            let old = if set {
                s.flags.fetch_or(bit, Relaxed)
            } else {
                s.flags.fetch_and(!bit, Relaxed)
            };
            if (old & bit != 0) != set {
                self.state_changed(i, now);
                if !set && old & PeerState::OUT & !bit == 0 {
                    // Back in service: slow start, when configured.
                    self.begin_slow_start(i, now);
                }
            }
        }
        self.lc_refresh(i);
        // Admin state counts in the panic threshold: every worker's health
        // timer re-evaluates it.
        self.health_changed();
        Ok(())
    }

    /// Sets (or with `None` clears) the weight override of peer `i`; in
    /// force from the next [`Zone::publish`].
    pub fn set_weight(&self, i: usize, weight: Option<u32>) -> Result<(), Error> {
        let c = self.colds().get(i).ok_or(Error::InvalidArgument)?;
        let w = match weight {
            Some(w) if (1..=MAX_WEIGHT).contains(&w) => w,
            Some(_) => return Err(Error::InvalidArgument),
            None => 0,
        };
        c.weight_override.store(w, Relaxed);
        Ok(())
    }

    /// Table index of the server at configuration position `position`,
    /// among those the API lists ([`Zone::listed`]: not FREE, not a
    /// RETIRING slot with nothing in flight), and the slot as it was seen
    /// (give it to [`Zone::change_server`]: the slot may be given to
    /// another server right after this returns).
    pub fn by_position(&self, position: u32) -> Option<(usize, SlotMark)> {
        let found = self.colds().iter().enumerate().find_map(|(i, c)| {
            let mark = self.listed(i)?;
            (c.position.load(Relaxed) == position && self.slot_unchanged(i, mark))
                .then_some((i, mark))
        });
        crash_point("admin.found");
        found
    }

    /// Applies `change` to server `i`, the slot as `mark` says it was seen
    /// (by [`Zone::by_position`]), for `owner` (a pid; `alive` as for
    /// [`Zone::publish`]), at `now`: one transaction, so that
    ///
    /// - a slot given to another server since the lookup is refused
    ///   ([`Refusal::Gone`]) rather than changed: slots are reused under
    ///   the builder lease only, and the change holds it from its check to
    ///   its last write when the zone reuses slots;
    /// - a weight change holds the lease from the override it stores to
    ///   the generation it publishes (or the undo of a refused one), so
    ///   that no other publication puts a refused weight in force, and two
    ///   changes never publish each other's weights.
    ///
    /// A busy lease is waited for up to [`LEASE_WAIT_MS`] (a build of a
    /// large upstream may take longer: then [`Error::Busy`]).
    pub fn change_server(
        &self,
        i: usize,
        mark: SlotMark,
        change: ServerChange,
        now: u64,
        owner: u64,
        alive: impl Fn(u64) -> bool,
    ) -> Result<(), Refusal> {
        let weight = match change.weight {
            None => None,
            Some(None) => Some(0),
            Some(Some(w)) if (1..=MAX_WEIGHT).contains(&w) => Some(w),
            Some(Some(_)) => return Err(Refusal::InvalidWeight),
        };
        let c = self.colds().get(i).ok_or(Refusal::Gone)?;
        let s = &self.states()[i];
        let _lease = if weight.is_some() || self.dynamic() {
            Some(
                self.lease_waiting(owner, &alive)
                    .map_err(|error| Refusal::Publish {
                        error,
                        entries: None,
                    })?,
            )
        } else {
            None
        };
        if !self.slot_unchanged(i, mark) {
            return Err(Refusal::Gone);
        }
        if change.down == Some(false) && s.flags.load(Relaxed) & PeerState::DOWN != 0 {
            return Err(Refusal::ConfiguredDown);
        }
        crash_point("admin.checked");
        if let Some(w) = weight {
            let before = c.weight_override.swap(w, Relaxed);
            crash_point("admin.weighted");
            if self.weights_pending() {
                let source = self
                    .current_slot()
                    .map_or([0; 2], |d| self.table(d).header().source);
                let published =
                    self.effective(|spec, slots| self.publish_locked(spec, slots, source));
                if let Err(error) = published {
                    let entries = self.schedule_entries(i);
                    // Back to what serves, under the same lease: no other
                    // publication saw the refused weight.
                    c.weight_override.store(before, Relaxed);
                    return Err(Refusal::Publish { error, entries });
                }
            }
        }
        self.set_admin(i, change.down, change.drain, now)
            .map_err(|_| Refusal::Gone)
    }

    /// Puts the weight overrides `weights` (server, override; `None`
    /// clears it) in force together, as the state file's restore does:
    /// under the builder lease, stores each, publishes one generation if a
    /// weight in force changes, and if that publication is refused puts
    /// every override back as it was: all or none, and no other
    /// publication sees the refused ones. `owner`, `alive` as for
    /// [`Zone::publish`]. The number of overrides that changed.
    ///
    /// [`Error::InvalidArgument`] (a server past the end, a weight out of
    /// `1..=MAX_WEIGHT`) before anything is stored; a refused publication's
    /// error ([`Error::TooLarge`], [`Error::NoSpace`], ...) after the undo.
    pub fn restore_weights(
        &self,
        weights: &[(usize, Option<u32>)],
        owner: u64,
        alive: impl Fn(u64) -> bool,
    ) -> Result<usize, Error> {
        let colds = self.colds();
        let valid = |&(i, w): &(usize, Option<u32>)| {
            i < colds.len() && w.is_none_or(|w| (1..=MAX_WEIGHT).contains(&w))
        };
        if !weights.iter().all(valid) {
            return Err(Error::InvalidArgument);
        }
        let _lease = self.lease_waiting(owner, &alive)?;
        let before: Vec<u32> = weights
            .iter()
            .map(|&(i, w)| colds[i].weight_override.swap(w.unwrap_or(0), Relaxed))
            .collect();
        let changed = weights
            .iter()
            .zip(&before)
            .filter(|((_, w), &b)| w.unwrap_or(0) != b)
            .count();
        if self.weights_pending() {
            let source = self
                .current_slot()
                .map_or([0; 2], |d| self.table(d).header().source);
            if let Err(e) = self.effective(|spec, slots| self.publish_locked(spec, slots, source)) {
                // Back to what serves, in reverse (a server named twice
                // gets its first value back), under the same lease.
                for (&(i, _), &b) in weights.iter().zip(&before).rev() {
                    colds[i].weight_override.store(b, Relaxed);
                }
                return Err(e);
            }
        }
        Ok(changed)
    }

    /// The builder lease, waited for up to [`LEASE_WAIT_MS`] while a live
    /// builder holds it.
    pub(super) fn lease_waiting(
        &self,
        owner: u64,
        alive: &impl Fn(u64) -> bool,
    ) -> Result<super::generation::LeaseGuard<'a>, Error> {
        let mut waited = 0;
        loop {
            match self.lease_guard(owner, alive) {
                Err(Error::Busy) if waited < LEASE_WAIT_MS => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    waited += 1;
                }
                r => return r,
            }
        }
    }

    /// Entries of the smooth schedule of server `i`'s group with the
    /// weights in force now (`None` for a policy without a schedule):
    /// what a refused weight change would have needed.
    fn schedule_entries(&self, i: usize) -> Option<u64> {
        if !self.policy().walks_schedule() {
            return None;
        }
        let states = self.states();
        let backup = states.get(i)?.flags.load(Relaxed) & PeerState::BACKUP;
        self.effective(|spec, slots| {
            let (mut g, mut total) = (0u64, 0u64);
            for (p, &k) in spec.peers.iter().zip(slots) {
                let flags = states[k as usize].flags.load(Relaxed);
                if flags & PeerState::BACKUP != backup || p.down {
                    continue;
                }
                let w = u64::from(p.weight);
                (g, total) = (gcd(g, w), total + w);
            }
            (g > 0).then(|| total / g)
        })
    }

    /// Whether any peer's weight in force differs from what `publish`
    /// would now build (an override was set or cleared since). Reads the
    /// slots (LIVE ones: the serving membership), no generation.
    pub fn weights_pending(&self) -> bool {
        let colds = self.colds();
        let states = self.states();
        (0..self.peers()).any(|i| {
            let (c, s) = (&colds[i], &states[i]);
            if c.status.load(Acquire) != super::membership::LIVE {
                return false;
            }
            let over = c.weight_override.load(Relaxed);
            let want = if over != 0 {
                over
            } else {
                c.conf_weight.load(Relaxed)
            };
            want != s.weight()
        })
    }

    /// State of peer `i` at `now` (`None` past the end).
    pub fn view(&self, i: usize, now: u64) -> Option<PeerView<'a>> {
        let s = self.states().get(i)?;
        let c = &self.colds()[i];
        let flags = s.flags.load(Relaxed);
        let active = s.in_flight.load(Relaxed);
        let drain = flags & PeerState::DRAIN != 0;
        let admin_down = flags & PeerState::ADMIN_DOWN != 0;
        let down = admin_down || flags & PeerState::DOWN != 0;
        let fails = s.fails.load(Relaxed);
        let unavail = s.max_fails() != 0
            && fails >= s.max_fails()
            && now.saturating_sub(s.checked_ms.load(Relaxed)) <= s.fail_timeout_ms()
            && self.members_now() != 1;
        let state = if down {
            ServerState::Down
        } else if drain && flags & PeerState::RETIRED == 0 {
            // An operator's drain reads draining until undrained, idle or
            // not (NGINX Plus's state; never `down`, which is the
            // operator's other switch).
            ServerState::Draining
        } else if flags & PeerState::RETIRED != 0 {
            // Gone from the list: draining while its requests finish.
            if active > 0 {
                ServerState::Draining
            } else {
                ServerState::Down
            }
        } else if flags & PeerState::CHECKING != 0 {
            ServerState::Checking
        } else if flags & PeerState::UNHEALTHY != 0 {
            ServerState::Unhealthy
        } else if unavail || flags & PeerState::EJECTED != 0 {
            ServerState::Unavail
        } else {
            ServerState::Up
        };
        let hs = self.health_spec();
        let over = c.weight_override.load(Relaxed);
        let ewma = f64::from_bits(s.ewma_bits.load(Relaxed));
        Some(PeerView {
            index: i,
            position: c.position.load(Relaxed),
            api: c.origin.load(Relaxed) & crate::layout::PeerCold::API != 0,
            identity: self.identity(i),
            server: self.server(i),
            backup: flags & PeerState::BACKUP != 0,
            weight: s.weight(),
            configured_weight: c.conf_weight.load(Relaxed),
            weight_override: (over != 0).then_some(over),
            state,
            active,
            max_conns: s.max_conns(),
            down,
            admin_down,
            drain,
            fails,
            stats: self.stats(i, now).unwrap_or_default(),
            latency_ms: (ewma > 0.0 && ewma.is_finite()).then_some(ewma),
            checks: hs.checks().then(|| self.check_stats(i)),
            ejected_until_ms: self.ejected_until(i),
            slow_start_percent: (flags & PeerState::SLOW != 0)
                .then(|| {
                    let row = &self.health_rows()[i];
                    let window = u64::from(hs.slow_start_ms).max(1);
                    let since = now.saturating_sub(row.ramp_from_ms.load(Relaxed));
                    (since.min(window) * 100 / window).max(10) as u32
                })
                .filter(|&p| p < 100),
            panic: self.in_panic(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Outcome;
    use crate::spec::{PeerSpec, Policy, UpstreamSpec};
    use crate::testing::{OwnedAttempt, OwnedTable};

    fn four(policy: Policy) -> (Vec<Vec<u8>>, OwnedTable) {
        let ids: Vec<Vec<u8>> = (0..4).map(|k| format!("s{k}").into_bytes()).collect();
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        let t = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        (ids, t)
    }

    #[test]
    fn restored_weights_are_put_in_force_all_or_none() {
        let (_ids, t) = four(Policy::RoundRobin);
        let z = t.zone();
        let before = z.generation();
        assert_eq!(
            z.restore_weights(&[(0, Some(3)), (1, None), (2, Some(2))], 7, |_| true),
            Ok(2)
        );
        assert_eq!(z.generation(), before + 1, "one publication for all");
        let w: Vec<u32> = (0..4).map(|i| z.view(i, 0).unwrap().weight).collect();
        assert_eq!(w, [3, 1, 2, 1]);
        // One weight whose schedule does not fit: none of the three is kept
        // (the 3 and 2 above serve on), nothing is left pending.
        let gen = z.generation();
        let r = z.restore_weights(
            &[(0, Some(5)), (1, Some(1_000_000)), (3, Some(4))],
            7,
            |_| true,
        );
        assert_eq!(r, Err(Error::NoSpace), "the arena has no room for it");
        assert_eq!(z.generation(), gen);
        let v: Vec<(u32, Option<u32>)> = (0..4)
            .map(|i| z.view(i, 0).map(|v| (v.weight, v.weight_override)).unwrap())
            .collect();
        assert_eq!(v, [(3, Some(3)), (1, None), (2, Some(2)), (1, None)]);
        assert!(!z.weights_pending());
        // A bad argument stores nothing.
        for bad in [(9, Some(1)), (0, Some(0)), (0, Some(MAX_WEIGHT + 1))] {
            assert_eq!(
                z.restore_weights(&[(1, Some(2)), bad], 7, |_| true),
                Err(Error::InvalidArgument)
            );
            assert_eq!(z.view(1, 0).unwrap().weight_override, None);
        }
        // Nothing changed: no publication.
        assert_eq!(z.restore_weights(&[(0, Some(3))], 7, |_| true), Ok(0));
        assert_eq!(z.generation(), gen);
    }

    #[test]
    fn a_restore_waits_for_a_live_builder_and_then_gives_up() {
        let (_ids, t) = four(Policy::RoundRobin);
        let z = t.zone();
        let held = z.lease_guard(42, &|_| true).unwrap();
        assert_eq!(
            z.restore_weights(&[(0, Some(3))], 7, |_| true),
            Err(Error::Busy)
        );
        assert_eq!(
            z.view(0, 0).unwrap().weight_override,
            None,
            "nothing stored"
        );
        drop(held);
        assert_eq!(z.restore_weights(&[(0, Some(3))], 7, |_| true), Ok(1));
    }

    #[test]
    fn drain_and_down_stop_new_picks_in_flight_finish() {
        for policy in crate::request::tests::all() {
            let peers = [PeerSpec::new(b"a"), PeerSpec::new(b"b")];
            let t = OwnedTable::new(&UpstreamSpec {
                health: Default::default(),
                policy,
                peers: &peers,
                schedule_room: 0,
                sessions: false,
            })
            .unwrap();
            let z = t.zone();
            // One request in flight on each peer.
            let mut held: Vec<OwnedAttempt> = Vec::new();
            while held.len() < 2 {
                let mut a = OwnedAttempt::new(z, 0);
                a.pick_keyed(format!("k{}", held.len()).as_bytes(), 0)
                    .unwrap();
                held.push(a);
            }
            let on_a = z.states()[0].in_flight.load(Relaxed);
            z.set_admin(0, None, Some(true), 0).unwrap();
            let v = z.view(0, 0).unwrap();
            if on_a > 0 {
                assert_eq!(v.state, ServerState::Draining, "{policy:?}");
            }
            for k in 0..50 {
                let mut a = OwnedAttempt::new(z, 0);
                let p = a.pick_keyed(format!("key{k}").as_bytes(), 0).unwrap();
                assert_eq!(p.peer, 1, "{policy:?}: a drained peer was picked");
                a.release(Outcome::Ok, 0).unwrap();
                a.end();
            }
            for mut a in held {
                a.release(Outcome::Ok, 0).unwrap();
                a.end();
            }
            // Idle, still drained: draining until undrained, never down.
            let v = z.view(0, 0).unwrap();
            assert_eq!((v.state, v.active), (ServerState::Draining, 0));
            z.set_admin(0, None, Some(false), 0).unwrap();
            assert_eq!(z.view(0, 0).unwrap().state, ServerState::Up);
            z.set_admin(1, Some(true), None, 0).unwrap();
            let mut a = OwnedAttempt::new(z, 0);
            assert_eq!(a.pick_keyed(b"x", 0).unwrap().peer, 0, "{policy:?}");
            a.release(Outcome::Ok, 0).unwrap();
            assert_eq!(z.view(1, 0).unwrap().state, ServerState::Down);
        }
    }

    #[test]
    fn weight_override_bounds() {
        let t = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &[PeerSpec::new(b"a")],
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let z = t.zone();
        assert_eq!(z.set_weight(0, Some(0)), Err(Error::InvalidArgument));
        assert_eq!(
            z.set_weight(0, Some(MAX_WEIGHT + 1)),
            Err(Error::InvalidArgument)
        );
        assert_eq!(z.set_weight(1, Some(2)), Err(Error::InvalidArgument));
        assert!(!z.weights_pending());
        z.set_weight(0, Some(MAX_WEIGHT)).unwrap();
        assert!(z.weights_pending());
    }
}
