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
//! closed; TLS checks keep theirs too. The check request: `method=`, `ha_check_header` and
//! `ha_check_body`, byte for byte as a recording server received them,
//! and their `nginx -t` errors.
//!
//! Time bounds come from the configuration (interval, timeout, fails)
//! plus [`SLACK`]; every loop is bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::api::{api_call, api_peers};
use hab_testkit::backend::process::Backend;
use hab_testkit::backend::StatsSnapshot;
use hab_testkit::nginx::{checked_upstreams, nginx_or_skip, serial, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;

/// Polling, and nginx's timers on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Checks every 200 ms: twenty and more in 5 s.
const CHECK: &str = "ha_check interval=200ms timeout=150ms fails=2 passes=1 uri=/healthz";

/// Upstreams `(name, ha_check line, backends)`, the API at `/api/`.
fn block(port: u16, upstreams: &[(&str, String, &[&Backend])]) -> String {
    let upstreams: Vec<(&str, String, Vec<String>)> = upstreams
        .iter()
        .map(|(name, check, backends)| {
            (
                *name,
                check.clone(),
                backends.iter().map(|b| b.addr().to_string()).collect(),
            )
        })
        .collect();
    checked_upstreams(port, true, &upstreams)
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

/// A server on 127.0.0.1 that records the exact bytes of each request
/// (the head, and the body its Content-Length announces) and answers
/// `200 healthy` (keep-alive; no body to a HEAD); counts connections.
struct Recorder {
    port: u16,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    conns: Arc<AtomicU64>,
}

impl Recorder {
    fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicU64::new(0));
        let (reqs, n) = (Arc::clone(&requests), Arc::clone(&conns));
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while Instant::now() < until {
                match l.accept() {
                    Ok((c, _)) => {
                        n.fetch_add(1, Ordering::Relaxed);
                        let reqs = Arc::clone(&reqs);
                        thread::spawn(move || record(c, &reqs));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Recorder {
            port,
            requests,
            conns,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for `n` requests (at most `limit`); all of them.
    fn wait(&self, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        wait_until(limit, || self.requests.lock().unwrap().len() >= n);
        let got = self.requests.lock().unwrap().clone();
        assert!(got.len() >= n, "{} requests in {limit:?}", got.len());
        got
    }
}

fn record(mut c: TcpStream, requests: &Mutex<Vec<Vec<u8>>>) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut got: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    // At most 1,000 requests on one connection.
    for _ in 0..1000 {
        let end = loop {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match c.read(&mut buf) {
                Ok(n) if n > 0 && got.len() < 65536 => got.extend_from_slice(&buf[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while got.len() < end + length.min(65536) {
            match c.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let request: Vec<u8> = got.drain(..end + length).collect();
        requests.lock().unwrap().push(request);
        let answer: &[u8] = if head.starts_with("head ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nhealthy\n"
        };
        if c.write_all(answer).is_err() {
            return;
        }
    }
}

#[test]
fn check_requests_carry_the_configured_method_headers_and_body() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let post = Recorder::start();
    let head = Recorder::start();
    let closing = Recorder::start();
    let port = free_port();
    let check = "ha_check interval=200ms timeout=150ms fails=2 passes=1";
    let http = format!(
        "    upstream post {{
        ha_balance round_robin;
        {check} uri=/status?full=1 method=POST;
        ha_check_header \"X-Check:   yes  \";
        ha_check_header \"Content-Type: application/json\";
        ha_check_body \"{{\\\"ping\\\": true}}\\n\";
        server {};
    }}
    upstream head {{
        ha_balance round_robin;
        ha_check_header \"Host: health.example\";
        ha_check_header \"User-Agent: probe/1\";
        {check} method=HEAD;
        server {};
    }}
    upstream closing {{
        ha_balance round_robin;
        {check} uri=/ready method=OPTIONS keepalive_time=0;
        server {};
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
    }}
",
        post.addr(),
        head.addr(),
        closing.addr()
    );
    let ngx = Nginx::start(&http, WORKERS);
    let want = format!(
        "POST /status?full=1 HTTP/1.1\r\nHost: {}\r\nUser-Agent: ha-balancer health check\r\n\
         X-Check: yes\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n\
         {{\"ping\": true}}\n",
        post.addr()
    );
    let got = post.wait(10, twenty());
    for r in &got {
        assert_eq!(String::from_utf8_lossy(r), want);
    }
    let want = "HEAD / HTTP/1.1\r\nHost: health.example\r\nUser-Agent: probe/1\r\n\r\n";
    for r in &head.wait(10, twenty()) {
        assert_eq!(String::from_utf8_lossy(r), want);
    }
    let want =
        "OPTIONS /ready HTTP/1.1\r\nHost: CLOSING\r\nUser-Agent: ha-balancer health check\r\n\
                Connection: close\r\n\r\n"
            .replace("CLOSING", &closing.addr());
    let got = closing.wait(10, twenty());
    for r in &got {
        assert_eq!(String::from_utf8_lossy(r), want);
    }
    // A POST with a body and a HEAD (its answer announces a body it does
    // not carry) keep their connection; keepalive_time=0 does not.
    assert_eq!(post.conns.load(Ordering::Relaxed), 1);
    assert_eq!(head.conns.load(Ordering::Relaxed), 1);
    assert!(closing.conns.load(Ordering::Relaxed) + 1 >= got.len() as u64);
    for (u, r) in [("post", &post), ("head", &head), ("closing", &closing)] {
        assert_eq!(state(port, u, &r.addr()), "up");
    }
    assert_eq!(failed_checks(&ngx), Vec::<String>::new());
    assert!(ngx.crashes().is_empty());
}

#[test]
fn bad_check_requests_are_refused_by_nginx_t() {
    if !nginx_or_skip() {
        return;
    }
    let conf = |lines: &str| {
        format!(
            "    upstream up {{
        ha_balance round_robin;
{lines}
        server 127.0.0.1:1;
    }}
    server {{
        listen 127.0.0.1:1;
        location / {{ proxy_pass http://up; }}
    }}
"
        )
    };
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "ha_check method=;",
            "ha_check",
            &["invalid parameter \"method=\""],
        ),
        (
            "ha_check method=G(T;",
            "ha_check",
            &["invalid parameter \"method=G(T\""],
        ),
        (
            "ha_check type=tcp method=POST;",
            "ha_check",
            &["need type=http"],
        ),
        (
            "ha_check method=HEAD body=ok;",
            "ha_check",
            &["\"body=\" cannot match the answer to \"method=HEAD\""],
        ),
        (
            "ha_check;\n        ha_check_header \"NoColon\";",
            "ha_check_header",
            &["invalid header \"NoColon\""],
        ),
        (
            "ha_check;\n        ha_check_header \"Bad Name: x\";",
            "ha_check_header",
            &["invalid header \"Bad Name: x\""],
        ),
        (
            "ha_check;\n        ha_check_header \"X-A: one\\ntwo\";",
            "ha_check_header",
            &["invalid header \"X-A\"", "control character"],
        ),
        (
            "ha_check;\n        ha_check_header \"Content-Length: 3\";",
            "ha_check_header",
            &["header \"Content-Length\" of a check is set by the module"],
        ),
        (
            "ha_check;\n        ha_check_header \"connection: close\";",
            "ha_check_header",
            &["header \"connection\" of a check is set by the module"],
        ),
        (
            "ha_check;\n        ha_check_header \"Host: a\";\n        ha_check_header \"host: b\";",
            "host: b",
            &["has a second \"Host\""],
        ),
        (
            "ha_check;\n        ha_check_body \"a\";\n        ha_check_body \"b\";",
            "ha_check_body \"b\"",
            &["\"ha_check_body\" directive is duplicate"],
        ),
        (
            "ha_check type=tcp;\n        ha_check_body \"a\";",
            "upstream up {",
            &["ha_check_header and ha_check_body need \"ha_check\" with type=http"],
        ),
        (
            "ha_check_header \"X-A: b\";",
            "upstream up {",
            &["ha_check_header and ha_check_body need \"ha_check\" with type=http"],
        ),
        (
            "ha_check host=a.example;\n        ha_check_header \"Host: b.example\";",
            "upstream up {",
            &["host= and ha_check_header \"Host: ...\" both set the Host header"],
        ),
        (
            "ha_check keepalive_time=x;",
            "ha_check",
            &["\"keepalive_time=x\""],
        ),
        (
            "ha_check type=tcp keepalive_time=5s;",
            "ha_check",
            &["need type=http"],
        ),
    ];
    for (lines, needle, mentions) in cases {
        Nginx::check_detailed(&conf(lines)).assert_emerg(needle, mentions);
    }
    let c = Nginx::check_detailed(&conf(
        "ha_check method=PUT keepalive_time=0;\n        ha_check_header \"X-A: b\";\n        \
         ha_check_body \"\";",
    ));
    assert!(c.ok, "{}", c.stderr);
}

/// The API's `health_checks` object of `addr` in `upstream`.
fn checks_of(port: u16, upstream: &str, addr: &str) -> serde_json::Value {
    api_peers(port, upstream)
        .into_iter()
        .find(|p| p["server"] == addr)
        .map(|p| p["health_checks"].clone())
        .unwrap_or_else(|| panic!("{addr} not in {upstream}"))
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn the_last_checks_result_reason_and_duration_are_shown() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let ok = Backend::start("ok");
    let failing = Backend::start("failing");
    failing.set_health("fail");
    let hanging = Backend::start("hanging");
    hanging.set_health("hang");
    let refused = hab_testkit::port::refused_addr();
    let port = free_port();
    let start = wall_ms();
    let http = format!(
        "    upstream app {{
        ha_balance round_robin;
        ha_check interval=300ms timeout=200ms fails=1 passes=1 uri=/healthz;
        server {};
        server {};
        server {};
        server {refused};
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
    }}
",
        ok.addr(),
        failing.addr(),
        hanging.addr()
    );
    let ngx = Nginx::start(&http, WORKERS);
    // (server, result, reason, duration at least, at most): a timeout
    // lasts the timeout (200 ms) and less than the timeout and a tick.
    let want: [(String, &str, &str, u64, u64); 4] = [
        (ok.addr(), "passed", "passed", 0, 150),
        (failing.addr(), "failed", "status 503", 0, 150),
        (hanging.addr(), "failed", "timeout", 200, 600),
        (refused.clone(), "failed", "connection refused", 0, 150),
    ];
    for (addr, result, reason, lo, hi) in &want {
        let mut c = serde_json::Value::Null;
        let seen = wait_until(twenty(), || {
            c = checks_of(port, "app", addr);
            c["checks"].as_u64().unwrap_or(0) >= 2 && c["last_reason"] == *reason
        });
        assert!(seen, "{addr}: want {reason:?}: {c}");
        assert_eq!(c["last_result"], *result, "{addr}: {c}");
        assert_eq!(c["last_passed"], *result == "passed", "{addr}: {c}");
        let d = c["last_duration"].as_u64().expect("last_duration");
        assert!((*lo..=*hi).contains(&d), "{addr}: duration {d} ms: {c}");
        let at = c["last_check"].as_u64().expect("last_check");
        assert!(
            at >= start && at <= wall_ms() + 1000,
            "{addr}: last_check {at}, test started {start}: {c}"
        );
    }
    // Prometheus: the last duration, in seconds.
    let m = hab_testkit::http::get(port, "/api/metrics")
        .expect("metrics")
        .text();
    let line = |addr: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("ha_upstream_server_health_checks_last_duration_seconds{")
                    && l.contains(&format!("server=\"{addr}\""))
            })
            .unwrap_or_else(|| panic!("no last_duration_seconds for {addr}:\n{m}"))
            .to_owned()
    };
    let secs: f64 = line(&hanging.addr())
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!((0.2..=0.6).contains(&secs), "{secs} s");
    assert!(m.contains("# TYPE ha_upstream_server_health_checks_last_duration_seconds gauge"));
    line(&ok.addr());
    // A server that recovers: passed again, its reason with it.
    failing.set_health("ok");
    let mut c = serde_json::Value::Null;
    assert!(
        wait_until(twenty(), || {
            c = checks_of(port, "app", &failing.addr());
            c["last_result"] == "passed"
        }),
        "{c}"
    );
    assert_eq!(c["last_reason"], "passed");
    assert!(ngx.crashes().is_empty());
}

