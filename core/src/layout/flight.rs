//! In-flight counts kept with the worker's ledger: exact across a SIGKILL
//! at any instruction
//!
//! A shared in-flight word (a peer's [`Flight`], the zone-wide total of
//! bounded-load hashing) is changed by every worker; each worker also
//! counts, in its own ledger row ([`super::ledger`]), the part it holds,
//! so that a dead worker's part can be returned. The two are different
//! words: no single instruction changes both, and a worker may be killed
//! between the two changes. This module makes that window harmless.
//!
//! # The protocol
//!
//! The shared word keeps the count in its low 32 bits and, above them, one
//! *parity* bit per ledger slot: a worker's every change of the count also
//! flips its slot's bit, in the same atomic instruction. The worker's row
//! entry for that word ([`Entry`]) holds its count, the parity the word's
//! bit had after its last recorded change, and the kind of the change it
//! is about to make:
//!
//! 1. *intent*: the entry gets the kind (acquire, release) — a plain store
//!    to the worker's own row. An entry at rest already says "acquire"
//!    (every step 3 leaves it so), so only a release stores an intent;
//! 2. *counted*: the shared word's count and the worker's bit change in one
//!    read-modify-write (refused, and nothing flipped, when `max_conns` is
//!    reached);
//! 3. *ledgered*: the entry gets the new count and the new parity, and the
//!    kind "acquire" again.
//!
//! Whoever reads a dead worker's entry knows which steps happened: if the
//! word's bit equals the entry's parity, step 2 did not happen since the
//! last step 3 (or was refused), and the entry's count is exact; if it
//! differs, step 2 happened and step 3 did not, and the exact count is the
//! entry's count changed by its recorded kind. Nothing else changes the
//! worker's bit, so the comparison is never fooled by other workers.
//!
//! Reconciliation returns a dead worker's count with the same three steps
//! (kind *release all*), so a reconciler killed half-way leaves an entry
//! the next one reads the same way: see `drain`. The invariant, for
//! every shared word `w` at every instant:
//!
//! ```text
//! count(w) = Σ over ledger slots s of exact(s, w) + requests of workers
//!            without a slot
//! ```
//!
//! where `exact(s, w)` is the entry's count corrected as above. A worker
//! killed anywhere therefore leaks nothing and nothing is returned twice.
//!
//! # Orderings
//!
//! The intent store happens before the read-modify-write, which is at
//! least `Release` (`SeqCst`: the least_conn tree's refresh needs it, see
//! `lc_tree`), so whoever sees the flipped bit sees the intent; entries are
//! stored with `Release` and read with `Acquire`. A dead worker's stores
//! are all visible to the process that learnt of its death.

use core::marker::PhantomData;
use core::sync::atomic::Ordering::{self, Acquire, Relaxed, Release, SeqCst};
use core::sync::atomic::{AtomicU32, AtomicU64};

use crate::crash::crash_point;
use crate::layout::Zone;

/// Bits of the count in a shared word.
const COUNT_MASK: u64 = 0xffff_ffff;

/// A peer's requests in flight, all workers together, with one parity bit
/// per ledger slot (see the module note). Never below zero.
#[repr(transparent)]
#[derive(Debug)]
pub struct Flight(AtomicU64);

impl Flight {
    /// A word counting `n`, every parity bit clear.
    pub const fn new(n: u32) -> Flight {
        Flight(AtomicU64::new(n as u64))
    }

    /// The count.
    #[inline]
    pub fn load(&self, order: Ordering) -> u32 {
        count(self.0.load(order))
    }

    /// Sets the count, keeping the parity bits (tests, and set-up).
    pub fn store(&self, n: u32, order: Ordering) {
        let _ = self
            .0
            .fetch_update(order, Relaxed, |w| Some((w & !COUNT_MASK) | u64::from(n)));
    }

    /// The whole word: count and parity bits.
    #[inline]
    pub fn word(&self) -> &AtomicU64 {
        &self.0
    }
}

/// The count of a shared word.
#[inline]
pub fn count(word: u64) -> u32 {
    (word & COUNT_MASK) as u32
}

/// The parity bit of ledger slot `slot` in a shared word.
#[inline]
fn bit(slot: u32) -> u64 {
    1u64 << (32 + slot)
}

/// A ledger row entry: count, kind of the change under way, parity.
///
/// `count` in bits 0..29, kind in bits 29..31, parity in bit 31.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry(pub u32);

/// The change an entry announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One more request.
    Acquire = 0,
    /// One request less.
    Release = 1,
    /// The whole count returned (reconciliation).
    ReleaseAll = 2,
}

impl Entry {
    const COUNT: u32 = (1 << 29) - 1;
    const KIND_SHIFT: u32 = 29;
    const KIND: u32 = 3 << Self::KIND_SHIFT;
    const PARITY: u32 = 1 << 31;

