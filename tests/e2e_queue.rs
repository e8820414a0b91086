//! End-to-end: `ha_queue`, one request queue for all workers
//!
//! Real nginx (4 workers) with the module, real backends on 127.0.0.1.
//! A request that finds every server at `max_conns` waits in the queue
//! in the upstream's shared zone instead of getting a 502, and a slot
//! freed in any worker serves the oldest waiter, whichever worker holds
//! it (docs/queue-design.md).

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::http;
use hab_testkit::load::load;
use hab_testkit::nginx::{
    nginx_or_skip, scratch_dir, self_signed_cert, serial, server_lines, Nginx, WORKERS,
};
use hab_testkit::port::free_port;

#[test]
fn fifty_clients_wait_for_two_connections() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:40", "max_conns=2", "100 timeout=30s");

    let t0 = Instant::now();
    let res = load(port, "/", 50, 1);
    let took = t0.elapsed();
    assert_eq!(res.bad(), 0, "client errors: {:?}", res.failures);
    assert_eq!(res.count("q"), 50, "answers: {:?}", res.by_body);
    let st = b.stats();
    assert!(
        st.max_inflight <= 2,
        "the backend saw {} at once (max_conns=2): {st:?}",
        st.max_inflight
    );
    assert_eq!(st.requests, 50, "{st:?}");
    // 50 requests of 40 ms, two at a time: at least 25 rounds; a freed
    // slot wakes the next waiter at once (the watchdog's 1 s tick alone
    // would take 25 s).
    assert!(
        took >= Duration::from_millis(25 * 40),
        "served in {took:?}: faster than max_conns=2 allows"
    );
    assert!(took < Duration::from_secs(5), "served in {took:?}");
    let log = ngx.error_log();
    assert!(!log.contains("[alert]"), "{log}");
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
    ngx.stop();
}

/// One client's request: when it was sent, when its answer came, what it
/// was (status, or the transport error).
#[derive(Debug, Clone)]
struct Timed {
    sent: Instant,
    done: Instant,
    status: Result<u16, String>,
}

impl Timed {
    fn took(&self) -> Duration {
        self.done - self.sent
    }
}

/// `GET path` with `Connection: close`, timed from just before connecting.
fn timed_get(port: u16, path: &str) -> Timed {
    let sent = Instant::now();
    let status = http::get(port, path)
        .map(|r| r.status)
        .map_err(|e| e.to_string());
    Timed {
        sent,
        done: Instant::now(),
        status,
    }
}

