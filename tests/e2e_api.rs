//! End-to-end: the operator API (`ha_api`) and runtime admin state through
//! real nginx with 4 workers: refusals, drain under load, a weight change
//! reaching every worker, many changes under load, admin state across
//! reload and restart (`ha_state_file`), and the `hab` CLI against it.

use std::time::{Duration, Instant};

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::http;
use hab_testkit::load::{sequence, spawn_load, LoadOpts};
use hab_testkit::nginx::{
    nginx_or_skip, proxy_block, root, serial, server_lines, state_file, Nginx, WORKERS,
};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;
use hab_testkit::skip::{say, test_name};
use serde_json::Value;

/// The upstream `up` with `upstream_body`, proxied at `/`, and the API at
/// `/api/` (write), `/ro/` (read only), `/denied/` (nobody allowed).
fn block(port: u16, upstream_body: &str, http_extra: &str) -> String {
    let base = proxy_block(
        port,
        upstream_body,
        "            proxy_next_upstream error timeout;",
    );
    let api = "        location /api/ { ha_api write=on; }
        location /ro/ { ha_api; }
        location /denied/ { ha_api write=on; allow 127.0.0.2; deny all; }
";
    // Put the API locations inside the proxying server.
    let base = base.replacen(
        "        location / {",
        &format!("{api}        location / {{"),
        1,
    );
    format!("{http_extra}\n{base}")
}

fn server(port: u16, id: usize) -> Value {
    let (s, v) = api_call(port, "GET", &format!("/api/upstreams/up/servers/{id}"), "");
    assert_eq!(s, 200, "{v}");
    v
}

fn patch(port: u16, id: usize, body: &str) -> Value {
    let (s, v) = api_call(
        port,
        "PATCH",
        &format!("/api/upstreams/up/servers/{id}"),
        body,
    );
    assert_eq!(s, 200, "PATCH {id} {body}: {v}");
    v
}

