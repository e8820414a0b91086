//! Learnt sessions: session ids mapped to servers, lock-free, in a region of their own
//!
//! `sticky learn create=$v lookup=$v zone=NAME:SIZE timeout=T` learns the
//! session id an upstream response sets (`create`), maps it to the server
//! that answered, and sends the requests that carry it (`lookup`) there.
//! This module is that map: a table in the zone of SIZE bytes nginx gives
//! (every worker maps it at the same physical memory, maybe at different
//! addresses: offsets and indices only, never pointers), bounded by its
//! region, oldest entries evicted first, entries expiring `T` after their
//! last learn, lookups in O(1) touching two cache lines.
//!
//! The caller gives the region (64-byte aligned), the time (`now_ms`,
//! monotonic milliseconds, the same clock in every process), a session
//! id's [`fingerprint`] and the server's `sid` (an opaque non-zero 64-bit
//! reference: the hash of the server's own session id). Nothing on the
//! per-request path ([`Sessions::lookup`], [`Sessions::learn`]) allocates,
//! locks, makes a system call or can panic.
//!
//! There is no lock at all: a worker killed (SIGKILL) at any instruction
//! leaves the table usable, and no lookup ever returns a server no learn
//! gave for that session id (see "Limits" for the one bound on that).
//! Rust's atomics are valid across processes (see the crate note); they
//! do not interoperate with nginx's locks, and nothing here takes or
//! honours one (not even the zone's `ngx_slab` mutex).
//!
//! # Layout
//!
//! One contiguous region, 64-byte aligned, offsets in bytes from its
//! start. `N` (the capacity) is a power of two from [`MIN_CAPACITY`] to
//! [`MAX_CAPACITY`]; `B = N / 4` buckets of [`WAYS`] ways: `2N` ways, a
//! load of at most one half.
//!
//! ```text
//!    0  Header ...... magic, version, ways, N, B, size (written once), timeout
//!   64  head ........ the last append number handed out (own line)
//!  128  counters .... created, evicted, expired (own line)
//!  192  Record × N .. 32 bytes each, two a line: the ring, slot = append % N
//!       Bucket × B .. 64 bytes each: 8 ways of one u64
//! ```
//!
//! [`size_for`]`(N) = 192 + 48·N` bytes: 32 of record and 16 of index per
//! entry ([`BYTES_PER_ENTRY`]); a 64 MiB region holds 1,048,576 sessions.
//!
//! # Records: four words that each name their writer
//!
//! Every learn that writes takes an *append number* `s` from `head`
//! (`fetch_add`) and writes record `s % N`, the ring slot of the oldest
//! append: eviction is oldest-first by construction. A record is four
//! words, and every word carries low bits of `s` beside its payload:
//!
//! ```text
//!  key   fp bits 0..40       | s bits 0..24 << 40
//!  hi    sid bits 32..64     | s bits 0..32
//!  lo    sid bits 0..32 << 32| s bits 0..32
//!  last  ms bits 0..40       | s bits 0..24 << 40   (ms of the last learn)
//! ```
//!
//! A reader knows which append it expects (the index names it), and takes
//! a record only if all four words carry that append's bits. That is why
//! a record needs no seqlock, no BUSY bit and no claim: a writer killed
//! half-way leaves words of two appends, which no reader takes, and the
//! ring's next lap overwrites them; nothing is ever stuck.
//!
//! The design this replaces (a `seq` word with a BUSY bit, claimed by CAS,
//! taken over by the next lap's writer when a writer died BUSY) cannot
//! tell a dead writer from a slow one: a writer preempted between two of
//! its field stores, lapped by `N` appends meanwhile, resumes and stores
//! its `sid` into the newer writer's published record, whose `seq` it
//! does not change, so seqlock readers see a consistent record with
//! another session's server: a wrong server after a stall of only `N`
//! appends (64 in a small table). Here a late store carries its own
//! append's bits and invalidates the record instead.
//!
//! # Index
//!
//! A bucket is one 64-byte line of [`WAYS`] ways; bucket = the
//! fingerprint's low bits. A way is one word, `tag << 40 | s mod 2^40`,
//! `tag` the fingerprint's top 24 bits; 0 is an empty way. Together the
//! way's tag and the record's 40 fingerprint bits check all 64 bits of
//! the fingerprint. Ways change only by `compare_exchange` of the whole
//! word. A way is free when it is 0 or points at least `N` appends back
//! (its record overwritten, or about to be); when all 8 are live, a new
//! key takes the one with the oldest append (an eviction). Lookups take
//! the newest valid way for the key (two racing creators may both index
//! it; the older copy ages out with its record).
//!
//! # Learning
//!
//! [`Sessions::learn`] (`create` = the response carried a new session id):
//!
//! - present, same server, record in the younger half of the ring
//!   (`head - s < N/2`): `last` set to now in place (a CAS of the `last`
//!   word, expecting the word it read: if the record was overwritten
//!   meanwhile the CAS fails, so a late refresh never lands in another
//!   session's record); [`Learnt::Refreshed`];
//! - present, same server, older half: appended again and the way moved
//!   to the new append, so that a session in use is never evicted by the
//!   ring (second chance); [`Learnt::Renewed`];
//! - present with another server: appended, the way moved;
//!   [`Learnt::Moved`];
//! - absent (or expired) and `create`: appended and indexed;
//!   [`Learnt::Created`]; without `create`: nothing, [`Learnt::Ignored`]
//!   (nginx: a response without a new session id only refreshes).
//!
//! An append first reads what the slot held: if that record is valid and
//! its key's way still points at it, the way is cleared (CAS to 0) and the
//! eviction counted, as `expired` if it had expired, else as `evicted`.
//! The CAS counts each indexed entry once, whoever removes its way (the
//! ring, a newer key taking the oldest way, or a learn replacing an
//! expired one); a way moved by its own key counts nothing, and the
//! record it leaves is nobody's.
//!
//! # Crashes
//!
//! The steps of a learn, each a crash point ([`crate::crash::POINTS`]):
//! `learn.claimed` (append number taken), `learn.cleared` (the overwritten
//! record's way cleared and counted), `learn.written` (half the record's
//! words written), `learn.published` (all four), `learn.indexed` (the way
//! installed or moved), `learn.refreshed` (the in-place refresh). A worker
//! killed anywhere loses at most its own learn (the way still names the
//! old record, or none) and at most one count (the counters are bumped
//! right after the CAS they count, not in the same instruction); numbers
//! it took are never reused, and their slots are rewritten on the next
//! lap. `ffi/tests/crash_points.rs` kills a learner at each of them.
//!
//! # Orderings
//!
//! Record words are stored `Relaxed`; the way's CAS that indexes them is
//! `Release`, and a lookup reads a matching way, then an `Acquire` fence,
//! then the record: whoever sees the way sees the record it names. Every
//! other access is `Relaxed`: the words validate themselves (a reader that
//! sees a mix of two writers' words rejects it), `head` only hands out
//! unique numbers (and its value only ages records), the counters are
//! statistics, and a way cleared or taken publishes nothing.
//!
//! # Limits
//!
//! - A lookup could return a wrong server only if a writer stalled between
//!   two of its instructions while 2^32 appends happened (the `sid` words'
//!   bits of two appends then agree: 12 hours stopped at 100,000 creates
//!   a second), or while 2^24 did and its session has the same 24-bit tag
//!   as the one now in the slot (one chance in 16 million after such a
//!   stall; the `key` word carries 24 bits). Shorter stalls cost at most
//!   a false miss.
//! - Append numbers `≡ 0 mod 2^32` are skipped (0 is a never-written
//!   record's bits).
//! - Times are kept mod 2^40 ms (34 years); a `now` behind an entry's
//!   time (another process's clock read a moment later) counts as no time
//!   passed.
//! - At a full ring a bucket holds on average 4 live ways of 8; about 5%
//!   of creates find their bucket full and evict its oldest entry early
//!   (measured at N = 2^16: 5.1%, the entry 0.84·N appends old on
//!   average, which the ring would have overwritten 0.16·N later): 99% of
//!   the ring's records stay live. Filling an empty table of 2^20 with a
//!   million sessions keeps 99.3% of them.