#[test]
fn tls_checks_keep_their_connection() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let dir = hab_testkit::nginx::scratch_dir();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (cert, key) = hab_testkit::nginx::self_signed_cert(&dir);
    for f in [&cert, &key] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    // A TLS server in the same nginx logs each check with its connection
    // (worker pid and number) and the request's number on it.
    let (port, tls) = (free_port(), free_port());
    let log = dir.join("checks.log");
    let http = format!(
        "    log_format checks \"$pid-$connection $connection_requests\";
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {};
        ssl_certificate_key {};
        access_log {} checks;
        location = /healthz {{ return 200 \"healthy\\n\"; }}
    }}
    upstream app {{
        ha_balance round_robin;
        {CHECK} tls host=localhost;
        server 127.0.0.1:{tls};
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
    }}
",
        cert.display(),
        key.display(),
        log.display()
    );
    let ngx = Nginx::start(&http, WORKERS);
    let lines = || -> Vec<(String, u64)> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (c, n) = l.split_once(' ')?;
                Some((c.to_owned(), n.parse().ok()?))
            })
            .collect()
    };
    assert!(
        wait_until(twenty(), || lines().len() >= 20),
        "{} checks logged",
        lines().len()
    );
    let got = lines();
    let conns: std::collections::BTreeSet<&String> = got.iter().map(|(c, _)| c).collect();
    assert_eq!(conns.len(), 1, "TLS check connections: {got:?}");
    assert_eq!(got.iter().map(|(_, n)| *n).max(), Some(got.len() as u64));
    assert_eq!(state(port, "app", &format!("127.0.0.1:{tls}")), "up");
    assert_eq!(failed_checks(&ngx), Vec::<String>::new());
    assert!(ngx.crashes().is_empty());
}
