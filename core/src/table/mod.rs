//! Shared-memory layout of one upstream's balancing table
//!
//! # Layout
//!
//! One contiguous region, 64-byte aligned, offsets in bytes from its start;
//! records refer to each other by index, never by pointer, so the region is
//! valid at whatever address each process maps it.
//!
//! | offset | what | size |
//! |---|---|---|
//! | 0 | [`Header`]: magic, layout version, size, digest, counts, offsets | 256 |
//! | 256 | [`Cursor`] × 4: schedule cursors (primary, backup), total in-flight, spare; a line each | 256 |
//! | `state_off` | [`PeerState`] × peers: hot counters and a copy of the limits a pick checks, a cache line each | 64 × n |
//! | `conf_off` | [`PeerConf`] × peers: immutable parameters | 32 × n |
//! | `alias_off` | [`Column`] × primaries: weighted random draws (p2c, ewma, random) | 8 × n |
//! | `ring_off` | [`Point`] × `ring_len`: ketama ring (hash consistent) | 8 × len |
//! | `maglev_off` | `u32` × `maglev_len`: Maglev table (hash maglev) | 4 × len |
//! | `chain_off` | `u32` × peers: next peer with the same server string (hash) | 4 × n |
//! | `sched_off[g]` | `u32` × `sched_len[g]`: smooth WRR schedule of group g | 4 × len |
//! | `ledger_off` | [`LEDGER_SLOTS`] × (owner line + `u32` × peers): per-worker in-flight ledger | see [`crate::table::ledger`] |
//!
//! Sections a policy does not use have length 0.
//!
//! Everything but the atomics is written once, by [`Table::init`], before
//! any other process can see the region (nginx initialises zones in the
//! master before forking workers), and only read afterwards.
//!
//! A table is adopted across `nginx -s reload` by [`Table::attach`] when the
//! magic, the layout version, the size and the configuration digest all
//! match; otherwise the caller builds a fresh one.

mod carry;
pub mod ledger;

use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::Error;
use crate::selection::alias::{self, Column};
use crate::selection::ketama::{self, Point};
use crate::selection::maglev;
use crate::selection::schedule;
use crate::spec::{identity_hash, HashMode, Policy, UpstreamSpec};

/// `b"HABTABLE"` as a little-endian integer.
pub const MAGIC: u64 = u64::from_le_bytes(*b"HABTABLE");

/// Bumped on every incompatible change of this layout.
pub const LAYOUT_VERSION: u32 = 1;

/// Alignment the region must have.
pub const ALIGN: usize = 64;

/// Peer group: primaries or backups.
pub const PRIMARY: usize = 0;
/// Peer group: backups.
pub const BACKUP: usize = 1;

/// Table header, at offset 0. Written once at init.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`Policy`] as its ABI number.
    pub policy: u32,
    /// [`Policy::params`].
    pub params: [u32; 4],
    /// Bytes of the whole table.
    pub size: u64,
    /// [`UpstreamSpec::digest`] of the configuration the table was built for.
    pub digest: u64,
    /// Number of peers, primaries and backups.
    pub peers: u32,
    /// Number of primaries; peers `primaries..peers` are backups.
    pub primaries: u32,
    /// Offset of the [`PeerState`] array.
    pub state_off: u64,
    /// Offset of the [`PeerConf`] array.
    pub conf_off: u64,
    /// Offsets of the two schedules.
    pub sched_off: [u64; 2],
    /// Lengths (entries) of the two schedules.
    pub sched_len: [u32; 2],
    /// Offset of the alias table (primaries).
    pub alias_off: u64,
    /// Offset of the ketama ring.
    pub ring_off: u64,
    /// Points on the ring (after removing duplicate hashes).
    pub ring_len: u32,
    /// Entries of the Maglev table.
    pub maglev_len: u32,
    /// Offset of the Maglev table.
    pub maglev_off: u64,
    /// Offset of the same-server chains.
    pub chain_off: u64,
    /// Sum of the primaries' weights, `down` ones included (nginx's
    /// `total_weight`, which plain hashing divides by).
    pub total_weight: u64,
    /// Primaries not marked `down`.
    pub live_primaries: u32,
    /// Zero.
    pub pad: u32,
    /// Offset of the per-worker ledger.
    pub ledger_off: u64,
    /// Ledger slots.
    pub ledger_slots: u32,
    /// Bytes per ledger slot (owner line and row of counters).
    pub ledger_slot_bytes: u32,
    /// Zero; room to grow without moving the sections.
    pub reserved: [u64; 4],
}

