//! End-to-end: sessions (`ha_sticky cookie | route | learn`, `ha_route`)
//! with real nginx (4 workers) and real backends
//!
//! A client bound to a server reaches it whichever worker takes its
//! connection; the cookie's value is nginx's (the MD5 of the server's
//! address in hex, checked against coreutils' `md5sum`, or its route); a
//! bound server that dies or drains is handled as NGINX Plus does.

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::Duration;

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::http::{get_with, Response};
use hab_testkit::nginx::{
    nginx_at_least_or_skip, nginx_or_skip, proxy_block, serial, server_lines, Nginx, WORKERS,
};
use hab_testkit::port::free_port;

const NEXT: &str = "            proxy_next_upstream error timeout;";

/// `md5sum` of `text` (coreutils: not the module's own MD5).
fn md5_hex(text: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf %s \"$1\" | md5sum")
        .arg("sh")
        .arg(text)
        .output()
        .expect("md5sum");
    String::from_utf8(out.stdout).unwrap()[..32].to_owned()
}

/// The `name=value` part of the response's Set-Cookie for `name`.
fn cookie_value(r: &Response, name: &str) -> Option<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .next()
}

fn get(port: u16, path: &str, cookie: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    get_with(port, path, &headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Who answered `n` requests (each on its own connection: any worker).
fn answers(port: u16, path: &str, cookie: Option<&str>, n: usize) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for _ in 0..n {
        let r = get(port, path, cookie);
        let who = if r.status == 200 {
            r.body_trimmed()
        } else {
            format!("status {}", r.status)
        };
        *t.entry(who).or_insert(0) += 1;
    }
    t
}

fn start(policy: &str, b: &[Backend], sticky: &str, extra: &str) -> (u16, Nginx) {
    let port = free_port();
    let upstream = format!(
        "        ha_balance {policy};\n        {sticky}\n{}",
        server_lines(b, &[])
    );
    let ngx = Nginx::start(&proxy_block(port, &upstream, extra), WORKERS);
    (port, ngx)
}

#[test]
fn a_cookie_binds_a_client_to_its_server_in_every_worker() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("s", 3);
    let (port, mut ngx) = start(
        "round_robin",
        &b,
        "ha_sticky cookie srv expires=1h domain=.example.com path=/ httponly secure samesite=lax;",
        NEXT,
    );
    let want: BTreeMap<String, String> = b
        .iter()
        .map(|s| (s.name.clone(), md5_hex(&s.addr())))
        .collect();

    // Unbound: balanced by the policy (round robin: evenly), and told
    // where they went, in nginx's format.
    let mut seen = BTreeMap::new();
    for _ in 0..30 {
        let r = get(port, "/", None);
        assert_eq!(r.status, 200);
        let who = r.body_trimmed();
        let header = r
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.clone())
            .expect("a Set-Cookie");
        let value = cookie_value(&r, "srv").unwrap();
        assert_eq!(value, want[&who], "{who}: {header}");
        let rest = header.split_once("; expires=").map(|x| x.1).unwrap_or("");
        assert!(
            rest.contains(
                " GMT; max-age=3600; domain=.example.com; httponly; secure; samesite=lax; path=/"
            ) && header.starts_with(&format!("srv={value}; expires=")),
            "{header}"
        );
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{seen:?}"
    );

    // Bound: every request to its server, 1,000 of 1,000 for one of them.
    for (k, s) in b.iter().enumerate() {
        let cookie = format!("srv={}", want[s.name.as_str()]);
        let n = if k == 0 { 1000 } else { 100 };
        let t = answers(port, "/", Some(&cookie), n);
        assert_eq!(
            t.get(s.name.as_str()),
            Some(&n),
            "{}: {t:?}",
            s.name.as_str()
        );
    }
    // An unknown id is no binding: balanced.
    let t = answers(port, "/", Some("srv=0123456789abcdef0123456789abcdef"), 30);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
    ngx.stop();
}

#[test]
fn every_policy_keeps_bound_clients() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("p", 3);
    for policy in [
        "least_conn",
        "p2c",
        "ewma",
        "random",
        "hash $remote_addr",
        "hash $request_uri consistent",
        "hash $request_uri maglev",
    ] {
        let (port, mut ngx) = start(policy, &b, "ha_sticky cookie srv;", NEXT);
        for s in &b {
            let cookie = format!("srv={}", md5_hex(&s.addr()));
            let t = answers(port, "/x", Some(&cookie), 60);
            assert_eq!(
                t.get(s.name.as_str()),
                Some(&60),
                "{policy}: {}: {t:?}",
                s.name.as_str()
            );
        }
        // Unbound clients get a cookie for whoever answered.
        for _ in 0..10 {
            let r = get(port, "/y", None);
            let who = r.body_trimmed();
            let s = b.iter().find(|s| s.name.as_str() == who).unwrap();
            assert_eq!(
                cookie_value(&r, "srv"),
                Some(md5_hex(&s.addr())),
                "{policy}"
            );
        }
        ngx.stop();
    }
}

