//! One request queue for all workers: a lock-free FIFO of tickets in shared memory
//!
//! `ha_queue number` lets a request that finds every server full wait,
//! across all workers, in arrival order (docs/queue-design.md, §2). This
//! module is the shared-memory part: a ring of tickets, a [`Flight`] word
//! counting the waiters exactly across `kill -9`, and the reconciliation
//! of a dead worker's tickets. The caller gives the region (64-byte
//! aligned), the time, and its ledger slot; nothing here allocates, locks
//! or makes a system call. Rust's atomics are valid across processes (see
//! the crate note); they do not interoperate with nginx's locks, and
//! nothing here takes or honours one.
//!
//! The region is self-describing (its own header and version), so the
//! same code serves a standalone region and the queue section of a zone
//! (`ha_queue`, [`crate::layout::Zone::queue`]): the slot lines below
//! carry the ledger entry of `size` and the wake fields, indexed by the
//! zone's ledger slot, and [`Queue::reconcile`] is the three steps
//! `ledger::reconcile` runs after `reconcile.tree`.
//!
//! # Layout
//!
//! ```text
//!    0  Header ...... magic, version, max, cap (written once)
//!   64  QueueLine ... size (Flight), head, tail, pass, carried counters
//!  128  SlotLine × 32 one line per ledger slot: size entry, wake, pending,
//!                   served, timeouts, abandoned, overflows
//! 2176  WaitRow × 33  two lines per ledger slot, then one carried from an
//!                   older zone: the served waiters' wait histogram, wait sum
//! 6400  Cell × cap .. 16 bytes each: state word, enq_ms
//! ```
//!
//! [`size_for`]`(max) = 6400 + 16·cap`, `cap` the power of two at least
//! `2·max`. A cell's state word is `tag << 16 | WAITING? | slot`, `tag`
//! the ticket mod 2^48: `GONE(t)` (no WAITING bit) or `WAITING(t, s)`.
//! Cell `i` starts as `GONE(i − cap)`: "free for ticket `i`". Ticket `t`
//! lives in cell `t % cap`.
//!
//! # Entering (E1-E4)
//!
//! ```text
//! E1 flight::acquire(&size, max, slot's entry), refused → Full   [queue.enter.counted]
//! E2 loop: t = tail; c = cell[t % cap]
//!        tag(c) == t        → tail.cas(t, t+1), retry (a claim not yet published)
//!        t − head ≥ cap     → help_head(); if still → undo E1, Full
//!        c == GONE(t − cap) → c.cas(→ WAITING(t, slot)); enq_ms  [queue.enter.claimed]
//! E3 tail.cas(t, t+1)                                            [queue.enter.published]
//! E4 fence(SeqCst); head = help_head(): the caller picks now if it is t
//! ```
//!
//! The cell is claimed before `tail` moves: a worker killed between E2
//! and E3 leaves a cell naming its slot, and the next enterer moves
//! `tail` for it. No ticket exists without an owner.
//!
//! # Leaving (L1-L3), waking
//!
//! ```text
//! L1 cell.cas(WAITING(t, s) → GONE(t))                          [queue.leave.gone]
//! L2 flight::release(&size, slot's entry)                       [queue.leave.released]
//! L3 help_head(); if it moved past t, wake the new head          [queue.head.advanced]
//! ```
//!
//! The head's try ([`Queue::try_pick`]) runs the normal pick, then
//! leaves as served (`queue.try.picked` between the two), and records
//! how long it waited (`now_ms − enq_ms`) in its slot's `WaitRow`.
//!
//! L1 before L2 keeps `count(size) ≥ #WAITING`, so admission never
//! exceeds `max`. `help_head` moves `head` over `GONE` cells and returns
//! the head's ticket and owner. A wake of slot `s` is returned to the
//! caller only when `pending.swap(1)` was 0 (one wake on its way at a
//! time); the woken worker clears `pending` ([`Queue::woken`]) before it
//! looks at its waiters.
//!
//! **No lost wake-up.** A waiter publishes (E1-E3), fences, reads the
//! in-flight counts (its pick); a releaser releases its in-flight count,
//! fences ([`Queue::after_release`]), reads `size` and the head. The two
//! `SeqCst` fences are ordered one way or the other: the releaser sees the
//! waiter, or the waiter's pick sees the freed slot.
//!
//! # Crashes
//!
//! Reconciling dead slot `s` ([`Queue::reconcile`]): R1 every
//! `WAITING(_, s)` cell → `GONE` (`reconcile.queue.cells`, each); R2
//! `flight::drain` of the slot's `size` entry (`reconcile.queue.size`);
//! R3 its `wake` and `pending` zeroed. Every step reads what an earlier
//! run did, so a reconciler killed half-way is taken over and nothing is
//! returned twice. Then the caller kicks the head ([`Queue::kick`]).
//! There is no lock anywhere: helpers finish the multi-word steps
//! (`tail`, `head`), and the reconciliation undoes the rest.
//!
//! # Orderings
//!
//! `head`, `tail` and the cells' state words are changed and read with
//! `SeqCst`: the argument above needs one total order of claims, leaves,
//! head moves and in-flight changes, and none of them is on the path of a
//! request that does not wait. `enq_ms`, `wake`, the counters and the
//! wait rows are `Relaxed`: they publish nothing. `pending` is swapped
//! `AcqRel` and cleared `SeqCst` (before the woken worker looks at the
//! head).

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};
use core::sync::atomic::{fence, AtomicU32, AtomicU64};

use crate::crash::crash_point;
use crate::error::Error;
use crate::layout::flight::{self, Entry, Flight, Hold};
use crate::layout::{Zone, LEDGER_SLOTS};

/// `b"HABQUEUE"` as a little-endian integer: the header's first word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"HABQUEUE");

/// Bumped on every incompatible change of this layout (2: the carried
/// counters; 3: the wait rows).
pub const LAYOUT_VERSION: u32 = 3;

/// Alignment the region must have.
pub const ALIGN: usize = 64;

/// Most waiters a queue admits (`ha_queue number`; `nginx -t` refuses more).
pub const MAX_NUMBER: u32 = crate::spec::MAX_QUEUE;

const LINE_OFF: usize = 64;
const SLOTS_OFF: usize = 128;
const WAITS_OFF: usize = SLOTS_OFF + LEDGER_SLOTS * 64;
/// Wait rows: one per ledger slot, then the carried one.
const WAIT_ROWS: usize = LEDGER_SLOTS + 1;
/// The wait row of what [`Queue::carry_from`] added.
const CARRIED: usize = LEDGER_SLOTS;
const CELLS_OFF: usize = WAITS_OFF + WAIT_ROWS * core::mem::size_of::<WaitRow>();
const CELL_BYTES: usize = 16;

/// Bits of a ticket kept in a cell.
const TAG_MASK: u64 = (1 << 48) - 1;
const TAG_SHIFT: u32 = 16;
/// A cell's WAITING bit.
const WAITING: u64 = 1 << 6;
const SLOT_MASK: u64 = 63;

/// Entries of a slot line.
const ENTRY: usize = 0;
const WAKE: usize = 1;
const PENDING: usize = 2;
const SERVED: usize = 4;
const TIMEOUTS: usize = 5;
const ABANDONED: usize = 6;
const OVERFLOWS: usize = 7;

/// Written once, by [`Queue::init`], before the region is shared.
#[repr(C, align(64))]
struct Header {
    magic: u64,
    version: u32,
    max: u32,
    cap: u32,
}

/// The queue's shared words, one line.
#[repr(C, align(64))]
struct QueueLine {
    /// Waiters, all workers together, with one parity bit per ledger slot
    /// (see [`flight`]): +1 at E1 (refused at `max`), −1 at L2 or by the
    /// reconciliation of a dead slot (R2). Never below `#WAITING` cells.
    size: Flight,
    /// The oldest ticket not known to have left: moves only forward, by
    /// CAS `h → h+1` when cell `h` is `GONE(h)` (`help_head`). `head ≤ tail`.
    head: AtomicU64,
    /// The next ticket to hand out: moves only forward, by CAS `t → t+1`
    /// once cell `t` carries ticket `t` (its claimer at E3, or any helper).
    tail: AtomicU64,
    /// Skip-ahead (increment 6): the ticket allowed to pick past the head.
    /// Always 0 for now.
    pass: AtomicU64,
    /// The counters of an older zone's queue (served, timeouts,
    /// abandoned, overflows), added once by [`Queue::carry_from`] at
    /// configuration time, before the zone is shared; read `Relaxed`.
    carried: [AtomicU32; 4],
}