    /// This entry announcing `kind` (count and parity kept); "acquire" is
    /// the kind at rest.
    #[inline]
    fn announcing(self, kind: Kind) -> Entry {
        Entry((self.0 & !Self::KIND) | ((kind as u32) << Self::KIND_SHIFT))
    }

    /// The count this entry records.
    #[inline]
    pub fn count(self) -> u32 {
        self.0 & Self::COUNT
    }

    /// The parity of the shared word's bit after the last recorded change.
    #[inline]
    pub fn parity(self) -> bool {
        self.0 & Self::PARITY != 0
    }

    /// The change announced (meaningful only when the parity differs).
    #[inline]
    pub fn kind(self) -> Kind {
        match (self.0 >> Self::KIND_SHIFT) & 3 {
            0 => Kind::Acquire,
            1 => Kind::Release,
            _ => Kind::ReleaseAll,
        }
    }

    #[inline]
    fn make(count: u32, kind: Kind, parity: bool) -> Entry {
        Entry(
            (count & Self::COUNT)
                | ((kind as u32) << Self::KIND_SHIFT)
                | if parity { Self::PARITY } else { 0 },
        )
    }

    /// The exact count given the shared word's bit `word_bit` (see the
    /// module note).
    #[inline]
    pub fn exact(self, word_bit: bool) -> u32 {
        if word_bit == self.parity() {
            return self.count();
        }
        match self.kind() {
            Kind::Acquire => self.count() + 1,
            Kind::Release => self.count().saturating_sub(1),
            Kind::ReleaseAll => 0,
        }
    }
}

/// A worker's hold on its ledger row: where it records its part of every
/// shared in-flight word. One word (the row's address, 64-byte aligned,
/// with the slot in its low bits), so that a pick carries it in a
/// register.
#[derive(Debug, Clone, Copy)]
pub struct Hold<'a> {
    tagged: core::ptr::NonNull<AtomicU32>,
    row: PhantomData<&'a [AtomicU32]>,
}

impl<'a> Hold<'a> {
    /// The hold of ledger slot `slot` (below [`super::LEDGER_SLOTS`])
    /// whose row is `row`: 64-byte aligned, as every ledger row is (the
    /// zone is, and a row starts a line), so that the low six bits of its
    /// address are free for the slot.
    #[inline]
    pub(crate) fn new(row: &'a [AtomicU32], slot: u32) -> Hold<'a> {
        debug_assert!(row.as_ptr() as usize % 64 == 0 && (slot as usize) < super::LEDGER_SLOTS);
        debug_assert!(row.len() * 4 > super::LEDGER_SLOTS);
        let tagged = row.as_ptr().cast::<u8>().wrapping_add(slot as usize);
        Hold {
            // SAFETY: a slice's pointer is never null, and adding less
            // than the row's length in bytes (a row holds at least
            // GENS + 1 entries, 36 bytes, and slot < 32) stays inside it.
            tagged: unsafe { core::ptr::NonNull::new_unchecked(tagged.cast_mut().cast()) },
            row: PhantomData,
        }
    }

    #[inline]
    fn slot(self) -> u32 {
        (self.tagged.as_ptr() as usize & 63) as u32
    }

    /// Entry `at` of the row.
    ///
    /// # Safety
    ///
    /// `at` is below the row's length (the zone's peers + GENS + 1): the
    /// callers pass a peer index they have already used to index the
    /// zone's peer states (so it is below the peers), or the total's
    /// entry.
    #[inline]
    unsafe fn entry(self, at: usize) -> &'a AtomicU32 {
        let row = self
            .tagged
            .as_ptr()
            .cast::<u8>()
            .wrapping_sub(self.slot() as usize);
        // SAFETY: `row` is the row's start (the tag removed); `at` is in
        // bounds (caller contract); the row lives for 'a.
        unsafe { &*row.cast::<AtomicU32>().add(at) }
    }
}

