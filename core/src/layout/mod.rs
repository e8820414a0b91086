//! The ground floor: the shared-memory layout of one upstream's zone (a
//! root record, per-peer state, table generations) and its read side
//!
//! Records, offsets, accessors and pins, importing nothing above: the
//! policies and health read through them, the writers ([`crate::write`])
//! build and change what they describe.
//!
//! # Layout
//!
//! One contiguous region (the zone's allocation), 64-byte aligned, offsets
//! in bytes from its start; records refer to each other by index or offset,
//! never by pointer, so the region is valid at whatever address each
//! process maps it.
//!
//! ```text
//!  zone ──┬─ Root ............ magic, version, digest, counts, offsets (written once)
//!         ├─ Sync line ....... current generation, builder lease, next number
//!         ├─ Total line ...... in-flight of all primaries (bounded-load hashing)
//!         ├─ Slot × GENS ..... generation descriptors: offset, length, number, refs
//!         ├─ PeerState × n ... hot counters, limits, admin flags: one line each,
//!         │                    shared by every generation
//!         ├─ PeerCold × n .... identity, configured weight, weight override, id,
//!         │                    slot status, epoch and origin (API or not)
//!         ├─ names ........... identity and server strings of every peer
//!         │                    (packed; in a dynamic zone a fixed area per slot)
//!         ├─ ledger .......... LEDGER_SLOTS × (owner line, u32 × n in flight,
//!         │                    u32 × GENS generation references, u32 total
//!         │                    in flight; see [`flight`])
//!         ├─ statistics ...... PeerEvents × n (transitions, reset baseline),
//!         │                    StatsRow × n baselines, then (LEDGER_SLOTS + 1)
//!         │                    × StatsRow × n: one row block per worker slot
//!         │                    and a shared one (see [`stats`])
//!         ├─ health .......... HealthLine (panic, ejected count, epoch), then
//!         │                    HealthRow × n: check schedule and results,
//!         │                    slow start, outlier counters (see [`health`])
//!         ├─ least_conn tree . only for `least_conn` above 32 peers: per
//!         │                    group 2·cap node words (see
//!         │                    [`tree`])
//!         ├─ request queue ... only with `ha_queue`: header, queue line,
//!         │                    a line per ledger slot, wait rows, the
//!         │                    ring of tickets (see [`queue`])
//!         └─ arena ........... generations, each: GenHeader, 2 cursors,
//!                              PeerConf × members, member slots (unless
//!                              dense), alias, ring, Maglev, chains, two
//!                              schedules
//! ```
//!
//! `n` is the number of peer *slots*: the configured peers for a static
//! upstream, a larger capacity for one whose membership changes at run
//! time ([`Zone::init_with`], [`crate::write::membership`]). Every peer index is a slot.
//!
//! Per-peer state (in flight, failure window, latency, admin state) lives
//! once per zone and is shared by every generation: a generation is only
//! the frozen selection structures built from the weights in force. A
//! weight change builds a new generation in a free part of the arena and
//! publishes it with one atomic store (see [`crate::write::generation`]); `down` and
//! `drain` are atomic flags read at pick time and need no rebuild.
//!
//! Everything but the atomics and the arena is written once, by
//! [`Zone::init`], before any other process can see the region (nginx
//! initialises zones in the master before forking workers). A generation's
//! bytes are written once, by whoever builds it, before it is published,
//! and only read afterwards.
//!
//! A zone is adopted across `nginx -s reload` by [`Zone::attach`] when the
//! magic, the layout version, the size and the configuration digest all
//! match; otherwise the caller builds a fresh one and carries each peer's
//! state over by identity ([`Zone::carry_from`]).

pub mod flight;
pub mod health;
pub mod ledger;
pub mod pin;
pub mod queue;
pub mod stats;
pub mod tree;

pub use flight::Flight;

use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::Ordering::{Acquire, Relaxed};
use core::sync::atomic::{AtomicU32, AtomicU64};

use crate::algo::alias::Column;
use crate::algo::ketama::Point;
use crate::spec::{HealthSpec, Policy};

/// `b"HABZONE\0"` as a little-endian integer.
pub const MAGIC: u64 = u64::from_le_bytes(*b"HABZONE\0");

/// `b"HABGEN\0\0"`: the first word of every generation.
pub const GEN_MAGIC: u64 = u64::from_le_bytes(*b"HABGEN\0\0");

/// Bumped on every incompatible change of this layout (11: the root's
/// [`Root::api_max`] and the cold record's [`PeerCold::origin`], which was
/// padding; 12: the root's latency bucket bounds; 13: the health row's
/// `last_reason` and `last_duration_ms`, which were reserved).
pub const LAYOUT_VERSION: u32 = 13;

/// Alignment the region must have.
pub const ALIGN: usize = 64;

/// Peer group: primaries.
pub const PRIMARY: usize = 0;
/// Peer group: backups.
pub const BACKUP: usize = 1;
/// [`Table::cursor`] index of the zone-wide total in-flight line (kept only
/// for bounded-load hashing).
pub const TOTAL: usize = 2;

/// Generation descriptors per zone: the one serving, the one being built,
/// and room for retiring ones still referenced by requests in flight.
pub const GENS: usize = 8;

/// Slot status ([`PeerCold::status`]): holds no identity; named by no
/// generation.
pub const FREE: u32 = 0;
/// Slot status: a member of the serving membership.
pub const LIVE: u32 = 1;
/// Slot status: left the membership; its requests in flight finish.
pub const RETIRING: u32 = 2;

/// Descriptor status: empty.
pub const DESC_FREE: u32 = 0;
/// Descriptor status: holds a generation (serving, or retired and maybe
/// still referenced).
pub const DESC_LIVE: u32 = 1;

/// Worker slots of the in-flight ledger (see [`ledger`]).
pub const LEDGER_SLOTS: usize = 32;

/// Longest identity a peer slot of a dynamic zone holds (upstream name,
/// `server` string and address, NUL-separated by nginx); a longer one is
/// refused with [`crate::Error::TooLarge`].
pub const SLOT_ID_MAX: usize = 640;

