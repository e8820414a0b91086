//! Criterion benchmarks: a bound request (cookie or route) against a plain
//! pick, and against nginx 1.29.6's lookup of the bound server
//!
//! - `sticky/<policy>/plain/<peers>`: one request, unbound: `Zone::begin`,
//!   `Zone::get_keyed`, `Zone::free(Ok)`, `Zone::end` (as `benches/pick`).
//!   Round robin and least_conn walk their servers in an order the caches
//!   follow; `random` lands on a random server each time, as bound
//!   requests do: the fair reference at 10,000 servers, where a random
//!   server's lines (its state, statistics row, ledger entry) are cache
//!   misses.
//! - `sticky/<policy>/bound/<peers>`: the same request bound by a cookie:
//!   `Zone::get_bound(Binding::Sid(..))`, the id one of the servers' ids
//!   (the hex MD5 of its address), a different server every request. The
//!   goal: no more than twice `plain`, and flat in the number of servers.
//! - `sticky/nginx_sid_scan/<peers>`: nginx 1.29.6's algorithm for the same
//!   request, ported (`ngx_http_upstream_get_round_robin_peer` with a
//!   hint): under the peers' write lock, a walk of the peer list comparing
//!   each peer's 32-byte SID with the hint (`ngx_http_upstream_get_rr_peer_by_sid`:
//!   length, then `memcmp`), the bound peer's checks (tried, down,
//!   max_fails window, max_conns), `conns++`; then the release under the
//!   read lock. This is a lower bound of stock nginx's cost: it then also
//!   runs its smooth weighted round robin over every peer unless the bound
//!   peer's `current_weight` is below its limit.
//!
//! Sizes 3, 1,000 and 10,000. Results and machine: `docs/benchmarks.md`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion};
use hab_core::algo::md5;
use hab_core::testing::OwnedTable;
use hab_core::{attempt, Attempt, Binding, Outcome, PeerSpec, Policy, UpstreamSpec};

const SIZES: [usize; 3] = [3, 1_000, 10_000];
const NOW: u64 = 1_000;

/// `n` identities as the module builds them (`upstream\0server\0address`).
fn ids(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let a = format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 0xff, i & 0xff);
            format!("bench\0{a}\0{a}").into_bytes()
        })
        .collect()
}

/// The session id of each: nginx's, the hex MD5 of the address.
fn sids(ids: &[Vec<u8>]) -> Vec<[u8; 32]> {
    ids.iter()
        .map(|id| md5::hex(hab_core::spec::identity_address(id)))
        .collect()
}

fn table(policy: Policy, ids: &[Vec<u8>]) -> OwnedTable {
    let peers: Vec<PeerSpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| PeerSpec::new(id).weight(i as u32 % 3 + 1))
        .collect();
    OwnedTable::new(&UpstreamSpec {
        policy,
        peers: &peers,
        health: Default::default(),
        schedule_room: 0,
        sessions: true,
    })
    .expect("table")
}

/// One request on `t`, bound to `sid` (or not).
#[inline(always)]
fn request(t: &OwnedTable, words: &mut [u64], sid: Option<&[u8]>) -> u32 {
    let zone = t.zone();
    let mut a = Attempt::from_words(words);
    a.reset(NOW);
    a.set_slot(Some(0));
    zone.begin(&mut a).expect("a generation");
    let p = match sid {
        Some(s) => zone.get_bound(&mut a, b"", Binding::Sid(s), NOW),
        None => zone.get_keyed(&mut a, b"", NOW),
    }
    .expect("a peer");
    zone.free(&mut a, Outcome::Ok, NOW).expect("a try");
    zone.end(&mut a);
    p.peer
}

/// nginx 1.29.6's peer, as much of it as the bound lookup reads.
struct NgxPeer {
    sid: [u8; 32],
    sid_len: usize,
    down: u32,
    max_fails: u32,
    fails: AtomicU32,
    checked: AtomicU64,
    fail_timeout: u64,
    max_conns: u32,
    conns: AtomicU32,
    next: Option<Box<NgxPeer>>,
}

/// A peer list under nginx's `ngx_rwlock_t` (a word: 0, readers, or
/// `NGX_RWLOCK_WLOCK`), spinning as `ngx_rwlock_wlock` does.
struct NgxPeers {
    lock: AtomicU64,
    peer: Option<Box<NgxPeer>>,
}

const WLOCK: u64 = u64::MAX;

impl NgxPeers {
    fn new(sids: &[[u8; 32]]) -> NgxPeers {
        let mut head = None;
        for sid in sids.iter().rev() {
            head = Some(Box::new(NgxPeer {
                sid: *sid,
                sid_len: 32,
                down: 0,
                max_fails: 1,
                fails: AtomicU32::new(0),
                checked: AtomicU64::new(0),
                fail_timeout: 10,
                max_conns: 0,
                conns: AtomicU32::new(0),
                next: head,
            }));
        }
        NgxPeers {
            lock: AtomicU64::new(0),
            peer: head,
        }
    }

