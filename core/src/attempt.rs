//! Per-request attempt state
//!
//! What one request has done so far: which peers it tried, which try is in
//! progress, whether it moved on to the backups, when it started. The
//! caller allocates it (nginx: from the request pool, [`words`] × 8 bytes)
//! and the core only ever reads and writes inside it.
//!
//! Layout, in `u64` words: `[0]` current peer (low 32 bits, `u32::MAX` for
//! none) and flags (high 32 bits); `[1]` start time in ms; `[2]` start of
//! the try in progress, ms; `[3]` random generator state; `[4]` hash tries
//! (low 32 bits); `[5]` hash position; `[6]` the worker's ledger slot
//! (`u32::MAX` for none); `[7]` number of peers tried; `[8..12]` the first
//! [`INLINE`] peers tried, two `u32` per word; `[12]` the pinned generation
//! (descriptor in the low 8 bits, number above; 0 for none); `[13..]` a
//! bitmap of one bit
//! per peer, used (and zeroed) only once a request has tried more than
//! [`INLINE`] peers. Starting a request therefore costs a few stores
//! whatever the number of peers, where zeroing a bitmap for 10,000 peers
//! would cost more than the pick itself.

use crate::layout::pin::Pin;

const NONE: u32 = u32::MAX;
const FLAG_BACKUP: u32 = 1;
const FLAG_HASHED: u32 = 2;
const FLAG_BOUND: u32 = 4;
const TRIED_COUNT: usize = 7;
const INLINE_AT: usize = 8;
/// Peers remembered inline before the bitmap takes over.
pub const INLINE: usize = 8;
const PIN: usize = INLINE_AT + INLINE / 2;
const HEADER_WORDS: usize = PIN + 1;

/// Words of attempt state a request on a table of `peers` peers needs.
pub fn words(peers: usize) -> usize {
    HEADER_WORDS + peers.div_ceil(64)
}

/// A view of one request's attempt state.
#[derive(Debug)]
pub struct Attempt<'a> {
    words: &'a mut [u64],
}

