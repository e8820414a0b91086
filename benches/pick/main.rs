//! Criterion benchmarks: every policy's pick + release against nginx's own
//! balancers, one thread and two, table memory and build time
//!
//! - `pick/<policy>/<peers>`: one request that succeeds on its first try:
//!   `Attempt::reset`, `seed`, `Zone::begin` (pins the serving generation),
//!   `Zone::get_keyed`, `Zone::free(Ok)`, `Zone::end` (unpins), on
//!   one thread, reusing one attempt buffer so nothing allocates in the
//!   loop. Each request takes the next key of a pool of [`KEYS`] keys of 20
//!   bytes (hash policies pay the crc32 of a realistic key; the others
//!   ignore it) and a fresh seed (as nginx's module seeds every attempt).
//! - `pick/nginx_round_robin/<peers>`, `pick/nginx_least_conn/<peers>`:
//!   the same request on nginx 1.28's smooth WRR and least_conn with an
//!   upstream `zone` (`support/nginx_baseline.rs`): clear the tried bitmap,
//!   pick under the zone's write lock, free under its read lock and the
//!   peer's lock.
//! - `pick_2_threads/<policy>/<peers>`: the same loops on two threads
//!   sharing one table (or one nginx peer list): picking back to back, the
//!   worst case for contention. Each thread times its own loop after a
//!   barrier; the slower thread's time divided by its request count is
//!   reported: time per request per thread while both run. Thread spawn
//!   and join are not measured.
//! - `pick_2_tables/<policy>/<peers>` (round robin and least_conn): the
//!   control for the above, the same two threads each on a table of its
//!   own: what two threads lose there is the machine's, not contention.
//! - `build/<policy>/<peers>`: `Zone::init` into an allocated region (the
//!   zone and its first generation).
//! - `build/rebuild/<policy>/<peers>`: a runtime change: one weight
//!   overridden, the next generation built beside the serving one and
//!   published (`Zone::publish`), as a `PATCH` of the weight does.
//! - Before measuring, the baseline checks itself against nginx's known
//!   sequences and the table size per peer of every policy is printed
//!   (`memory:` lines).
//!
//! Peers have unique ids and weights cycling 1, 2, 3. Sizes 3, 100, 1,000
//! and 10,000 (least_conn and nginx's also 250 and 500, to place the
//! 1 µs crossover). Short measurements (0.3 s warm-up, 1 s, 20 samples) keep
//! the whole run to a few minutes on 2 cores. Results and the machine they
//! came from: `docs/benchmarks.md`.

mod nginx_baseline;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode};
use hab_core::layout::stats::TryInfo;
use hab_core::layout::Zone;
use hab_core::spec::HashMode;
use hab_core::testing::{OwnedTable, Region};
use hab_core::{attempt, write, Attempt, Outcome, PeerSpec, Policy, Table, UpstreamSpec};
use nginx_baseline::Peers;

const SIZES: [usize; 4] = [3, 100, 1_000, 10_000];
/// Extra sizes for least_conn (ours and nginx's), between 100 and 1,000.
const CROSSOVER_SIZES: [usize; 2] = [250, 500];

/// Every policy, as the directive names it.
const POLICIES: [(&str, Policy); 9] = [
    ("round_robin", Policy::RoundRobin),
    ("least_conn", Policy::LeastConn),
    ("p2c", Policy::P2c),
    ("ewma", Policy::Ewma { decay_ms: 10_000 }),
    ("random", Policy::Random),
    (
        "hash",
        Policy::Hash {
            mode: HashMode::Plain,
            balance_factor: 0,
            maglev_size: 0,
        },
    ),
    (
        "hash_consistent",
        Policy::Hash {
            mode: HashMode::Consistent,
            balance_factor: 0,
            maglev_size: 0,
        },
    ),
    (
        "hash_maglev",
        Policy::Hash {
            mode: HashMode::Maglev,
            balance_factor: 0,
            maglev_size: 0,
        },
    ),
    (
        "hash_consistent_bf125",
        Policy::Hash {
            mode: HashMode::Consistent,
            balance_factor: 125,
            maglev_size: 0,
        },
    ),
];

/// Request time, ms: constant, so no failure window ever expires.
const NOW: u64 = 1_000;
/// The same for the baseline, which counts in seconds as nginx does.
const NOW_S: u64 = 1;
/// Keys in the pool each request takes its key from (a power of two).
const KEYS: usize = 1024;
/// Weyl increment between request seeds.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// `n` unique peer identities, as nginx would build them.
fn ids(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("bench 10.{}.{}.{}:80", i >> 16, (i >> 8) & 0xff, i & 0xff).into_bytes())
        .collect()
}

/// Weights 1, 2, 3 cycling.
fn weights(n: usize) -> Vec<u32> {
    (0..n).map(|i| i as u32 % 3 + 1).collect()
}

/// Primaries with [`weights`].
fn peers(ids: &[Vec<u8>]) -> Vec<PeerSpec<'_>> {
    ids.iter()
        .zip(weights(ids.len()))
        .map(|(id, w)| PeerSpec::new(id).weight(w))
        .collect()
}

