//! Table generations: building, publishing, pinning and reclaiming
//!
//! A generation holds the frozen selection structures (schedules, alias
//! table, ketama ring, Maglev table, chains, per-peer weights) built from
//! the weights in force. It is never changed after it is published; a
//! change builds the next generation beside it in the zone's arena.
//!
//! ```text
//!            Sync.current ──────────────┐
//!                                       ▼
//!   Slot 0: gen 6 (retiring, refs 2)   Slot 1: gen 7 (serving)   Slot 2: free   Slot 3: free
//!        │                                  │
//!   arena: [ gen 6 bytes ][ free ][ gen 7 bytes ][ free .................................. ]
//! ```
//!
//! **Publishing** (one builder at a time, holding the lease in
//! [`crate::layout::Sync::builder`]): reclaim what can be reclaimed, find a free
//! descriptor and a gap in the arena, build the generation there, store
//! the weights in force into the peers' hot lines, then store the new
//! `current` (`SeqCst`). Picks never wait: they read `current` and
//! immutable bytes. A change that does not fit is refused with
//! [`Error::NoSpace`] and the serving generation stays.
//!
//! **Pinning**: a request pins the generation it starts on and keeps it
//! for every retry (indices never mix across generations). It adds one to
//! its worker's reference counter for that descriptor (the worker's ledger
//! row, so the add is uncontended; workers without a slot use the
//! descriptor's shared counter), then reads `current` again: if it
//! changed, it unpins and retries. Builder and pinner use `SeqCst` on
//! `current` and on the references, so either the pinner sees the new
//! `current`, or the builder's reclaim sees the reference (the store-load
//! pattern needs sequential consistency on both sides).
//!
//! **Reclaiming**: a descriptor that is not current and whose references
//! sum to zero over all ledger rows and its shared counter is freed. A
//! worker that died holding references has its ledger row zeroed when the
//! row is reconciled ([`crate::layout::ledger`]), which releases them.

use core::mem::size_of;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

use crate::algo::alias::Column;
use crate::algo::ketama::{self, Point};
use crate::algo::schedule;
use crate::crash::crash_point;
use crate::error::Error;
use crate::layout::{
    round_up, Cursor, GenHeader, PeerConf, PeerState, Table, Zone, ALIGN, GENS, GEN_CURSORS_OFF,
    GEN_MAGIC,
};
use crate::policy::frozen::live_weights;
use crate::policy::{self, hash, sticky, FrozenOut, Placement};
use crate::spec::{identity_hash, HashMode, PeerSpec, Policy, UpstreamSpec};

pub use crate::layout::{DESC_FREE, DESC_LIVE};

/// Lease owner used while the zone is built at configuration time.
pub const INIT_OWNER: u64 = u64::MAX - 1;

/// Offsets and sizes of a generation's sections for one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GenPlan {
    peers: usize,
    primaries: usize,
    /// Slot space: the zone's slots.
    space: usize,
    /// Index `k` is slot `k` and every slot is a member: no member column.
    dense: bool,
    members_off: usize,
    conf_off: usize,
    alias_off: usize,
    alias_len: usize,
    ring_off: usize,
    ring_cap: usize,
    maglev_off: usize,
    maglev_len: usize,
    chain_off: usize,
    chain_len: usize,
    sched_off: [usize; 2],
    sched_len: [usize; 2],
    sids_off: usize,
    sids_len: usize,
    pub(crate) size: usize,
}

impl GenPlan {
    /// The plan of a generation of `spec`'s peers in a zone of `space`
    /// slots, dense when `space` is the number of peers (see
    /// [`GenPlan::with`]).
    pub(crate) fn new(spec: &UpstreamSpec<'_>, space: usize) -> Result<GenPlan, Error> {
        GenPlan::with(spec, space, space == spec.peers.len())
    }

