//! End-to-end: HTTP checks keep their connection (issue 24, item 3):
//! real nginx with 4 workers against `hab-backend` processes on 127.0.0.1,
//! which count the connections whose first request is a check
//! (`check_conns`), the check requests (`checks`), the check connections
//! open now (`open_checks`) and requests that came after they shut their
//! side (`late`).
//!
//! One connection per server over twenty checks and more; a server that
//! closes or resets a kept connection gets a new one without a failed
//! check (and one that really fails still fails); a half-closed idle
//! connection is never ridden; `keepalive_time=0`, `Connection: close`
//! and HTTP/1.0 answers get a connection per check; `keepalive_time`
//! bounds a connection's age; a server set down has its idle connection
//! closed.
//!
//! Time bounds come from the configuration (interval, timeout, fails)
//! plus [`SLACK`]; every loop is bounded.

use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::api::{api_call, api_peers};
use hab_testkit::backend::process::Backend;
use hab_testkit::backend::StatsSnapshot;
use hab_testkit::nginx::{nginx_or_skip, serial, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;

/// Polling, and nginx's timers on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Checks every 200 ms: twenty and more in 5 s.
const CHECK: &str = "ha_check interval=200ms timeout=150ms fails=2 passes=1 uri=/healthz";

/// Upstreams `(name, ha_check line, backends)`, the API at `/api/`.
fn block(port: u16, upstreams: &[(&str, String, &[&Backend])]) -> String {
    let mut out = String::new();
    for (name, check, backends) in upstreams {
        let servers: String = backends
            .iter()
            .map(|b| format!("        server {};\n", b.addr()))
            .collect();
        out.push_str(&format!(
            "    upstream {name} {{
        ha_balance round_robin;
        {check};
{servers}    }}
"
        ));
    }
    out.push_str(&format!(
        "
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
    }}
"
    ));
    out
}

/// Waits until `b` answered at least `n` checks (at most `limit`).
fn wait_checks(b: &Backend, n: u64, limit: Duration) -> StatsSnapshot {
    let mut last = b.stats();
    wait_until(limit, || {
        last = b.stats();
        last.checks >= n
    });
    assert!(
        last.checks >= n,
        "{}: {} checks in {limit:?}, wanted {n}",
        b.name,
        last.checks
    );
    last
}

fn failed_checks(ngx: &Nginx) -> Vec<String> {
    ngx.error_log()
        .lines()
        .filter(|l| l.contains("failed:") || l.contains("is unhealthy"))
        .map(str::to_owned)
        .collect()
}

fn state(port: u16, upstream: &str, addr: &str) -> String {
    api_peers(port, upstream)
        .iter()
        .find(|p| p["server"] == addr)
        .and_then(|p| p["state"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("{addr} not in {upstream}"))
}

/// 20 checks at 200 ms: 4 s, and the slack.
fn twenty() -> Duration {
    Duration::from_millis(20 * 200) + SLACK * 2
}

#[test]
fn one_connection_per_server_over_twenty_checks() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let plain = Backend::start("plain");
    let chunked = Backend::start("chunked");
    chunked.set_health("chunked");
    let body = Backend::start("body");
    let port = free_port();
    let ngx = Nginx::start(
        &block(
            port,
            &[
                ("app", CHECK.to_owned(), &[&plain, &chunked]),
                ("matched", format!("{CHECK} body=healthy"), &[&body]),
            ],
        ),
        WORKERS,
    );
    for b in [&plain, &chunked, &body] {
        let s = wait_checks(b, 21, twenty());
        assert_eq!(
            s.check_conns, 1,
            "{}: {} connections for {} checks",
            b.name, s.check_conns, s.checks
        );
        assert_eq!(s.open_checks, 1, "{}: {s:?}", b.name);
    }
    assert_eq!(failed_checks(&ngx), Vec::<String>::new());
    assert!(ngx.crashes().is_empty());
}

