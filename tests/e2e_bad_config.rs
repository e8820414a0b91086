//! End-to-end: bad `ha_balance` configuration fails `nginx -t` cleanly
//!
//! Each mistake gives an nginx-style `[emerg]` line naming the config file
//! and line; nginx exits with status 1, never on a signal.

use hab_testkit::nginx::{nginx_or_skip, stock_mode, Nginx};

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
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance foo;"));
    c.assert_emerg("ha_balance foo;", &["\"foo\""]);
}

#[test]
fn bad_parameter_is_rejected() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance round_robin bogus=1;"));
    c.assert_emerg("bogus=1", &["\"bogus=1\""]);
}

#[test]
fn bad_schedule_room_is_rejected() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    for (line, needles) in [
        (
            "ha_balance round_robin schedule_room=0;",
            &[
                "invalid schedule room",
                "from 1 to 4194304",
                "default is 262144",
            ][..],
        ),
        (
            "ha_balance least_conn schedule_room=4194305;",
            &["invalid schedule room \"schedule_room=4194305\""],
        ),
        (
            "ha_balance hash $uri schedule_room=1m;",
            &["invalid schedule room"],
        ),
        (
            "ha_balance round_robin schedule_room=1000 schedule_room=2000;",
            &["duplicate \"schedule_room=2000\""],
        ),
        // Policies that draw from an alias table have no schedule.
        (
            "ha_balance p2c schedule_room=1000;",
            &["invalid parameter \"schedule_room=1000\""],
        ),
        (
            "ha_balance random schedule_room=1000;",
            &["invalid parameter"],
        ),
    ] {
        let c = Nginx::check_detailed(&upstream_with(&format!("        {line}")));
        c.assert_emerg(line, needles);
    }
}

#[test]
fn missing_policy_is_rejected() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_balance;"));
    c.assert_emerg("ha_balance;", &["ha_balance"]);
}

#[test]
fn duplicate_directive_is_rejected() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let c = Nginx::check_detailed(&upstream_with(
        "        ha_balance round_robin;\n        ha_balance least_conn;",
    ));
    c.assert_emerg("ha_balance least_conn;", &["ha_balance"]);
}