    /// The plan of a generation of `spec`'s peers in a zone of `space`
    /// slots; `dense`: peer `k` is slot `k` and every slot a member.
    ///
    /// Schedules, alias table, chains, Maglev entries and ring points hold
    /// slots; the alias table and the chains are indexed by slot (`space`
    /// entries), the per-peer parameters by generation index.
    pub(crate) fn with(
        spec: &UpstreamSpec<'_>,
        space: usize,
        dense: bool,
    ) -> Result<GenPlan, Error> {
        spec.validate()?;
        let peers = spec.peers.len();
        let primaries = spec.primaries();
        if peers > space || (dense && peers != space) {
            return Err(Error::InvalidArgument);
        }
        // p2c, ewma and random draw from the alias table and never walk a
        // schedule: they take any weights (nginx's limits, not ours).
        let lens = policy::frozen_lens(spec, space)?;
        let (alias_len, ring_cap, maglev_len, chain_len, sched_len) =
            (lens.alias, lens.ring, lens.maglev, lens.chain, lens.sched);
        let conf_off = GEN_CURSORS_OFF + 2 * size_of::<Cursor>();
        let members_off = conf_off + peers * size_of::<PeerConf>();
        let members_len = if dense { 0 } else { peers };
        let alias_off = round_up(members_off + members_len * 4, 8);
        let ring_off = alias_off + alias_len * size_of::<Column>();
        let maglev_off = ring_off + ring_cap * size_of::<Point>();
        let chain_off = maglev_off + maglev_len * 4;
        let s0 = chain_off + chain_len * 4;
        let s1 = s0 + sched_len[0] * 4;
        let sids_off = round_up(s1 + sched_len[1] * 4, 8);
        let sids_len = sticky::index_len(spec, peers);
        let size = round_up(sids_off + sids_len * 16, ALIGN);
        Ok(GenPlan {
            peers,
            primaries,
            space,
            dense,
            members_off,
            conf_off,
            alias_off,
            alias_len,
            ring_off,
            ring_cap,
            maglev_off,
            maglev_len,
            chain_off,
            chain_len,
            sched_off: [s0, s1],
            sched_len,
            sids_off,
            sids_len,
            size,
        })
    }

    fn header(
        &self,
        spec: &UpstreamSpec<'_>,
        seq: u64,
        ring_len: usize,
        shadow_len: usize,
        alias_len: usize,
        source: [u64; 2],
    ) -> GenHeader {
        GenHeader {
            magic: GEN_MAGIC,
            seq,
            policy: spec.policy.code(),
            peers: self.peers as u32,
            params: spec.policy.params(),
            primaries: self.primaries as u32,
            live_primaries: spec.peers[..self.primaries]
                .iter()
                .filter(|p| !p.down)
                .count() as u32,
            total_weight: spec.peers[..self.primaries]
                .iter()
                .map(|p| u64::from(p.weight))
                .sum(),
            conf_off: self.conf_off as u64,
            alias_off: self.alias_off as u64,
            alias_len: alias_len as u32,
            ring_len: ring_len as u32,
            ring_off: self.ring_off as u64,
            maglev_off: self.maglev_off as u64,
            maglev_len: self.maglev_len as u32,
            chain_len: self.chain_len as u32,
            chain_off: self.chain_off as u64,
            sched_off: [self.sched_off[0] as u64, self.sched_off[1] as u64],
            sched_len: [self.sched_len[0] as u32, self.sched_len[1] as u32],
            size: self.size as u64,
            shadow_len: shadow_len as u32,
            uniform_weight: uniform_weight(&spec.peers[..self.primaries]),
            members_off: if self.dense {
                0
            } else {
                self.members_off as u64
            },
            slots: self.space as u32,
            pad: 0,
            source,
            sids_off: if self.sids_len == 0 {
                0
            } else {
                self.sids_off as u64
            },
            sids_len: self.sids_len as u32,
            pad2: 0,
            reserved: [0; 5],
        }
    }