/// `n` clients at once (threads released together), each one request.
fn burst(port: u16, path: &str, n: usize) -> Vec<Timed> {
    let gate = Arc::new(Barrier::new(n));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let gate = Arc::clone(&gate);
            let path = path.to_owned();
            thread::spawn(move || {
                gate.wait();
                timed_get(port, &path)
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// An upstream of `backends` (with `params`) and `ha_queue queue`.
fn queued_upstream(backends: &[Backend], params: &[&str], queue: &str) -> String {
    format!(
        "        ha_balance round_robin;\n{}        ha_queue {queue};\n",
        server_lines(backends, params)
    )
}

/// One backend (`mode`) as the only server (`params`) of upstream `up`
/// with `ha_queue queue`, behind nginx (4 workers, the API at `/api/`).
fn one_server(mode: &str, params: &str, queue: &str) -> (Backend, u16, Nginx) {
    let b = Backend::start("q");
    b.set_mode(mode);
    let port = free_port();
    let upstream = queued_upstream(std::slice::from_ref(&b), &[params], queue);
    let ngx = Nginx::start(&queue_conf(port, &upstream, ""), WORKERS);
    (b, port, ngx)
}

/// Waits (bounded) until the backend has `n` requests in flight.
fn wait_inflight(b: &Backend, n: u64) {
    let t0 = Instant::now();
    while b.stats().inflight < n {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the backend never had {n} in flight: {:?}",
            b.stats()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_full_queue_refuses_exactly_the_excess_at_once() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:1500", "max_conns=1", "5");

    // One holds the server for 1.5 s; 5 wait; the other 14 are refused.
    let res = burst(port, "/", 20);
    let refused: Vec<&Timed> = res.iter().filter(|t| t.status == Ok(502)).collect();
    let served = res.iter().filter(|t| t.status == Ok(200)).count();
    assert_eq!(refused.len(), 14, "{res:?}");
    assert_eq!(served, 6, "{res:?}");
    // "At once": long before the holder is done.
    for t in &refused {
        assert!(
            t.took() < Duration::from_millis(1000),
            "a 502 took {:?}",
            t.took()
        );
    }
    let log = ngx.error_log();
    assert_eq!(
        log.matches("ha_queue is full (5 waiting)").count(),
        14,
        "one line per refused request: {log}"
    );
    assert!(!log.contains("no live upstreams"), "{log}");
    assert!(b.stats().max_inflight <= 1, "{:?}", b.stats());
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
    ngx.stop();
}

#[test]
fn a_waiter_fails_at_its_timeout_not_before() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:3000", "max_conns=1", "10 timeout=1s");

    let holder = thread::spawn(move || timed_get(port, "/"));
    wait_inflight(&b, 1);
    let res = burst(port, "/", 3);
    // nginx fires a timer once its key is at most the cached time of the
    // loop: the deadline is 1000 ms after the cached time at the enqueue,
    // which trails the client's clock by under 1 ms on an idle machine;
    // the upper margin is the event loop's latency under a loaded CI
    // machine (both cores busy: measured well under 100 ms).
    for t in &res {
        assert_eq!(t.status, Ok(502), "{res:?}");
        assert!(
            t.took() >= Duration::from_millis(995),
            "failed before the timeout: {:?}",
            t.took()
        );
        assert!(
            t.took() <= Duration::from_millis(1300),
            "failed late: {:?}",
            t.took()
        );
    }
    let log = ngx.error_log();
    assert_eq!(
        log.matches("no server within the ha_queue timeout of 1000 ms")
            .count(),
        3,
        "{log}"
    );
    assert_eq!(holder.join().unwrap().status, Ok(200));
    // Nothing left waiting: a request now is served at once.
    b.set_mode("ok");
    let t = timed_get(port, "/");
    assert_eq!(t.status, Ok(200));
    assert!(t.took() < Duration::from_millis(500), "{:?}", t.took());
    ngx.stop();
}

#[test]
fn waiters_are_served_in_arrival_order_across_workers() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:20", "max_conns=1", "100");

    // 30 clients 5 ms apart, served one at a time (20 ms each): the
    // completion order is the service order.
    let hs: Vec<_> = (0..30)
        .map(|i| {
            thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 5 }));
            thread::spawn(move || timed_get(port, "/"))
        })
        .collect();
    let res: Vec<Timed> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(res.iter().all(|t| t.status == Ok(200)), "{res:?}");
    // Tolerance (README): tickets follow arrival within the workers'
    // event-loop latency; two requests sent 30 ms or more apart are
    // served in order, on any machine.
    let mut inversions = 0;
    for (i, a) in res.iter().enumerate() {
        for c in &res[i + 1..] {
            let (first, second) = if a.sent <= c.sent { (a, c) } else { (c, a) };
            if second.sent - first.sent >= Duration::from_millis(30) {
                assert!(
                    first.done < second.done,
                    "a request sent {:?} later was served first",
                    second.sent - first.sent
                );
            } else if first.done > second.done {
                inversions += 1;
            }
        }
    }
    eprintln!("close pairs served out of sending order: {inversions}");
    assert!(b.stats().max_inflight <= 1, "{:?}", b.stats());
    ngx.stop();
}

#[test]
fn a_client_that_goes_away_leaves_the_queue() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:1000", "max_conns=1", "10");

    let holder = thread::spawn(move || timed_get(port, "/"));
    wait_inflight(&b, 1);
    // 3 clients send and hang up while they wait; 2 wait to the end.
    let mut quitters = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(http::local(port)).unwrap();
        s.write_all(b"GET /?quitter=1 HTTP/1.1\r\nHost: q\r\nConnection: close\r\n\r\n")
            .unwrap();
        quitters.push(s);
    }
    let stayers: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || timed_get(port, "/")))
        .collect();
    thread::sleep(Duration::from_millis(200));
    drop(quitters);
    assert_eq!(holder.join().unwrap().status, Ok(200));
    for h in stayers {
        assert_eq!(h.join().unwrap().status, Ok(200));
    }
    // The backend saw the holder and the 2 that stayed, never a quitter.
    let st = b.stats();
    assert_eq!(st.requests, 3, "{st:?}");
    let entries = ngx.access_log();
    assert_eq!(
        entries
            .lines()
            .filter(|l| l.contains("quitter=1") && l.contains(" 499 "))
            .count(),
        3,
        "{entries}"
    );
    ngx.stop();
}