#[test]
fn a_dead_bound_server_rebinds_its_clients_without_errors() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let mut b = Backend::start_many("d", 3);
    let (port, mut ngx) = start("least_conn", &b, "ha_sticky cookie srv;", NEXT);
    let cookie = format!("srv={}", md5_hex(&b[0].addr()));
    assert_eq!(answers(port, "/", Some(&cookie), 20).get("d1"), Some(&20));

    b[0].kill();
    let mut rebound = None;
    for _ in 0..50 {
        let r = get(port, "/", Some(&cookie));
        assert_eq!(r.status, 200, "a client saw the dead server");
        assert_ne!(r.body_trimmed(), "d1");
        let who = r.body_trimmed();
        let s = b.iter().find(|s| s.name.as_str() == who).unwrap();
        // Told where it is now.
        assert_eq!(cookie_value(&r, "srv"), Some(md5_hex(&s.addr())));
        rebound.get_or_insert((who, cookie_value(&r, "srv").unwrap()));
    }
    // With the new cookie it stays on the new server.
    let (who, value) = rebound.unwrap();
    let t = answers(port, "/", Some(&format!("srv={value}")), 100);
    assert_eq!(t.get(&who), Some(&100), "{t:?}");
    ngx.stop();
}

#[test]
fn drain_keeps_bound_sessions_and_sends_new_ones_elsewhere() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("r", 3);
    for policy in ["round_robin", "least_conn", "random"] {
        let port = free_port();
        let conf = format!(
            "    upstream up {{
        ha_balance {policy};
        ha_sticky cookie srv;
{}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://up; }}
        location /api/ {{ ha_api write=on; }}
    }}
",
            server_lines(&b, &[])
        );
        let mut ngx = Nginx::start(&conf, WORKERS);
        let (s, v) = api_call(
            port,
            "PATCH",
            "/api/upstreams/up/servers/0",
            r#"{"drain":true}"#,
        );
        assert_eq!(s, 200, "{v}");
        let cookie = format!("srv={}", md5_hex(&b[0].addr()));
        let t = answers(port, "/", Some(&cookie), 100);
        assert_eq!(
            t.get("r1"),
            Some(&100),
            "{policy}: bound to a draining server: {t:?}"
        );
        let t = answers(port, "/", None, 100);
        assert_eq!(
            t.get("r1"),
            None,
            "{policy}: a new session on a draining server: {t:?}"
        );
        let (_, v) = api_call(port, "GET", "/api/upstreams/up/servers/0", "");
        assert_eq!(v["state"], "draining", "{policy}: {v}");
        assert_eq!(v["drain"], true, "{policy}: {v}");
        assert_eq!(v["bound"], 100, "{policy}: {v}");
        assert_eq!(v["requests"], 100, "{policy}: {v}");
        let (_, v) = api_call(port, "GET", "/api/upstreams/up/servers/1", "");
        assert_eq!(v["bound"], 0, "{policy}: {v}");
        ngx.stop();
    }
}

#[test]
fn routes_name_servers_by_variable_and_in_cookies() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("t", 3);
    let routes: String = b
        .iter()
        .enumerate()
        .map(|(k, s)| format!("        ha_route {} r{};\n", s.addr(), k + 1))
        .collect();
    let port = free_port();
    let upstream = format!(
        "        ha_balance least_conn;\n        ha_sticky route $arg_route $cookie_route;\n{routes}{}",
        server_lines(&b, &[])
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, NEXT), WORKERS);
    for (k, s) in b.iter().enumerate() {
        let t = answers(port, &format!("/?route=r{}", k + 1), None, 50);
        assert_eq!(t.get(s.name.as_str()), Some(&50), "{t:?}");
        let t = answers(port, "/", Some(&format!("route=r{}", k + 1)), 50);
        assert_eq!(t.get(s.name.as_str()), Some(&50), "{t:?}");
    }
    // The first non-empty variable wins.
    let t = answers(port, "/?route=r3", Some("route=r1"), 20);
    assert_eq!(t.get("t3"), Some(&20), "{t:?}");
    // No route, or an unknown one: balanced.
    let t = answers(port, "/?route=nope", None, 30);
    assert_eq!(t.len(), 3, "{t:?}");
    ngx.stop();

    // Cookie mode: a server with a route is known by it.
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;\n        ha_sticky cookie srv;\n{routes}{}",
        server_lines(&b, &[])
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, NEXT), WORKERS);
    for _ in 0..6 {
        let r = get(port, "/", None);
        let k: usize = r.body_trimmed()[1..].parse().unwrap();
        assert_eq!(cookie_value(&r, "srv"), Some(format!("r{k}")));
    }
    let t = answers(port, "/", Some("srv=r2"), 50);
    assert_eq!(t.get("t2"), Some(&50), "{t:?}");
    ngx.stop();
}