/// A schedule cursor on its own cache line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Cursor {
    /// Picks taken from the schedule so far (wrapping). Only ever
    /// incremented; the position is `value % sched_len`.
    pub value: AtomicU64,
}

/// Per-peer counters that change on every request, a cache line each so
/// workers picking different peers do not contend.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PeerState {
    /// Requests currently sent to this peer by all workers. Incremented when
    /// a pick succeeds (bounded by `max_conns` when set), decremented once by
    /// the matching free; never below zero.
    pub in_flight: AtomicU32,
    /// Failures counted toward `max_fails` (nginx's `fails`). Incremented on
    /// a failed try, reset to zero by a success after a new check window.
    pub fails: AtomicU32,
    /// Start of the current check window, ms (nginx's `checked`). Moves
    /// forward only: set on failure and when a pick opens a new window.
    pub checked_ms: AtomicU64,
    /// Time of the last failure, ms (nginx's `accessed`).
    pub accessed_ms: AtomicU64,
    /// Peak-EWMA latency estimate in ms, as `f64` bits; 0.0 means unknown
    /// (new or just recovered: treated as neutral). Racy read-modify-write
    /// by design: a lost update only loses one sample.
    pub ewma_bits: AtomicU64,
    /// When `ewma_bits` was last updated, ms.
    pub ewma_stamp_ms: AtomicU64,
    /// `weight=`: a copy of [`PeerConf`]'s, so that a pick reads one cache
    /// line per peer. This and the fields below never change after init.
    pub weight: u32,
    /// `max_conns=`, 0 for unlimited.
    pub max_conns: u32,
    /// `max_fails=`, 0 for never.
    pub max_fails: u32,
    /// [`PeerConf::BACKUP`] | [`PeerConf::DOWN`].
    pub flags: u32,
    /// `fail_timeout=`, ms.
    pub fail_timeout_ms: u64,
}

impl PeerState {
    /// Whether `down` was set.
    #[inline]
    pub fn down(&self) -> bool {
        self.flags & PeerConf::DOWN != 0
    }
}

/// Per-peer parameters, immutable after init.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PeerConf {
    /// `weight=`.
    pub weight: u32,
    /// `max_conns=`, 0 for unlimited.
    pub max_conns: u32,
    /// `max_fails=`, 0 for never.
    pub max_fails: u32,
    /// [`PeerConf::BACKUP`] | [`PeerConf::DOWN`].
    pub flags: u32,
    /// `fail_timeout=`, ms.
    pub fail_timeout_ms: u64,
    /// FNV-1a of the peer's identity, to carry state across reloads.
    pub id_hash: u64,
}

impl PeerConf {
    /// The peer is a backup server.
    pub const BACKUP: u32 = 1;
    /// The peer is marked `down`.
    pub const DOWN: u32 = 2;

    /// Whether `down` was set.
    #[inline]
    pub fn down(&self) -> bool {
        self.flags & Self::DOWN != 0
    }
}

const _: () = {
    assert!(size_of::<Header>() == 256);
    assert!(size_of::<Column>() == 8 && size_of::<Point>() == 8);
    assert!(size_of::<Cursor>() == 64);
    assert!(size_of::<PeerState>() == 64);
    assert!(align_of::<PeerState>() == 64);
    assert!(size_of::<PeerConf>() == 32);
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
};

const CURSORS_OFF: usize = size_of::<Header>();
const CURSORS: usize = 4;
const STATE_OFF: usize = CURSORS_OFF + CURSORS * size_of::<Cursor>();

/// Worker slots of the in-flight ledger (see [`crate::table::ledger`]).
pub const LEDGER_SLOTS: usize = 32;

/// Cursor line holding the total in-flight count of the primaries (kept
/// only for bounded-load hashing).
pub const TOTAL: usize = 2;

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Offsets and sizes of every section for one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    peers: usize,
    primaries: usize,
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
    ledger_off: usize,
    ledger_slot_bytes: usize,
    size: usize,
}