#[test]
fn retries_and_max_conns_stay_exact_with_a_queue() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let mut b = Backend::start_many("r", 3);
    b[0].set_mode("close");
    b[1].set_mode("delay:30");
    // r3 refuses connections: its port is closed.
    b[2].kill();
    let port = free_port();
    let upstream = queued_upstream(
        &b,
        &[
            "max_conns=2 max_fails=0",
            "max_conns=2",
            "max_conns=2 max_fails=0",
        ],
        "100",
    );
    let mut ngx = Nginx::start(&queue_conf(port, &upstream, ""), WORKERS);

    let res = burst(port, "/", 30);
    assert!(res.iter().all(|t| t.status == Ok(200)), "{res:?}");
    for s in [b[0].stats(), b[1].stats()] {
        assert!(s.max_inflight <= 2, "a server over max_conns=2: {s:?}");
    }
    assert_eq!(b[1].stats().requests, 30, "{:?}", b[1].stats());
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
    ngx.stop();
}

/// Starts `n` waiters behind a holder (a `max_conns=1` server answering
/// in `delay_ms`), returns their threads once the holder is in flight.
fn waiters(port: u16, b: &Backend, n: usize) -> Vec<thread::JoinHandle<Timed>> {
    let mut hs = vec![thread::spawn(move || timed_get(port, "/"))];
    wait_inflight(b, 1);
    hs.extend((0..n).map(|_| thread::spawn(move || timed_get(port, "/"))));
    thread::sleep(Duration::from_millis(250));
    hs
}

/// After the storm: requests are served at once, one after the other (no
/// dead ticket blocks the queue, no slot is held).
fn served_at_once(port: u16, n: usize) {
    for _ in 0..n {
        let t = timed_get(port, "/");
        assert_eq!(t.status, Ok(200), "{t:?}");
        assert!(t.took() < Duration::from_millis(800), "{:?}", t.took());
    }
}

/// At idle nothing is left counted: nobody waits, nothing in flight.
fn nothing_counted(port: u16) {
    let q = queue_of(port);
    assert_eq!(q["size"].as_u64(), Some(0), "{q}");
    let (s, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert_eq!(s, 200, "{v}");
    for p in v["peers"].as_array().cloned().unwrap_or_default() {
        assert_eq!(p["active"].as_u64(), Some(0), "{p}");
    }
}

#[test]
fn a_worker_killed_while_requests_wait_leaks_no_ticket() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:300", "max_conns=1", "50 timeout=20s");

    let hs = waiters(port, &b, 12);
    // Two of the four workers: the 13 clients' connections spread over
    // the workers, so some waited in a killed one (all 13 in the other
    // two: one run in 8,192).
    let pids = ngx.worker_pids();
    ngx.kill_worker(pids[0]);
    ngx.kill_worker(pids[1]);
    let res: Vec<Timed> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    // The killed worker's clients lose their connection; every other
    // waiter is served, none fails with a 502 or waits to its timeout.
    for t in &res {
        match &t.status {
            Ok(200) => {}
            Ok(s) => panic!("HTTP {s} after {:?}: {res:?}", t.took()),
            Err(_) => {}
        }
        assert!(t.took() < Duration::from_secs(10), "{:?}", t.took());
    }
    assert!(
        res.iter().filter(|t| t.status == Ok(200)).count() >= 1,
        "{res:?}"
    );
    assert!(
        res.iter().any(|t| t.status.is_err()),
        "no client was in a killed worker: {res:?}"
    );
    // (The backend may have seen 2 at once: the killed worker's request
    // sleeps on there after its connection is gone, while the respawned
    // worker has returned its count; nginx's count stayed exact.)
    b.set_mode("delay:100");
    served_at_once(port, 8);
    nothing_counted(port);
    ngx.stop();
}

