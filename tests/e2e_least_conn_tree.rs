//! End-to-end: `ha_balance least_conn` above 32 servers, where picks go
//! through the shared tournament tree of loads (`core::table::tree`)
//!
//! 40 server lines over 3 backends, 4 workers: with sequential requests
//! every peer is idle at each pick, so the tree's least load ties
//! everywhere and the shared smooth schedule decides, across workers, as
//! for 3 servers.

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::load::{sequence, tally};
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;

#[test]
fn least_conn_tree_without_load_splits_by_weight() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    // Line 0: a weight=5; then b and c alternately (b 20 lines, c 19):
    // total weight 44, so 440 requests are 10 whole periods.
    let mut lines = format!("        server {} weight=5;\n", b[0].addr());
    for i in 1..40 {
        lines += &format!("        server {};\n", b[1 + (i + 1) % 2].addr());
    }
    let port = free_port();
    let upstream = format!("        ha_balance least_conn;\n{lines}");
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    let c = tally(&sequence(port, "/", 440));
    let n = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(n("a") + n("b") + n("c"), 440, "non-200 responses: {c:?}");
    assert!((45..=55).contains(&n("a")), "a should get ~50: {c:?}");
    assert!((190..=210).contains(&n("b")), "b should get ~200: {c:?}");
    assert!((180..=200).contains(&n("c")), "c should get ~190: {c:?}");
    ngx.stop();
}

#[test]
fn least_conn_tree_never_picks_down_servers() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    // 40 lines cycling a, b, c; every b line is down: a and c share.
    let mut lines = String::new();
    for i in 0..40 {
        let down = if i % 3 == 1 { " down" } else { "" };
        lines += &format!("        server {}{down};\n", b[i % 3].addr());
    }
    let port = free_port();
    let upstream = format!("        ha_balance least_conn;\n{lines}");
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    let c = tally(&sequence(port, "/", 270));
    let n = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(
        n("a") + n("c"),
        270,
        "b is down, nothing else may fail: {c:?}"
    );
    // 14 a lines and 13 c lines of weight 1.
    assert!((130..=150).contains(&n("a")), "a should get ~140: {c:?}");
    ngx.stop();
}

/// Every server line of `addr` in the API has state `state`.
fn all_in_state(port: u16, addr: &str, state: &str) -> bool {
    let (status, v) = api_call(port, "GET", "/api/upstreams/app", "");
    status == 200
        && v["peers"].as_array().is_some_and(|p| {
            p.iter()
                .filter(|p| p["server"] == addr)
                .all(|p| p["state"] == state)
        })
}

#[test]
fn least_conn_tree_follows_active_health_checks() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let mut lines = String::new();
    for i in 0..40 {
        lines += &format!("        server {};\n", b[i % 3].addr());
    }
    let port = free_port();
    let conf = format!(
        "    upstream app {{
        ha_balance least_conn;
        ha_check interval=300ms timeout=200ms fails=1 passes=1 uri=/healthz;
{lines}    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
        location / {{
            proxy_pass http://app;
            proxy_next_upstream off;
        }}
    }}
"
    );
    let mut ngx = Nginx::start(&conf, WORKERS);
    let limit = std::time::Duration::from_secs(10);
    assert!(
        wait_until(limit, || all_in_state(port, &b[1].addr(), "up")),
        "b not up"
    );

    // b's checks fail: every one of its 13 lines leaves the tree; its
    // traffic would fail too, and nothing may reach it.
    b[1].set_health("fail");
    assert!(
        wait_until(limit, || all_in_state(port, &b[1].addr(), "unhealthy")),
        "b not unhealthy"
    );
    b[1].set_mode("fail500");
    let before = b[1].stats().requests;
    let c = tally(&sequence(port, "/", 200));
    assert_eq!(
        c.get("a").copied().unwrap_or(0) + c.get("c").copied().unwrap_or(0),
        200,
        "{c:?}"
    );
    assert_eq!(
        b[1].stats().requests,
        before,
        "a request reached unhealthy b"
    );

    // Healthy again: b's lines come back into the tree and take their share.
    b[1].set_mode("ok");
    b[1].set_health("ok");
    assert!(
        wait_until(limit, || all_in_state(port, &b[1].addr(), "up")),
        "b not back up"
    );
    let c = tally(&sequence(port, "/", 400));
    let n = c.get("b").copied().unwrap_or(0);
    assert!((100..=160).contains(&n), "b should get ~130 of 400: {c:?}");
    ngx.stop();
}
