//! Peer slots and membership changes: a generation built from a new peer
//! list (`server ... resolve`)
//!
//! A zone built with [`Zone::init_with`] has `capacity` peer *slots*, more
//! than its configured peers. Every per-peer record (hot state, cold
//! record, ledger counters, statistics, health) is one slot's. Each slot
//! has a life cycle in its cold record ([`PeerCold::status`]):
//!
//! ```text
//!   FREE ──(new identity)──► LIVE ──(left the list)──► RETIRING ──(reuse)──► FREE
//!                             ▲                            │
//!                             └──────(came back)───────────┘
//! ```
//!
//! and an epoch ([`PeerCold::epoch`]) bumped each time the slot is given
//! to a new identity, and a fixed identity area ([`SLOT_ID_MAX`] bytes of
//! identity, [`SLOT_SERVER_MAX`] of `server` string) that is rewritten
//! then. A longer identity is refused ([`Error::TooLarge`]). A static zone
//! (capacity equal to its peers) has no identity area: its names are
//! packed as they always were, and every slot is LIVE.
//!
//! # Slots are the indices
//!
//! Every peer index the core hands out or takes — [`crate::Pick::peer`],
//! the attempt's tried set, the ledger's counters, `Zone::view` — is a
//! slot. A generation's selection structures name slots too: its
//! schedules and Maglev entries hold slots, its ring points are slots, its
//! alias table and chains are indexed by slot (a slot that is not a
//! primary weighs 0 and is never drawn). Only its per-peer parameters
//! ([`crate::Table::confs`]) are in generation order; the member column
//! ([`crate::Table::members`]) gives each one's slot. A generation whose members
//! are exactly slots `0..n` of a zone of `n` slots — every static
//! upstream — is *dense* and has no member column: its bytes are those
//! of the generation before slots existed, and its picks run the same
//! code.
//!
//! The other design, generation-local indices with a `slots[k]` column
//! mapped on every access, would add a dependent load to every state read
//! of every pick, static upstreams included, and would need the tried set
//! translated whenever a retry moves to another generation. With slots as
//! indices the pick path reads what it read before, and a retry can move
//! to the newest generation keeping its tried set as it is.
//!
//! # Applying a list
//!
//! [`Zone::apply_membership`], under the builder lease, matches the list to
//! the LIVE and RETIRING slots by identity, occurrence by occurrence (as
//! [`Zone::carry_from`] does): a kept slot keeps every bit of its state
//! (in flight, failure window, latency, admin flags, weight override,
//! health and statistics) and takes the list's weight, limits, `backup`
//! and `down`; a RETIRING one turns LIVE again. A new identity takes a
//! FREE slot with today's new-server rules: slow start, or `checking`
//! then slow start under `mandatory` checks. A LIVE slot missing from the
//! list turns RETIRING: the `RETIRED` flag takes it out of every pick, in
//! every generation, as `drain` does, while its requests finish. The
//! generation is built with the same code as every other and published.
//! With no free slot, or no room in the arena, nothing changes and the
//! serving generation stays.
//!
//! Servers added and removed through the API (`added.rs`) are the same
//! change, made from the LIVE members plus or minus one server; a slot
//! filled that way is marked [`PeerCold::API`] ([`PeerCold::origin`]).
//!
//! # Lists and the API's servers
//!
//! A list applied by [`Zone::apply_membership`] (the resolve path,
//! [`Zone::apply_list`] and [`Zone::resolve`]) names the configured and
//! resolved servers only: every LIVE slot of the API's stays a member,
//! with its own parameters and its mark, so a DNS change never removes a
//! server added through the API, and the API's changes and DNS's compose.
//! Identities are unique among LIVE slots: a list's identity LIVE as the
//! API's is left out of the list (the API's slot serves it; the list's
//! lookup finds that slot), and a POST of an identity LIVE from a list is
//! refused ([`crate::write::AddRefusal::Exists`]). A server's identity
//! holds its `server` string, so a POSTed address and a name resolving
//! to it are two servers; only the same `server` string is one. (A
//! server removed through the API that a list also names comes back from
//! the list's next change.) Two budgets: a list may fill at most
//! `capacity − ha_api_max` slots (the configured servers and
//! `ha_resolve_max`), else [`Error::NoSpace`] and nothing changes; the
//! API at most `ha_api_max` ([`Zone::add_server`]). A RETIRING slot of
//! the API's is never revived by a list.
//!
//! # The reuse rule
//!
//! A RETIRING slot becomes FREE (and is given to a new identity) only when
//! its in-flight count is 0 **and** no LIVE generation descriptor names it
//! (the serving one and every one still pinned, after reclaiming the
//! others). Requests reach slots only through the generation they pinned,
//! and keep the pin until their last try has been released: so a request
//! that tried a slot holds, until it ends, a generation naming it, and a
//! late release can never land on the slot's next occupant. Slots are
//! reused lazily — never-used FREE slots first — so that an identity that
//! flaps in DNS finds its slot, and its state, again.

use core::sync::atomic::fence;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::collections::{HashMap, HashSet};

use crate::crash::crash_point;
use crate::error::Error;
use crate::layout::{PeerCold, PeerState, Zone, SLOT_ID_MAX, SLOT_SERVER_MAX};
use crate::spec::{
    identity_hash, session_id, sid_hash, HealthSpec, PeerSpec, UpstreamSpec, MAX_SID,
};

pub use crate::layout::{FREE, LIVE, RETIRING};

/// Whether `p`'s identity fits a slot's identity area.
pub fn fits_slot(p: &PeerSpec<'_>) -> bool {
    p.id.len() <= SLOT_ID_MAX && p.server.len() <= SLOT_SERVER_MAX
}

/// What [`Zone::slots_of`] found, in the generation serving at the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The generation's number.
    pub seq: u64,
    /// Its source ([`crate::layout::GenHeader::source`]).
    pub source: [u64; 2],
    /// The slot of each identity asked for, `None` when it has none.
    pub slots: Vec<Option<u32>>,
}

/// What [`Zone::resolve`] did with a list and found after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The generation built from the list, when this call built one.
    pub applied: Option<Applied>,
    /// Why the list is not in force, when it is not: [`Error::Busy`]
    /// (another builder, or a newer configuration's list serves),
    /// [`Error::NoSpace`] (more peers than free slots, or no room in the
    /// arena now, older generations still pinned), [`Error::TooLarge`].
    /// The serving generation stays.
    pub refused: Option<Error>,
    /// The list's peers' slots in the generation serving after the call.
    pub lookup: Lookup,
}

/// The ordering rule of lists from ordered sources (list ids grow with
/// the configurations): `Some(Ok)` when the generation serving came from
/// `source` already, `Some(Err(Busy))` when it came from a larger list id
/// (an older configuration's workers never publish), `None` when `source`
/// is to be applied.
fn list_order(serving: [u64; 2], source: [u64; 2]) -> Option<Result<(), Error>> {
    if serving == source {
        Some(Ok(()))
    } else if serving[0] > source[0] {
        Some(Err(Error::Busy))
    } else {
        None
    }
}

/// A slot as a reader outside the builder lease saw it before reading its
/// identity ([`Zone::listed`], [`Zone::slot_unchanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotMark {
    /// [`LIVE`] or [`RETIRING`].
    pub status: u32,
    /// The slot's epoch.
    pub epoch: u32,
}

/// What [`Zone::apply_membership`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Number of the published generation.
    pub seq: u64,
    /// Members that kept their LIVE slot.
    pub kept: u32,
    /// RETIRING slots that came back.
    pub revived: u32,
    /// New identities, each in a FREE slot.
    pub added: u32,
    /// LIVE slots that turned RETIRING.
    pub retired: u32,
    /// RETIRING slots reused (their state dropped).
    pub reused: u32,
    /// New identities left out for want of a slot: the generation has the
    /// rest of the list, and records [`PARTIAL`] as its source's counter,
    /// so that the list is applied again (see [`Zone::apply_membership`]).
    pub deferred: u32,
}

/// The counter a partly applied list records in its generation's source.
pub const PARTIAL: u64 = u64::MAX;

impl<'a> Zone<'a> {
    /// Status of slot `i` ([`FREE`], [`LIVE`], [`RETIRING`]; `None` past
    /// the end).
    #[inline]
    pub fn slot_status(&self, i: usize) -> Option<u32> {
        self.colds()
            .get(i)
            .map(|c| c.status.load(core::sync::atomic::Ordering::Acquire))
    }

    /// Epoch of slot `i`: bumped each time it is given to a new identity.
    #[inline]
    pub fn slot_epoch(&self, i: usize) -> Option<u32> {
        self.colds()
            .get(i)
            .map(|c| c.epoch.load(core::sync::atomic::Ordering::Acquire))
    }

    /// [`Zone::slot_status`] read `SeqCst` (the verdict's side of the
    /// writers-mask handshake, see [`Zone::check_done_epoch`]).
    pub(crate) fn slot_status_seq(&self, i: usize) -> Option<u32> {
        self.colds().get(i).map(|c| c.status.load(SeqCst))
    }

    /// [`Zone::slot_epoch`] read `SeqCst`.
    pub(crate) fn slot_epoch_seq(&self, i: usize) -> Option<u32> {
        self.colds().get(i).map(|c| c.epoch.load(SeqCst))
    }