    fn wlock(&self) {
        while self
            .lock
            .compare_exchange_weak(0, WLOCK, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }

    fn rlock(&self) {
        loop {
            let v = self.lock.load(Ordering::Relaxed);
            if v != WLOCK
                && self
                    .lock
                    .compare_exchange_weak(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        if self.lock.load(Ordering::Relaxed) == WLOCK {
            self.lock.store(0, Ordering::Release);
        } else {
            self.lock.fetch_sub(1, Ordering::Release);
        }
    }

    /// `ngx_http_upstream_get_rr_peer_by_sid` under the write lock, then
    /// the bound peer taken: its position.
    fn get_by_sid(&self, tried: &mut [u64], hint: &[u8], now: u64) -> Option<usize> {
        self.wlock();
        let mut found = None;
        let mut p = self.peer.as_deref();
        let mut i = 0usize;
        while let Some(peer) = p {
            if peer.sid_len == hint.len() && peer.sid[..peer.sid_len] == *hint {
                let (n, m) = (i / 64, 1u64 << (i % 64));
                let ok = tried[n] & m == 0
                    && peer.down == 0
                    && !(peer.max_fails != 0
                        && peer.fails.load(Ordering::Relaxed) >= peer.max_fails
                        && now - peer.checked.load(Ordering::Relaxed) <= peer.fail_timeout)
                    && !(peer.max_conns != 0
                        && peer.conns.load(Ordering::Relaxed) >= peer.max_conns);
                if ok {
                    tried[n] |= m;
                    peer.conns.fetch_add(1, Ordering::Relaxed);
                    found = Some(i);
                }
                break;
            }
            p = peer.next.as_deref();
            i += 1;
        }
        self.unlock();
        found
    }

    /// `ngx_http_upstream_free_round_robin_peer` for a success: under the
    /// read lock, the peer's `conns--`.
    fn free(&self, i: usize) {
        self.rlock();
        let mut p = self.peer.as_deref();
        for _ in 0..i {
            p = p.and_then(|x| x.next.as_deref());
        }
        if let Some(peer) = p {
            peer.conns.fetch_sub(1, Ordering::Relaxed);
        }
        self.unlock();
    }
}

fn sticky(c: &mut Criterion) {
    let mut g = c.benchmark_group("sticky");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    for n in SIZES {
        let ids = ids(n);
        let sids = sids(&ids);
        for (name, policy) in [
            ("round_robin", Policy::RoundRobin),
            ("least_conn", Policy::LeastConn),
            ("random", Policy::Random),
        ] {
            let t = table(policy, &ids);
            let mut words = vec![0u64; attempt::words(n)];
            Attempt::init(&mut words, NOW);
            let _ = t.zone().claim_slot(1, |_| true);
            g.bench_with_input(BenchmarkId::new(format!("{name}/plain"), n), &n, |b, _| {
                b.iter(|| black_box(request(&t, &mut words, None)))
            });
            let mut k = 0usize;
            g.bench_with_input(BenchmarkId::new(format!("{name}/bound"), n), &n, |b, _| {
                b.iter(|| {
                    // A different server each request (spread over the
                    // list, so the scan below walks half of it on average).
                    k = (k + 7919) % n;
                    let p = request(&t, &mut words, Some(&sids[k]));
                    debug_assert_eq!(p as usize, k);
                    black_box(p)
                })
            });
        }
        let peers = NgxPeers::new(&sids);
        let mut tried = vec![0u64; n.div_ceil(64)];
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::new("nginx_sid_scan", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 7919) % n;
                tried.fill(0);
                let i = peers.get_by_sid(&mut tried, &sids[k], 1).expect("a peer");
                peers.free(i);
                black_box(i)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sticky);

fn main() {
    // Every bound request reaches its server (checked once, outside the
    // measurement).
    for n in SIZES {
        let ids = ids(n);
        let sids = sids(&ids);
        let t = table(Policy::LeastConn, &ids);
        let mut words = vec![0u64; attempt::words(n)];
        Attempt::init(&mut words, NOW);
        for k in (0..n).step_by((n / 50).max(1)) {
            assert_eq!(request(&t, &mut words, Some(&sids[k])) as usize, k);
        }
        let peers = NgxPeers::new(&sids);
        let mut tried = vec![0u64; n.div_ceil(64)];
        assert_eq!(peers.get_by_sid(&mut tried, &sids[n - 1], 1), Some(n - 1));
        peers.free(n - 1);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
