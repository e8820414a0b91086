//! nginx's own balancers, ported faithfully, as the benchmark baseline
//!
//! `ngx_http_upstream_get_peer` (smooth weighted round robin) and
//! `ngx_http_upstream_get_least_conn_peer` from nginx 1.28, step for step
//! where it matters: the O(n) scan over every peer with the tried bitmap,
//! the failure-window check, `max_conns`, the effective-weight recovery,
//! least_conn's cross-multiplied comparison and its SWRR tie-break among
//! equally loaded peers, and the free path's bookkeeping. As with an
//! upstream `zone`, each pick and each free runs under one write lock on
//! the peer list (nginx's `ngx_rwlock_wlock`: a spin lock that yields), so
//! the two-thread figures include the convoy nginx has.

#![allow(dead_code)]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// One `ngx_http_upstream_rr_peer_t`, the fields the pick touches.
#[derive(Debug, Clone)]
struct Peer {
    current_weight: i64,
    effective_weight: i64,
    weight: i64,
    conns: u64,
    max_conns: u64,
    fails: u64,
    max_fails: u64,
    accessed: u64,
    checked: u64,
    fail_timeout: u64,
    down: bool,
}

/// The peer list with nginx's write lock.
#[derive(Debug)]
pub struct Peers {
    lock: AtomicBool,
    peers: UnsafeCell<Vec<Peer>>,
}

// SAFETY: `peers` is only accessed inside `locked`, under the spin lock.
unsafe impl Sync for Peers {}

/// nginx's `ngx_rwlock_wlock`: spin, then yield.
fn wlock(lock: &AtomicBool) {
    loop {
        if !lock.load(Ordering::Relaxed)
            && lock
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        std::thread::yield_now();
    }
}

/// Whether nginx would consider `peer` at all.
#[inline]
fn usable(peer: &Peer, now: u64) -> bool {
    if peer.down {
        return false;
    }
    if peer.max_fails != 0
        && peer.fails >= peer.max_fails
        && now.saturating_sub(peer.checked) <= peer.fail_timeout
    {
        return false;
    }
    !(peer.max_conns != 0 && peer.conns >= peer.max_conns)
}

#[inline]
fn tried(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

impl Peers {
    /// Peers with the given weights and nginx's defaults.
    pub fn new(weights: &[u32]) -> Peers {
        let peers = weights
            .iter()
            .map(|&w| Peer {
                current_weight: 0,
                effective_weight: i64::from(w),
                weight: i64::from(w),
                conns: 0,
                max_conns: 0,
                fails: 0,
                max_fails: 1,
                accessed: 0,
                checked: 0,
                fail_timeout: 10,
                down: false,
            })
            .collect();
        Peers {
            lock: AtomicBool::new(false),
            peers: UnsafeCell::new(peers),
        }
    }

    /// Words of the per-request tried bitmap.
    pub fn tried_words(&self) -> usize {
        self.locked(|p| p.len().div_ceil(64))
    }

    fn locked<R>(&self, f: impl FnOnce(&mut Vec<Peer>) -> R) -> R {
        wlock(&self.lock);
        // SAFETY: the spin lock gives exclusive access until released.
        let r = f(unsafe { &mut *self.peers.get() });
        self.lock.store(false, Ordering::Release);
        r
    }

    /// `ngx_http_upstream_get_peer`: smooth weighted round robin.
    pub fn get_round_robin(&self, tried_bits: &mut [u64], now: u64) -> Option<usize> {
        self.locked(|peers| {
            let mut best: Option<usize> = None;
            let mut best_cw = 0i64;
            let mut total = 0i64;
            for (i, peer) in peers.iter_mut().enumerate() {
                if tried(tried_bits, i) || !usable(peer, now) {
                    continue;
                }
                peer.current_weight += peer.effective_weight;
                total += peer.effective_weight;
                if peer.effective_weight < peer.weight {
                    peer.effective_weight += 1;
                }
                if best.is_none() || peer.current_weight > best_cw {
                    best = Some(i);
                    best_cw = peer.current_weight;
                }
            }
            let b = best?;
            take(&mut peers[b], tried_bits, b, now);
            peers[b].current_weight -= total;
            Some(b)
        })
    }

    /// `ngx_http_upstream_get_least_conn_peer`.
    pub fn get_least_conn(&self, tried_bits: &mut [u64], now: u64) -> Option<usize> {
        self.locked(|peers| {
            let mut best: Option<usize> = None;
            let mut many = false;
            for (i, peer) in peers.iter().enumerate() {
                if tried(tried_bits, i) || !usable(peer, now) {
                    continue;
                }
                match best {
                    Some(b)
                        if peer.conns * peers[b].weight as u64
                            > peers[b].conns * peer.weight as u64 => {}
                    Some(b)
                        if peer.conns * peers[b].weight as u64
                            == peers[b].conns * peer.weight as u64 =>
                    {
                        many = true
                    }
                    _ => {
                        best = Some(i);
                        many = false;
                    }
                }
            }
            let mut b = best?;
            if many {
                let (bc, bw) = (peers[b].conns, peers[b].weight as u64);
                let mut total = 0i64;
                let mut tb: Option<usize> = None;
                let mut tb_cw = 0i64;
                for (i, peer) in peers.iter_mut().enumerate().skip(b) {
                    if tried(tried_bits, i) || !usable(peer, now) {
                        continue;
                    }
                    if peer.conns * bw != bc * peer.weight as u64 {
                        continue;
                    }
                    peer.current_weight += peer.effective_weight;
                    total += peer.effective_weight;
                    if peer.effective_weight < peer.weight {
                        peer.effective_weight += 1;
                    }
                    if tb.is_none() || peer.current_weight > tb_cw {
                        tb = Some(i);
                        tb_cw = peer.current_weight;
                    }
                }
                b = tb.unwrap_or(b);
                peers[b].current_weight -= total;
            }
            take(&mut peers[b], tried_bits, b, now);
            Some(b)
        })
    }

    /// `ngx_http_upstream_free_round_robin_peer` for a successful try.
    pub fn free(&self, i: usize, failed: bool, now: u64) {
        self.locked(|peers| {
            let peer = &mut peers[i];
            if failed {
                peer.fails += 1;
                peer.accessed = now;
                peer.checked = now;
                if peer.max_fails != 0 {
                    peer.effective_weight -= peer.weight / peer.max_fails as i64;
                }
                peer.effective_weight = peer.effective_weight.max(0);
            } else if peer.accessed < peer.checked {
                peer.fails = 0;
            }
            peer.conns -= 1;
        })
    }
}

fn take(peer: &mut Peer, tried_bits: &mut [u64], i: usize, now: u64) {
    tried_bits[i / 64] |= 1 << (i % 64);
    peer.conns += 1;
    if now.saturating_sub(peer.checked) > peer.fail_timeout {
        peer.checked = now;
    }
}

/// The baseline gives nginx's sequence (checked when the bench starts).
pub fn self_check() {
    let p = Peers::new(&[5, 1, 1]);
    let mut seq = String::new();
    for _ in 0..7 {
        let mut bits = vec![0u64; p.tried_words()];
        let i = p.get_round_robin(&mut bits, 0).expect("a peer");
        seq.push((b'a' + i as u8) as char);
        p.free(i, false, 0);
    }
    assert_eq!(seq, "aabacaa", "baseline is not nginx's SWRR");
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
}