/// Longest `server` string a peer slot of a dynamic zone holds.
pub const SLOT_SERVER_MAX: usize = 256;

/// Bytes of names per slot of a dynamic zone: identity, `server` string
/// and session id ([`crate::spec::MAX_SID`]).
pub const SLOT_NAMES: usize = SLOT_ID_MAX + SLOT_SERVER_MAX + crate::spec::MAX_SID;

/// Root record, at offset 0. Written once at init.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Root {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// [`Policy`] as its ABI number.
    pub policy: u32,
    /// [`Policy::params`].
    pub params: [u32; 4],
    /// Bytes of the whole zone.
    pub size: u64,
    /// [`crate::UpstreamSpec::digest`] of the configuration the zone was built for.
    pub digest: u64,
    /// Number of peer slots: the length of every per-peer array. Equal to
    /// the configured peers for a static upstream; the capacity of a
    /// dynamic one (see [`crate::write::membership`]).
    pub peers: u32,
    /// Number of configured primaries; configured peers
    /// `primaries..configured` are backups.
    pub primaries: u32,
    /// Offset of the [`PeerState`] array.
    pub state_off: u64,
    /// Offset of the [`PeerCold`] array.
    pub cold_off: u64,
    /// Offset and length of the names.
    pub names_off: u64,
    /// Bytes of names.
    pub names_len: u64,
    /// Offset of the per-worker ledger.
    pub ledger_off: u64,
    /// Ledger slots.
    pub ledger_slots: u32,
    /// Bytes per ledger slot (owner line and rows of counters).
    pub ledger_slot_bytes: u32,
    /// Offset and length of the arena holding the generations.
    pub arena_off: u64,
    /// Bytes of arena.
    pub arena_len: u64,
    /// Offset of the statistics section (see [`stats`]).
    pub stats_off: u64,
    /// Bytes of one row block of the statistics (`peers` rows, rounded).
    pub stats_row_bytes: u64,
    /// Offset of the first row block of the statistics (the shared one).
    pub stats_rows_off: u64,
    /// The health directives the zone was built for.
    pub health: HealthSpec,
    /// Offset of the health section (see [`health`]).
    pub health_off: u64,
    /// Offset of the `least_conn` tree section, 0 when there is none
    /// (another policy, or at most [`tree::MIN_PEERS`] peers).
    pub tree_off: u64,
    /// Number of configured peers (slots `0..configured` hold them at
    /// init).
    pub configured: u32,
    /// Bytes of identity area per slot ([`SLOT_NAMES`])
    /// in a dynamic zone; 0 in a static one, whose names are packed.
    pub slot_names: u32,
    /// [`crate::UpstreamSpec::schedule_room`]: schedule entries the arena keeps
    /// room for (0 for a policy without a schedule).
    pub schedule_room: u32,
    /// 1 when the upstream binds sessions ([`crate::UpstreamSpec::sessions`]):
    /// every peer has its session id in the names, every generation an
    /// index of them.
    pub sessions: u32,
    /// Offset of the request queue section (`ha_queue`, a
    /// [`queue::Queue`] of `health.queue` waiters), 0 when there is none.
    pub queue_off: u64,
    /// Servers the API may add at run time (`ha_api_max`): LIVE slots
    /// whose [`PeerCold::origin`] says [`PeerCold::API`] are at most this
    /// many. Part of the capacity (`configured + api_max` slots at least).
    pub api_max: u32,
    /// Zero.
    pub pad: u32,
    /// The latency histograms' bounds (`ha_latency_buckets`; see
    /// [`stats`]).
    pub buckets: crate::spec::Buckets,
}

/// The words that change when a generation is published, on their own line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Sync {
    /// The generation serving new requests: descriptor index in the low 8
    /// bits, its number above. Changed only by the lease holder, with
    /// `SeqCst` (see [`crate::write::generation`] for the pinning protocol).
    pub current: AtomicU64,
    /// Owner (a pid) of the builder lease, 0 when free. Taken by CAS from 0
    /// or from a dead owner; given back by its holder.
    pub builder: AtomicU64,
    /// Number the next published generation gets. Only the lease holder
    /// increments it.
    pub next: AtomicU64,
    /// Bit `s` set once ledger slot `s` was claimed: the statistics rows
    /// readers sum (see [`stats`]).
    pub rows_used: AtomicU64,
    /// Members of the serving generation: stored by the lease holder
    /// before it publishes, so that readers need not read the
    /// generation's bytes (which a pin would have to hold).
    pub members: AtomicU64,
    /// API ids handed to servers new to the running upstream so far (the
    /// lease holder's count): the next one is `configured + ids`, so that
    /// an id is never given twice in a zone's life (NGINX Plus never
    /// reuses one), even when a slot is.
    pub ids: AtomicU64,
}

/// A cache line holding one counter.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Cursor {
    /// Schedule cursors count picks taken (wrapping; only ever
    /// incremented); the total line counts requests in flight.
    pub value: AtomicU64,
}

/// A generation descriptor: where generation `seq` lies in the arena, and
/// the references of workers without a ledger slot.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Slot {
    /// [`DESC_FREE`], [`DESC_LIVE`]. FREE → LIVE by the
    /// lease holder when it builds into the slot; LIVE → FREE by the lease
    /// holder once the slot is not current and holds no reference.
    pub status: AtomicU32,
    /// References held by requests of workers that have no ledger slot.
    pub refs: AtomicU32,
    /// Offset of the generation, from the zone's start.
    pub off: AtomicU64,
    /// Bytes of the generation.
    pub len: AtomicU64,
    /// Number of the generation in the slot.
    pub seq: AtomicU64,
}

