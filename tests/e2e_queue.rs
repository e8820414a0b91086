//! End-to-end: `ha_queue`, one request queue for all workers
//!
//! Real nginx (4 workers) with the module, real backends on 127.0.0.1.
//! A request that finds every server at `max_conns` waits in the queue
//! in the upstream's shared zone instead of getting a 502, and a slot
//! freed in any worker serves the oldest waiter, whichever worker holds
//! it (docs/queue-design.md).

use std::time::{Duration, Instant};

use hab_testkit::backend::process::Backend;
use hab_testkit::load::load;
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, server_lines, Nginx, WORKERS};
use hab_testkit::port::free_port;

#[test]
fn fifty_clients_wait_for_two_connections() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start("q");
    b.set_mode("delay:40");
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;\n{}        ha_queue 100 timeout=30s;\n",
        server_lines(std::slice::from_ref(&b), &["max_conns=2"])
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    let t0 = Instant::now();
    let res = load(port, "/", 50, 1);
    let took = t0.elapsed();
    assert_eq!(res.bad(), 0, "client errors: {:?}", res.failures);
    assert_eq!(res.count("q"), 50, "answers: {:?}", res.by_body);
    let st = b.stats();
    assert!(
        st.max_inflight <= 2,
        "the backend saw {} at once (max_conns=2): {st:?}",
        st.max_inflight
    );
    assert_eq!(st.requests, 50, "{st:?}");
    // 50 requests of 40 ms, two at a time: at least 25 rounds.
    assert!(
        took >= Duration::from_millis(25 * 40),
        "served in {took:?}: faster than max_conns=2 allows"
    );
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
    ngx.stop();
}