#[test]
fn api_reads_and_every_refusal() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("r", 3);
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;\n{}",
        server_lines(&b, &["weight=2", "backup", "max_conns=7"])
    );
    let big = "    upstream big {
        ha_balance hash $arg_k consistent;
        server 127.0.0.1:1;
        server 127.0.0.1:2;
    }";
    let mut ngx = Nginx::start(&block(port, &upstream, big), WORKERS);

    let (s, v) = api_call(port, "GET", "/api/upstreams", "");
    assert_eq!(s, 200, "{v}");
    let peers = v["up"]["peers"].as_array().expect("peers");
    let rows: Vec<(u64, String, bool, u64, u64)> = peers
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap(),
                p["server"].as_str().unwrap().to_owned(),
                p["backup"].as_bool().unwrap(),
                p["weight"].as_u64().unwrap(),
                p["max_conns"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (0, b[0].addr(), false, 2, 0),
            (1, b[1].addr(), true, 1, 0),
            (2, b[2].addr(), false, 1, 7),
        ],
        "ids in configuration order, backups included"
    );
    assert_eq!(v["up"]["policy"], "round_robin");
    assert_eq!(v["up"]["generation"], 1);
    assert!(peers.iter().all(|p| p["state"] == "up" && p["active"] == 0));
    let (s, one) = api_call(port, "GET", "/ro/upstreams/up/servers/2", "");
    assert_eq!((s, one["name"].as_str()), (200, Some(b[2].addr().as_str())));
    assert_eq!(
        (
            one["policy"].as_str(),
            one["generation"].as_u64(),
            one["configured_weight"].as_u64()
        ),
        (Some("round_robin"), Some(1), Some(1))
    );
    let (s, _) = api_call(port, "HEAD", "/api/upstreams/up", "");
    assert_eq!(s, 200);

    for (method, path, body, status, code) in [
        (
            "PATCH",
            "/ro/upstreams/up/servers/0",
            r#"{"down":true}"#,
            405,
            "MethodNotAllowed",
        ),
        (
            "DELETE",
            "/api/upstreams/up/servers/0",
            "",
            405,
            "MethodNotAllowed",
        ),
        ("POST", "/api/upstreams", "{}", 405, "MethodNotAllowed"),
        (
            "PATCH",
            "/api/upstreams/up/servers/0",
            "{\"down\":",
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/upstreams/up/servers/0",
            "",
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/upstreams/up/servers/0",
            "{}",
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/upstreams/up/servers/0",
            r#"{"drian":true}"#,
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/upstreams/up/servers/0",
            r#"{"weight":0}"#,
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/upstreams/up/servers/0",
            r#"{"weight":4294967297}"#,
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/upstreams/up/servers/0",
            r#"{"down":"yes"}"#,
            400,
            "BadRequest",
        ),
        ("GET", "/api/upstreams/nope", "", 404, "NotFound"),
        (
            "PATCH",
            "/api/upstreams/nope/servers/0",
            r#"{"down":true}"#,
            404,
            "NotFound",
        ),
        ("GET", "/api/upstreams/up/servers/3", "", 404, "NotFound"),
        ("GET", "/api/upstreams/up/servers/-1", "", 404, "NotFound"),
        (
            "GET",
            "/api/upstreams/up/servers/18446744073709551617",
            "",
            404,
            "NotFound",
        ),
        ("GET", "/api/other", "", 404, "NotFound"),
    ] {
        let (s, v) = api_call(port, method, path, body);
        assert_eq!(
            (
                s,
                v["error"]["code"].as_str(),
                v["error"]["status"].as_u64()
            ),
            (status, Some(code), Some(u64::from(status))),
            "{method} {path} {body}: {v}"
        );
        assert!(v["error"]["text"].as_str().is_some_and(|t| !t.is_empty()));
    }
    // A change that cannot fit in the zone: refused, said in the error
    // log, and the current generation keeps serving.
    let (s, v) = api_call(
        port,
        "PATCH",
        "/api/upstreams/big/servers/0",
        r#"{"weight":1000000}"#,
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (507, Some("NoSpace")),
        "{v}"
    );
    assert!(
        ngx.error_log().contains("[error]") && ngx.error_log().contains("does not fit"),
        "{}",
        ngx.error_log()
    );
    let (_, v) = api_call(port, "GET", "/api/upstreams/big", "");
    assert_eq!(
        (v["generation"].as_u64(), v["peers"][0]["weight"].as_u64()),
        (Some(1), Some(1))
    );
    // nginx's own access control applies.
    let (s, _) = api_call(port, "GET", "/denied/upstreams", "");
    assert_eq!(s, 403);
    // Nothing refused changed anything.
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert_eq!(v["generation"], 1);
    assert!(v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["state"] == "up"));
    assert_eq!(ngx.crashes(), Vec::<String>::new());
    ngx.stop();
}

