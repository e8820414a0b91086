//! End-to-end at scale: 10,000 `server` lines in one upstream
//!
//! The servers are spread over 8 real backends (each port repeated 1,250
//! times, weights cycling 1, 2, 3). For each policy: `nginx -t` passes,
//! nginx starts with 4 workers within a bound, 400 concurrent requests all
//! succeed and reach several backends. Load times are printed.
//!
//! A last check loads 10,000 *distinct* addresses with Maglev (`nginx -t`
//! only, nothing listens there): it separates the cost of the table size
//! from the cost of repeated addresses.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hab_testkit::backend::process::Backend;
use hab_testkit::http::get;
use hab_testkit::load::{outcome, tally};
use hab_testkit::nginx::{nginx_or_skip, proxy_block, serial, stock_mode, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::skip::say;

const SERVERS: usize = 10_000;
const PORTS: usize = 8;
const REQUESTS: usize = 400;
/// Upper bound for `nginx -t` and for starting (config load + 4 workers
/// ready) on a loaded 2-core machine.
const LOAD_BOUND: Duration = Duration::from_secs(10);

fn upstream_body(b: &[Backend], policy: &str) -> String {
    let mut s = format!("        ha_balance {policy};\n");
    for i in 0..SERVERS {
        let port = b[i % b.len()].port;
        let weight = i % 3 + 1;
        s.push_str(&format!(
            "        server 127.0.0.1:{port} weight={weight};\n"
        ));
    }
    s
}

/// 400 requests from 8 concurrent clients (fresh connection each), with
/// distinct keys, within 30 s; outcomes of the requests done.
fn run_requests(port: u16) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let per = REQUESTS / 8;
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut out = Vec::with_capacity(per);
                for j in 0..per {
                    if Instant::now() >= deadline {
                        break;
                    }
                    out.push(outcome(&get(port, &format!("/?k=k{t}-{j}"))));
                }
                out
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread panicked"))
        .collect()
}

fn scale(policy: &str) {
    let b = Backend::start_many("x", PORTS);
    let port = free_port();
    let block = proxy_block(port, &upstream_body(&b, policy), "");

    let t0 = Instant::now();
    let c = Nginx::check_detailed(&block);
    let check_time = t0.elapsed();
    assert!(c.ok, "{policy}: nginx -t failed:\n{}", c.stderr);

    let t1 = Instant::now();
    let mut ngx = Nginx::start(&block, WORKERS);
    let start_time = t1.elapsed();

    let t2 = Instant::now();
    let res = run_requests(port);
    let req_time = t2.elapsed();
    say(&format!(
        "  {policy}: {SERVERS} servers: nginx -t {check_time:?}, start (4 workers ready) \
         {start_time:?}, {} requests in {req_time:?}: {:?}",
        res.len(),
        tally(&res)
    ));

    assert!(
        check_time < LOAD_BOUND,
        "{policy}: nginx -t took {check_time:?} with {SERVERS} servers (bound {LOAD_BOUND:?})"
    );
    assert!(
        start_time < LOAD_BOUND,
        "{policy}: start took {start_time:?} with {SERVERS} servers (bound {LOAD_BOUND:?})"
    );
    assert_eq!(res.len(), REQUESTS, "{policy}: requests not done in 30 s");
    let names: BTreeSet<&str> = b.iter().map(|x| x.name.as_str()).collect();
    let bad: Vec<&String> = res.iter().filter(|o| !names.contains(o.as_str())).collect();
    assert!(
        bad.is_empty(),
        "{policy}: {} failed requests, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let used = tally(&res);
    assert!(
        used.len() >= 4,
        "{policy}: 400 requests reached only {} of {PORTS} backends: {used:?}",
        used.len()
    );
    assert!(
        ngx.crashes().is_empty(),
        "{policy}: worker crashed:\n{}",
        ngx.error_log()
    );
    ngx.stop();
}

#[test]
fn scale_round_robin() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    scale("round_robin");
}

#[test]
fn scale_least_conn() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    scale("least_conn");
}

#[test]
fn scale_p2c() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    scale("p2c");
}

#[test]
fn scale_hash_maglev() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    scale("hash $arg_k maglev");
}

#[test]
fn scale_hash_maglev_distinct_addresses_check() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    // 10,000 distinct ports from free_port()'s range; `nginx -t` connects to
    // none of them.
    let mut body = String::from("        ha_balance hash $arg_k maglev;\n");
    for i in 0..SERVERS {
        let weight = i % 3 + 1;
        body.push_str(&format!(
            "        server 127.0.0.1:{} weight={weight};\n",
            20_000 + i
        ));
    }
    let block = proxy_block(free_port(), &body, "");
    let t0 = Instant::now();
    let c = Nginx::check_detailed(&block);
    let check_time = t0.elapsed();
    say(&format!(
        "  hash $arg_k maglev: {SERVERS} distinct addresses: nginx -t {check_time:?}"
    ));
    assert!(c.ok, "nginx -t failed:\n{}", c.stderr);
    assert!(
        check_time < LOAD_BOUND,
        "nginx -t took {check_time:?} (bound {LOAD_BOUND:?})"
    );
}