fn learn_conf(port: u16, b: &[Backend], zone: &str, params: &str) -> String {
    format!(
        "    upstream up {{
        ha_balance round_robin;
        ha_sticky learn create=$upstream_cookie_sid lookup=$cookie_sid
                  zone={zone} {params};
{}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://up; proxy_next_upstream error timeout; }}
        location /api/ {{ ha_api; }}
    }}
",
        server_lines(b, &[])
    )
}

#[test]
fn learnt_sessions_are_followed_across_workers_and_reloads_and_expire() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("l", 3);
    for header in ["", "header"] {
        let port = free_port();
        // `up` keeps sessions for an hour (nothing expires while the test
        // runs, however slow the machine); `short` for 2 s.
        let conf = format!(
            "    upstream short {{
        ha_balance round_robin;
        ha_sticky learn create=$upstream_cookie_sid lookup=$cookie_sid
                  zone=brief:1m timeout=2s {header};
{}    }}
{}",
            server_lines(&b, &[]),
            learn_conf(port, &b, "sessions:1m", &format!("timeout=1h {header}")).replace(
                "        location /api/",
                "        location /short { proxy_pass http://short; }\n        location /api/"
            )
        );
        let mut ngx = Nginx::start(&conf, WORKERS);
        // Each server starts a session; the module learns where it lives.
        let mut owner = BTreeMap::new();
        for k in 0..6 {
            let r = get(port, &format!("/?setsid=s{k}"), None);
            assert_eq!(r.status, 200);
            owner.insert(format!("s{k}"), r.body_trimmed());
        }
        for (sid, who) in &owner {
            let t = answers(port, "/", Some(&format!("sid={sid}")), 100);
            assert_eq!(t.get(who), Some(&100), "{header}: {sid}: {t:?}");
        }
        // Kept across a reload.
        ngx.reload();
        for (sid, who) in &owner {
            let t = answers(port, "/", Some(&format!("sid={sid}")), 30);
            assert_eq!(
                t.get(who),
                Some(&30),
                "{header}: after reload: {sid}: {t:?}"
            );
        }
        let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
        assert_eq!(v["sessions"]["zone"], "sessions", "{v}");
        assert_eq!(v["sessions"]["entries"], 6, "{v}");
        assert_eq!(v["sessions"]["created"], 6, "{v}");

        // Unused for longer than timeout=2s: gone.
        let r = get(port, "/short?setsid=x", None);
        let who = r.body_trimmed();
        let t = answers(port, "/short", Some("sid=x"), 5);
        assert_eq!(t.get(&who), Some(&5), "{header}: {t:?}");
        thread::sleep(Duration::from_millis(2500));
        let (_, v) = api_call(port, "GET", "/api/upstreams/short", "");
        assert_eq!(v["sessions"]["entries"], 0, "{v}");
        let t = answers(port, "/short", Some("sid=x"), 30);
        assert_eq!(t.len(), 3, "{header}: expired yet still bound: {t:?}");
        let (_, v) = api_call(port, "GET", "/api/upstreams/short", "");
        assert_eq!(v["sessions"]["created"], 1, "{v}");
        assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
        ngx.stop();
    }
}

#[test]
fn a_full_learn_zone_evicts_the_oldest_and_fails_nothing() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("f", 2);
    let port = free_port();
    let mut ngx = Nginx::start(&learn_conf(port, &b, "small:32k", ""), WORKERS);
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    let capacity = v["sessions"]["capacity"].as_u64().unwrap() as usize;
    assert!((64..=1024).contains(&capacity), "{v}");
    let mut owner = Vec::new();
    for k in 0..3 * capacity {
        let r = get(port, &format!("/?setsid=e{k}"), None);
        assert_eq!(r.status, 200, "session {k}");
        owner.push(r.body_trimmed());
    }
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    let s = &v["sessions"];
    assert_eq!(s["created"].as_u64(), Some(3 * capacity as u64), "{v}");
    assert!(s["evicted"].as_u64().unwrap() >= capacity as u64, "{v}");
    assert!(s["entries"].as_u64().unwrap() <= capacity as u64, "{v}");
    // The newest sessions are still bound.
    for (k, who) in owner.iter().enumerate().skip(3 * capacity - 10) {
        let t = answers(port, "/", Some(&format!("sid=e{k}")), 10);
        assert_eq!(t.get(who), Some(&10), "e{k}: {t:?}");
    }
    ngx.stop();
}