/// Per-peer counters that change on every request, a cache line each so
/// workers picking different peers do not contend. Shared by every
/// generation of the zone.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PeerState {
    /// Requests currently sent to this peer by all workers. Incremented when
    /// a pick succeeds (bounded by `max_conns` when set), decremented once by
    /// the matching release; never below zero.
    /// One parity bit per ledger slot rides above the count (see
    /// [`flight`]): read the count with [`Flight::load`].
    pub in_flight: Flight,
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
    /// Failures counted toward `max_fails` (nginx's `fails`). Incremented on
    /// a failed try, reset to zero by a success after a new check window.
    pub fails: AtomicU32,
    /// The weight in force (configured, or the override), as the current
    /// generation was built with it; a copy so that a pick reads one cache
    /// line per peer. Stored by the lease holder before it publishes.
    pub weight: AtomicU32,
    /// `max_conns=`, 0 for unlimited. Written at init, and by the lease
    /// holder when a membership change gives the slot its list's value.
    pub max_conns: AtomicU32,
    /// `max_fails=`, 0 for never. Written as `max_conns`.
    pub max_fails: AtomicU32,
    /// [`PeerState::BACKUP`] | [`PeerState::DOWN`] (configuration, fixed)
    /// | [`PeerState::ADMIN_DOWN`] | [`PeerState::DRAIN`] (set and cleared
    /// at run time by the API, in every worker at once) |
    /// [`PeerState::CHECKING`] | [`PeerState::UNHEALTHY`] (active checks)
    /// | [`PeerState::EJECTED`] (outlier ejection) | [`PeerState::SLOW`]
    /// (slow start) | [`PeerState::RETIRED`] (slot not in the serving
    /// membership: RETIRING or FREE). Each bit is set and cleared by `fetch_or` /
    /// `fetch_and`, whose returned value tells the one caller that made a
    /// transition.
    pub flags: AtomicU32,
    /// `fail_timeout=`, ms. Written as `max_conns`.
    /// Kept in 32 bits (49 days) so that the line holds the 64-bit
    /// in-flight word; [`crate::spec::UpstreamSpec::validate`] refuses more.
    pub fail_timeout_ms: AtomicU32,
}

impl PeerState {
    /// The peer is a backup server.
    pub const BACKUP: u32 = 1;
    /// The peer is marked `down` in the configuration.
    pub const DOWN: u32 = 2;
    /// Set down through the API: no new requests.
    pub const ADMIN_DOWN: u32 = 4;
    /// Draining: no new requests, those in flight finish.
    pub const DRAIN: u32 = 8;
    /// The flags the API may change.
    pub const ADMIN: u32 = Self::ADMIN_DOWN | Self::DRAIN;
    /// `mandatory` checks: no traffic until the first check passes.
    pub const CHECKING: u32 = 16;
    /// Failed `fails` consecutive checks: no traffic until `passes` pass.
    pub const UNHEALTHY: u32 = 32;
    /// Ejected as an outlier from live traffic, until its ejection ends.
    pub const EJECTED: u32 = 64;
    /// Slow start: the weight ramps up (see [`crate::health::slow_start`]).
    pub const SLOW: u32 = 128;
    /// The bits that keep a peer out unless the upstream is in panic.
    pub const HEALTH: u32 = Self::CHECKING | Self::UNHEALTHY | Self::EJECTED;
    /// The slot is not in the serving membership (RETIRING: its requests
    /// in flight finish; or FREE): no new requests, as with `DRAIN`, from
    /// any generation. Set and cleared by the lease holder only.
    pub const RETIRED: u32 = 256;
    /// The bits that keep a peer out in any case.
    pub const OUT: u32 = Self::DOWN | Self::ADMIN_DOWN | Self::DRAIN | Self::RETIRED;

    /// Whether the peer takes no new request (configured `down`, set down,
    /// or draining).
    #[inline]
    pub fn down(&self) -> bool {
        self.flags.load(Relaxed) & Self::OUT != 0
    }

    /// The weight in force.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// `max_conns=`, 0 for unlimited.
    #[inline]
    pub fn max_conns(&self) -> u32 {
        self.max_conns.load(Relaxed)
    }

    /// `max_fails=`, 0 for never.
    #[inline]
    pub fn max_fails(&self) -> u32 {
        self.max_fails.load(Relaxed)
    }

    /// `fail_timeout=`, ms.
    #[inline]
    pub fn fail_timeout_ms(&self) -> u64 {
        u64::from(self.fail_timeout_ms.load(Relaxed))
    }
}

/// Per-peer data a pick never reads: identity, configured weight, the
/// API's weight override, and the slot's life cycle. Written at init; in
/// a dynamic zone the lease holder rewrites identity, weight and position
/// when a membership change gives a FREE slot to a new identity (see
/// [`crate::write::membership`]).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PeerCold {
    /// FNV-1a of the identity, to find peers quickly.
    pub id_hash: AtomicU64,
    /// Identity bytes (upstream, server, address): offset in the names
    /// section (fixed at init).
    pub id_off: u32,
    /// Length of the identity.
    pub id_len: AtomicU32,
    /// The `server` directive's address as written: offset in names
    /// (fixed at init).
    pub server_off: u32,
    /// Length of the server string.
    pub server_len: AtomicU32,
    /// `weight=` as configured (or as the membership list gave it).
    pub conf_weight: AtomicU32,
    /// Weight set through the API, 0 for none. Written by the lease holder
    /// before it builds the generation that uses it.
    pub weight_override: AtomicU32,
    /// The server's position in its upstream, in configuration order
    /// (backups included): the API's `id`. For a slot a membership change
    /// filled: the configured count plus the slot.
    pub position: AtomicU32,
    /// [`FREE`] → [`LIVE`] → [`RETIRING`]
    /// → `LIVE` again (the identity came back) or `FREE` (reused). Written
    /// by the lease holder only (`Release`, after the fields it covers).
    pub status: AtomicU32,
    /// Bumped (`Release`) each time the slot is given to a new identity:
    /// whoever remembers a slot by `(slot, epoch)` can tell it was reused.
    pub epoch: AtomicU32,
    /// Length of the session id (0 when the upstream binds no sessions);
    /// written with the identity.
    pub sid_len: AtomicU32,
    /// [`crate::spec::sid_hash`] of the session id, 0 for none; written
    /// with the identity.
    pub sid_hash: AtomicU64,
    /// The session id's offset in names (fixed at init).
    pub sid_off: u32,
    /// Where the slot's server came from: [`PeerCold::API`] when the API
    /// added it ([`Zone::add_server`]), 0 for
    /// the configuration and for resolved servers. Written by the lease
    /// holder with the identity, before the slot turns LIVE (`Relaxed`:
    /// the status store's `Release` publishes it); kept while the slot is
    /// LIVE or RETIRING, rewritten when the slot is given to another
    /// server.
    pub origin: AtomicU32,
}