#[test]
fn directive_outside_upstream_is_rejected() {
    if !nginx_or_skip() || stock_mode() {
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
    if !nginx_or_skip() {
        return;
    }
    for lines in [
        "        ha_balance round_robin;",
        "        ha_balance least_conn;",
        "        ha_balance least_conn;\n        zone up 64k;",
        "        ha_balance round_robin schedule_room=4194304;",
        "        ha_balance hash $uri consistent schedule_room=1;",
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
    if !nginx_or_skip() || stock_mode() {
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
fn fail_timeout_longer_than_the_core_keeps_is_refused() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    // The core keeps fail_timeout in 32 bits of milliseconds (the peer's
    // hot line holds the 64-bit in-flight word): 4294967 s fit, one more
    // does not (it used to be taken as is, in 64 bits).
    let c = Nginx::check_detailed(&upstream_with(
        "        ha_balance round_robin;\n        server 127.0.0.1:3 fail_timeout=4294968s;",
    ));
    c.assert_emerg(
        "upstream up {",
        &[
            "\"127.0.0.1:3\"",
            "\"fail_timeout=4294968\"",
            "longer than 4294967 s",
        ],
    );
    let c = Nginx::check_detailed(&upstream_with(
        "        ha_balance round_robin;\n        server 127.0.0.1:3 fail_timeout=4294967s;",
    ));
    assert!(c.ok, "{}", c.stderr);
}

#[test]
fn limits_are_refused_with_their_figures_and_p2c_takes_any_weight() {
    if !nginx_or_skip() || stock_mode() {
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
    // A ring above nginx's size is scaled down, not refused
    // (e2e_hash_differential: consistent_hash_above_nginx_ring_size_...).
    let ring =
        "        server 127.0.0.1:2 weight=1000000;\n        server 127.0.0.1:3 weight=1000000;";
    let c = Nginx::check_detailed(&block("hash $arg_k consistent", ring));
    assert!(c.ok, "{}", c.stderr);
    // The policies that draw from an alias table have no schedule to bound.
    for policy in ["p2c", "random", "ewma"] {
        let c = Nginx::check_detailed(&block(policy, heavy));
        assert!(c.ok, "{policy}: {}", c.stderr);
    }
}

/// The health directives (issue 8): each mistake is an `[emerg]` naming the
/// file, the line and what is wrong; valid combinations pass.
#[test]
fn health_directives_are_checked() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let rr = "        ha_balance round_robin;\n";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "ha_check bogus;",
            "ha_check bogus;",
            &["invalid parameter \"bogus\""],
        ),
        (
            "ha_check interval=0;",
            "ha_check interval=0;",
            &["\"interval=0\""],
        ),
        (
            "ha_check interval=abc;",
            "ha_check interval=abc;",
            &["\"interval=abc\""],
        ),
        ("ha_check fails=0;", "ha_check fails=0;", &["\"fails=0\""]),
        (
            "ha_check passes=x;",
            "ha_check passes=x;",
            &["\"passes=x\""],
        ),
        (
            "ha_check port=70000;",
            "ha_check port=70000;",
            &["\"port=70000\""],
        ),
        (
            "ha_check uri=healthz;",
            "ha_check uri=healthz;",
            &["\"uri=healthz\""],
        ),
        (
            "ha_check status=99;",
            "ha_check status=99;",
            &["\"status=99\""],
        ),
        (
            "ha_check status=500-400;",
            "ha_check status=500-400;",
            &["\"status=500-400\""],
        ),
        ("ha_check body=(;", "ha_check body=(;", &["\"body=(\""]),
        (
            "ha_check interval=1s timeout=2s;",
            "ha_check interval=1s timeout=2s;",
            &["timeout=2000ms is longer than interval=1000ms"],
        ),
        (
            "ha_check type=tcp uri=/x;",
            "ha_check type=tcp uri=/x;",
            &["need type=http"],
        ),
        (
            "ha_check type=tcp host=example.com;",
            "ha_check type=tcp host=example.com;",
            &["\"host=\" needs type=http or type=grpc"],
        ),
        (
            "ha_check persistent;",
            "ha_check persistent;",
            &["\"persistent\" needs \"mandatory\""],
        ),
        (
            "ha_check;\n        ha_check interval=3s;",
            "ha_check interval=3s;",
            &["\"ha_check\" directive is duplicate"],
        ),
        (
            "ha_slow_start 0;",
            "ha_slow_start 0;",
            &["invalid value \"0\""],
        ),
        (
            "ha_slow_start;",
            "ha_slow_start;",
            &["invalid number of arguments"],
        ),
        ("ha_panic 0%;", "ha_panic 0%;", &["invalid value \"0%\""]),
        (
            "ha_panic 101%;",
            "ha_panic 101%;",
            &["invalid value \"101%\""],
        ),
        ("ha_panic 50;", "ha_panic 50;", &["invalid value \"50\""]),
        (
            "ha_outlier consecutive_5xx=0 consecutive_errors=0;",
            "ha_outlier consecutive_5xx=0",
            &["ejects nothing"],
        ),
        (
            "ha_outlier max_ejection=0%;",
            "ha_outlier max_ejection=0%;",
            &["\"max_ejection=0%\""],
        ),
        (
            "ha_outlier base_ejection=60s max_ejection_time=10s;",
            "ha_outlier base_ejection=60s",
            &["max_ejection_time=10000ms is shorter than base_ejection=60000ms"],
        ),
    ];
    for (lines, needle, mentions) in cases {
        let c = Nginx::check_detailed(&upstream_with(&format!("{rr}        {lines}")));
        c.assert_emerg(needle.lines().last().unwrap().trim(), mentions);
    }

    // Needs the whole upstream: named at the upstream's line.
    let c = Nginx::check_detailed(&upstream_with(
        "        ha_balance hash $uri consistent;\n        ha_slow_start 10s;",
    ));
    c.assert_emerg(
        "upstream up {",
        &["\"up\"", "ha_slow_start cannot be used with hash"],
    );
    let c = Nginx::check_detailed(&upstream_with("        ha_check;"));
    c.assert_emerg("upstream up {", &["\"up\"", "need \"ha_balance\""]);
    let c = Nginx::check_detailed(
        "    ha_check;
    server {
        listen 127.0.0.1:1;
    }
",
    );
    c.assert_emerg("ha_check;", &["\"ha_check\"", "not allowed here"]);

    // Valid ones, with every parameter.
    for lines in [
        "ha_check;",
        "ha_check interval=5s jitter=1s timeout=2s fails=1 passes=1 uri=/healthz?x=1 port=8081 host=app.example status=200,204,300-399 body=ok mandatory persistent clear_fails;",
        "ha_check type=tcp tls;",
        "ha_slow_start 30s;\n        ha_outlier;\n        ha_panic 50%;",
        "ha_outlier consecutive_5xx=0 consecutive_errors=3 base_ejection=10s max_ejection=10% max_ejection_time=1m;",
    ] {
        let (ok, stderr) = Nginx::check(&upstream_with(&format!("{rr}        {lines}")));
        assert!(ok, "{lines:?} should pass nginx -t:\n{stderr}");
    }
}

/// `ha_api_max` (issue 23 item 3): its number, its duplicate, its need of
/// `ha_balance`, a maglev table too small for the room it makes (beside
/// resolved servers too); valid values pass on every policy, and beside
/// servers resolved at run time.
#[test]
fn latency_buckets_are_checked() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let rr = "        ha_balance round_robin;\n";
    let sixteen: Vec<String> = (1..=16).map(|i| format!("{i}ms")).collect();
    let sixteen = format!("ha_latency_buckets {};", sixteen.join(" "));
    for (lines, needle, mentions) in [
        (
            "ha_latency_buckets 10ms 5ms;",
            "ha_latency_buckets 10ms 5ms;",
            &[
                "latency bucket \"5ms\" is not above \"10ms\"",
                "must increase",
            ][..],
        ),
        (
            "ha_latency_buckets 10ms 10ms;",
            "ha_latency_buckets 10ms 10ms;",
            &["\"10ms\" is not above \"10ms\""],
        ),
        (
            "ha_latency_buckets 0;",
            "ha_latency_buckets 0;",
            &["invalid latency bucket \"0\"", "from 1ms"],
        ),
        (
            "ha_latency_buckets 5ms fast;",
            "ha_latency_buckets 5ms fast;",
            &["invalid latency bucket \"fast\""],
        ),
        (
            sixteen.as_str(),
            sixteen.as_str(),
            &["too many latency buckets: 16, at most 15"],
        ),
        (
            "ha_latency_buckets 5ms;\n        ha_latency_buckets 10ms;",
            "ha_latency_buckets 10ms;",
            &["\"ha_latency_buckets\" directive is duplicate"],
        ),
        (
            "ha_latency_buckets;",
            "ha_latency_buckets;",
            &["invalid number of arguments in \"ha_latency_buckets\""],
        ),
    ] {
        let c = Nginx::check_detailed(&upstream_with(&format!("{rr}        {lines}")));
        c.assert_emerg(needle, mentions);
    }
    let c = Nginx::check_detailed(&upstream_with("        ha_latency_buckets 5ms;"));
    c.assert_emerg(
        "upstream up {",
        &["\"up\"", "ha_latency_buckets needs \"ha_balance\""],
    );
    // Valid: one bound, fifteen, seconds and minutes.
    let fifteen: Vec<String> = (1..=15).map(|i| format!("{i}ms")).collect();
    for lines in [
        "ha_latency_buckets 1ms;".to_owned(),
        format!("ha_latency_buckets {};", fifteen.join(" ")),
        "ha_latency_buckets 100ms 1s 1s500ms 1m;".to_owned(),
    ] {
        let (ok, log) = Nginx::check(&upstream_with(&format!("{rr}        {lines}")));
        assert!(ok, "{lines}: {log}");
    }
}

