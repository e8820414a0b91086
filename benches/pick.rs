//! Criterion benchmarks: one pick + release, and table build
//!
//! - `pick/<policy>/<peers>`: one `get` then `free(Outcome::Ok)` on one
//!   thread, reusing one attempt buffer (`reset` per request), so nothing is
//!   allocated inside the measured loop.
//! - `pick_2_threads/<policy>/<peers>`: the same loop on two threads sharing
//!   one table (the schedule cursor and the peers' counters are contended).
//!   Each thread times its own loop after a barrier; the slower thread's time
//!   divided by the iteration count is reported, i.e. time per pick per
//!   thread while both run. Thread spawn and join are not measured.
//! - `build/<peers>`: [`Table::init`] (header, peer records and the smooth
//!   schedule) into an already allocated region.
//!
//! Peers have unique ids and weights cycling 1, 2, 3, 4, 5; sizes 3, 100 and
//! 10,000. Results and the machine they came from: `docs/benchmarks.md`.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use hab_core::testing::{OwnedTable, Region};
use hab_core::{attempt, layout, Attempt, Outcome, PeerSpec, Policy, Table, UpstreamSpec};

const SIZES: [usize; 3] = [3, 100, 10_000];
const POLICIES: [(Policy, &str); 2] = [
    (Policy::RoundRobin, "round_robin"),
    (Policy::LeastConn, "least_conn"),
];
/// Request time, ms: constant, so no failure window ever expires.
const NOW: u64 = 1_000;

/// `n` unique peer identities, as nginx would build them.
fn ids(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("bench 10.{}.{}.{}:80", i >> 16, (i >> 8) & 0xff, i & 0xff).into_bytes())
        .collect()
}

/// Primaries with weights 1..=5 cycling.
fn peers(ids: &[Vec<u8>]) -> Vec<PeerSpec<'_>> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| PeerSpec::new(id).weight(i as u32 % 5 + 1))
        .collect()
}

/// Runs `iters` requests (get, then free with `Ok`) on `table`; `a` is
/// reset before each.
#[inline]
fn requests(table: Table<'_>, a: &mut Attempt<'_>, iters: u64) {
    for _ in 0..iters {
        a.reset(NOW);
        let p = table.get(a, NOW).expect("a peer is eligible");
        table
            .free(a, Outcome::Ok, NOW)
            .expect("a try is in progress");
        black_box(p);
    }
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let ids = ids(n);
        let peers = peers(&ids);
        for (policy, name) in POLICIES {
            let owned = OwnedTable::new(&UpstreamSpec {
                policy,
                peers: &peers,
            })
            .unwrap();
            let table = owned.table();
            let mut words = vec![0u64; attempt::words(table)];
            let mut a = Attempt::init(&mut words, NOW);
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| requests(table, &mut a, 1));
            });
        }
    }
    group.finish();
}

fn pick_2_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_2_threads");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(50);
    for n in SIZES {
        let ids = ids(n);
        let peers = peers(&ids);
        for (policy, name) in POLICIES {
            let owned = OwnedTable::new(&UpstreamSpec {
                policy,
                peers: &peers,
            })
            .unwrap();
            let table = owned.table();
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let barrier = Barrier::new(2);
                    std::thread::scope(|s| {
                        let threads: Vec<_> = (0..2)
                            .map(|_| {
                                let barrier = &barrier;
                                s.spawn(move || {
                                    let mut words = vec![0u64; attempt::words(table)];
                                    let mut a = Attempt::init(&mut words, NOW);
                                    barrier.wait();
                                    let start = Instant::now();
                                    requests(table, &mut a, iters);
                                    start.elapsed()
                                })
                            })
                            .collect();
                        threads
                            .into_iter()
                            .map(|t| t.join().unwrap())
                            .max()
                            .unwrap()
                    })
                });
            });
        }
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let ids = ids(n);
        let peers = peers(&ids);
        // The schedule does not depend on the policy.
        let spec = UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
        };
        let mut region = Region::new(layout::table_size(&spec).unwrap());
        if n >= 10_000 {
            // Around half a second an iteration: flat sampling, few samples.
            group.sampling_mode(SamplingMode::Flat).sample_size(10);
        }
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                Table::init(black_box(&spec), region.bytes_mut())
                    .unwrap()
                    .peers()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, pick, pick_2_threads, build);
criterion_main!(benches);