use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::NonNull;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{fence, AtomicU64};

use crate::crash::crash_point;
use crate::error::Error;

/// `b"HABLEARN"` as a little-endian integer: the header's first word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"HABLEARN");

/// Bumped on every incompatible change of this layout.
pub const LAYOUT_VERSION: u32 = 1;

/// Alignment the region must have.
pub const ALIGN: usize = 64;

/// Ways per bucket: one 64-byte line.
pub const WAYS: usize = 8;

/// Fewest records a table holds.
pub const MIN_CAPACITY: usize = 64;

/// Most records a table holds (the lapped test compares 32-bit append
/// bits, which needs `N < 2^31`).
pub const MAX_CAPACITY: usize = 1 << 30;

/// Longest timeout, in ms (about 24.8 days).
pub const MAX_TIMEOUT_MS: u64 = 1 << 31;

/// Bytes per entry: its record and its two ways of index.
pub const BYTES_PER_ENTRY: usize = RECORD_BYTES + 2 * size_of::<u64>();

/// Offset of the `head` line.
const HEAD_OFF: usize = 64;
/// Offset of the counters line.
const COUNTERS_OFF: usize = 128;
/// Offset of the first record.
const RECORDS_OFF: usize = 192;
const RECORD_BYTES: usize = 32;
const BUCKET_BYTES: usize = 64;

/// Rounds of re-probing a bucket before a learner leaves it to the
/// concurrent ones that keep changing it.
const ROUNDS: usize = 4;

const LOW24: u64 = (1 << 24) - 1;
const LOW32: u64 = (1 << 32) - 1;
const LOW40: u64 = (1 << 40) - 1;
/// Half the 40-bit circle: a difference at or above it is negative.
const HALF40: u64 = 1 << 39;

/// The first line: written once by [`Sessions::init`] before any other
/// process maps the region, only read afterwards (but `timeout_ms`).
#[repr(C, align(64))]
struct Header {
    /// [`MAGIC`].
    magic: u64,
    /// [`LAYOUT_VERSION`].
    version: u32,
    /// [`WAYS`].
    ways: u32,
    /// Records (`N`), a power of two.
    capacity: u64,
    /// Buckets (`N / 4`).
    buckets: u64,
    /// Bytes the table occupies ([`size_for`]`(N)`).
    size: u64,
    /// Entries expire this long after their last learn. Set at init;
    /// changed only by [`Sessions::with_timeout`] (the master, on reload,
    /// before it forks workers: `Relaxed`, fork orders it). Each process
    /// copies it into its handle.
    timeout_ms: AtomicU64,
}

/// The append counter, alone on its line (every append writes it).
#[repr(C, align(64))]
struct Head {
    /// The last append number handed out; 0 before the first. Only grows,
    /// by `fetch_add(1)` (`Relaxed`: it hands out unique numbers and
    /// dates records; it publishes nothing).
    last: AtomicU64,
}

/// Statistics, alone on their line. Each only grows, by `fetch_add(1,
/// Relaxed)` right after the CAS it counts: a worker killed between the
/// two loses that one count.
#[repr(C, align(64))]
struct Counters {
    /// Entries indexed for an absent (or expired) key.
    created: AtomicU64,
    /// Indexed entries removed before they expired: their record
    /// overwritten by the ring, or their way taken as a full bucket's
    /// oldest.
    evicted: AtomicU64,
    /// Indexed entries removed after they expired.
    expired: AtomicU64,
}

/// One ring slot (see the module note for the words' bits). Each word
/// goes from whatever an earlier append left to the bits of the append
/// now writing the slot, by a plain `Relaxed` store of that append's
/// writer; `last` also from one time to a later one of the same append,
/// by CAS (an in-place refresh). A word is all zero until the slot's
/// first write.
#[repr(C, align(32))]
struct Record {
    key: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
    last: AtomicU64,
}

/// One index line. Each way goes 0 → `tag << 40 | s mod 2^40` (a key
/// indexed), from one such word to another of the same key (moved,
/// renewed, expired and re-created) or of another key (a free or oldest
/// way taken), and back to 0 (its record overwritten): always by
/// `compare_exchange` of the whole word, so that each change happens once.
#[repr(C, align(64))]
struct Bucket {
    ways: [AtomicU64; WAYS],
}

const _: () = assert!(
    size_of::<Header>() == 64
        && size_of::<Head>() == 64
        && size_of::<Counters>() == 64
        && size_of::<Record>() == RECORD_BYTES
        && size_of::<Bucket>() == BUCKET_BYTES
        && HEAD_OFF + 64 == COUNTERS_OFF
        && COUNTERS_OFF + 64 == RECORDS_OFF
);

/// The fingerprint of a session id: 64-bit FNV-1a of its bytes through
/// the splitmix64 finaliser (so that the low bits, the bucket, and the
/// high bits, the tag, are both well mixed); never 0 (0 maps to 1).
pub fn fingerprint(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h.max(1)
}

/// Bytes a table of `capacity` records needs: [`Error::InvalidArgument`]
/// unless `capacity` is a power of two from [`MIN_CAPACITY`] to
/// [`MAX_CAPACITY`].
pub fn size_for(capacity: usize) -> Result<usize, Error> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(Error::InvalidArgument);
    }
    Ok(RECORDS_OFF + capacity * RECORD_BYTES + buckets_for(capacity) * BUCKET_BYTES)
}

/// The largest capacity whose table fits in `region_len` bytes;
/// [`Error::NoSpace`] when not even [`MIN_CAPACITY`] fits.
pub fn capacity_for(region_len: usize) -> Result<usize, Error> {
    let mut n = MIN_CAPACITY;
    if size_for(n)? > region_len {
        return Err(Error::NoSpace);
    }
    while n < MAX_CAPACITY && size_for(n * 2)? <= region_len {
        n *= 2;
    }
    Ok(n)
}

/// Buckets of a table of `capacity` records: `2N` ways.
fn buckets_for(capacity: usize) -> usize {
    capacity * 2 / WAYS
}

fn check_timeout(timeout_ms: u64) -> Result<(), Error> {
    if (1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        Ok(())
    } else {
        Err(Error::InvalidArgument)
    }
}

/// A record's key word for fingerprint `fp` written by append `s`.
#[inline]
fn key_word(fp: u64, s: u64) -> u64 {
    (fp & LOW40) | ((s & LOW24) << 40)
}