/// Counts one request on `word`, within `max` (0: no limit); `false`,
/// with nothing changed, when the word is at `max`. `at` is the word's
/// entry in `hold`'s row: a peer index the caller already used to index
/// the zone's peer states, or [`super::Zone::total_entry`].
#[inline]
pub(crate) fn acquire(word: &AtomicU64, max: u32, hold: Option<Hold<'_>>, at: usize) -> bool {
    let Some(hold) = hold else {
        return if max == 0 {
            word.fetch_add(1, SeqCst);
            true
        } else {
            word.fetch_update(SeqCst, Relaxed, |w| (count(w) < max).then_some(w + 1))
                .is_ok()
        };
    };
    // SAFETY: `at` is in the row (this function's contract).
    let entry = unsafe { hold.entry(at) };
    let slot = hold.slot();
    // The row's one writer is this worker: its own last store, which left
    // the kind "acquire" (step 3 always does): the intent is already
    // there, no store needed.
    let e = Entry(entry.load(Relaxed));
    debug_assert_eq!(e.kind(), Kind::Acquire);
    crash_point("flight.acquire.intent");
    // One instruction: count + 1 and the slot's bit flipped (the bit is
    // the entry's parity, so the arithmetic never carries into another).
    let b = bit(slot);
    let delta = if e.parity() {
        1u64.wrapping_sub(b)
    } else {
        1 + b
    };
    if max == 0 {
        word.fetch_add(delta, SeqCst);
    } else if word
        .fetch_update(SeqCst, Relaxed, |w| (count(w) < max).then_some((w + 1) ^ b))
        .is_err()
    {
        // Nothing changed: the entry's parity still matches the word's bit.
        return false;
    }
    crash_point("flight.acquire.counted");
    // Count + 1 (a worker never holds 2^29 requests on one peer: no carry
    // into the kind), parity flipped, kind still "acquire".
    entry.store((e.0 + 1) ^ Entry::PARITY, Release);
    crash_point("flight.acquire.ledgered");
    true
}

/// Takes one request off `word`, never below zero (see [`acquire`], whose
/// contract on `at` this shares).
#[inline]
pub(crate) fn release(word: &AtomicU64, hold: Option<Hold<'_>>, at: usize) {
    let Some(hold) = hold else {
        let _ = word.fetch_update(SeqCst, Relaxed, |w| (count(w) != 0).then(|| w - 1));
        return;
    };
    // SAFETY: `at` is in the row (this function's contract).
    let entry = unsafe { hold.entry(at) };
    let slot = hold.slot();
    let e = Entry(entry.load(Relaxed)).announcing(Kind::Release);
    entry.store(e.0, Release);
    crash_point("flight.release.intent");
    let b = bit(slot);
    // One instruction: count - 1 and the slot's bit flipped. While this
    // worker's own exact count is at least 1 so is the word's (the
    // invariant), so a plain add cannot borrow from the bits above, and
    // the bit's value is the entry's parity: no compare-and-swap loop.
    let changed = if e.count() != 0 {
        let delta = if e.parity() {
            1 + b
        } else {
            1u64.wrapping_sub(b)
        };
        word.fetch_sub(delta, SeqCst);
        true
    } else {
        word.fetch_update(SeqCst, Relaxed, |w| (count(w) != 0).then(|| (w - 1) ^ b))
            .is_ok()
    };
    crash_point("flight.release.counted");
    // With a count the word changed (a plain subtract): count - 1, parity
    // flipped. Without one (a request this row never counted) the count
    // stays 0; the parity follows the word's bit, flipped or not.
    let next = match (e.count(), changed) {
        (0, false) => e.0,
        (0, true) => e.0 ^ Entry::PARITY,
        _ => (e.0 - 1) ^ Entry::PARITY,
    } & !Entry::KIND;
    entry.store(next, Release);
    crash_point("flight.release.ledgered");
}

/// The bit of slot `slot` in `word` now.
#[inline]
fn word_bit(word: &AtomicU64, slot: u32) -> bool {
    word.load(Acquire) & bit(slot) != 0
}

/// What a dead worker's entry `entry` (slot `slot`) holds of `word`,
/// exactly, with the entry rewritten to say so and left at rest
/// (idempotent: the entry then matches the word's bit, kind "acquire",
/// which the next owner's first acquire relies on).
pub(crate) fn settle(word: &AtomicU64, entry: &AtomicU32, slot: u32) -> u32 {
    let e = Entry(entry.load(Acquire));
    let wb = word_bit(word, slot);
    let n = e.exact(wb);
    let rest = Entry::make(n, Kind::Acquire, wb);
    if rest != e {
        entry.store(rest.0, Release);
    }
    n
}

/// Returns a dead worker's part of `word` (its entry `entry`, slot
/// `slot`) and leaves the entry at zero, matching the word. Safe to kill
/// at any step and to run again: the next run reads what happened as
/// [`settle`] does.
pub(crate) fn drain(word: &AtomicU64, entry: &AtomicU32, slot: u32) -> u32 {
    let n = settle(word, entry, slot);
    if n == 0 {
        return 0;
    }
    let p = Entry(entry.load(Relaxed)).parity();
    entry.store(Entry::make(n, Kind::ReleaseAll, p).0, Release);
    crash_point("reconcile.drain.intent");
    let b = bit(slot);
    let _ = word.fetch_update(SeqCst, Relaxed, |w| {
        let c = u64::from(count(w).saturating_sub(n));
        Some(((w & !COUNT_MASK) ^ b) | c)
    });
    crash_point("reconcile.drain.returned");
    entry.store(Entry::make(0, Kind::Acquire, !p).0, Release);
    crash_point("reconcile.drain.cleared");
    n
}