#[test]
fn reloads_while_requests_wait_serve_them_all() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:150", "max_conns=1", "50");

    let hs = waiters(port, &b, 12);
    ngx.reload();
    // Newcomers after the reload share the queue with the old workers'
    // waiters (the zone is the same).
    let late: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || timed_get(port, "/")))
        .collect();
    for h in hs.into_iter().chain(late) {
        let t = h.join().unwrap();
        assert_eq!(t.status, Ok(200), "{t:?}");
    }
    assert!(b.stats().max_inflight <= 1, "{:?}", b.stats());
    b.set_mode("ok");
    served_at_once(port, 4);
    nothing_counted(port);

    // A changed upstream (another number: another zone): the old
    // workers serve their waiters from the old zone, newcomers wait in
    // the new one; during the overlap the server may see the max_conns
    // of both zones (as for any reload that rebuilds a zone).
    b.set_mode("delay:150");
    let hs = waiters(port, &b, 8);
    let changed = queued_upstream(std::slice::from_ref(&b), &["max_conns=1"], "60");
    ngx.reload_with(&queue_conf(port, &changed, ""));
    let late: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || timed_get(port, "/")))
        .collect();
    for h in hs.into_iter().chain(late) {
        let t = h.join().unwrap();
        assert_eq!(t.status, Ok(200), "{t:?}");
    }
    assert!(b.stats().max_inflight <= 2, "{:?}", b.stats());
    assert_eq!(queue_of(port)["max_size"].as_u64(), Some(60));
    b.set_mode("ok");
    served_at_once(port, 4);
    nothing_counted(port);
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
    ngx.stop();
}

/// CPU ticks (user + system, 1/100 s) used so far by process `pid`.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command (in parentheses): utime is the 12th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

#[test]
fn waiting_costs_no_cpu() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:6000", "max_conns=1", "100 timeout=5s");

    let hs = waiters(port, &b, 40);
    let pids = ngx.worker_pids();
    let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    thread::sleep(Duration::from_secs(3));
    let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    // 40 requests wait 3 s and nothing frees: the workers only run their
    // timers (the watchdog once a second). A polling loop would burn
    // hundreds of ticks; the margin is 3 ticks (30 ms) over 4 workers.
    assert!(
        after - before <= 3,
        "the workers used {} ticks of CPU while requests waited",
        after - before
    );
    for h in hs.into_iter().skip(1) {
        assert_eq!(h.join().unwrap().status, Ok(502));
    }
    ngx.stop();
}

/// `upstream up` and a server on `port`: `/` proxied (with `extra` in
/// its location), the API at `/api/`. `reuseport`: the kernel spreads
/// connections over the workers by a hash of their addresses (without
/// it, an idle nginx may take them all in one worker).
fn queue_conf(port: u16, upstream: &str, extra: &str) -> String {
    format!(
        "    upstream up {{
{upstream}
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://up;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
{extra}
        }}
        location /api/ {{ ha_api; }}
    }}
"
    )
}

/// The upstream's `queue` object in the API.
fn queue_of(port: u16) -> Value {
    let (s, v) = api_call(port, "GET", "/api/upstreams/up", "");
    assert_eq!(s, 200, "{v}");
    v["queue"].clone()
}