impl PeerCold {
    /// [`PeerCold::origin`]: added through the API (NGINX Plus's POST).
    pub const API: u32 = 1;
}

/// Generation header, at the start of every generation. Written once by
/// its builder before publication.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct GenHeader {
    /// [`GEN_MAGIC`].
    pub magic: u64,
    /// The generation's number.
    pub seq: u64,
    /// [`Policy`] as its ABI number.
    pub policy: u32,
    /// Number of peers (as the zone's).
    pub peers: u32,
    /// [`Policy::params`].
    pub params: [u32; 4],
    /// Number of primaries.
    pub primaries: u32,
    /// Primaries not marked `down` in the configuration.
    pub live_primaries: u32,
    /// Sum of the primaries' weights, `down` ones included (nginx's
    /// `total_weight`, which plain hashing divides by).
    pub total_weight: u64,
    /// Offsets, from the generation's start, of the [`PeerConf`] array.
    pub conf_off: u64,
    /// Offset of the alias table (primaries).
    pub alias_off: u64,
    /// Columns of the alias table (0 unless a policy draws).
    pub alias_len: u32,
    /// Points on the ketama ring (after removing duplicate hashes).
    pub ring_len: u32,
    /// Offset of the ketama ring.
    pub ring_off: u64,
    /// Offset of the Maglev table.
    pub maglev_off: u64,
    /// Entries of the Maglev table.
    pub maglev_len: u32,
    /// Entries of the chain section (0 unless hash).
    pub chain_len: u32,
    /// Offset of the same-server chains.
    pub chain_off: u64,
    /// Offsets of the two schedules.
    pub sched_off: [u64; 2],
    /// Lengths (entries) of the two schedules.
    pub sched_len: [u32; 2],
    /// Bytes of the generation.
    pub size: u64,
    /// Points after the ring in its section: those the collapse of equal
    /// hashes dropped, kept so that the next generation's ring can be
    /// rebuilt incrementally (see [`crate::algo::ketama::rebuild`]).
    pub shadow_len: u32,
    /// The weight every primary has when all have the same one, else 0:
    /// plain hashing then finds its peer by one division instead of
    /// nginx's walk over the weights (same peer).
    pub uniform_weight: u32,
    /// Offset of the member column (slot of each generation index `k`,
    /// primaries first), 0 when the generation is dense: index `k` is
    /// slot `k` and every slot is a member (every static upstream).
    pub members_off: u64,
    /// Size of the slot space the slot-indexed sections (alias, chains,
    /// Maglev entries, ring points) are built over: the zone's slots.
    pub slots: u32,
    /// Zero.
    pub pad: u32,
    /// The caller's `(list id, config)` the membership was built from
    /// ([`Zone::apply_membership`]); zero for configuration builds.
    pub source: [u64; 2],
    /// Offset of the session index (entries of two `u64`: a member's
    /// session id hash, its slot + 1; zeros for empty; see
    /// [`crate::policy::sticky`]), 0 when the upstream binds no sessions.
    pub sids_off: u64,
    /// Entries of the session index (a power of two, or 0).
    pub sids_len: u32,
    /// Zero.
    pub pad2: u32,
    /// Zero.
    pub reserved: [u64; 5],
}

/// Per-peer parameters as a generation was built with them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PeerConf {
    /// The weight in force for this generation.
    pub weight: u32,
    /// `max_conns=`, 0 for unlimited.
    pub max_conns: u32,
    /// `max_fails=`, 0 for never.
    pub max_fails: u32,
    /// [`PeerConf::BACKUP`] | [`PeerConf::DOWN`].
    pub flags: u32,
    /// `fail_timeout=`, ms.
    pub fail_timeout_ms: u64,
    /// FNV-1a of the peer's identity.
    pub id_hash: u64,
}

impl PeerConf {
    /// The peer is a backup server.
    pub const BACKUP: u32 = PeerState::BACKUP;
    /// The peer is marked `down` in the configuration.
    pub const DOWN: u32 = PeerState::DOWN;

    /// Whether `down` was configured.
    #[inline]
    pub fn down(&self) -> bool {
        self.flags & Self::DOWN != 0
    }
}

const _: () = {
    assert!(size_of::<Root>() == 320);
    assert!(size_of::<Sync>() == 64);
    assert!(size_of::<Cursor>() == 64);
    assert!(size_of::<Slot>() == 64);
    assert!(size_of::<PeerState>() == 64 && align_of::<PeerState>() == 64);
    assert!(size_of::<PeerCold>() == 64);
    assert!(size_of::<GenHeader>() == 256);
    assert!(size_of::<PeerConf>() == 32);
    assert!(size_of::<Column>() == 8 && size_of::<Point>() == 8);
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
};

pub(crate) const SYNC_OFF: usize = size_of::<Root>();
pub(crate) const TOTAL_OFF: usize = SYNC_OFF + size_of::<Sync>();
pub(crate) const SLOTS_OFF: usize = TOTAL_OFF + size_of::<Cursor>();
pub(crate) const STATE_OFF: usize = SLOTS_OFF + GENS * size_of::<Slot>();
/// Cursors of a generation follow its header.
pub(crate) const GEN_CURSORS_OFF: usize = size_of::<GenHeader>();

pub(crate) fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Smooth WRR schedule entries (total weight / common divisor of a
/// group) that a weight change through the API may always reach, in
/// upstreams whose policy walks a schedule (`round_robin`, `least_conn`,
/// `hash`) and whose configuration does not say otherwise
/// (`schedule_room=`, [`crate::UpstreamSpec::schedule_room`]): the arena keeps
/// room for three generations with schedules this long (serving, being
/// built, retiring), e.g. 4 servers of weight 1 with one of them set to
/// 200,000. Past it, a change is refused (507) unless the configuration's
/// own generations leave the room.
pub const SCHEDULE_ROOM: usize = crate::spec::DEFAULT_SCHEDULE_ROOM as usize;

/// A view of one upstream's zone in shared memory.
///
/// Cheap to copy: a pointer to the region. All methods are safe: the
/// constructors checked the layout; the parts that are not atomics are
/// written only before publication (root at init, a generation by its
/// builder before it is published).
#[derive(Debug, Clone, Copy)]
pub struct Zone<'a> {
    base: NonNull<u8>,
    _region: PhantomData<&'a ()>,
}