#[test]
fn closed_or_reset_kept_connections_are_replaced_without_a_failed_check() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let closing = Backend::start("closing");
    closing.set_health("closeafter");
    let resetting = Backend::start("resetting");
    resetting.set_health("resetnext");
    let failing = Backend::start("failing");
    let port = free_port();
    let ngx = Nginx::start(
        &block(
            port,
            &[("app", CHECK.to_owned(), &[&closing, &resetting, &failing])],
        ),
        WORKERS,
    );
    // A server that closes after each answer: a new connection per check
    // (the idle one was seen closed), and none failed.
    let s = wait_checks(&closing, 12, twenty());
    assert!(
        s.check_conns + 1 >= s.checks,
        "closing: {} connections for {} checks",
        s.check_conns,
        s.checks
    );
    // A server that resets a connection's second check: each check after
    // the first is sent again on a new connection, and passes.
    let s = wait_checks(&resetting, 20, twenty());
    assert!(
        s.check_conns >= 8 && s.check_conns < s.checks,
        "resetting: {} connections for {} checks (resets: retried ones)",
        s.check_conns,
        s.checks
    );
    assert_eq!(failed_checks(&ngx), Vec::<String>::new());
    assert_eq!(state(port, "app", &resetting.addr()), "up");
    // A server that really fails (resets every connection, the new one
    // too) is still counted failed: unhealthy within fails (2) checks.
    wait_checks(&failing, 3, twenty());
    failing.set_health("reset");
    let t = Instant::now();
    let limit = Duration::from_millis(3 * 200 + 150) + SLACK;
    assert!(
        wait_until(limit, || state(port, "app", &failing.addr()) == "unhealthy"),
        "failing: not unhealthy after {:?}",
        t.elapsed()
    );
    assert!(ngx.error_log().contains("is unhealthy"));
    assert_eq!(state(port, "app", &resetting.addr()), "up");
    assert_eq!(state(port, "app", &closing.addr()), "up");
    assert!(ngx.crashes().is_empty());
}

#[test]
fn a_half_closed_idle_connection_is_not_ridden() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let half = Backend::start("half");
    half.set_health("halfclose");
    let port = free_port();
    let ngx = Nginx::start(
        &block(port, &[("app", CHECK.to_owned(), &[&half])]),
        WORKERS,
    );
    let s = wait_checks(&half, 15, twenty());
    assert_eq!(s.late, 0, "checks sent on a half-closed connection: {s:?}");
    assert!(s.check_conns + 1 >= s.checks, "{s:?}");
    assert_eq!(failed_checks(&ngx), Vec::<String>::new());
    assert!(ngx.crashes().is_empty());
}

#[test]
fn a_connection_per_check_when_not_kept_and_keepalive_time_bounds_age() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let off = Backend::start("off");
    let says_close = Backend::start("saysclose");
    says_close.set_health("okclose");
    let old = Backend::start("http10");
    old.set_health("http10");
    let aged = Backend::start("aged");
    let port = free_port();
    let ngx = Nginx::start(
        &block(
            port,
            &[
                ("off", format!("{CHECK} keepalive_time=0"), &[&off]),
                ("app", CHECK.to_owned(), &[&says_close, &old]),
                ("aged", format!("{CHECK} keepalive_time=1s"), &[&aged]),
            ],
        ),
        WORKERS,
    );
    // keepalive_time=0 ("Connection: close" sent), and answers saying
    // "Connection: close" or HTTP/1.0 without keep-alive while the
    // backends keep the connection open: one connection per check.
    for b in [&off, &says_close, &old] {
        let s = wait_checks(b, 15, twenty());
        assert!(
            s.check_conns + 1 >= s.checks,
            "{}: {} connections for {} checks",
            b.name,
            s.check_conns,
            s.checks
        );
    }
    // keepalive_time=1s: a connection carries the checks of one second
    // (five at 200 ms), then a new one.
    let s = wait_checks(&aged, 20, twenty());
    assert!(
        s.check_conns >= 3 && s.check_conns * 3 <= s.checks,
        "aged: {} connections for {} checks",
        s.check_conns,
        s.checks
    );
    assert_eq!(failed_checks(&ngx), Vec::<String>::new());
    assert!(ngx.crashes().is_empty());
}

#[test]
fn idle_connections_close_when_the_server_is_set_down_and_on_reload() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let a = Backend::start("a");
    let b = Backend::start("b");
    let port = free_port();
    let mut ngx = Nginx::start(
        &block(port, &[("app", CHECK.to_owned(), &[&a, &b])]),
        WORKERS,
    );
    wait_checks(&a, 3, twenty());
    assert_eq!(a.stats().open_checks, 1);
    // Set down: no more checks, and the idle connection is closed within
    // two intervals and a timeout, at the next half-interval sweep.
    let id = api_peers(port, "app")
        .iter()
        .find(|p| p["server"] == a.addr())
        .and_then(|p| p["id"].as_u64())
        .expect("id of a");
    let (s, v) = api_call(
        port,
        "PATCH",
        &format!("/api/upstreams/app/servers/{id}"),
        r#"{"down":true}"#,
    );
    assert_eq!(s, 200, "{v}");
    let limit = Duration::from_millis(2 * 200 + 150 + 100) + SLACK;
    assert!(
        wait_until(limit, || a.stats().open_checks == 0),
        "a set down: kept connection still open: {:?}",
        a.stats()
    );
    // Reload: the old workers close theirs; the new ones keep one.
    wait_checks(&b, 3, twenty());
    ngx.reload();
    let n = b.stats().checks;
    wait_checks(&b, n + 5, twenty());
    thread::sleep(Duration::from_millis(200));
    assert!(
        wait_until(SLACK, || b.stats().open_checks == 1),
        "b after reload: {:?}",
        b.stats()
    );
    assert!(ngx.crashes().is_empty());
}
