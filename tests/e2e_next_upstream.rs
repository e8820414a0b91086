//! End-to-end: `proxy_next_upstream http_500 / http_404` and `_tries`
//!
//! nginx's documented meaning: `http_500` in `proxy_next_upstream` makes a
//! 500 both a reason to try the next peer and an unsuccessful attempt
//! (counted against `max_fails`); `http_404` only retries, a 404 is never
//! counted as a failure.

use hab_testkit::backend::process::Backend;
use hab_testkit::load::{load, sequence, tally};
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, server_lines, Nginx, WORKERS};
use hab_testkit::port::free_port;

/// Three backends (`n1` failing in `mode`), `ha_balance round_robin`,
/// server parameters `params` on each, `location_extra` in the location.
fn setup(mode: &str, params: &str, location_extra: &str) -> (Vec<Backend>, u16, Nginx) {
    let b = Backend::start_many("n", 3);
    b[0].set_mode(mode);
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;\n{}",
        server_lines(&b, &[params; 3])
    );
    let ngx = Nginx::start(&proxy_block(port, &upstream, location_extra), WORKERS);
    (b, port, ngx)
}

#[test]
fn http_500_is_retried_clients_see_only_200() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    // max_fails=0: the failing peer stays in rotation and every third
    // request has to be retried.
    let (b, port, mut ngx) = setup(
        "fail500",
        "max_fails=0",
        "            proxy_next_upstream error timeout http_500;",
    );
    let seq = sequence(port, "/", 300);
    let t = tally(&seq);
    assert_eq!(t.get("n1"), None, "{t:?}");
    assert_eq!(
        t.get("n2").copied().unwrap_or(0) + t.get("n3").copied().unwrap_or(0),
        300,
        "{t:?}"
    );
    let n1 = b[0].stats().requests;
    assert!(
        n1 >= 90,
        "n1 should stay in rotation (max_fails=0), tried {n1} times"
    );
    let res = load(port, "/", 4, 50);
    assert_eq!(res.bad(), 0, "{:?}", res.failures);
    // The log shows the retries: "n1, nX" with statuses "500, 200".
    let retried = ngx
        .access_entries()
        .iter()
        .filter(|e| e.upstream_addr.len() == 2 && e.upstream_status == ["500", "200"])
        .count();
    assert!(
        retried >= 100,
        "expected >= 100 logged retries, got {retried}"
    );
    ngx.stop();
}

#[test]
fn http_500_with_tries_1_reaches_the_client() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (_b, port, mut ngx) = setup(
        "fail500",
        "max_fails=0",
        "            proxy_next_upstream error timeout http_500;\n            proxy_next_upstream_tries 1;",
    );
    let t = tally(&sequence(port, "/", 300));
    assert_eq!(
        t.get("HTTP 500"),
        Some(&100),
        "one pick in three is the failing peer: {t:?}"
    );
    ngx.stop();
}

#[test]
fn http_500_counts_against_max_fails_globally() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    // max_fails=1 fail_timeout=30s: the first 500 is retried and marks the
    // peer failed for every worker, so n1 sees one request, two at most
    // (per-worker state would let each of the 4 workers try it). As in
    // nginx, a 500 only counts as a failure when it leads to a retry: with
    // `proxy_next_upstream_tries 1` it is passed on and not counted.
    let (b, port, mut ngx) = setup(
        "fail500",
        "max_fails=1 fail_timeout=30s",
        "            proxy_next_upstream error timeout http_500;",
    );
    // Concurrent clients, so all workers take requests at once.
    let res = load(port, "/", 4, 50);
    assert_eq!(res.bad(), 0, "{:?}", res.failures);
    assert_eq!(res.count("n1"), 0, "{:?}", res.by_body);
    let n1 = b[0].stats().requests;
    // 1, or 2 when two workers pick n1 before the first 500 is recorded.
    assert!(
        (1..=2).contains(&n1),
        "n1 got {n1} requests: a 500 under `http_500` must mark it failed for all workers"
    );
    ngx.stop();
}

#[test]
fn http_404_is_retried_but_not_a_failure() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = setup(
        "fail404",
        "max_fails=1 fail_timeout=30s",
        "            proxy_next_upstream error timeout http_404;",
    );
    let t = tally(&sequence(port, "/", 300));
    assert_eq!(t.get("HTTP 404"), None, "{t:?}");
    assert_eq!(t.values().sum::<usize>(), 300);
    // 404 is never an unsuccessful attempt: n1 stays in rotation despite
    // max_fails=1.
    // (Retries consume picks too, so n1 gets 100 to 150 of them.)
    let n1 = b[0].stats().requests;
    assert!(
        n1 >= 90,
        "n1 taken out of rotation by 404s: tried {n1} times"
    );
    ngx.stop();
}

#[test]
fn http_404_with_tries_1_reaches_the_client() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (_b, port, mut ngx) = setup(
        "fail404",
        "max_fails=1 fail_timeout=30s",
        "            proxy_next_upstream error timeout http_404;\n            proxy_next_upstream_tries 1;",
    );
    let t = tally(&sequence(port, "/", 300));
    assert_eq!(t.get("HTTP 404"), Some(&100), "{t:?}");
    ngx.stop();
}

#[test]
fn without_http_500_the_500_passes_through() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    // Not listed in proxy_next_upstream: not retried, not a failure.
    let (b, port, mut ngx) = setup(
        "fail500",
        "max_fails=1 fail_timeout=30s",
        "            proxy_next_upstream error timeout;",
    );
    let t = tally(&sequence(port, "/", 300));
    assert_eq!(t.get("HTTP 500"), Some(&100), "{t:?}");
    assert_eq!(b[0].stats().requests, 100);
    ngx.stop();
}
