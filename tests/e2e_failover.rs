//! End-to-end: failover with `proxy_next_upstream error timeout`
//!
//! A backend killed mid-load costs the clients nothing; its failure is
//! recorded in shared memory, so no worker tries it again until
//! `fail_timeout` has passed, and then only one probe goes to it; once it
//! is back, it gets traffic again.

use std::thread;
use std::time::Duration;

use hab_testkit::backend::process::Backend;
use hab_testkit::load::{load, spawn_load, LoadOpts};
use hab_testkit::nginx::{
    nginx_or_skip, now_epoch, proxy_block, serial, server_lines, Nginx, WORKERS,
};
use hab_testkit::port::free_port;

const FAIL_TIMEOUT_S: f64 = 2.0;

#[test]
fn killed_backend_costs_no_errors_is_skipped_then_recovers() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let mut b = Backend::start_many("f", 3);
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;\n{}",
        server_lines(&b, &["max_fails=1 fail_timeout=2s"; 3])
    );
    let block = proxy_block(
        port,
        &upstream,
        "            proxy_next_upstream error timeout;",
    );
    let mut ngx = Nginx::start(&block, WORKERS);
    let victim = b[1].addr();

    // Paced load: 4 threads, up to 2000 requests each, 10 ms apart, 20 s
    // max; stopped explicitly after about 7 s.
    let opts = LoadOpts {
        threads: 4,
        per_thread: 2000,
        pause: Duration::from_millis(10),
        max_time: Duration::from_secs(20),
    };
    let lh = spawn_load(port, "/", opts);
    assert!(
        lh.wait_done(200, Duration::from_secs(10)),
        "load did not start"
    );

    // Kill f2 mid-load; keep it dead for 1.5 fail_timeouts.
    let t_kill = now_epoch();
    b[1].kill();
    thread::sleep(Duration::from_millis(3000));

    // Bring it back on the same port and let fail_timeout pass.
    let t_restart = now_epoch();
    b[1].restart();
    thread::sleep(Duration::from_millis(3000));
    let back = b[1].stats().requests;
    let res = lh.stop();
    let t_end = now_epoch();

    assert_eq!(
        res.bad(),
        0,
        "clients saw errors during failover: {:?}",
        res.failures
    );
    assert!(
        res.total >= 1000,
        "load too small to mean anything: {res:?}"
    );

    // While dead: attempts on f2 come in bursts (requests racing the first
    // failure), at least fail_timeout apart: no worker retries it early.
    // A burst is small because the failure is shared: round robin sends at
    // most 2 of 4 racing requests to one of 3 peers. Per-worker state
    // (stock nginx) makes each of the 4 workers try it once per burst.
    let entries = ngx.access_entries();
    let dead: Vec<f64> = entries
        .iter()
        .filter(|e| e.msec >= t_kill && e.msec < t_restart)
        .filter(|e| e.upstream_addr.contains(&victim))
        .map(|e| e.msec)
        .collect();
    assert!(!dead.is_empty(), "no request tried the dead backend at all");
    let mut bursts: Vec<(f64, usize)> = Vec::new();
    for &t in &dead {
        match bursts.last_mut() {
            Some((start, n)) if t - *start < 0.3 => *n += 1,
            _ => bursts.push((t, 1)),
        }
    }
    for w in bursts.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= FAIL_TIMEOUT_S - 0.2,
            "dead backend retried {:.3}s after the previous attempt (fail_timeout 2s); bursts: {bursts:?}",
            w[1].0 - w[0].0
        );
    }
    for (t, n) in &bursts {
        assert!(
            *n <= 3,
            "{n} requests tried the dead backend at {t:.3}: bursts {bursts:?}"
        );
    }
    let in_dead_window = entries
        .iter()
        .filter(|e| e.msec >= t_kill && e.msec < t_restart)
        .count();
    assert!(
        in_dead_window >= 500,
        "too little traffic while dead: {in_dead_window}"
    );

    // Back: after fail_timeout it serves again, a fair share of the end.
    assert!(
        back >= 20,
        "restarted backend got {back} requests in 3 s after restart"
    );
    let tail: Vec<_> = entries
        .iter()
        .filter(|e| e.msec >= t_end - 0.8 && e.status == 200)
        .collect();
    let tail_victim = tail
        .iter()
        .filter(|e| e.upstream_addr.last() == Some(&victim))
        .count();
    assert!(
        tail_victim * 5 >= tail.len(),
        "restarted backend got {tail_victim} of the last {} requests",
        tail.len()
    );
    ngx.stop();
}

#[test]
fn all_primaries_dead_but_one_still_no_errors() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let mut b = Backend::start_many("g", 3);
    let port = free_port();
    let upstream = format!(
        "        ha_balance least_conn;\n{}",
        server_lines(&b, &["max_fails=1 fail_timeout=10s"; 3])
    );
    let block = proxy_block(
        port,
        &upstream,
        "            proxy_next_upstream error timeout;",
    );
    let mut ngx = Nginx::start(&block, WORKERS);

    b[0].kill();
    b[2].kill();
    let res = load(port, "/", 4, 100);
    assert_eq!(
        res.bad(),
        0,
        "errors with one live backend: {:?}",
        res.failures
    );
    assert_eq!(res.count("g2"), 400, "{res:?}");
    // Each dead peer is marked failed once globally; after that, no worker
    // tries it again within fail_timeout (concurrent first hits aside).
    let dead_tries = ngx
        .access_entries()
        .iter()
        .flat_map(|e| e.upstream_addr.clone())
        .filter(|a| *a == b[0].addr() || *a == b[2].addr())
        .count();
    // Racing first hits: at most 2 per dead peer (4 clients); per-worker
    // state would make every worker try every dead peer (8 or more).
    assert!(
        dead_tries <= 4,
        "dead peers tried {dead_tries} times in 400 requests within fail_timeout (want <= 4)"
    );
    ngx.stop();
}