// SAFETY: the region is only mutated through atomics once published; the
// immutable parts are plain data. Sharing the view between threads is what
// workers do between processes.
unsafe impl Send for Zone<'_> {}
// SAFETY: as above.
unsafe impl core::marker::Sync for Zone<'_> {}

impl<'a> Zone<'a> {
    /// A view of the zone at `base`.
    ///
    /// # Safety
    ///
    /// `base` must point to a zone built by [`Zone::init`] (or accepted by
    /// [`Zone::attach`]) whose memory stays mapped for `'a`.
    #[inline]
    pub unsafe fn from_ptr(base: *mut u8) -> Zone<'a> {
        Zone {
            // SAFETY: the caller guarantees a valid, hence non-null, zone.
            base: unsafe { NonNull::new_unchecked(base) },
            _region: PhantomData,
        }
    }

    /// Start of the region, for handing the zone to C.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The root record.
    #[inline]
    pub fn root(&self) -> &'a Root {
        // SAFETY: a valid zone starts with its root (constructor contract);
        // it is never written after init.
        unsafe { &*self.base.as_ptr().cast::<Root>() }
    }

    /// The publication words (current generation, builder lease).
    #[inline]
    pub fn sync(&self) -> &'a Sync {
        // SAFETY: the sync line follows the root (layout contract); atomics.
        unsafe { &*self.base.as_ptr().add(SYNC_OFF).cast::<Sync>() }
    }

    /// The zone-wide total in-flight line.
    #[inline]
    pub(crate) fn total(&self) -> &'a Cursor {
        // SAFETY: the total line follows the sync line (layout contract).
        unsafe { &*self.base.as_ptr().add(TOTAL_OFF).cast::<Cursor>() }
    }

    /// Generation descriptor `d` (reduced into range).
    #[inline]
    pub(crate) fn slot(&self, d: usize) -> &'a Slot {
        // SAFETY: GENS descriptors follow the total line (layout contract);
        // the index is reduced into range.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(SLOTS_OFF)
                .cast::<Slot>()
                .add(d % GENS)
        }
    }

    /// The policy the zone was built for.
    #[inline]
    pub fn policy(&self) -> Policy {
        let r = self.root();
        Policy::from_parts(r.policy, r.params).unwrap_or(Policy::RoundRobin)
    }

    /// Schedule entries the zone keeps room for (`schedule_room=`, or its
    /// default; 0 for a policy without a schedule): weight changes whose
    /// schedule is no longer are always accepted.
    pub fn schedule_room(&self) -> usize {
        self.root().schedule_room as usize
    }

    /// Number of peer slots: the length of every per-peer array, and the
    /// range of every peer index ([`crate::request::Pick::peer`], the
    /// attempt's tried set). For a static upstream, its peers, primaries
    /// and backups; for a dynamic one, its capacity (see [`crate::write::membership`]).
    #[inline]
    pub fn peers(&self) -> usize {
        self.root().peers as usize
    }

    /// Number of peer slots (as [`Zone::peers`]).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.peers()
    }

    /// Number of configured primaries.
    #[inline]
    pub fn primaries(&self) -> usize {
        self.root().primaries as usize
    }

    /// Number of configured peers.
    #[inline]
    pub fn configured(&self) -> usize {
        self.root().configured as usize
    }

    /// Whether the zone has slots beyond its configured peers, each with
    /// room for an identity ([`Zone::init_with`]).
    #[inline]
    pub fn dynamic(&self) -> bool {
        self.root().slot_names != 0
    }

    /// Hot counters of every peer.
    #[inline]
    pub fn states(&self) -> &'a [PeerState] {
        // SAFETY: `peers` states at STATE_OFF (layout contract).
        unsafe { self.section(STATE_OFF as u64, self.peers()) }
    }

    /// Cold data of every peer.
    #[inline]
    pub fn colds(&self) -> &'a [PeerCold] {
        // SAFETY: `peers` cold records at cold_off (layout contract).
        unsafe { self.section(self.root().cold_off, self.peers()) }
    }

    /// Identity bytes of peer `i` (empty past the end, and for a FREE
    /// slot).
    ///
    /// In a dynamic zone the bytes of a slot change when the slot is
    /// given to another identity, which only the lease holder does, and
    /// only to a slot no generation names: hold the lease, or a pin on a
    /// generation naming the slot, while using them; others compare
    /// [`Zone::slot_epoch`] before and after (see [`crate::write::membership`]).
    pub fn identity(&self, i: usize) -> &'a [u8] {
        self.colds().get(i).map_or(&[], |c| {
            self.name_bytes(c.id_off, c.id_len.load(Acquire), SLOT_ID_MAX)
        })
    }

    /// The session id of peer `i` (empty past the end, and when the
    /// upstream binds no sessions); as [`Zone::identity`].
    pub fn sid(&self, i: usize) -> &'a [u8] {
        self.colds().get(i).map_or(&[], |c| {
            self.name_bytes(c.sid_off, c.sid_len.load(Acquire), crate::spec::MAX_SID)
        })
    }

    /// Whether the upstream binds sessions (`ha_sticky`).
    #[inline]
    pub fn sessions(&self) -> bool {
        self.root().sessions != 0
    }

    /// The `server` string of peer `i` (empty past the end); as
    /// [`Zone::identity`].
    pub fn server(&self, i: usize) -> &'a [u8] {
        self.colds().get(i).map_or(&[], |c| {
            self.name_bytes(c.server_off, c.server_len.load(Acquire), SLOT_SERVER_MAX)
        })
    }

    fn name_bytes(&self, off: u32, len: u32, max: usize) -> &'a [u8] {
        let r = self.root();
        if r.slot_names != 0 && len as usize > max {
            return &[];
        }
        let (off, len) = (off as u64, len as u64);
        if off + len > r.names_len {
            return &[];
        }
        // SAFETY: inside the names section (checked), written at init.
        unsafe { self.section(r.names_off + off, len as usize) }
    }

    /// The `len` records of type `T` at byte offset `off` of the zone.
    ///
    /// # Safety
    ///
    /// The layout must place `len` initialised `T`s at `off`, aligned for
    /// `T`, not written during `'a` except through atomics.
    #[inline]
    pub(crate) unsafe fn section<T>(&self, off: u64, len: usize) -> &'a [T] {
        // SAFETY: forwarded contract; the region outlives 'a.
        unsafe {
            core::slice::from_raw_parts(self.base.as_ptr().add(off as usize).cast::<T>(), len)
        }
    }

    /// Owner word and counter rows of ledger slot `s` (`None` past the
    /// end): in flight per peer ([`flight::Entry`]), then references per
    /// generation slot, then the zone-wide total's entry
    /// (`Zone::total_entry`).
    #[inline]
    pub fn ledger_slot(&self, s: usize) -> Option<(&'a AtomicU64, &'a [AtomicU32])> {
        let r = self.root();
        if s >= r.ledger_slots as usize {
            return None;
        }
        let at = r.ledger_off as usize + s * r.ledger_slot_bytes as usize;
        // SAFETY: `ledger_slots` slots of `ledger_slot_bytes` bytes at
        // ledger_off, each an owner word on its own line followed by one
        // u32 entry per peer, one per generation slot and one for the
        // zone-wide total (layout contract); zero-initialised atomics.
        unsafe {
            let base = self.base.as_ptr().add(at);
            Some((
                &*base.cast::<AtomicU64>(),
                core::slice::from_raw_parts(
                    base.add(ALIGN).cast::<AtomicU32>(),
                    self.peers() + GENS + 1,
                ),
            ))
        }
    }

    /// Index of the zone-wide total's entry in a ledger row.
    #[inline]
    pub(crate) fn total_entry(&self) -> usize {
        self.peers() + GENS
    }

    /// The generation serving new requests, unpinned: for the lease
    /// holder (under the lease the serving generation is not replaced, and
    /// a generation's bytes are rewritten only after it was replaced and
    /// its pins are gone) and for the zone's own single-process tests.
    pub(crate) fn serving(&self) -> Table<'a> {
        let d = self.current_slot().unwrap_or(0);
        self.table(d)
    }

    /// The generation serving new requests, unpinned. Readers that may
    /// run while another process publishes take [`Zone::read`] (a pin
    /// guard) instead; a request pins its generation with [`Zone::pin`].
    ///
    /// # Safety
    ///
    /// While the returned table is used, no other thread or process may
    /// publish twice (a second publication may reuse the generation's
    /// bytes): the caller holds the builder lease, or knows that nothing
    /// publishes meanwhile (a test driving the zone alone).
    pub unsafe fn current(&self) -> Table<'a> {
        self.serving()
    }

    /// The generation in descriptor `d`.
    #[inline]
    pub(crate) fn table(&self, d: usize) -> Table<'a> {
        let off = self.slot(d).off.load(Relaxed) as usize;
        // SAFETY: a LIVE descriptor's offset lies inside the arena and
        // holds a built generation (generation contract); callers only ask
        // for the current descriptor or one they hold a reference on.
        let gen = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(off)) };
        Table { zone: *self, gen }
    }
}

