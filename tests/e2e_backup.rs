//! End-to-end: `backup` and `down` servers
//!
//! Backups get traffic only when no primary is eligible; `down` servers
//! never get any.

use std::thread;
use std::time::Duration;

use hab_testkit::backend::process::{backend_counts, Backend};
use hab_testkit::load::{load, sequence, tally};
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, server_lines, Nginx, WORKERS};
use hab_testkit::port::free_port;

const NEXT: &str = "            proxy_next_upstream error timeout;";

fn three(policy: &str, params: &[&str]) -> (Vec<Backend>, u16, Nginx) {
    let b = vec![
        Backend::start("p1"),
        Backend::start("p2"),
        Backend::start("bk"),
    ];
    let port = free_port();
    let upstream = format!("        ha_balance {policy};\n{}", server_lines(&b, params));
    let ngx = Nginx::start(&proxy_block(port, &upstream, NEXT), WORKERS);
    (b, port, ngx)
}

#[test]
fn backup_idle_while_primaries_up() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    for policy in ["round_robin", "least_conn"] {
        let (b, port, mut ngx) = three(policy, &["", "", "backup"]);
        let res = load(port, "/", 4, 50);
        assert_eq!(res.bad(), 0, "{policy}: {:?}", res.failures);
        assert_eq!(
            res.count("bk"),
            0,
            "{policy}: backup used while primaries up: {:?}",
            res.by_body
        );
        assert_eq!(b[2].stats().requests, 0, "{policy}");
        assert!(
            res.count("p1") >= 50 && res.count("p2") >= 50,
            "{policy}: {:?}",
            res.by_body
        );
        ngx.stop();
    }
}

#[test]
fn backup_takes_everything_when_primaries_die_and_hands_back() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    for policy in ["round_robin", "least_conn"] {
        let (mut b, port, mut ngx) = three(
            policy,
            &[
                "max_fails=1 fail_timeout=1s",
                "max_fails=1 fail_timeout=1s",
                "backup",
            ],
        );
        assert_eq!(tally(&sequence(port, "/", 10)).get("bk"), None, "{policy}");

        b[0].kill();
        b[1].kill();
        let res = load(port, "/", 4, 50);
        assert_eq!(
            res.bad(),
            0,
            "{policy}: clients saw errors with primaries dead: {:?}",
            res.failures
        );
        assert_eq!(res.count("bk"), 200, "{policy}: {:?}", res.by_body);

        // p1 comes back: after fail_timeout it gets the traffic again and
        // the backup is idle (p2, still dead, is probed and skipped).
        b[0].restart();
        // (nginx's own round robin counts fail_timeout in whole seconds, so
        // give it fail_timeout + 1 s.)
        thread::sleep(Duration::from_millis(2100));
        let _probe = sequence(port, "/", 20);
        b[2].reset();
        let seq = sequence(port, "/", 50);
        let t = tally(&seq);
        assert_eq!(t.get("p1"), Some(&50), "{policy}: after recovery: {t:?}");
        assert_eq!(
            b[2].stats().requests,
            0,
            "{policy}: backup used after recovery"
        );
        ngx.stop();
    }
}

#[test]
fn backup_serves_when_primaries_are_down() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    for policy in ["round_robin", "least_conn"] {
        let (b, port, mut ngx) = three(policy, &["down", "down", "backup"]);
        let res = load(port, "/", 4, 25);
        assert_eq!(res.bad(), 0, "{policy}: {:?}", res.failures);
        assert_eq!(res.count("bk"), 100, "{policy}: {:?}", res.by_body);
        let counts = backend_counts(&b);
        assert_eq!(
            (counts["p1"], counts["p2"]),
            (0, 0),
            "{policy}: down servers used"
        );
        ngx.stop();
    }
}

#[test]
fn down_servers_get_nothing() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    for policy in ["round_robin", "least_conn"] {
        let b = Backend::start_many("d", 3);
        let port = free_port();
        let upstream = format!(
            "        ha_balance {policy};\n{}",
            server_lines(&b, &["", "down", ""])
        );
        let mut ngx = Nginx::start(&proxy_block(port, &upstream, NEXT), WORKERS);
        let seq = sequence(port, "/", 100);
        let t = tally(&seq);
        let (d1, d3) = (
            t.get("d1").copied().unwrap_or(0),
            t.get("d3").copied().unwrap_or(0),
        );
        assert_eq!((d1 + d3, t.len()), (100, 2), "{policy}: {t:?}");
        // round_robin alternates exactly; least_conn breaks its ties by
        // weighted round robin, allow it a small band.
        let band = if policy == "round_robin" { 0 } else { 5 };
        assert!(d1.abs_diff(50) <= band, "{policy}: {t:?}");
        assert_eq!(
            b[1].stats().requests,
            0,
            "{policy}: down server got requests"
        );
        ngx.stop();
    }
}