#[test]
fn the_api_counts_what_the_queue_did() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let (b, port, mut ngx) = one_server("delay:1200", "max_conns=1", "4 timeout=600ms");

    let q = queue_of(port);
    assert_eq!(
        (
            q["size"].as_u64(),
            q["max_size"].as_u64(),
            q["overflows"].as_u64()
        ),
        (Some(0), Some(4), Some(0)),
        "{q}"
    );
    // 1 holds the server 1.2 s, 4 wait and time out at 600 ms, 3 are
    // refused; while they wait, `size` says 4.
    let hs = waiters(port, &b, 4);
    let q = queue_of(port);
    assert_eq!(q["size"].as_u64(), Some(4), "{q}");
    let refused = burst(port, "/", 3);
    assert!(refused.iter().all(|t| t.status == Ok(502)), "{refused:?}");
    let res: Vec<Timed> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(res[0].status, Ok(200), "{res:?}");
    assert!(res[1..].iter().all(|t| t.status == Ok(502)), "{res:?}");
    let q = queue_of(port);
    assert_eq!(
        (
            q["size"].as_u64(),
            q["overflows"].as_u64(),
            q["timeouts"].as_u64(),
            q["served"].as_u64()
        ),
        (Some(0), Some(3), Some(4), Some(0)),
        "{q}"
    );
    // Now 1 holds and 2 wait, then are served (within 2 × 200 ms, short
    // of the 600 ms timeout even on a loaded machine): their waits are
    // timed.
    b.set_mode("delay:200");
    let hs = waiters(port, &b, 2);
    for h in hs {
        assert_eq!(h.join().unwrap().status, Ok(200));
    }
    let q = queue_of(port);
    assert_eq!(q["served"].as_u64(), Some(2), "{q}");
    assert_eq!(q["wait_ms"]["count"].as_u64(), Some(2), "{q}");
    // The first waited about one service (200 ms), the second two.
    let sum = q["wait_ms"]["sum"].as_f64().unwrap_or(0.0);
    assert!((150.0..=1200.0).contains(&sum), "{q}");
    // Prometheus sees the same.
    let m = http::get(port, "/api/metrics").unwrap().text();
    for line in [
        "ha_upstream_queue_size{upstream=\"up\"} 0",
        "ha_upstream_queue_max_size{upstream=\"up\"} 4",
        "ha_upstream_queue_overflows_total{upstream=\"up\"} 3",
        "ha_upstream_queue_timeouts_total{upstream=\"up\"} 4",
        "ha_upstream_queue_wait_seconds_count{upstream=\"up\"} 2",
    ] {
        assert!(m.lines().any(|l| l == line), "no {line:?} in:\n{m}");
    }
    ngx.stop();
}

#[test]
fn bad_queue_configuration_is_refused() {
    if !nginx_or_skip() {
        return;
    }
    let conf = |line: &str, balance: &str| {
        format!(
            "    upstream up {{
{balance}        server 127.0.0.1:1 max_conns=1;
        {line}
    }}
    server {{
        listen 127.0.0.1:1;
        location / {{ proxy_pass http://up; }}
    }}
"
        )
    };
    let rr = "        ha_balance round_robin;\n";
    for (line, needles) in [
        (
            "ha_queue 0;",
            &["invalid ha_queue number \"0\"", "from 1 to 262144"][..],
        ),
        ("ha_queue many;", &["invalid ha_queue number \"many\""]),
        ("ha_queue 262145;", &["invalid ha_queue number \"262145\""]),
        (
            "ha_queue 10 timeout=0;",
            &["invalid ha_queue timeout \"timeout=0\""],
        ),
        ("ha_queue 10 timeout=soon;", &["invalid ha_queue timeout"]),
        ("ha_queue 10 wait=1s;", &["invalid parameter \"wait=1s\""]),
        (
            "ha_queue 10; ha_queue 20;",
            &["\"ha_queue\" directive is duplicate"],
        ),
        (
            "ha_queue;",
            &["invalid number of arguments in \"ha_queue\""],
        ),
    ] {
        let c = Nginx::check_detailed(&conf(line, rr));
        c.assert_emerg(line, needles);
    }
    // Without ha_balance: refused, naming the upstream.
    let c = Nginx::check_detailed(&conf("ha_queue 10;", ""));
    assert!(!c.ok);
    assert!(
        c.stderr.contains("ha_queue") && c.stderr.contains("need \"ha_balance\""),
        "{}",
        c.stderr
    );
    // And a good one passes.
    let c = Nginx::check_detailed(&conf("ha_queue 262144 timeout=90s;", rr));
    assert!(c.ok, "{}", c.stderr);
}