    /// Builds the generation for `spec` at `base`, peer `k` in slot
    /// `slots[k]` (ignored when dense); `prev`, the serving generation of
    /// the same zone if any, lets the ketama ring be rebuilt from its
    /// points instead of from scratch. Slots from `resolved_from` on hold
    /// servers resolved at run time: their ring points and same-server
    /// chains are keyed by their identity, not by their `server` string,
    /// which the addresses of one name (or one SRV target) share.
    ///
    /// # Safety
    ///
    /// `base` must be 64-byte aligned, valid for writes of `self.size`
    /// bytes, and nobody may read those bytes during the call.
    unsafe fn build(
        &self,
        spec: &UpstreamSpec<'_>,
        slots: &[u32],
        (seq, source): (u64, [u64; 2]),
        base: *mut u8,
        prev: Option<Table<'_>>,
        resolved_from: usize,
    ) -> Result<(), Error> {
        if (!self.dense && slots.len() != self.peers)
            || slots.iter().any(|&s| s as usize >= self.space)
        {
            return Err(Error::InvalidArgument);
        }
        let at = Placement {
            dense: self.dense,
            slots,
            space: self.space,
            primaries: self.primaries,
            resolved_from,
        };
        let (ring, shadow) = hash::ring(spec, &at, prev, self.ring_cap)?;
        // SAFETY: `base` is aligned and valid for `self.size` bytes, ours
        // alone (function contract); every section lies inside it at an
        // offset aligned for its type (64-byte records first, then 32-byte,
        // then 8- and 4-byte ones), the sections do not overlap (the plan
        // lays them end to end), and zeroed bytes are valid for each type.
        let out = unsafe {
            // Zeroed but for the ring section, which is written whole
            // below (ring and shadow are every generated point: its
            // capacity exactly); zeroing 25 MB first would double the cost
            // of a large ring.
            let ring_end = self.ring_off + self.ring_cap * size_of::<Point>();
            core::ptr::write_bytes(base, 0, self.ring_off);
            core::ptr::write_bytes(base.add(ring_end), 0, self.size - ring_end);
            let conf = base.add(self.conf_off).cast::<PeerConf>();
            for (i, p) in spec.peers.iter().enumerate() {
                conf.add(i).write(PeerConf {
                    weight: p.weight,
                    max_conns: p.max_conns,
                    max_fails: p.max_fails,
                    flags: if p.backup { PeerConf::BACKUP } else { 0 }
                        | if p.down { PeerConf::DOWN } else { 0 },
                    fail_timeout_ms: p.fail_timeout_ms,
                    id_hash: identity_hash(p.id),
                });
            }
            let section = |off: usize, len: usize| -> &mut [u32] {
                core::slice::from_raw_parts_mut(base.add(off).cast::<u32>(), len)
            };
            if !self.dense {
                section(self.members_off, self.peers).copy_from_slice(slots);
            }
            let points = core::slice::from_raw_parts_mut(
                base.add(self.ring_off).cast::<Point>(),
                self.ring_cap,
            );
            let (r, s) = points.split_at_mut(ring.len());
            r.copy_from_slice(&ring);
            s.copy_from_slice(&shadow);
            FrozenOut {
                alias: core::slice::from_raw_parts_mut(
                    base.add(self.alias_off).cast::<Column>(),
                    self.alias_len,
                ),
                maglev: section(self.maglev_off, self.maglev_len),
                chain: section(self.chain_off, self.chain_len),
                sched: [
                    section(self.sched_off[0], self.sched_len[0]),
                    section(self.sched_off[1], self.sched_len[1]),
                ],
            }
        };
        let alias_len = policy::build_frozen(spec, &at, out)?;
        // SAFETY: as above: the index's zeroed entries (pairs of u64),
        // 8-byte aligned, inside the plan.
        let sids = unsafe {
            core::slice::from_raw_parts_mut(
                base.add(self.sids_off).cast::<[u64; 2]>(),
                self.sids_len,
            )
        };
        sticky::build_index(spec, &at, sids);
        let header = self.header(spec, seq, ring.len(), shadow.len(), alias_len, source);
        // SAFETY: as above; the header's bytes, zeroed, are no section's.
        unsafe { base.cast::<GenHeader>().write(header) };
        Ok(())
    }
}

/// Why `spec` is refused as too large, with the figures and the limit, for
/// people (`nginx -t`); `None` when it is not.
pub fn too_large_reason(spec: &UpstreamSpec<'_>) -> Option<String> {
    let peers = spec.peers.len();
    if peers > crate::spec::MAX_PEERS {
        return Some(format!(
            "{peers} servers, more than the limit of {}",
            crate::spec::MAX_PEERS
        ));
    }
    let primaries = spec.primaries();
    if spec.policy.walks_schedule() {
        for (what, range) in [("primary", 0..primaries), ("backup", primaries..peers)] {
            let weights = live_weights(spec, range);
            if schedule::period(&weights).is_err() {
                let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
                let g = weights
                    .iter()
                    .filter(|&&w| w > 0)
                    .fold(0u64, |g, &w| gcd(g, u64::from(w)));
                return Some(format!(
                    "the smooth round robin schedule of the {what} servers would have {} \
                     entries (total weight {total} / common divisor {g}), more than the \
                     limit of {}; make the weights smaller or their ratios coarser",
                    total / g.max(1),
                    schedule::MAX_PERIOD
                ));
            }
        }
    }
    if let Policy::Hash {
        mode: HashMode::Consistent,
        ..
    } = spec.policy
    {
        if hash::ring_weights(spec).is_none() {
            let total: u64 = spec.peers.iter().map(|p| u64::from(p.weight)).sum();
            return Some(format!(
                "the consistent hash ring of {peers} servers of total weight {total} would \
                 need more than {} points even scaled down (at most {} servers when the \
                 total weight is above {})",
                ketama::MAX_POINTS,
                ketama::MAX_TOTAL_WEIGHT / 2,
                ketama::MAX_TOTAL_WEIGHT
            ));
        }
    }
    None
}

/// [`GenHeader::uniform_weight`]: the weight all `primaries` share, or 0.
fn uniform_weight(primaries: &[PeerSpec<'_>]) -> u32 {
    match primaries.first() {
        Some(first) if primaries.iter().all(|p| p.weight == first.weight) => first.weight,
        _ => 0,
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A generation built but not published yet ([`Zone::prepare`]).
#[derive(Debug)]
pub(crate) struct Built {
    d: usize,
    off: usize,
    size: usize,
    seq: u64,
}

/// The builder lease, given back on drop.
#[derive(Debug)]
pub(crate) struct LeaseGuard<'b>(&'b core::sync::atomic::AtomicU64);

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Release);
    }
}

