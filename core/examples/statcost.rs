//! Instructions per request, for `valgrind --tool=cachegrind`: one
//! request (pin, pick, release with what the module reports, unpin) in a
//! loop, on a zone of N peers of POLICY.
//!
//! `cargo build --release -p hab-core --example statcost`
//! `valgrind --tool=cachegrind target/release/examples/statcost POLICY N ITERS`
use std::hint::black_box;

use hab_core::attempt::{self, Attempt};
use hab_core::layout::stats::TryInfo;
use hab_core::testing::OwnedTable;
use hab_core::{Outcome, PeerSpec, Policy, UpstreamSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let policy = match args.get(1).map(String::as_str) {
        Some("round_robin") => Policy::RoundRobin,
        Some("p2c") => Policy::P2c,
        Some("least_conn") => Policy::LeastConn,
        _ => Policy::Random,
    };
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let iters: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let ids: Vec<Vec<u8>> = (0..n).map(|i| format!("p{i}").into_bytes()).collect();
    let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
    let t = OwnedTable::new(&UpstreamSpec {
        health: Default::default(),
        policy,
        peers: &peers,
        schedule_room: 0,
        sessions: false,
    })
    .unwrap();
    let z = t.zone();
    let slot = z.claim_slot(1, |_| true);
    let mut words = vec![0u64; attempt::words(n)];
    let info = TryInfo {
        status: 200,
        header_ms: Some(1),
        sent: 180,
        received: 1200,
    };
    let mut a = Attempt::from_words(&mut words);
    for k in 0..iters {
        a.reset(1000);
        a.seed(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        a.set_slot(slot);
        z.begin(&mut a).unwrap();
        let p = z.get_keyed(&mut a, b"", 1000).unwrap();
        z.free_with(&mut a, Outcome::Ok, &info, 1000).unwrap();
        z.end(&mut a);
        black_box(p);
    }
}
