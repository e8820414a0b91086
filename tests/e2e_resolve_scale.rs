//! End-to-end at scale: 1,000 servers behind one SRV name, changing every second under load
//!
//! Issue 9's scale case. A real DNS server ([`hab_testkit::dns::Named`])
//! serves `_web._tcp.service.consul` with 1,000 SRV records: 125 targets
//! (`tN.node.consul`, each an A record for 127.0.0.1) times 8 ports, each
//! port a real backend, so every record is a server of its own (identity:
//! target and address). nginx 1.28 (4 workers, `ha_balance`, `zone`, a
//! `resolver` without `valid=`: the records' TTL of 0 makes nginx resolve
//! again about every second) follows them.
//!
//! Every second for [`seconds`] (default 60; `HAB_RESOLVE_SCALE_SECONDS`),
//! 10 records leave the set and 10 others join, while clients send
//! requests back to back. Checked: no client error in the whole run, the
//! upstream's size stays 1,000 live servers (the API, after the churn
//! settles), the balancer rebuilt its table for the changes, and the
//! build times the module logs ("built in N us") are printed and bounded
//! (figures in docs/benchmarks.md).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::dns::{Named, Record, Srv};
use hab_testkit::load::{spawn_load, LoadOpts};
use hab_testkit::nginx::{serial, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;
use hab_testkit::resolve::{for_this_nginx, module_ready, WEB};
use hab_testkit::skip::say;

const TARGETS: usize = 128;
const PORTS: usize = 8;
const SERVERS: usize = 1_000;
/// Records swapped out (and as many in) per second.
const CHURN: usize = 10;

/// Seconds of churn: `HAB_RESOLVE_SCALE_SECONDS`, else 60, or 15 under
/// `make asan` (there for memory errors, and the instrumented build is
/// several times slower).
fn seconds() -> u64 {
    let asan = std::env::var_os("HAB_ASAN_NGINX").is_some();
    std::env::var("HAB_RESOLVE_SCALE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s > 0 && s <= 600)
        .unwrap_or(if asan { 15 } else { 60 })
}

fn target(t: usize) -> String {
    format!("t{t}.node.consul")
}

/// Record `k` of the pool of `TARGETS * PORTS`: target `k / PORTS`, the
/// port of backend `k % PORTS`.
fn record(b: &[Backend], k: usize) -> Srv {
    Srv {
        priority: 1,
        weight: 1,
        port: b[k % PORTS].port,
        target: target(k / PORTS),
    }
}

/// A small xorshift: the churn is the same on every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The upstream's servers as the API lists them: (live, draining).
fn api_servers(port: u16) -> (usize, usize) {
    let (status, v) = api_call(port, "GET", "/api/upstreams/up/servers", "");
    assert_eq!(status, 200, "{v}");
    let servers = v.as_array().cloned().unwrap_or_default();
    let draining = servers.iter().filter(|s| s["state"] == "draining").count();
    (servers.len() - draining, draining)
}

/// Build times (µs) of the "servers changed" notices in the error log.
fn build_times(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("servers changed"))
        .filter_map(|l| {
            let rest = &l[l.find("built in ")? + 9..];
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn churn(policy: &str) {
    let b = Backend::start_many("x", PORTS);
    let mut records: Vec<Record> = (0..TARGETS)
        .map(|t| Record::a(&target(t), Ipv4Addr::LOCALHOST))
        .collect();
    // In DNS: records 0..SERVERS of the pool; the rest wait outside.
    let mut inside: Vec<usize> = (0..SERVERS).collect();
    let mut outside: Vec<usize> = (SERVERS..TARGETS * PORTS).collect();
    records.extend(inside.iter().map(|&k| Record::Srv {
        name: WEB.into(),
        srv: record(&b, k),
    }));
    let ns = Named::start("consul", &records).expect("start named");

    let port = free_port();
    let block = format!(
        "    upstream up {{
        ha_balance {policy};
        zone up 8m;
        resolver 127.0.0.1:{dns};
        resolver_timeout 5s;
        server service.consul service=web resolve max_fails=0;
    }}

    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
        location / {{
            proxy_pass http://up;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
            proxy_next_upstream error timeout;
        }}
    }}
",
        dns = ns.port()
    );
    let mut ngx = Nginx::start(&for_this_nginx(&block), WORKERS);

    // nginx resolves the 1,000 records (125 target names) within a bound
    let t0 = Instant::now();
    let resolved = wait_until(Duration::from_secs(30), || api_servers(port).0 == SERVERS);
    assert!(
        resolved,
        "{policy}: {SERVERS} servers not resolved within 30 s: {:?}\nerror.log:\n{}",
        api_servers(port),
        ngx.error_log()
    );
    say(&format!(
        "{policy}: {SERVERS} SRV records resolved and balanced after {:?}",
        t0.elapsed()
    ));

    let secs = seconds();
    let load = spawn_load(
        port,
        "/",
        LoadOpts {
            threads: 4,
            per_thread: 1_000_000,
            pause: Duration::ZERO,
            max_time: Duration::from_secs(secs + 30),
        },
    );
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let start = Instant::now();
    for s in 0..secs {
        // CHURN records out, CHURN in, in one DNS update
        for _ in 0..CHURN {
            let i = (next(&mut rng) % inside.len() as u64) as usize;
            let o = (next(&mut rng) % outside.len() as u64) as usize;
            std::mem::swap(&mut inside[i], &mut outside[o]);
        }
        let set: Vec<Srv> = inside.iter().map(|&k| record(&b, k)).collect();
        ns.set_srv(WEB, &set)
            .unwrap_or_else(|e| panic!("{policy}: DNS update {s}: {e}"));
        let due = start + Duration::from_secs(s + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    let res = load.stop();

    // settled: the last set, every server of it live
    let settled = wait_until(Duration::from_secs(20), || {
        api_servers(port) == (SERVERS, 0)
    });
    let log = ngx.error_log();
    let mut times = build_times(&log);
    times.sort_unstable();
    let reached: BTreeSet<&String> = res.by_body.keys().collect();
    say(&format!(
        "{policy}: {} requests in {secs} s of churn ({CHURN} of {SERVERS} SRV records \
         replaced per second), {} bad; {} table builds, build time p50 {} us, \
         p99 {} us, max {} us; backends reached: {}",
        res.total,
        res.bad(),
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0),
        reached.len()
    ));

    assert_eq!(
        res.bad(),
        0,
        "{policy}: client errors while the servers changed: {:?}\nerror.log (tail):\n{}",
        res.failures,
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(res.total > 0, "{policy}: no request was made");
    assert!(
        settled,
        "{policy}: (live, draining) {:?} after the churn, expected ({SERVERS}, 0)",
        api_servers(port)
    );
    // nginx re-resolves about every second: a build for most seconds
    assert!(
        times.len() as u64 >= secs / 3,
        "{policy}: {} builds in {secs} s of changes",
        times.len()
    );
    // a build of 1,000 peers is milliseconds (criterion: 0.4 to 9 ms); a
    // generous bound for a loaded shared machine
    assert!(
        percentile(&times, 0.5) < 200_000,
        "{policy}: median build {} us",
        percentile(&times, 0.5)
    );
    assert_eq!(reached.len(), PORTS, "{policy}: {reached:?}");
    for bad in ["[alert]", "[emerg]", "[crit]"] {
        assert!(!log.contains(bad), "{policy}: {bad} in error.log:\n{log}");
    }
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
    ngx.stop();
}

#[test]
fn a_thousand_srv_records_changing_every_second_least_conn() {
    if !module_ready() {
        return;
    }
    let _serial = serial();
    churn("least_conn");
}

#[test]
fn a_thousand_srv_records_changing_every_second_maglev() {
    if !module_ready() {
        return;
    }
    let _serial = serial();
    churn("hash $request_uri$remote_port maglev");
}
