//! End-to-end: bad `ha_balance` configuration fails `nginx -t` cleanly
//!
//! Each mistake gives an nginx-style `[emerg]` line naming the config file
//! and line; nginx exits with status 1, never on a signal.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::{Check, Nginx};

fn upstream_with(lines: &str) -> String {
    format!(
        "    upstream up {{
{lines}
        server 127.0.0.1:1;
    }}
    server {{
        listen 127.0.0.1:1;
        location / {{ proxy_pass http://up; }}
    }}
"
    )
}

/// Asserts a clean failure with an `[emerg]` line that names the config
/// file at the line containing `needle` and contains every `mentions`.
fn assert_emerg(c: &Check, needle: &str, mentions: &[&str]) {
    assert_eq!(
        c.status.signal(),
        None,
        "nginx -t died on a signal:\n{}",
        c.stderr
    );
    assert_eq!(
        c.status.code(),
        Some(1),
        "nginx -t should fail with 1:\n{}\n{}",
        c.stderr,
        c.conf
    );
    assert!(!c.ok);
    let loc = c.location_of(needle);
    let emerg: Vec<&str> = c.stderr.lines().filter(|l| l.contains("[emerg]")).collect();
    assert!(
        emerg
            .iter()
            .any(|l| l.contains(&loc) && mentions.iter().all(|m| l.contains(m))),
        "want an [emerg] line with {loc:?} and {mentions:?}; stderr:\n{}",
        c.stderr
    );
}

#[test]
fn unknown_policy_is_rejected() {
    if !common::nginx_or_skip("unknown_policy_is_rejected") || common::stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance foo;"));
    assert_emerg(&c, "ha_balance foo;", &["\"foo\""]);
}

#[test]
fn bad_parameter_is_rejected() {
    if !common::nginx_or_skip("bad_parameter_is_rejected") || common::stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance round_robin bogus=1;"));
    assert_emerg(&c, "bogus=1", &["\"bogus=1\""]);
}

#[test]
fn missing_policy_is_rejected() {
    if !common::nginx_or_skip("missing_policy_is_rejected") || common::stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance;"));
    assert_emerg(&c, "ha_balance;", &["ha_balance"]);
}

#[test]
fn duplicate_directive_is_rejected() {
    if !common::nginx_or_skip("duplicate_directive_is_rejected") || common::stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with(
        "        ha_balance round_robin;\n        ha_balance least_conn;",
    ));
    assert_emerg(&c, "ha_balance least_conn;", &["ha_balance"]);
}

#[test]
fn directive_outside_upstream_is_rejected() {
    if !common::nginx_or_skip("directive_outside_upstream_is_rejected") || common::stock_mode() {
        return;
    }
    let in_server = "    server {
        listen 127.0.0.1:1;
        ha_balance round_robin;
    }
";
    let c = Nginx::check_detailed(in_server);
    assert_emerg(
        &c,
        "ha_balance round_robin;",
        &["\"ha_balance\"", "not allowed here"],
    );

    let in_location = "    server {
        listen 127.0.0.1:1;
        location / {
            ha_balance least_conn;
        }
    }
";
    let c = Nginx::check_detailed(in_location);
    assert_emerg(
        &c,
        "ha_balance least_conn;",
        &["\"ha_balance\"", "not allowed here"],
    );

    let in_http = "    ha_balance round_robin;\n";
    let c = Nginx::check_detailed(in_http);
    assert_emerg(
        &c,
        "ha_balance round_robin;",
        &["\"ha_balance\"", "not allowed here"],
    );
}

#[test]
fn valid_configs_pass() {
    if !common::nginx_or_skip("valid_configs_pass") {
        return;
    }
    for lines in [
        "        ha_balance round_robin;",
        "        ha_balance least_conn;",
        "        ha_balance least_conn;\n        zone up 64k;",
    ] {
        let (ok, stderr) = Nginx::check(&upstream_with(lines));
        assert!(ok, "{lines:?} should pass nginx -t:\n{stderr}");
        assert!(
            stderr.contains("syntax is ok") && stderr.contains("test is successful"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("[emerg]") && !stderr.contains("[alert]"),
            "{stderr}"
        );
    }
}