#[test]
fn bad_sticky_configuration_fails_nginx_t() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let up = |body: &str| {
        format!(
            "    upstream up {{\n        ha_balance round_robin;\n{body}\n        server 127.0.0.1:1;\n    }}\n"
        )
    };
    let cases: [(&str, &str); 14] = [
        ("ha_sticky cookie;", "invalid number of arguments"),
        ("ha_sticky cookie a=b;", "invalid cookie name"),
        ("ha_sticky cookie srv bogus;", "unknown parameter \"bogus\""),
        ("ha_sticky cookie srv expires=soon;", "invalid \"expires\""),
        ("ha_sticky cookie srv samesite=odd;", "invalid \"samesite\""),
        (
            "ha_sticky cookie srv httponly httponly;",
            "\"httponly\" is duplicate",
        ),
        ("ha_sticky cookie a; ha_sticky cookie b;", "is duplicate"),
        ("ha_sticky route arg_x;", "invalid variable name"),
        (
            "ha_sticky learn lookup=$cookie_s zone=z:1m;",
            "\"create\" parameter is not specified",
        ),
        (
            "ha_sticky learn create=$upstream_cookie_s lookup=$cookie_s;",
            "\"zone\" parameter",
        ),
        (
            "ha_sticky learn create=$upstream_cookie_s lookup=$cookie_s zone=z:1k;",
            "zone is too small",
        ),
        (
            "ha_sticky learn create=$upstream_cookie_s lookup=$cookie_s zone=z:1m timeout=0;",
            "invalid timeout",
        ),
        (
            "ha_sticky cookie srv; ha_route 127.0.0.1:2 r1;",
            "ha_route: no server \"127.0.0.1:2\"",
        ),
        (
            "ha_sticky cookie srv; ha_route 127.0.0.1:1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;",
            "longer than 32",
        ),
    ];
    for (body, want) in cases {
        let (ok, stderr) = Nginx::check(&up(body));
        assert!(!ok && stderr.contains(want), "{body}: {stderr}");
    }
    let (ok, stderr) = Nginx::check(&up("ha_route 127.0.0.1:1 r1;"));
    assert!(
        !ok && stderr.contains("\"ha_route\" needs \"ha_sticky\""),
        "{stderr}"
    );
    let (ok, stderr) = Nginx::check(
        "    upstream up {\n        ha_sticky cookie srv;\n        server 127.0.0.1:1;\n    }\n",
    );
    assert!(!ok && stderr.contains("need \"ha_balance\""), "{stderr}");
}

/// The cookie each backend gets from a `sticky`-like directive of the
/// nginx at `port` (the first response each backend gave).
fn cookies_by_backend(port: u16, b: &[Backend]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for _ in 0..20 * b.len() {
        let r = get(port, "/", None);
        if let Some(v) = cookie_value(&r, "srv") {
            out.entry(r.body_trimmed()).or_insert(v);
        }
        if out.len() == b.len() {
            break;
        }
    }
    out
}