/// The slots of a generation, or of one of its groups, in generation
/// order.
#[derive(Debug, Clone, Copy)]
pub enum Members<'a> {
    /// Slots `start..end` (a dense generation: every static upstream).
    Dense(usize, usize),
    /// These slots.
    List(&'a [u32]),
}

impl<'a> Members<'a> {
    /// Number of slots.
    #[inline]
    pub fn len(&self) -> usize {
        match *self {
            Members::Dense(a, b) => b - a,
            Members::List(l) => l.len(),
        }
    }

    /// Whether there is none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k`-th slot (`k < len()`).
    #[inline]
    pub fn get(&self, k: usize) -> usize {
        match *self {
            Members::Dense(a, _) => a + k,
            Members::List(l) => l[k] as usize,
        }
    }

    /// The slots in order.
    #[inline]
    pub fn iter(&self) -> MembersIter<'a> {
        match *self {
            Members::Dense(a, b) => MembersIter::Dense(a..b),
            Members::List(l) => MembersIter::List(l.iter()),
        }
    }
}

/// Iterator over [`Members`].
#[derive(Debug, Clone)]
pub enum MembersIter<'a> {
    /// Over a range.
    Dense(core::ops::Range<usize>),
    /// Over a column.
    List(core::slice::Iter<'a, u32>),
}

impl Iterator for MembersIter<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        match self {
            MembersIter::Dense(r) => r.next(),
            MembersIter::List(l) => l.next().map(|&s| s as usize),
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            MembersIter::Dense(r) => r.size_hint(),
            MembersIter::List(l) => l.size_hint(),
        }
    }
}

impl<'a> IntoIterator for Members<'a> {
    type Item = usize;
    type IntoIter = MembersIter<'a>;

    #[inline]
    fn into_iter(self) -> MembersIter<'a> {
        self.iter()
    }
}

/// A view of one generation of a zone: what a pick works on.
///
/// Per-peer state comes from the zone (shared by every generation), the
/// frozen selection structures from the generation.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    zone: Zone<'a>,
    gen: NonNull<u8>,
}

// SAFETY: as for `Zone`: only atomics are written once published.
unsafe impl Send for Table<'_> {}
// SAFETY: as above.
unsafe impl core::marker::Sync for Table<'_> {}