/// One ledger slot's line: its part of `size` and its wake fields.
///
/// - `ENTRY`: the slot's [`flight::Entry`] of `size`; written by its owner
///   (E1, L2) and by the reconciler of a dead owner (R2).
/// - `WAKE`: the owner's wake channel index + 1 (0: none); stored by the
///   owner ([`Queue::set_wake`]), zeroed at R3. `Relaxed`: an index only.
/// - `PENDING`: 1 while a wake of this slot is on its way: 0 → 1 by a
///   waker's swap, → 0 by the owner ([`Queue::woken`]) or R3.
/// - `SERVED`, `TIMEOUTS`, `ABANDONED`, `OVERFLOWS`: the owner's events,
///   mod 2^32, plain `Relaxed` adds; never cleared (the slot's next owner
///   counts on top, as `stats.rs` rows).
#[repr(C, align(64))]
struct SlotLine([AtomicU32; 16]);

/// Upper bounds of the wait histogram's buckets, ms (Prometheus's `le`:
/// a wait of `b` ms counts in the bucket of bound `b`); one more bucket
/// takes the waits above the last, up to `+Inf`. From a millisecond (the
/// clock's grain) to a minute (`ha_queue`'s default timeout).
pub const WAIT_BOUNDS_MS: [u64; 14] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000,
];

/// Buckets of the wait histogram: [`WAIT_BOUNDS_MS`] and `+Inf`.
pub const WAIT_BUCKETS: usize = WAIT_BOUNDS_MS.len() + 1;

/// How long the served waiters of one ledger slot waited (or, row
/// [`CARRIED`], those of an older zone's queue): statistics, no
/// protocol. Written only by the slot's owner, as it serves its waiter
/// in [`Queue::try_pick`], with `Relaxed` adds (every word is
/// independent and publishes nothing); never cleared, so the slot's next
/// owner counts on top, as `stats.rs` rows. The carried row is written
/// once, by [`Queue::carry_from`], before the zone is shared. Readers sum
/// the rows ([`Queue::waits`]).
#[repr(C, align(64))]
struct WaitRow {
    /// Waiters served per bucket (not cumulative): bucket `i` takes the
    /// waits in `(WAIT_BOUNDS_MS[i − 1], WAIT_BOUNDS_MS[i]]`, the last one
    /// those above a minute.
    buckets: [AtomicU64; WAIT_BUCKETS],
    /// Sum of their waits, ms.
    sum_ms: AtomicU64,
}

/// A ticket's cell.
#[repr(C, align(16))]
struct Cell {
    /// `GONE(t)` or `WAITING(t, s)` (module note). `GONE(t − cap)` →
    /// `WAITING(t, s)` by the enterer of ticket `t` (E2); `WAITING(t, s)`
    /// → `GONE(t)` by its owner (L1) or the reconciler of slot `s` (R1).
    state: AtomicU64,
    /// When ticket `t` entered (caller's ms clock); written by its owner
    /// after the claim, read only as information.
    enq_ms: AtomicU64,
}

const _: () = {
    assert!(core::mem::size_of::<WaitRow>() == 128);
    assert!(core::mem::size_of::<SlotLine>() == 64);
    assert!(CELLS_OFF == 6400);
};

#[inline]
fn tag(t: u64) -> u64 {
    t & TAG_MASK
}

#[inline]
fn gone(t: u64) -> u64 {
    tag(t) << TAG_SHIFT
}

#[inline]
fn waiting(t: u64, slot: u32) -> u64 {
    gone(t) | WAITING | u64::from(slot)
}

/// The ring size for `max` waiters: a power of two, at least `2·max`.
fn cap_for(max: u32) -> Result<u32, Error> {
    if max == 0 || max > MAX_NUMBER {
        return Err(Error::InvalidArgument);
    }
    Ok((2 * max).next_power_of_two())
}

/// Bytes a queue of `max` waiters takes (1 to [`MAX_NUMBER`]).
pub fn size_for(max: u32) -> Result<usize, Error> {
    Ok(CELLS_OFF + cap_for(max)? as usize * CELL_BYTES)
}

/// A waiter's place: its ticket and its ledger slot. Kept by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The ticket number: the order of service.
    pub t: u64,
    /// The owner's ledger slot.
    pub slot: u32,
}

/// The head of the queue: its ticket and the slot that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The oldest ticket still waiting.
    pub t: u64,
    /// Its owner's ledger slot.
    pub slot: u32,
}

/// A wake the caller must deliver: the head's owner, and the channel it
/// registered ([`Queue::set_wake`]; `None`: none, the caller kicks that
/// worker another way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// The head's ticket.
    pub t: u64,
    /// The slot to wake.
    pub slot: u32,
    /// Its wake channel.
    pub channel: Option<u32>,
}

/// What entering gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enter {
    /// The queue holds `max` waiters, or its ring is all holes behind a
    /// blocked head: an overflow (502).
    Full,
    /// Queued; `head` says the ticket is the head already, so the caller
    /// picks at once (E4) rather than wait for a wake.
    Queued {
        /// The waiter's place.
        ticket: Ticket,
        /// Whether it is the head.
        head: bool,
    },
}

/// Why a waiter leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// It picked a server.
    Served,
    /// Its deadline passed.
    Timeout,
    /// Its client went away.
    Abandoned,
}

/// What a try gives the head ([`Queue::try_pick`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Try<T> {
    /// Not the head, or the pick found nothing: keep waiting.
    Wait,
    /// Picked and out of the queue; deliver `wake` to the new head.
    Picked(T, Option<Wake>),
}

/// The counters of every slot, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Waiters that picked.
    pub served: u32,
    /// Waiters whose deadline passed.
    pub timeouts: u32,
    /// Waiters whose client went away.
    pub abandoned: u32,
    /// Enterers refused.
    pub overflows: u32,
}

/// How long the served waiters waited, every slot summed: a histogram
/// over [`WAIT_BOUNDS_MS`] and the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    /// Waiters served per bucket, not cumulative (see [`WAIT_BOUNDS_MS`];
    /// the last bucket: above the last bound).
    pub buckets: [u64; WAIT_BUCKETS],
    /// Sum of their waits, ms.
    pub sum_ms: u64,
}

impl Waits {
    /// The bucket of a wait of `ms`.
    pub fn bucket_of(ms: u64) -> usize {
        WAIT_BOUNDS_MS.partition_point(|&b| b < ms)
    }

    /// Waiters timed: those served through [`Queue::try_pick`] (a
    /// [`Queue::leave`] as served has no time to record).
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |n, &b| n.wrapping_add(b))
    }

    /// The waits counted in bucket `i` or below (Prometheus's cumulative
    /// `_bucket` sample of bound `le = WAIT_BOUNDS_MS[i]`, `+Inf` for the
    /// last).
    pub fn cumulative(&self, i: usize) -> u64 {
        self.buckets[..=i.min(WAIT_BUCKETS - 1)]
            .iter()
            .fold(0u64, |n, &b| n.wrapping_add(b))
    }

    /// The `q`-quantile of the waits (0 ≤ `q` ≤ 1), ms, estimated as
    /// Prometheus's `histogram_quantile` does, so that the API and a
    /// dashboard agree: linear inside the bucket where the rank falls
    /// (from 0 for the first), and the last finite bound when it falls
    /// above it. `None` before the first served waiter.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && below.saturating_add(n) as f64 >= rank {
                let Some(&upper) = WAIT_BOUNDS_MS.get(i) else {
                    break;
                };
                let lower = if i == 0 { 0 } else { WAIT_BOUNDS_MS[i - 1] };
                let within = ((rank - below as f64) / n as f64).max(0.0);
                return Some(lower as f64 + (upper - lower) as f64 * within);
            }
            below = below.saturating_add(n);
        }
        Some(WAIT_BOUNDS_MS[WAIT_BOUNDS_MS.len() - 1] as f64)
    }
}

/// What the queue holds, read cell by cell (tests and diagnostics; not
/// a snapshot: concurrent changes may show half).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// `count(size)`.
    pub size: u32,
    /// Σ over slots of their exact part of `size` (flight's invariant:
    /// equals `size` at rest).
    pub ledger_sum: u32,
    /// `WAITING` cells per slot.
    pub waiting: [u32; LEDGER_SLOTS],
    /// `head`, `tail`.
    pub head: u64,
    /// See `head`.
    pub tail: u64,
    /// The head cell is `WAITING(head)` (or `head == tail`).
    pub head_waiting: bool,
}