impl<'a> Attempt<'a> {
    /// Resets `words` (at least [`words`] long) to a fresh attempt.
    pub fn init(words: &'a mut [u64], now_ms: u64) -> Attempt<'a> {
        let mut a = Attempt { words };
        a.reset(now_ms);
        a
    }

    /// Starts a new request in the same memory.
    pub fn reset(&mut self, now_ms: u64) {
        self.words[..HEADER_WORDS].fill(0);
        self.words[0] = u64::from(NONE);
        self.words[1] = now_ms;
        self.words[3] = 0x9e37_79b9_7f4a_7c15 ^ now_ms;
        self.words[6] = u64::from(NONE);
    }

    /// The generation this request pinned.
    #[inline]
    pub fn pin(&self) -> Option<Pin> {
        let w = self.words[PIN];
        (w != 0).then_some(Pin {
            slot: (w & 0xff) as u32,
            seq: w >> 8,
        })
    }

    /// Records (or with `None` forgets) the pinned generation.
    pub fn set_pin(&mut self, pin: Option<Pin>) {
        self.words[PIN] = pin.map_or(0, |p| (p.seq << 8) | u64::from(p.slot & 0xff));
    }

    /// The ledger slot of the worker serving this request (see
    /// [`crate::layout::ledger`]); `None` counts nothing in the ledger.
    pub fn set_slot(&mut self, slot: Option<u32>) {
        self.words[6] = u64::from(slot.unwrap_or(NONE));
    }

    /// The worker's ledger slot.
    #[inline]
    pub fn slot(&self) -> Option<u32> {
        let s = self.words[6] as u32;
        (s != NONE).then_some(s)
    }

    /// Seeds the attempt's random generator (p2c, ewma, random). nginx
    /// passes a per-worker random number here, so workers draw
    /// independently.
    pub fn seed(&mut self, seed: u64) {
        // Never zero: xorshift would stay at zero.
        self.words[3] = seed | 1;
    }

    /// 64 random bits (xorshift64*), advancing the attempt's generator.
    #[inline]
    pub fn random(&mut self) -> u64 {
        let mut x = self.words[3];
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.words[3] = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Start of the try in progress, ms.
    pub fn try_start_ms(&self) -> u64 {
        self.words[2]
    }

    #[inline]
    pub(crate) fn set_try_start(&mut self, now: u64) {
        self.words[2] = now;
    }

    /// Hash walk state: `(started, tries, position)`.
    #[inline]
    pub(crate) fn hash_state(&self) -> (bool, u32, u64) {
        let flags = (self.words[0] >> 32) as u32;
        (
            flags & FLAG_HASHED != 0,
            self.words[4] as u32,
            self.words[5],
        )
    }

    /// Forgets the hash walk's position (it was in another generation's
    /// ring or table), keeping its count of tries.
    #[inline]
    pub(crate) fn restart_hash(&mut self) {
        self.words[0] &= !(u64::from(FLAG_HASHED) << 32);
    }

    #[inline]
    pub(crate) fn set_hash_state(&mut self, tries: u32, position: u64) {
        self.words[0] |= u64::from(FLAG_HASHED) << 32;
        self.words[4] = u64::from(tries);
        self.words[5] = position;
    }

    /// A view of state prepared by [`Attempt::init`].
    pub fn from_words(words: &'a mut [u64]) -> Attempt<'a> {
        Attempt { words }
    }

    /// Whether the bitmap covers `peers` peers.
    pub fn fits(&self, peers: usize) -> bool {
        self.words.len() >= HEADER_WORDS + peers.div_ceil(64)
    }

    /// The peer of the try in progress.
    #[inline]
    pub fn current(&self) -> Option<u32> {
        let c = self.words[0] as u32;
        (c != NONE).then_some(c)
    }

    #[inline]
    pub(crate) fn set_current(&mut self, peer: Option<u32>) {
        let flags = self.words[0] & !0xffff_ffff;
        self.words[0] = flags | u64::from(peer.unwrap_or(NONE));
    }

    /// Whether the request has moved on to the backup servers.
    #[inline]
    pub fn in_backup(&self) -> bool {
        (self.words[0] >> 32) as u32 & FLAG_BACKUP != 0
    }

    #[inline]
    pub(crate) fn set_in_backup(&mut self) {
        self.words[0] |= u64::from(FLAG_BACKUP) << 32;
    }

    /// Whether the try in progress (or the last one) went to the server
    /// the request is bound to (`ha_sticky`).
    #[inline]
    pub fn bound(&self) -> bool {
        (self.words[0] >> 32) as u32 & FLAG_BOUND != 0
    }

    #[inline]
    pub(crate) fn set_bound(&mut self, on: bool) {
        let bit = u64::from(FLAG_BOUND) << 32;
        if on {
            self.words[0] |= bit;
        } else {
            self.words[0] &= !bit;
        }
    }

    /// When the request started, ms.
    pub fn start_ms(&self) -> u64 {
        self.words[1]
    }

    /// Whether peer `i` was tried already.
    #[inline]
    pub fn tried(&self, i: usize) -> bool {
        let n = self.words[TRIED_COUNT] as usize;
        if n == 0 {
            return false;
        }
        if n > INLINE {
            return self.words[HEADER_WORDS + i / 64] & (1 << (i % 64)) != 0;
        }
        (0..n).any(|k| self.inline(k) == i as u32)
    }

    #[inline]
    fn inline(&self, k: usize) -> u32 {
        (self.words[INLINE_AT + k / 2] >> (32 * (k % 2))) as u32
    }

    #[inline]
    pub(crate) fn set_tried(&mut self, i: usize) {
        if self.tried(i) {
            return;
        }
        let n = self.words[TRIED_COUNT] as usize;
        if n < INLINE {
            self.words[INLINE_AT + n / 2] |= u64::from(i as u32) << (32 * (n % 2));
        } else {
            if n == INLINE {
                // Overflow: move to the bitmap, zeroed only now.
                self.words[HEADER_WORDS..].fill(0);
                for k in 0..INLINE {
                    let j = self.inline(k) as usize;
                    self.words[HEADER_WORDS + j / 64] |= 1 << (j % 64);
                }
            }
            self.words[HEADER_WORDS + i / 64] |= 1 << (i % 64);
        }
        self.words[TRIED_COUNT] = n as u64 + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_inline_then_bitmap() {
        let peers = 200;
        let mut words = vec![u64::MAX; HEADER_WORDS + peers / 64 + 1];
        let mut a = Attempt::init(&mut words, 0);
        assert!(
            (0..peers).all(|i| !a.tried(i)),
            "reset without zeroing the bitmap"
        );
        let order: Vec<usize> = (0..peers).map(|k| (k * 37 + 11) % peers).collect();
        for (k, &i) in order.iter().enumerate() {
            a.set_tried(i);
            a.set_tried(i);
            for (m, &j) in order.iter().enumerate() {
                assert_eq!(a.tried(j), m <= k, "after {k} tries, peer {j}");
            }
        }
        a.reset(1);
        assert!((0..peers).all(|i| !a.tried(i)));
        a.set_tried(5);
        assert!(a.tried(5) && !a.tried(6));
    }
}
