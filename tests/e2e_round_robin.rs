//! End-to-end: `ha_balance round_robin` through real nginx with 4 workers
//!
//! The smooth weighted sequence is global: every worker advances one shared
//! cursor, so sequential requests landing on any worker still follow
//! nginx's exact 5,1,1 sequence a,a,b,a,c,a,a.

use hab_testkit::backend::process::Backend;
use hab_testkit::load::{sequence, tally};
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, server_lines, Nginx, WORKERS};
use hab_testkit::port::free_port;

fn weighted_block(port: u16, b: &[Backend], policy: &str) -> String {
    let upstream = format!(
        "        ha_balance {policy};\n{}",
        server_lines(b, &["weight=5", "", ""])
    );
    proxy_block(port, &upstream, "")
}

#[test]
fn round_robin_5_1_1_is_exact_across_workers() {
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
    let mut ngx = Nginx::start(&weighted_block(port, &b, "round_robin"), WORKERS);

    let seq = sequence(port, "/", 700);
    assert_eq!(
        seq[..7],
        ["a", "a", "b", "a", "c", "a", "a"],
        "first 7 responses"
    );
    let counts = tally(&seq);
    assert_eq!(
        (
            counts.get("a"),
            counts.get("b"),
            counts.get("c"),
            counts.len()
        ),
        (Some(&500), Some(&100), Some(&100), 3),
        "700 requests with weights 5,1,1: {counts:?}"
    );
    // Every 7-request window holds the whole cycle, wherever it starts.
    for (i, w) in seq.windows(7).enumerate().step_by(7) {
        let t = tally(w);
        assert_eq!((t["a"], t["b"], t["c"]), (5, 1, 1), "window at {i}: {w:?}");
    }

    // The requests really were spread over several workers.
    let pids: std::collections::BTreeSet<i32> =
        ngx.access_entries().iter().map(|e| e.pid).collect();
    assert!(
        pids.len() >= 2,
        "all 700 requests served by one worker: {pids:?}"
    );
    ngx.stop();
}

#[test]
fn round_robin_equal_weights_rotate() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("e", 3);
    let port = free_port();
    let upstream = format!("        ha_balance round_robin;\n{}", server_lines(&b, &[]));
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);

    let seq = sequence(port, "/", 300);
    let counts = tally(&seq);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [100, 100, 100],
        "{counts:?}"
    );
    // Plain rotation: no backend twice in a row.
    for (i, w) in seq.windows(2).enumerate() {
        assert_ne!(
            w[0],
            w[1],
            "same backend twice in a row at {i}: {:?}",
            &seq[..i + 2]
        );
    }
    ngx.stop();
}

#[test]
fn round_robin_stays_exact_after_reload() {
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
    let mut ngx = Nginx::start(&weighted_block(port, &b, "round_robin"), WORKERS);

    let before = sequence(port, "/", 10);
    assert!(
        before.iter().all(|s| ["a", "b", "c"].contains(&s.as_str())),
        "{before:?}"
    );
    ngx.reload();
    let after = sequence(port, "/", 700);
    let counts = tally(&after);
    assert_eq!(
        (
            counts.get("a"),
            counts.get("b"),
            counts.get("c"),
            counts.len()
        ),
        (Some(&500), Some(&100), Some(&100), 3),
        "700 requests after reload: {counts:?}"
    );
    ngx.stop();
}
