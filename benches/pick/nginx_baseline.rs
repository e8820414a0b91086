//! nginx's own balancers, ported faithfully, as the benchmark baseline
//!
//! `ngx_http_upstream_get_round_robin_peer` with `ngx_http_upstream_get_peer`
//! (smooth weighted round robin), `ngx_http_upstream_get_least_conn_peer` and
//! `ngx_http_upstream_free_round_robin_peer` from nginx 1.28, step for step:
//! the O(n) walk along the `next` pointers with the tried bitmap, the
//! failure-window check, `max_conns`, the effective-weight recovery,
//! least_conn's cross-multiplied comparison and its SWRR tie-break among
//! equally loaded peers, `refs`, and the free path's bookkeeping.
//!
//! As with an upstream `zone` (which every multi-worker nginx balancing on
//! shared counters needs):
//!
//! - picks run under the write lock of the peer list and frees under its
//!   read lock plus the peer's own lock, both `ngx_rwlock_t`: test and
//!   compare-and-swap, pause 1, 2, 4 … 1024 times between retries (on more
//!   than one CPU), then `sched_yield` and start over;
//! - each peer is an `ngx_http_upstream_rr_peer_t` with nginx's field order
//!   and x86_64 sizes (200 bytes without `--with-compat`) in a 256-byte slot,
//!   as the zone's slab allocator serves it, so a scan touches the same
//!   cache lines per peer as nginx does.
//!
//! Left out: the zone's configuration-generation check (`peers->config`, one
//! load per pick), the debug log calls (compiled out by default), the
//! backup list (the benches have none), and the request setup around the
//! pick (`init_round_robin_peer`), which our benches leave out for our side
//! too. Times are in seconds, as `ngx_time()` gives them.

use std::cell::UnsafeCell;
use std::mem::{offset_of, size_of};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `NGX_RWLOCK_SPIN`.
const RWLOCK_SPIN: usize = 2048;
/// `NGX_RWLOCK_WLOCK`.
const RWLOCK_WLOCK: usize = usize::MAX;

/// `ngx_http_upstream_rr_peer_t`, field for field (x86_64, with
/// `NGX_HTTP_SSL` and `NGX_HTTP_UPSTREAM_ZONE`), in its slab slot.
#[repr(C, align(256))]
struct Peer {
    sockaddr: *const u8,
    socklen: u32,
    name: [usize; 2],
    server: [usize; 2],

    current_weight: isize,
    effective_weight: isize,
    weight: isize,

    conns: usize,
    max_conns: usize,

    fails: usize,
    accessed: i64,
    checked: i64,

    max_fails: usize,
    fail_timeout: i64,
    slow_start: usize,
    start_time: usize,

    down: usize,

    ssl_session: *const u8,
    ssl_session_len: i32,

    /// `zombie:1`, sharing the word after `ssl_session_len`.
    zombie: u32,
    /// The peer's own `ngx_rwlock_t` (taken by free).
    lock: AtomicUsize,
    refs: usize,
    host: *const u8,

    next: *mut Peer,
}

const _: () = {
    assert!(offset_of!(Peer, current_weight) == 48);
    assert!(offset_of!(Peer, down) == 144);
    assert!(offset_of!(Peer, lock) == 168);
    assert!(offset_of!(Peer, next) == 192);
    assert!(size_of::<Peer>() == 256);
};

/// The peer list of one upstream (`ngx_http_upstream_rr_peers_t`, the parts
/// a pick reads) with its lock.
#[derive(Debug)]
pub struct Peers {
    /// `peers->rwlock`.
    rwlock: AtomicUsize,
    /// `peers->single`.
    single: bool,
    /// `ngx_ncpu > 1`: spin before yielding.
    spin: bool,
    /// `peers->number`.
    number: usize,
    /// The peers; `slots[0]` is `peers->peer`, each links to the next.
    slots: Box<[UnsafeCell<Peer>]>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("weight", &self.weight)
            .field("conns", &self.conns)
            .finish_non_exhaustive()
    }
}

// SAFETY: peers are only read or written under nginx's locking discipline:
// picks hold the list's write lock; frees hold its read lock and the peer's
// lock, and touch only that peer. The raw pointers point into `slots`,
// which lives (and never moves) as long as `Peers`.
unsafe impl Sync for Peers {}
// SAFETY: as above; nothing is tied to the creating thread.
unsafe impl Send for Peers {}