#[test]
fn every_policy_waits_in_the_queue() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("p", 2);
    for policy in [
        "round_robin",
        "least_conn",
        "p2c",
        "random",
        "ewma",
        "hash $request_uri consistent",
        "hash $request_uri maglev",
    ] {
        for x in &b {
            x.reset();
            x.set_mode("delay:30");
        }
        let port = free_port();
        let upstream = format!(
            "        ha_balance {policy};\n{}        ha_queue 100;\n",
            server_lines(&b, &["max_conns=1", "max_conns=1"])
        );
        let mut ngx = Nginx::start(&queue_conf(port, &upstream, ""), WORKERS);
        let hs: Vec<_> = (0..16)
            .map(|i| thread::spawn(move || timed_get(port, &format!("/k{}", i % 3))))
            .collect();
        for h in hs {
            let t = h.join().unwrap();
            assert_eq!(t.status, Ok(200), "{policy}: {t:?}");
        }
        for x in &b {
            let s = x.stats();
            assert!(s.max_inflight <= 1, "{policy}: over max_conns=1: {s:?}");
        }
        let n: u64 = b.iter().map(|x| x.stats().requests).sum();
        assert_eq!(n, 16, "{policy}");
        ngx.stop();
    }
}

#[test]
fn waiters_resume_on_keepalive_and_tls_upstreams() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start("k");
    b.set_mode("delay:20");
    let certs = scratch_dir();
    let (cert, key) = self_signed_cert(&certs);
    let (port, tls_port) = (free_port(), free_port());
    // `up`: the backend with keepalive connections; `tls`: an HTTPS
    // server of this nginx in front of the same backend.
    let block = format!(
        "    upstream up {{
        ha_balance round_robin;
        server {addr} max_conns=1;
        ha_queue 100;
        keepalive 4;
    }}
    upstream tls {{
        ha_balance least_conn;
        server 127.0.0.1:{tls_port} max_conns=1;
        ha_queue 100;
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ proxy_pass http://{addr}; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
        location /tls/ {{ proxy_pass https://tls; }}
    }}
",
        addr = b.addr(),
        cert = cert.display(),
        key = key.display()
    );
    let mut ngx = Nginx::start(&block, WORKERS);
    for path in ["/", "/tls/"] {
        b.reset();
        b.set_mode("delay:20");
        let res = burst(port, path, 20);
        assert!(res.iter().all(|t| t.status == Ok(200)), "{path}: {res:?}");
        let s = b.stats();
        assert_eq!(s.requests, 20, "{path}: {s:?}");
        assert!(s.max_inflight <= 1, "{path}: {s:?}");
        if path == "/" {
            // Waiters took cached connections (the connect replayed with
            // keepalive's NGX_DONE): far fewer connections than requests.
            assert!(s.conns <= 10, "keepalive not used: {s:?}");
        }
    }
    assert!(!ngx.error_log().contains("[alert]"), "{}", ngx.error_log());
    ngx.stop();
}

#[test]
fn a_bound_request_to_a_full_server_is_rebalanced_or_waits() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("s", 2);
    for x in &b {
        x.set_mode("delay:800");
    }
    let port = free_port();
    let upstream = format!(
        "        ha_balance round_robin;
        ha_sticky cookie srv;
        ha_route {} a;
        ha_route {} b;
{}        ha_queue 10;
",
        b[0].addr(),
        b[1].addr(),
        server_lines(&b, &["max_conns=1", "max_conns=1"])
    );
    let mut ngx = Nginx::start(&queue_conf(port, &upstream, ""), WORKERS);
    let bound = move || {
        http::get_with(port, "/", &[("Cookie", "srv=a")])
            .map(|r| (r.status, r.body_trimmed()))
            .map_err(|e| e.to_string())
    };
    // The session's server takes the first; the second finds it full and
    // is balanced to the other (as without a queue); the third finds both
    // full and waits, then takes the first that frees.
    let first = thread::spawn(bound);
    wait_inflight(&b[0], 1);
    let second = thread::spawn(bound);
    wait_inflight(&b[1], 1);
    let third = thread::spawn(bound);
    assert_eq!(first.join().unwrap(), Ok((200, "s1".to_owned())));
    assert_eq!(second.join().unwrap(), Ok((200, "s2".to_owned())));
    let (status, _) = third.join().unwrap().expect("third");
    assert_eq!(status, 200);
    let q = queue_of(port);
    assert_eq!(q["served"].as_u64(), Some(1), "{q}");
    for x in &b {
        assert!(x.stats().max_inflight <= 1, "{:?}", x.stats());
    }
    ngx.stop();
}
