//! End-to-end: health state across `nginx -s reload`
//!
//! An unchanged upstream keeps its whole table (tested with round robin's
//! sequence in e2e_round_robin.rs). Here the upstream changes — a server
//! is added — and what was learnt about the servers that stayed must
//! survive: a server disabled by `max_fails` is not tried again before its
//! `fail_timeout` runs out, in any worker of the new generation.

use std::time::Duration;

use hab_testkit::backend::process::Backend;
use hab_testkit::http::get;
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::{alive, wait_until};

fn upstream(backends: &[&Backend]) -> String {
    let mut s = String::from("        ha_balance round_robin;\n");
    for b in backends {
        s.push_str(&format!(
            "        server {} max_fails=1 fail_timeout=30s;\n",
            b.addr()
        ));
    }
    s
}

#[test]
fn disabled_server_stays_disabled_after_a_changing_reload() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (a, b, mut dead, extra) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("dead"),
        Backend::start("extra"),
    );
    let port = free_port();
    let extra_loc = "            proxy_next_upstream error timeout;\n";
    let mut ngx = Nginx::start(
        &proxy_block(port, &upstream(&[&a, &b, &dead]), extra_loc),
        WORKERS,
    );
    let dead_addr = dead.addr();
    dead.kill();

    // Round robin reaches the dead server within a period; the failure
    // disables it (max_fails=1) for 30 s, and clients see no error.
    for i in 0..6 {
        let r = get(port, "/").expect("request");
        assert_eq!(r.status, 200, "request {i}");
    }
    let tried_dead = ngx
        .access_entries()
        .iter()
        .filter(|e| e.upstream_addr.contains(&dead_addr))
        .count();
    assert_eq!(tried_dead, 1, "the dead server is tried once, then skipped");

    // Reload with a changed upstream: a server added. Wait for the old
    // workers to leave, so that only the new generation answers.
    let old = ngx.worker_pids();
    ngx.reload_with(&proxy_block(
        port,
        &upstream(&[&a, &b, &dead, &extra]),
        extra_loc,
    ));
    assert!(
        wait_until(Duration::from_secs(10), || old.iter().all(|&p| !alive(p))),
        "old workers did not exit"
    );
    let new = ngx.worker_pids();
    for i in 0..40 {
        let r = get(port, "/").expect("request");
        assert_eq!(r.status, 200, "request {i} after reload");
    }
    let after: Vec<_> = ngx
        .access_entries()
        .into_iter()
        .filter(|e| new.contains(&e.pid))
        .collect();
    assert_eq!(after.len(), 40);
    let retried: Vec<_> = after
        .iter()
        .filter(|e| e.upstream_addr.contains(&dead_addr))
        .collect();
    assert!(
        retried.is_empty(),
        "the new generation tried the server disabled before the reload \
         {} times: {:?}",
        retried.len(),
        retried.iter().map(|e| &e.upstream_addr).collect::<Vec<_>>()
    );
    assert!(
        after
            .iter()
            .any(|e| e.upstream_addr.contains(&extra.addr())),
        "the added server takes traffic: {:?}",
        after.iter().map(|e| &e.upstream_addr).collect::<Vec<_>>()
    );
    assert!(
        ngx.error_log().contains("state of 3 servers kept"),
        "the reload carried a, b and dead"
    );
    ngx.stop();
}