/// nginx's lock loop: try, spin with doubling pauses (on SMP), yield.
fn acquire_with_backoff(take: impl Fn() -> bool, spin: bool) {
    loop {
        if take() {
            return;
        }
        if spin {
            let mut n = 1;
            while n < RWLOCK_SPIN {
                for _ in 0..n {
                    std::hint::spin_loop();
                }
                if take() {
                    return;
                }
                n <<= 1;
            }
        }
        std::thread::yield_now();
    }
}

/// `ngx_rwlock_wlock`.
fn wlock(lock: &AtomicUsize, spin: bool) {
    acquire_with_backoff(
        || {
            lock.load(Ordering::Relaxed) == 0
                && lock
                    .compare_exchange(0, RWLOCK_WLOCK, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        },
        spin,
    );
}

/// `ngx_rwlock_rlock`.
fn rlock(lock: &AtomicUsize, spin: bool) {
    acquire_with_backoff(
        || {
            let readers = lock.load(Ordering::Relaxed);
            readers != RWLOCK_WLOCK
                && lock
                    .compare_exchange(readers, readers + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        },
        spin,
    );
}

/// `ngx_rwlock_unlock`.
fn unlock(lock: &AtomicUsize) {
    if lock.load(Ordering::Relaxed) == RWLOCK_WLOCK {
        let _ = lock.compare_exchange(RWLOCK_WLOCK, 0, Ordering::Release, Ordering::Relaxed);
    } else {
        lock.fetch_sub(1, Ordering::Release);
    }
}

/// Whether bit `i` of the tried bitmap is set.
#[inline]
fn tried(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

/// The failure-window and `max_conns` checks of nginx's scans (`down` and
/// `tried` are checked by the callers, in nginx's order).
#[inline]
fn failing_or_full(peer: &Peer, now: i64) -> bool {
    (peer.max_fails != 0 && peer.fails >= peer.max_fails && now - peer.checked <= peer.fail_timeout)
        || (peer.max_conns != 0 && peer.conns >= peer.max_conns)
}

impl Peers {
    /// Peers with the given weights and nginx's defaults (`max_fails=1`,
    /// `fail_timeout=10s`), linked in order.
    pub fn new(weights: &[u32]) -> Peers {
        let slots: Box<[UnsafeCell<Peer>]> = weights
            .iter()
            .map(|&w| {
                UnsafeCell::new(Peer {
                    sockaddr: ptr::null(),
                    socklen: 0,
                    name: [0; 2],
                    server: [0; 2],
                    current_weight: 0,
                    effective_weight: w as isize,
                    weight: w as isize,
                    conns: 0,
                    max_conns: 0,
                    fails: 0,
                    accessed: 0,
                    checked: 0,
                    max_fails: 1,
                    fail_timeout: 10,
                    slow_start: 0,
                    start_time: 0,
                    down: 0,
                    ssl_session: ptr::null(),
                    ssl_session_len: 0,
                    zombie: 0,
                    lock: AtomicUsize::new(0),
                    refs: 0,
                    host: ptr::null(),
                    next: ptr::null_mut(),
                })
            })
            .collect();
        for pair in slots.windows(2) {
            // SAFETY: nothing else refers to the slots yet.
            unsafe { (*pair[0].get()).next = pair[1].get() };
        }
        Peers {
            rwlock: AtomicUsize::new(0),
            single: weights.len() == 1,
            spin: std::thread::available_parallelism().map_or(1, |n| n.get()) > 1,
            number: weights.len(),
            slots,
        }
    }

    /// Words of the per-request tried bitmap.
    pub fn tried_words(&self) -> usize {
        self.number.div_ceil(64)
    }

    /// `peers->peer`, the head of the list.
    fn head(&self) -> *mut Peer {
        self.slots.first().map_or(ptr::null_mut(), UnsafeCell::get)
    }

    /// `ngx_http_upstream_get_round_robin_peer`: smooth weighted round
    /// robin; the index of the peer.
    pub fn get_round_robin(&self, tried_bits: &mut [u64], now: u64) -> Option<usize> {
        wlock(&self.rwlock, self.spin);
        // SAFETY: the list's write lock excludes every other pick and free.
        let r = unsafe { self.get_round_robin_locked(tried_bits, now as i64) };
        unlock(&self.rwlock);
        r
    }

    /// # Safety
    ///
    /// The caller holds the list's write lock.
    unsafe fn get_round_robin_locked(&self, tried_bits: &mut [u64], now: i64) -> Option<usize> {
        if self.single {
            // SAFETY: `head` is a live slot; the write lock makes this the
            // only access.
            let peer = unsafe { &mut *self.head() };
            if peer.down != 0 || (peer.max_conns != 0 && peer.conns >= peer.max_conns) {
                return None;
            }
            peer.refs += 1;
            peer.conns += 1;
            return Some(0);
        }
        // SAFETY: forwarded from the caller.
        let (best, p) = unsafe { self.get_peer(tried_bits, now) }?;
        // SAFETY: `best` is a live slot, under the caller's write lock.
        unsafe { (*best).conns += 1 };
        Some(p)
    }

    /// `ngx_http_upstream_get_peer`.
    ///
    /// # Safety
    ///
    /// The caller holds the list's write lock.
    unsafe fn get_peer(&self, tried_bits: &mut [u64], now: i64) -> Option<(*mut Peer, usize)> {
        // `best` stays a pointer, its current weight a local: no reference
        // to it is held while the scan makes one to each peer in turn.
        let mut best: *mut Peer = ptr::null_mut();
        let mut best_cw = 0isize;
        let mut total = 0isize;
        let mut p = 0;
        let mut cur = self.head();
        let mut i = 0;
        while !cur.is_null() {
            // SAFETY: `cur` is a live slot reached through `next`; the
            // caller's write lock makes this the only reference to it.
            let peer = unsafe { &mut *cur };
            if !tried(tried_bits, i) && peer.down == 0 && !failing_or_full(peer, now) {
                peer.current_weight += peer.effective_weight;
                total += peer.effective_weight;
                if peer.effective_weight < peer.weight {
                    peer.effective_weight += 1;
                }
                if best.is_null() || peer.current_weight > best_cw {
                    best = cur;
                    best_cw = peer.current_weight;
                    p = i;
                }
            }
            cur = peer.next;
            i += 1;
        }
        if best.is_null() {
            return None;
        }
        // SAFETY: `best` is a live slot; the scan's references are gone.
        let peer = unsafe { &mut *best };
        peer.refs += 1;
        tried_bits[p / 64] |= 1 << (p % 64);
        peer.current_weight -= total;
        if now - peer.checked > peer.fail_timeout {
            peer.checked = now;
        }
        Some((best, p))
    }

    /// `ngx_http_upstream_get_least_conn_peer`; the index of the peer.
    pub fn get_least_conn(&self, tried_bits: &mut [u64], now: u64) -> Option<usize> {
        if self.single {
            return self.get_round_robin(tried_bits, now);
        }
        wlock(&self.rwlock, self.spin);
        // SAFETY: the list's write lock excludes every other pick and free.
        let r = unsafe { self.get_least_conn_locked(tried_bits, now as i64) };
        unlock(&self.rwlock);
        r
    }

    /// # Safety
    ///
    /// The caller holds the list's write lock.
    unsafe fn get_least_conn_locked(&self, tried_bits: &mut [u64], now: i64) -> Option<usize> {
        // As in `get_peer`, `best` stays a pointer and the fields nginx
        // reads through it (`conns`, `weight`, `current_weight`) are kept
        // in locals, refreshed whenever `best` changes or is updated.
        let mut best: *mut Peer = ptr::null_mut();
        let (mut bc, mut bw, mut best_cw) = (0usize, 0usize, 0isize);
        let mut total = 0isize;
        let mut many = false;
        let mut p = 0;
        let mut cur = self.head();
        let mut i = 0;
        while !cur.is_null() {
            // SAFETY: `cur` is a live slot reached through `next`; the
            // caller's write lock makes this the only reference to it.
            let peer = unsafe { &*cur };
            if !tried(tried_bits, i) && peer.down == 0 && !failing_or_full(peer, now) {
                let (pc, pw) = (peer.conns, peer.weight as usize);
                if best.is_null() || pc * bw < bc * pw {
                    best = cur;
                    (bc, bw, best_cw) = (pc, pw, peer.current_weight);
                    many = false;
                    p = i;
                } else if pc * bw == bc * pw {
                    many = true;
                }
            }
            cur = peer.next;
            i += 1;
        }
        if best.is_null() {
            return None;
        }
        if many {
            // nginx: `for (peer = best, i = p; peer; ...)`.
            cur = best;
            i = p;
            while !cur.is_null() {
                // SAFETY: as above.
                let peer = unsafe { &mut *cur };
                let skip = tried(tried_bits, i)
                    || peer.down != 0
                    || peer.conns * bw != bc * peer.weight as usize
                    || failing_or_full(peer, now);
                if !skip {
                    peer.current_weight += peer.effective_weight;
                    total += peer.effective_weight;
                    if peer.effective_weight < peer.weight {
                        peer.effective_weight += 1;
                    }
                    if cur == best {
                        best_cw = peer.current_weight;
                    } else if peer.current_weight > best_cw {
                        best = cur;
                        (bc, bw, best_cw) = (peer.conns, peer.weight as usize, peer.current_weight);
                        p = i;
                    }
                }
                cur = peer.next;
                i += 1;
            }
        }
        // SAFETY: `best` is a live slot; the scans' references are gone.
        let best = unsafe { &mut *best };
        best.current_weight -= total;
        if now - best.checked > best.fail_timeout {
            best.checked = now;
        }
        best.conns += 1;
        best.refs += 1;
        tried_bits[p / 64] |= 1 << (p % 64);
        Some(p)
    }

    /// `ngx_http_upstream_free_round_robin_peer` for peer `i`.
    pub fn free(&self, i: usize, failed: bool, now: u64) {
        let peer = self.slots[i].get();
        rlock(&self.rwlock, self.spin);
        // SAFETY: `peer` is a live slot; `lock` is only used atomically.
        let lock = unsafe { &(*peer).lock };
        wlock(lock, self.spin);
        // SAFETY: the list's read lock keeps picks out and the peer's lock
        // other frees of this peer; the other fields are written by place,
        // never through a reference to the whole peer (which would alias
        // `lock`).
        unsafe {
            if self.single {
                if (*peer).fails != 0 {
                    (*peer).fails = 0;
                }
            } else if failed {
                let now = now as i64;
                (*peer).fails += 1;
                (*peer).accessed = now;
                (*peer).checked = now;
                if (*peer).max_fails != 0 {
                    (*peer).effective_weight -= (*peer).weight / (*peer).max_fails as isize;
                }
                if (*peer).effective_weight < 0 {
                    (*peer).effective_weight = 0;
                }
            } else if (*peer).accessed < (*peer).checked {
                (*peer).fails = 0;
            }
            (*peer).conns -= 1;
            // ngx_http_upstream_rr_peer_unref: `refs` back down, a zombie
            // (never, here) would be freed.
            (*peer).refs -= 1;
        }
        unlock(lock);
        unlock(&self.rwlock);
    }
}

/// Checks the baseline against nginx's known behaviour (the bench runs it
/// before measuring).
pub fn self_check() {
    let p = Peers::new(&[5, 1, 1]);
    let mut seq = String::new();
    for _ in 0..14 {
        let mut bits = vec![0u64; p.tried_words()];
        let i = p.get_round_robin(&mut bits, 0).expect("a peer");
        seq.push((b'a' + i as u8) as char);
        p.free(i, false, 0);
    }
    assert_eq!(seq, "aabacaaaabacaa", "baseline is not nginx's SWRR");

    let p = Peers::new(&[5, 1, 1]);
    let mut seq = String::new();
    for _ in 0..7 {
        let mut bits = vec![0u64; p.tried_words()];
        let i = p.get_least_conn(&mut bits, 0).expect("a peer");
        seq.push((b'a' + i as u8) as char);
        p.free(i, false, 0);
    }
    assert_eq!(
        seq, "aabacaa",
        "baseline least_conn tie-break is not nginx's"
    );

    // least_conn: a held connection steers picks away; retries skip tried
    // peers; a failure (max_fails=1) disables the peer for fail_timeout.
    let p = Peers::new(&[1, 1, 1]);
    let mut held = vec![0u64; p.tried_words()];
    assert_eq!(p.get_least_conn(&mut held, 0), Some(0));
    let mut bits = vec![0u64; p.tried_words()];
    let first = p.get_least_conn(&mut bits, 0).expect("a peer");
    assert_ne!(first, 0, "least_conn picked the busy peer");
    p.free(first, true, 0);
    let second = p.get_least_conn(&mut bits, 0).expect("a peer");
    assert!(second != first && second != 0, "retry revisited a peer");
    p.free(second, false, 0);
    assert_eq!(p.get_least_conn(&mut bits, 0), Some(0), "one peer left");
    p.free(0, false, 0);
    assert_eq!(p.get_least_conn(&mut bits, 0), None, "all peers tried");
    let mut bits = vec![0u64; p.tried_words()];
    let third = p.get_round_robin(&mut bits, 5).expect("a peer");
    assert_ne!(third, first, "failed peer picked inside fail_timeout");
    p.free(third, false, 5);
    p.free(0, false, 5);
}
