//! End-to-end: bad parameters of the p2c / random / ewma / hash policies
//! fail `nginx -t` cleanly, valid lines pass
//!
//! Each mistake gives an `[emerg]` line naming the config file and the line
//! at fault; nginx exits with status 1, never on a signal.

use hab_testkit::nginx::{nginx_or_skip, stock_mode, Check, Nginx};

/// An upstream with `before` above its two server lines (the second with
/// `second_params`) and `after` below them.
fn upstream(before: &str, second_params: &str, after: &str) -> String {
    format!(
        "    upstream up {{
{before}
        server 127.0.0.1:1;
        server 127.0.0.1:2{second_params};
{after}
    }}
    server {{
        listen 127.0.0.1:3;
        location / {{ proxy_pass http://up; }}
    }}
"
    )
}

fn check_line(line: &str) -> Check {
    Nginx::check_detailed(&upstream(&format!("        {line}"), "", ""))
}

fn skip() -> bool {
    !nginx_or_skip() || stock_mode()
}

#[test]
fn hash_without_key_is_rejected() {
    if skip() {
        return;
    }
    let c = check_line("ha_balance hash;");
    c.assert_emerg("ha_balance hash;", &["key"]);
}

#[test]
fn hash_unknown_parameter_is_rejected() {
    if skip() {
        return;
    }
    let c = check_line("ha_balance hash $uri bogus;");
    c.assert_emerg("ha_balance hash $uri bogus;", &["\"bogus\""]);
}

#[test]
fn balance_factor_below_100_is_rejected() {
    if skip() {
        return;
    }
    for line in [
        "ha_balance hash $uri consistent balance_factor=50;",
        "ha_balance hash $uri maglev balance_factor=99;",
        "ha_balance hash $uri consistent balance_factor=abc;",
    ] {
        let c = check_line(line);
        c.assert_emerg(line, &["balance_factor="]);
    }
}

#[test]
fn balance_factor_without_consistent_or_maglev_is_rejected() {
    if skip() {
        return;
    }
    let line = "ha_balance hash $uri balance_factor=150;";
    let c = check_line(line);
    c.assert_emerg(line, &["\"balance_factor=150\""]);
}

#[test]
fn bad_ewma_decay_is_rejected() {
    if skip() {
        return;
    }
    for (line, value) in [
        ("ha_balance ewma decay=0;", "\"decay=0\""),
        ("ha_balance ewma decay=abc;", "\"decay=abc\""),
        ("ha_balance ewma decay=;", "\"decay=\""),
    ] {
        let c = check_line(line);
        c.assert_emerg(line, &[value]);
    }
}

#[test]
fn extra_parameter_of_other_policies_is_rejected() {
    if skip() {
        return;
    }
    for policy in ["p2c", "random", "ewma decay=1s"] {
        let line = format!("ha_balance {policy} bogus;");
        let c = check_line(&line);
        c.assert_emerg(&line, &["\"bogus\""]);
    }
}

#[test]
fn backup_rejected_with_policies_that_cannot_rank_it() {
    if skip() {
        return;
    }
    for policy in [
        "p2c",
        "random",
        "ewma",
        "hash $uri",
        "hash $uri consistent",
        "hash $uri maglev",
    ] {
        let directive = format!("        ha_balance {policy};");
        // Directive first: the `backup` server line is the one at fault.
        let c = Nginx::check_detailed(&upstream(&directive, " backup", ""));
        c.assert_emerg("backup;", &["backup"]);
        // Directive after the servers: the backup is already parsed, so the
        // upstream as a whole is refused, at its `upstream` line.
        let c = Nginx::check_detailed(&upstream("", " backup", &directive));
        c.assert_emerg("upstream up {", &["\"up\"", "backup"]);
    }
}

#[test]
fn backup_still_allowed_with_round_robin_and_least_conn() {
    if skip() {
        return;
    }
    for policy in ["round_robin", "least_conn"] {
        let directive = format!("        ha_balance {policy};");
        for block in [
            upstream(&directive, " backup", ""),
            upstream("", " backup", &directive),
        ] {
            let c = Nginx::check_detailed(&block);
            assert!(c.ok, "{policy} with backup: {}\n{}", c.stderr, c.conf);
        }
    }
}

#[test]
fn valid_line_of_each_policy_passes() {
    if skip() {
        return;
    }
    for line in [
        "ha_balance round_robin;",
        "ha_balance least_conn;",
        "ha_balance p2c;",
        "ha_balance random;",
        "ha_balance ewma;",
        "ha_balance ewma decay=10s;",
        "ha_balance ewma decay=500ms;",
        "ha_balance hash $uri;",
        "ha_balance hash $remote_addr$arg_k consistent;",
        "ha_balance hash $uri maglev;",
        "ha_balance hash $uri consistent balance_factor=100;",
        "ha_balance hash $uri maglev balance_factor=125;",
    ] {
        let c = check_line(line);
        assert!(
            c.ok,
            "{line}: nginx -t failed ({}):\n{}",
            c.status, c.stderr
        );
        assert!(
            !c.stderr.contains("[emerg]") && !c.stderr.contains("[warn]"),
            "{line}: {}",
            c.stderr
        );
    }
}

#[test]
fn maglev_table_size_must_be_a_prime_in_range() {
    if skip() {
        return;
    }
    for line in [
        "ha_balance hash $uri maglev table_size=100;",
        "ha_balance hash $uri maglev table_size=65536;",
        "ha_balance hash $uri maglev table_size=251;",
        "ha_balance hash $uri maglev table_size=100000007;",
        "ha_balance hash $uri maglev table_size=abc;",
    ] {
        let c = check_line(line);
        let value = line
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches(';');
        c.assert_emerg(
            line,
            &[
                "invalid maglev table size",
                &format!("\"{value}\""),
                "prime",
            ],
        );
    }
    let line = "ha_balance hash $uri consistent table_size=65537;";
    check_line(line).assert_emerg(line, &["\"table_size=65537\"", "maglev"]);
    let ok = Nginx::check_detailed(&upstream(
        "        ha_balance hash $uri maglev table_size=1009 balance_factor=150;",
        "",
        "",
    ));
    assert!(ok.ok, "a prime table size is accepted: {}", ok.stderr);
}

#[test]
fn maglev_table_size_below_the_server_count_is_rejected() {
    if skip() {
        return;
    }
    // 258 primaries in a 257-entry table: refused at the upstream line.
    let more: String = (0..256)
        .map(|i| format!("        server 127.0.0.1:{};\n", 10_000 + i))
        .collect();
    let c = Nginx::check_detailed(&upstream(
        "        ha_balance hash $uri maglev table_size=257;",
        "",
        &more,
    ));
    c.assert_emerg(
        "upstream up {",
        &["\"up\"", "maglev table size 257", "258 servers"],
    );
    let c = Nginx::check_detailed(&upstream(
        "        ha_balance hash $uri maglev table_size=263;",
        "",
        &more,
    ));
    assert!(c.ok, "263 entries for 258 servers: {}", c.stderr);
}