/// Weights of a group as the schedule and alias tables see them (`down`
/// peers weigh 0).
fn live_weights(spec: &UpstreamSpec<'_>, range: core::ops::Range<usize>) -> Vec<u32> {
    spec.peers[range]
        .iter()
        .map(|p| if p.down { 0 } else { p.weight })
        .collect()
}

impl Plan {
    fn new(spec: &UpstreamSpec<'_>) -> Result<Plan, Error> {
        spec.validate()?;
        let peers = spec.peers.len();
        let primaries = spec.primaries();
        let mut sched_len = [0; 2];
        for (g, range) in [(PRIMARY, 0..primaries), (BACKUP, primaries..peers)] {
            sched_len[g] = schedule::period(&live_weights(spec, range))?;
        }
        let (mut alias_len, mut ring_cap, mut maglev_len, mut chain_len) = (0, 0, 0, 0);
        match spec.policy {
            Policy::P2c | Policy::Ewma { .. } | Policy::Random => alias_len = primaries,
            Policy::Hash {
                mode, maglev_size, ..
            } => {
                chain_len = peers;
                match mode {
                    HashMode::Plain => {}
                    HashMode::Consistent => {
                        let total: u64 = spec.peers.iter().map(|p| u64::from(p.weight)).sum();
                        if total * 160 > schedule::MAX_PERIOD * 4 {
                            return Err(Error::TooLarge);
                        }
                        ring_cap = total as usize * 160;
                    }
                    HashMode::Maglev => maglev_len = maglev::table_size(primaries, maglev_size),
                }
            }
            Policy::RoundRobin | Policy::LeastConn => {}
        }
        let conf_off = STATE_OFF + peers * size_of::<PeerState>();
        let alias_off = conf_off + peers * size_of::<PeerConf>();
        let ring_off = alias_off + alias_len * size_of::<Column>();
        let maglev_off = ring_off + ring_cap * size_of::<Point>();
        let chain_off = maglev_off + maglev_len * 4;
        let s0 = chain_off + chain_len * 4;
        let s1 = s0 + sched_len[0] * 4;
        let ledger_off = round_up(s1 + sched_len[1] * 4, ALIGN);
        let ledger_slot_bytes = ALIGN + round_up(peers * 4, ALIGN);
        let size = ledger_off + LEDGER_SLOTS * ledger_slot_bytes;
        Ok(Plan {
            peers,
            primaries,
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
            ledger_off,
            ledger_slot_bytes,
            size,
        })
    }

    /// The header this plan gives, before the ring is built.
    fn header(&self, spec: &UpstreamSpec<'_>, ring_len: usize) -> Header {
        Header {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            policy: spec.policy.code(),
            params: spec.policy.params(),
            size: self.size as u64,
            digest: spec.digest(),
            peers: self.peers as u32,
            primaries: self.primaries as u32,
            state_off: STATE_OFF as u64,
            conf_off: self.conf_off as u64,
            sched_off: [self.sched_off[0] as u64, self.sched_off[1] as u64],
            sched_len: [self.sched_len[0] as u32, self.sched_len[1] as u32],
            alias_off: self.alias_off as u64,
            ring_off: self.ring_off as u64,
            ring_len: ring_len as u32,
            maglev_len: self.maglev_len as u32,
            maglev_off: self.maglev_off as u64,
            chain_off: self.chain_off as u64,
            total_weight: spec.peers[..self.primaries]
                .iter()
                .map(|p| u64::from(p.weight))
                .sum(),
            live_primaries: spec.peers[..self.primaries]
                .iter()
                .filter(|p| !p.down)
                .count() as u32,
            pad: 0,
            ledger_off: self.ledger_off as u64,
            ledger_slots: LEDGER_SLOTS as u32,
            ledger_slot_bytes: self.ledger_slot_bytes as u32,
            reserved: [0; 4],
        }
    }
}

