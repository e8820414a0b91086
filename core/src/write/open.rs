//! Opening a zone: its plan (offsets and sizes of every section for one
//! configuration), building a fresh zone, and adopting one a previous
//! cycle left after checking every offset it holds.
//!
//! A writer: it builds the first generation and sizes the sections of the
//! floors below (statistics, health rows, least_conn trees, the request
//! queue of `ha_queue`).

use core::mem::size_of;
use core::sync::atomic::Ordering::{Acquire, Relaxed};
use core::sync::atomic::{AtomicU32, AtomicU64};

use super::{generation, membership};
use crate::algo::alias::Column;
use crate::algo::ketama::Point;
use crate::error::Error;
use crate::layout::*;
use crate::layout::{health, queue, stats, tree};
use crate::spec::{
    identity_hash, session_id, sid_hash, Buckets, HealthSpec, Policy, UpstreamSpec, MAX_SID,
};

/// What a zone holds beyond its spec ([`Zone::init_room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Peer slots: at least the configured peers plus `api_max`.
    pub capacity: usize,
    /// Servers the API may add (`ha_api_max`), at most
    /// [`crate::spec::MAX_API_SERVERS`].
    pub api_max: u32,
    /// The latency histograms' bounds (`ha_latency_buckets`).
    pub buckets: Buckets,
}

impl Room {
    /// `capacity` slots, `api_max` of them for the API, the default
    /// latency buckets.
    pub fn new(capacity: usize, api_max: u32) -> Room {
        Room {
            capacity,
            api_max,
            buckets: Buckets::default(),
        }
    }
}

/// Offsets and sizes of the zone's fixed sections for one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ZonePlan {
    /// Slots (capacity).
    peers: usize,
    /// Configured peers.
    configured: usize,
    /// Servers the API may add ([`Root::api_max`]).
    api_max: u32,
    /// The latency histograms' bounds ([`Root::buckets`]).
    buckets: Buckets,
    /// Identity bytes per slot (0: packed names, static zone).
    slot_names: usize,
    primaries: usize,
    cold_off: usize,
    names_off: usize,
    names_len: usize,
    ledger_off: usize,
    ledger_slot_bytes: usize,
    stats_off: usize,
    health_off: usize,
    tree_off: usize,
    tree_len: usize,
    /// The request queue section (`ha_queue`; length 0: none).
    queue_off: usize,
    queue_len: usize,
    arena_off: usize,
    arena_len: usize,
    size: usize,
}

/// Bytes of arena for generations of `gen_size` bytes: the serving one,
/// one being built, a retiring one, and headroom for weight changes that
/// grow the tables (for a policy with a schedule, three schedules of
/// `room` entries; the pages are touched only when used).
fn arena_len(gen_size: usize, room: u32) -> usize {
    let schedules = 3 * room as usize * size_of::<u32>();
    round_up(3 * gen_size + gen_size.max(64 * 1024).max(schedules), ALIGN)
}