    /// The `(list id, config)` the serving generation was built from
    /// ([`Zone::apply_membership`]; zero for a configuration's build),
    /// read under a pin of the worker owning ledger slot `ledger` (so that
    /// its bytes cannot be reused meanwhile, and the pin is reconciled if
    /// the worker dies while it reads).
    pub fn source(&self, ledger: Option<u32>) -> Result<[u64; 2], Error> {
        Ok(self.read(ledger)?.table().header().source)
    }

    /// The slot of each of `ids` in the serving generation, matched
    /// against its members in generation order, occurrence by occurrence
    /// (the k-th occurrence of an identity gets the k-th member holding
    /// it), `None` when it has none; read under a pin on that generation,
    /// so that none of its slots is reused during the lookup (the pin of
    /// the worker owning ledger slot `ledger`, as [`Zone::source`]).
    pub fn slots_of<'i>(
        &self,
        ledger: Option<u32>,
        ids: impl IntoIterator<Item = &'i [u8]>,
    ) -> Result<Lookup, Error> {
        let reading = self.read(ledger)?;
        let (pin, t) = (reading.pin(), reading.table());
        let mut by_id: HashMap<&[u8], Vec<u32>> = HashMap::new();
        let members: Vec<usize> = t.members().iter().collect();
        for &i in members.iter().rev() {
            by_id.entry(self.identity(i)).or_default().push(i as u32);
        }
        let slots = ids
            .into_iter()
            .map(|id| by_id.get_mut(id).and_then(Vec::pop))
            .collect();
        Ok(Lookup {
            seq: pin.seq,
            source: t.header().source,
            slots,
        })
    }

    /// Whether the API lists slot `i` (LIVE, or RETIRING while requests
    /// are in flight on it), with what it saw: pass it to
    /// [`Zone::slot_unchanged`] after using the slot's identity.
    pub fn listed(&self, i: usize) -> Option<SlotMark> {
        let c = self.colds().get(i)?;
        let epoch = c.epoch.load(Acquire);
        let status = c.status.load(Acquire);
        let shown = match status {
            LIVE => true,
            RETIRING => self.states()[i].in_flight.load(Relaxed) > 0,
            _ => false,
        };
        shown.then_some(SlotMark { status, epoch })
    }

    /// Whether slot `i` still holds the identity it held when `mark` was
    /// taken, i.e. whether its identity bytes read since are that
    /// identity's: not FREE, same epoch. A reader outside the lease reads
    /// a slot as a seqlock: mark, read, check (the builder turns a slot
    /// FREE, then writes, then bumps the epoch, see `fill_slot`).
    pub fn slot_unchanged(&self, i: usize, mark: SlotMark) -> bool {
        // The identity reads before, the checks after (pairs with the
        // builder's release fence after its FREE store).
        fence(Acquire);
        let Some(c) = self.colds().get(i) else {
            return false;
        };
        let status = c.status.load(Acquire);
        status != FREE && c.epoch.load(Acquire) == mark.epoch
    }

    /// Slots named by some LIVE generation descriptor (the serving one or
    /// one still referenced), as a flag per slot. Lease holders, after a
    /// reclaim.
    fn named_slots(&self) -> Vec<bool> {
        let mut named = vec![false; self.peers()];
        for (d, ..) in self.generations() {
            for s in self.table(d).members().iter() {
                if let Some(n) = named.get_mut(s) {
                    *n = true;
                }
            }
        }
        named
    }

    /// Makes `list` the upstream's membership at `now` and publishes a
    /// generation of it (see the module note); `source` (the caller's list
    /// id and `config` counter) is recorded in the generation. `owner`
    /// takes the builder lease as for [`Zone::publish`].
    ///
    /// The list's policy must be the zone's; its health directives are
    /// ignored (the zone's apply). The API's LIVE servers stay members
    /// (see "Lists and the API's servers" in the module note). Errors
    /// change nothing: [`Error::Busy`] (another builder),
    /// [`Error::NoSpace`] (more peers than the list's room, the slots
    /// beyond `ha_api_max`; more than free slots; or a generation the
    /// arena cannot hold), [`Error::Pinned`] (older
    /// generations still hold the room), [`Error::TooLarge`] (an identity
    /// longer than a slot holds, or weights too large),
    /// [`Error::InvalidArgument`] (a list [`UpstreamSpec::validate`]
    /// refuses).
    pub fn apply_membership(
        &self,
        list: &UpstreamSpec<'_>,
        source: [u64; 2],
        owner: u64,
        alive: impl Fn(u64) -> bool,
        now: u64,
    ) -> Result<Applied, Error> {
        self.apply_inner(list, source, owner, &alive, now, false)?
            .ok_or(Error::Busy)
    }

    /// [`Zone::apply_membership`] of a list whose sources are ordered (the
    /// caller's list ids grow with its configurations): under the lease,
    /// nothing is done (`Ok(None)`) when the serving generation came from
    /// `source` already, and [`Error::Busy`] is returned when it came from
    /// a larger list id (an older configuration's workers never publish).
    pub fn apply_list(
        &self,
        list: &UpstreamSpec<'_>,
        source: [u64; 2],
        owner: u64,
        alive: impl Fn(u64) -> bool,
        now: u64,
    ) -> Result<Option<Applied>, Error> {
        self.apply_inner(list, source, owner, &alive, now, true)
    }

    /// The resolve of a list from an ordered source, as a worker runs it at
    /// each change of its resolved servers: puts `list` in force unless
    /// the serving generation came from `source` already or from a newer
    /// list (the rule of [`Zone::apply_list`], checked first without the
    /// lease: every worker sees each change, one builds it), then looks
    /// the list's peers up in the generation serving (under a pin of
    /// ledger slot `ledger`'s row, as [`Zone::slots_of`]).
    ///
    /// A list the zone cannot take as it is ([`Error::InvalidArgument`]:
    /// another policy, a list [`UpstreamSpec::validate`] refuses) is an
    /// error; a list that does not fit now is [`Resolved::refused`], and
    /// the lookup says which of its peers serve.
    pub fn resolve(
        &self,
        list: &UpstreamSpec<'_>,
        source: [u64; 2],
        ledger: Option<u32>,
        owner: u64,
        alive: impl Fn(u64) -> bool,
        now: u64,
    ) -> Result<Resolved, Error> {
        if list.policy != self.policy() {
            return Err(Error::InvalidArgument);
        }
        let (applied, refused) = match list_order(self.source(ledger)?, source) {
            Some(done) => (None, done.err()),
            None => match self.apply_list(list, source, owner, alive, now) {
                Ok(applied) => (applied, None),
                Err(Error::InvalidArgument) => return Err(Error::InvalidArgument),
                // Older generations hold the arena's room: none for now
                // (the next change tries again).
                Err(Error::Pinned) => (None, Some(Error::NoSpace)),
                Err(e) => (None, Some(e)),
            },
        };
        let lookup = self.slots_of(ledger, list.peers.iter().map(|p| p.id))?;
        Ok(Resolved {
            applied,
            refused,
            lookup,
        })
    }

    fn apply_inner(
        &self,
        list: &UpstreamSpec<'_>,
        source: [u64; 2],
        owner: u64,
        alive: &impl Fn(u64) -> bool,
        now: u64,
        ordered: bool,
    ) -> Result<Option<Applied>, Error> {
        if list.policy != self.policy() {
            return Err(Error::InvalidArgument);
        }
        list.validate()?;
        if list.peers.len() > self.peers() {
            return Err(Error::NoSpace);
        }
        let _lease = self.lease_guard(owner, alive)?;
        if ordered {
            // Under the lease the serving generation cannot change.
            if let Some(done) = list_order(self.serving().header().source, source) {
                return done.map(|()| None);
            }
        }
        // Under the lease: the API's servers stay as read.
        let api: Vec<usize> = self
            .member_slots()
            .into_iter()
            .filter(|&i| {
                self.slot_status(i) == Some(LIVE)
                    && self.colds()[i].origin.load(Relaxed) & PeerCold::API != 0
            })
            .collect();
        let room = self.peers() - (self.api_max() as usize).min(self.peers());
        if api.is_empty() {
            if list.peers.len() > room {
                return Err(Error::NoSpace);
            }
            return self
                .apply_locked(list, source, now, &[])
                .map(|(applied, _)| Some(applied));
        }
        // The list's servers, less identities LIVE as the API's (one slot
        // an identity), within their own room; then the API's, each with
        // its own parameters (primaries, then backups).
        let ids: HashSet<&[u8]> = api.iter().map(|&i| self.identity(i)).collect();
        let listed: Vec<PeerSpec<'_>> = list
            .peers
            .iter()
            .filter(|p| !ids.contains(p.id))
            .copied()
            .collect();
        if listed.len() > room {
            return Err(Error::NoSpace);
        }
        let kept: Vec<PeerSpec<'_>> = api.iter().map(|&i| self.member_spec(i)).collect();
        let mut all: Vec<PeerSpec<'_>> = Vec::with_capacity(listed.len() + kept.len());
        for backup in [false, true] {
            all.extend(listed.iter().filter(|p| p.backup == backup));
            all.extend(kept.iter().filter(|p| p.backup == backup));
        }
        let spec = UpstreamSpec {
            peers: &all,
            ..*list
        };
        spec.validate()?;
        self.apply_locked(&spec, source, now, &[])
            .map(|(applied, _)| Some(applied))
    }

    /// The membership change of [`Zone::apply_membership`], under the
    /// builder lease, for a list the caller checked (the zone's policy,
    /// [`UpstreamSpec::validate`]). `api[k]` (when given): the list's peer
    /// `k` is a server added through the API, new whatever its identity:
    /// it takes a FREE slot (never a RETIRING one of the same identity
    /// back: a new server, a new id), and the slot is marked
    /// [`PeerCold::API`]; with too few slots for those, [`Error::NoSpace`]
    /// (never a partial list). The applied change and the slot of each of
    /// the list's peers (of the list as applied: a partial one leaves
    /// peers out, see [`Applied::deferred`]).
    pub(super) fn apply_locked(
        &self,
        list: &UpstreamSpec<'_>,
        source: [u64; 2],
        now: u64,
        api: &[bool],
    ) -> Result<(Applied, Vec<u32>), Error> {
        if list.peers.len() > self.peers() {
            return Err(Error::NoSpace);
        }
        let is_api = |k: usize| api.get(k).copied().unwrap_or(false);
        self.reclaim();
        let (states, colds) = (self.states(), self.colds());

        // Candidates by identity: the serving members in generation order,
        // then RETIRING slots in slot order; popped from the back.
        let current = self.serving();
        let mut order: Vec<usize> = current.members().iter().collect();
        // (A RETIRING slot of the API's is not revived: a server added
        // again through the API is a new one, and a list's identity is
        // not the API's.)
        order.extend((0..self.peers()).filter(|&i| {
            self.slot_status(i) == Some(RETIRING)
                && colds[i].origin.load(Relaxed) & PeerCold::API == 0
        }));
        let mut by_id: HashMap<&[u8], Vec<usize>> = HashMap::new();
        for &i in order.iter().rev() {
            by_id.entry(self.identity(i)).or_default().push(i);
        }
        let mut slots: Vec<Option<usize>> = list
            .peers
            .iter()
            .enumerate()
            .map(|(k, p)| {
                if is_api(k) {
                    None
                } else {
                    by_id.get_mut(p.id).and_then(Vec::pop)
                }
            })
            .collect();
        // (A partial list, below, has no API peer: they are refused.)
        let api: Vec<bool> = (0..list.peers.len()).map(is_api).collect();
        let (mut list, mut source) = (list, source);
        let mut taken = vec![false; self.peers()];
        for &i in slots.iter().flatten() {
            taken[i] = true;
        }

        // Slots for the new identities: never-used FREE ones first, then
        // RETIRING ones the reuse rule allows.
        let mut new: Vec<usize> = (0..list.peers.len())
            .filter(|&k| slots[k].is_none())
            .collect();
        if new.iter().any(|&k| !fits_slot(&list.peers[k])) {
            return Err(Error::TooLarge);
        }
        let mut pool: Vec<(usize, bool)> = Vec::new();
        if !new.is_empty() {
            if !self.dynamic() {
                // No identity area to write a new identity into.
                return Err(Error::NoSpace);
            }
            pool.extend(
                (0..self.peers())
                    .filter(|&i| self.slot_status(i) == Some(FREE) && self.no_writers(i))
                    .map(|i| (i, false))
                    .take(new.len()),
            );
            if pool.len() < new.len() {
                // Freed now, before the generation is built: a slot a
                // verdict is still writing to stays FREE, for a later
                // change (the writer is done by then, or reconciled).
                let named = self.named_slots();
                for i in 0..self.peers() {
                    if pool.len() == new.len() {
                        break;
                    }
                    if self.slot_status(i) == Some(RETIRING)
                        && !taken[i]
                        && !named[i]
                        && states[i].in_flight.load(Relaxed) == 0
                    {
                        self.free_slot(i);
                        if self.no_writers(i) {
                            pool.push((i, true));
                        }
                    }
                }
            }
        }
        // Too few slots: the servers leaving free theirs only once no
        // generation names them, so first a generation without them (and
        // with the newcomers that fit); the list comes again (its source
        // is PARTIAL) and the rest take the slots freed by then.
        let (reduced, reduced_spec);
        let mut deferred = 0;
        if pool.len() < new.len() && api.iter().any(|&a| a) {
            return Err(Error::NoSpace);
        }
        if pool.len() < new.len() {
            let departing = current.members().iter().filter(|&i| !taken[i]).count();
            if departing == 0 && pool.is_empty() {
                return Err(Error::NoSpace);
            }
            let mut skip = vec![false; list.peers.len()];
            for &k in &new[pool.len()..] {
                skip[k] = true;
            }
            deferred = (new.len() - pool.len()) as u32;
            reduced = list
                .peers
                .iter()
                .zip(&skip)
                .filter(|&(_, &s)| !s)
                .map(|(p, _)| *p)
                .collect::<Vec<PeerSpec<'_>>>();
            slots = slots
                .into_iter()
                .zip(&skip)
                .filter(|&(_, &s)| !s)
                .map(|(i, _)| i)
                .collect();
            reduced_spec = UpstreamSpec {
                peers: &reduced,
                ..*list
            };
            list = &reduced_spec;
            new = (0..list.peers.len())
                .filter(|&k| slots[k].is_none())
                .collect();
            source = [source[0], PARTIAL];
        }
        let mut is_new = vec![false; list.peers.len()];
        for (&k, &(i, _)) in new.iter().zip(&pool) {
            slots[k] = Some(i);
            is_new[k] = true;
        }
        let slots: Vec<u32> = slots.iter().map(|s| s.unwrap_or(0) as u32).collect();

        // The generation as it will serve: kept slots with their weight
        // override, if any.
        let peers: Vec<PeerSpec<'_>> = list
            .peers
            .iter()
            .zip(&slots)
            .zip(&is_new)
            .map(|((p, &i), &fresh)| {
                let over = colds[i as usize].weight_override.load(Relaxed);
                PeerSpec {
                    weight: if over != 0 && !fresh { over } else { p.weight },
                    ..*p
                }
            })
            .collect();
        let spec = UpstreamSpec {
            policy: list.policy,
            peers: &peers,
            health: *self.health_spec(),
            schedule_room: 0,
            sessions: self.sessions(),
        };
        let built = self.prepare(&spec, &slots, source)?;

        // From here nothing fails. The slots' states first, then the
        // generation (a pick may come the moment it is published).
        let mut applied = Applied {
            deferred,
            ..Applied::default()
        };
        let mut member = vec![false; self.peers()];
        for &i in &slots {
            member[i as usize] = true;
        }
        for (&k, &(i, reused)) in new.iter().zip(&pool) {
            if reused {
                applied.reused += 1;
            }
            let origin = if api[k] { PeerCold::API } else { 0 };
            self.fill_slot(i, &list.peers[k], origin, list.peers.len(), now);
            crash_point("apply.filled");
            applied.added += 1;
        }
        for (k, p) in list.peers.iter().enumerate() {
            let i = slots[k] as usize;
            if is_new[k] {
                continue;
            }
            let revived = colds[i].status.load(Relaxed) == RETIRING;
            self.keep_slot(i, p);
            crash_point("apply.kept");
            if revived {
                applied.revived += 1;
            } else {
                applied.kept += 1;
            }
        }
        for i in current.members().iter() {
            if !member[i] {
                states[i].flags.fetch_or(PeerState::RETIRED, Relaxed);
                crash_point("apply.retiring");
                colds[i].status.store(RETIRING, Release);
                crash_point("apply.retired");
                applied.retired += 1;
            }
        }
        applied.seq = self.commit(built, &spec, &slots);
        self.health_changed();
        self.update_panic();
        Ok((applied, slots))
    }

    /// Brings the slots back in line with the serving generation after a
    /// builder died between a membership change's slot writes and its
    /// publication (the lease holder that took its lease over calls it):
    /// a LIVE slot the serving generation does not name (a newcomer whose
    /// generation never came) becomes RETIRING, so that the reuse rule
    /// frees it; a slot the serving generation names but that was being
    /// retired is LIVE again. Between changes, LIVE is exactly "named by
    /// the serving generation". Lease holders only; static zones have
    /// nothing to repair.
    pub(crate) fn repair_membership(&self) {
        if !self.dynamic() || self.current_slot().is_none() {
            return;
        }
        let named = {
            let mut v = vec![false; self.peers()];
            // Under the lease the serving generation stays.
            for i in self.serving().members().iter() {
                v[i] = true;
            }
            v
        };
        let (states, colds) = (self.states(), self.colds());
        for (i, &member) in named.iter().enumerate() {
            match colds[i].status.load(Acquire) {
                LIVE if !member => {
                    states[i].flags.fetch_or(PeerState::RETIRED, Relaxed);
                    colds[i].status.store(RETIRING, Release);
                }
                RETIRING if member => {
                    colds[i].status.store(LIVE, Release);
                    states[i].flags.fetch_and(!PeerState::RETIRED, Relaxed);
                }
                // A member flagged RETIRED by a retire cut short.
                LIVE if states[i].flags.load(Relaxed) & PeerState::RETIRED != 0 => {
                    states[i].flags.fetch_and(!PeerState::RETIRED, Relaxed);
                }
                _ => {}
            }
        }
    }

    /// A kept (or revived) slot takes `p`'s weight, limits, `backup` and
    /// `down`, and keeps everything else.
    fn keep_slot(&self, i: usize, p: &PeerSpec<'_>) {
        let (s, c) = (&self.states()[i], &self.colds()[i]);
        c.conf_weight.store(p.weight, Relaxed);
        s.max_conns.store(p.max_conns, Relaxed);
        s.max_fails.store(p.max_fails, Relaxed);
        s.fail_timeout_ms.store(p.fail_timeout_ms as u32, Relaxed);
        for (on, bit) in [(p.backup, PeerState::BACKUP), (p.down, PeerState::DOWN)] {
            if on {
                s.flags.fetch_or(bit, Relaxed);
            } else {
                s.flags.fetch_and(!bit, Relaxed);
            }
        }
        s.flags.fetch_and(!PeerState::RETIRED, Relaxed);
        c.status.store(LIVE, Release);
    }

    /// Drops everything a RETIRING slot held: it is FREE again. Only under
    /// the reuse rule (nothing in flight, no generation names it).
    fn free_slot(&self, i: usize) {
        let s = &self.states()[i];
        // An ejection ends with the flags: the count (changed only under
        // the ejection lease, see `outlier`) is recounted by the next
        // worker that ends ejections.
        s.flags.store(PeerState::RETIRED, Relaxed);
        // `SeqCst`, before the writers mask is read (`no_writers`).
        self.colds()[i].status.store(FREE, SeqCst);
        crash_point("apply.freed");
    }

    /// Whether no check verdict is being written to FREE slot `i`: only
    /// then may it be given to a new server. Read `SeqCst` after the slot's
    /// FREE store, so a verdict that announces itself later sees FREE and
    /// drops itself (see [`Zone::check_done_epoch`]); a bit of a dead
    /// worker is cleared when its ledger slot is reconciled.
    fn no_writers(&self, i: usize) -> bool {
        self.health_rows()[i].writers.load(SeqCst) == 0
    }

    /// Gives FREE slot `i` to `p`, a server new to the running upstream of
    /// `members` members at `now`, from `origin` ([`PeerCold::origin`]):
    /// fresh state, today's new-server rules.
    fn fill_slot(&self, i: usize, p: &PeerSpec<'_>, origin: u32, members: usize, now: u64) {
        let (s, c, row) = (&self.states()[i], &self.colds()[i], &self.health_rows()[i]);
        let PeerState {
            // 0: nothing is in flight on a FREE slot.
            in_flight: _,
            fails,
            checked_ms,
            accessed_ms,
            ewma_bits,
            ewma_stamp_ms,
            weight,
            max_conns,
            max_fails,
            flags,
            fail_timeout_ms,
        } = s;
        for f in [fails, weight] {
            f.store(0, Relaxed);
        }
        for f in [checked_ms, accessed_ms, ewma_bits, ewma_stamp_ms] {
            f.store(0, Relaxed);
        }
        weight.store(p.weight, Relaxed);
        max_conns.store(p.max_conns, Relaxed);
        max_fails.store(p.max_fails, Relaxed);
        fail_timeout_ms.store(p.fail_timeout_ms as u32, Relaxed);
        // Ledger entries are left as they are: with nothing in flight
        // each one's exact count is 0 already, and its parity must keep
        // matching the in-flight word's bits (see `flight`).
        self.clear_slot_stats(i);
        let crate::layout::health::HealthRow {
            due_ms,
            last_ms,
            checks,
            fails: check_fails,
            unhealthy,
            rise,
            fall,
            last,
            prober,
            // Clear: the slot is given only with no writer at work.
            writers: _,
            ramp_from_ms,
            credit,
            consecutive_5xx,
            consecutive_errors,
            ejections,
            ejected_until_ms,
            ejection_end_ms,
            last_reason,
            last_duration_ms,
            reserved2: _,
        } = row;
        for f in [
            due_ms,
            last_ms,
            checks,
            check_fails,
            unhealthy,
            ramp_from_ms,
            ejected_until_ms,
            ejection_end_ms,
        ] {
            f.store(0, Relaxed);
        }
        for f in [
            rise,
            fall,
            last,
            prober,
            credit,
            consecutive_5xx,
            consecutive_errors,
            ejections,
            last_reason,
            last_duration_ms,
        ] {
            f.store(0, Relaxed);
        }

        // Identity: the slot's area, then the lengths (readers check the
        // epoch around their copy, see `Zone::identity`).
        let PeerCold {
            id_hash,
            id_off,
            id_len,
            server_off,
            server_len,
            conf_weight,
            weight_override,
            position,
            status,
            epoch,
            sid_len,
            sid_hash: sid_hash_word,
            sid_off,
            origin: origin_word,
        } = c;
        let (sid, sid_n) = if self.sessions() {
            session_id(p)
        } else {
            ([0; MAX_SID], 0)
        };
        let names = self.root().names_off as usize;
        // The FREE store (`free_slot`) before the bytes, for readers that
        // check the slot around their copy (`Zone::slot_unchanged`).
        fence(Release);
        // SAFETY: the slot's identity area (SLOT_ID_MAX bytes at id_off,
        // SLOT_SERVER_MAX at server_off, inside the names section: layout
        // contract of a dynamic zone) and the lengths fit (`fits_slot`,
        // checked by the caller). The slot is FREE and named by no
        // generation: no pick, release or probe reads these bytes, and
        // readers of the API check the epoch.
        unsafe {
            let base = self.as_ptr().add(names);
            core::ptr::copy_nonoverlapping(
                p.id.as_ptr(),
                base.add(*id_off as usize),
                p.id.len().min(SLOT_ID_MAX),
            );
            core::ptr::copy_nonoverlapping(
                p.server.as_ptr(),
                base.add(*server_off as usize),
                p.server.len().min(SLOT_SERVER_MAX),
            );
            // MAX_SID bytes at sid_off, the slot's area after the server.
            core::ptr::copy_nonoverlapping(sid.as_ptr(), base.add(*sid_off as usize), sid_n);
        }
        id_len.store(p.id.len() as u32, Release);
        server_len.store(p.server.len() as u32, Release);
        sid_len.store(sid_n as u32, Release);
        sid_hash_word.store(
            if sid_n == 0 {
                0
            } else {
                sid_hash(&sid[..sid_n])
            },
            Relaxed,
        );
        id_hash.store(identity_hash(p.id), Relaxed);
        conf_weight.store(p.weight, Relaxed);
        weight_override.store(0, Relaxed);
        // A fresh API id: never one a server had before in this zone, even
        // in this slot (lease holders only, so a plain count).
        let id = p.position.unwrap_or_else(|| {
            let n = self.sync().ids.fetch_add(1, Relaxed);
            (self.configured() as u64 + n).min(u64::from(u32::MAX)) as u32
        });
        position.store(id, Relaxed);
        origin_word.store(origin, Relaxed);
        epoch.fetch_add(1, Release);

        // New to a running upstream: checking under `mandatory` (and slow
        // start once the first check passes), else slow start.
        let hs = *self.health_spec();
        let mandatory = hs.flags & HealthSpec::MANDATORY != 0;
        let mut f =
            if p.backup { PeerState::BACKUP } else { 0 } | if p.down { PeerState::DOWN } else { 0 };
        if mandatory {
            f |= PeerState::CHECKING;
            ramp_from_ms.store(crate::layout::health::RAMP_ON_FIRST_PASS, Relaxed);
        } else if hs.slow_start_ms != 0 && members >= 2 {
            ramp_from_ms.store(now, Relaxed);
            f |= PeerState::SLOW;
        }
        // Last: the slot leaves RETIRED, i.e. becomes pickable once a
        // generation names it.
        flags.store(f, Release);
        status.store(LIVE, Release);
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::request::Outcome;
    use crate::spec::{HashMode, Policy};
    use crate::testing::{OwnedAttempt, OwnedTable};

    fn ids(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("up\0srv{i}:80\010.0.{}.{}:80", i / 250, i % 250).into_bytes())
            .collect()
    }

    fn list<'a>(ids: &'a [Vec<u8>], which: &[usize]) -> Vec<PeerSpec<'a>> {
        which.iter().map(|&i| PeerSpec::new(&ids[i])).collect()
    }

    fn spec<'a>(policy: Policy, peers: &'a [PeerSpec<'a>]) -> UpstreamSpec<'a> {
        UpstreamSpec {
            policy,
            peers,
            health: Default::default(),
            schedule_room: 0,
            sessions: false,
        }
    }

    fn zone_of(policy: Policy, ids: &[Vec<u8>], which: &[usize], cap: usize) -> OwnedTable {
        let peers = list(ids, which);
        OwnedTable::with_capacity(&spec(policy, &peers), cap).unwrap()
    }

    fn apply(t: &OwnedTable, ids: &[Vec<u8>], which: &[usize]) -> Result<Applied, Error> {
        let z = t.zone();
        let peers = list(ids, which);
        z.apply_membership(&spec(z.policy(), &peers), [1, 2], 9, |_| true, 1_000)
    }

    /// The slot holding identity `id` that is not FREE.
    fn slot_of(t: &OwnedTable, id: &[u8]) -> Option<usize> {
        let z = t.zone();
        (0..z.peers()).find(|&i| z.slot_status(i) != Some(FREE) && z.identity(i) == id)
    }

    #[test]
    fn resolve_applies_ordered_lists_once_and_looks_their_peers_up() {
        let ids = ids(6);
        let t = zone_of(Policy::RoundRobin, &ids, &[0, 1], 4);
        let z = t.zone();
        let resolve = |which: &[usize], source: [u64; 2]| {
            let peers = list(&ids, which);
            z.resolve(
                &spec(Policy::RoundRobin, &peers),
                source,
                None,
                9,
                |_| true,
                1_000,
            )
        };
        // A new list: built, its peers found.
        let r = resolve(&[1, 2], [3, 1]).unwrap();
        assert_eq!((r.applied.map(|a| a.added), r.refused), (Some(1), None));
        assert_eq!(r.lookup.source, [3, 1]);
        assert!(r.lookup.slots.iter().all(Option::is_some));
        // The same list again (another worker): nothing built.
        let r = resolve(&[1, 2], [3, 1]).unwrap();
        assert_eq!((r.applied, r.refused), (None, None));
        // An older configuration's list: refused as busy, the newer serves.
        let r = resolve(&[0], [2, 9]).unwrap();
        assert_eq!((r.applied, r.refused), (None, Some(Error::Busy)));
        assert_eq!(r.lookup.source, [3, 1]);
        assert_eq!(r.lookup.slots, [None], "peer 0 no longer serves");
        // More peers than slots: refused, the serving ones still found.
        let r = resolve(&[1, 2, 3, 4, 5], [4, 1]).unwrap();
        assert_eq!((r.applied, r.refused), (None, Some(Error::NoSpace)));
        assert_eq!(r.lookup.slots.iter().filter(|s| s.is_some()).count(), 2);
        // Another policy's list is an error, not a refusal.
        let peers = list(&ids, &[1]);
        assert_eq!(
            z.resolve(
                &spec(Policy::LeastConn, &peers),
                [5, 1],
                None,
                9,
                |_| true,
                0
            ),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn static_zone_layout_is_unchanged_by_slots() {
        let ids = ids(3);
        let peers = list(&ids, &[0, 1, 2]);
        let s = spec(Policy::RoundRobin, &peers);
        assert_eq!(
            crate::write::zone_size(&s).unwrap(),
            crate::write::zone_size_with(&s, 3).unwrap()
        );
        let t = OwnedTable::new(&s).unwrap();
        let z = t.zone();
        assert!(!z.dynamic());
        assert_eq!(z.serving().header().members_off, 0, "dense");
        assert!((0..3).all(|i| z.slot_status(i) == Some(LIVE)));
        assert!(crate::write::zone_size_with(&s, 2).is_err());
    }

    #[test]
    fn slots_live_retire_come_back_and_are_reused() {
        let ids = ids(6);
        let t = zone_of(Policy::RoundRobin, &ids, &[0, 1, 2], 4);
        let z = t.zone();
        assert!(z.dynamic());
        assert_eq!(z.slot_status(3), Some(FREE));
        // "1" leaves; "3" comes, in the free slot.
        let a = apply(&t, &ids, &[0, 2, 3]).unwrap();
        assert_eq!((a.kept, a.added, a.retired, a.reused), (2, 1, 1, 0));
        assert_eq!(z.slot_status(1), Some(RETIRING));
        assert_eq!(slot_of(&t, &ids[3]), Some(3));
        assert_eq!(z.slot_epoch(3), Some(1));
        assert_eq!(z.serving().header().source, [1, 2]);
        let mut seen = [0; 4];
        for _ in 0..30 {
            let mut r = OwnedAttempt::new(z, 1_000);
            seen[r.pick(1_000).unwrap().peer as usize] += 1;
            r.release(Outcome::Ok, 1_000).unwrap();
        }
        assert_eq!(seen, [10, 0, 10, 10], "a RETIRING slot is never picked");
        // "1" fails once, then leaves and comes back: same slot, its state.
        let a = apply(&t, &ids, &[0, 1, 2, 3]).unwrap();
        assert_eq!(a.revived, 1);
        assert_eq!(slot_of(&t, &ids[1]), Some(1));
        z.states()[1].fails.store(1, Relaxed);
        apply(&t, &ids, &[0, 2, 3]).unwrap();
        apply(&t, &ids, &[0, 1, 2, 3]).unwrap();
        assert_eq!(
            z.states()[1].fails.load(Relaxed),
            1,
            "a flapping server keeps its state"
        );
        assert_eq!(z.slot_epoch(1), Some(0));
        // No FREE slot left: "4" takes the RETIRING slot of "1", whose
        // state is dropped; the epoch tells.
        apply(&t, &ids, &[0, 2, 3]).unwrap();
        let a = apply(&t, &ids, &[0, 2, 3, 4]).unwrap();
        assert_eq!((a.added, a.reused), (1, 1));
        assert_eq!(slot_of(&t, &ids[4]), Some(1));
        assert_eq!(z.slot_epoch(1), Some(1));
        assert_eq!(z.states()[1].fails.load(Relaxed), 0);
        assert_eq!(z.identity(1), &ids[4][..]);
        // Five members do not fit in four slots: nothing changes.
        let seq = z.generation();
        assert_eq!(
            apply(&t, &ids, &[0, 1, 2, 3, 4]).unwrap_err(),
            Error::NoSpace
        );
        assert_eq!(z.generation(), seq);
        assert_eq!(z.slot_status(1), Some(LIVE));
    }

    #[test]
    fn consistent_hash_tells_apart_resolved_servers_of_one_name() {
        // Two addresses of one name: the same `server` string. Configured,
        // nginx's ring gives them the same points (kept: the differential
        // tests); resolved, each has its own and keys stick to one.
        let policy = Policy::Hash {
            mode: HashMode::Consistent,
            balance_factor: 0,
            maglev_size: 0,
        };
        let (a, b) = (
            &b"up\0app:80\x00127.0.0.1:80"[..],
            &b"up\0app:80\x00127.0.0.2:80"[..],
        );
        let peers = [
            PeerSpec {
                server: b"app:80",
                ..PeerSpec::new(a)
            },
            PeerSpec {
                server: b"app:80",
                ..PeerSpec::new(b)
            },
        ];
        let t = OwnedTable::with_capacity(&spec(policy, &[]), 4).unwrap();
        let z = t.zone();
        z.apply_membership(&spec(policy, &peers), [1, 1], 9, |_| true, 0)
            .unwrap();
        let mut first = Vec::new();
        for k in 0..200 {
            let key = format!("key{k}");
            let picks: Vec<u32> = (0..2)
                .map(|_| {
                    let mut r = OwnedAttempt::new(z, 0);
                    let p = r.pick_keyed(key.as_bytes(), 0).unwrap().peer;
                    r.release(Outcome::Ok, 0).unwrap();
                    r.end();
                    p
                })
                .collect();
            assert_eq!(picks[0], picks[1], "{key} moved between picks");
            first.push(picks[0]);
        }
        let on_a = first.iter().filter(|&&p| p == first[0]).count();
        // 200 keys over two servers of 160 points each: a share below 25%
        // would be 7 standard deviations off
        assert!(
            (50..=150).contains(&on_a),
            "{on_a} of 200 keys on one server"
        );
    }

    #[test]
    fn a_full_zone_replaces_a_server_in_two_steps() {
        for policy in crate::request::tests::all() {
            let ids = ids(5);
            let t = zone_of(policy, &ids, &[], 3);
            let z = t.zone();
            apply(&t, &ids, &[0, 1, 2]).unwrap();
            // "2" leaves and "3" joins: no slot is free until "2" is named
            // by no generation, so first a generation without either
            let a = apply(&t, &ids, &[0, 1, 3]).unwrap();
            assert_eq!((a.kept, a.retired, a.added, a.deferred), (2, 1, 0, 1));
            assert_eq!(z.serving().header().source, [1, PARTIAL]);
            assert_eq!(z.serving().peers(), 2);
            assert_eq!(z.slot_status(2), Some(RETIRING));
            // the list again: "3" takes the slot "2" left
            let a = apply(&t, &ids, &[0, 1, 3]).unwrap();
            assert_eq!(
                (a.kept, a.added, a.reused, a.deferred),
                (2, 1, 1, 0),
                "{policy:?}"
            );
            assert_eq!(slot_of(&t, &ids[3]), Some(2));
            assert_eq!(z.serving().header().source, [1, 2]);
            // nothing leaves, nothing fits: refused, nothing changes
            let seq = z.generation();
            assert_eq!(apply(&t, &ids, &[0, 1, 3, 4]).unwrap_err(), Error::NoSpace);
            assert_eq!(z.generation(), seq);
        }
    }

    #[test]
    fn a_slot_is_reused_only_once_no_request_or_generation_holds_it() {
        let ids = ids(5);
        let t = zone_of(Policy::LeastConn, &ids, &[0, 1, 2], 4);
        let z = t.zone();
        apply(&t, &ids, &[0, 1, 2, 3]).unwrap();
        // A request on "2" is in flight when "2" leaves.
        let mut held = loop {
            let mut r = OwnedAttempt::new(z, 0);
            if r.pick(0).unwrap().peer == 2 {
                break r;
            }
        };
        apply(&t, &ids, &[0, 1, 3]).unwrap();
        assert_eq!(
            z.view(2, 0).unwrap().state,
            crate::write::ServerState::Draining
        );
        // "4" needs a slot: the only candidate is still held.
        assert_eq!(apply(&t, &ids, &[0, 1, 3, 4]).unwrap_err(), Error::NoSpace);
        // The try ends (a failure, counted to "2"), the request does not:
        // its generation still names the slot.
        held.release(Outcome::Failed, 5).unwrap();
        assert_eq!(z.states()[2].in_flight.load(Relaxed), 0);
        assert_eq!(apply(&t, &ids, &[0, 1, 3, 4]).unwrap_err(), Error::NoSpace);
        held.end();
        let a = apply(&t, &ids, &[0, 1, 3, 4]).unwrap();
        assert_eq!(a.reused, 1);
        assert_eq!(slot_of(&t, &ids[4]), Some(2));
        let v = z.view(2, 5).unwrap();
        assert_eq!((v.fails, v.stats.requests, v.stats.fails), (0, 0, 0));
    }

    #[test]
    fn a_dead_workers_request_holds_a_slot_until_its_ledger_row_is_reconciled() {
        let ids = ids(5);
        let t = zone_of(Policy::RoundRobin, &ids, &[0, 1, 2], 4);
        let z = t.zone();
        apply(&t, &ids, &[0, 1, 2, 3]).unwrap();
        let ledger = z.claim_slot(100, |_| true).unwrap();
        // Worker 100 picks "1" and dies with the request.
        let held = loop {
            let mut r = OwnedAttempt::with_slot(z, 0, Some(ledger));
            if r.pick(0).unwrap().peer == 1 {
                break r;
            }
        };
        std::mem::forget(held);
        apply(&t, &ids, &[0, 2, 3]).unwrap();
        assert_eq!(apply(&t, &ids, &[0, 2, 3, 4]).unwrap_err(), Error::NoSpace);
        // Its replacement reconciles: the count and the pin are returned.
        z.claim_slot(200, |pid| pid != 100).unwrap();
        assert_eq!(z.states()[1].in_flight.load(Relaxed), 0);
        let a = apply(&t, &ids, &[0, 2, 3, 4]).unwrap();
        assert_eq!((a.added, a.reused), (1, 1));
        assert_eq!(slot_of(&t, &ids[4]), Some(1));
        let counts = z.ledger_slot(ledger as usize).unwrap().1;
        assert_eq!(
            crate::layout::flight::Entry(counts[1].load(Relaxed)).count(),
            0
        );
    }

    #[test]
    fn survivors_keep_every_field() {
        let ids = ids(5);
        let health = HealthSpec {
            flags: HealthSpec::CHECK,
            interval_ms: 1_000,
            timeout_ms: 500,
            fails: 1,
            passes: 1,
            ..HealthSpec::default()
        };
        let peers = list(&ids, &[0, 1, 2]);
        let t = OwnedTable::with_capacity(
            &UpstreamSpec {
                policy: Policy::Ewma { decay_ms: 1_000 },
                peers: &peers,
                health,
                schedule_room: 0,
                sessions: false,
            },
            5,
        )
        .unwrap();
        let z = t.zone();
        let mut r = OwnedAttempt::new(z, 100);
        let p = r.pick(100).unwrap().peer as usize;
        r.release(Outcome::Failed, 150).unwrap();
        r.end();
        z.states()[1].ewma_bits.store(7.5f64.to_bits(), Relaxed);
        z.set_admin(1, None, Some(true), 0).unwrap();
        z.set_weight(1, Some(4)).unwrap();
        z.check_done(2, false, 200).unwrap();
        let before: Vec<_> = (0..3).map(|i| z.view(i, 300).unwrap()).collect();
        // "0" is kept through two changes; a member is added and removed.
        apply(&t, &ids, &[3, 2, 1, 0]).unwrap();
        apply(&t, &ids, &[1, 0, 2, 4]).unwrap();
        for (i, b) in before.iter().enumerate() {
            let v = z.view(i, 300).unwrap();
            assert_eq!(v.identity, b.identity);
            assert_eq!(
                (
                    v.fails,
                    v.drain,
                    v.weight_override,
                    v.state,
                    v.stats,
                    v.latency_ms
                ),
                (
                    b.fails,
                    b.drain,
                    b.weight_override,
                    b.state,
                    b.stats,
                    b.latency_ms
                ),
                "slot {i}"
            );
            assert_eq!(v.checks, b.checks);
        }
        assert_eq!(z.view(1, 0).unwrap().weight, 4, "override in force");
        assert_eq!(z.view(p, 300).unwrap().stats.fails, 1);
        // The API's weight change builds on the membership.
        z.set_weight(4, Some(3)).unwrap();
        z.publish(9, |_| true).unwrap();
        let members: Vec<usize> = z.serving().members().iter().collect();
        assert_eq!(members.len(), 4);
        assert_eq!(z.view(4, 0).unwrap().weight, 3);
        assert!(!members.contains(&3), "{members:?}");
    }

    #[test]
    fn new_servers_follow_the_new_server_rules() {
        let ids = ids(3);
        let peers = list(&ids, &[0, 1]);
        let slow = HealthSpec {
            slow_start_ms: 10_000,
            ..HealthSpec::default()
        };
        let mandatory = HealthSpec {
            flags: HealthSpec::CHECK | HealthSpec::MANDATORY,
            interval_ms: 1_000,
            timeout_ms: 500,
            fails: 1,
            passes: 1,
            slow_start_ms: 10_000,
            ..HealthSpec::default()
        };
        for (health, bit) in [(slow, PeerState::SLOW), (mandatory, PeerState::CHECKING)] {
            let s = UpstreamSpec {
                policy: Policy::RoundRobin,
                peers: &peers,
                health,
                schedule_room: 0,
                sessions: false,
            };
            let t = OwnedTable::with_capacity(&s, 3).unwrap();
            let z = t.zone();
            // The configured ones are past their first check.
            for i in 0..2 {
                if health.checks() {
                    z.check_done(i, true, 10).unwrap();
                }
            }
            apply(&t, &ids, &[0, 1, 2]).unwrap();
            let f = z.states()[2].flags.load(Relaxed);
            assert_ne!(f & bit, 0, "{f:#x}");
            if health.checks() {
                for _ in 0..20 {
                    let mut r = OwnedAttempt::new(z, 20);
                    assert_ne!(r.pick(20).unwrap().peer, 2, "checking");
                    r.release(Outcome::Ok, 20).unwrap();
                }
                z.check_done(2, true, 30).unwrap();
                assert_ne!(z.states()[2].flags.load(Relaxed) & PeerState::SLOW, 0);
            }
        }
    }

    #[test]
    fn an_empty_list_serves_nothing_then_servers_return() {
        for policy in crate::request::tests::all() {
            let ids = ids(3);
            let t = zone_of(policy, &ids, &[0, 1, 2], 4);
            let z = t.zone();
            let a = apply(&t, &ids, &[]).unwrap();
            assert_eq!(a.retired, 3);
            assert_eq!(z.serving().peers(), 0);
            let mut r = OwnedAttempt::new(z, 0);
            assert_eq!(
                r.pick_keyed(b"k", 0).unwrap_err(),
                Error::Busy,
                "{policy:?}"
            );
            r.end();
            apply(&t, &ids, &[2, 1]).unwrap();
            for k in 0..20 {
                let mut r = OwnedAttempt::new(z, 0);
                let p = r.pick_keyed(format!("k{k}").as_bytes(), 0).unwrap().peer;
                assert!(p == 1 || p == 2, "{policy:?}: {p}");
                r.release(Outcome::Ok, 0).unwrap();
            }
            assert!(z.states().iter().all(|s| s.in_flight.load(Relaxed) == 0));
        }
    }

    #[test]
    fn refusals_keep_the_serving_generation() {
        let ids = ids(3);
        let t = zone_of(Policy::RoundRobin, &ids, &[0, 1], 3);
        let z = t.zone();
        let seq = z.generation();
        let long = vec![b'x'; SLOT_ID_MAX + 1];
        let peers = [PeerSpec::new(&ids[0]), PeerSpec::new(&long)];
        let e = z
            .apply_membership(&spec(Policy::RoundRobin, &peers), [0; 2], 9, |_| true, 0)
            .unwrap_err();
        assert_eq!(e, Error::TooLarge);
        let e = z
            .apply_membership(
                &spec(Policy::LeastConn, &peers[..1]),
                [0; 2],
                9,
                |_| true,
                0,
            )
            .unwrap_err();
        assert_eq!(e, Error::InvalidArgument);
        z.sync().builder.store(42, Relaxed);
        assert_eq!(apply(&t, &ids, &[0]).unwrap_err(), Error::Busy);
        z.sync().builder.store(0, Relaxed);
        // Weights too heavy for the arena.
        let heavy: Vec<PeerSpec<'_>> = (0..3)
            .map(|i| PeerSpec::new(&ids[i]).weight(1_000_000))
            .collect();
        let hashed = zone_of(
            Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            &ids,
            &[0, 1],
            3,
        );
        let hz = hashed.zone();
        let e = hz
            .apply_membership(&spec(hz.policy(), &heavy), [0; 2], 9, |_| true, 0)
            .unwrap_err();
        assert!(matches!(e, Error::NoSpace | Error::TooLarge), "{e:?}");
        assert_eq!(hz.serving().peers(), 2);
        assert_eq!(hz.slot_status(2), Some(FREE));
        assert_eq!(z.generation(), seq);
        assert!((0..2).all(|i| z.slot_status(i) == Some(LIVE)));
    }

    #[test]
    fn a_static_zone_retires_and_revives_but_has_no_room_for_new_names() {
        let ids = ids(4);
        let peers = list(&ids, &[0, 1, 2]);
        let t = OwnedTable::new(&spec(Policy::RoundRobin, &peers)).unwrap();
        let z = t.zone();
        apply(&t, &ids, &[0, 2]).unwrap();
        assert_ne!(z.serving().header().members_off, 0, "no longer dense");
        assert_eq!(apply(&t, &ids, &[0, 2, 3]).unwrap_err(), Error::NoSpace);
        apply(&t, &ids, &[0, 1, 2]).unwrap();
        assert_eq!(
            (0..6)
                .map(|_| crate::request::tests::one(&t, 0))
                .collect::<String>(),
            "abcabc"
        );
    }

    /// The peer each of `keys` maps to, by identity.
    fn owners(t: &OwnedTable, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let z = t.zone();
        keys.iter()
            .map(|k| {
                let mut r = OwnedAttempt::new(z, 0);
                let p = r.pick_keyed(k, 0).unwrap().peer as usize;
                r.release(Outcome::Ok, 0).unwrap();
                z.identity(p).to_vec()
            })
            .collect()
    }

    #[test]
    fn consistent_hashing_moves_only_what_it_must() {
        let ids = ids(41);
        let keys: Vec<Vec<u8>> = (0..4_000)
            .map(|k| format!("key-{k}").into_bytes())
            .collect();
        for mode in [HashMode::Consistent, HashMode::Maglev] {
            let policy = Policy::Hash {
                mode,
                balance_factor: 0,
                maglev_size: 0,
            };
            let all: Vec<usize> = (0..40).collect();
            let t = zone_of(policy, &ids, &all, 64);
            let before = owners(&t, &keys);
            // One server removed: only its keys move (Maglev: others by a
            // few percent at most).
            let gone = &ids[17];
            let without: Vec<usize> = all.iter().copied().filter(|&i| i != 17).collect();
            apply(&t, &ids, &without).unwrap();
            let after = owners(&t, &keys);
            let mut moved_others = 0;
            for (b, a) in before.iter().zip(&after) {
                assert_ne!(a, gone);
                if b != gone && a != b {
                    moved_others += 1;
                }
            }
            let others = before.iter().filter(|b| *b != gone).count();
            match mode {
                HashMode::Consistent => assert_eq!(moved_others, 0),
                _ => assert!(
                    moved_others * 100 <= others * 3,
                    "maglev moved {moved_others} of {others}"
                ),
            }
            // Back, and one more: only the new server's keys move.
            apply(&t, &ids, &all).unwrap();
            assert_eq!(owners(&t, &keys), before, "{mode:?}: back as before");
            let mut more = all.clone();
            more.push(40);
            apply(&t, &ids, &more).unwrap();
            let after = owners(&t, &keys);
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                if a != b {
                    moved += 1;
                    if mode == HashMode::Consistent {
                        assert_eq!(a, &ids[40], "a key moved elsewhere than the new server");
                    }
                }
            }
            let to_new = after.iter().filter(|a| **a == ids[40]).count();
            assert!(to_new > 0);
            if mode == HashMode::Maglev {
                assert!(
                    (moved - to_new) * 100 <= keys.len() * 3,
                    "maglev moved {} keys between old servers",
                    moved - to_new
                );
            }
        }
    }
}

#[cfg(test)]
mod replan {
    use core::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::request::Outcome;
    use crate::spec::Policy;
    use crate::testing::{OwnedAttempt, OwnedTable};

    fn spec<'a>(policy: Policy, peers: &'a [PeerSpec<'a>]) -> UpstreamSpec<'a> {
        UpstreamSpec {
            policy,
            peers,
            health: Default::default(),
            schedule_room: 0,
            sessions: false,
        }
    }

    #[test]
    fn a_retry_replans_on_the_newest_generation_keeping_its_tried_set() {
        for policy in crate::request::tests::all() {
            let ids: [&[u8]; 3] = [b"up\0a", b"up\0b", b"up\0c"];
            let t = OwnedTable::with_capacity(
                &spec(policy, &[PeerSpec::new(ids[0]), PeerSpec::new(ids[1])]),
                4,
            )
            .unwrap();
            let z = t.zone();
            let mut r = OwnedAttempt::new(z, 0);
            let first = r.pick_keyed(b"key", 0).unwrap().peer as usize;
            r.release(Outcome::Next, 0).unwrap();
            // The other server leaves and a new one comes, while the
            // request waits for its retry: stock nginx answers 502 here.
            let other = 1 - first;
            let list = [PeerSpec::new(ids[first]), PeerSpec::new(ids[2])];
            z.apply_membership(&spec(policy, &list), [0; 2], 9, |_| true, 0)
                .unwrap();
            assert_eq!(z.slot_status(other), Some(RETIRING));
            let second = r.pick_keyed(b"key", 0).unwrap().peer as usize;
            assert_eq!(
                second, 2,
                "{policy:?}: the new server, not a tried or gone one"
            );
            assert_eq!(r.pin().unwrap(), z.current_pin().unwrap(), "{policy:?}");
            r.release(Outcome::Next, 0).unwrap();
            assert_eq!(
                r.pick_keyed(b"key", 0).unwrap_err(),
                Error::Busy,
                "{policy:?}"
            );
            r.end();
            // The old generation is no longer held.
            z.publish(9, |_| true).unwrap();
            assert_eq!(z.generations().len(), 1, "{policy:?}");
            assert!(z.states().iter().all(|s| s.in_flight.load(Relaxed) == 0));
        }
    }

    #[test]
    fn a_try_in_progress_keeps_its_generation() {
        let ids: [&[u8]; 3] = [b"up\0a", b"up\0b", b"up\0c"];
        let t = OwnedTable::with_capacity(
            &spec(
                Policy::RoundRobin,
                &[PeerSpec::new(ids[0]), PeerSpec::new(ids[1])],
            ),
            3,
        )
        .unwrap();
        let z = t.zone();
        let mut r = OwnedAttempt::new(z, 0);
        let p = r.pick(0).unwrap().peer as usize;
        let pinned = r.pin().unwrap();
        let list = [PeerSpec::new(ids[1 - p]), PeerSpec::new(ids[2])];
        z.apply_membership(&spec(Policy::RoundRobin, &list), [0; 2], 9, |_| true, 0)
            .unwrap();
        // A get while the try is in progress is refused and moves nothing.
        assert_eq!(r.pick(0).unwrap_err(), Error::InvalidArgument);
        assert_eq!(r.pin().unwrap(), pinned);
        r.release(Outcome::Ok, 0).unwrap();
        assert_eq!(z.states()[p].in_flight.load(Relaxed), 0);
        r.end();
    }
}

#[cfg(test)]
mod readers {
    use core::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::health::check::CheckTransition;
    use crate::request::Outcome;
    use crate::spec::Policy;
    use crate::testing::{OwnedAttempt, OwnedTable};

    fn ids(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("up\0srv{i}:80\010.0.0.{i}:80").into_bytes())
            .collect()
    }

    fn spec<'a>(policy: Policy, peers: &'a [PeerSpec<'a>], health: HealthSpec) -> UpstreamSpec<'a> {
        UpstreamSpec {
            policy,
            peers,
            health,
            schedule_room: 0,
            sessions: false,
        }
    }

    /// Applies the identities `which` of `ids` (repeats allowed) as list
    /// `[1, config]`.
    fn apply(z: Zone<'_>, ids: &[Vec<u8>], which: &[usize], config: u64) -> Applied {
        let peers: Vec<PeerSpec<'_>> = which.iter().map(|&i| PeerSpec::new(&ids[i])).collect();
        z.apply_membership(
            &spec(z.policy(), &peers, HealthSpec::default()),
            [1, config],
            9,
            |_| true,
            0,
        )
        .unwrap()
    }

    fn lookup(z: Zone<'_>, ids: &[Vec<u8>], which: &[usize]) -> Vec<Option<u32>> {
        z.slots_of(None, which.iter().map(|&i| &ids[i][..]))
            .unwrap()
            .slots
    }

    #[test]
    fn slots_of_matches_members_occurrence_by_occurrence() {
        let ids = ids(4);
        let peers = [PeerSpec::new(&ids[0])];
        let t =
            OwnedTable::with_capacity(&spec(Policy::RoundRobin, &peers, HealthSpec::default()), 5)
                .unwrap();
        let z = t.zone();
        assert_eq!(z.source(None).unwrap(), [0, 0]);
        assert_eq!(lookup(z, &ids, &[0, 1]), [Some(0), None]);
        // Duplicates: each occurrence its own slot, in member order.
        apply(z, &ids, &[0, 1, 0, 2], 1);
        let l = z
            .slots_of(None, [&ids[0][..], &ids[0][..], &ids[0][..]])
            .unwrap();
        assert_eq!((l.seq, l.source), (z.generation(), [1, 1]));
        assert_eq!(l.slots, [Some(0), Some(2), None]);
        assert_eq!(lookup(z, &ids, &[2, 1, 3]), [Some(3), Some(1), None]);
        // After a removal: the RETIRING slot is not matched.
        apply(z, &ids, &[0, 2], 2);
        assert_eq!(z.slot_status(1), Some(RETIRING));
        assert_eq!(z.identity(1), &ids[1][..]);
        assert_eq!(
            lookup(z, &ids, &[1, 0, 0, 2]),
            [None, Some(0), None, Some(3)]
        );
        assert_eq!(z.source(None).unwrap(), [1, 2]);
        // Re-added: its old slot again.
        apply(z, &ids, &[0, 2, 1], 3);
        assert_eq!(lookup(z, &ids, &[1]), [Some(1)]);
        // An empty generation matches nothing.
        apply(z, &ids, &[], 4);
        assert_eq!(lookup(z, &ids, &[0, 1, 2]), [None, None, None]);
        assert!(z
            .slots_of(None, core::iter::empty())
            .unwrap()
            .slots
            .is_empty());
        // The lookup's pin is dropped.
        z.publish(9, |_| true).unwrap();
        assert_eq!(z.generations().len(), 1);
    }

    #[test]
    fn ordered_lists_build_once_per_source_and_never_go_back() {
        let ids = ids(3);
        let peers = [PeerSpec::new(&ids[0])];
        let t =
            OwnedTable::with_capacity(&spec(Policy::RoundRobin, &peers, HealthSpec::default()), 3)
                .unwrap();
        let z = t.zone();
        let list = |which: &[usize]| -> Vec<PeerSpec<'_>> {
            which.iter().map(|&i| PeerSpec::new(&ids[i])).collect()
        };
        let two = list(&[0, 1]);
        let s2 = spec(Policy::RoundRobin, &two, HealthSpec::default());
        let a = z.apply_list(&s2, [5, 1], 9, |_| true, 0).unwrap().unwrap();
        assert_eq!(a.added, 1);
        let seq = z.generation();
        assert_eq!(z.apply_list(&s2, [5, 1], 9, |_| true, 0), Ok(None));
        // An older configuration's list: refused, whatever it holds.
        let one = list(&[2]);
        let s1 = spec(Policy::RoundRobin, &one, HealthSpec::default());
        assert_eq!(z.apply_list(&s1, [4, 7], 9, |_| true, 0), Err(Error::Busy));
        assert_eq!(z.generation(), seq);
        // The same list id's next change, and a newer list id, build.
        assert!(z.apply_list(&s1, [5, 2], 9, |_| true, 0).unwrap().is_some());
        assert!(z.apply_list(&s2, [6, 0], 9, |_| true, 0).unwrap().is_some());
        assert_eq!(z.source(None).unwrap(), [6, 0]);
    }

    #[test]
    fn an_upstream_of_resolved_servers_only_starts_empty() {
        let ids = ids(3);
        let all: Vec<Policy> = crate::request::tests::all()
            .into_iter()
            .chain([Policy::LeastConn, Policy::RoundRobin])
            .collect();
        for policy in all {
            let s = spec(policy, &[], HealthSpec::default());
            let size = crate::write::zone_size_with(&s, 4).unwrap();
            assert!(size > 0, "{policy:?}");
            let t = OwnedTable::with_capacity(&s, 4).unwrap();
            let z = t.zone();
            assert!(z.dynamic() && z.configured() == 0, "{policy:?}");
            assert_eq!(z.serving().peers(), 0);
            let mut r = OwnedAttempt::new(z, 0);
            assert_eq!(
                r.pick_keyed(b"k", 0).unwrap_err(),
                Error::Busy,
                "{policy:?}"
            );
            r.end();
            // Attach accepts it too.
            let mut again = crate::testing::Region::new(size);
            // SAFETY: both regions are ours and `size` bytes long; the
            // copy is a zone as built.
            unsafe {
                core::ptr::copy_nonoverlapping(z.as_ptr(), again.as_ptr(), size);
                Zone::attach_with(&s, 4, again.as_ptr(), again.len()).unwrap();
            }
            let _ = &mut again;
            let a = apply(z, &ids, &[0, 1, 2], 1);
            assert_eq!(a.added, 3, "{policy:?}");
            assert_eq!(
                z.colds()[1].position.load(Relaxed),
                1,
                "0 configured + slot"
            );
            let mut r = OwnedAttempt::new(z, 0);
            let p = r.pick_keyed(b"k", 0).unwrap().peer;
            assert!(p < 3, "{policy:?}");
            r.release(Outcome::Ok, 0).unwrap();
        }
    }

    #[test]
    fn readers_skip_free_and_idle_retiring_slots_and_see_reuse() {
        let ids = ids(4);
        let peers = [PeerSpec::new(&ids[0]), PeerSpec::new(&ids[1])];
        let t =
            OwnedTable::with_capacity(&spec(Policy::RoundRobin, &peers, HealthSpec::default()), 3)
                .unwrap();
        let z = t.zone();
        assert!(z.listed(0).is_some() && z.listed(2).is_none());
        assert_eq!(z.listed(3), None);
        let held = loop {
            let mut r = OwnedAttempt::new(z, 0);
            if r.pick(0).unwrap().peer == 1 {
                break r;
            }
        };
        apply(z, &ids, &[0, 2], 1);
        assert_eq!(
            z.colds()[2].position.load(Relaxed),
            4,
            "the first id after the initial ones (2 configured + 2)"
        );
        // Draining while its request is in flight, then gone.
        let m = z.listed(1).expect("draining: listed");
        assert_eq!(m.status, RETIRING);
        assert_eq!(
            z.view(1, 0).unwrap().state,
            crate::write::ServerState::Draining
        );
        assert_eq!(
            z.by_position(3).map(|(i, _)| i),
            Some(1),
            "2 configured + its id 1"
        );
        drop(held);
        assert_eq!(z.listed(1), None);
        assert_eq!(
            z.by_position(3).map(|(i, _)| i),
            None,
            "a slot the API does not list"
        );
        assert!(z.slot_unchanged(1, m), "not reused yet");
        // Reused: a reader's mark taken before tells.
        apply(z, &ids, &[0, 2, 3], 2);
        assert_eq!(z.identity(1), &ids[3][..]);
        assert!(!z.slot_unchanged(1, m));
        let m2 = z.listed(1).unwrap();
        assert!(z.slot_unchanged(1, m2));
        assert_eq!(z.by_position(4).map(|(i, _)| i), Some(2));
        // The reused slot's new server has a new id: 3 is never given again.
        assert_eq!(z.by_position(3).map(|(i, _)| i), None);
        assert_eq!(z.by_position(5).map(|(i, _)| i), Some(1));
        assert_eq!(z.colds()[1].position.load(Relaxed), 5);
    }

    fn checked() -> HealthSpec {
        HealthSpec {
            flags: HealthSpec::CHECK,
            interval_ms: 1_000,
            timeout_ms: 500,
            fails: 1,
            passes: 1,
            panic_percent: 50,
            ..HealthSpec::default()
        }
    }

    #[test]
    fn checks_claim_only_live_slots_and_drop_verdicts_on_reused_ones() {
        let ids = ids(6);
        let peers = [
            PeerSpec::new(&ids[0]),
            PeerSpec::new(&ids[1]),
            PeerSpec::new(&ids[2]),
        ];
        let t = OwnedTable::with_capacity(&spec(Policy::RoundRobin, &peers, checked()), 5).unwrap();
        let z = t.zone();
        // "1" leaves; slots 3 and 4 are FREE.
        apply(z, &ids, &[0, 2], 1);
        let mut out = [0u32; 8];
        let mut seen = Vec::new();
        for now in (0..10_000).step_by(250) {
            let (n, _) = z.claim_checks(0, 1, now, 7, true, &mut out);
            seen.extend_from_slice(&out[..n]);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, [0, 2], "only LIVE slots are checked");
        // A check of "1" started before it left; the slot is then reused
        // by "3": the verdict is dropped.
        let e1 = z.slot_epoch(1).unwrap();
        apply(z, &ids, &[0, 2, 3, 4], 2);
        let a = apply(z, &ids, &[0, 2, 3, 4, 5], 3);
        assert_eq!(a.reused, 1);
        assert_eq!(z.identity(1), &ids[5][..]);
        let r = z.check_done_epoch(1, e1, None, false, 100).unwrap();
        assert_eq!(r, Default::default());
        assert_eq!(z.check_stats(1).checks, 0);
        // With the epoch it started at, a verdict counts.
        let e0 = z.slot_epoch(0).unwrap();
        let r = z.check_done_epoch(0, e0, None, false, 100).unwrap();
        assert_eq!(r.transition, CheckTransition::Unhealthy);
        assert_eq!(
            z.check_done_epoch(0, e0 + 1, None, true, 200).unwrap(),
            Default::default()
        );
        assert_eq!(
            z.check_done_epoch(9, 0, None, true, 200).unwrap_err(),
            Error::InvalidArgument
        );
    }

    #[test]
    fn panic_counts_only_the_serving_members() {
        let ids = ids(4);
        let peers: Vec<PeerSpec<'_>> = ids.iter().take(4).map(|i| PeerSpec::new(i)).collect();
        let t = OwnedTable::with_capacity(&spec(Policy::RoundRobin, &peers, checked()), 6).unwrap();
        let z = t.zone();
        // Two of four unhealthy: not below 50%.
        z.check_done(0, false, 10).unwrap();
        z.check_done(1, false, 10).unwrap();
        let p = z.update_panic();
        assert_eq!((p.healthy, p.total), (2, 4));
        assert!(!z.in_panic());
        // The two healthy ones leave: 0 of 2 in service, in panic; the
        // RETIRING and FREE slots count for nothing.
        apply(z, &ids, &[0, 1], 1);
        let p = z.update_panic();
        assert_eq!((p.healthy, p.total), (0, 2));
        assert!(z.in_panic());
        // A health tick's ejection sweep reports no retired slot.
        let mut out = [0u32; 4];
        let l = z.claim_slot(1, |_| true);
        assert_eq!(z.end_ejections(u64::MAX, &mut out, l), 0);
    }
}