/// Maglev names: each peer's identity, with the occurrence number appended
/// to repeats (the same `server` written twice). Identical names would
/// share one permutation, and every copy would re-walk the slots its twins
/// took: quadratic build time.
fn maglev_names(peers: &[crate::spec::PeerSpec<'_>]) -> Vec<Vec<u8>> {
    let mut seen: std::collections::HashMap<&[u8], u32> = Default::default();
    peers
        .iter()
        .map(|p| {
            let n = seen.entry(p.id).or_insert(0);
            let mut name = p.id.to_vec();
            if *n > 0 {
                name.push(0);
                name.extend_from_slice(&n.to_le_bytes());
            }
            *n += 1;
            name
        })
        .collect()
}

/// Bytes a table for `spec` needs.
pub fn table_size(spec: &UpstreamSpec<'_>) -> Result<usize, Error> {
    Ok(Plan::new(spec)?.size)
}

/// A view of a balancing table in shared memory.
///
/// Cheap to copy: a pointer to the region. All methods are safe: the
/// constructors checked the layout, and the region's non-atomic parts are
/// never written after init.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    base: NonNull<u8>,
    _region: PhantomData<&'a [u8]>,
}

// SAFETY: the region is only mutated through atomics after init; the
// immutable parts are plain data. Sharing the view between threads is what
// workers do between processes.
unsafe impl Send for Table<'_> {}
// SAFETY: as above.
unsafe impl Sync for Table<'_> {}

impl<'a> Table<'a> {
    /// Builds a fresh table for `spec` in `mem`: all counters zero, cursors
    /// at the start of their schedules.
    pub fn init(spec: &UpstreamSpec<'_>, mem: &'a mut [u8]) -> Result<Table<'a>, Error> {
        let plan = Plan::new(spec)?;
        if mem.len() < plan.size || mem.as_ptr() as usize % ALIGN != 0 {
            return Err(Error::NoSpace);
        }
        let mem = &mut mem[..plan.size];
        mem.fill(0);
        let base = mem.as_mut_ptr();

        // Configuration-time work that may allocate: the ketama ring.
        let ring = if plan.ring_cap > 0 {
            let servers: Vec<(&[u8], u32)> =
                spec.peers.iter().map(|p| (p.server, p.weight)).collect();
            let mut points = ketama::build(&servers);
            points.truncate(plan.ring_cap);
            points
        } else {
            Vec::new()
        };
        let header = plan.header(spec, ring.len());
        let primaries = &spec.peers[..plan.primaries];
        // SAFETY: `mem` is 64-byte aligned and at least `plan.size` bytes;
        // every section below lies inside it at an offset aligned for its
        // type (Plan puts 64-byte records first, then 32-byte, then 8- and
        // 4-byte ones), and we hold the only (mutable) reference to it.
        // Zeroed atomics are valid atomics.
        unsafe {
            base.cast::<Header>().write(header);
            let conf = base.add(plan.conf_off).cast::<PeerConf>();
            let state = base.add(STATE_OFF).cast::<PeerState>();
            for (i, p) in spec.peers.iter().enumerate() {
                state.add(i).write(PeerState {
                    in_flight: AtomicU32::new(0),
                    fails: AtomicU32::new(0),
                    checked_ms: AtomicU64::new(0),
                    accessed_ms: AtomicU64::new(0),
                    ewma_bits: AtomicU64::new(0),
                    ewma_stamp_ms: AtomicU64::new(0),
                    weight: p.weight,
                    max_conns: p.max_conns,
                    max_fails: p.max_fails,
                    flags: if p.backup { PeerConf::BACKUP } else { 0 }
                        | if p.down { PeerConf::DOWN } else { 0 },
                    fail_timeout_ms: p.fail_timeout_ms,
                });
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
            if plan.alias_len > 0 {
                let out = core::slice::from_raw_parts_mut(
                    base.add(plan.alias_off).cast::<Column>(),
                    plan.alias_len,
                );
                alias::build(&live_weights(spec, 0..plan.primaries), out)?;
            }
            if !ring.is_empty() {
                let out = core::slice::from_raw_parts_mut(
                    base.add(plan.ring_off).cast::<Point>(),
                    ring.len(),
                );
                out.copy_from_slice(&ring);
            }
            if plan.maglev_len > 0 {
                let out = core::slice::from_raw_parts_mut(
                    base.add(plan.maglev_off).cast::<u32>(),
                    plan.maglev_len,
                );
                let names = maglev_names(primaries);
                let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
                let weights: Vec<u32> = primaries.iter().map(|p| p.weight).collect();
                maglev::build(&names, &weights, out);
            }
            if plan.chain_len > 0 {
                let out = core::slice::from_raw_parts_mut(
                    base.add(plan.chain_off).cast::<u32>(),
                    plan.chain_len,
                );
                // Walk backwards remembering the last index seen per server:
                // each peer links to the next one with the same string.
                let mut next: std::collections::HashMap<&[u8], u32> = Default::default();
                for (i, p) in spec.peers.iter().enumerate().rev() {
                    out[i] = next.insert(p.server, i as u32).unwrap_or(u32::MAX);
                }
            }
            for (g, range) in [
                (PRIMARY, 0..plan.primaries),
                (BACKUP, plan.primaries..plan.peers),
            ] {
                let out = core::slice::from_raw_parts_mut(
                    base.add(plan.sched_off[g]).cast::<u32>(),
                    plan.sched_len[g],
                );
                schedule::build(&live_weights(spec, range.clone()), out)?;
                // Schedules hold table-wide peer indices.
                for e in out.iter_mut() {
                    *e += range.start as u32;
                }
            }
        }
        // SAFETY: just built, checked by construction.
        Ok(unsafe { Table::from_ptr(base) })
    }