/// A view of a queue region.
#[derive(Debug, Clone, Copy)]
pub struct Queue<'a> {
    base: NonNull<u8>,
    max: u32,
    cap: u32,
    _region: PhantomData<&'a ()>,
}

// SAFETY: the region is only changed through atomics once built (the
// header is written before it is shared); sharing the view between
// threads is what workers do between processes.
unsafe impl Send for Queue<'_> {}
// SAFETY: as above.
unsafe impl Sync for Queue<'_> {}

impl<'a> Queue<'a> {
    /// Builds an empty queue of `max` waiters in the `len` bytes at `mem`
    /// (at least [`size_for`]`(max)`, 64-byte aligned, else
    /// [`Error::NoSpace`]; `max` 1 to [`MAX_NUMBER`], else
    /// [`Error::InvalidArgument`]). nginx: in the master, before the fork.
    ///
    /// # Safety
    ///
    /// `mem` must be valid for reads and writes of `len` bytes for `'a`,
    /// and nobody else may access them during this call.
    pub unsafe fn init(mem: *mut u8, len: usize, max: u32) -> Result<Queue<'a>, Error> {
        let size = size_for(max)?;
        let cap = cap_for(max)?;
        if mem.is_null() || mem as usize % ALIGN != 0 || len < size {
            return Err(Error::NoSpace);
        }
        // SAFETY: `mem` is valid for `len >= size` bytes, aligned, ours
        // alone (function contract); zeroed atomics are valid atomics.
        unsafe {
            core::ptr::write_bytes(mem, 0, size);
            mem.cast::<Header>().write(Header {
                magic: MAGIC,
                version: LAYOUT_VERSION,
                max,
                cap,
            });
        }
        // SAFETY: a queue was just built at `mem`.
        let q = unsafe { Queue::from_ptr(mem) };
        for i in 0..u64::from(cap) {
            q.cell(i)
                .state
                .store(gone(i.wrapping_sub(u64::from(cap))), Relaxed);
        }
        Ok(q)
    }

    /// Adopts the queue already at `mem` (a reload keeping the zone):
    /// [`Error::BadLayout`] unless its magic and version are ours and its
    /// size fits `len`.
    ///
    /// # Safety
    ///
    /// `mem` must be valid for reads and writes of `len` bytes for `'a`
    /// (other processes may use the queue concurrently, through atomics).
    pub unsafe fn attach(mem: *mut u8, len: usize) -> Result<Queue<'a>, Error> {
        if mem.is_null() || mem as usize % ALIGN != 0 || len < CELLS_OFF {
            return Err(Error::NoSpace);
        }
        // SAFETY: aligned, long enough for a header, never written after
        // init.
        let h = unsafe { &*mem.cast::<Header>() };
        let ok = h.magic == MAGIC
            && h.version == LAYOUT_VERSION
            && cap_for(h.max) == Ok(h.cap)
            && size_for(h.max).is_ok_and(|s| s <= len);
        if !ok {
            return Err(Error::BadLayout);
        }
        // SAFETY: the header is a queue's that fits in `len`.
        Ok(unsafe { Queue::from_ptr(mem) })
    }

    /// A view of the queue at `mem`.
    ///
    /// # Safety
    ///
    /// `mem` holds a queue built by [`Queue::init`] (or accepted by
    /// [`Queue::attach`]), mapped for `'a`.
    pub unsafe fn from_ptr(mem: *mut u8) -> Queue<'a> {
        // SAFETY: a queue starts with its header (function contract).
        let h = unsafe { &*mem.cast::<Header>() };
        Queue {
            // SAFETY: a valid queue is not at null.
            base: unsafe { NonNull::new_unchecked(mem) },
            max: h.max,
            cap: h.cap,
            _region: PhantomData,
        }
    }

    /// Start of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Most waiters (`ha_queue number`).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Cells in the ring.
    pub fn cap(&self) -> u32 {
        self.cap
    }

    #[inline]
    fn line(&self) -> &'a QueueLine {
        // SAFETY: the queue line follows the header, inside the region.
        unsafe { &*self.base.as_ptr().add(LINE_OFF).cast::<QueueLine>() }
    }

    #[inline]
    fn slot_line(&self, slot: u32) -> &'a SlotLine {
        debug_assert!((slot as usize) < LEDGER_SLOTS);
        let s = slot as usize % LEDGER_SLOTS;
        // SAFETY: `s < LEDGER_SLOTS` lines of 64 bytes from SLOTS_OFF,
        // inside the region, 64-byte aligned.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(SLOTS_OFF + s * 64)
                .cast::<SlotLine>()
        }
    }

    #[inline]
    fn wait_row(&self, row: usize) -> &'a WaitRow {
        debug_assert!(row < WAIT_ROWS);
        let r = row % WAIT_ROWS;
        // SAFETY: `r < WAIT_ROWS` rows of 128 bytes from WAITS_OFF, inside
        // the region, 64-byte aligned.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(WAITS_OFF + r * core::mem::size_of::<WaitRow>())
                .cast::<WaitRow>()
        }
    }

    #[inline]
    fn cell(&self, t: u64) -> &'a Cell {
        let i = (t & u64::from(self.cap - 1)) as usize;
        // SAFETY: `i < cap` cells of 16 bytes from CELLS_OFF, inside the
        // region (constructors checked its size), 16-byte aligned.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(CELLS_OFF + i * CELL_BYTES)
                .cast::<Cell>()
        }
    }

    #[inline]
    fn hold(&self, slot: u32) -> Hold<'a> {
        Hold::new(&self.slot_line(slot).0, slot)
    }

    /// Waiters now (`count(size)`), all workers together. A request that
    /// is not a retry picks only while this is 0 (newcomers never
    /// overtake).
    #[inline]
    pub fn waiting(&self) -> u32 {
        self.line().size.load(SeqCst)
    }

    /// Enters the queue for the owner of ledger slot `slot` (below
    /// [`LEDGER_SLOTS`]; a worker without one answers 502 instead) at
    /// `now_ms` (E1-E4).
    pub fn enter(&self, slot: u32, now_ms: u64) -> Enter {
        if slot as usize >= LEDGER_SLOTS {
            return Enter::Full;
        }
        let l = self.line();
        let hold = Some(self.hold(slot));
        // E1: counted within `max`, exactly (flight's protocol).
        if !flight::acquire(l.size.word(), self.max, hold, ENTRY) {
            self.count(slot, OVERFLOWS);
            return Enter::Full;
        }
        crash_point("queue.enter.counted");
        let cap = u64::from(self.cap);
        let t = loop {
            let t = l.tail.load(SeqCst);
            let cell = self.cell(t);
            let c = cell.state.load(SeqCst);
            if c >> TAG_SHIFT == tag(t) {
                // Claimed, not yet published (its claimer is slow or dead).
                let _ = l.tail.compare_exchange(t, t + 1, SeqCst, Relaxed);
                continue;
            }
            if t.wrapping_sub(l.head.load(SeqCst)) >= cap {
                let _ = self.help_head();
                if t.wrapping_sub(l.head.load(SeqCst)) >= cap && l.tail.load(SeqCst) == t {
                    // A ring of holes behind a blocked head: an overflow.
                    flight::release(l.size.word(), hold, ENTRY);
                    self.count(slot, OVERFLOWS);
                    return Enter::Full;
                }
                continue;
            }
            if c == gone(t.wrapping_sub(cap))
                && cell
                    .state
                    .compare_exchange(c, waiting(t, slot), SeqCst, Relaxed)
                    .is_ok()
            {
                cell.enq_ms.store(now_ms, Relaxed);
                break t;
            }
            // Another enterer claimed it, or a stale `tail`: again.
            core::hint::spin_loop();
        };
        crash_point("queue.enter.claimed");
        // E3: published (a helper may have done it already).
        let _ = l.tail.compare_exchange(t, t + 1, SeqCst, Relaxed);
        crash_point("queue.enter.published");
        // E4: against a concurrent release (module note).
        fence(SeqCst);
        let head = self.help_head().is_some_and(|h| h.t == t);
        Enter::Queued {
            ticket: Ticket { t, slot },
            head,
        }
    }

    /// Moves `head` over the cells that left; the head still waiting, if
    /// any.
    pub fn help_head(&self) -> Option<Head> {
        let l = self.line();
        loop {
            let h = l.head.load(SeqCst);
            let t = l.tail.load(SeqCst);
            if h >= t {
                return None;
            }
            let c = self.cell(h).state.load(SeqCst);
            if c == gone(h) {
                let _ = l.head.compare_exchange(h, h + 1, SeqCst, Relaxed);
            } else if c & !(WAITING | SLOT_MASK) == gone(h) && c & WAITING != 0 {
                return Some(Head {
                    t: h,
                    slot: (c & SLOT_MASK) as u32,
                });
            } else {
                // `head` moved meanwhile (the cell holds a later ticket):
                // read again.
                core::hint::spin_loop();
            }
        }
    }

    /// The wake of `head`'s owner, unless one is already on its way.
    fn wake(&self, head: Head) -> Option<Wake> {
        let sl = self.slot_line(head.slot);
        if sl.0[PENDING].swap(1, AcqRel) != 0 {
            return None;
        }
        let w = sl.0[WAKE].load(Relaxed);
        Some(Wake {
            t: head.t,
            slot: head.slot,
            channel: w.checked_sub(1),
        })
    }

    /// The release hook: after a request's in-flight count is released,
    /// a zone with a queue calls this; the wake to deliver, if a waiter
    /// heads the queue.
    pub fn after_release(&self) -> Option<Wake> {
        fence(SeqCst);
        if self.line().size.load(Relaxed) == 0 {
            return None;
        }
        self.kick()
    }

    /// Wakes the head whatever happened (a health verdict, an API change,
    /// a reconciliation): its wake, if one is not already on its way.
    pub fn kick(&self) -> Option<Wake> {
        self.help_head().and_then(|h| self.wake(h))
    }

    /// Whether `ticket` is the head (it may pick).
    pub fn is_head(&self, ticket: Ticket) -> bool {
        self.help_head().is_some_and(|h| h.t == ticket.t)
    }

    /// The worker of `slot` was woken: clears its `pending` before it
    /// looks at its waiters, so that a later wake is sent again.
    pub fn woken(&self, slot: u32) {
        self.slot_line(slot).0[PENDING].store(0, SeqCst);
    }

    /// Registers `slot`'s wake channel (`None`: none).
    pub fn set_wake(&self, slot: u32, channel: Option<u32>) {
        let v = channel.map_or(0, |c| c.saturating_add(1));
        self.slot_line(slot).0[WAKE].store(v, Relaxed);
    }

    /// The head's try at `now_ms`: `pick` runs only when `ticket` is the
    /// head (the normal pick, through `flight::acquire`'s `max_conns`
    /// CAS); when it gives something, the waiter leaves the queue as
    /// served, and its wait (`now_ms` − when it entered) is recorded in its
    /// slot's wait row.
    pub fn try_pick<T>(
        &self,
        ticket: Ticket,
        now_ms: u64,
        pick: impl FnOnce() -> Option<T>,
    ) -> Try<T> {
        if !self.is_head(ticket) {
            return Try::Wait;
        }
        match pick() {
            Some(p) => {
                // Counted in flight, still in the queue: a kill here
                // over-counts `size`, never in-flight (R1, R2 repair it).
                crash_point("queue.try.picked");
                // Read before L1: once `GONE`, the cell may take the
                // ticket `cap` further on and its time.
                let enq_ms = self.cell(ticket.t).enq_ms.load(Relaxed);
                let wake = self.leave(ticket, Leave::Served);
                self.record_wait(ticket.slot, now_ms.saturating_sub(enq_ms));
                Try::Picked(p, wake)
            }
            None => Try::Wait,
        }
    }

    /// Counts a served waiter's wait of `ms` in `slot`'s row (its owner's:
    /// the row's only writer).
    fn record_wait(&self, slot: u32, ms: u64) {
        if slot as usize >= LEDGER_SLOTS {
            return;
        }
        let row = self.wait_row(slot as usize);
        row.buckets[Waits::bucket_of(ms)].fetch_add(1, Relaxed);
        row.sum_ms.fetch_add(ms, Relaxed);
    }

    /// `ticket` leaves (served, timed out, abandoned: L1-L3); the wake to
    /// deliver if it was the head and another waits. Only its owner calls
    /// this, once.
    pub fn leave(&self, ticket: Ticket, why: Leave) -> Option<Wake> {
        let l = self.line();
        let Ticket { t, slot } = ticket;
        if self
            .cell(t)
            .state
            .compare_exchange(waiting(t, slot), gone(t), SeqCst, Relaxed)
            .is_err()
        {
            debug_assert!(false, "ticket {t} of slot {slot} left twice");
            return None;
        }
        crash_point("queue.leave.gone");
        flight::release(l.size.word(), Some(self.hold(slot)), ENTRY);
        crash_point("queue.leave.released");
        self.count(
            slot,
            match why {
                Leave::Served => SERVED,
                Leave::Timeout => TIMEOUTS,
                Leave::Abandoned => ABANDONED,
            },
        );
        let head = self.help_head();
        crash_point("queue.head.advanced");
        // Only a head that leaves wakes the next (one wake per leave): a
        // head past `t` means every older ticket has left too.
        match head {
            Some(h) if h.t > t => self.wake(h),
            _ => None,
        }
    }

    #[inline]
    fn count(&self, slot: u32, what: usize) {
        self.slot_line(slot).0[what].fetch_add(1, Relaxed);
    }

    /// Reconciles dead slot `slot` (R1-R3): its tickets gone, its part of
    /// `size` returned, its wake fields cleared; the number of its
    /// waiters returned. Idempotent: a reconciler killed half-way is
    /// taken over by running it again. The ledger's owner word makes the
    /// caller the one reconciler; then the caller calls [`Queue::kick`].
    pub fn reconcile(&self, slot: u32) -> u32 {
        if slot as usize >= LEDGER_SLOTS {
            return 0;
        }
        // R1: every cell of the dead slot. A cell claimed at E2 but not
        // published sits at `tail`, inside [0, cap) like all others.
        for i in 0..u64::from(self.cap) {
            let cell = self.cell(i);
            let c = cell.state.load(SeqCst);
            if c & WAITING != 0 && (c & SLOT_MASK) as u32 == slot {
                let g = c & !(WAITING | SLOT_MASK);
                if cell.state.compare_exchange(c, g, SeqCst, Relaxed).is_ok() {
                    crash_point("reconcile.queue.cells");
                }
            }
        }
        // R2: its part of `size`, exactly (flight's drain).
        let sl = self.slot_line(slot);
        let n = flight::drain(self.line().size.word(), &sl.0[ENTRY], slot);
        crash_point("reconcile.queue.size");
        // R3.
        sl.0[WAKE].store(0, Relaxed);
        sl.0[PENDING].store(0, SeqCst);
        n
    }

    /// Adds `old`'s counters to this (fresh) queue's, so that a reload
    /// that rebuilds the zone keeps them (as statistics are carried).
    /// Waiters are not carried: they wait in the old zone, whose old
    /// workers serve them or time them out (docs/queue-design.md §4).
    pub fn carry_from(&self, old: Queue<'_>) {
        let o = old.counters();
        let c = &self.line().carried;
        for (w, v) in c
            .iter()
            .zip([o.served, o.timeouts, o.abandoned, o.overflows])
        {
            w.fetch_add(v, Relaxed);
        }
        let ow = old.waits();
        let row = self.wait_row(CARRIED);
        for (w, v) in row.buckets.iter().zip(ow.buckets) {
            w.fetch_add(v, Relaxed);
        }
        row.sum_ms.fetch_add(ow.sum_ms, Relaxed);
    }

    /// The wait histogram of every slot, summed (mod 2^64), with what was
    /// carried from an older zone. Not a snapshot: a waiter served while
    /// the rows are read may show in some sums only.
    pub fn waits(&self) -> Waits {
        let mut w = Waits::default();
        for r in 0..WAIT_ROWS {
            let row = self.wait_row(r);
            for (sum, b) in w.buckets.iter_mut().zip(&row.buckets) {
                *sum = sum.wrapping_add(b.load(Relaxed));
            }
            w.sum_ms = w.sum_ms.wrapping_add(row.sum_ms.load(Relaxed));
        }
        w
    }

    /// The counters of every slot, summed (mod 2^32), with those carried
    /// from an older zone.
    pub fn counters(&self) -> Counters {
        let k = &self.line().carried;
        let mut c = Counters {
            served: k[0].load(Relaxed),
            timeouts: k[1].load(Relaxed),
            abandoned: k[2].load(Relaxed),
            overflows: k[3].load(Relaxed),
        };
        for s in 0..LEDGER_SLOTS as u32 {
            let r = &self.slot_line(s).0;
            c.served = c.served.wrapping_add(r[SERVED].load(Relaxed));
            c.timeouts = c.timeouts.wrapping_add(r[TIMEOUTS].load(Relaxed));
            c.abandoned = c.abandoned.wrapping_add(r[ABANDONED].load(Relaxed));
            c.overflows = c.overflows.wrapping_add(r[OVERFLOWS].load(Relaxed));
        }
        c
    }

    /// What the queue holds, cell by cell (see [`Audit`]).
    pub fn audit(&self) -> Audit {
        let l = self.line();
        let word = l.size.word().load(Acquire);
        let mut ledger_sum = 0u32;
        for s in 0..LEDGER_SLOTS as u32 {
            let e = Entry(self.slot_line(s).0[ENTRY].load(Acquire));
            ledger_sum += e.exact(word & (1u64 << (32 + s)) != 0);
        }
        let mut waiting = [0u32; LEDGER_SLOTS];
        for i in 0..u64::from(self.cap) {
            let c = self.cell(i).state.load(SeqCst);
            if c & WAITING != 0 {
                waiting[(c & SLOT_MASK) as usize % LEDGER_SLOTS] += 1;
            }
        }
        let head = l.head.load(SeqCst);
        let tail = l.tail.load(SeqCst);
        let c = self.cell(head).state.load(SeqCst);
        Audit {
            size: flight::count(word),
            ledger_sum,
            waiting,
            head,
            tail,
            head_waiting: head == tail
                || (c & WAITING != 0 && c & !(WAITING | SLOT_MASK) == gone(head)),
        }
    }
}

