//! End-to-end: bad `ha_balance` configuration fails `nginx -t` cleanly
//!
//! Each mistake gives an nginx-style `[emerg]` line naming the config file
//! and line; nginx exits with status 1, never on a signal.

mod common;

use common::Nginx;

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

#[test]
fn unknown_policy_is_rejected() {
    if !common::nginx_or_skip("unknown_policy_is_rejected") || common::stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance foo;"));
    c.assert_emerg("ha_balance foo;", &["\"foo\""]);
}

#[test]
fn bad_parameter_is_rejected() {
    if !common::nginx_or_skip("bad_parameter_is_rejected") || common::stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance round_robin bogus=1;"));
    c.assert_emerg("bogus=1", &["\"bogus=1\""]);
}

#[test]
fn missing_policy_is_rejected() {
    if !common::nginx_or_skip("missing_policy_is_rejected") || common::stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance;"));
    c.assert_emerg("ha_balance;", &["ha_balance"]);
}

#[test]
fn duplicate_directive_is_rejected() {
    if !common::nginx_or_skip("duplicate_directive_is_rejected") || common::stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with(
        "        ha_balance round_robin;\n        ha_balance least_conn;",
    ));
    c.assert_emerg("ha_balance least_conn;", &["ha_balance"]);
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
    c.assert_emerg(
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
    c.assert_emerg(
        "ha_balance least_conn;",
        &["\"ha_balance\"", "not allowed here"],
    );

    let in_http = "    ha_balance round_robin;\n";
    let c = Nginx::check_detailed(in_http);
    c.assert_emerg(
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

#[test]
fn server_parameters_above_32_bits_are_refused_not_truncated() {
    if !common::nginx_or_skip("server_parameters_above_32_bits_are_refused_not_truncated")
        || common::stock_mode()
    {
        return;
    }
    // Each used to be cut to 32 bits: max_conns=4294967297 became a limit
    // of 1, weight=4294967297 a weight of 1, weight=4294967296 a weight of
    // 0 refused as a bare "invalid argument".
    for (param, value) in [
        ("max_conns", "4294967297"),
        ("weight", "4294967297"),
        ("weight", "4294967296"),
        ("max_fails", "4294967297"),
    ] {
        let c = Nginx::check_detailed(&format!(
            "    upstream up {{
        ha_balance round_robin;
        server 127.0.0.1:2;
        server 127.0.0.1:3 {param}={value};
    }}
    server {{
        listen 127.0.0.1:1;
        location / {{ proxy_pass http://up; }}
    }}
"
        ));
        let setting = format!("\"{param}={value}\"");
        c.assert_emerg(
            "upstream up {",
            &["\"127.0.0.1:3\"", &setting, "4294967295"],
        );
    }
    // The largest value that fits is taken as it is.
    let c = Nginx::check_detailed(&upstream_with(
        "        ha_balance least_conn;\n        server 127.0.0.1:2 max_conns=4294967295 max_fails=4294967295;",
    ));
    assert!(c.ok, "{}", c.stderr);
}

#[test]
fn limits_are_refused_with_their_figures_and_p2c_takes_any_weight() {
    if !common::nginx_or_skip("limits_are_refused_with_their_figures_and_p2c_takes_any_weight")
        || common::stock_mode()
    {
        return;
    }
    let block = |policy: &str, servers: &str| {
        format!(
            "    upstream up {{
        ha_balance {policy};
{servers}
    }}
    server {{
        listen 127.0.0.1:1;
        location / {{ proxy_pass http://up; }}
    }}
"
        )
    };
    let heavy = "        server 127.0.0.1:2 weight=2147483647;\n        server 127.0.0.1:3;";
    let c = Nginx::check_detailed(&block("round_robin", heavy));
    c.assert_emerg(
        "upstream up {",
        &["schedule", "2147483648 entries", "limit of 4194304"],
    );
    let ring =
        "        server 127.0.0.1:2 weight=1000000;\n        server 127.0.0.1:3 weight=1000000;";
    let c = Nginx::check_detailed(&block("hash $arg_k consistent", ring));
    c.assert_emerg(
        "upstream up {",
        &["ring", "320000000 points", "limit of 16777216"],
    );
    // The policies that draw from an alias table have no schedule to bound.
    for policy in ["p2c", "random", "ewma"] {
        let c = Nginx::check_detailed(&block(policy, heavy));
        assert!(c.ok, "{policy}: {}", c.stderr);
    }
}