/// nginx 1.29.6 and later have their own `sticky`: the cookie values are
/// the same as ours for the same servers (addresses and routes), a cookie
/// issued by either binds to the same server under the other, and stock
/// `sticky` also works over `ha_balance` (O(1), with no "balancer does
/// not support sticky").
#[test]
fn stock_sticky_and_ours_agree_on_every_cookie() {
    if !nginx_or_skip() || !nginx_at_least_or_skip((1, 29, 6), "stock sticky") {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("k", 3);
    let plain: String = b
        .iter()
        .map(|s| format!("        server {};\n", s.addr()))
        .collect();
    let routed: String = b
        .iter()
        .enumerate()
        .map(|(k, s)| format!("        server {} route=r{};\n", s.addr(), k + 1))
        .collect();
    let conf = |upstream: &str, port: u16| {
        format!(
            "    upstream up {{\n{upstream}    }}\n    server {{\n        listen 127.0.0.1:{port};\n        location / {{ proxy_pass http://up; }}\n    }}\n"
        )
    };
    for servers in [&plain, &routed] {
        let (p1, p2, p3) = (free_port(), free_port(), free_port());
        let mut stock = Nginx::start_stock(
            &conf(&format!("        sticky cookie srv;\n{servers}"), p1),
            WORKERS,
        );
        let mut ours = Nginx::start(
            &conf(
                &format!(
                    "        ha_balance least_conn;\n        ha_sticky cookie srv;\n{servers}"
                ),
                p2,
            ),
            WORKERS,
        );
        let mut both = Nginx::start(
            &conf(
                &format!("        ha_balance round_robin;\n        sticky cookie srv;\n{servers}"),
                p3,
            ),
            WORKERS,
        );
        let a = cookies_by_backend(p1, &b);
        assert_eq!(a.len(), 3, "{a:?}");
        assert_eq!(a, cookies_by_backend(p2, &b), "stock sticky and ha_sticky");
        assert_eq!(
            a,
            cookies_by_backend(p3, &b),
            "stock sticky over ha_balance"
        );
        for (who, value) in &a {
            let cookie = format!("srv={value}");
            for port in [p1, p2, p3] {
                let t = answers(port, "/", Some(&cookie), 30);
                assert_eq!(t.get(who), Some(&30), "{port}: {cookie}: {t:?}");
            }
        }
        for n in [&mut stock, &mut ours, &mut both] {
            let log = n.error_log();
            assert!(
                !log.contains("does not support sticky") && !log.contains("[alert]"),
                "{log}"
            );
            n.stop();
        }
    }
}

/// With `ha_state_file`, learnt sessions outlive a restart: the master
/// writes them beside the state file when it exits, the next start takes
/// them back (with their ages: expiry goes on).
#[test]
fn learnt_sessions_outlive_a_restart_with_the_state_file() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("w", 3);
    let (state, line) = hab_testkit::nginx::state_file();
    let port = free_port();
    let conf = format!("{line}\n{}", learn_conf(port, &b, "kept:1m", "timeout=1h"));
    let mut ngx = Nginx::start(&conf, WORKERS);
    let mut owner = BTreeMap::new();
    for k in 0..30 {
        let r = get(port, &format!("/?setsid=r{k}"), None);
        owner.insert(format!("r{k}"), r.body_trimmed());
    }
    ngx.stop();
    let log = ngx.error_log();
    assert!(log.contains("30 learnt sessions of 1 zones saved"), "{log}");
    let saved = hab_api::sessions::path_for(&state);
    assert!(saved.is_file(), "{}", saved.display());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let mut ngx = Nginx::start(&conf, WORKERS);
    assert!(
        ngx.error_log().contains("30 sessions restored"),
        "{}",
        ngx.error_log()
    );
    for (sid, who) in &owner {
        let t = answers(port, "/", Some(&format!("sid={sid}")), 20);
        assert_eq!(t.get(who), Some(&20), "after a restart: {sid}: {t:?}");
    }
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert_eq!(v["sessions"]["entries"], 30, "{v}");
    ngx.stop();

    // A damaged file is reported and ignored: nginx starts, unbound.
    std::fs::write(&saved, b"HABSESS1garbage").unwrap();
    let mut ngx = Nginx::start(&conf, WORKERS);
    assert!(
        ngx.error_log().contains("sessions file"),
        "{}",
        ngx.error_log()
    );
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert_eq!(v["sessions"]["entries"], 0, "{v}");
    ngx.stop();
}

/// A reload that changes a learn zone's size copies its sessions into the
/// new zone; one that keeps it adopts the zone as it is.
#[test]
fn a_resized_learn_zone_keeps_its_sessions() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("z", 3);
    let port = free_port();
    let mut ngx = Nginx::start(&learn_conf(port, &b, "grow:1m", ""), WORKERS);
    let mut owner = BTreeMap::new();
    for k in 0..12 {
        let r = get(port, &format!("/?setsid=g{k}"), None);
        owner.insert(format!("g{k}"), r.body_trimmed());
    }
    let old = ngx.worker_pids();
    ngx.reload_with(&learn_conf(port, &b, "grow:4m", ""));
    // The old workers answer from the old zone until they have quit.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while old
        .iter()
        .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        && std::time::Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ngx.error_log()
            .contains("sticky zone \"grow\": 12 sessions kept"),
        "{}",
        ngx.error_log()
    );
    for (sid, who) in &owner {
        let t = answers(port, "/", Some(&format!("sid={sid}")), 20);
        assert_eq!(t.get(who), Some(&20), "after the resize: {sid}: {t:?}");
    }
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert_eq!(v["sessions"]["entries"], 12, "{v}");
    assert!(
        v["sessions"]["capacity"].as_u64().unwrap() >= 65_536,
        "{v}\n{}",
        ngx.error_log()
    );
    ngx.stop();
}
