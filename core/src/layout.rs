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
//! | 0 | [`Header`]: magic, layout version, size, digest, counts, offsets | 128 |
//! | 128 | [`Cursor`] × 2: schedule cursors (primary, backup), a line each | 128 |
//! | `state_off` | [`PeerState`] × peers: hot counters, a cache line each | 64 × n |
//! | `conf_off` | [`PeerConf`] × peers: immutable parameters | 32 × n |
//! | `sched_off[g]` | `u32` × `sched_len[g]`: smooth WRR schedule of group g | 4 × len |
//!
//! Everything but the atomics is written once, by [`Table::init`], before
//! any other process can see the region (nginx initialises zones in the
//! master before forking workers), and only read afterwards.
//!
//! A table is adopted across `nginx -s reload` by [`Table::attach`] when the
//! magic, the layout version, the size and the configuration digest all
//! match; otherwise the caller builds a fresh one.

use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::Error;
use crate::schedule;
use crate::spec::{identity_hash, Policy, UpstreamSpec};

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
    assert!(size_of::<Header>() == 128);
    assert!(size_of::<Cursor>() == 64);
    assert!(size_of::<PeerState>() == 64);
    assert!(align_of::<PeerState>() == 64);
    assert!(size_of::<PeerConf>() == 32);
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
};

const CURSORS_OFF: usize = size_of::<Header>();
const STATE_OFF: usize = CURSORS_OFF + 2 * size_of::<Cursor>();

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Offsets and sizes of every section for one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    peers: usize,
    primaries: usize,
    conf_off: usize,
    sched_off: [usize; 2],
    sched_len: [usize; 2],
    size: usize,
}

impl Plan {
    fn new(spec: &UpstreamSpec<'_>) -> Result<Plan, Error> {
        spec.validate()?;
        let peers = spec.peers.len();
        let primaries = spec.primaries();
        let mut sched_len = [0; 2];
        for (g, range) in [(PRIMARY, 0..primaries), (BACKUP, primaries..peers)] {
            let w: Vec<u32> = spec.peers[range]
                .iter()
                .map(|p| if p.down { 0 } else { p.weight })
                .collect();
            sched_len[g] = schedule::period(&w)?;
        }
        let conf_off = STATE_OFF + peers * size_of::<PeerState>();
        let s0 = conf_off + peers * size_of::<PeerConf>();
        let s1 = s0 + sched_len[0] * 4;
        let size = round_up(s1 + sched_len[1] * 4, ALIGN);
        Ok(Plan {
            peers,
            primaries,
            conf_off,
            sched_off: [s0, s1],
            sched_len,
            size,
        })
    }
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

        let header = Header {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            policy: spec.policy as u32,
            size: plan.size as u64,
            digest: spec.digest(),
            peers: plan.peers as u32,
            primaries: plan.primaries as u32,
            state_off: STATE_OFF as u64,
            conf_off: plan.conf_off as u64,
            sched_off: [plan.sched_off[0] as u64, plan.sched_off[1] as u64],
            sched_len: [plan.sched_len[0] as u32, plan.sched_len[1] as u32],
        };
        // SAFETY: `mem` is 64-byte aligned and at least `plan.size` bytes;
        // every section below lies inside it at an offset aligned for its
        // type (Plan puts 64-byte records first, then 32-byte, then u32),
        // and we hold the only (mutable) reference to it. Zeroed atomics
        // are valid atomics.
        unsafe {
            base.cast::<Header>().write(header);
            let conf = base.add(plan.conf_off).cast::<PeerConf>();
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
            for (g, range) in [
                (PRIMARY, 0..plan.primaries),
                (BACKUP, plan.primaries..plan.peers),
            ] {
                let w: Vec<u32> = spec.peers[range.clone()]
                    .iter()
                    .map(|p| if p.down { 0 } else { p.weight })
                    .collect();
                let out = core::slice::from_raw_parts_mut(
                    base.add(plan.sched_off[g]).cast::<u32>(),
                    plan.sched_len[g],
                );
                schedule::build(&w, out)?;
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
        let matches = h.magic == MAGIC
            && h.version == LAYOUT_VERSION
            && h.policy == spec.policy as u32
            && h.size == plan.size as u64
            && h.digest == spec.digest()
            && h.peers as usize == plan.peers
            && h.primaries as usize == plan.primaries
            && h.state_off == STATE_OFF as u64
            && h.conf_off == plan.conf_off as u64
            && h.sched_off == [plan.sched_off[0] as u64, plan.sched_off[1] as u64]
            && h.sched_len == [plan.sched_len[0] as u32, plan.sched_len[1] as u32];
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
        Policy::from_u32(self.header().policy).unwrap_or(Policy::RoundRobin)
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
        // SAFETY: two cursors follow the header (layout contract); g is
        // 0 or 1 (callers pass the PRIMARY/BACKUP constants).
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(CURSORS_OFF)
                .cast::<Cursor>()
                .add(g & 1)
        }
    }

    /// Hot counters of every peer.
    #[inline]
    pub fn states(&self) -> &'a [PeerState] {
        // SAFETY: `peers` states at STATE_OFF (layout contract).
        unsafe {
            core::slice::from_raw_parts(
                self.base.as_ptr().add(STATE_OFF).cast::<PeerState>(),
                self.peers(),
            )
        }
    }

    /// Parameters of every peer.
    #[inline]
    pub fn confs(&self) -> &'a [PeerConf] {
        let h = self.header();
        // SAFETY: `peers` confs at conf_off (layout contract), immutable.
        unsafe {
            core::slice::from_raw_parts(
                self.base
                    .as_ptr()
                    .add(h.conf_off as usize)
                    .cast::<PeerConf>(),
                self.peers(),
            )
        }
    }

    /// Smooth WRR schedule of group `g`: table-wide peer indices.
    #[inline]
    pub fn schedule(&self, g: usize) -> &'a [u32] {
        let h = self.header();
        let g = g & 1;
        // SAFETY: sched_len[g] u32s at sched_off[g] (layout contract),
        // immutable.
        unsafe {
            core::slice::from_raw_parts(
                self.base
                    .as_ptr()
                    .add(h.sched_off[g] as usize)
                    .cast::<u32>(),
                h.sched_len[g] as usize,
            )
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
