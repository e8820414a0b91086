//! End-to-end: per-server statistics (issue 7) through real nginx with 4
//! workers: exact counters under concurrent load with retries and passed-on
//! 5xx, every state in JSON and in Prometheus, one log line per health
//! transition across workers, `DELETE` resets, `?fields=`, `HEAD`,
//! counters carried over `nginx -s reload`, and requests bound by sessions
//! with the sessions learnt (`ha_sticky`).
//!
//! Every expected figure is derived from what the backends counted, what
//! the clients got and the configuration, never from a previous run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::http::{self, get};
use hab_testkit::load::{outcome, sequence, spawn_load, LoadOpts, LoadResult};
use hab_testkit::nginx::{nginx_or_skip, serial, Nginx, WORKERS};
use hab_testkit::port::{free_port, refused_addr};
use hab_testkit::proc::{children, wait_until};
use serde_json::Value;

/// Bytes of the smallest request nginx sends a backend here
/// (`GET / HTTP/1.0\r\nHost: app\r\nConnection: close\r\n\r\n`).
const MIN_REQUEST_BYTES: u64 = 40;
/// Bytes of the smallest answer of a backend (`HTTP/1.1 200 OK\r\n` and a
/// `Content-Length` line).
const MIN_RESPONSE_BYTES: u64 = 30;
/// Generous upper bound of either, per try: no header here is long.
const MAX_TRY_BYTES: u64 = 2048;

/// The upstream `app` with `upstream_body`, proxied at `/` (retries on
/// errors and 5xx), `/pass/` (retries on errors only: 5xx reach the
/// client), `/two/` (errors and 503, two tries at most), the API at
/// `/api/` (write) and `/ro/` (read only).
fn block(port: u16, upstream_body: &str) -> String {
    format!(
        "    upstream app {{
        ha_balance round_robin;
{upstream_body}
    }}

    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
        location /ro/ {{ ha_api; }}
        location / {{
            proxy_pass http://app;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
            proxy_next_upstream error timeout http_500 http_502 http_503;
        }}
        location /pass/ {{
            proxy_pass http://app;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
            proxy_next_upstream error timeout;
        }}
        location /two/ {{
            proxy_pass http://app;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
            proxy_next_upstream error timeout http_503;
            proxy_next_upstream_tries 2;
        }}
    }}
"
    )
}

/// `server ADDR PARAMS;` lines.
fn servers(lines: &[(String, &str)]) -> String {
    lines
        .iter()
        .map(|(addr, p)| format!("        server {addr} {p};\n"))
        .collect()
}

fn app(port: u16) -> Value {
    let (s, v) = api_call(port, "GET", "/api/upstreams/app", "");
    assert_eq!(s, 200, "{v}");
    v
}

fn peers(v: &Value) -> &Vec<Value> {
    v["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no peers: {v}"))
}

fn patch(port: u16, id: usize, body: &str) -> Value {
    let (s, v) = api_call(
        port,
        "PATCH",
        &format!("/api/upstreams/app/servers/{id}"),
        body,
    );
    assert_eq!(s, 200, "PATCH {id} {body}: {v}");
    v
}

/// A counter of a server object, e.g. `n(p, "requests")`,
/// `n(p, "responses/5xx")`.
fn n(p: &Value, key: &str) -> u64 {
    p.pointer(&format!("/{key}"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no counter {key} in {p}"))
}

/// The counters that only grow between resets, by server id.
fn counters(v: &Value) -> Vec<[u64; 10]> {
    peers(v)
        .iter()
        .map(|p| {
            [
                "requests",
                "responses/1xx",
                "responses/2xx",
                "responses/3xx",
                "responses/4xx",
                "responses/5xx",
                "responses/total",
                "fails",
                "sent",
                "received",
            ]
            .map(|k| n(p, k))
        })
        .collect()
}

/// Waits (at most 5 s) until nothing is in flight and two reads 50 ms apart
/// agree; returns the last read.
fn settled(port: u16) -> Value {
    let mut last = app(port);
    let ok = wait_until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(50));
        let v = app(port);
        let idle = peers(&v).iter().all(|p| p["active"] == 0);
        let same = counters(&v) == counters(&last);
        last = v;
        idle && same
    });
    assert!(ok, "statistics did not settle within 5 s: {last}");
    last
}

/// Waits (at most 15 s) until the workers of the previous configuration
/// have exited: until then they may still take a connection and count it
/// in their own zone.
fn old_workers_gone(ngx: &Nginx) {
    let ok = wait_until(Duration::from_secs(15), || {
        children(ngx.master_pid()).len() == WORKERS
    });
    assert!(
        ok,
        "old workers still running: {:?}",
        children(ngx.master_pid())
    );
}