impl<'a> Table<'a> {
    /// The zone this generation belongs to.
    #[inline]
    pub fn zone(&self) -> Zone<'a> {
        self.zone
    }

    /// The generation's header.
    #[inline]
    pub fn header(&self) -> &'a GenHeader {
        // SAFETY: a generation starts with its header (generation
        // contract); never written after publication.
        unsafe { &*self.gen.as_ptr().cast::<GenHeader>() }
    }

    /// The generation's number.
    pub fn seq(&self) -> u64 {
        self.header().seq
    }

    /// The policy the table was built for.
    #[inline]
    pub fn policy(&self) -> Policy {
        let h = self.header();
        Policy::from_parts(h.policy, h.params).unwrap_or(Policy::RoundRobin)
    }

    /// Number of member peers, primaries and backups.
    #[inline]
    pub fn peers(&self) -> usize {
        self.header().peers as usize
    }

    /// Number of member primaries.
    #[inline]
    pub fn primaries(&self) -> usize {
        self.header().primaries as usize
    }

    /// Slot of every member, primaries first (generation index `k` →
    /// slot).
    #[inline]
    pub fn members(&self) -> Members<'a> {
        let h = self.header();
        if h.members_off == 0 {
            return Members::Dense(0, h.peers as usize);
        }
        // SAFETY: `peers` u32s at members_off (layout contract).
        Members::List(unsafe { self.section(h.members_off, h.peers as usize) })
    }

    /// Slots of group `g` ([`PRIMARY`] or [`BACKUP`]).
    #[inline]
    pub fn group(&self, g: usize) -> Members<'a> {
        let (p, n) = (self.primaries(), self.peers());
        match self.members() {
            Members::Dense(..) if g == PRIMARY => Members::Dense(0, p),
            Members::Dense(..) => Members::Dense(p, n),
            Members::List(l) if g == PRIMARY => Members::List(&l[..p.min(l.len())]),
            Members::List(l) => Members::List(&l[p.min(l.len())..]),
        }
    }

    /// Whether slot `i` is a member of this generation (O(members) for a
    /// dynamic zone's generations: for checks, not picks).
    pub fn names_slot(&self, i: usize) -> bool {
        self.members().iter().any(|s| s == i)
    }

    /// Cursor of group `g` ([`PRIMARY`], [`BACKUP`]: this generation's
    /// schedule cursors), or the zone's [`TOTAL`] line.
    #[inline]
    pub fn cursor(&self, g: usize) -> &'a Cursor {
        if g == TOTAL {
            return self.zone.total();
        }
        // SAFETY: two cursors follow the generation header (layout
        // contract); the index is reduced into range.
        unsafe {
            &*self
                .gen
                .as_ptr()
                .add(GEN_CURSORS_OFF)
                .cast::<Cursor>()
                .add(g & 1)
        }
    }

    /// The `len` records of type `T` at byte offset `off` of the generation.
    ///
    /// # Safety
    ///
    /// The generation must place `len` initialised `T`s at `off` (every
    /// caller passes a section's offset and length from the header, which
    /// the builder wrote), aligned for `T`.
    #[inline]
    pub(crate) unsafe fn section<T>(&self, off: u64, len: usize) -> &'a [T] {
        // SAFETY: forwarded contract; the region outlives 'a and these
        // sections are not written after publication.
        unsafe { core::slice::from_raw_parts(self.gen.as_ptr().add(off as usize).cast::<T>(), len) }
    }

    /// Alias table of the primaries (empty unless p2c, ewma or random).
    #[inline]
    pub fn alias(&self) -> &'a [Column] {
        let h = self.header();
        // SAFETY: alias_len columns at alias_off (layout contract).
        unsafe { self.section(h.alias_off, h.alias_len as usize) }
    }

    /// The ketama ring (empty unless hash consistent).
    #[inline]
    pub fn ring(&self) -> &'a [Point] {
        let h = self.header();
        // SAFETY: ring_len points at ring_off (layout contract).
        unsafe { self.section(h.ring_off, h.ring_len as usize) }
    }

    /// The points the ring's collapse dropped (empty unless hash
    /// consistent), right after the ring.
    #[inline]
    pub fn ring_shadow(&self) -> &'a [Point] {
        let h = self.header();
        // SAFETY: shadow_len points follow the ring_len ones at ring_off,
        // inside the ring section (layout contract: both together are at
        // most its capacity).
        unsafe {
            self.section(
                h.ring_off + u64::from(h.ring_len) * size_of::<Point>() as u64,
                h.shadow_len as usize,
            )
        }
    }

    /// The Maglev table (empty unless hash maglev).
    #[inline]
    pub fn maglev(&self) -> &'a [u32] {
        let h = self.header();
        // SAFETY: maglev_len u32s at maglev_off (layout contract).
        unsafe { self.section(h.maglev_off, h.maglev_len as usize) }
    }

    /// Next slot with the same server string, per slot (empty unless hash).
    #[inline]
    pub fn chain(&self) -> &'a [u32] {
        let h = self.header();
        // SAFETY: chain_len u32s at chain_off (layout contract).
        unsafe { self.section(h.chain_off, h.chain_len as usize) }
    }

    /// The session index (empty unless the upstream binds sessions; see
    /// [`crate::policy::sticky`]).
    #[inline]
    pub fn sids(&self) -> &'a [[u64; 2]] {
        let h = self.header();
        // SAFETY: sids_len pairs of u64 at sids_off, 8-byte aligned
        // (layout contract).
        unsafe { self.section(h.sids_off, h.sids_len as usize) }
    }

    /// Hot counters of every peer (the zone's).
    #[inline]
    pub fn states(&self) -> &'a [PeerState] {
        self.zone.states()
    }

    /// Parameters of every member, in generation order (index `k`, the
    /// slot is `members().get(k)`), as this generation was built.
    #[inline]
    pub fn confs(&self) -> &'a [PeerConf] {
        // SAFETY: `peers` confs at conf_off (layout contract).
        unsafe { self.section(self.header().conf_off, self.peers()) }
    }

    /// Smooth WRR schedule of group `g`: slots.
    #[inline]
    pub fn schedule(&self, g: usize) -> &'a [u32] {
        let h = self.header();
        let g = g & 1;
        // SAFETY: sched_len[g] u32s at sched_off[g] (layout contract).
        unsafe { self.section(h.sched_off[g], h.sched_len[g] as usize) }
    }

    /// Owner word and counter rows of ledger slot `s` (the zone's).
    #[inline]
    pub fn ledger_slot(&self, s: usize) -> Option<(&'a AtomicU64, &'a [AtomicU32])> {
        self.zone.ledger_slot(s)
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
    use crate::error::Error;
    use crate::spec::{HashMode, PeerSpec, UpstreamSpec};
    use crate::testing::{OwnedTable, Region};
    use crate::write::zone_size;

    #[test]
    fn attach_refuses_generations_out_of_bounds() {
        let peers = [PeerSpec::new(b"a").weight(5), PeerSpec::new(b"b")];
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let size = zone_size(&spec).unwrap();
        let region = Region::new(size);
        // SAFETY: the region is ours, `size` bytes, alive for the test.
        let z = unsafe { Zone::init(&spec, region.as_ptr(), size) }.unwrap();
        let d = z.current_slot().unwrap();
        let attach = || {
            // SAFETY: as above.
            unsafe { Zone::attach(&spec, region.as_ptr(), size) }.map(|_| ())
        };
        assert_eq!(attach(), Ok(()));
        let slot = z.slot(d);
        let (off, len) = (slot.off.load(Relaxed), slot.len.load(Relaxed));
        // A descriptor past the arena, misaligned, too long.
        for (o, l) in [
            (size as u64, len),
            (off + 8, len),
            (off, u64::MAX - off + 1),
        ] {
            slot.off.store(o, Relaxed);
            slot.len.store(l, Relaxed);
            assert_eq!(attach(), Err(Error::BadLayout), "{o} {l}");
        }
        slot.off.store(off, Relaxed);
        slot.len.store(len, Relaxed);
        assert_eq!(attach(), Ok(()));
        // A header naming a schedule past its generation. Written through
        // the raw pointer each time (no reference held across the attach,
        // whose reads would invalidate it).
        // SAFETY: the serving generation's header inside the region, ours
        // alone in this test.
        let h = unsafe { region.as_ptr().add(off as usize) }.cast::<GenHeader>();
        // SAFETY: as above, for each access.
        let sched = unsafe { (*h).sched_len[PRIMARY] };
        // SAFETY: as above.
        unsafe { (*h).sched_len[PRIMARY] = u32::MAX };
        assert_eq!(attach(), Err(Error::BadLayout));
        // SAFETY: as above.
        unsafe { (*h).sched_len[PRIMARY] = sched };
        assert_eq!(attach(), Ok(()));
        // SAFETY: as above.
        unsafe { (*h).magic = 0 };
        assert_eq!(attach(), Err(Error::BadLayout));
    }

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
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let size = zone_size(&spec).unwrap();
        assert_eq!(size % ALIGN, 0);
        let region = Region::new(size);
        // SAFETY: the region is ours, `size` bytes, alive for the test.
        let z = unsafe { Zone::init(&spec, region.as_ptr(), size) }.unwrap();
        let t = z.serving();
        assert_eq!(t.peers(), 3);
        assert_eq!(t.primaries(), 2);
        assert_eq!(t.seq(), 1);
        assert_eq!(t.schedule(PRIMARY), &[0, 0, 0, 1, 0, 0]);
        assert_eq!(t.schedule(BACKUP), &[2]);
        assert_eq!(z.identity(2), b"c");
        t.states()[1].fails.store(3, Relaxed);

        // SAFETY: as above.
        let z2 = unsafe { Zone::attach(&spec, region.as_ptr(), size) }.unwrap();
        assert_eq!(z2.states()[1].fails.load(Relaxed), 3);
        assert_eq!(z2.serving().seq(), 1);

        let other = [PeerSpec::new(b"a").weight(4), PeerSpec::new(b"b")];
        let spec2 = UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &other,
            schedule_room: 0,
            sessions: false,
        };
        // SAFETY: as above.
        let e = unsafe { Zone::attach(&spec2, region.as_ptr(), size) }.unwrap_err();
        assert_eq!(e, Error::BadLayout);
    }

    #[test]
    fn maglev_with_repeated_servers_builds_fast() {
        // 2,000 server lines over 4 addresses: distinct permutations keep
        // the build linear (it took seconds when repeats shared one).
        let ids: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        let peers: Vec<PeerSpec<'_>> = (0..2000).map(|i| PeerSpec::new(ids[i % 4])).collect();
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::Hash {
                mode: HashMode::Maglev,
                balance_factor: 0,
                maglev_size: 0,
            },
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let start = std::time::Instant::now();
        let t = OwnedTable::new(&spec).unwrap();
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
            health: Default::default(),
            policy: Policy::LeastConn,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let size = zone_size(&spec).unwrap();
        let region = Region::new(size);
        // SAFETY: the region is ours and at least `size - 64` bytes.
        let e = unsafe { Zone::init(&spec, region.as_ptr(), size - 64) }.unwrap_err();
        assert_eq!(e, Error::NoSpace);
        // SAFETY: as above.
        let e = unsafe { Zone::attach(&spec, region.as_ptr(), size) }.unwrap_err();
        assert_eq!(e, Error::BadLayout);
        let zero = [PeerSpec::new(b"a").weight(0)];
        let bad = UpstreamSpec {
            health: Default::default(),
            policy: Policy::LeastConn,
            peers: &zero,
            schedule_room: 0,
            sessions: false,
        };
        assert_eq!(zone_size(&bad).unwrap_err(), Error::InvalidArgument);
        let order = [
            PeerSpec {
                backup: true,
                ..PeerSpec::new(b"a")
            },
            PeerSpec::new(b"b"),
        ];
        let bad = UpstreamSpec {
            health: Default::default(),
            policy: Policy::LeastConn,
            peers: &order,
            schedule_room: 0,
            sessions: false,
        };
        assert_eq!(zone_size(&bad).unwrap_err(), Error::InvalidArgument);
    }

    #[test]
    fn attach_to_garbage_is_refused_without_reading_out_of_bounds() {
        let peers = [PeerSpec::new(b"a"), PeerSpec::new(b"b")];
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let size = zone_size(&spec).unwrap();
        let region = Region::new(size);
        // SAFETY: the region is ours, `size` bytes.
        unsafe { core::ptr::write_bytes(region.as_ptr(), 0xa5, size) };
        // SAFETY: as above.
        let e = unsafe { Zone::attach(&spec, region.as_ptr(), size) }.unwrap_err();
        assert_eq!(e, Error::BadLayout);
    }
}