impl<'a> Zone<'a> {
    /// The zone's request queue (`ha_queue`), `None` when it has none: one
    /// branch on a root field, all that a zone without a queue pays.
    #[inline]
    pub fn queue(&self) -> Option<Queue<'a>> {
        let off = self.root().queue_off;
        if off == 0 {
            return None;
        }
        // SAFETY: a non-zero `queue_off` names a queue section that
        // `Zone::init_with` built (or `Zone::attach_with` checked) inside
        // the zone, which is mapped for 'a (layout contract).
        Some(unsafe { Queue::from_ptr(self.as_ptr().add(off as usize)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A region for a queue: 64-byte lines.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u8; 64]);

    struct Region(Vec<Line>);

    impl Region {
        fn new(max: u32) -> Region {
            let n = size_for(max).unwrap().div_ceil(64);
            let mut r = Region(vec![Line([0xa5; 64]); n]);
            let len = n * 64;
            // SAFETY: the vector's `len` bytes are ours alone.
            unsafe { Queue::init(r.0.as_mut_ptr().cast(), len, max) }.unwrap();
            r
        }

        fn queue(&self) -> Queue<'_> {
            // SAFETY: built by `new`, alive as long as the borrow.
            unsafe { Queue::attach(self.0.as_ptr().cast_mut().cast(), self.0.len() * 64) }.unwrap()
        }
    }

