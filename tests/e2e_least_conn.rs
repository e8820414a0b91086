//! End-to-end: `ha_balance least_conn` and global `max_conns`
//!
//! In-flight counts live in shared memory, so `least_conn` sees the
//! connections of all 4 workers and `max_conns=1` holds across workers
//! (stock nginx without `zone` counts per worker and would allow 4).

use std::time::Duration;

use hab_testkit::backend::process::Backend;
use hab_testkit::backend::StatsSnapshot;
use hab_testkit::load::{load, sequence, tally, LoadResult};
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, server_lines, Nginx, WORKERS};
use hab_testkit::port::free_port;

#[test]
fn least_conn_avoids_slow_backend_under_load() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("l", 3);
    b[0].set_mode("delay:300");
    let port = free_port();
    let upstream = format!("        ha_balance least_conn;\n{}", server_lines(&b, &[]));
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    // 8 clients: the slow backend holds its requests for 300 ms, so least
    // connections sends nearly everything to the two fast ones.
    let res = load(port, "/", 8, 40);
    assert_eq!(res.bad(), 0, "client errors: {:?}", res.failures);
    let (slow, f1, f2) = (res.count("l1"), res.count("l2"), res.count("l3"));
    let total = res.total;
    assert!(
        slow * 10 <= total,
        "slow backend got {slow} of {total} (> 10%); round robin would give a third: {:?}",
        res.by_body
    );
    assert!(
        f1 * 5 >= total && f2 * 5 >= total,
        "fast backends underused: {:?}",
        res.by_body
    );

    // Slow no more: with nothing in flight, the three share evenly again
    // (no in-flight count left behind by the slow requests).
    b[0].set_mode("ok");
    let t = tally(&sequence(port, "/", 300));
    for name in ["l1", "l2", "l3"] {
        let n = t.get(name).copied().unwrap_or(0);
        assert!(
            (90..=110).contains(&n),
            "{name} got {n} of 300 when idle: {t:?}"
        );
    }
    ngx.stop();
}

#[test]
fn least_conn_without_load_splits_by_weight() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let port = free_port();
    let upstream = format!(
        "        ha_balance least_conn;\n{}",
        server_lines(&b, &["weight=5", "", ""])
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    // Sequential requests: every peer has 0 in flight at each pick, so ties
    // are broken by weighted round robin, as in nginx's least_conn.
    let seq = sequence(port, "/", 700);
    let c = tally(&seq);
    let n = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(n("a") + n("b") + n("c"), 700, "non-200 responses: {c:?}");
    assert!(
        (490..=510).contains(&n("a")),
        "a should get ~500 of 700: {c:?}"
    );
    assert!(
        (90..=110).contains(&n("b")),
        "b should get ~100 of 700: {c:?}"
    );
    assert!(
        (90..=110).contains(&n("c")),
        "c should get ~100 of 700: {c:?}"
    );
    ngx.stop();
}

/// Starts `m` (max_conns=1, slow) and `f` (slow too) behind `policy`, runs
/// concurrent load and returns m's stats and the load result.
fn max_conns_run(policy: &str) -> (StatsSnapshot, LoadResult, Nginx) {
    let b = [Backend::start("m"), Backend::start("f")];
    b[0].set_mode("delay:150");
    b[1].set_mode("delay:50");
    let port = free_port();
    let upstream = format!(
        "        ha_balance {policy};\n{}",
        server_lines(&b, &["max_conns=1", ""])
    );
    let ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    // 12 concurrent clients, fresh connection per request, so requests
    // are accepted by all workers at once.
    let res = load(port, "/", 12, 12);
    let stats = b[0].stats();
    assert_eq!(stats.inflight, 0, "m still busy after the load: {stats:?}");
    (stats, res, ngx)
}

#[test]
fn least_conn_max_conns_is_global_across_workers() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (stats, res, mut ngx) = max_conns_run("least_conn");
    assert_eq!(res.bad(), 0, "client errors: {:?}", res.failures);
    assert!(
        stats.requests >= 2,
        "max_conns=1 peer never used: {stats:?} {:?}",
        res.by_body
    );
    assert_eq!(
        stats.max_inflight, 1,
        "max_conns=1 exceeded across {WORKERS} workers: {stats:?} (per-worker counting allows {WORKERS})"
    );
    // The workers really served concurrently.
    let pids: std::collections::BTreeSet<i32> =
        ngx.access_entries().iter().map(|e| e.pid).collect();
    assert!(pids.len() >= 2, "only one worker served the load: {pids:?}");
    ngx.stop();
}

#[test]
fn round_robin_max_conns_is_global_across_workers() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (stats, res, mut ngx) = max_conns_run("round_robin");
    assert_eq!(res.bad(), 0, "client errors: {:?}", res.failures);
    assert!(
        stats.requests >= 2,
        "max_conns=1 peer never used: {stats:?} {:?}",
        res.by_body
    );
    assert_eq!(
        stats.max_inflight, 1,
        "max_conns=1 exceeded across {WORKERS} workers: {stats:?}"
    );
    ngx.stop();
}

#[test]
fn least_conn_all_peers_at_max_conns_answers_502_quickly() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = [Backend::start("only")];
    b[0].set_mode("delay:400");
    let port = free_port();
    let upstream = format!(
        "        ha_balance least_conn;\n{}",
        server_lines(&b, &["max_conns=1"])
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    // 4 concurrent requests, one peer limited to 1: exactly the excess is
    // refused with 502 (nginx's behaviour when every peer is at max_conns).
    let started = std::time::Instant::now();
    let res = load(port, "/", 4, 1);
    let stats = b[0].stats();
    assert_eq!(stats.max_inflight, 1, "{stats:?}");
    assert!(res.count("only") >= 1, "{res:?}");
    assert_eq!(res.errors, 0, "transport errors: {:?}", res.failures);
    assert_eq!(
        res.count("only") as u64 + res.statuses.get(&502).copied().unwrap_or(0) as u64,
        4,
        "{res:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    ngx.stop();
}