impl ZonePlan {
    fn new(spec: &UpstreamSpec<'_>, capacity: usize, api_max: u32) -> Result<ZonePlan, Error> {
        let configured = spec.peers.len();
        if capacity < configured || capacity > crate::spec::MAX_PEERS {
            return Err(if capacity < configured {
                Error::InvalidArgument
            } else {
                Error::TooLarge
            });
        }
        // The API's room is part of the slots beyond the configured ones.
        if api_max > crate::spec::MAX_API_SERVERS || api_max as usize > capacity - configured {
            return Err(Error::InvalidArgument);
        }
        let dynamic = capacity > configured;
        let gen = generation::GenPlan::new(spec, capacity)?;
        let peers = capacity;
        let (slot_names, names_len) = if dynamic {
            if spec.peers.iter().any(|p| !membership::fits_slot(p)) {
                return Err(Error::TooLarge);
            }
            (SLOT_NAMES, SLOT_NAMES * capacity)
        } else {
            let sid = if spec.sessions { MAX_SID } else { 0 };
            let n: usize = spec
                .peers
                .iter()
                .map(|p| p.id.len() + p.server.len() + sid)
                .sum();
            (0, n)
        };
        if names_len > u32::MAX as usize {
            return Err(Error::TooLarge);
        }
        // A dynamic zone's arena must hold generations of up to `capacity`
        // members whose weights are not known yet: sized for every slot
        // at the heaviest configured weight (at least 1).
        let gen_size = if dynamic {
            let w = spec
                .peers
                .iter()
                .map(|p| p.weight)
                .max()
                .unwrap_or(1)
                .max(1);
            let filler: Vec<crate::spec::PeerSpec<'_>> = (0..capacity)
                .map(|_| crate::spec::PeerSpec::new(b"").weight(w))
                .collect();
            let full = UpstreamSpec {
                policy: spec.policy,
                peers: &filler,
                health: spec.health,
                schedule_room: 0,
                sessions: spec.sessions,
            };
            match generation::GenPlan::new(&full, capacity) {
                Ok(p) => p.size.max(gen.size),
                // Too heavy to plan at full capacity: what the
                // configuration needs, and changes beyond it are refused.
                Err(_) => gen.size,
            }
        } else {
            gen.size
        };
        let cold_off = STATE_OFF + peers * size_of::<PeerState>();
        let names_off = cold_off + peers * size_of::<PeerCold>();
        let ledger_off = round_up(names_off + names_len, ALIGN);
        let ledger_slot_bytes = ALIGN + round_up((peers + GENS + 1) * 4, ALIGN);
        let stats_off = ledger_off + LEDGER_SLOTS * ledger_slot_bytes;
        let health_off = stats_off + stats::section_len(peers);
        let tree_off = health_off + health::section_len(peers);
        // Static zones only: the tree's groups are the contiguous slots of
        // the configured primaries and backups, which a dynamic zone's
        // membership does not keep (it scans, exactly, until the tree
        // follows membership).
        let tree_len = if spec.policy == Policy::LeastConn && peers > tree::MIN_PEERS && !dynamic {
            let primaries = spec.primaries();
            round_up(tree::nodes_len(primaries) * 8, ALIGN)
                + round_up(tree::nodes_len(peers - primaries) * 8, ALIGN)
        } else {
            0
        };
        let queue_off = tree_off + tree_len;
        let queue_len = match spec.health.queue {
            0 => 0,
            n => round_up(queue::size_for(n)?, ALIGN),
        };
        let arena_off = queue_off + queue_len;
        let arena_len = arena_len(gen_size, spec.schedule_room());
        Ok(ZonePlan {
            peers,
            configured,
            api_max,
            buckets: Buckets::default(),
            slot_names,
            primaries: spec.primaries(),
            cold_off,
            names_off,
            names_len,
            ledger_off,
            ledger_slot_bytes,
            stats_off,
            health_off,
            tree_off,
            tree_len,
            queue_off,
            queue_len,
            arena_off,
            arena_len,
            size: arena_off + arena_len,
        })
    }

    fn with_buckets(self, buckets: Buckets) -> ZonePlan {
        ZonePlan { buckets, ..self }
    }

    fn root(&self, spec: &UpstreamSpec<'_>) -> Root {
        Root {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            policy: spec.policy.code(),
            params: spec.policy.params(),
            size: self.size as u64,
            digest: spec.digest(),
            peers: self.peers as u32,
            primaries: self.primaries as u32,
            state_off: STATE_OFF as u64,
            cold_off: self.cold_off as u64,
            names_off: self.names_off as u64,
            names_len: self.names_len as u64,
            ledger_off: self.ledger_off as u64,
            ledger_slots: LEDGER_SLOTS as u32,
            ledger_slot_bytes: self.ledger_slot_bytes as u32,
            arena_off: self.arena_off as u64,
            arena_len: self.arena_len as u64,
            stats_off: self.stats_off as u64,
            stats_row_bytes: stats::round_up_rows(self.peers) as u64,
            stats_rows_off: (self.stats_off + stats::rows_off(self.peers)) as u64,
            health: spec.health,
            health_off: self.health_off as u64,
            tree_off: if self.tree_len == 0 {
                0
            } else {
                self.tree_off as u64
            },
            configured: self.configured as u32,
            slot_names: self.slot_names as u32,
            schedule_room: spec.schedule_room(),
            sessions: u32::from(spec.sessions),
            queue_off: if self.queue_len == 0 {
                0
            } else {
                self.queue_off as u64
            },
            api_max: self.api_max,
            pad: 0,
            buckets: self.buckets,
        }
    }
}