/// [`KEYS`] request keys of 20 bytes each, like a URI or a session id.
fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("/api/v1/users/{:06}", (i * 7919) % 1_000_000).into_bytes())
        .collect()
}

/// What a benchmark drives.
#[derive(Debug, Clone, Copy)]
enum Subject<'a> {
    Ours(Table<'a>),
    NginxRoundRobin(&'a Peers),
    NginxLeastConn(&'a Peers),
}

/// What the module reports of a successful try.
const TRY: TryInfo = TryInfo {
    status: 200,
    header_ms: Some(1),
    sent: 180,
    received: 1200,
};

/// One thread's per-request state: its attempt (or tried bitmap) buffer,
/// its position in the key pool and its seed sequence.
struct Worker<'k> {
    words: Vec<u64>,
    /// The thread's ledger slot (ours), as each nginx worker has one.
    slot: Option<u32>,
    keys: &'k [Vec<u8>],
    next_key: usize,
    seed: u64,
}

impl<'k> Worker<'k> {
    fn new(s: Subject<'_>, keys: &'k [Vec<u8>], thread: usize) -> Worker<'k> {
        let mut words = match s {
            Subject::Ours(t) => vec![0u64; attempt::words(t.peers())],
            Subject::NginxRoundRobin(p) | Subject::NginxLeastConn(p) => {
                vec![0u64; p.tried_words()]
            }
        };
        let mut slot = None;
        if let Subject::Ours(t) = s {
            Attempt::init(&mut words, NOW);
            slot = t.zone().claim_slot(thread as u64 + 1, |_| true);
        }
        Worker {
            words,
            slot,
            keys,
            next_key: thread * KEYS / 2,
            seed: (thread as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03),
        }
    }

    /// Runs `iters` requests, each succeeding on its first try.
    #[inline(never)]
    fn run(&mut self, s: Subject<'_>, iters: u64) {
        match s {
            Subject::Ours(table) => {
                // As the module: pin the serving generation, pick and
                // release on it, unpin at the end of the request.
                let zone = table.zone();
                let mut a = Attempt::from_words(&mut self.words);
                for _ in 0..iters {
                    let key = &self.keys[self.next_key % KEYS];
                    self.next_key += 1;
                    self.seed = self.seed.wrapping_add(GOLDEN);
                    a.reset(NOW);
                    a.seed(self.seed);
                    a.set_slot(self.slot);
                    zone.begin(&mut a).expect("a generation");
                    let p = zone.get_keyed(&mut a, key, NOW).expect("a peer");
                    // As the module: the try's status, header time and
                    // bytes go to the statistics.
                    zone.free_with(&mut a, Outcome::Ok, &TRY, NOW)
                        .expect("a try");
                    zone.end(&mut a);
                    black_box(p);
                }
            }
            Subject::NginxRoundRobin(peers) => {
                for _ in 0..iters {
                    self.words.fill(0);
                    let i = peers
                        .get_round_robin(&mut self.words, NOW_S)
                        .expect("a peer");
                    peers.free(i, false, NOW_S);
                    black_box(i);
                }
            }
            Subject::NginxLeastConn(peers) => {
                for _ in 0..iters {
                    self.words.fill(0);
                    let i = peers
                        .get_least_conn(&mut self.words, NOW_S)
                        .expect("a peer");
                    peers.free(i, false, NOW_S);
                    black_box(i);
                }
            }
        }
    }
}

fn table(policy: Policy, peers: &[PeerSpec<'_>]) -> OwnedTable {
    OwnedTable::new(&UpstreamSpec {
        policy,
        peers,
        health: Default::default(),
        schedule_room: 0,
        sessions: false,
    })
    .expect("table")
}

/// Every subject at `n` peers: ours by policy, then nginx's two.
fn each_subject(n: usize, mut f: impl FnMut(&str, Subject<'_>)) {
    let ids = ids(n);
    let specs = peers(&ids);
    let lc_only = CROSSOVER_SIZES.contains(&n);
    for (name, policy) in POLICIES {
        if lc_only && policy != Policy::LeastConn {
            continue;
        }
        let owned = table(policy, &specs);
        f(name, Subject::Ours(owned.table()));
    }
    let w = weights(n);
    if !lc_only {
        f(
            "nginx_round_robin",
            Subject::NginxRoundRobin(&Peers::new(&w)),
        );
    }
    f("nginx_least_conn", Subject::NginxLeastConn(&Peers::new(&w)));
}

fn pick(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    let mut sizes = SIZES.to_vec();
    sizes.extend(CROSSOVER_SIZES);
    sizes.sort();
    for n in sizes {
        each_subject(n, |name, s| {
            let mut w = Worker::new(s, &keys, 0);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    w.run(s, iters);
                    start.elapsed()
                });
            });
        });
    }
    group.finish();
}