/// Tries per address in the access log (every address of
/// `$upstream_addr`), the exact count of what nginx sent where.
fn tries_in_log(ngx: &Nginx) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in ngx.access_entries() {
        for a in e.upstream_addr {
            *m.entry(a).or_insert(0) += 1;
        }
    }
    m
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDThh:mm:ss.mmmZ` into ms since the epoch.
fn iso_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24
        || [4, 7, 10, 13, 16, 19, 23].map(|i| b[i]) != [b'-', b'-', b'T', b':', b':', b'.', b'Z']
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se) * 1000 + ms)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Asserts that `p[key]` is an ISO 8601 date within the last `within`.
fn assert_recent_date(p: &Value, key: &str, within: Duration) {
    let s = p[key]
        .as_str()
        .unwrap_or_else(|| panic!("no date {key}: {p}"));
    let t = iso_ms(s).unwrap_or_else(|| panic!("{key} {s:?} is not YYYY-MM-DDThh:mm:ss.mmmZ"));
    let now = now_ms();
    // nginx's cached time lags the system clock by at most a tick.
    assert!(
        t <= now + 1000 && t >= now - within.as_millis() as i64,
        "{key} {s} not within {within:?} before now ({now} ms): {p}"
    );
}

/// The Prometheus exposition at `/api/metrics`.
fn metrics(port: u16) -> String {
    let r = http::get(port, "/api/metrics").expect("GET /api/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    // Prometheus' text format 0.0.4 (a charset parameter may follow).
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct == "text/plain; version=0.0.4" || ct.starts_with("text/plain; version=0.0.4;"),
        "{:?}",
        r.headers
    );
    r.text()
}

/// The value of `name{upstream="app",server="addr"}`.
fn metric(text: &str, name: &str, addr: &str) -> Option<f64> {
    let head = format!("{name}{{upstream=\"app\",server=\"{addr}\"}} ");
    let mut found = text.lines().filter_map(|l| l.strip_prefix(&head)).map(|v| {
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value {v:?}"))
    });
    let v = found.next();
    assert!(found.next().is_none(), "{head} twice:\n{text}");
    v
}

/// The state in JSON and in Prometheus of server `id` agree with `want`.
fn assert_state(port: u16, id: usize, addr: &str, want: &str) {
    let number = match want {
        "up" => 1.0,
        "draining" => 2.0,
        "down" => 3.0,
        "unavail" => 4.0,
        _ => unreachable!("state {want}"),
    };
    let (_, s) = api_call(port, "GET", &format!("/api/upstreams/app/servers/{id}"), "");
    assert_eq!(s["state"], want, "server {id} in JSON: {s}");
    let text = metrics(port);
    assert_eq!(
        metric(&text, "ha_upstream_server_state", addr),
        Some(number),
        "server {id} ({addr}) should be {want} in metrics:\n{text}"
    );
}

/// Asserts the upstream's `totals` equal the sums over its servers.
fn assert_totals(v: &Value) {
    let t = &v["totals"];
    for key in [
        "requests",
        "responses/1xx",
        "responses/2xx",
        "responses/3xx",
        "responses/4xx",
        "responses/5xx",
        "responses/total",
        "sent",
        "received",
        "fails",
        "unavail",
        "active",
    ] {
        let sum: u64 = peers(v).iter().map(|p| n(p, key)).sum();
        assert_eq!(n(t, key), sum, "totals {key} vs sum over peers: {v}");
    }
}

/// Each server's `responses.total` is the sum of its classes.
fn assert_response_totals(v: &Value) {
    for p in peers(v) {
        let classes: u64 = ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .map(|c| n(p, &format!("responses/{c}")))
            .sum();
        assert_eq!(n(p, "responses/total"), classes, "{p}");
    }
}

/// `sent`/`received` of server `p` plausible for `tries` tries of which
/// `responses` were answered.
fn assert_bytes(p: &Value, tries: u64, responses: u64) {
    let (sent, received) = (n(p, "sent"), n(p, "received"));
    assert!(
        sent >= responses * MIN_REQUEST_BYTES && sent <= tries * MAX_TRY_BYTES,
        "sent {sent} for {tries} tries, {responses} answered: {p}"
    );
    assert!(
        received >= responses * MIN_RESPONSE_BYTES && received <= responses * MAX_TRY_BYTES,
        "received {received} for {responses} responses: {p}"
    );
}

fn assert_clean(r: &LoadResult, want: usize) {
    assert_eq!(r.total, want, "load ended early: {:?}", r.failures);
    assert_eq!(r.errors, 0, "transport errors: {:?}", r.failures);
}

/// Warn lines of a server becoming unavailable, and notice lines of it
/// coming back, with the duration of each spell in ms.
fn transitions(ngx: &Nginx, addr: &str) -> (usize, Vec<u64>) {
    let log = ngx.error_log();
    let name = format!("upstream server {addr} of \"app\"");
    let warns = log
        .lines()
        .filter(|l| l.contains("[warn]") && l.contains(&name) && l.contains(" unavailable for "))
        .count();
    let backs = log
        .lines()
        .filter(|l| l.contains("[notice]") && l.contains(&name) && l.contains(" is back after "))
        .map(|l| {
            let rest = &l[l.find(" is back after ").unwrap() + 15..];
            rest.split(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no duration in {l:?}"))
        })
        .collect();
    (warns, backs)
}

#[test]
fn exact_counters_under_concurrent_load_with_retries() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let ok1 = Backend::start("ok1");
    let bad = Backend::start("bad");
    let ok2 = Backend::start("ok2");
    bad.set_mode("fail500");
    let (dead, dead3) = (refused_addr(), refused_addr());
    // ids 0..=4: two good servers, one answering 500, one refusing
    // connections that is never disabled, one disabled after 3 failures.
    let max_fails = 3u64;
    let upstream = servers(&[
        (ok1.addr(), "max_fails=0"),
        (bad.addr(), "max_fails=0"),
        (ok2.addr(), "max_fails=0"),
        (dead.clone(), "max_fails=0"),
        (dead3.clone(), "max_fails=3 fail_timeout=30s"),
    ]);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &upstream), WORKERS);

    let v = app(port);
    for p in peers(&v) {
        assert_eq!(n(p, "requests"), 0, "{p}");
        assert!(
            p.get("selected").is_none() && p.get("header_time").is_none(),
            "{p}"
        );
    }

    // Phase 1: retries on errors and 500; every client gets a 200.
    let (threads, per) = (8usize, 50usize);
    let started = Instant::now();
    let r = spawn_load(port, "/", LoadOpts::new(threads, per)).join();
    assert_clean(&r, threads * per);
    assert_eq!(r.non_200, 0, "{:?}", r.failures);
    let v = settled(port);
    let p = peers(&v);
    let seen = [ok1.stats(), bad.stats(), ok2.stats()].map(|s| s.requests);
    let total = (threads * per) as u64;
    assert_eq!(seen[0] + seen[2], total, "one good answer per request");
    for (i, want) in seen.iter().enumerate() {
        assert_eq!(n(&p[i], "requests"), *want, "server {i}: {}", p[i]);
    }
    assert_eq!(
        (n(&p[0], "responses/2xx"), n(&p[0], "responses/total")),
        (seen[0], seen[0])
    );
    assert_eq!(
        (n(&p[1], "responses/5xx"), n(&p[1], "responses/total")),
        (seen[1], seen[1])
    );
    assert_eq!(
        (n(&p[2], "responses/2xx"), n(&p[2], "responses/total")),
        (seen[2], seen[2])
    );
    // Every 500 was a failed try (proxy_next_upstream http_500), so was
    // every refused connection; the good servers never failed.
    assert_eq!([0, 1, 2].map(|i| n(&p[i], "fails")), [0, seen[1], 0], "{v}");
    for i in [3, 4] {
        assert_eq!(n(&p[i], "fails"), n(&p[i], "requests"), "{}", p[i]);
        assert_eq!(n(&p[i], "responses/total"), 0, "no response: {}", p[i]);
        assert!(p[i].get("header_time").is_none(), "{}", p[i]);
    }
    // Each request made one good try plus its failed ones.
    let tries: u64 = p.iter().map(|s| n(s, "requests")).sum();
    let fails: u64 = p.iter().map(|s| n(s, "fails")).sum();
    assert_eq!(tries, total + fails, "{v}");
    // And the access log has every try, per address.
    let log = tries_in_log(&ngx);
    for s in p {
        let addr = s["server"].as_str().unwrap();
        assert_eq!(
            log.get(addr).copied().unwrap_or(0),
            n(s, "requests"),
            "{addr}"
        );
    }
    // The never-disabled refusing server was tried by round robin all along.
    assert!(n(&p[3], "requests") >= total / 10, "{}", p[3]);
    // max_fails=3: made unavailable once (within 30 s nothing clears it),
    // after at least 3 failures and at most one more per other client that
    // had picked it before the third failure came back.
    assert_eq!(n(&p[4], "unavail"), 1, "{}", p[4]);
    let f4 = n(&p[4], "fails");
    assert!(
        f4 >= max_fails && f4 < max_fails + threads as u64,
        "fails {f4}: {}",
        p[4]
    );
    assert_eq!(p[4]["state"], "unavail", "{}", p[4]);
    assert_recent_date(
        &p[4],
        "downstart",
        started.elapsed() + Duration::from_secs(1),
    );
    for s in &p[..4] {
        assert_eq!(n(s, "unavail"), 0, "{s}");
        assert!(s.get("downstart").is_none(), "{s}");
    }
    // Bytes, times and dates.
    for s in &p[..3] {
        assert_bytes(s, n(s, "requests"), n(s, "responses/total"));
        let (h, rt) = (n(s, "header_time"), n(s, "response_time"));
        // Averages of tries bounded by proxy_read_timeout.
        assert!(
            h <= rt && rt < 10_000,
            "header_time {h} response_time {rt}: {s}"
        );
    }
    for i in [3, 4] {
        assert_eq!((n(&p[i], "sent"), n(&p[i], "received")), (0, 0), "{}", p[i]);
    }
    for s in p {
        assert_recent_date(s, "selected", started.elapsed() + Duration::from_secs(1));
    }
    assert_response_totals(&v);
    assert_totals(&v);

    // Phase 2: retries on errors only: the 500s reach the clients.
    let before = counters(&v);
    let before_unavail = n(&p[4], "unavail");
    for b in [&ok1, &bad, &ok2] {
        b.reset();
    }
    let (threads, per) = (8usize, 25usize);
    let r = spawn_load(port, "/pass/", LoadOpts::new(threads, per)).join();
    assert_clean(&r, threads * per);
    let v = settled(port);
    let p = peers(&v);
    let seen = [ok1.stats(), bad.stats(), ok2.stats()].map(|s| s.requests);
    let total = (threads * per) as u64;
    assert_eq!(seen.iter().sum::<u64>(), total, "one answer per request");
    assert_eq!(
        r.statuses.get(&500).copied().unwrap_or(0) as u64,
        seen[1],
        "every 500 the backend answered reached a client: {:?}",
        r.statuses
    );
    assert_eq!(
        r.count("ok1") + r.count("ok2"),
        (seen[0] + seen[2]) as usize
    );
    let after = counters(&v);
    let delta = |i: usize, k: usize| after[i][k] - before[i][k];
    // [requests, 1xx, 2xx, 3xx, 4xx, 5xx, total, fails, sent, received]
    for (i, want) in seen.iter().enumerate() {
        assert_eq!(delta(i, 0), *want, "requests of {i}: {}", p[i]);
        assert_eq!(delta(i, 6), *want, "responses of {i}: {}", p[i]);
        assert_eq!(delta(i, 7), 0, "a passed-on 500 is no failure: {}", p[i]);
    }
    assert_eq!(delta(1, 5), seen[1], "{}", p[1]);
    assert_eq!((delta(0, 2), delta(2, 2)), (seen[0], seen[2]));
    assert_eq!(delta(3, 7), delta(3, 0), "{}", p[3]);
    let tries: u64 = (0..5).map(|i| delta(i, 0)).sum();
    let fails: u64 = (0..5).map(|i| delta(i, 7)).sum();
    assert_eq!(tries, total + fails, "{v}");
    // Still inside its 30 s: the disabled server got nothing new.
    if started.elapsed() < Duration::from_secs(25) {
        assert_eq!(delta(4, 0), 0, "{}", p[4]);
        assert_eq!(p[4]["state"], "unavail", "{}", p[4]);
    }
    assert_eq!(n(&p[4], "unavail"), before_unavail);
    assert_response_totals(&v);
    assert_totals(&v);

    // Phase 3: every backend answers 503, two tries per request
    // (`proxy_next_upstream_tries 2`). The first try always fails; the
    // second's 503 goes to the client and is no failure (nginx passes the
    // last try's answer on), unless it was the refusing server: then nginx
    // answers 502 itself.
    let before = counters(&v);
    for b in [&ok1, &bad, &ok2] {
        b.reset();
    }
    let (threads, per) = (8usize, 25usize);
    let r = spawn_load(port, "/two/?status=503", LoadOpts::new(threads, per)).join();
    assert_clean(&r, threads * per);
    let v = settled(port);
    let p = peers(&v);
    let total = (threads * per) as u64;
    let n503 = r.statuses.get(&503).copied().unwrap_or(0) as u64;
    let n502 = r.statuses.get(&502).copied().unwrap_or(0) as u64;
    assert_eq!(n503 + n502, total, "{:?}", r.statuses);
    let seen = [ok1.stats(), bad.stats(), ok2.stats()].map(|s| s.requests);
    let after = counters(&v);
    let delta = |i: usize, k: usize| after[i][k] - before[i][k];
    for (i, want) in seen.iter().enumerate() {
        assert_eq!(
            (delta(i, 0), delta(i, 5), delta(i, 6)),
            (*want, *want, *want),
            "{}",
            p[i]
        );
    }
    let tries: u64 = (0..5).map(|i| delta(i, 0)).sum();
    let fails: u64 = (0..5).map(|i| delta(i, 7)).sum();
    assert_eq!(tries, 2 * total, "{v}");
    assert_eq!(fails, 2 * total - n503, "{v}");
    assert_eq!(
        delta(3, 0),
        2 * total - seen.iter().sum::<u64>(),
        "{}",
        p[3]
    );
    assert_eq!(delta(3, 7), delta(3, 0), "{}", p[3]);
    assert_eq!(delta(3, 6), 0, "{}", p[3]);
    if started.elapsed() < Duration::from_secs(25) {
        assert_eq!(delta(4, 0), 0, "{}", p[4]);
    }
    assert_response_totals(&v);
    assert_totals(&v);
    // Over all three phases, the access log has every try, per address.
    let log = tries_in_log(&ngx);
    for s in p {
        let addr = s["server"].as_str().unwrap();
        assert_eq!(
            log.get(addr).copied().unwrap_or(0),
            n(s, "requests"),
            "{addr}"
        );
    }
    assert_eq!(ngx.crashes(), Vec::<String>::new());
    ngx.stop();
}

#[test]
fn every_state_in_json_and_prometheus() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("st", 3);
    let dead = refused_addr();
    let upstream = servers(&[
        (b[0].addr(), ""),
        (b[1].addr(), ""),
        (b[2].addr(), ""),
        (dead.clone(), "max_fails=1 fail_timeout=30s"),
    ]);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &upstream), WORKERS);
    let addrs = [b[0].addr(), b[1].addr(), b[2].addr(), dead.clone()];
    for (id, a) in addrs.iter().enumerate() {
        assert_state(port, id, a, "up");
    }

    // Unavailable: the first try on the refusing server disables it.
    let mut seq = Vec::new();
    for _ in 0..40 {
        seq.push(outcome(&get(port, "/")));
        let (_, s3) = api_call(port, "GET", "/api/upstreams/app/servers/3", "");
        if n(&s3, "requests") > 0 {
            break;
        }
    }
    assert!(seq.iter().all(|s| s.starts_with("st")), "{seq:?}");
    assert_state(port, 3, &dead, "unavail");
    let (_, s3) = api_call(port, "GET", "/api/upstreams/app/servers/3", "");
    assert_eq!((n(&s3, "fails"), n(&s3, "unavail")), (1, 1), "{s3}");
    assert_recent_date(&s3, "downstart", Duration::from_secs(10));
    let text = metrics(port);
    assert_eq!(
        metric(&text, "ha_upstream_server_unavail_total", &dead),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "ha_upstream_server_fails_total", &dead),
        Some(1.0)
    );
    // Downtime counts the spell in progress: it grows with the clock.
    let d1 = n(&s3, "downtime");
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(400));
    let (_, s3) = api_call(port, "GET", "/api/upstreams/app/servers/3", "");
    let d2 = n(&s3, "downtime");
    let wall = t1.elapsed().as_millis() as u64;
    assert!(
        d2 >= d1 + 300 && d2 <= d1 + wall + 100,
        "downtime {d1} then {d2} over {wall} ms"
    );
    assert_eq!(s3["state"], "unavail");
    assert!(s3.get("downstart").is_some(), "{s3}");
    let secs = metric(
        &metrics(port),
        "ha_upstream_server_downtime_seconds_total",
        &dead,
    )
    .expect("downtime metric");
    assert!(secs * 1000.0 >= d2 as f64 - 1.0, "{secs} s vs {d2} ms");

    // Admin down.
    let v = patch(port, 1, r#"{"down":true}"#);
    assert_eq!(
        (v["down"].as_bool(), v["state"].as_str()),
        (Some(true), Some("down"))
    );
    assert_state(port, 1, &addrs[1], "down");

    // Draining: slow requests in flight on server 2 when it is drained.
    let load = spawn_load(
        port,
        "/?delay=5000",
        LoadOpts {
            max_time: Duration::from_secs(20),
            ..LoadOpts::new(4, 1)
        },
    );
    let ok = wait_until(Duration::from_secs(10), || {
        b[0].stats().inflight + b[2].stats().inflight == 4
    });
    assert!(ok, "slow requests did not all arrive");
    assert!(
        b[2].stats().inflight > 0,
        "no request in flight on {}",
        b[2].name
    );
    let v = patch(port, 2, r#"{"drain":true}"#);
    assert_eq!(v["state"], "draining", "{v}");
    assert!(n(&v, "active") > 0, "{v}");
    assert_state(port, 2, &addrs[2], "draining");
    let text = metrics(port);
    assert_eq!(
        metric(&text, "ha_upstream_server_active", &addrs[2]),
        Some(b[2].stats().inflight as f64),
        "{text}"
    );
    // The others meanwhile.
    assert_state(port, 0, &addrs[0], "up");
    assert_state(port, 1, &addrs[1], "down");
    assert_state(port, 3, &dead, "unavail");
    let r = load.join();
    assert_eq!((r.total, r.bad()), (4, 0), "{:?}", r.failures);
    // Drained with nothing left in flight: still draining (never down)
    // until undrained.
    let ok = wait_until(Duration::from_secs(5), || {
        api_call(port, "GET", "/api/upstreams/app/servers/2", "").1["active"] == 0
    });
    assert!(ok, "server 2 still busy after its requests ended");
    assert_state(port, 2, &addrs[2], "draining");

    // Back up.
    patch(port, 1, r#"{"down":false}"#);
    patch(port, 2, r#"{"drain":false}"#);
    assert_state(port, 1, &addrs[1], "up");
    assert_state(port, 2, &addrs[2], "up");
    assert_state(port, 3, &dead, "unavail");
    ngx.stop();
}

#[test]
fn transitions_are_logged_once_across_workers() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let good = Backend::start_many("t", 2);
    let mut flaky = Backend::start("flaky");
    let fail_timeout = Duration::from_secs(1);
    let upstream = servers(&[
        (good[0].addr(), ""),
        (good[1].addr(), ""),
        (flaky.addr(), "max_fails=1 fail_timeout=1s"),
    ]);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &upstream), WORKERS);
    let addr = flaky.addr();

    let load = spawn_load(
        port,
        "/",
        LoadOpts {
            pause: Duration::from_millis(2),
            max_time: Duration::from_secs(40),
            ..LoadOpts::new(8, 1_000_000)
        },
    );
    let cycles = 2;
    for cycle in 1..=cycles {
        flaky.kill();
        // Dead for longer than fail_timeout: probes fail too.
        let ok = wait_until(Duration::from_secs(5), || {
            let (_, s) = api_call(port, "GET", "/api/upstreams/app/servers/2", "");
            n(&s, "unavail") >= cycle
        });
        assert!(ok, "cycle {cycle}: never unavailable: {}", app(port));
        std::thread::sleep(fail_timeout * 5 / 2);
        flaky.restart();
        let ok = wait_until(fail_timeout * 6, || {
            transitions(&ngx, &addr).1.len() >= cycle as usize
        });
        assert!(ok, "cycle {cycle}: never back:\n{}", ngx.error_log());
        // Some traffic on the recovered server.
        let base = flaky.stats().requests;
        let ok = wait_until(Duration::from_secs(5), || flaky.stats().requests > base + 5);
        assert!(ok, "cycle {cycle}: no traffic after recovery");
    }
    let r = load.stop();
    assert_eq!(r.bad(), 0, "{:?}", r.failures);
    assert!(r.total > 100, "too little load: {}", r.total);
    let v = settled(port);
    let s = &peers(&v)[2];
    let unavail = n(s, "unavail");
    let current = u64::from(s.get("downstart").is_some());
    let (warns, backs) = transitions(&ngx, &addr);
    assert!(unavail >= cycles, "{s}");
    assert_eq!(
        warns as u64,
        unavail,
        "one warn line per spell:\n{}",
        ngx.error_log()
    );
    assert_eq!(
        backs.len() as u64,
        unavail - current,
        "one notice per recovery:\n{}",
        ngx.error_log()
    );
    assert!(backs.len() as u64 >= cycles);
    // A spell lasts at least fail_timeout (a probe waits for it to pass),
    // and the downtime is the sum of the spells logged.
    let ft = fail_timeout.as_millis() as u64;
    assert!(backs.iter().all(|&ms| ms >= ft), "{backs:?}");
    if current == 0 {
        assert_eq!(n(s, "downtime"), backs.iter().sum::<u64>(), "{s} {backs:?}");
    }
    // The good servers never changed state.
    for id in [0, 1] {
        let (w, b) = transitions(&ngx, peers(&v)[id]["server"].as_str().unwrap());
        assert_eq!((w, b.len()), (0, 0));
    }
    // Logged by more than one worker over the test, yet once per event.
    let pids: BTreeSet<i32> = ngx.access_entries().iter().map(|e| e.pid).collect();
    assert!(pids.len() >= 2, "load served by one worker only: {pids:?}");
    assert_eq!(ngx.crashes(), Vec::<String>::new());
    ngx.stop();
}

#[test]
fn delete_resets_fields_limit_head_answers() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("z", 2);
    let dead = refused_addr();
    let upstream = servers(&[(b[0].addr(), ""), (b[1].addr(), ""), (dead, "max_fails=0")]);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &upstream), WORKERS);

    let run = |threads: usize, per: usize| {
        let r = spawn_load(port, "/", LoadOpts::new(threads, per)).join();
        assert_clean(&r, threads * per);
        assert_eq!(r.non_200, 0, "{:?}", r.failures);
        (threads * per) as u64
    };
    let check_exact = |v: &Value, total: u64| {
        let p = peers(v);
        for i in 0..2 {
            let seen = b[i].stats().requests;
            assert_eq!(n(&p[i], "requests"), seen, "{}", p[i]);
            assert_eq!(n(&p[i], "responses/2xx"), seen, "{}", p[i]);
            assert_eq!(n(&p[i], "fails"), 0, "{}", p[i]);
        }
        assert_eq!(b[0].stats().requests + b[1].stats().requests, total);
        assert_eq!(n(&p[2], "fails"), n(&p[2], "requests"), "{}", p[2]);
        assert_eq!(n(&p[2], "requests"), n(&v["totals"], "requests") - total);
        assert_totals(v);
    };
    let total = run(4, 25);
    let v = settled(port);
    check_exact(&v, total);
    assert!(n(&peers(&v)[2], "fails") > 0, "{v}");

    // Read-only location: refused, nothing changed.
    let (s, e) = api_call(port, "DELETE", "/ro/upstreams/app", "");
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (405, Some("MethodNotAllowed")),
        "{e}"
    );
    assert_eq!(counters(&app(port)), counters(&v));
    // Unknown upstream.
    let (s, _) = api_call(port, "DELETE", "/api/upstreams/nope", "");
    assert_eq!(s, 404);

    // Reset: 204 without a body, then every counter reads zero.
    let r = http::request(port, "DELETE", "/api/upstreams/app", b"").expect("DELETE");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty(), "{}", r.text());
    let v = app(port);
    for p in peers(&v) {
        for k in [
            "requests",
            "responses/total",
            "responses/2xx",
            "fails",
            "sent",
            "received",
            "unavail",
            "downtime",
        ] {
            assert_eq!(n(p, k), 0, "{k} after reset: {p}");
        }
        assert!(
            p.get("header_time").is_none() && p.get("response_time").is_none(),
            "{p}"
        );
        // The last pick is history, not a counter: kept.
        assert!(p.get("selected").is_some(), "{p}");
    }
    assert_totals(&v);
    // And they count again, exactly.
    for x in &b {
        x.reset();
    }
    let total = run(4, 10);
    let v = settled(port);
    check_exact(&v, total);

    // ?fields=: servers keep id and the keys asked for, upstreams their
    // name and peers.
    let want = ["id", "requests", "state"];
    let keys = |o: &Value| -> Vec<String> {
        let m = o.as_object().unwrap_or_else(|| panic!("{o}"));
        m.keys()
            .cloned()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect()
    };
    let (s, all) = api_call(port, "GET", "/api/upstreams?fields=requests,state", "");
    assert_eq!(s, 200, "{all}");
    let up = &all["app"];
    assert_eq!(keys(up), ["name", "peers"], "{up}");
    for p in peers(up) {
        assert_eq!(keys(p), want, "{p}");
    }
    let (_, one) = api_call(port, "GET", "/api/upstreams/app?fields=requests,state", "");
    assert_eq!(one, *up);
    let (_, s0) = api_call(
        port,
        "GET",
        "/api/upstreams/app/servers/0?fields=requests,state",
        "",
    );
    assert_eq!(keys(&s0), want, "{s0}");
    assert_eq!(n(&s0, "requests"), b[0].stats().requests);
    let (_, t) = api_call(port, "GET", "/api/upstreams/app?fields=totals", "");
    assert_eq!(keys(&t), ["name", "peers", "totals"], "{t}");
    assert_eq!(n(&t["totals"], "requests"), n(&v["totals"], "requests"));

    // HEAD: the GET's status and headers, no body.
    for path in [
        "/api/upstreams",
        "/api/upstreams/app",
        "/api/upstreams/app/servers/1",
        "/api/metrics",
        "/ro/upstreams/app?fields=requests",
    ] {
        let g = http::request(port, "GET", path, b"").expect("GET");
        let h = http::request(port, "HEAD", path, b"").expect("HEAD");
        assert_eq!((h.status, g.status), (200, 200), "{path}");
        assert!(h.body.is_empty(), "HEAD {path}: {}", h.text());
        assert_eq!(h.header("content-type"), g.header("content-type"), "{path}");
    }
    let (s, _) = api_call(port, "HEAD", "/api/upstreams/nope", "");
    assert_eq!(s, 404);
    ngx.stop();
}

#[test]
fn counters_survive_reload() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("rl", 3);
    let dead = refused_addr();
    let two = servers(&[
        (b[0].addr(), ""),
        (b[1].addr(), ""),
        (dead.clone(), "max_fails=1 fail_timeout=30s"),
    ]);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &two), WORKERS);

    let run = |threads: usize, per: usize| {
        let r = spawn_load(port, "/", LoadOpts::new(threads, per)).join();
        assert_clean(&r, threads * per);
        assert_eq!(r.non_200, 0, "{:?}", r.failures);
    };
    let exact = |v: &Value, ids: &[(usize, usize)]| {
        for &(id, backend) in ids {
            let p = &peers(v)[id];
            let seen = b[backend].stats().requests;
            assert_eq!(
                (n(p, "requests"), n(p, "responses/2xx")),
                (seen, seen),
                "{p}"
            );
        }
    };
    run(4, 25);
    let v = settled(port);
    exact(&v, &[(0, 0), (1, 1)]);
    let d = &peers(&v)[2];
    assert_eq!((n(d, "unavail"), n(d, "fails")), (1, 1), "{d}");
    let before = counters(&v);

    // Unchanged configuration: the same zone, the same figures.
    ngx.reload();
    old_workers_gone(&ngx);
    let v = settled(port);
    assert_eq!(counters(&v), before, "after reload: {v}");
    let d = &peers(&v)[2];
    assert_eq!(n(d, "unavail"), 1, "{d}");
    assert!(d.get("selected").is_some(), "{d}");
    run(4, 10);
    let v = settled(port);
    exact(&v, &[(0, 0), (1, 1)]);

    // A server added: the servers that stayed keep their counts (by
    // address, though their ids moved), the new one starts at zero.
    let before = counters(&v);
    let before_dead = peers(&v)[2].clone();
    let three = servers(&[
        (b[2].addr(), ""),
        (b[0].addr(), ""),
        (b[1].addr(), ""),
        (dead.clone(), "max_fails=1 fail_timeout=30s"),
    ]);
    ngx.reload_with(&block(port, &three));
    // Old workers may still take a connection or two while they shut down
    // (and answer from the old configuration).
    old_workers_gone(&ngx);
    assert_eq!(peers(&app(port)).len(), 4);
    let v = settled(port);
    let p = peers(&v);
    let addrs: Vec<&str> = p.iter().map(|s| s["server"].as_str().unwrap()).collect();
    assert_eq!(addrs, [b[2].addr(), b[0].addr(), b[1].addr(), dead.clone()]);
    let after = counters(&v);
    assert_eq!(after[1], before[0], "{v}");
    assert_eq!(after[2], before[1], "{v}");
    assert_eq!(after[3], before[2], "{v}");
    assert_eq!(after[0], [0; 10], "{v}");
    assert_eq!(n(&p[3], "unavail"), n(&before_dead, "unavail"), "{}", p[3]);
    assert!(
        n(&p[3], "downtime") >= n(&before_dead, "downtime"),
        "{}",
        p[3]
    );
    assert_totals(&v);
    // And they keep counting exactly on top.
    run(4, 15);
    let v = settled(port);
    exact(&v, &[(0, 2), (1, 0), (2, 1)]);
    assert_totals(&v);
    assert_eq!(ngx.crashes(), Vec::<String>::new());
    ngx.stop();
}

/// `downstart` only while the state is `unavail`: once `fail_timeout` has
/// passed without a probe the server reads `up`, with no `downstart`.
#[test]
fn downstart_only_while_unavailable() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start("w");
    let dead = refused_addr();
    let fail_timeout = Duration::from_secs(1);
    let upstream = servers(&[
        (b.addr(), ""),
        (dead.clone(), "max_fails=1 fail_timeout=1s"),
    ]);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &upstream), WORKERS);
    let ok = wait_until(Duration::from_secs(5), || {
        let _ = get(port, "/");
        n(&peers(&app(port))[1], "requests") > 0
    });
    assert!(ok, "the refusing server was never tried");
    let s = peers(&app(port))[1].clone();
    assert_eq!(s["state"], "unavail", "{s}");
    assert!(s.get("downstart").is_some(), "{s}");
    // No traffic: the window expires and the server reads up again.
    std::thread::sleep(fail_timeout + Duration::from_millis(300));
    let s = peers(&app(port))[1].clone();
    assert_eq!(s["state"], "up", "{s}");
    assert!(s.get("downstart").is_none(), "downstart while up: {s}");
    ngx.stop();
}

/// Dates do not move at idle: every worker converts the monotonic clock
/// with the one offset the master took.
#[test]
fn dates_stable_at_idle() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("i", 2);
    let upstream = servers(&[(b[0].addr(), ""), (b[1].addr(), "")]);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &upstream), WORKERS);
    sequence(port, "/", 4);
    let first = app(port)["peers"][0]["selected"].clone();
    assert!(first.is_string(), "{first}");
    for k in 0..50 {
        std::thread::sleep(Duration::from_millis(7));
        let again = app(port)["peers"][0]["selected"].clone();
        assert_eq!(again, first, "read {k}: the last pick moved at idle");
    }
    ngx.stop();
}

/// A reload that changes the upstream carries the old zone's counters into
/// the fresh one once, in the master. Tries in flight then end in old
/// workers, which count them in the old zone: the carry leaves them out
/// (documented), so the new zone's figures stay consistent, `requests` =
/// `responses.total` + `fails` at idle, and lack exactly those tries.
#[test]
fn tries_in_flight_over_a_changed_reload_stay_consistent() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("q", 3);
    let two = servers(&[(b[0].addr(), ""), (b[1].addr(), "")]);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &two), WORKERS);
    let load = spawn_load(port, "/?delay=1500", LoadOpts::new(2, 1));
    let ok = wait_until(Duration::from_secs(5), || {
        b[0].stats().inflight + b[1].stats().inflight == 2
    });
    assert!(ok, "slow requests did not arrive");
    ngx.reload_with(&block(
        port,
        &servers(&[(b[0].addr(), ""), (b[1].addr(), ""), (b[2].addr(), "")]),
    ));
    let r = load.join();
    assert_eq!(r.statuses.get(&200), Some(&2), "{:?}", r.failures);
    let ok = wait_until(Duration::from_secs(10), || peers(&app(port)).len() == 3);
    assert!(ok, "new configuration not serving");
    let v = settled(port);
    let mut missing = 0;
    for (i, p) in peers(&v).iter().enumerate().take(2) {
        let seen = b[i].stats().requests;
        let (req, ok) = (n(p, "requests"), n(p, "responses/2xx"));
        assert_eq!((req, n(p, "fails")), (ok, 0), "server {i}: {p}");
        assert!(req <= seen, "server {i}: {p}");
        missing += seen - req;
    }
    assert_eq!(
        missing, 2,
        "exactly the two tries in flight over the reload are left out"
    );
    ngx.stop();
}

/// Sessions (`ha_sticky learn`): `bound` counts, per server and in the
/// totals, exactly the requests a learnt session sent there, in JSON and
/// in Prometheus; the learn zone's figures (`sessions`,
/// `ha_upstream_sessions*`) count the sessions the servers started.
#[test]
fn bound_requests_and_learnt_sessions_in_json_and_prometheus() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("k", 3);
    let port = free_port();
    let lines: Vec<(String, &str)> = b.iter().map(|x| (x.addr(), "")).collect();
    let body = format!(
        "        ha_sticky learn create=$upstream_cookie_sid lookup=$cookie_sid \
         zone=learnt:1m timeout=1h;\n{}",
        servers(&lines)
    );
    let mut ngx = Nginx::start(&block(port, &body), WORKERS);
    // Backends answer their name: k1, k2, k3.
    let addr_of: BTreeMap<String, String> = b
        .iter()
        .enumerate()
        .map(|(i, x)| (format!("k{}", i + 1), x.addr()))
        .collect();
    // 6 sessions started (balanced), 5 requests naming each (bound), 4
    // without a session (balanced).
    let mut want_bound: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..6 {
        let r = get(port, &format!("/?setsid=s{k}")).expect("GET setsid");
        assert_eq!(r.status, 200, "{}", r.text());
        let owner = addr_of[&r.body_trimmed()].clone();
        let cookie = format!("sid=s{k}");
        for _ in 0..5 {
            let r = http::get_with(port, "/", &[("Cookie", cookie.as_str())]).expect("GET bound");
            assert_eq!(r.status, 200);
            assert_eq!(addr_of[&r.body_trimmed()], owner, "session s{k}");
            *want_bound.entry(owner.clone()).or_default() += 1;
        }
    }
    for _ in 0..4 {
        assert_eq!(get(port, "/").expect("GET").status, 200);
    }
    let v = settled(port);
    for p in peers(&v) {
        let addr = p["server"].as_str().unwrap();
        let bound = want_bound.get(addr).copied().unwrap_or(0);
        assert_eq!(n(p, "bound"), bound, "{p}");
        assert!(n(p, "requests") >= bound, "{p}");
    }
    assert_eq!(n(&v, "totals/bound"), 30, "{v}");
    assert_eq!(n(&v, "totals/requests"), 40, "{v}");
    let s = &v["sessions"];
    assert_eq!(s["zone"], "learnt", "{v}");
    assert_eq!((n(s, "entries"), n(s, "created")), (6, 6), "{s}");
    assert_eq!((n(s, "evicted"), n(s, "expired")), (0, 0), "{s}");
    assert!(n(s, "capacity") >= 64, "{s}");

    // The same in Prometheus.
    let text = metrics(port);
    for x in &b {
        let bound = want_bound.get(&x.addr()).copied().unwrap_or(0);
        assert_eq!(
            metric(&text, "ha_upstream_server_bound_requests_total", &x.addr()),
            Some(bound as f64),
            "{text}"
        );
    }
    let labels = "{upstream=\"app\",zone=\"learnt\"}";
    for (name, value) in [
        ("ha_upstream_sessions", 6),
        ("ha_upstream_sessions_capacity", n(s, "capacity")),
        ("ha_upstream_sessions_created_total", 6),
        ("ha_upstream_sessions_evicted_total", 0),
        ("ha_upstream_sessions_expired_total", 0),
    ] {
        let line = format!("{name}{labels} {value}\n");
        assert!(text.contains(&line), "{line}{text}");
    }
    ngx.stop();
}