    fn queued(e: Enter) -> (Ticket, bool) {
        match e {
            Enter::Queued { ticket, head } => (ticket, head),
            Enter::Full => panic!("full"),
        }
    }

    fn sound(q: Queue<'_>) -> Audit {
        let a = q.audit();
        assert_eq!(a.size, a.ledger_sum, "{a:?}");
        assert_eq!(a.size, a.waiting.iter().sum::<u32>(), "{a:?}");
        assert!(a.head_waiting, "{a:?}");
        a
    }

    #[test]
    fn sizes_and_bad_regions() {
        assert_eq!(size_for(1), Ok(CELLS_OFF + 2 * 16));
        assert_eq!(size_for(500), Ok(CELLS_OFF + 1024 * 16));
        assert_eq!(size_for(0), Err(Error::InvalidArgument));
        assert_eq!(size_for(MAX_NUMBER + 1), Err(Error::InvalidArgument));
        let r = Region::new(4);
        let p = r.0.as_ptr().cast_mut().cast::<u8>();
        // SAFETY: inside the region; too short, then misaligned.
        unsafe {
            assert_eq!(Queue::init(p, 64, 4).err(), Some(Error::NoSpace));
            assert_eq!(Queue::attach(p.add(1), 4096).err(), Some(Error::NoSpace));
            assert_eq!(Queue::attach(p, CELLS_OFF).err(), Some(Error::BadLayout));
        }
        assert_eq!(r.queue().max(), 4);
        assert_eq!(r.queue().cap(), 8);
    }