#[test]
fn weight_change_reaches_every_worker_on_the_next_request() {
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
    let upstream = format!("        ha_balance round_robin;\n{}", server_lines(&b, &[]));
    let mut ngx = Nginx::start(&block(port, &upstream, ""), WORKERS);

    assert_eq!(sequence(port, "/", 6), ["a", "b", "c", "a", "b", "c"]);
    let v = patch(port, 0, r#"{"weight":5}"#);
    assert_eq!(
        (v["weight"].as_u64(), v["configured_weight"].as_u64()),
        (Some(5), Some(1))
    );
    // The new generation starts its smooth sequence at its beginning, and
    // every worker follows it from the next request on.
    let seq = sequence(port, "/", 70);
    let expect: Vec<&str> = ["a", "a", "b", "a", "c", "a", "a"].repeat(10);
    assert_eq!(seq, expect);
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert_eq!(v["generation"], 2);
    // Back to the configured weight.
    patch(port, 0, r#"{"weight":null}"#);
    assert_eq!(sequence(port, "/", 6), ["a", "b", "c", "a", "b", "c"]);
    let pids: std::collections::BTreeSet<i32> =
        ngx.access_entries().iter().map(|e| e.pid).collect();
    assert!(
        pids.len() >= 2,
        "requests served by one worker only: {pids:?}"
    );
    ngx.stop();
}

#[test]
fn drain_under_load_finishes_in_flight_and_sends_nothing_new() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("d", 3);
    let port = free_port();
    let upstream = format!("        ha_balance least_conn;\n{}", server_lines(&b, &[]));
    let mut ngx = Nginx::start(&block(port, &upstream, ""), WORKERS);

    // Slow requests, so that some are in flight on the server drained.
    let load = spawn_load(
        port,
        "/?delay=300",
        LoadOpts {
            max_time: Duration::from_secs(30),
            ..LoadOpts::new(12, 40)
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while b[0].stats().inflight == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        b[0].stats().inflight > 0,
        "no request in flight on {}",
        b[0].name
    );
    let v = patch(port, 0, r#"{"drain":true}"#);
    // Requests picked before the drain may still be on their way to the
    // backend: they are in nginx's `active` of the answer, not yet in the
    // backend's count. Nothing else may arrive.
    let after = b[0].stats().requests;
    let on_the_way = v["active"].as_u64().unwrap();
    assert!(v["drain"].as_bool().unwrap());
    // Requests already there are still running: the server drains.
    assert_eq!(v["state"], "draining", "{v}");
    assert!(v["active"].as_u64().unwrap() > 0);
    // Once they finish, nothing is in flight and it still reads draining
    // (never `down`, the operator's other switch) until undrained.
    let ok = wait_until(Duration::from_secs(10), || server(port, 0)["active"] == 0);
    let v = server(port, 0);
    assert!(ok, "still {v} after 10 s");
    assert_eq!(v["state"], "draining", "{v}");
    std::thread::sleep(Duration::from_millis(700));
    let r = load.stop();
    assert_eq!(
        (r.non_200, r.errors),
        (0, 0),
        "client errors: {:?}",
        r.failures
    );
    assert!(r.total > 20, "too little load: {}", r.total);
    let total = b[0].stats().requests;
    assert!(
        total <= after + on_the_way,
        "a request picked after the PATCH returned reached the drained server: \
         {total} requests, {after} when the PATCH returned, {on_the_way} then in flight"
    );
    assert_eq!(
        b[0].stats().inflight,
        0,
        "in-flight requests on d0 completed"
    );
    // Undrained, it takes traffic again.
    patch(port, 0, r#"{"drain":false}"#);
    let seq = sequence(port, "/", 30);
    assert!(seq.iter().any(|s| *s == b[0].name), "{seq:?}");
    // Each change logged once at notice, with what changed and the client.
    let log = ngx.error_log();
    for change in ["drain false -> true", "drain true -> false"] {
        let line = format!(
            "ha_api: upstream \"up\" server {} id 0: {change}",
            b[0].addr()
        );
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&line)).collect();
        assert_eq!(lines.len(), 1, "{line:?} in:\n{log}");
        assert!(
            lines[0].contains("[notice]") && lines[0].contains("client: 127.0.0.1"),
            "{}",
            lines[0]
        );
    }
    ngx.stop();
}

#[test]
fn two_hundred_changes_under_load_lose_nothing() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("p", 3);
    let port = free_port();
    let upstream = format!("        ha_balance round_robin;\n{}", server_lines(&b, &[]));
    let mut ngx = Nginx::start(&block(port, &upstream, ""), WORKERS);

    let load = spawn_load(
        port,
        "/?delay=5",
        LoadOpts {
            max_time: Duration::from_secs(60),
            ..LoadOpts::new(8, 100_000)
        },
    );
    let bodies = [
        r#"{"drain":true}"#,
        r#"{"drain":false}"#,
        r#"{"weight":3}"#,
        r#"{"down":true}"#,
        r#"{"down":false,"weight":1}"#,
    ];
    // The load runs before the first change and past the last (how many
    // requests fit in the 200 changes depends on the machine, not on the
    // module: 32 on a busy one).
    assert!(
        load.wait_done(8, Duration::from_secs(10)),
        "the load did not start"
    );
    let mut accepted = 0;
    for k in 0..200 {
        // Server 2 is never touched: there is always somewhere to go.
        let (s, v) = api_call(
            port,
            "PATCH",
            &format!("/api/upstreams/up/servers/{}", k % 2),
            bodies[k % 5],
        );
        // 409 when older generations are all still serving requests in
        // flight (or another builder is at work); every other change applies.
        assert!(s == 200 || s == 409, "PATCH #{k}: {s} {v}");
        accepted += usize::from(s == 200);
    }
    assert!(accepted >= 100, "only {accepted} of 200 changes accepted");
    let started = load.done();
    assert!(
        load.wait_done(started + 50, Duration::from_secs(20)),
        "the load stalled after the changes"
    );
    let r = load.stop();
    assert_eq!(
        (r.non_200, r.errors),
        (0, 0),
        "client errors: {:?}",
        r.failures
    );
    assert!(r.total > 50, "too little load: {}", r.total);
    // At idle every in-flight count is back to zero.
    let ok = wait_until(Duration::from_secs(5), || {
        let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["active"] == 0)
    });
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert!(ok, "{v}");
    assert!(v["generation"].as_u64().unwrap() > 10, "{v}");
    // Old generations were reclaimed: at idle a change always fits.
    for w in 2..12 {
        let v = patch(
            port,
            0,
            &format!(r#"{{"weight":{w},"down":false,"drain":false}}"#),
        );
        assert_eq!(v["weight"], w);
    }
    assert_eq!(ngx.crashes(), Vec::<String>::new());
    assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
    ngx.stop();
}

#[test]
fn admin_state_survives_reload_and_restart_with_a_state_file() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("s", 4);
    let (state, extra) = state_file();
    let port = free_port();
    let three = format!(
        "        ha_balance round_robin;\n{}",
        server_lines(&b[..3], &[])
    );
    let mut ngx = Nginx::start(&block(port, &three, &extra), WORKERS);

    patch(port, 1, r#"{"down":true}"#);
    patch(port, 2, r#"{"weight":4,"drain":true}"#);
    assert!(state.is_file(), "the state file was written");
    let check = |port: u16, what: &str| {
        let s1 = server(port, 1);
        let s2 = server(port, 2);
        assert_eq!(
            (s1["down"].as_bool(), s1["state"].as_str()),
            (Some(true), Some("down")),
            "{what}: {s1}"
        );
        assert_eq!(
            (s2["drain"].as_bool(), s2["weight"].as_u64()),
            (Some(true), Some(4)),
            "{what}: {s2}"
        );
        assert_eq!(server(port, 0)["state"], "up", "{what}");
    };
    check(port, "before");

    // Reload, unchanged: the zone is kept.
    ngx.reload();
    check(port, "after reload");
    // Reload with a server added: state carried by identity.
    let four = format!("        ha_balance round_robin;\n{}", server_lines(&b, &[]));
    ngx.reload_with(&block(port, &four, &extra));
    check(port, "after reload with a server added");
    let seq = sequence(port, "/", 12);
    assert!(
        seq.iter().all(|s| *s == b[0].name || *s == b[3].name),
        "only the servers neither down nor draining: {seq:?}"
    );
    ngx.stop();

    // A full restart: the state file brings it back.
    let mut ngx = Nginx::start(&block(port, &four, &extra), WORKERS);
    check(port, "after restart");
    assert!(ngx.error_log().contains("restored"), "{}", ngx.error_log());
    ngx.stop();

    // A binary upgrade (USR2, then QUIT to the old master): the new master
    // has its own shared memory and takes the state from the file.
    let mut ngx = Nginx::start(&block(port, &four, &extra), WORKERS);
    patch(port, 3, r#"{"down":true}"#);
    ngx.binary_upgrade();
    check(port, "after a binary upgrade");
    assert_eq!(
        server(port, 3)["down"],
        true,
        "the change made before the upgrade"
    );
    patch(port, 3, r#"{"down":false}"#);
    ngx.stop();

    // A truncated, then a garbage state file: reported, configured values.
    let good = std::fs::read(&state).unwrap();
    for (what, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"\x00\x01not json".to_vec()),
    ] {
        std::fs::write(&state, &bytes).unwrap();
        let mut ngx = Nginx::start(&block(port, &four, &extra), WORKERS);
        let log = ngx.error_log();
        assert!(
            log.contains("[warn]") && log.contains("ha_state_file") && log.contains("ignored"),
            "{what}: {log}"
        );
        for id in 0..4 {
            let s = server(port, id);
            assert_eq!(
                (s["state"].as_str(), s["weight"].as_u64()),
                (Some("up"), Some(1)),
                "{what}: {s}"
            );
        }
        assert_eq!(ngx.crashes(), Vec::<String>::new());
        ngx.stop();
    }
}

#[test]
fn hab_cli_drives_the_api() {
    if !nginx_or_skip() {
        return;
    }
    let hab = root().join("target/debug/hab");
    if !hab.is_file() {
        assert!(
            std::env::var("HAB_REQUIRE_NGINX").is_err(),
            "{} missing: run cargo build --workspace --bins",
            hab.display()
        );
        say(&format!("SKIP {}: target/debug/hab not built", test_name()));
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("h", 2);
    let port = free_port();
    let upstream = format!("        ha_balance round_robin;\n{}", server_lines(&b, &[]));
    let mut ngx = Nginx::start(&block(port, &upstream, ""), WORKERS);
    let url = format!("http://127.0.0.1:{port}/api");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&hab)
            .args(args)
            .output()
            .expect("run hab");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["drain", &url, "up", &b[1].addr()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(server(port, 1)["drain"], true);
    let (code, out, err) = run(&["weight", &url, "up", "0", "3"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(server(port, 0)["weight"], 3);
    let (code, out, err) = run(&["status", &url]);
    assert_eq!(code, Some(0), "{err}");
    // The drained server (idle) reads draining, never down.
    let row = out
        .lines()
        .find(|l| l.contains(&b[1].addr()))
        .unwrap_or_default();
    assert!(row.contains("draining") && !row.contains("down"), "{out}");
    // `hab up` puts the drained server back (undrains it), and says so.
    let (code, out, err) = run(&["up", &url, "up", &b[1].addr()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("state up"), "{out}");
    let s = server(port, 1);
    assert_eq!(
        (s["drain"].as_bool(), s["state"].as_str()),
        (Some(false), Some("up")),
        "{s}"
    );
    // `hab drain --wait` on an idle server returns at once, drained.
    let (code, out, err) = run(&["drain", "--wait", "--timeout", "5", &url, "up", "1"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("draining"), "{out}");
    let (code, _, err) = run(&["down", &format!("http://127.0.0.1:{port}/ro"), "up", "0"]);
    assert_eq!(code, Some(1), "refused: {err}");
    assert!(err.contains("405"), "{err}");
    let dead = free_port();
    let (code, _, err) = run(&["status", &format!("http://127.0.0.1:{dead}/api")]);
    assert_eq!(code, Some(2), "unreachable: {err}");
    ngx.stop();
}

#[test]
fn killed_workers_do_not_pin_old_generations() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("k", 2);
    let port = free_port();
    let upstream = format!("        ha_balance round_robin;\n{}", server_lines(&b, &[]));
    let mut ngx = Nginx::start(&block(port, &upstream, ""), WORKERS);

    // Slow requests hold generation 1 while a weight change publishes 2.
    let load = spawn_load(
        port,
        "/?delay=3000",
        LoadOpts {
            max_time: Duration::from_secs(20),
            ..LoadOpts::new(6, 1)
        },
    );
    let ok = wait_until(Duration::from_secs(10), || {
        b.iter().map(|b| b.stats().inflight).sum::<u64>() >= 6
    });
    assert!(ok, "slow requests did not arrive");
    patch(port, 0, r#"{"weight":3}"#);
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert_eq!(v["generation"], 2);
    assert_eq!(v["retiring"][0]["generation"], 1, "{v}");
    assert_eq!(v["retiring"][0]["requests"], 6, "{v}");

    // Every worker dies with its requests; nginx starts new ones, which
    // reconcile the dead ones' ledger rows: requests and pins are gone.
    for pid in ngx.worker_pids() {
        ngx.kill_worker(pid);
    }
    let ok = wait_until(Duration::from_secs(15), || {
        ngx.worker_pids().len() == WORKERS
            && matches!(http::request(port, "GET", "/api/upstreams/up", b""), Ok(r) if r.status == 200)
    });
    assert!(ok, "workers not back: {}", ngx.error_log());
    let _ = load.stop();
    // A worker claims its ledger slot (and reconciles) when it starts.
    let ok = wait_until(Duration::from_secs(10), || {
        let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
        v["retiring"].as_array().is_some_and(|r| r.is_empty())
            && v["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["active"] == 0)
    });
    let (_, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert!(ok, "{v}");
    // And changes keep fitting: no descriptor is pinned forever.
    for w in 1..=12 {
        assert_eq!(patch(port, 0, &format!(r#"{{"weight":{w}}}"#))["weight"], w);
    }
    ngx.stop();
}