impl<'a> Zone<'a> {
    /// The hold of ledger slot `slot` (`None`: no slot, or past the end).
    #[inline]
    pub(crate) fn hold(&self, slot: Option<u32>) -> Option<Hold<'a>> {
        let s = slot?;
        let (_, row) = self.ledger_slot(s as usize)?;
        Some(Hold::new(row, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger row as the zone lays one out: 64-byte aligned.
    #[repr(C, align(64))]
    struct Row([AtomicU32; 16]);

    fn row(_n: usize) -> Row {
        Row([const { AtomicU32::new(0) }; 16])
    }

    impl core::ops::Deref for Row {
        type Target = [AtomicU32];
        fn deref(&self) -> &[AtomicU32] {
            &self.0
        }
    }

    #[test]
    fn acquire_and_release_keep_count_and_parity() {
        let w = AtomicU64::new(0);
        let r = row(1);
        let h = Some(Hold::new(&r, 5));
        for k in 1..=3u32 {
            assert!(acquire(&w, 0, h, 0));
            assert_eq!(count(w.load(Relaxed)), k);
            let e = Entry(r[0].load(Relaxed));
            assert_eq!(e.count(), k);
            assert_eq!(e.parity(), word_bit(&w, 5));
            assert_eq!(e.exact(word_bit(&w, 5)), k);
        }
        for k in (0..3u32).rev() {
            release(&w, h, 0);
            assert_eq!(count(w.load(Relaxed)), k);
            assert_eq!(Entry(r[0].load(Relaxed)).count(), k);
            assert_eq!(Entry(r[0].load(Relaxed)).parity(), word_bit(&w, 5));
        }
        // Other slots' bits are never touched.
        assert_eq!(w.load(Relaxed) & !bit(5), 0);
    }

    #[test]
    fn max_refuses_without_flipping() {
        let w = AtomicU64::new(0);
        let r = row(1);
        let h = Some(Hold::new(&r, 31));
        assert!(acquire(&w, 1, h, 0));
        assert!(!acquire(&w, 1, h, 0));
        let e = Entry(r[0].load(Relaxed));
        assert_eq!(e.exact(word_bit(&w, 31)), 1);
        release(&w, h, 0);
        assert_eq!(w.load(Relaxed), 0);
    }

    #[test]
    fn a_half_made_change_is_read_exactly() {
        // Intent written, word changed, entry not yet updated: the kill
        // window of the old order.
        let w = AtomicU64::new(0);
        let r = row(1);
        let e = Entry::make(2, Kind::Acquire, false);
        r[0].store(e.0, Relaxed);
        w.store(3 | bit(0), Relaxed); // 2 recorded + the acquire made
        assert_eq!(settle(&w, &r[0], 0), 3);
        assert_eq!(drain(&w, &r[0], 0), 3);
        assert_eq!(count(w.load(Relaxed)), 0);
        assert_eq!(drain(&w, &r[0], 0), 0, "a second drain returns nothing");
        // A release made but not recorded.
        r[0].store(Entry::make(1, Kind::Release, false).0, Relaxed);
        w.store(4 | bit(0), Relaxed); // another worker's 4; ours is gone
        assert_eq!(drain(&w, &r[0], 0), 0);
        assert_eq!(count(w.load(Relaxed)), 4);
    }

    #[test]
    fn a_settled_entry_is_at_rest_for_its_next_owner() {
        // A release's intent written, the worker killed before its
        // instruction: nothing to return, but the next owner's first
        // acquire must find the kind "acquire" (it stores no intent).
        let w = AtomicU64::new(0);
        let r = row(1);
        r[0].store(Entry::make(0, Kind::Release, false).0, Relaxed);
        assert_eq!(drain(&w, &r[0], 3), 0);
        assert_eq!(Entry(r[0].load(Relaxed)).kind(), Kind::Acquire);
        // The next owner acquires and dies after its instruction: read as
        // one request, returned.
        assert!(acquire(&w, 0, Some(Hold::new(&r, 3)), 0));
        r[0].store(Entry::make(0, Kind::Acquire, false).0, Relaxed);
        assert_eq!(drain(&w, &r[0], 3), 1);
        assert_eq!(count(w.load(Relaxed)), 0);
    }

    #[test]
    fn workers_without_a_slot_count_plainly() {
        let w = AtomicU64::new(0);
        assert!(acquire(&w, 2, None, 0));
        assert!(acquire(&w, 2, None, 0));
        assert!(!acquire(&w, 2, None, 0));
        release(&w, None, 0);
        release(&w, None, 0);
        release(&w, None, 0);
        assert_eq!(w.load(Relaxed), 0);
    }
}