    /// Tickets from three workers are served in ticket order; each head
    /// that leaves wakes the owner of the next, once.
    #[test]
    fn fifo_across_workers() {
        let r = Region::new(8);
        let q = r.queue();
        for s in 0..3 {
            q.set_wake(s, Some(10 + s));
        }
        let slots = [2, 0, 1, 1, 2, 0];
        let mut tickets = Vec::new();
        for (k, &s) in slots.iter().enumerate() {
            let (t, head) = queued(q.enter(s, 100 + k as u64));
            assert_eq!(
                t,
                Ticket {
                    t: k as u64,
                    slot: s
                }
            );
            assert_eq!(head, k == 0, "only the first is the head");
            tickets.push(t);
        }
        assert_eq!(q.waiting(), 6);
        sound(q);
        let mut served = Vec::new();
        for (k, &t) in tickets.iter().enumerate() {
            // Nobody else may pick, whatever the capacity.
            for &u in &tickets[k + 1..] {
                assert_eq!(q.try_pick(u, 0, || Some(())), Try::Wait);
            }
            let Try::Picked(p, wake) = q.try_pick(t, 0, || Some(t.t)) else {
                panic!("head {t:?} did not pick");
            };
            served.push(p);
            match tickets.get(k + 1) {
                Some(n) => {
                    let w = wake.expect("the next head is woken");
                    assert_eq!((w.t, w.slot, w.channel), (n.t, n.slot, Some(10 + n.slot)));
                    q.woken(n.slot);
                }
                None => assert_eq!(wake, None),
            }
            sound(q);
        }
        assert_eq!(served, [0, 1, 2, 3, 4, 5]);
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.counters().served, 6);
    }

    /// Waits fall in the bucket of the first bound at or above them:
    /// `le` as Prometheus means it (a wait of exactly 5 ms is in `le=5`).
    #[test]
    fn waits_fall_in_their_buckets() {
        for (ms, bucket) in [
            (0, 0),
            (1, 0),
            (2, 1),
            (5, 1),
            (6, 2),
            (40, 4),
            (1000, 8),
            (1001, 9),
            (60_000, 13),
            (60_001, 14),
            (u64::MAX, 14),
        ] {
            assert_eq!(Waits::bucket_of(ms), bucket, "{ms} ms");
        }
        assert_eq!(WAIT_BUCKETS, 15);
        assert!(WAIT_BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
    }

    /// Percentiles as Prometheus's `histogram_quantile` computes them
    /// from the same buckets, spelled out.
    #[test]
    fn wait_percentiles_interpolate_inside_their_bucket() {
        let of = |pairs: &[(usize, u64)]| {
            let mut w = Waits::default();
            for &(i, n) in pairs {
                w.buckets[i] = n;
            }
            w
        };
        assert_eq!(Waits::default().quantile(0.5), None, "nobody served");
        // 100 waits: 50 in (0, 1], 40 in (25, 50], 10 in (100, 250].
        let w = of(&[(0, 50), (4, 40), (6, 10)]);
        assert_eq!(w.count(), 100);
        assert_eq!(w.cumulative(3), 50);
        assert_eq!(w.cumulative(4), 90);
        assert_eq!(w.cumulative(99), 100);
        for (q, want) in [
            (0.5, 1.0),            // rank 50: the top of the first bucket
            (0.25, 0.5),           // rank 25 of 50 in (0, 1]
            (0.6, 25.0 + 6.25),    // rank 60: 10 of 40 in (25, 50]
            (0.9, 50.0),           // rank 90: the top of (25, 50]
            (0.99, 100.0 + 135.0), // rank 99: 9 of 10 in (100, 250]
            (1.0, 250.0),
        ] {
            assert_eq!(w.quantile(q), Some(want), "q {q}");
        }
        assert_eq!(w.quantile(1.5), None);
        // Above the last bound: the last bound, as Prometheus.
        let w = of(&[(0, 1), (14, 9)]);
        assert_eq!(w.quantile(0.99), Some(60_000.0));
        assert_eq!(w.quantile(0.05), Some(0.5));
    }

    /// A served waiter's wait, `now_ms` at its try minus its entry time,
    /// is counted in its own slot's row; timeouts and abandons are not
    /// timed; readers see every slot summed.
    #[test]
    fn served_waits_are_recorded_per_slot() {
        let r = Region::new(8);
        let q = r.queue();
        assert_eq!(q.waits(), Waits::default());
        // (slot, entered at, tried at): waits 0, 3, 40, 40, 900, 70_000.
        let plan = [
            (0, 100, 100),
            (1, 100, 103),
            (2, 100, 140),
            (0, 200, 240),
            (1, 300, 1200),
            (3, 300, 70_300),
        ];
        let tickets: Vec<_> = plan
            .iter()
            .map(|&(s, at, _)| queued(q.enter(s, at)).0)
            .collect();
        // One more that times out, one abandoned: not timed.
        let late = queued(q.enter(2, 0)).0;
        let gone = queued(q.enter(2, 0)).0;
        q.leave(late, Leave::Timeout);
        q.leave(gone, Leave::Abandoned);
        for (t, &(_, _, now)) in tickets.iter().zip(&plan) {
            // Not yet its turn: no pick, nothing recorded.
            if let Some(next) = tickets.get(t.t as usize + 1) {
                assert_eq!(q.try_pick(*next, now, || Some(())), Try::Wait);
            }
            assert!(matches!(
                q.try_pick(*t, now, || Some(())),
                Try::Picked((), _)
            ));
        }
        let w = q.waits();
        let mut want = [0u64; WAIT_BUCKETS];
        for (i, n) in [(0, 1), (1, 1), (4, 2), (8, 1), (14, 1)] {
            want[i] = n;
        }
        assert_eq!(w.buckets, want);
        assert_eq!(w.sum_ms, 3 + 40 + 40 + 900 + 70_000);
        assert_eq!(w.count(), u64::from(q.counters().served));
        // Each slot wrote its own row.
        let row = |s: usize| {
            let r = q.wait_row(s);
            (
                r.buckets.iter().map(|b| b.load(Relaxed)).sum::<u64>(),
                r.sum_ms.load(Relaxed),
            )
        };
        assert_eq!(
            [row(0), row(1), row(2), row(3)],
            [(2, 40), (2, 903), (1, 40), (1, 70_000)]
        );
        assert_eq!(row(CARRIED), (0, 0));
        // A clock that went backwards (another worker's `now`): 0 ms.
        let t = queued(q.enter(5, 500)).0;
        assert!(matches!(
            q.try_pick(t, 400, || Some(())),
            Try::Picked((), _)
        ));
        assert_eq!(q.waits().buckets[0], 2);
        assert_eq!(q.waits().sum_ms, w.sum_ms);
    }

    /// `number` waiters at most; a leave makes room again.
    #[test]
    fn overflow_at_max() {
        let r = Region::new(3);
        let q = r.queue();
        let t: Vec<_> = (0..3).map(|_| queued(q.enter(0, 0)).0).collect();
        assert_eq!(q.enter(1, 0), Enter::Full);
        assert_eq!(q.enter(1, 0), Enter::Full);
        assert_eq!(q.counters().overflows, 2);
        assert_eq!(q.waiting(), 3);
        q.leave(t[1], Leave::Abandoned);
        let (u, head) = queued(q.enter(1, 0));
        assert_eq!((u.t, head), (3, false));
        assert_eq!(q.enter(1, 0), Enter::Full);
        sound(q);
    }

    /// A ring of holes behind a blocked head is an overflow too.
    #[test]
    fn holes_behind_a_blocked_head_overflow() {
        let r = Region::new(2);
        let q = r.queue();
        let (head, _) = queued(q.enter(0, 0));
        for k in 1..4 {
            let (t, _) = queued(q.enter(1, 0));
            assert_eq!(t.t, k);
            assert_eq!(q.leave(t, Leave::Timeout), None, "not the head: no wake");
        }
        assert_eq!(q.enter(1, 0), Enter::Full);
        assert_eq!(q.waiting(), 1);
        // The head leaves: the holes are passed, the ring usable.
        assert_eq!(q.leave(head, Leave::Timeout), None);
        let a = sound(q);
        assert_eq!((a.head, a.tail), (4, 4));
        let (t, is_head) = queued(q.enter(1, 0));
        assert_eq!((t.t, is_head), (4, true));
        assert_eq!(q.counters().timeouts, 4);
    }

    /// Leaving in the middle (abandon, timeout) wakes nobody; the head's
    /// leave wakes the next waiter still there.
    #[test]
    fn leaving_the_middle_keeps_the_order() {
        let r = Region::new(8);
        let q = r.queue();
        let t: Vec<_> = (0..5).map(|s| queued(q.enter(s, 0)).0).collect();
        assert_eq!(q.leave(t[1], Leave::Abandoned), None);
        assert_eq!(q.leave(t[2], Leave::Timeout), None);
        let w = q.leave(t[0], Leave::Timeout).expect("a wake");
        assert_eq!((w.t, w.slot, w.channel), (3, 3, None));
        assert!(q.is_head(t[3]));
        assert!(!q.is_head(t[4]));
        let c = q.counters();
        assert_eq!((c.abandoned, c.timeouts, c.served), (1, 2, 0));
        sound(q);
    }

    /// A head that finds nothing keeps its place; one wake at a time is
    /// on its way to a slot until it says it was woken.
    #[test]
    fn wakes_are_not_repeated_while_pending() {
        let r = Region::new(4);
        let q = r.queue();
        assert_eq!(q.after_release(), None, "nobody waits");
        let (t, head) = queued(q.enter(5, 0));
        assert!(head);
        assert_eq!(q.try_pick(t, 0, || None::<()>), Try::Wait);
        assert_eq!(q.after_release().map(|w| w.slot), Some(5));
        assert_eq!(q.after_release(), None, "already pending");
        assert_eq!(q.kick(), None);
        q.woken(5);
        assert_eq!(q.kick().map(|w| w.t), Some(0));
        q.woken(5);
        assert!(matches!(q.try_pick(t, 0, || Some(1)), Try::Picked(1, None)));
        assert_eq!(q.after_release(), None);
    }

    /// A dead worker's waiters are reconciled: its cells gone, its part
    /// of `size` returned, the next head kicked; running it again
    /// returns nothing.
    #[test]
    fn reconcile_returns_a_dead_slot() {
        let r = Region::new(8);
        let q = r.queue();
        let dead: Vec<_> = [3, 4, 3].iter().map(|&s| queued(q.enter(s, 0)).0).collect();
        let live = queued(q.enter(4, 0)).0;
        let (also, _) = queued(q.enter(3, 0));
        assert_eq!(q.waiting(), 5);
        q.set_wake(3, Some(1));
        assert!(q.kick().is_some());
        assert_eq!(q.reconcile(3), 3);
        assert_eq!(q.reconcile(3), 0, "nothing twice");
        // The head was the dead's: the kick after reconciling moves it.
        assert!(!q.audit().head_waiting);
        assert_eq!(q.kick().map(|w| w.t), Some(dead[1].t));
        let a = sound(q);
        assert_eq!((a.size, a.waiting[3], a.waiting[4]), (2, 0, 2));
        assert!(q.is_head(dead[1]));
        q.leave(dead[1], Leave::Served);
        assert!(q.is_head(live));
        let _ = also;
        assert_eq!(q.reconcile(LEDGER_SLOTS as u32), 0);
        assert_eq!(q.enter(LEDGER_SLOTS as u32, 0), Enter::Full);
    }

    /// Many laps of the ring keep tickets and cells in step.
    #[test]
    fn the_ring_laps() {
        let r = Region::new(3);
        let q = r.queue();
        let mut waiting = VecDeque::new();
        let laps = if cfg!(miri) { 40 } else { 1000 };
        for k in 0..laps {
            if waiting.len() == 3 || (k % 3 == 0 && !waiting.is_empty()) {
                let t = waiting.pop_front().unwrap();
                assert!(q.is_head(t));
                q.leave(t, Leave::Served);
            }
            waiting.push_back(queued(q.enter((k % 7) as u32, k)).0);
            sound(q);
        }
    }

    /// A zone of two servers (`max_conns=1` each) with a queue of
    /// `number` waiters (0: none).
    fn zone_spec<'p>(
        peers: &'p [crate::spec::PeerSpec<'p>],
        number: u32,
    ) -> crate::UpstreamSpec<'p> {
        crate::UpstreamSpec {
            policy: crate::spec::Policy::RoundRobin,
            peers,
            health: crate::spec::HealthSpec {
                queue: number,
                ..Default::default()
            },
            schedule_room: 0,
            sessions: false,
        }
    }

    fn two_servers() -> [crate::spec::PeerSpec<'static>; 2] {
        let p = |id| crate::spec::PeerSpec {
            max_conns: 1,
            ..crate::spec::PeerSpec::new(id)
        };
        [p(b"a"), p(b"b")]
    }

    /// `ha_queue 5` gives the zone a queue section of 5 waiters, placed
    /// before the arena; without it the zone is as before (no section,
    /// the same digest) and `queue()` is none. Attach adopts the queue
    /// and its waiters; another number, or a damaged queue header, is
    /// refused.
    #[test]
    fn a_zone_carries_its_queue_section() {
        use crate::testing::Region;
        use crate::write::zone_size;
        let peers = two_servers();
        let (none, five) = (zone_spec(&peers, 0), zone_spec(&peers, 5));
        assert_eq!(
            zone_size(&five).unwrap(),
            zone_size(&none).unwrap() + size_for(5).unwrap().next_multiple_of(64)
        );
        assert_ne!(none.digest(), five.digest());
        assert_ne!(five.digest(), zone_spec(&peers, 6).digest());
        let mut none_h = none;
        none_h.health.queue = 0;
        assert_eq!(none_h.digest(), none.digest());
        assert_eq!(
            zone_spec(&peers, MAX_NUMBER + 1).validate(),
            Err(Error::InvalidArgument)
        );
        assert_eq!(zone_spec(&peers, MAX_NUMBER).validate(), Ok(()));

        let without = crate::testing::OwnedTable::new(&none).unwrap();
        assert!(without.zone().queue().is_none());
        assert_eq!(without.zone().root().queue_off, 0);

        let size = zone_size(&five).unwrap();
        let region = Region::new(size);
        // SAFETY: the region is ours, `size` bytes, alive for the test.
        let z = unsafe { Zone::init(&five, region.as_ptr(), size) }.unwrap();
        let q = z.queue().expect("a queue");
        let r = z.root();
        assert!(r.queue_off >= r.tree_off && r.queue_off < r.arena_off);
        assert_eq!(r.queue_off % ALIGN as u64, 0);
        assert_eq!((q.max(), q.cap(), q.waiting()), (5, 16, 0));
        let (t, head) = queued(q.enter(3, 7));
        assert!(head);
        let attach = |spec: &crate::UpstreamSpec<'_>| {
            // SAFETY: as above.
            unsafe { Zone::attach(spec, region.as_ptr(), size) }
                .map(|z| z.queue().map(|q| q.waiting()))
        };
        assert_eq!(attach(&five), Ok(Some(1)), "the waiter is still there");
        assert_eq!(attach(&zone_spec(&peers, 4)), Err(Error::BadLayout));
        assert_eq!(attach(&none), Err(Error::BadLayout));
        // A queue header that is not a queue's.
        let at = r.queue_off as usize;
        // SAFETY: the queue's magic word, inside the region; no view of
        // it is held across the write.
        unsafe { region.as_ptr().add(at).cast::<u64>().write(0) };
        assert_eq!(attach(&five), Err(Error::BadLayout));
        // SAFETY: as above.
        unsafe { region.as_ptr().add(at).cast::<u64>().write(MAGIC) };
        assert_eq!(attach(&five), Ok(Some(1)));
        assert!(q.is_head(t));
    }

    /// A release in a zone with a queue wakes the head's worker, once
    /// (until it says it was woken); the head then picks through the
    /// zone's own get. A zone without a queue reports no wake.
    #[test]
    fn a_release_wakes_the_heads_slot() {
        use crate::request::Outcome;
        use crate::testing::{OwnedAttempt, OwnedTable};
        let peers = two_servers();
        let owned = OwnedTable::new(&zone_spec(&peers, 4)).unwrap();
        let z = owned.zone();
        let q = z.queue().unwrap();
        let me = z.claim_slot(100, |_| true).unwrap();
        let other = z.claim_slot(200, |_| true).unwrap();
        q.set_wake(other, Some(9));
        // Both servers full.
        let mut held: Vec<_> = (0..2)
            .map(|_| {
                let mut a = OwnedAttempt::with_slot(z, 0, Some(me));
                a.pick(0).unwrap();
                a
            })
            .collect();
        let mut waiter = OwnedAttempt::with_slot(z, 0, Some(other));
        assert_eq!(waiter.pick(0).unwrap_err(), Error::Busy);
        let (t, head) = queued(q.enter(other, 1));
        assert!(head);
        // The first release wakes the head's slot, on its channel.
        let r = held[0].release(Outcome::Ok, 2).unwrap();
        let w = r.wake.expect("the head is woken");
        assert_eq!((w.t, w.slot, w.channel), (t.t, other, Some(9)));
        // A second release while that wake is on its way sends none.
        let mut abandoned = held.pop().unwrap();
        let rel = z.abandon(&mut abandoned.attempt()).unwrap();
        assert_eq!(rel.wake, None, "pending");
        q.woken(other);
        // The head picks through the zone's get (flight's CAS).
        let picked = q.try_pick(t, 3, || waiter.pick(3).ok());
        let Try::Picked(p, None) = picked else {
            panic!("the head picks: {picked:?}");
        };
        assert!(p.peer < 2);
        assert_eq!(q.waiting(), 0);
        // Nobody waits: a release wakes nobody, and `end` says so too.
        assert_eq!(waiter.release(Outcome::Ok, 4).unwrap().wake, None);
        let mut again = OwnedAttempt::with_slot(z, 0, Some(me));
        again.pick(5).unwrap();
        assert_eq!(z.end(&mut again.attempt()), None);
        // Without a queue: never a wake.
        let plain = OwnedTable::new(&zone_spec(&peers, 0)).unwrap();
        let mut a = OwnedAttempt::new(plain.zone(), 0);
        a.pick(0).unwrap();
        assert_eq!(a.release(Outcome::Ok, 1).unwrap().wake, None);
    }

    /// A dead worker's waiters are returned by the zone's own
    /// reconciliation (the ledger claims the slot, then R1-R3): its
    /// cells gone, its part of `size` returned, its in-flight request
    /// too; the live waiter becomes the head at the next kick.
    #[test]
    fn the_zones_reconciliation_returns_a_dead_workers_waiters() {
        use crate::testing::{OwnedAttempt, OwnedTable};
        let peers = two_servers();
        let owned = OwnedTable::new(&zone_spec(&peers, 8)).unwrap();
        let z = owned.zone();
        let q = z.queue().unwrap();
        let dead = z.claim_slot(100, |_| true).unwrap();
        let live = z.claim_slot(200, |_| true).unwrap();
        let mut a = OwnedAttempt::with_slot(z, 0, Some(dead));
        a.pick(0).unwrap();
        q.set_wake(dead, Some(3));
        let d1 = queued(q.enter(dead, 1)).0;
        let l = queued(q.enter(live, 2)).0;
        let _d2 = queued(q.enter(dead, 3)).0;
        assert!(q.kick().is_some_and(|w| w.t == d1.t));
        // Worker 100 dies; worker 300 claims a slot and reconciles it.
        assert_eq!(z.claim_slot(300, |pid| pid != 100), Some(dead));
        assert!(!q.audit().head_waiting, "the dead head, until a kick");
        assert_eq!(q.kick().map(|w| (w.t, w.slot)), Some((l.t, live)));
        let a2 = sound(q);
        assert_eq!(
            (
                a2.size,
                a2.waiting[dead as usize],
                a2.waiting[live as usize]
            ),
            (1, 0, 1)
        );
        assert_eq!(
            z.states()[0].in_flight.load(Relaxed) + z.states()[1].in_flight.load(Relaxed),
            0
        );
        // The new owner of the slot starts clean: its wake fields zeroed.
        assert_eq!(
            q.enter(dead, 4),
            Enter::Queued {
                ticket: Ticket { t: 3, slot: dead },
                head: false
            }
        );
        // A clean exit returns the worker's own waiters as well.
        z.release_slot(live, 200);
        z.release_slot(dead, 300);
        assert_eq!(q.kick(), None, "nobody waits");
        let a3 = sound(q);
        assert_eq!((a3.size, a3.head, a3.tail), (0, 4, 4));
        drop(a);
    }

    /// A reload that rebuilds the zone carries the queue's counters
    /// (served, timeouts, abandoned, overflows), not its waiters.
    #[test]
    fn a_reload_carries_the_counters_not_the_waiters() {
        use crate::testing::OwnedTable;
        let peers = two_servers();
        let old = OwnedTable::new(&zone_spec(&peers, 2)).unwrap();
        let oq = old.zone().queue().unwrap();
        let a = queued(oq.enter(0, 0)).0;
        let b = queued(oq.enter(1, 0)).0;
        assert_eq!(oq.enter(2, 0), Enter::Full);
        assert!(matches!(
            oq.try_pick(a, 30, || Some(())),
            Try::Picked((), _)
        ));
        oq.leave(b, Leave::Timeout);
        let _still = queued(oq.enter(1, 0)).0;
        let waits = oq.waits();
        assert_eq!((waits.count(), waits.sum_ms, waits.buckets[4]), (1, 30, 1));
        let want = oq.counters();
        assert_eq!(
            want,
            Counters {
                served: 1,
                timeouts: 1,
                abandoned: 0,
                overflows: 1
            }
        );
        let more = [
            two_servers()[0],
            two_servers()[1],
            crate::spec::PeerSpec::new(b"c"),
        ];
        let new = OwnedTable::new(&zone_spec(&more, 3)).unwrap();
        let z = new.zone();
        z.carry_from(old.zone(), 0);
        let q = z.queue().unwrap();
        assert_eq!(q.counters(), want);
        assert_eq!(q.waits(), waits, "the wait histogram too");
        assert_eq!(q.wait_row(CARRIED).sum_ms.load(Relaxed), 30);
        assert_eq!(q.waiting(), 0, "waiters stay in the old zone");
        assert_eq!(oq.waiting(), 1);
        q.leave(queued(q.enter(0, 0)).0, Leave::Abandoned);
        assert_eq!(q.counters().abandoned, 1);
        // Into or from a zone without a queue: nothing to carry, no harm.
        let plain = OwnedTable::new(&zone_spec(&more, 0)).unwrap();
        plain.zone().carry_from(old.zone(), 0);
        z.carry_from(plain.zone(), 0);
        assert_eq!(q.counters().served, 1);
        assert_eq!(q.waits(), waits);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Enter(u32),
            Leave(usize),
            Reconcile(u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0..4u32).prop_map(Op::Enter),
                2 => (0..16usize).prop_map(Op::Leave),
                1 => (0..4u32).prop_map(Op::Reconcile),
            ]
        }

        proptest! {
            /// Against a model: a deque of tickets in order. Entering
            /// gives the next ticket unless `max` wait or the ring holds
            /// `cap` tickets from the oldest waiter; the head is the
            /// model's front; size is exact. (Too slow for Miri.)
            #[cfg_attr(miri, ignore)]
            #[test]
            fn queue_matches_a_deque(max in 1..6u32, ops in proptest::collection::vec(op(), 1..200)) {
                let r = Region::new(max);
                let q = r.queue();
                let cap = u64::from(q.cap());
                let mut m: VecDeque<Ticket> = VecDeque::new();
                let mut next = 0u64;
                for o in ops {
                    match o {
                        Op::Enter(s) => {
                            let full = m.len() as u32 == max
                                || m.front().is_some_and(|f| next - f.t >= cap);
                            match q.enter(s, 0) {
                                Enter::Full => prop_assert!(full),
                                Enter::Queued { ticket, head } => {
                                    prop_assert!(!full);
                                    prop_assert_eq!(ticket, Ticket { t: next, slot: s });
                                    prop_assert_eq!(head, m.is_empty());
                                    m.push_back(ticket);
                                    next += 1;
                                }
                            }
                        }
                        Op::Leave(i) if !m.is_empty() => {
                            let t = m.remove(i % m.len()).unwrap();
                            let w = q.leave(t, Leave::Served);
                            let was_head = m.front().is_none_or(|f| f.t > t.t);
                            prop_assert_eq!(w.is_some(), was_head && !m.is_empty());
                            if let Some(w) = w {
                                q.woken(w.slot);
                            }
                        }
                        Op::Leave(_) => {}
                        Op::Reconcile(s) => {
                            let n = m.iter().filter(|t| t.slot == s).count() as u32;
                            prop_assert_eq!(q.reconcile(s), n);
                            m.retain(|t| t.slot != s);
                        }
                    }
                    let a = q.audit();
                    prop_assert_eq!(a.size, m.len() as u32);
                    prop_assert_eq!(a.ledger_sum, a.size);
                    prop_assert_eq!(a.waiting.iter().sum::<u32>(), a.size);
                    prop_assert_eq!(q.help_head(), m.front().map(|t| Head { t: t.t, slot: t.slot }));
                }
            }
        }
    }

    /// E1-E4 racing a release (the lost wake-up of the module note): a
    /// waiter enters behind a full server (`max_conns=1`) and picks if
    /// the head, reading the count `Relaxed` as policies do; a releaser
    /// frees the server and runs the release hook. Either the waiter
    /// picks or the releaser wakes it. Without the two `SeqCst` fences a
    /// weak-memory model (Miri's) may let both miss.
    #[test]
    fn a_release_racing_an_entry_loses_no_wake() {
        let rounds = if cfg!(miri) { 12 } else { 2000 };
        let r = Region::new(2);
        for _ in 0..rounds {
            // SAFETY: the region is ours; no view of it is in use.
            let q =
                unsafe { Queue::init(r.0.as_ptr().cast_mut().cast(), r.0.len() * 64, 2) }.unwrap();
            let server = AtomicU64::new(1);
            let (picked, wake) = std::thread::scope(|sc| {
                let w = sc.spawn(|| {
                    let (t, head) = queued(q.enter(3, 0));
                    head && server.load(Relaxed) == 0 && {
                        let ok = flight::acquire(&server, 1, None, 0);
                        ok && matches!(q.try_pick(t, 0, || Some(())), Try::Picked((), None))
                    }
                });
                let wake = sc
                    .spawn(|| {
                        flight::release(&server, None, 0);
                        q.after_release()
                    })
                    .join()
                    .unwrap();
                (w.join().unwrap(), wake)
            });
            assert!(
                picked || wake.is_some_and(|w| w.slot == 3 && w.t == 0),
                "lost wake-up: {picked} {wake:?}"
            );
        }
    }

    /// Threads as workers, a server of `max_conns=2` picked through
    /// flight's CAS: never more than 2 at once, every request served, and
    /// the waiters served in ticket order.
    #[test]
    fn threads_share_the_queue_and_the_capacity() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Mutex;
        const WORKERS: u32 = 4;
        const REQUESTS: u32 = if cfg!(miri) { 6 } else { 300 };
        let r = Region::new(64);
        let q = r.queue();
        let server = AtomicU64::new(0);
        let busy = AtomicU32::new(0);
        let over = AtomicBool::new(false);
        let order = Mutex::new(Vec::new());
        let direct = AtomicU32::new(0);
        std::thread::scope(|sc| {
            for slot in 0..WORKERS {
                let (q, server, busy, over, order, direct) =
                    (q, &server, &busy, &over, &order, &direct);
                sc.spawn(move || {
                    let use_it = || {
                        if busy.fetch_add(1, SeqCst) >= 2 {
                            over.store(true, SeqCst);
                        }
                        std::thread::yield_now();
                        busy.fetch_sub(1, SeqCst);
                        flight::release(server, None, 0);
                        q.after_release();
                    };
                    for _ in 0..REQUESTS {
                        if q.waiting() == 0 && flight::acquire(server, 2, None, 0) {
                            direct.fetch_add(1, Relaxed);
                            use_it();
                            continue;
                        }
                        let ticket = loop {
                            if let Enter::Queued { ticket, .. } = q.enter(slot, 0) {
                                break ticket;
                            }
                            std::thread::yield_now();
                        };
                        loop {
                            let pick = || {
                                flight::acquire(server, 2, None, 0).then(|| {
                                    order.lock().unwrap().push(ticket.t);
                                })
                            };
                            if let Try::Picked((), _) = q.try_pick(ticket, 0, pick) {
                                break;
                            }
                            std::thread::yield_now();
                        }
                        use_it();
                    }
                });
            }
        });
        assert!(!over.load(SeqCst), "more than max_conns at once");
        assert_eq!(flight::count(server.load(SeqCst)), 0);
        let order = order.into_inner().unwrap();
        assert_eq!(
            order.len() as u32 + direct.load(Relaxed),
            WORKERS * REQUESTS
        );
        if !cfg!(miri) {
            assert!(
                order.len() >= 10,
                "the queue was hardly used: {}",
                order.len()
            );
        }
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "served out of ticket order"
        );
        let a = sound(q);
        assert_eq!(
            (a.size, a.head, a.tail),
            (0, order.len() as u64, order.len() as u64)
        );
        assert_eq!(q.counters().served as usize, order.len());
    }
}