/// A record's `hi` word: the server's high half.
#[inline]
fn hi_word(sid: u64, s: u64) -> u64 {
    (sid & !LOW32) | (s & LOW32)
}

/// A record's `lo` word: the server's low half.
#[inline]
fn lo_word(sid: u64, s: u64) -> u64 {
    (sid << 32) | (s & LOW32)
}

/// A record's `last` word: time `ms` (mod 2^40).
#[inline]
fn last_word(ms: u64, s: u64) -> u64 {
    (ms & LOW40) | ((s & LOW24) << 40)
}

/// The way indexing append `s` of fingerprint `fp`.
#[inline]
fn way_word(fp: u64, s: u64) -> u64 {
    (fp & !LOW40) | (s & LOW40)
}

/// `later - earlier` on the 40-bit circle, 0 when `earlier` is ahead
/// (appends since `earlier` at head `later`; ms since a time).
#[inline]
fn since(later: u64, earlier: u64) -> u64 {
    let d = later.wrapping_sub(earlier) & LOW40;
    if d >= HALF40 {
        0
    } else {
        d
    }
}

/// Whether 40-bit append number `a` is newer than `b`.
#[inline]
fn newer(a: u64, b: u64) -> bool {
    let d = a.wrapping_sub(b) & LOW40;
    d != 0 && d < HALF40
}

/// What a record holds, once its words agreed on their append.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The fingerprint's low 40 bits.
    fp40: u64,
    /// The server.
    sid: u64,
    /// The whole `last` word (what a refresh expects).
    last: u64,
}

/// The record's content if every word carries append `s`'s bits.
/// `Relaxed` loads: each word is checked on its own (a caller that needs
/// the record's writes visible has an `Acquire` fence behind it).
#[inline]
fn read(r: &Record, s: u64) -> Option<Held> {
    let (key, hi, lo, last) = (
        r.key.load(Relaxed),
        r.hi.load(Relaxed),
        r.lo.load(Relaxed),
        r.last.load(Relaxed),
    );
    let ok = key >> 40 == s & LOW24
        && hi & LOW32 == s & LOW32
        && lo & LOW32 == s & LOW32
        && last >> 40 == s & LOW24;
    ok.then_some(Held {
        fp40: key & LOW40,
        sid: (hi & !LOW32) | (lo >> 32),
        last,
    })
}

/// A valid way for a key, found by a probe.
#[derive(Debug, Clone, Copy)]
struct Found<'a> {
    way: &'a AtomicU64,
    /// The way's word as read.
    word: u64,
    /// Its append number (mod 2^40).
    s40: u64,
    held: Held,
}

/// What [`Sessions::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learnt {
    /// Present with the same server, its record in the younger half of
    /// the ring: its time set to now in place.
    Refreshed,
    /// Present with the same server, its record in the older half:
    /// appended again and re-indexed (second chance).
    Renewed,
    /// Present with another server: appended with this one, re-indexed.
    Moved,
    /// Absent or expired, `create` set: appended and indexed.
    Created,
    /// Absent or expired and `create` clear, or a zero fingerprint or
    /// server: nothing done.
    Ignored,
    /// Concurrent learners won: a newer learn of the same key indexed
    /// first, the ring lapped this append before it was written, or the
    /// bucket kept changing under it. Nothing of this call is indexed.
    Raced,
}

/// The table's counters and occupancy ([`Sessions::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Live entries: valid, indexed, not expired.
    pub entries: u64,
    /// Records (`N`).
    pub capacity: u64,
    /// Entries created (see [`Learnt::Created`]).
    pub created: u64,
    /// Entries evicted before they expired.
    pub evicted: u64,
    /// Entries removed after they expired.
    pub expired: u64,
}

/// A view of a learn table in a caller-given region: a pointer and the
/// header's numbers, copied at [`Sessions::init`] or [`Sessions::attach`]
/// so that a lookup reads nothing but its bucket and record.
#[derive(Debug, Clone, Copy)]
pub struct Sessions<'a> {
    base: NonNull<u8>,
    /// Records, a power of two.
    capacity: u64,
    /// Buckets, a power of two.
    buckets: u64,
    timeout_ms: u64,
    _region: PhantomData<&'a ()>,
}

// SAFETY: the region is only changed through atomics once built (the
// header's plain fields are written before it is shared); sharing the
// view between threads is what workers do between processes.
unsafe impl Send for Sessions<'_> {}
// SAFETY: as above.
unsafe impl Sync for Sessions<'_> {}

