//! End-to-end: a worker killed mid-request does not leak its in-flight
//! counts
//!
//! Counts are shared by all workers; each worker also keeps its own ledger
//! of what it has in flight, and the worker nginx starts in place of a dead
//! one gives the dead one's requests back. Without that, a `max_conns=1`
//! server whose request died with its worker would stay "full" forever.

use std::collections::BTreeSet;
use std::time::Duration;

use hab_testkit::backend::process::Backend;
use hab_testkit::http::get;
use hab_testkit::load::outcome;
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;

#[test]
fn killed_worker_gives_back_its_requests() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let primary = Backend::start("primary");
    let spare = Backend::start("spare");
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;\n        server {} max_conns=1;\n        server {} backup;\n",
        primary.addr(),
        spare.addr()
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    // Idle: the primary serves.
    assert_eq!(outcome(&get(port, "/")), "primary");

    // One request holds the primary's only slot for 8 s...
    let hung = std::thread::spawn(move || get(port, "/?delay=8000"));
    assert!(
        wait_until(Duration::from_secs(5), || primary.stats().inflight == 1),
        "the slow request never reached the primary"
    );
    // ...so the next one goes to the backup: max_conns is counted.
    assert_eq!(outcome(&get(port, "/")), "spare");

    // Kill every worker (the one holding the request among them); the
    // master starts new ones.
    let old: Vec<i32> = ngx.worker_pids();
    assert_eq!(old.len(), WORKERS);
    for &pid in &old {
        ngx.kill_worker(pid);
    }
    let old_set: BTreeSet<i32> = old.iter().copied().collect();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = ngx.worker_pids();
            now.len() == WORKERS && now.iter().all(|p| !old_set.contains(p))
        }),
        "nginx did not respawn its workers"
    );
    let _ = hung.join();

    // The primary is still busy with the orphaned request (its backend
    // thread sleeps on), but nginx no longer counts it: the dead worker's
    // ledger was reconciled, so the primary takes requests again.
    for i in 0..10 {
        let r = get(port, "/");
        assert_eq!(
            outcome(&r),
            "primary",
            "request {i} after the respawn went elsewhere: the dead worker's \
             request is still counted against max_conns=1"
        );
    }
    ngx.stop();
}