/// Bytes a zone for `spec` needs.
pub fn zone_size(spec: &UpstreamSpec<'_>) -> Result<usize, Error> {
    zone_size_with(spec, spec.peers.len())
}

/// Bytes a zone for `spec` with `capacity` peer slots needs (`capacity`
/// at least the configured peers; equal to them: a static zone, exactly
/// as [`zone_size`]).
pub fn zone_size_with(spec: &UpstreamSpec<'_>, capacity: usize) -> Result<usize, Error> {
    Ok(ZonePlan::new(spec, capacity, 0)?.size)
}

impl<'a> Zone<'a> {
    /// Builds a fresh zone for `spec` in the `len` bytes at `mem`: every
    /// counter zero, generation 1 built from the configured weights and
    /// published.
    ///
    /// # Safety
    ///
    /// `mem` must be valid for reads and writes of `len` bytes for `'a`,
    /// and nobody else may access those bytes during this call.
    pub unsafe fn init(
        spec: &UpstreamSpec<'_>,
        mem: *mut u8,
        len: usize,
    ) -> Result<Zone<'a>, Error> {
        // SAFETY: forwarded contract.
        unsafe { Zone::init_with(spec, spec.peers.len(), mem, len) }
    }

    /// [`Zone::init`] with `capacity` peer slots: slots
    /// `0..spec.peers.len()` hold the configured peers (LIVE), the others
    /// are FREE for [`Zone::apply_membership`]. `capacity` equal to the
    /// configured peers builds exactly the static zone [`Zone::init`]
    /// builds.
    ///
    /// # Safety
    ///
    /// As [`Zone::init`].
    pub unsafe fn init_with(
        spec: &UpstreamSpec<'_>,
        capacity: usize,
        mem: *mut u8,
        len: usize,
    ) -> Result<Zone<'a>, Error> {
        // SAFETY: forwarded contract.
        unsafe { Zone::init_api(spec, capacity, 0, mem, len) }
    }

    /// [`Zone::init_with`] with room for `api_max` servers added through
    /// the API (`ha_api_max`, see [`Zone::add_server`]): `capacity` is at
    /// least the configured peers plus `api_max` (the rest of the slots
    /// are for resolved servers), `api_max` at most
    /// [`crate::spec::MAX_API_SERVERS`]; else [`Error::InvalidArgument`].
    /// The zone's size is [`zone_size_with`]'s for `capacity`.
    ///
    /// # Safety
    ///
    /// As [`Zone::init`].
    pub unsafe fn init_api(
        spec: &UpstreamSpec<'_>,
        capacity: usize,
        api_max: u32,
        mem: *mut u8,
        len: usize,
    ) -> Result<Zone<'a>, Error> {
        let room = Room::new(capacity, api_max);
        // SAFETY: forwarded contract.
        unsafe { Zone::init_room(spec, &room, mem, len) }
    }

    /// [`Zone::init_api`] with everything a zone holds beyond its spec:
    /// its slots, the API's share of them and the latency histograms'
    /// bounds.
    ///
    /// # Safety
    ///
    /// As [`Zone::init`].
    pub unsafe fn init_room(
        spec: &UpstreamSpec<'_>,
        room: &Room,
        mem: *mut u8,
        len: usize,
    ) -> Result<Zone<'a>, Error> {
        let plan = ZonePlan::new(spec, room.capacity, room.api_max)?.with_buckets(room.buckets);
        if mem.is_null() || len < plan.size || mem as usize % ALIGN != 0 {
            return Err(Error::NoSpace);
        }
        // SAFETY: `mem` is 64-byte aligned and valid for `plan.size` bytes,
        // exclusively ours (function contract). Every record below lies
        // inside the plan's sections at an offset aligned for its type
        // (64-byte records first, then the names, then the 64-byte aligned
        // ledger). Zeroed atomics are valid atomics. The arena is left as
        // it is: a generation's builder writes all of its own bytes; so are
        // the statistics rows of the worker slots, which each slot's first
        // owner zeroes (`Zone::mark_rows_used`). The queue section (64-byte
        // aligned, `queue_len` bytes, ours alone too) is built by
        // `Queue::init`, which zeroes what it uses.
        unsafe {
            core::ptr::write_bytes(mem, 0, plan.stats_off + stats::zeroed_len(plan.peers));
            core::ptr::write_bytes(mem.add(plan.health_off), 0, health::section_len(plan.peers));
            core::ptr::write_bytes(mem.add(plan.tree_off), 0, plan.tree_len);
            if plan.queue_len != 0 {
                queue::Queue::init(mem.add(plan.queue_off), plan.queue_len, spec.health.queue)?;
            }
            mem.cast::<Root>().write(plan.root(spec));
            let state = mem.add(STATE_OFF).cast::<PeerState>();
            let cold = mem.add(plan.cold_off).cast::<PeerCold>();
            let names = mem.add(plan.names_off);
            let mut at = 0usize;
            let per = plan.slot_names;
            for (i, p) in spec.peers.iter().enumerate() {
                if per != 0 {
                    at = i * per;
                }
                state.add(i).write(PeerState {
                    in_flight: Flight::new(0),
                    fails: AtomicU32::new(0),
                    checked_ms: AtomicU64::new(0),
                    accessed_ms: AtomicU64::new(0),
                    ewma_bits: AtomicU64::new(0),
                    ewma_stamp_ms: AtomicU64::new(0),
                    weight: AtomicU32::new(p.weight),
                    max_conns: AtomicU32::new(p.max_conns),
                    max_fails: AtomicU32::new(p.max_fails),
                    flags: AtomicU32::new(
                        if p.backup { PeerState::BACKUP } else { 0 }
                            | if p.down { PeerState::DOWN } else { 0 }
                            | if spec.health.flags & HealthSpec::MANDATORY != 0 {
                                PeerState::CHECKING
                            } else {
                                0
                            },
                    ),
                    fail_timeout_ms: AtomicU32::new(p.fail_timeout_ms as u32),
                });
                // Static: packed, the server right after the identity.
                // Dynamic: each slot's fixed area, the server at
                // SLOT_ID_MAX into it.
                let server_at = if per != 0 {
                    at + SLOT_ID_MAX
                } else {
                    at + p.id.len()
                };
                core::ptr::copy_nonoverlapping(p.id.as_ptr(), names.add(at), p.id.len());
                core::ptr::copy_nonoverlapping(
                    p.server.as_ptr(),
                    names.add(server_at),
                    p.server.len(),
                );
                // The session id after the server (a dynamic slot's at
                // SLOT_ID_MAX + SLOT_SERVER_MAX), when sessions are bound.
                let sid_at = if per != 0 {
                    at + SLOT_ID_MAX + SLOT_SERVER_MAX
                } else {
                    at + p.id.len() + p.server.len()
                };
                let (sid, sid_len) = if spec.sessions {
                    session_id(p)
                } else {
                    ([0; MAX_SID], 0)
                };
                core::ptr::copy_nonoverlapping(sid.as_ptr(), names.add(sid_at), sid_len);
                cold.add(i).write(PeerCold {
                    id_hash: AtomicU64::new(identity_hash(p.id)),
                    id_off: at as u32,
                    id_len: AtomicU32::new(p.id.len() as u32),
                    server_off: server_at as u32,
                    server_len: AtomicU32::new(p.server.len() as u32),
                    conf_weight: AtomicU32::new(p.weight),
                    weight_override: AtomicU32::new(0),
                    // A server with no configuration position (a
                    // resolved one): after the configured ones, as
                    // `membership::fill_slot` numbers them.
                    position: AtomicU32::new(p.position.unwrap_or(if per != 0 {
                        (plan.configured + i).min(u32::MAX as usize) as u32
                    } else {
                        i as u32
                    })),
                    status: AtomicU32::new(membership::LIVE),
                    epoch: AtomicU32::new(0),
                    sid_len: AtomicU32::new(sid_len as u32),
                    sid_hash: AtomicU64::new(if sid_len == 0 {
                        0
                    } else {
                        sid_hash(&sid[..sid_len])
                    }),
                    sid_off: sid_at as u32,
                    origin: AtomicU32::new(0),
                });
                at += p.id.len() + p.server.len() + sid_len;
            }
            // FREE slots of a dynamic zone: out of every pick, no identity.
            for i in spec.peers.len()..plan.peers {
                state.add(i).write(PeerState {
                    in_flight: Flight::new(0),
                    fails: AtomicU32::new(0),
                    checked_ms: AtomicU64::new(0),
                    accessed_ms: AtomicU64::new(0),
                    ewma_bits: AtomicU64::new(0),
                    ewma_stamp_ms: AtomicU64::new(0),
                    weight: AtomicU32::new(0),
                    max_conns: AtomicU32::new(0),
                    max_fails: AtomicU32::new(0),
                    flags: AtomicU32::new(PeerState::RETIRED),
                    fail_timeout_ms: AtomicU32::new(0),
                });
                cold.add(i).write(PeerCold {
                    id_hash: AtomicU64::new(0),
                    id_off: (i * per) as u32,
                    id_len: AtomicU32::new(0),
                    server_off: (i * per + SLOT_ID_MAX) as u32,
                    server_len: AtomicU32::new(0),
                    conf_weight: AtomicU32::new(0),
                    weight_override: AtomicU32::new(0),
                    position: AtomicU32::new(0),
                    status: AtomicU32::new(membership::FREE),
                    epoch: AtomicU32::new(0),
                    sid_len: AtomicU32::new(0),
                    sid_hash: AtomicU64::new(0),
                    sid_off: (i * per + SLOT_ID_MAX + SLOT_SERVER_MAX) as u32,
                    origin: AtomicU32::new(0),
                });
            }
        }
        // SAFETY: the root and every fixed section were just written.
        let zone = unsafe { Zone::from_ptr(mem) };
        // The servers given `configured + slot` above hold the ids below
        // `configured + peers`: new servers' ids start after them.
        zone.sync().ids.store(
            spec.peers.len() as u64,
            core::sync::atomic::Ordering::Relaxed,
        );
        zone.publish(generation::INIT_OWNER, |_| true)?;
        Ok(zone)
    }

    /// Adopts the zone already in the `len` bytes at `mem` if it was built
    /// for a configuration equal to `spec` (same digest, version, size) and
    /// serves a generation.
    ///
    /// # Safety
    ///
    /// `mem` must be valid for reads and writes of `len` bytes for `'a`
    /// (other processes may use it concurrently, through atomics).
    pub unsafe fn attach(
        spec: &UpstreamSpec<'_>,
        mem: *mut u8,
        len: usize,
    ) -> Result<Zone<'a>, Error> {
        // SAFETY: forwarded contract.
        unsafe { Zone::attach_with(spec, spec.peers.len(), mem, len) }
    }

    /// [`Zone::attach`] for a zone built by [`Zone::init_with`] with
    /// `capacity` slots.
    ///
    /// # Safety
    ///
    /// As [`Zone::attach`].
    pub unsafe fn attach_with(
        spec: &UpstreamSpec<'_>,
        capacity: usize,
        mem: *mut u8,
        len: usize,
    ) -> Result<Zone<'a>, Error> {
        // SAFETY: forwarded contract.
        unsafe { Zone::attach_api(spec, capacity, 0, mem, len) }
    }

    /// [`Zone::attach`] for a zone built by [`Zone::init_api`] with
    /// `capacity` slots and room for `api_max` servers added through the
    /// API.
    ///
    /// # Safety
    ///
    /// As [`Zone::attach`].
    pub unsafe fn attach_api(
        spec: &UpstreamSpec<'_>,
        capacity: usize,
        api_max: u32,
        mem: *mut u8,
        len: usize,
    ) -> Result<Zone<'a>, Error> {
        let room = Room::new(capacity, api_max);
        // SAFETY: forwarded contract.
        unsafe { Zone::attach_room(spec, &room, mem, len) }
    }

    /// [`Zone::attach`] for a zone built by [`Zone::init_room`] with
    /// `room`.
    ///
    /// # Safety
    ///
    /// As [`Zone::attach`].
    pub unsafe fn attach_room(
        spec: &UpstreamSpec<'_>,
        room: &Room,
        mem: *mut u8,
        len: usize,
    ) -> Result<Zone<'a>, Error> {
        let plan = ZonePlan::new(spec, room.capacity, room.api_max)?.with_buckets(room.buckets);
        if mem.is_null() || len < plan.size || mem as usize % ALIGN != 0 {
            return Err(Error::NoSpace);
        }
        // SAFETY: aligned and long enough for a Root, which is plain data
        // written before the zone was first shared.
        let r = unsafe { &*mem.cast::<Root>() };
        let want = plan.root(spec);
        let matches = r.magic == want.magic
            && r.version == want.version
            && r.policy == want.policy
            && r.params == want.params
            && r.size == want.size
            && r.digest == want.digest
            && r.peers == want.peers
            && r.primaries == want.primaries
            && r.state_off == want.state_off
            && r.cold_off == want.cold_off
            && r.names_off == want.names_off
            && r.names_len == want.names_len
            && r.ledger_off == want.ledger_off
            && r.ledger_slots == want.ledger_slots
            && r.ledger_slot_bytes == want.ledger_slot_bytes
            && r.arena_off == want.arena_off
            && r.arena_len == want.arena_len
            && r.stats_off == want.stats_off
            && r.stats_row_bytes == want.stats_row_bytes
            && r.stats_rows_off == want.stats_rows_off
            && r.health == want.health
            && r.health_off == want.health_off
            && r.tree_off == want.tree_off
            && r.configured == want.configured
            && r.slot_names == want.slot_names
            && r.queue_off == want.queue_off
            && r.api_max == want.api_max
            && r.buckets == want.buckets;
        if !matches {
            return Err(Error::BadLayout);
        }
        // SAFETY: the root matches the plan for this spec exactly, so every
        // section lies where the accessors look for it.
        let zone = unsafe { Zone::from_ptr(mem) };
        if zone.current_slot().is_none() || !zone.generations_in_bounds() {
            return Err(Error::BadLayout);
        }
        if plan.queue_len != 0 {
            // SAFETY: the queue section lies inside the zone (the plan's);
            // other processes use it through atomics only.
            let q = unsafe { queue::Queue::attach(mem.add(plan.queue_off), plan.queue_len) }?;
            if q.max() != spec.health.queue {
                return Err(Error::BadLayout);
            }
        }
        Ok(zone)
    }

    /// Whether every LIVE descriptor (and the serving one) lies inside the
    /// arena, aligned, and every section its generation's header names
    /// lies inside the generation: what [`Zone::attach`] checks before it
    /// trusts a zone another cycle left.
    fn generations_in_bounds(&self) -> bool {
        let r = self.root();
        let (arena, end) = (r.arena_off, r.arena_off + r.arena_len);
        let current = self.current_slot();
        (0..GENS).all(|d| {
            let slot = self.slot(d);
            let live = slot.status.load(Acquire) == generation::DESC_LIVE;
            if !live {
                return Some(d) != current;
            }
            let (off, len) = (slot.off.load(Relaxed), slot.len.load(Relaxed));
            if off < arena
                || off % ALIGN as u64 != 0
                || len < size_of::<GenHeader>() as u64
                || off.checked_add(len).is_none_or(|e| e > end)
            {
                return false;
            }
            // SAFETY: a GenHeader's bytes lie inside the arena (checked).
            let h = unsafe { &*self.as_ptr().add(off as usize).cast::<GenHeader>() };
            let fits = |at: u64, n: u64, each: usize| {
                n.checked_mul(each as u64)
                    .and_then(|b| b.checked_add(at))
                    .is_some_and(|e| e <= len)
            };
            let peers = u64::from(h.peers);
            h.magic == GEN_MAGIC
                && h.size == len
                && peers <= r.peers as u64
                && h.primaries <= h.peers
                && fits(h.conf_off, peers, size_of::<PeerConf>())
                && fits(h.alias_off, u64::from(h.alias_len), size_of::<Column>())
                && fits(
                    h.ring_off,
                    u64::from(h.ring_len) + u64::from(h.shadow_len),
                    size_of::<Point>(),
                )
                && fits(h.maglev_off, u64::from(h.maglev_len), 4)
                && fits(h.chain_off, u64::from(h.chain_len), 4)
                && (0..2).all(|g| fits(h.sched_off[g], u64::from(h.sched_len[g]), 4))
                && (h.members_off == 0 || fits(h.members_off, peers, 4))
        })
    }
}