#[test]
fn api_max_is_checked() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let rr = "        ha_balance round_robin;\n";
    for (lines, needle, mentions) in [
        (
            "ha_api_max -1;",
            "ha_api_max -1;",
            &[
                "invalid number of servers added through the API \"-1\"",
                "from 0 to 1048576",
            ][..],
        ),
        (
            "ha_api_max 1048577;",
            "ha_api_max 1048577;",
            &["\"1048577\"", "from 0 to 1048576"],
        ),
        ("ha_api_max 4k;", "ha_api_max 4k;", &["\"4k\""]),
        (
            "ha_api_max 4;\n        ha_api_max 8;",
            "ha_api_max 8;",
            &["\"ha_api_max\" directive is duplicate"],
        ),
        (
            "ha_api_max;",
            "ha_api_max;",
            &["invalid number of arguments in \"ha_api_max\""],
        ),
    ] {
        let c = Nginx::check_detailed(&upstream_with(&format!("{rr}        {lines}")));
        c.assert_emerg(needle, mentions);
    }

    // Needs the whole upstream: named at the upstream's line.
    let c = Nginx::check_detailed(&upstream_with("        ha_api_max 4;"));
    c.assert_emerg(
        "upstream up {",
        &["\"up\"", "ha_api_max needs \"ha_balance\""],
    );
    let c = Nginx::check_detailed(&upstream_with(
        "        ha_balance hash $uri maglev table_size=257;\n        ha_api_max 300;",
    ));
    c.assert_emerg(
        "upstream up {",
        &["maglev table size 257 is smaller than its 1 servers and ha_api_max 300"],
    );
    let c = Nginx::check_detailed(
        "    ha_api_max 4;
    server {
        listen 127.0.0.1:1;
    }
",
    );
    c.assert_emerg("ha_api_max 4;", &["\"ha_api_max\"", "not allowed here"]);

    // Valid ones, every policy.
    for lines in [
        "ha_balance round_robin;\n        ha_api_max 4;",
        "ha_balance least_conn;\n        ha_api_max 0;",
        "ha_balance p2c;\n        ha_api_max 1048575;",
        "ha_balance random;\n        ha_api_max 4;",
        "ha_balance ewma;\n        ha_api_max 4;",
        "ha_balance hash $uri consistent;\n        ha_api_max 4;",
        "ha_balance hash $uri maglev table_size=257;\n        ha_api_max 256;",
        "ha_balance round_robin;\n        ha_api_max 4;\n        ha_sticky cookie srv;",
    ] {
        let (ok, stderr) = Nginx::check(&upstream_with(&format!("        {lines}")));
        assert!(ok, "{lines:?} should pass nginx -t:\n{stderr}");
        assert!(
            !stderr.contains("[emerg]") && !stderr.contains("[alert]"),
            "{stderr}"
        );
    }

    // Beside servers resolved at run time ("server ... resolve" from
    // nginx 1.27.3, "ha_server" before): accepted, the room of both
    // counted against a Maglev table.
    let resolved = if hab_testkit::nginx::nginx_version().is_some_and(|v| v >= (1, 27, 3)) {
        "zone up 64k;\n        server localhost:1 resolve;"
    } else {
        "zone up 64k;\n        ha_server localhost:1 resolve;"
    };
    let upstream = |lines: &str| {
        format!(
            "    resolver 127.0.0.1:53;
    upstream up {{
        {lines}
        {resolved}
    }}
    server {{
        listen 127.0.0.1:1;
        location / {{ proxy_pass http://up; }}
    }}
"
        )
    };
    let (ok, stderr) = Nginx::check(&upstream(
        "ha_balance round_robin;\n        ha_api_max 4;\n        ha_resolve_max 8;",
    ));
    assert!(ok, "ha_api_max beside resolved servers:\n{stderr}");
    assert!(
        !stderr.contains("[emerg]") && !stderr.contains("[alert]"),
        "{stderr}"
    );
    let c = Nginx::check_detailed(&upstream(
        "ha_balance hash $uri maglev table_size=257;\n        ha_api_max 100;\n        ha_resolve_max 200;",
    ));
    c.assert_emerg(
        "upstream up {",
        &[
            "maglev table size 257 is smaller than its",
            "servers, ha_resolve_max 200 and ha_api_max 100",
        ],
    );
}