fn pick_2_threads(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick_2_threads");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20);
    for n in SIZES {
        each_subject(n, |name, s| {
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let barrier = Barrier::new(2);
                    std::thread::scope(|scope| {
                        let threads: Vec<_> = (0..2)
                            .map(|thread| {
                                let (barrier, keys) = (&barrier, &keys);
                                scope.spawn(move || {
                                    let mut w = Worker::new(s, keys, thread);
                                    barrier.wait();
                                    let start = Instant::now();
                                    w.run(s, iters);
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
                });
            });
        });
    }
    group.finish();
}

/// The control for `pick_2_threads`: the same two threads, each on a table
/// of its own (nothing shared), for round robin and least_conn. What two
/// threads lose here is the machine's (shared cores, frequency, other
/// load), not contention on the table.
fn pick_2_tables(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick_2_tables");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20);
    for n in SIZES {
        let ids = ids(n);
        let specs = peers(&ids);
        for (name, policy) in [
            ("round_robin", Policy::RoundRobin),
            ("least_conn", Policy::LeastConn),
        ] {
            let owned = [table(policy, &specs), table(policy, &specs)];
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let barrier = Barrier::new(2);
                    std::thread::scope(|scope| {
                        let threads: Vec<_> = (0..2)
                            .map(|thread| {
                                let (barrier, keys) = (&barrier, &keys);
                                let s = Subject::Ours(owned[thread].table());
                                scope.spawn(move || {
                                    let mut w = Worker::new(s, keys, thread);
                                    barrier.wait();
                                    let start = Instant::now();
                                    w.run(s, iters);
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
                });
            });
        }
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for n in [1_000, 10_000] {
        let ids = ids(n);
        let peers = peers(&ids);
        if n >= 10_000 {
            // Tens to hundreds of ms an iteration: flat sampling, few samples.
            group.sampling_mode(SamplingMode::Flat).sample_size(10);
        } else {
            group.sample_size(20);
        }
        for (name, policy) in POLICIES {
            let spec = UpstreamSpec {
                health: Default::default(),
                policy,
                peers: &peers,
                schedule_room: 0,
                sessions: false,
            };
            let region = Region::new(write::zone_size(&spec).expect("size"));
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    // SAFETY: the region is ours, large enough, alive.
                    unsafe { Zone::init(black_box(&spec), region.as_ptr(), region.len()) }
                        .expect("zone")
                        .peers()
                });
            });
            // A runtime change: one weight overridden, the next generation
            // built beside the serving one and published (the old one is
            // reclaimed by the next rebuild).
            let owned = OwnedTable::new(&spec).expect("zone");
            let zone = owned.zone();
            let mut k = 0u32;
            group.bench_function(BenchmarkId::new(format!("rebuild/{name}"), n), |b| {
                b.iter(|| {
                    k = k % 7 + 1;
                    zone.set_weight(n / 2, Some(k)).expect("weight");
                    zone.publish(1, |_| true).expect("publish")
                });
            });
            if n == 1_000 {
                membership(&mut group, name, policy, &peers);
            }
        }
    }
    group.finish();
}

/// A membership change (`resolve`): `n` peers in a zone of `n + 24`
/// slots, the list alternating between the first `n` identities and the
/// same without the first and with one more, so that every change
/// matches `n` identities, retires one and revives (or adds) another,
/// then builds and publishes the generation.
fn membership(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    policy: Policy,
    peers: &[PeerSpec<'_>],
) {
    let n = peers.len();
    let extra = self::ids(n + 1).pop().expect("one more");
    let mut shifted: Vec<PeerSpec<'_>> = peers[1..].to_vec();
    shifted.push(PeerSpec::new(&extra).weight(peers[0].weight));
    let spec = |peers| UpstreamSpec {
        health: Default::default(),
        policy,
        peers,
        schedule_room: 0,
        sessions: false,
    };
    let owned = OwnedTable::with_capacity(&spec(peers), n + 24).expect("zone");
    let zone = owned.zone();
    let lists = [spec(peers), spec(&shifted)];
    let mut k = 0usize;
    group.bench_function(BenchmarkId::new(format!("membership/{name}"), n), |b| {
        b.iter(|| {
            k ^= 1;
            zone.apply_membership(black_box(&lists[k]), [0, k as u64], 1, |_| true, 0)
                .expect("membership")
                .seq
        });
    });
}

/// Prints the shared-memory bytes per peer of every policy.
fn memory() {
    for n in [1_000, 10_000] {
        let ids = ids(n);
        let peers = peers(&ids);
        for (name, policy) in POLICIES {
            let size = write::zone_size(&UpstreamSpec {
                health: Default::default(),
                policy,
                peers: &peers,
                schedule_room: 0,
                sessions: false,
            })
            .expect("size");
            println!(
                "memory: {name:<22} {n:>6} peers {size:>10} bytes {:>7.1} bytes/peer",
                size as f64 / n as f64
            );
        }
    }
}

criterion_group!(benches, pick, pick_2_threads, pick_2_tables, build);

fn main() {
    nginx_baseline::self_check();
    memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