impl<'a> Zone<'a> {
    /// Frees every descriptor that is neither serving nor referenced; the
    /// number freed. Lease holders only.
    pub(crate) fn reclaim(&self) -> usize {
        let current = self.current_slot();
        let mut freed = 0;
        for d in 0..GENS {
            let slot = self.slot(d);
            if Some(d) == current || slot.status.load(Acquire) != DESC_LIVE {
                continue;
            }
            if self.references(d) == 0 {
                slot.status.store(DESC_FREE, Release);
                freed += 1;
            }
        }
        freed
    }

    /// Takes the builder lease for `owner`: free, or held by an owner
    /// `alive` says is gone. [`Error::Busy`] when a live builder holds it.
    /// `Ok(true)` when the lease was taken over from a dead owner.
    fn lease(&self, owner: u64, alive: &impl Fn(u64) -> bool) -> Result<bool, Error> {
        let b = &self.sync().builder;
        loop {
            match b.compare_exchange(0, owner, AcqRel, Acquire) {
                Ok(_) => return Ok(false),
                Err(held) if held == owner => return Err(Error::Busy),
                Err(held) if held != INIT_OWNER && !alive(held) => {
                    if b.compare_exchange(held, owner, AcqRel, Acquire).is_ok() {
                        return Ok(true);
                    }
                }
                Err(_) => return Err(Error::Busy),
            }
        }
    }