    /// Adopts the table already in `mem` if it was built for a
    /// configuration equal to `spec` (same digest, version and size).
    pub fn attach(spec: &UpstreamSpec<'_>, mem: &'a [u8]) -> Result<Table<'a>, Error> {
        let plan = Plan::new(spec)?;
        if mem.len() < plan.size || mem.as_ptr() as usize % ALIGN != 0 {
            return Err(Error::NoSpace);
        }
        // SAFETY: aligned and long enough for a Header, which is plain data.
        let h = unsafe { &*mem.as_ptr().cast::<Header>() };
        let want = plan.header(spec, h.ring_len as usize);
        let matches = h.magic == want.magic
            && h.version == want.version
            && h.policy == want.policy
            && h.params == want.params
            && h.size == want.size
            && h.digest == want.digest
            && h.peers == want.peers
            && h.primaries == want.primaries
            && h.state_off == want.state_off
            && h.conf_off == want.conf_off
            && h.sched_off == want.sched_off
            && h.sched_len == want.sched_len
            && h.alias_off == want.alias_off
            && h.ring_off == want.ring_off
            && h.ring_len as usize <= plan.ring_cap
            && h.maglev_len == want.maglev_len
            && h.maglev_off == want.maglev_off
            && h.chain_off == want.chain_off
            && h.total_weight == want.total_weight
            && h.live_primaries == want.live_primaries
            && h.ledger_off == want.ledger_off
            && h.ledger_slots == want.ledger_slots
            && h.ledger_slot_bytes == want.ledger_slot_bytes;
        if !matches {
            return Err(Error::BadLayout);
        }
        // SAFETY: the header matches the plan for this spec exactly, so
        // every section lies where `from_ptr` will look for it.
        Ok(unsafe { Table::from_ptr(mem.as_ptr().cast_mut()) })
    }

    /// A view of the table at `base`.
    ///
    /// # Safety
    ///
    /// `base` must point to a table built by [`Table::init`] (or accepted
    /// by [`Table::attach`]) whose memory stays mapped for `'a`, and whose
    /// non-atomic parts nobody writes during `'a`.
    #[inline]
    pub unsafe fn from_ptr(base: *mut u8) -> Table<'a> {
        Table {
            // SAFETY: the caller guarantees a valid, hence non-null, table.
            base: unsafe { NonNull::new_unchecked(base) },
            _region: PhantomData,
        }
    }

    /// Start of the region, for handing the table to C.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The header.
    #[inline]
    pub fn header(&self) -> &'a Header {
        // SAFETY: a valid table starts with its header (constructor
        // contract); it is never written after init.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    /// The policy the table was built for.
    pub fn policy(&self) -> Policy {
        let h = self.header();
        Policy::from_parts(h.policy, h.params).unwrap_or(Policy::RoundRobin)
    }

    /// Number of peers, primaries and backups.
    #[inline]
    pub fn peers(&self) -> usize {
        self.header().peers as usize
    }

    /// Number of primaries.
    #[inline]
    pub fn primaries(&self) -> usize {
        self.header().primaries as usize
    }

    /// Peer index range of group `g` ([`PRIMARY`] or [`BACKUP`]).
    #[inline]
    pub fn group(&self, g: usize) -> core::ops::Range<usize> {
        if g == PRIMARY {
            0..self.primaries()
        } else {
            self.primaries()..self.peers()
        }
    }

    /// Cursor of group `g`.
    #[inline]
    pub fn cursor(&self, g: usize) -> &'a Cursor {
        // SAFETY: CURSORS cursors follow the header (layout contract); the
        // index is reduced into range.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(CURSORS_OFF)
                .cast::<Cursor>()
                .add(g % CURSORS)
        }
    }

    /// The `len` records of type `T` at byte offset `off`.
    ///
    /// # Safety
    ///
    /// The layout must place `len` initialised `T`s at `off` (every caller
    /// below passes a section's offset and length from the header, which
    /// `init` wrote and `attach` checked against the plan), aligned for `T`.
    #[inline]
    unsafe fn section<T>(&self, off: u64, len: usize) -> &'a [T] {
        // SAFETY: forwarded contract; the region outlives 'a (constructor
        // contract) and these sections are not written after init, except
        // through atomics.
        unsafe {
            core::slice::from_raw_parts(self.base.as_ptr().add(off as usize).cast::<T>(), len)
        }
    }

    /// Alias table of the primaries (empty unless p2c, ewma or random).
    #[inline]
    pub fn alias(&self) -> &'a [Column] {
        let h = self.header();
        // The section has an extent only for the policies that draw.
        let len = if h.ring_off > h.alias_off {
            self.primaries()
        } else {
            0
        };
        // SAFETY: `len` columns at alias_off (layout contract).
        unsafe { self.section(h.alias_off, len) }
    }

    /// The ketama ring (empty unless hash consistent).
    #[inline]
    pub fn ring(&self) -> &'a [Point] {
        let h = self.header();
        // SAFETY: ring_len points at ring_off (layout contract).
        unsafe { self.section(h.ring_off, h.ring_len as usize) }
    }

    /// The Maglev table (empty unless hash maglev).
    #[inline]
    pub fn maglev(&self) -> &'a [u32] {
        let h = self.header();
        // SAFETY: maglev_len u32s at maglev_off (layout contract).
        unsafe { self.section(h.maglev_off, h.maglev_len as usize) }
    }

    /// Next peer with the same server string, per peer (empty unless hash).
    #[inline]
    pub fn chain(&self) -> &'a [u32] {
        let h = self.header();
        // The section has an extent only for hash policies.
        let len = if h.sched_off[0] > h.chain_off {
            self.peers()
        } else {
            0
        };
        // SAFETY: `len` u32s at chain_off (layout contract).
        unsafe { self.section(h.chain_off, len) }
    }

    /// Hot counters of every peer.
    #[inline]
    pub fn states(&self) -> &'a [PeerState] {
        // SAFETY: `peers` states at STATE_OFF (layout contract).
        unsafe { self.section(STATE_OFF as u64, self.peers()) }
    }

    /// Parameters of every peer.
    #[inline]
    pub fn confs(&self) -> &'a [PeerConf] {
        // SAFETY: `peers` confs at conf_off (layout contract).
        unsafe { self.section(self.header().conf_off, self.peers()) }
    }

    /// Smooth WRR schedule of group `g`: table-wide peer indices.
    #[inline]
    pub fn schedule(&self, g: usize) -> &'a [u32] {
        let h = self.header();
        let g = g & 1;
        // SAFETY: sched_len[g] u32s at sched_off[g] (layout contract).
        unsafe { self.section(h.sched_off[g], h.sched_len[g] as usize) }
    }

    /// Owner word and counter row of ledger slot `s` (`None` past the end).
    #[inline]
    pub fn ledger_slot(&self, s: usize) -> Option<(&'a AtomicU64, &'a [AtomicU32])> {
        let h = self.header();
        if s >= h.ledger_slots as usize {
            return None;
        }
        let at = h.ledger_off as usize + s * h.ledger_slot_bytes as usize;
        // SAFETY: `ledger_slots` slots of `ledger_slot_bytes` bytes at
        // ledger_off, each an owner word on its own line followed by one
        // u32 counter per peer (layout contract); zero-initialised atomics.
        unsafe {
            let base = self.base.as_ptr().add(at);
            Some((
                &*base.cast::<AtomicU64>(),
                core::slice::from_raw_parts(base.add(ALIGN).cast::<AtomicU32>(), self.peers()),
            ))
        }
    }

    /// Whether nginx's single-peer rules apply: one primary, no backup.
    #[inline]
    pub fn single(&self) -> bool {
        self.peers() == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PeerSpec;
    use crate::testing::Region;

    #[test]
    fn init_then_attach() {
        let peers = [
            PeerSpec::new(b"a").weight(5),
            PeerSpec::new(b"b"),
            PeerSpec {
                backup: true,
                ..PeerSpec::new(b"c")
            },
        ];
        let spec = UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
        };
        let size = table_size(&spec).unwrap();
        assert_eq!(size % ALIGN, 0);
        let mut region = Region::new(size);
        let t = Table::init(&spec, region.bytes_mut()).unwrap();
        assert_eq!(t.peers(), 3);
        assert_eq!(t.primaries(), 2);
        assert_eq!(t.schedule(PRIMARY), &[0, 0, 0, 1, 0, 0]);
        assert_eq!(t.schedule(BACKUP), &[2]);
        t.states()[1]
            .fails
            .store(3, core::sync::atomic::Ordering::Relaxed);

        let t2 = Table::attach(&spec, region.bytes()).unwrap();
        assert_eq!(
            t2.states()[1]
                .fails
                .load(core::sync::atomic::Ordering::Relaxed),
            3
        );

        let other = [PeerSpec::new(b"a").weight(4), PeerSpec::new(b"b")];
        let spec2 = UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &other,
        };
        assert_eq!(
            Table::attach(&spec2, region.bytes()).unwrap_err(),
            Error::BadLayout
        );
    }

    #[test]
    fn maglev_with_repeated_servers_builds_fast() {
        // 2,000 server lines over 4 addresses: distinct permutations keep
        // the build linear (it took seconds when repeats shared one).
        let ids: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        let peers: Vec<PeerSpec<'_>> = (0..2000).map(|i| PeerSpec::new(ids[i % 4])).collect();
        let spec = UpstreamSpec {
            policy: Policy::Hash {
                mode: HashMode::Maglev,
                balance_factor: 0,
                maglev_size: 0,
            },
            peers: &peers,
        };
        let start = std::time::Instant::now();
        let t = crate::testing::OwnedTable::new(&spec).unwrap();
        assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());
        let table = t.table();
        let mut used = vec![false; 2000];
        for &e in table.maglev() {
            used[e as usize] = true;
        }
        assert!(used.iter().all(|&u| u), "every repeat owns entries");
    }

    #[test]
    fn rejects_small_or_bad_regions() {
        let peers = [PeerSpec::new(b"a")];
        let spec = UpstreamSpec {
            policy: Policy::LeastConn,
            peers: &peers,
        };
        let size = table_size(&spec).unwrap();
        let mut region = Region::new(size);
        assert_eq!(
            Table::init(&spec, &mut region.bytes_mut()[..size - 64]).unwrap_err(),
            Error::NoSpace
        );
        assert_eq!(
            Table::attach(&spec, region.bytes()).unwrap_err(),
            Error::BadLayout
        );
        let zero = [PeerSpec::new(b"a").weight(0)];
        let bad = UpstreamSpec {
            policy: Policy::LeastConn,
            peers: &zero,
        };
        assert_eq!(table_size(&bad).unwrap_err(), Error::InvalidArgument);
        let order = [
            PeerSpec {
                backup: true,
                ..PeerSpec::new(b"a")
            },
            PeerSpec::new(b"b"),
        ];
        let bad = UpstreamSpec {
            policy: Policy::LeastConn,
            peers: &order,
        };
        assert_eq!(table_size(&bad).unwrap_err(), Error::InvalidArgument);
    }
}
