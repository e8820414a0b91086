//! End-to-end: `ha_balance least_conn` above 32 servers, where picks go
//! through the shared tournament tree of loads (`core::selection::lc_tree`)
//!
//! 40 server lines over 3 backends, 4 workers: with sequential requests
//! every peer is idle at each pick, so the tree's least load ties
//! everywhere and the shared smooth schedule decides, across workers, as
//! for 3 servers.

mod common;

use common::{proxy_block, sequence, tally, Backend, Nginx, WORKERS};

#[test]
fn least_conn_tree_without_load_splits_by_weight() {
    if !common::nginx_or_skip("least_conn_tree_without_load_splits_by_weight") {
        return;
    }
    let _serial = common::serial();
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
    let port = common::free_port();
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
    if !common::nginx_or_skip("least_conn_tree_never_picks_down_servers") {
        return;
    }
    let _serial = common::serial();
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
    let port = common::free_port();
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
