//! What the operator API costs to render: JSON and Prometheus text of an
//! upstream of 10,000 servers with statistics, as `GET {loc}/upstreams`
//! and `GET {loc}/metrics` produce them (`hab_api::handle`, the whole
//! answer into its chunked body).
//!
//! `cargo bench --bench render`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hab_api::{handle, Method, Request, Upstream};
use hab_core::layout::stats::TryInfo;
use hab_core::testing::{OwnedAttempt, OwnedTable};
use hab_core::{Outcome, PeerSpec, Policy, UpstreamSpec};

/// A zone of `n` servers named as nginx names them, each with traffic
/// counted by four worker slots.
fn zone(n: usize) -> OwnedTable {
    let ids: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            format!(
                "app\0app{i}.internal:8080\x0010.0.{}.{}:8080",
                i / 250,
                i % 250
            )
            .into_bytes()
        })
        .collect();
    let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
    let t = OwnedTable::new(&UpstreamSpec {
        health: Default::default(),
        policy: Policy::RoundRobin,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    })
    .expect("a zone");
    let z = t.zone();
    let slots: Vec<u32> = (1..=4)
        .map(|w| z.claim_slot(w, |_| true).expect("a slot"))
        .collect();
    for k in 0..2 * n {
        let mut a = OwnedAttempt::with_slot(z, 1, Some(slots[k % 4]));
        a.pick(1).expect("a peer");
        let info = TryInfo {
            status: if k % 50 == 0 { 503 } else { 200 },
            header_ms: Some(3),
            sent: 200,
            received: 4000,
        };
        a.release_with(Outcome::Ok, &info, 8).expect("a try");
        a.end();
    }
    t
}

fn get(t: &OwnedTable, path: &str, query: &str) -> usize {
    let ups = [Upstream {
        name: "app",
        zone: t.zone(),
        learn: None,
    }];
    let r = handle(
        &Request {
            method: Method::Get,
            path,
            query,
            html: false,
            body: &[],
            write: false,
            now_ms: 10,
            wall_ms: 1_796_126_400_000,
            owner: 1,
            request_id: "",
            nginx: Default::default(),
        },
        &ups,
        |_| true,
    );
    assert_eq!(r.status, 200);
    r.body.len()
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for n in [100, 10_000] {
        let t = zone(n);
        for (name, path, query) in [
            ("json", "upstreams", ""),
            ("json_fields", "upstreams", "fields=requests,state"),
            ("prometheus", "metrics", ""),
        ] {
            println!("render/{name}/{n}: {} bytes", get(&t, path, query));
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| black_box(get(&t, path, query)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
