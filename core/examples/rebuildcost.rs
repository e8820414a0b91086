//! Instructions per generation rebuild, for `valgrind --tool=cachegrind`:
//! a runtime weight change (one server's weight flips between 2 and 3,
//! then a publish) in a loop, on a zone of N peers of POLICY — what the
//! criterion bench `build/rebuild/<policy>/<peers>` times.
//!
//! `cargo build --release -p hab-core --example rebuildcost`
//! `valgrind --tool=cachegrind target/release/examples/rebuildcost POLICY N ITERS`
use hab_core::spec::HashMode;
use hab_core::testing::OwnedTable;
use hab_core::{PeerSpec, Policy, UpstreamSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hash = |mode| Policy::Hash {
        mode,
        balance_factor: 0,
        maglev_size: 0,
    };
    let policy = match args.get(1).map(String::as_str) {
        Some("round_robin") => Policy::RoundRobin,
        Some("least_conn") => Policy::LeastConn,
        Some("p2c") => Policy::P2c,
        Some("consistent") => hash(HashMode::Consistent),
        Some("maglev") => hash(HashMode::Maglev),
        _ => Policy::Random,
    };
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let iters: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);
    let ids: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250).into_bytes())
        .collect();
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
    for k in 0..iters {
        z.set_weight(0, Some(2 + k % 2)).unwrap();
        z.publish(7, |_| true).unwrap();
    }
}