impl<'a> Sessions<'a> {
    /// Builds an empty table of the largest capacity that fits in the
    /// `len` bytes at `mem` (zeroed, header written), entries expiring
    /// `timeout_ms` after their last learn (1 ms to [`MAX_TIMEOUT_MS`],
    /// else [`Error::InvalidArgument`]). [`Error::NoSpace`] when `mem` is
    /// null or misaligned, or the region too small. nginx: once, in the
    /// master, before the workers fork.
    ///
    /// # Safety
    ///
    /// `mem` must be valid for reads and writes of `len` bytes for `'a`,
    /// and nobody else may access them during this call.
    pub unsafe fn init(mem: *mut u8, len: usize, timeout_ms: u64) -> Result<Sessions<'a>, Error> {
        check_timeout(timeout_ms)?;
        if mem.is_null() || mem as usize % ALIGN != 0 {
            return Err(Error::NoSpace);
        }
        let capacity = capacity_for(len)?;
        let size = size_for(capacity)?;
        // SAFETY: `mem` is valid for `len >= size` bytes, 64-byte aligned
        // (checked above), exclusively ours (function contract): zeroing
        // it and writing the header in its first line is in bounds.
        // Zeroed atomics are valid atomics.
        unsafe {
            core::ptr::write_bytes(mem, 0, size);
            mem.cast::<Header>().write(Header {
                magic: MAGIC,
                version: LAYOUT_VERSION,
                ways: WAYS as u32,
                capacity: capacity as u64,
                buckets: buckets_for(capacity) as u64,
                size: size as u64,
                timeout_ms: AtomicU64::new(timeout_ms),
            });
        }
        // SAFETY: a table was just built at `mem`, in bounds.
        Ok(unsafe { Sessions::from_ptr(mem) })
    }

    /// Adopts the table already in the `len` bytes at `mem` (nginx hands
    /// the same zone back on reload): [`Error::BadLayout`] unless its
    /// magic, version, ways, capacity and size are those a table built in
    /// `len` bytes has; [`Error::NoSpace`] when `mem` is null, misaligned
    /// or shorter than a header.
    ///
    /// # Safety
    ///
    /// `mem` must be valid for reads and writes of `len` bytes for `'a`
    /// (other processes may use the table concurrently, through atomics).
    pub unsafe fn attach(mem: *mut u8, len: usize) -> Result<Sessions<'a>, Error> {
        if mem.is_null() || mem as usize % ALIGN != 0 || len < size_of::<Header>() {
            return Err(Error::NoSpace);
        }
        // SAFETY: aligned and long enough for a header; its plain fields
        // are never written after init, its one atomic is read atomically.
        let h = unsafe { &*mem.cast::<Header>() };
        let capacity = capacity_for(len).map_err(|_| Error::BadLayout)?;
        let ok = h.magic == MAGIC
            && h.version == LAYOUT_VERSION
            && h.ways == WAYS as u32
            && h.capacity == capacity as u64
            && h.buckets == buckets_for(capacity) as u64
            && Ok(h.size as usize) == size_for(capacity)
            && check_timeout(h.timeout_ms.load(Relaxed)).is_ok();
        if !ok {
            return Err(Error::BadLayout);
        }
        // SAFETY: the header matches a table built in `len` bytes, so the
        // records and buckets lie where the accessors look.
        Ok(unsafe { Sessions::from_ptr(mem) })
    }

    /// A view of the table at `mem` (a handle kept by the caller as a
    /// pointer, [`Sessions::as_ptr`]): reads the header's numbers, one
    /// read-mostly line; keep the view rather than remake it per request.
    ///
    /// # Safety
    ///
    /// `mem` holds a table built by [`Sessions::init`] (or accepted by
    /// [`Sessions::attach`]), mapped for `'a`.
    pub unsafe fn from_ptr(mem: *mut u8) -> Sessions<'a> {
        // SAFETY: a table starts with its header (function contract).
        let h = unsafe { &*mem.cast::<Header>() };
        Sessions {
            // SAFETY: a valid table is not at null.
            base: unsafe { NonNull::new_unchecked(mem) },
            capacity: h.capacity,
            buckets: h.buckets,
            timeout_ms: h.timeout_ms.load(Relaxed),
            _region: PhantomData,
        }
    }

    /// This view with entries expiring `timeout_ms` after their last
    /// learn (1 ms to [`MAX_TIMEOUT_MS`]), stored in the header for those
    /// who attach later (a reload that keeps the zone but changes
    /// `timeout=`).
    pub fn with_timeout(self, timeout_ms: u64) -> Result<Sessions<'a>, Error> {
        check_timeout(timeout_ms)?;
        self.header().timeout_ms.store(timeout_ms, Relaxed);
        Ok(Sessions { timeout_ms, ..self })
    }

    /// Start of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Records (`N`): the most entries the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The timeout this view applies.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    #[inline]
    fn header(&self) -> &'a Header {
        // SAFETY: a valid table starts with its header (constructors).
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    #[inline]
    fn head(&self) -> &'a AtomicU64 {
        // SAFETY: the head line follows the header, inside the table.
        unsafe { &(*self.base.as_ptr().add(HEAD_OFF).cast::<Head>()).last }
    }

    #[inline]
    fn counters(&self) -> &'a Counters {
        // SAFETY: the counters line follows the head line, in the table.
        unsafe { &*self.base.as_ptr().add(COUNTERS_OFF).cast::<Counters>() }
    }

    /// The ring slot of append `s`.
    #[inline]
    fn record(&self, s: u64) -> &'a Record {
        let i = (s & (self.capacity - 1)) as usize;
        // SAFETY: `i < capacity`; the table holds `capacity` records of 32
        // bytes from RECORDS_OFF (constructors checked its size), 32-byte
        // aligned in a 64-byte aligned region.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(RECORDS_OFF + i * RECORD_BYTES)
                .cast::<Record>()
        }
    }

    /// The bucket of fingerprint `fp` (its low bits; fewer than 40).
    #[inline]
    fn bucket(&self, fp: u64) -> &'a Bucket {
        let i = (fp & (self.buckets - 1)) as usize;
        let off = RECORDS_OFF + self.capacity as usize * RECORD_BYTES + i * BUCKET_BYTES;
        // SAFETY: `i < buckets`; the buckets follow the records, inside
        // the table, 64-byte aligned (the records take a multiple of 64).
        unsafe { &*self.base.as_ptr().add(off).cast::<Bucket>() }
    }

    #[inline]
    fn expired(&self, last_word: u64, now_ms: u64) -> bool {
        since(now_ms, last_word & LOW40) > self.timeout_ms
    }

    /// The newest valid way for `fp` in its bucket `b` (expired or not).
    #[inline]
    fn probe(&self, b: &'a Bucket, fp: u64) -> Option<Found<'a>> {
        let tag = fp >> 40;
        let mut best: Option<Found<'a>> = None;
        for way in &b.ways {
            let word = way.load(Relaxed);
            if word == 0 || word >> 40 != tag {
                continue;
            }
            // Pairs with the Release CAS that installed `word`: the record
            // words written before it are visible.
            fence(Acquire);
            let s40 = word & LOW40;
            let Some(held) = read(self.record(s40), s40) else {
                continue;
            };
            if held.fp40 == fp & LOW40 && best.is_none_or(|b| newer(s40, b.s40)) {
                best = Some(Found {
                    way,
                    word,
                    s40,
                    held,
                });
            }
        }
        best
    }

    /// The server learnt for fingerprint `fp`, if present and not expired
    /// at `now_ms`: never one no learn of `fp` gave. Reads one bucket line
    /// and (on a tag match) one record.
    #[inline]
    pub fn lookup(&self, fp: u64, now_ms: u64) -> Option<u64> {
        if fp == 0 {
            return None;
        }
        let f = self.probe(self.bucket(fp), fp)?;
        (!self.expired(f.held.last, now_ms)).then_some(f.held.sid)
    }

    /// Learns that session `fp` is served by `sid` at `now_ms` (see the
    /// module note, "Learning"); `create`: the response carried a new
    /// session id (else an absent session is not added).
    #[inline]
    pub fn learn(&self, fp: u64, sid: u64, now_ms: u64, create: bool) -> Learnt {
        if fp == 0 || sid == 0 {
            return Learnt::Ignored;
        }
        let b = self.bucket(fp);
        let found = self.probe(b, fp);
        let outcome = match found.filter(|f| !self.expired(f.held.last, now_ms)) {
            Some(f) if f.held.sid == sid => {
                // Relaxed: only how old the record is.
                if since(self.head().load(Relaxed), f.s40) < self.capacity / 2 {
                    self.refresh(f, now_ms);
                    return Learnt::Refreshed;
                }
                Learnt::Renewed
            }
            Some(_) => Learnt::Moved,
            None if create => Learnt::Created,
            None => return Learnt::Ignored,
        };
        let Some(s) = self.append(fp, sid, now_ms, found.map(|f| f.s40)) else {
            return Learnt::Raced;
        };
        if self.index(b, fp, s, found, now_ms) {
            outcome
        } else {
            Learnt::Raced
        }
    }

    /// Sets a present entry's time to `now_ms` in place (no-op if it is
    /// not behind). The CAS expects the `last` word read with the record:
    /// if the slot has been rewritten since, the word carries another
    /// append's bits and the CAS fails, so this never touches another
    /// session's record.
    #[inline]
    fn refresh(&self, f: Found<'a>, now_ms: u64) {
        if since(now_ms, f.held.last & LOW40) == 0 {
            return;
        }
        let r = self.record(f.s40);
        // Relaxed: a time, validated by its own bits; publishes nothing.
        let _ = r
            .last
            .compare_exchange(f.held.last, last_word(now_ms, f.s40), Relaxed, Relaxed);
        crash_point("learn.refreshed");
    }

    /// Takes an append number and writes its record: the number, or
    /// `None` when a newer append already wrote the slot (this one was
    /// lapped before it got there). `own`: the append the key's way names
    /// now (the caller moves that way: if this append overwrites that very
    /// record, its way is left for the move, and nothing is counted).
    #[inline]
    fn append(&self, fp: u64, sid: u64, now_ms: u64, own: Option<u64>) -> Option<u64> {
        let head = self.head();
        // Relaxed: a unique number is all it gives (see `Head`).
        let mut s = head.fetch_add(1, Relaxed).wrapping_add(1);
        if s & LOW32 == 0 {
            // 0 is the bits of a never-written record: skip the number.
            s = head.fetch_add(1, Relaxed).wrapping_add(1);
        }
        crash_point("learn.claimed");
        let r = self.record(s);
        // Relaxed: whose the slot is, told by the word's own bits.
        let id = r.hi.load(Relaxed) & LOW32;
        let ahead = id.wrapping_sub(s) & LOW32;
        if id != 0 && ahead != 0 && ahead < 1 << 31 {
            return None;
        }
        if id != 0 && own.is_none_or(|o| o & LOW32 != id) {
            if let Some(old) = read(r, id) {
                self.evict(id, old, now_ms);
            }
        }
        // Relaxed: published by the Release CAS that indexes them.
        r.key.store(key_word(fp, s), Relaxed);
        r.hi.store(hi_word(sid, s), Relaxed);
        crash_point("learn.written");
        r.lo.store(lo_word(sid, s), Relaxed);
        r.last.store(last_word(now_ms, s), Relaxed);
        crash_point("learn.published");
        Some(s)
    }

    /// Clears the way of the record about to be overwritten (append bits
    /// `id`, content `old`) if it still points there, and counts it.
    #[inline]
    fn evict(&self, id: u64, old: Held, now_ms: u64) {
        for way in &self.bucket(old.fp40).ways {
            let word = way.load(Relaxed);
            if word == 0 || word & LOW32 != id {
                continue;
            }
            // The same slot (`N` divides 2^32) and append: its way.
            // Relaxed: clearing a way publishes nothing.
            if way.compare_exchange(word, 0, Relaxed, Relaxed).is_ok() {
                self.count_gone(old.last, now_ms);
                crash_point("learn.cleared");
            }
            return;
        }
    }

    /// Counts an indexed entry removed: expired or evicted.
    #[inline]
    fn count_gone(&self, last_word: u64, now_ms: u64) {
        let c = self.counters();
        if self.expired(last_word, now_ms) {
            c.expired.fetch_add(1, Relaxed);
        } else {
            c.evicted.fetch_add(1, Relaxed);
        }
    }

    /// Indexes append `s` of `fp` in its bucket `b`: moves `seen` (the
    /// key's way found before) or takes a free or the oldest way; if the
    /// bucket changed meanwhile, probes again (a newer append of the same
    /// key found: gives up). `false` if not indexed.
    #[inline]
    fn index(&self, b: &'a Bucket, fp: u64, s: u64, mut seen: Option<Found<'a>>, now: u64) -> bool {
        let new = way_word(fp, s);
        for _ in 0..ROUNDS {
            let done = match seen {
                Some(f) => self.replace(f, new, now),
                None => self.install(b, new, now),
            };
            if done {
                return true;
            }
            seen = self.probe(b, fp);
            if seen.is_some_and(|f| !newer(s & LOW40, f.s40)) {
                return false;
            }
        }
        false
    }

    /// Moves the key's way `f` to `new`; replacing an expired entry is a
    /// creation (and counts the expired one).
    #[inline]
    fn replace(&self, f: Found<'a>, new: u64, now: u64) -> bool {
        // Release: publishes the record `new` names (see "Orderings").
        if f.way
            .compare_exchange(f.word, new, Release, Relaxed)
            .is_err()
        {
            return false;
        }
        crash_point("learn.indexed");
        if self.expired(f.held.last, now) {
            let c = self.counters();
            c.created.fetch_add(1, Relaxed);
            c.expired.fetch_add(1, Relaxed);
        }
        true
    }

    /// Indexes `new` (an absent key) in a free way of `b`, else in the one
    /// with the oldest append (counted as evicted, or expired).
    #[inline]
    fn install(&self, b: &'a Bucket, new: u64, now: u64) -> bool {
        // Relaxed (head and ways): they only choose a way; the CAS below
        // checks the choice, and a victim's record checks itself.
        let head = self.head().load(Relaxed);
        let mut target: Option<(&AtomicU64, u64)> = None;
        let mut oldest: Option<(&AtomicU64, u64, u64)> = None;
        for way in &b.ways {
            let word = way.load(Relaxed);
            let age = since(head, word & LOW40);
            if word == 0 || age >= self.capacity {
                target = Some((way, word));
                break;
            }
            if oldest.is_none_or(|o| age > o.2) {
                oldest = Some((way, word, age));
            }
        }
        let Some((way, word)) = target.or(oldest.map(|o| (o.0, o.1))) else {
            return false;
        };
        // Read before the way is taken, counted once it is: whoever takes
        // or clears the way counts its entry, once.
        let victim = if word == 0 {
            None
        } else {
            read(self.record(word), word & LOW40)
        };
        // Release: publishes the record `new` names.
        if way.compare_exchange(word, new, Release, Relaxed).is_err() {
            return false;
        }
        crash_point("learn.indexed");
        self.counters().created.fetch_add(1, Relaxed);
        if let Some(v) = victim {
            self.count_gone(v.last, now);
        }
        true
    }

    /// Adds an entry with its own time (a carried or restored one):
    /// [`Sessions::learn`] with `create` at `last_ms`.
    pub fn insert_raw(&self, fp: u64, sid: u64, last_ms: u64) -> Learnt {
        self.learn(fp, sid, last_ms, true)
    }

    /// Calls `f(fp, sid, last_ms)` for every live entry at `now_ms`
    /// (valid, indexed, not expired), oldest append first, so that
    /// [`Sessions::insert_raw`] in that order rebuilds the same ring
    /// order in another table (a zone of another size on reload, a state
    /// file). O(N): for the API, metrics and reloads, not for requests.
    pub fn for_each_live(&self, now_ms: u64, mut f: impl FnMut(u64, u64, u64)) {
        // Relaxed: the window to scan; each record checks itself.
        let head = self.head().load(Relaxed);
        let first = head.saturating_sub(self.capacity - 1).max(1);
        for s in first..=head {
            if let Some((fp, sid, last)) = self.live(s, now_ms) {
                f(fp, sid, last);
            }
        }
    }

    /// Append `s`'s entry, if its record still holds it, its key's way
    /// points at it, and it has not expired at `now_ms`.
    fn live(&self, s: u64, now_ms: u64) -> Option<(u64, u64, u64)> {
        if s & LOW32 == 0 {
            return None;
        }
        let s40 = s & LOW40;
        let held = read(self.record(s40), s40)?;
        if self.expired(held.last, now_ms) {
            return None;
        }
        let word = self
            .bucket(held.fp40)
            .ways
            .iter()
            .map(|w| w.load(Relaxed))
            .find(|&w| w != 0 && w & LOW40 == s40)?;
        let fp = (word & !LOW40) | held.fp40;
        let last_ms = now_ms.saturating_sub(since(now_ms, held.last & LOW40));
        Some((fp, held.sid, last_ms))
    }

    /// The counters, and the live entries counted by a scan of the ring
    /// (O(N): for the API and metrics only).
    pub fn stats(&self, now_ms: u64) -> Stats {
        let mut entries = 0;
        self.for_each_live(now_ms, |_, _, _| entries += 1);
        let c = self.counters();
        Stats {
            entries,
            capacity: self.capacity,
            created: c.created.load(Relaxed),
            evicted: c.evicted.load(Relaxed),
            expired: c.expired.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Region;
    use std::collections::HashMap;

    /// A table of `capacity` records in its own region.
    struct Owned(Region);

    impl Owned {
        fn new(capacity: usize, timeout_ms: u64) -> Owned {
            let r = Region::new(size_for(capacity).unwrap());
            // SAFETY: the region is ours, `len` bytes, alive as long as
            // every view taken of it (borrowed from `self`).
            let s = unsafe { Sessions::init(r.as_ptr(), r.len(), timeout_ms) }.unwrap();
            assert_eq!(s.capacity(), capacity);
            Owned(r)
        }

        fn t(&self) -> Sessions<'_> {
            // SAFETY: as in `new`.
            unsafe { Sessions::attach(self.0.as_ptr(), self.0.len()) }.unwrap()
        }
    }

    fn fp(k: u64) -> u64 {
        fingerprint(&k.to_le_bytes())
    }

    /// The server of key `k`, version `v`: the key in the high half.
    fn sid(k: u64, v: u64) -> u64 {
        (k << 32) | v
    }

    #[test]
    fn fingerprint_is_fnv1a_through_splitmix_and_never_zero() {
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        let mut z: u64 = 0xaf63_dc4c_8601_ec8c;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        assert_eq!(fingerprint(b"a"), z ^ (z >> 31));
        assert_ne!(fingerprint(b""), 0);
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
    }

    #[test]
    fn sizes_and_capacities() {
        assert_eq!(size_for(64), Ok(192 + 64 * 48));
        assert_eq!(size_for(1 << 20), Ok(192 + (1 << 20) * 48));
        for bad in [0, 32, 63, 65, 96, MAX_CAPACITY * 2] {
            assert_eq!(size_for(bad), Err(Error::InvalidArgument), "{bad}");
        }
        assert_eq!(capacity_for(size_for(64).unwrap() - 1), Err(Error::NoSpace));
        assert_eq!(capacity_for(size_for(64).unwrap()), Ok(64));
        assert_eq!(capacity_for(size_for(128).unwrap() - 1), Ok(64));
        assert_eq!(capacity_for(64 << 20), Ok(1 << 20));
    }

    #[test]
    fn init_and_attach_refuse_what_is_not_a_table() {
        // A region of 256 records' size; the table uses 128's and a line.
        let r = Region::new(size_for(256).unwrap());
        let z = Region::new(size_for(256).unwrap());
        let (p, n) = (r.as_ptr(), size_for(128).unwrap() + 64);
        let init = |at: usize, len: usize, timeout: u64| {
            assert!(at + len <= r.len());
            // SAFETY: `len` bytes from `at` lie in `r`, ours, alive for
            // the test and its views (dropped last).
            unsafe { Sessions::init(p.add(at), len, timeout) }
        };
        let attach = |r: &Region, len: usize| {
            assert!(len <= r.len());
            // SAFETY: as above.
            unsafe { Sessions::attach(r.as_ptr(), len) }
        };
        for t in [0, MAX_TIMEOUT_MS + 1] {
            assert_eq!(init(0, n, t).unwrap_err(), Error::InvalidArgument, "{t}");
        }
        assert!(init(0, n, 1).is_ok());
        assert!(init(0, n, MAX_TIMEOUT_MS).is_ok());
        assert_eq!(
            init(8, n - 64, 10).unwrap_err(),
            Error::NoSpace,
            "misaligned"
        );
        assert_eq!(init(0, 1000, 10).unwrap_err(), Error::NoSpace, "too small");
        // Nothing built yet in a zeroed region.
        assert_eq!(attach(&z, n).unwrap_err(), Error::BadLayout);
        let t = init(0, n, 10).unwrap();
        t.learn(fp(1), 5, 0, true);
        let a = attach(&r, n).unwrap();
        assert_eq!(
            (a.capacity(), a.timeout_ms(), a.lookup(fp(1), 0)),
            (128, 10, Some(5))
        );
        // Another size: a table built in it would have another capacity.
        for len in [size_for(256).unwrap(), size_for(64).unwrap()] {
            assert_eq!(attach(&r, len).unwrap_err(), Error::BadLayout, "{len}");
        }
        // Same capacity, a few bytes fewer: accepted.
        assert!(attach(&r, n - 32).is_ok());
        for (off, what) in [(0, "magic"), (8, "version"), (16, "capacity")] {
            // SAFETY: inside the header, ours; restored below.
            unsafe { *p.add(off) ^= 1 };
            assert_eq!(attach(&r, n).unwrap_err(), Error::BadLayout, "{what}");
            // SAFETY: as above.
            unsafe { *p.add(off) ^= 1 };
        }
        assert!(attach(&r, n).is_ok());
        // A new timeout is stored for those who attach later.
        let t = t.with_timeout(99).unwrap();
        assert_eq!(t.timeout_ms(), 99);
        assert_eq!(attach(&r, n).unwrap().timeout_ms(), 99);
        assert_eq!(t.with_timeout(0).unwrap_err(), Error::InvalidArgument);
    }

    #[test]
    fn a_created_session_is_found() {
        let o = Owned::new(64, 1_000);
        let t = o.t();
        assert_eq!(t.lookup(fp(1), 0), None);
        assert_eq!(t.learn(fp(1), sid(1, 1), 0, true), Learnt::Created);
        assert_eq!(t.lookup(fp(1), 0), Some(sid(1, 1)));
        assert_eq!(t.lookup(fp(2), 0), None);
        // Zero fingerprint or server: nothing.
        assert_eq!(t.learn(0, 5, 0, true), Learnt::Ignored);
        assert_eq!(t.learn(fp(3), 0, 0, true), Learnt::Ignored);
        assert_eq!(t.lookup(0, 0), None);
        assert_eq!(t.stats(0).entries, 1);
    }

    #[test]
    fn learning_without_create_adds_nothing() {
        let o = Owned::new(64, 1_000);
        let t = o.t();
        assert_eq!(t.learn(fp(1), sid(1, 1), 0, false), Learnt::Ignored);
        assert_eq!(t.lookup(fp(1), 0), None);
        assert_eq!(
            t.stats(0),
            Stats {
                capacity: 64,
                ..Stats::default()
            }
        );
        // But it refreshes, and moves, a present session.
        t.learn(fp(1), sid(1, 1), 0, true);
        assert_eq!(t.learn(fp(1), sid(1, 1), 10, false), Learnt::Refreshed);
        assert_eq!(t.learn(fp(1), sid(1, 2), 20, false), Learnt::Moved);
        assert_eq!(t.lookup(fp(1), 20), Some(sid(1, 2)));
    }

    #[test]
    fn sessions_expire_after_the_timeout() {
        let o = Owned::new(64, 1_000);
        let t = o.t();
        t.learn(fp(1), sid(1, 1), 5_000, true);
        assert_eq!(t.lookup(fp(1), 6_000), Some(sid(1, 1)), "at the timeout");
        assert_eq!(t.lookup(fp(1), 6_001), None, "past it");
        // A clock a little behind (another process): no time passed.
        assert_eq!(t.lookup(fp(1), 4_990), Some(sid(1, 1)));
        // Expired: a learn without create does not revive it...
        assert_eq!(t.learn(fp(1), sid(1, 1), 6_001, false), Learnt::Ignored);
        assert_eq!(t.lookup(fp(1), 6_001), None);
        assert_eq!(t.stats(6_001).entries, 0);
        // ...with create it is a new session, and the old one expired.
        assert_eq!(t.learn(fp(1), sid(1, 2), 6_001, true), Learnt::Created);
        assert_eq!(t.lookup(fp(1), 6_001), Some(sid(1, 2)));
        let s = t.stats(6_001);
        assert_eq!((s.entries, s.created, s.expired, s.evicted), (1, 2, 1, 0));
    }

    #[test]
    fn relearning_another_server_moves_the_session() {
        let o = Owned::new(64, 1_000);
        let t = o.t();
        t.learn(fp(1), sid(1, 1), 0, true);
        t.learn(fp(2), sid(2, 1), 0, true);
        assert_eq!(t.learn(fp(1), sid(1, 2), 1, true), Learnt::Moved);
        assert_eq!(t.lookup(fp(1), 1), Some(sid(1, 2)));
        assert_eq!(t.lookup(fp(2), 1), Some(sid(2, 1)));
        assert_eq!(t.learn(fp(1), sid(1, 1), 2, false), Learnt::Moved);
        assert_eq!(t.lookup(fp(1), 2), Some(sid(1, 1)));
        // Moves create nothing: two entries, each once.
        let s = t.stats(2);
        assert_eq!((s.entries, s.created), (2, 2));
        let mut live = Vec::new();
        t.for_each_live(2, |f, s, _| live.push((f, s)));
        assert_eq!(live, [(fp(2), sid(2, 1)), (fp(1), sid(1, 1))]);
    }

    #[test]
    fn a_refresh_keeps_the_session_and_its_time() {
        let o = Owned::new(64, 1_000);
        let t = o.t();
        t.learn(fp(1), sid(1, 1), 0, true);
        let head = t.head().load(Relaxed);
        for now in [900, 1_800, 2_700] {
            assert_eq!(t.learn(fp(1), sid(1, 1), now, false), Learnt::Refreshed);
        }
        // In place: no append.
        assert_eq!(t.head().load(Relaxed), head);
        assert_eq!(t.lookup(fp(1), 3_700), Some(sid(1, 1)));
        assert_eq!(t.lookup(fp(1), 3_701), None);
        let mut last = Vec::new();
        t.for_each_live(3_000, |_, _, l| last.push(l));
        assert_eq!(last, [2_700]);
    }

    /// 4N distinct sessions created in order: the ring keeps the newest.
    /// Key `i`'s record is append `i + 1`, overwritten by append
    /// `i + 1 + N`: none of the first 3N is left. Of the last N, all are
    /// found but those a full bucket gave up (its oldest way taken by a
    /// newer key); each of them counted evicted once. The last N/2 are
    /// all found (with these keys no bucket holds 8 of them).
    #[test]
    fn four_laps_of_new_sessions_keep_the_newest() {
        let n = 256u64;
        let o = Owned::new(n as usize, 1_000_000);
        let t = o.t();
        for k in 0..4 * n {
            assert_eq!(t.learn(fp(k), sid(k, 1), k, true), Learnt::Created, "{k}");
        }
        let now = 4 * n;
        for k in 0..3 * n {
            assert_eq!(t.lookup(fp(k), now), None, "{k} overwritten");
        }
        let found = (3 * n..4 * n)
            .filter(|&k| t.lookup(fp(k), now) == Some(sid(k, 1)))
            .count() as u64;
        for k in 3 * n + n / 2..4 * n {
            assert_eq!(t.lookup(fp(k), now), Some(sid(k, 1)), "{k}");
        }
        let s = t.stats(now);
        assert_eq!(s.entries, found);
        assert_eq!(s.created, 4 * n);
        assert_eq!(s.evicted, 4 * n - found, "each gone entry counted once");
        assert_eq!(s.expired, 0);
        assert!(found > n * 9 / 10, "{found} of {n}");
    }

    /// A session learnt again and again is renewed whenever its record is
    /// in the older half, and survives 10 laps of new sessions.
    #[test]
    fn a_session_in_use_survives_ten_laps() {
        let n = 64u64;
        let o = Owned::new(n as usize, 1_000_000);
        let t = o.t();
        let hot = u64::MAX;
        t.learn(fp(hot), sid(7, 7), 0, true);
        let (mut refreshed, mut renewed) = (0, 0);
        for k in 0..10 * n {
            assert_eq!(t.learn(fp(k), sid(k, 1), k + 1, true), Learnt::Created);
            match t.learn(fp(hot), sid(7, 7), k + 1, false) {
                Learnt::Refreshed => refreshed += 1,
                Learnt::Renewed => renewed += 1,
                other => panic!("{k}: {other:?}"),
            }
            assert_eq!(t.lookup(fp(hot), k + 1), Some(sid(7, 7)), "{k}");
        }
        // A renewal whenever its record is N/2 appends old: every N/2
        // rounds (a create each), the first one round early.
        assert_eq!(renewed, 10 * n / (n / 2), "{refreshed} refreshed");
        // Not counted as created again.
        assert_eq!(t.stats(10 * n).created, 10 * n + 1);
    }

    #[test]
    fn counters_add_up() {
        let n = 64u64;
        let o = Owned::new(n as usize, 100);
        let t = o.t();
        for k in 0..n {
            t.learn(fp(k), sid(k, 1), 0, true);
        }
        // Half of them again, later: the first half renewed (old half of
        // the ring), then the second half left to expire.
        for k in 0..n / 2 {
            assert_eq!(t.learn(fp(k), sid(k, 1), 90, true), Learnt::Renewed);
        }
        // At 150 the second half has expired, the first has not; N more
        // sessions overwrite the second half's records and renewals.
        for k in n..2 * n {
            t.learn(fp(k), sid(k, 1), 150, true);
        }
        let s = t.stats(150);
        assert_eq!(s.created, 2 * n);
        assert_eq!(s.expired, n / 2, "{s:?}");
        assert_eq!(s.created, s.entries + s.evicted + s.expired, "{s:?}");
        assert_eq!(
            s.entries,
            (0..2 * n)
                .filter(|&k| t.lookup(fp(k), 150).is_some())
                .count() as u64
        );
    }

    /// A late store of a stalled writer (its append's bits in one word)
    /// into a newer record makes that record invalid, never a mix.
    #[test]
    fn a_word_of_another_append_invalidates_the_record() {
        let o = Owned::new(64, 1_000);
        let t = o.t();
        t.learn(fp(1), sid(1, 1), 0, true);
        let s = t.head().load(Relaxed);
        let r = t.record(s);
        let stale = s.wrapping_sub(64);
        for (word, value) in [
            (&r.key, key_word(fp(1), stale)),
            (&r.hi, hi_word(sid(9, 9), stale)),
            (&r.lo, lo_word(sid(9, 9), stale)),
            (&r.last, last_word(0, stale)),
        ] {
            let keep = word.swap(value, Relaxed);
            assert_eq!(t.lookup(fp(1), 0), None);
            word.store(keep, Relaxed);
            assert_eq!(t.lookup(fp(1), 0), Some(sid(1, 1)));
        }
        // A refresh expecting the record's old `last` word does nothing.
        let f = t.probe(t.bucket(fp(1)), fp(1)).unwrap();
        r.last.store(last_word(0, s + 64), Relaxed);
        t.refresh(f, 500);
        assert_eq!(r.last.load(Relaxed), last_word(0, s + 64));
    }

    /// Carried into a table of another size (`for_each_live` then
    /// `insert_raw`): the same entries, times and order; into a smaller
    /// one, the newest.
    #[test]
    fn a_table_carried_into_another_size_keeps_its_entries() {
        let n = 256u64;
        let o = Owned::new(n as usize, 1_000);
        let t = o.t();
        for k in 0..n + n / 2 {
            t.learn(fp(k), sid(k, k % 3 + 1), k, true);
        }
        let now = n + n / 2;
        let mut live = Vec::new();
        t.for_each_live(now, |f, s, l| live.push((f, s, l)));
        assert_eq!(live.len() as u64, t.stats(now).entries);
        assert!(live.len() as u64 > n * 9 / 10);
        for (cap, keep) in [(512, live.len()), (256, live.len()), (64, 64)] {
            let o2 = Owned::new(cap, 1_000);
            let t2 = o2.t();
            for &(f, s, l) in &live {
                assert_eq!(t2.insert_raw(f, s, l), Learnt::Created);
            }
            let mut again = Vec::new();
            t2.for_each_live(now, |f, s, l| again.push((f, s, l)));
            let newest = &live[live.len() - keep..];
            if cap >= 256 {
                assert_eq!(again, newest, "into {cap}");
            } else {
                // Smaller: only the newest kept, most of them.
                assert!(again.iter().all(|e| newest.contains(e)));
                assert!(again.len() > keep * 3 / 4, "{}", again.len());
            }
            for &(f, s, l) in &again {
                assert_eq!(t2.lookup(f, now), Some(s));
                assert!(l < now);
            }
        }
    }

    /// The reference: what the design says a single learner sees.
    struct Model {
        n: u64,
        timeout: u64,
        head: u64,
        /// fp → (sid, append of its record, last)
        entries: HashMap<u64, (u64, u64, u64)>,
    }

    impl Model {
        fn present(&self, fp: u64, now: u64) -> Option<(u64, u64, u64)> {
            let &(sid, rec, last) = self.entries.get(&fp)?;
            (self.head - rec < self.n && now - last <= self.timeout).then_some((sid, rec, last))
        }

        fn learn(&mut self, fp: u64, sid: u64, now: u64, create: bool) -> Learnt {
            match self.present(fp, now) {
                Some((s, rec, _)) if s == sid && self.head - rec < self.n / 2 => {
                    self.entries.insert(fp, (s, rec, now));
                    Learnt::Refreshed
                }
                Some((s, ..)) => {
                    self.head += 1;
                    self.entries.insert(fp, (sid, self.head, now));
                    if s == sid {
                        Learnt::Renewed
                    } else {
                        Learnt::Moved
                    }
                }
                None if create => {
                    self.head += 1;
                    self.entries.insert(fp, (sid, self.head, now));
                    Learnt::Created
                }
                None => Learnt::Ignored,
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Learn { key: u8, server: u8, create: bool },
        Lookup { key: u8 },
        Wait { ms: u16 },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            5 => (0u8..KEYS, 1u8..3, any::<bool>())
                .prop_map(|(key, server, create)| Op::Learn { key, server, create }),
            4 => (0u8..KEYS).prop_map(|key| Op::Lookup { key }),
            1 => (0u16..80).prop_map(|ms| Op::Wait { ms }),
        ]
    }

    /// Keys in the property test: more than a table of 64 holds.
    const KEYS: u8 = 80;

    /// The property test's keys: the first [`KEYS`] numbers that put no
    /// more than 8 in one of a 64-table's 16 buckets, so that a single
    /// learner loses a session only to the ring or its timeout.
    fn keys() -> Vec<u64> {
        let mut per_bucket = [0; 16];
        let mut out = Vec::new();
        for k in 0.. {
            if out.len() == usize::from(KEYS) {
                break;
            }
            let b = &mut per_bucket[(fp(k) & 15) as usize];
            if *b < WAYS {
                *b += 1;
                out.push(k);
            }
        }
        out
    }

    proptest::proptest! {
        /// Random learns, lookups and waits on a table of 64 against the
        /// model: every lookup answers what the model does (so never a
        /// stale or foreign server), every learn does what it says, and
        /// a session learnt within the last N/4 appends and not expired is
        /// found.
        #[test]
        fn a_single_learner_sees_what_the_design_says(
            ops in proptest::collection::vec(op(), 1..600)
        ) {
            let o = Owned::new(64, 1_000);
            let t = o.t();
            let keys = keys();
            let key = |k: u8| keys[usize::from(k)];
            let mut m = Model { n: 64, timeout: 1_000, head: 0, entries: HashMap::new() };
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Learn { key: k, server, create } => {
                        let (f, s) = (fp(key(k)), sid(key(k), server.into()));
                        let want = m.learn(f, s, now, create);
                        proptest::prop_assert_eq!(t.learn(f, s, now, create), want);
                    }
                    Op::Lookup { key: k } => {
                        let f = fp(key(k));
                        let got = t.lookup(f, now);
                        let want = m.present(f, now);
                        proptest::prop_assert_eq!(got, want.map(|w| w.0));
                        if let Some((_, rec, _)) = want {
                            if m.head - rec < 16 {
                                proptest::prop_assert!(got.is_some());
                            }
                        }
                    }
                    Op::Wait { ms } => now += u64::from(ms),
                }
            }
            let s = t.stats(now);
            let live = keys.iter().filter(|&&k| m.present(fp(k), now).is_some()).count();
            proptest::prop_assert_eq!(s.entries, live as u64);
        }
    }

    /// Two threads learning and looking up the same 48 keys in a table of
    /// 64 (the ring laps every few dozen learns, ways move under the other
    /// thread): a lookup only ever answers a server learnt for its key.
    #[test]
    fn two_threads_never_see_a_foreign_server() {
        let o = Owned::new(64, 1_000_000);
        let t = o.t();
        std::thread::scope(|scope| {
            for thread in 0..2u64 {
                scope.spawn(move || {
                    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ thread;
                    let mut found = 0u32;
                    for i in 0..200_000u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let k = x % 48;
                        let v = (x >> 8) % 3 + 1;
                        if x & 0x100 != 0 {
                            t.learn(fp(k), sid(k, v), i, x & 0x200 != 0);
                        }
                        if let Some(s) = t.lookup(fp(k), i) {
                            assert_eq!(s >> 32, k, "thread {thread}: key {k} answered {s:#x}");
                            assert!((1..=3).contains(&(s & LOW32)), "{s:#x}");
                            found += 1;
                        }
                    }
                    assert!(found > 10_000, "{found}");
                });
            }
        });
        let s = t.stats(200_000);
        assert!(s.entries <= 64 && s.created > 0, "{s:?}");
    }
}
