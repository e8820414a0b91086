//! Criterion benchmarks of the learn table (`ha_sticky learn`): lookups
//! that hit and miss, and creations, at a million sessions, on one thread
//! and two
//!
//! - `learn/fingerprint/32`: the fingerprint of a 32-byte session id
//!   (what every lookup and learn pays first, outside the table).
//! - `learn/lookup_hit/1000000`: `Sessions::lookup` of a present session,
//!   in a random order over the million (every lookup a cache miss or two
//!   in a 48 MiB table: the bucket line and the record).
//! - `learn/lookup_miss/1000000`: the same for sessions never learnt (the
//!   bucket line only: a tag matches one way in 16 million).
//! - `learn/create/1000000`: `Sessions::learn` of a new session in a full
//!   table (a separate one): an append number, the oldest record read, its
//!   way cleared, the record written, the new way installed.
//! - `learn_2_threads/...`: the same loops on two threads sharing one
//!   table. Each thread times its own loop after a barrier; the slower
//!   thread's time per operation is reported (time per operation per
//!   thread while both run). Thread spawn and join are not measured.
//!
//! The table's size and bytes per entry are printed first (`memory:`).
//! `cargo bench --bench learn -- --warm-up-time 1 --measurement-time 2`

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use hab_core::learn::{self, Learnt, Sessions};

/// Sessions in the tables.
const ENTRIES: u64 = 1_000_000;
/// Records: the power of two above.
const CAPACITY: usize = 1 << 20;
/// Timeout: nothing expires during the run.
const TIMEOUT_MS: u64 = 1 << 31;

/// A 64-byte aligned, zeroed allocation holding one table.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn new(len: usize) -> Region {
        let layout = Layout::from_size_align(len, 64).expect("layout");
        // SAFETY: a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation of {len} bytes");
        Region { ptr, layout }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A table of [`CAPACITY`] records holding sessions `0..ENTRIES`.
fn table(region: &Region) -> Sessions<'_> {
    // SAFETY: the region is ours, `len` bytes, alive as long as the view
    // (borrowed from it).
    let t = unsafe { Sessions::init(region.ptr, region.layout.size(), TIMEOUT_MS) }
        .expect("table fits");
    assert_eq!(t.capacity(), CAPACITY);
    for k in 0..ENTRIES {
        assert_eq!(t.learn(fp(k), k + 1, 0, true), Learnt::Created);
    }
    t
}

/// Session `k`'s fingerprint (of its 8-byte number: the table sees only
/// fingerprints).
fn fp(k: u64) -> u64 {
    learn::fingerprint(&k.to_le_bytes())
}

/// splitmix64: the fingerprints of the sessions `create` makes (cheap and
/// never repeating; not the table's concern how they were made).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

/// The fingerprints of sessions `from..from + ENTRIES` in a random order.
fn shuffled(from: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (from..from + ENTRIES).map(fp).collect();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// Runs `op(thread, i)` `iters` times on each of two threads after a
/// barrier: the slower thread's time.
fn two_threads(iters: u64, op: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|thread| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(thread, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("bench thread"))
            .max()
            .expect("two threads")
    })
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let size = learn::size_for(CAPACITY).expect("size");
    println!(
        "memory: {CAPACITY} records in {size} bytes ({:.1} MiB): {} bytes per entry \
         ({:.1} per session at {ENTRIES})",
        size as f64 / (1 << 20) as f64,
        learn::BYTES_PER_ENTRY,
        size as f64 / ENTRIES as f64
    );
    let started = Instant::now();
    let lookups = Region::new(size);
    let t = table(&lookups);
    let s = t.stats(0);
    println!(
        "filled: {} sessions created in {:?}: {} live, {} evicted early (a full bucket's oldest)",
        ENTRIES,
        started.elapsed(),
        s.entries,
        s.evicted
    );
    let hits = [shuffled(0, 1), shuffled(0, 2)];
    let misses = [shuffled(ENTRIES, 3), shuffled(ENTRIES, 4)];
    let found = hits[0]
        .iter()
        .filter(|&&f| t.lookup(f, 0).is_some())
        .count();
    println!("lookup_hit: {found} of {ENTRIES} sessions found");
    let n = ENTRIES as usize;

    let mut group = c.benchmark_group("learn");
    let id = b"0123456789abcdef0123456789abcdef";
    group.bench_function(BenchmarkId::new("fingerprint", id.len()), |b| {
        b.iter(|| learn::fingerprint(black_box(id)))
    });
    let mut i = 0;
    group.bench_function(BenchmarkId::new("lookup_hit", ENTRIES), |b| {
        b.iter(|| {
            i += 1;
            t.lookup(hits[0][i % n], 1)
        })
    });
    group.bench_function(BenchmarkId::new("lookup_miss", ENTRIES), |b| {
        b.iter(|| {
            i += 1;
            t.lookup(misses[0][i % n], 1)
        })
    });
    let creates = Region::new(size);
    let ct = table(&creates);
    // Session numbers of `create`, past those of every earlier call.
    let next = AtomicU64::new(ENTRIES);
    group.bench_function(BenchmarkId::new("create", ENTRIES), |b| {
        b.iter_custom(|iters| {
            let base = next.fetch_add(iters, Relaxed);
            let start = Instant::now();
            for k in base..base + iters {
                black_box(ct.learn(mix(k), k, 1, true));
            }
            start.elapsed()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("learn_2_threads");
    let at = AtomicU64::new(0);
    group.bench_function(BenchmarkId::new("lookup_hit", ENTRIES), |b| {
        b.iter_custom(|iters| {
            let base = at.fetch_add(iters, Relaxed);
            two_threads(iters, &|th, i| {
                black_box(t.lookup(hits[th][(base + i) as usize % n], 1));
            })
        })
    });
    group.bench_function(BenchmarkId::new("lookup_miss", ENTRIES), |b| {
        b.iter_custom(|iters| {
            let base = at.fetch_add(iters, Relaxed);
            two_threads(iters, &|th, i| {
                black_box(t.lookup(misses[th][(base + i) as usize % n], 1));
            })
        })
    });
    group.bench_function(BenchmarkId::new("create", ENTRIES), |b| {
        b.iter_custom(|iters| {
            let base = next.fetch_add(2 * iters, Relaxed);
            two_threads(iters, &|th, i| {
                let k = base + 2 * i + th as u64;
                black_box(ct.learn(mix(k), k, 1, true));
            })
        })
    });
    group.finish();
    let s = ct.stats(1);
    println!(
        "create: {} created, {} live, {} evicted, {} expired",
        s.created, s.entries, s.evicted, s.expired
    );
    c.final_summary();
}