    /// The upstream as it should be served now: the serving generation's
    /// members (before the first generation, the configured peers) with
    /// the weights in force (the API's overrides).
    pub fn effective_spec<R>(&self, f: impl FnOnce(&UpstreamSpec<'_>) -> R) -> R {
        self.effective(|spec, _| f(spec))
    }

    /// [`Zone::effective_spec`], and the slot of each of its peers.
    pub(crate) fn effective<R>(&self, f: impl FnOnce(&UpstreamSpec<'_>, &[u32]) -> R) -> R {
        let slots: Vec<u32> = match self.current_slot() {
            Some(d) => self.table(d).members().iter().map(|s| s as u32).collect(),
            None => (0..self.configured() as u32).collect(),
        };
        let (states, colds) = (self.states(), self.colds());
        let peers: Vec<PeerSpec<'_>> = slots
            .iter()
            .map(|&i| {
                let i = i as usize;
                let (s, c) = (&states[i], &colds[i]);
                let flags = s.flags.load(Relaxed);
                let over = c.weight_override.load(Relaxed);
                PeerSpec {
                    id: self.identity(i),
                    server: self.server(i),
                    weight: if over != 0 {
                        over
                    } else {
                        c.conf_weight.load(Relaxed)
                    },
                    max_conns: s.max_conns(),
                    max_fails: s.max_fails(),
                    fail_timeout_ms: s.fail_timeout_ms(),
                    backup: flags & PeerState::BACKUP != 0,
                    down: flags & PeerState::DOWN != 0,
                    position: Some(c.position.load(Relaxed)),
                    sid: self.sid(i),
                }
            })
            .collect();
        f(
            &UpstreamSpec {
                health: Default::default(),
                policy: self.policy(),
                peers: &peers,
                schedule_room: 0,
                sessions: self.sessions(),
            },
            &slots,
        )
    }

    /// Takes the builder lease for `owner` until the guard drops (a panic
    /// included: the C boundary catches it, and a lease kept would block
    /// every later change).
    pub(crate) fn lease_guard(
        &self,
        owner: u64,
        alive: &impl Fn(u64) -> bool,
    ) -> Result<LeaseGuard<'a>, Error> {
        if owner == 0 {
            return Err(Error::InvalidArgument);
        }
        let taken_over = self.lease(owner, alive)?;
        let guard = LeaseGuard(&self.sync().builder);
        if taken_over {
            // The dead builder may have stopped between a membership
            // change's slot writes and its publication.
            self.repair_membership();
        }
        Ok(guard)
    }

    /// Builds a generation from the weights in force and publishes it;
    /// its number. `owner` (a pid) takes the builder lease for the build;
    /// a lease held by an owner `alive` says is gone is taken over.
    ///
    /// [`Error::Busy`] when another builder is at work, [`Error::NoSpace`]
    /// when the generation does not fit in the arena (the serving
    /// generation stays in both cases).
    pub fn publish(&self, owner: u64, alive: impl Fn(u64) -> bool) -> Result<u64, Error> {
        let _lease = self.lease_guard(owner, &alive)?;
        let source = self
            .current_slot()
            .map_or([0; 2], |d| self.table(d).header().source);
        self.effective(|spec, slots| self.publish_locked(spec, slots, source))
    }

    /// Builds the generation of `spec`, peer `k` in slot `slots[k]`, and
    /// publishes it. Lease holders only; the peers' states must be ready
    /// for picks (a pick may come the moment `current` is stored).
    pub(crate) fn publish_locked(
        &self,
        spec: &UpstreamSpec<'_>,
        slots: &[u32],
        source: [u64; 2],
    ) -> Result<u64, Error> {
        let built = self.prepare(spec, slots, source)?;
        crash_point("publish.built");
        Ok(self.commit(built, spec, slots))
    }

    /// Builds the generation of `spec`, peer `k` in slot `slots[k]`, in a
    /// free descriptor and a free part of the arena, without publishing
    /// it: nothing anyone reads has changed yet. Lease holders only.
    pub(crate) fn prepare(
        &self,
        spec: &UpstreamSpec<'_>,
        slots: &[u32],
        source: [u64; 2],
    ) -> Result<Built, Error> {
        let space = self.peers();
        if slots.len() != spec.peers.len() {
            return Err(Error::InvalidArgument);
        }
        let dense = slots.len() == space && slots.iter().enumerate().all(|(k, &s)| s as usize == k);
        let plan = GenPlan::with(spec, space, dense)?;
        self.reclaim();
        let Some((d, off)) = self.place(plan.size) else {
            // Room taken by generations still in use is only a wait; a
            // generation larger than what the arena can ever hold beside
            // the serving one is a refusal.
            let serving = self
                .current_slot()
                .map_or(0, |d| self.slot(d).len.load(Relaxed) as usize);
            return Err(if plan.size + serving <= self.root().arena_len as usize {
                Error::Pinned
            } else {
                Error::NoSpace
            });
        };
        let seq = self.sync().next.load(Relaxed).max(1);
        let prev = self.current_slot().map(|d| self.table(d));
        let resolved_from = if self.dynamic() {
            self.configured()
        } else {
            usize::MAX
        };
        // SAFETY: `place` returned a 64-byte aligned gap of `plan.size`
        // bytes inside the arena that no live generation uses, and the
        // descriptor is FREE: nobody reads those bytes.
        unsafe {
            plan.build(
                spec,
                slots,
                (seq, source),
                self.as_ptr().add(off),
                prev,
                resolved_from,
            )?
        };
        Ok(Built {
            d,
            off,
            size: plan.size,
            seq,
        })
    }

    /// Publishes a generation [`Zone::prepare`] built (no other build in
    /// between): the weights in force into the members' hot lines, then
    /// `current`. Its number.
    pub(crate) fn commit(&self, built: Built, spec: &UpstreamSpec<'_>, slots: &[u32]) -> u64 {
        let Built { d, off, size, seq } = built;
        let slot = self.slot(d);
        slot.off.store(off as u64, Relaxed);
        slot.len.store(size as u64, Relaxed);
        slot.seq.store(seq, Relaxed);
        slot.status.store(DESC_LIVE, Release);
        crash_point("publish.described");
        let states = self.states();
        for (p, &i) in spec.peers.iter().zip(slots) {
            if let Some(s) = states.get(i as usize) {
                s.weight.store(p.weight, Relaxed);
            }
        }
        // The least_conn tree compares the weights in force.
        self.lc_rebuild();
        self.sync().next.store(seq + 1, Relaxed);
        self.sync().members.store(slots.len() as u64, Release);
        self.sync().current.store((seq << 8) | d as u64, SeqCst);
        crash_point("publish.published");
        self.reclaim();
        seq
    }

    /// A free descriptor and the offset of a gap of `len` bytes in the
    /// arena that no live generation overlaps (first fit).
    fn place(&self, len: usize) -> Option<(usize, usize)> {
        let d = (0..GENS).find(|&d| self.slot(d).status.load(Acquire) == DESC_FREE)?;
        let r = self.root();
        let (start, end) = (r.arena_off as usize, (r.arena_off + r.arena_len) as usize);
        let mut used: Vec<(usize, usize)> = (0..GENS)
            .filter(|&e| self.slot(e).status.load(Acquire) == DESC_LIVE)
            .map(|e| {
                let s = self.slot(e);
                let off = s.off.load(Relaxed) as usize;
                (off, off + s.len.load(Relaxed) as usize)
            })
            .collect();
        used.sort_unstable();
        let mut at = start;
        for (lo, hi) in used {
            if lo >= at + len {
                break;
            }
            at = at.max(hi);
        }
        (at + len <= end).then_some((d, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Outcome;
    use crate::spec::PeerSpec;
    use crate::testing::{OwnedAttempt, OwnedTable};

    fn rr(peers: &[PeerSpec<'_>]) -> OwnedTable {
        OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    /// The pin protocol as threads (Miri checks it for data races, see
    /// `make check`): readers pin the serving generation in their own
    /// ledger rows and read its bytes while a builder publishes new
    /// weights over and over; a generation a reader holds is never
    /// reclaimed and rewritten under it (every schedule read is one the
    /// weights in force could have built), and the pins all end.
    #[test]
    fn pinned_generations_are_never_rewritten_under_a_reader() {
        let t = rr(&[PeerSpec::new(b"a"), PeerSpec::new(b"b").weight(2)]);
        let z = t.zone();
        let rounds = if cfg!(miri) { 6 } else { 300 };
        std::thread::scope(|s| {
            for r in 0..2u64 {
                s.spawn(move || {
                    let slot = z.claim_slot(10 + r, |_| true).unwrap();
                    for _ in 0..rounds {
                        let reading = z.read(Some(slot)).unwrap();
                        let t = reading.table();
                        let sched = t.schedule(crate::layout::PRIMARY);
                        // Weights alternate between (1, 2) and (1, 3).
                        let b = sched.iter().filter(|&&i| i == 1).count();
                        assert!(
                            (sched.len(), b) == (3, 2) || (sched.len(), b) == (4, 3),
                            "{sched:?}"
                        );
                        drop(reading);
                        let mut a = OwnedAttempt::with_slot(z, 0, Some(slot));
                        a.pick(0).unwrap();
                        a.release(Outcome::Ok, 0).unwrap();
                    }
                    z.release_slot(slot, 10 + r);
                });
            }
            s.spawn(move || {
                for k in 0..rounds {
                    z.set_weight(1, Some(if k % 2 == 0 { 3 } else { 2 }))
                        .unwrap();
                    // Busy (another build) and Pinned (no room yet) are waits.
                    let _ = z.publish(99, |_| true);
                }
            });
        });
        assert!(
            z.generations().iter().all(|g| g.2 == 0),
            "{:?}",
            z.generations()
        );
    }

    fn seq(t: &OwnedTable, n: usize) -> String {
        (0..n)
            .map(|_| {
                let mut a = OwnedAttempt::new(t.zone(), 0);
                let p = a.pick(0).unwrap();
                a.release(Outcome::Ok, 0).unwrap();
                (b'a' + p.peer as u8) as char
            })
            .collect()
    }

    #[test]
    fn weight_override_publishes_a_new_smooth_sequence() {
        let peers = [
            PeerSpec::new(b"a"),
            PeerSpec::new(b"b"),
            PeerSpec::new(b"c"),
        ];
        let t = rr(&peers);
        let z = t.zone();
        assert_eq!(seq(&t, 6), "abcabc");
        z.set_weight(0, Some(5)).unwrap();
        assert_eq!(z.publish(7, |_| true).unwrap(), 2);
        assert_eq!(z.generation(), 2);
        assert_eq!(seq(&t, 7), "aabacaa", "nginx's 5,1,1 from its start");
        z.set_weight(0, None).unwrap();
        z.publish(7, |_| true).unwrap();
        assert_eq!(seq(&t, 3), "abc");
    }

    #[test]
    fn a_request_finishes_on_its_generation_and_old_ones_are_reclaimed() {
        let peers = [PeerSpec::new(b"a"), PeerSpec::new(b"b")];
        let t = rr(&peers);
        let z = t.zone();
        let mut held = OwnedAttempt::new(z, 0);
        let first = held.pick(0).unwrap();
        let pinned = held.pin().unwrap();
        // Many publications while the request is in flight: the pinned
        // descriptor is never reused, the others cycle.
        for k in 0..20 {
            z.set_weight(1, Some(1 + k % 3)).unwrap();
            z.publish(9, |_| true).unwrap();
            let gens = z.generations();
            assert!(gens.len() <= 2, "{gens:?}");
            assert!(gens
                .iter()
                .any(|g| g.0 == pinned.slot as usize && g.1 == pinned.seq));
        }
        // The retry stays on the old generation: a different peer, from it.
        held.release(Outcome::Failed, 0).unwrap();
        let second = held.pick(0).unwrap();
        assert_ne!(first.peer, second.peer);
        held.release(Outcome::Ok, 0).unwrap();
        held.end();
        z.publish(9, |_| true).unwrap();
        assert_eq!(z.generations().len(), 1, "{:?}", z.generations());
        assert!(z.states().iter().all(|s| s.in_flight.load(Relaxed) == 0));
    }

    #[test]
    fn dead_workers_references_are_released_by_reconciliation() {
        let peers = [PeerSpec::new(b"a"), PeerSpec::new(b"b")];
        let t = rr(&peers);
        let z = t.zone();
        let slot = z.claim_slot(100, |_| true).unwrap();
        let mut a = OwnedAttempt::with_slot(z, 0, Some(slot));
        a.pick(0).unwrap();
        let pin = a.pin().unwrap();
        z.publish(5, |_| true).unwrap();
        assert_eq!(z.references(pin.slot as usize), 1);
        // The worker dies; its replacement reconciles.
        z.claim_slot(200, |pid| pid != 100).unwrap();
        assert_eq!(z.references(pin.slot as usize), 0);
        z.publish(5, |_| true).unwrap();
        assert_eq!(z.generations().len(), 1);
        assert!(z.states().iter().all(|s| s.in_flight.load(Relaxed) == 0));
        std::mem::forget(a);
    }

    #[test]
    fn generations_all_in_use_is_a_wait_not_a_refusal() {
        let t = rr(&[PeerSpec::new(b"a"), PeerSpec::new(b"b")]);
        let z = t.zone();
        let mut held = Vec::new();
        for k in 0..GENS as u32 - 1 {
            held.push(OwnedAttempt::new(z, 0));
            z.set_weight(0, Some(2 + k)).unwrap();
            z.publish(7, |_| true).unwrap();
        }
        // Every descriptor holds a generation in use (the last one serves).
        z.set_weight(0, Some(1)).unwrap();
        assert_eq!(z.publish(7, |_| true).unwrap_err(), Error::Pinned);
        held.pop();
        assert!(z.publish(7, |_| true).is_ok());
    }

    #[test]
    fn lease_is_exclusive_and_taken_over_from_the_dead() {
        let t = rr(&[PeerSpec::new(b"a"), PeerSpec::new(b"b")]);
        let z = t.zone();
        z.sync().builder.store(42, Relaxed);
        assert_eq!(z.publish(7, |_| true).unwrap_err(), Error::Busy);
        assert_eq!(z.generation(), 1);
        assert_eq!(z.publish(7, |pid| pid != 42).unwrap(), 2);
        assert_eq!(z.sync().builder.load(Relaxed), 0);
    }

    #[test]
    fn a_change_that_does_not_fit_is_refused_and_the_current_one_serves() {
        let peers: Vec<PeerSpec<'_>> = [b"a", b"b", b"c"]
            .iter()
            .map(|id| PeerSpec::new(*id))
            .collect();
        let t = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let z = t.zone();
        // 160 points per weight unit: a weight of 100,000 needs a ring of
        // 128 MB, far beyond the arena.
        z.set_weight(0, Some(100_000)).unwrap();
        let e = z.publish(7, |_| true).unwrap_err();
        assert!(matches!(e, Error::NoSpace | Error::TooLarge), "{e:?}");
        assert_eq!(z.generation(), 1);
        assert_eq!(z.states()[0].weight(), 1, "weights in force unchanged");
        let mut a = OwnedAttempt::new(z, 0);
        a.pick_keyed(b"k", 0).unwrap();
        a.release(Outcome::Ok, 0).unwrap();
    }

    #[test]
    fn a_ring_rebuilt_from_the_serving_one_equals_a_fresh_build() {
        let ids: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("10.0.0.{}:80", i % 250).into_bytes())
            .collect();
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PeerSpec::new(id).weight(1 + (i % 3) as u32))
            .collect();
        let policy = Policy::Hash {
            mode: HashMode::Consistent,
            balance_factor: 0,
            maglev_size: 0,
        };
        let t = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let z = t.zone();
        for (i, w) in [(5usize, 4u32), (260, 1), (5, 1), (0, 7)] {
            z.set_weight(i, Some(w)).unwrap();
            z.publish(3, |_| true).unwrap();
            let mut want = peers.clone();
            for (j, p) in want.iter_mut().enumerate() {
                p.weight = z.view(j, 0).unwrap().weight;
            }
            let fresh = OwnedTable::new(&UpstreamSpec {
                health: Default::default(),
                policy,
                peers: &want,
                schedule_room: 0,
                sessions: false,
            })
            .unwrap();
            assert!(
                z.serving().ring() == fresh.table().ring(),
                "after weight {w} on {i}"
            );
            assert!(z.serving().ring_shadow() == fresh.table().ring_shadow());
        }
    }

    #[test]
    fn too_large_says_why_with_figures_and_policies_without_schedules_take_any_weight() {
        let peers = [
            PeerSpec::new(b"a").weight(2_147_483_647),
            PeerSpec::new(b"b"),
            PeerSpec::new(b"c"),
        ];
        let spec = |policy| UpstreamSpec {
            health: Default::default(),
            policy,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let why = too_large_reason(&spec(Policy::RoundRobin)).unwrap();
        assert!(
            why.contains("2147483649 entries") && why.contains("4194304"),
            "{why}"
        );
        assert_eq!(
            crate::write::zone_size(&spec(Policy::LeastConn)).unwrap_err(),
            Error::TooLarge
        );
        for policy in [Policy::P2c, Policy::Random, Policy::Ewma { decay_ms: 1000 }] {
            assert_eq!(too_large_reason(&spec(policy)), None);
            let t = OwnedTable::new(&spec(policy)).unwrap();
            let mut a = OwnedAttempt::new(t.zone(), 0);
            assert_eq!(a.pick(0).unwrap().peer, 0, "{policy:?}: weight 2^31 wins");
        }
        let heavy = [
            PeerSpec::new(b"a").weight(1_000_000),
            PeerSpec::new(b"b").weight(1_000_000),
        ];
        let ring = UpstreamSpec {
            health: Default::default(),
            policy: Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            peers: &heavy,
            schedule_room: 0,
            sessions: false,
        };
        // Above nginx's ring size the ring is scaled down, in proportion
        // (consistent_rings_above_nginx_size_keep_the_weights_proportions).
        assert_eq!(too_large_reason(&ring), None);
        // More servers than half the largest weight, above it: refused.
        let ids: Vec<Vec<u8>> = (0..60_000).map(|i| format!("s{i}").into_bytes()).collect();
        let many: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id).weight(2)).collect();
        let why = too_large_reason(&UpstreamSpec {
            peers: &many,
            ..ring
        })
        .unwrap();
        assert!(
            why.contains("60000 servers of total weight 120000")
                && why.contains("16777216 points")
                && why.contains("52428 servers"),
            "{why}"
        );
        assert_eq!(too_large_reason(&spec(Policy::P2c)), None);
    }

    #[test]
    fn consistent_rings_above_nginx_size_keep_the_weights_proportions() {
        let heavy = [
            PeerSpec::new(b"10.0.0.1:80").weight(1_000_000),
            PeerSpec::new(b"10.0.0.2:80").weight(2_000_000),
            PeerSpec::new(b"10.0.0.3:80").weight(1_000),
            PeerSpec::new(b"10.0.0.4:80").weight(3_000_000),
        ];
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::Hash {
                mode: HashMode::Consistent,
                balance_factor: 0,
                maglev_size: 0,
            },
            peers: &heavy,
            schedule_room: 0,
            sessions: false,
        };
        let t = OwnedTable::new(&spec).unwrap();
        let ring = t.table().ring();
        let mut counts = [0usize; 4];
        for p in ring {
            counts[p.server as usize] += 1;
        }
        // (Weights with a common divisor: the round robin fallback's
        // schedule has its own limit.) Scaled weights: floor(w x (104857 -
        // 4) / 6001000), at least 1; 160 points per unit (equal hashes
        // collapse, rarely).
        let want: Vec<usize> = [1_000_000u64, 2_000_000, 1_000, 3_000_000]
            .iter()
            .map(|&w| ((w * 104_853 / 6_001_000).max(1) * 160) as usize)
            .collect();
        // Equal hashes among 16 Mi points of 2^32 collapse (about 0.2% of
        // each server's points, kept in the shadow section).
        for (got, want) in counts.iter().zip(&want) {
            assert!(
                got <= want && *got >= want - want / 100,
                "{counts:?} vs {want:?}"
            );
        }
        assert!(ring.len() + t.table().ring_shadow().len() <= ketama::MAX_POINTS as usize);
        // The proportions of the weights, within 1% (within one scaled
        // unit for the light server: 17 units for 17.47).
        for (i, k, within) in [(1, 2.0, 0.01), (3, 3.0, 0.01), (2, 0.001, 1.0 / 17.0)] {
            let ratio = counts[i] as f64 / counts[0] as f64;
            assert!(
                (ratio / k - 1.0).abs() < within,
                "{counts:?}: {i} / 0 = {ratio}"
            );
        }
    }

    #[test]
    fn rebuild_of_10000_peers_is_fast() {
        let ids: Vec<Vec<u8>> = (0..10_000)
            .map(|i| format!("up\0s{i}").into_bytes())
            .collect();
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PeerSpec::new(id).weight(1 + (i % 3) as u32))
            .collect();
        let t = rr(&peers);
        let z = t.zone();
        z.set_weight(17, Some(9)).unwrap();
        let start = std::time::Instant::now();
        z.publish(3, |_| true).unwrap();
        // Generous for debug builds on a loaded machine; the criterion
        // figure (release) is in docs/benchmarks.md.
        assert!(start.elapsed().as_millis() < 2_000, "{:?}", start.elapsed());
    }
}
