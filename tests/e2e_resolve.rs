//! End-to-end: `ha_balance` following servers nginx resolves at run time
//!
//! nginx >= 1.27.3 with the module, 4 workers, and BIND's `named`
//! ([`hab_testkit::dns::Named`], TTL 0, changed by `nsupdate`). Every
//! upstream here is written as an operator following Consul writes it:
//!
//! ```nginx
//! upstream up {
//!     ha_balance POLICY;
//!     zone up 256k;
//!     resolver 127.0.0.1:PORT valid=1s;
//!     resolver_timeout 2s;
//!     server service.consul service=web resolve;   # _web._tcp.service.consul SRV
//! }
//! ```
//!
//! nginx re-resolves about every 2 s (`valid=1s`) in worker 0 and edits the
//! peer list in its zone; the module follows the list and keeps the state
//! of the servers that stay (docs/discovery-design.md). What is checked:
//!
//! - every policy follows SRV additions and removals under load, with no
//!   failed request;
//! - a server disabled by `max_fails` stays disabled when another joins;
//! - a retry after the list changed succeeds (stock nginx answers 502,
//!   which `stock_retry_across_a_change_gets_502` shows on the same setup);
//! - SRV weights give the shares, a lower priority makes a backup (round
//!   robin) or is dropped (hash);
//! - NXDOMAIN empties the upstream (502) until the name is back;
//! - reloads while the list changes, under load, lose no request;
//! - a removed server finishes the requests it has, shown `draining`;
//! - plain `server NAME:PORT resolve` (A records) with least_conn;
//! - configuration errors of `ha_resolve_max` and of `resolve` itself.
//!
//! Timings: [`FOLLOW`] bounds how long nginx and the module may take to
//! follow one DNS change (two re-resolve periods and slack); [`QUIET`] is
//! how long a removed server must have been absent before its own counter
//! is reset and watched.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{get, outcome, Backend, Nginx, WORKERS};
use hab_testkit::dns::{dns_or_skip, Named, Record, Srv};
use serde_json::Value;

const WEB: &str = "_web._tcp.service.consul";

/// Longest time nginx and the module may take to follow a DNS change:
/// two re-resolve periods of `valid=1s` (about 2 s each) and slack for a
/// busy 2-core machine.
const FOLLOW: Duration = Duration::from_secs(10);

/// How long a removed server must have answered nothing before the test
/// resets its counter and watches it: more than one re-resolve period, so
/// that every worker has seen the change.
const QUIET: Duration = Duration::from_millis(2500);

/// How long a removed server is watched (its own counter must stay 0).
const WATCH: Duration = Duration::from_secs(3);

/// Pause between two requests of a sequential poll.
const PAUSE: Duration = Duration::from_millis(20);

/// Every policy, as written after `ha_balance`. Hash keys are the request
/// URI, which the load varies.
const POLICIES: &[&str] = &[
    "round_robin",
    "least_conn",
    "p2c",
    "ewma",
    "random",
    "hash $request_uri",
    "hash $request_uri consistent",
    "hash $request_uri maglev",
];

// ---------------------------------------------------------------------------
// Set-up

/// nginx and the module built, nginx >= 1.27.3 (`resolve`, `service=`;
/// `make test` also runs the end-to-end tests against Debian's 1.22), and
/// the DNS server installed.
fn ready(test: &str) -> bool {
    common::nginx_or_skip(test)
        && common::nginx_at_least_or_skip(test, (1, 27, 3), "server ... resolve")
        && dns_or_skip(test)
}

/// Like [`ready`], for tests that run stock nginx only.
fn stock_ready(test: &str) -> bool {
    common::stock_nginx_or_skip(test)
        && common::nginx_at_least_or_skip(test, (1, 27, 3), "server ... resolve")
        && dns_or_skip(test)
}

fn target(name: &str) -> String {
    format!("{name}.node.consul")
}

/// The SRV record of backend `b`: target `NAME.node.consul`, its port.
fn srv_pw(b: &Backend, priority: u16, weight: u16) -> Srv {
    Srv {
        priority,
        weight,
        port: b.port,
        target: target(&b.name),
    }
}

fn srv(b: &Backend) -> Srv {
    srv_pw(b, 1, 1)
}

/// `named` with an A record `NAME.node.consul -> 127.0.0.1` for every
/// backend and the SRV records of `in_dns`.
fn named(b: &[Backend], in_dns: &[&Backend]) -> Named {
    let mut records: Vec<Record> = b
        .iter()
        .map(|b| Record::a(&target(&b.name), Ipv4Addr::LOCALHOST))
        .collect();
    records.extend(in_dns.iter().map(|b| Record::Srv {
        name: WEB.into(),
        srv: srv(b),
    }));
    Named::start("consul", &records).expect("start named")
}

/// Replaces the SRV records with those of `now` (one DNS update).
fn set_srv(ns: &Named, now: &[&Backend]) {
    let srvs: Vec<Srv> = now.iter().map(|b| srv(b)).collect();
    ns.set_srv(WEB, &srvs).expect("nsupdate");
}

/// One upstream block: `ha_balance policy`, its zone, the resolver on
/// `dns` and `server service.consul service=web resolve<params>;`, then
/// `extra` lines.
fn upstream(name: &str, policy: &str, dns: u16, params: &str, extra: &str) -> String {
    format!(
        "    upstream {name} {{
        ha_balance {policy};
        zone {name} 256k;
        resolver 127.0.0.1:{dns} valid=1s;
        resolver_timeout 2s;
        server service.consul service=web resolve{params};
{extra}    }}
"
    )
}

/// A server on `port` with the API at `/api/` (read only) and, for every
/// `(prefix, upstream)`, `location PREFIX { proxy_pass http://UPSTREAM; }`
/// with `location_extra` (default timeouts: connect 2 s, read 10 s).
fn http_block(
    port: u16,
    upstreams: &str,
    locations: &[(&str, &str)],
    location_extra: &str,
) -> String {
    stock_http_block(port, upstreams, locations, location_extra).replacen(
        "        location ",
        "        location /api/ { ha_api; }\n        location ",
        1,
    )
}

/// [`http_block`] without the API, for stock nginx.
fn stock_http_block(
    port: u16,
    upstreams: &str,
    locations: &[(&str, &str)],
    location_extra: &str,
) -> String {
    let mut s = format!(
        "{upstreams}
    server {{
        listen 127.0.0.1:{port};
"
    );
    let timeouts = if location_extra.contains("proxy_read_timeout") {
        "            proxy_connect_timeout 2s;\n".to_owned()
    } else {
        "            proxy_connect_timeout 2s;\n            proxy_read_timeout 10s;\n".to_owned()
    };
    for (prefix, up) in locations {
        s.push_str(&format!(
            "        location {prefix} {{
            proxy_pass http://{up};
{timeouts}{location_extra}
        }}
"
        ));
    }
    s.push_str("    }\n");
    s
}

/// Error log lines nothing here should cause: `[alert]`, `[emerg]`,
/// `[crit]`, a crashed worker.
fn alarming(ngx: &Nginx) -> Vec<String> {
    ngx.error_log()
        .lines()
        .filter(|l| {
            l.contains("[alert]")
                || l.contains("[emerg]")
                || l.contains("[crit]")
                || l.contains("exited on signal")
        })
        .map(str::to_owned)
        .collect()
}

fn assert_clean_log(ngx: &Nginx) {
    let bad = alarming(ngx);
    assert!(
        bad.is_empty(),
        "error.log has alerts or crashes:\n{}",
        bad.join("\n")
    );
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
}

// ---------------------------------------------------------------------------
// The API

/// The servers of upstream `up` as the API lists them.
fn api_peers(port: u16, up: &str) -> Vec<Value> {
    let (s, v) = common::api_call(port, "GET", &format!("/api/upstreams/{up}"), "");
    assert_eq!(s, 200, "GET /api/upstreams/{up}: {v}");
    v["peers"].as_array().cloned().unwrap_or_default()
}

/// The API's server whose address (`server`, or `name`) is `b`'s.
fn api_peer(peers: &[Value], b: &Backend) -> Option<Value> {
    let addr = b.addr();
    peers
        .iter()
        .find(|p| p["server"].as_str() == Some(&addr) || p["name"].as_str() == Some(&addr))
        .cloned()
}

fn api_state(port: u16, up: &str, b: &Backend) -> Option<String> {
    api_peer(&api_peers(port, up), b).and_then(|p| p["state"].as_str().map(str::to_owned))
}

/// Polls the API every 100 ms until `cond(servers)` holds or `limit`
/// passes; whether it held, and the last listing.
fn api_wait(
    port: u16,
    up: &str,
    limit: Duration,
    mut cond: impl FnMut(&[Value]) -> bool,
) -> (bool, Vec<Value>) {
    let deadline = Instant::now() + limit;
    let mut last = Vec::new();
    for _ in 0..=(limit.as_millis() / 100) {
        last = api_peers(port, up);
        if cond(&last) {
            return (true, last);
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    (false, last)
}

fn brief(peers: &[Value]) -> String {
    peers
        .iter()
        .map(|p| {
            format!(
                "{{id {} {} {} {} w{} backup {} active {} requests {}}}",
                p["id"],
                p["server"],
                p["name"],
                p["state"],
                p["weight"],
                p["backup"],
                p["active"],
                p["requests"]
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// Clients

/// What a [`Load`] saw, per location prefix.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// Outcomes (see [`common::outcome`]) by prefix.
    by_loc: BTreeMap<String, BTreeMap<String, usize>>,
    /// When each (prefix, outcome) was first and last seen.
    first: BTreeMap<(String, String), Instant>,
    last: BTreeMap<(String, String), Instant>,
    total: usize,
    /// Non-200 answers and transport errors.
    bad: usize,
    /// Up to 20 of them, with the time since the load started.
    failures: Vec<String>,
}

impl Seen {
    fn first(&self, loc: &str, name: &str) -> Option<Instant> {
        self.first.get(&(loc.to_owned(), name.to_owned())).copied()
    }

    fn last(&self, loc: &str, name: &str) -> Option<Instant> {
        self.last.get(&(loc.to_owned(), name.to_owned())).copied()
    }

    fn count(&self, loc: &str, name: &str) -> usize {
        self.by_loc
            .get(loc)
            .and_then(|m| m.get(name))
            .copied()
            .unwrap_or(0)
    }

    fn loc_total(&self, loc: &str) -> usize {
        self.by_loc.get(loc).map_or(0, |m| m.values().sum())
    }
}

/// A concurrent load in background threads, each request to the next
/// prefix in turn, with a fresh key (`PREFIXk<thread>-<n>`) so hash
/// policies spread too. Bounded by `max_time` and a count per thread.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(
        port: u16,
        prefixes: &[&str],
        threads: usize,
        pause: Duration,
        max_time: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let t0 = Instant::now();
        let deadline = t0 + max_time;
        let prefixes: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
        let threads = (0..threads)
            .map(|t| {
                let (stop, seen, prefixes) =
                    (Arc::clone(&stop), Arc::clone(&seen), prefixes.clone());
                thread::spawn(move || {
                    // bounded by count as well as by the deadline
                    for n in 0..1_000_000usize {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        let loc = &prefixes[n % prefixes.len()];
                        let r = get(port, &format!("{loc}k{t}-{n}"));
                        let o = outcome(&r);
                        let now = Instant::now();
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        s.total += 1;
                        if !matches!(&r, Ok(resp) if resp.status == 200) {
                            s.bad += 1;
                            if s.failures.len() < 20 {
                                let f = format!("{:.2}s {loc}: {o}", (now - t0).as_secs_f64());
                                s.failures.push(f);
                            }
                        }
                        *s.by_loc
                            .entry(loc.clone())
                            .or_default()
                            .entry(o.clone())
                            .or_insert(0) += 1;
                        s.first.entry((loc.clone(), o.clone())).or_insert(now);
                        s.last.insert((loc.clone(), o), now);
                        drop(s);
                        if !pause.is_zero() {
                            thread::sleep(pause);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            threads,
        }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Checks `cond` every 50 ms until it holds or `limit` passes.
    fn wait(&self, limit: Duration, mut cond: impl FnMut(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        for _ in 0..=(limit.as_millis() / 50) {
            if cond(&self.seen()) {
                return true;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        cond(&self.seen())
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread panicked");
        }
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s
    }
}

/// Sequential requests to `prefix` (fresh key each) every [`PAUSE`] until
/// `done(outcomes so far)` holds or `limit` passes.
fn poll(
    port: u16,
    prefix: &str,
    limit: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    for n in 0..(limit.as_millis() / PAUSE.as_millis()) {
        seen.push(outcome(&get(port, &format!("{prefix}p{n}"))));
        if done(&seen) || Instant::now() >= deadline {
            break;
        }
        thread::sleep(PAUSE);
    }
    seen
}

fn has(seen: &[String], name: &str) -> bool {
    seen.iter().any(|o| o == name)
}

/// `n` sequential requests to `prefix`, a fresh key each.
fn requests(port: u16, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| outcome(&get(port, &format!("{prefix}r{i}"))))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Every policy follows SRV changes under load

#[test]
fn every_policy_follows_srv_changes_under_load() {
    let test = "every_policy_follows_srv_changes_under_load";
    if !ready(test) {
        return;
    }
    let _serial = common::serial();
    // web4 has an A record but is never in the SRV set: a control
    let b = Backend::start_many("web", 4);
    let ns = named(&b, &[&b[0], &b[1]]);
    let port = common::free_port();
    let mut ups = String::new();
    let mut locs = Vec::new();
    let prefixes: Vec<String> = (0..POLICIES.len()).map(|i| format!("/u{i}/")).collect();
    let names: Vec<String> = (0..POLICIES.len()).map(|i| format!("u{i}")).collect();
    for (i, p) in POLICIES.iter().enumerate() {
        ups.push_str(&upstream(&names[i], p, ns.port(), "", ""));
        locs.push((prefixes[i].as_str(), names[i].as_str()));
    }
    let ngx = Nginx::start(&http_block(port, &ups, &locs, ""), WORKERS);
    let pre: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let load = Load::start(
        port,
        &pre,
        3,
        Duration::from_millis(2),
        Duration::from_secs(90),
    );
    let policy_of = |loc: &str| POLICIES[prefixes.iter().position(|p| p == loc).unwrap()];
    let lacking = |s: &Seen, name: &str, since: Instant| -> Vec<&str> {
        pre.iter()
            .filter(|l| !s.last(l, name).is_some_and(|t| t >= since))
            .map(|l| policy_of(l))
            .collect()
    };

    // nginx resolves at start: web1 and web2 in every upstream
    let t_start = Instant::now();
    let ok = load.wait(FOLLOW, |s| {
        lacking(s, "web1", t_start).is_empty() && lacking(s, "web2", t_start).is_empty()
    });
    let s = load.seen();
    assert!(
        ok,
        "web1 and web2 not both reached within {FOLLOW:?} by {:?} / {:?}; seen {:?}\nerror.log:\n{}",
        lacking(&s, "web1", t_start),
        lacking(&s, "web2", t_start),
        s.by_loc,
        ngx.error_log()
    );

    // web3 joins
    set_srv(&ns, &[&b[0], &b[1], &b[2]]);
    let t_add = Instant::now();
    let ok = load.wait(FOLLOW, |s| lacking(s, "web3", t_add).is_empty());
    let s = load.seen();
    assert!(
        ok,
        "web3 (added) not reached within {FOLLOW:?} by {:?}; seen {:?}\nerror.log:\n{}",
        lacking(&s, "web3", t_add),
        s.by_loc,
        ngx.error_log()
    );
    let joined: Vec<String> = pre
        .iter()
        .map(|l| {
            format!(
                "{} {:.2}s",
                policy_of(l),
                (s.first(l, "web3").unwrap() - t_add).as_secs_f64()
            )
        })
        .collect();

    // web1 leaves: no upstream answers from it for QUIET
    set_srv(&ns, &[&b[1], &b[2]]);
    let t_rm = Instant::now();
    let gone = |s: &Seen| {
        let now = Instant::now();
        pre.iter().all(|l| {
            s.last(l, "web1")
                .is_none_or(|t| now.duration_since(t) >= QUIET)
        })
    };
    let ok = load.wait(FOLLOW + QUIET, gone);
    let s = load.seen();
    let still: Vec<String> = pre
        .iter()
        .map(|l| {
            format!(
                "{} {:?}",
                policy_of(l),
                s.last(l, "web1").map(|t| t.saturating_duration_since(t_rm))
            )
        })
        .collect();
    assert!(
        ok,
        "web1 (removed) still answered within the last {QUIET:?}, {:?} after its removal; last answer per policy after the removal: {still:?}\nerror.log:\n{}",
        t_rm.elapsed(),
        ngx.error_log()
    );
    let left: Vec<String> = pre
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                policy_of(l),
                s.last(l, "web1").map_or("-".to_owned(), |t| format!(
                    "{:.2}s",
                    t.saturating_duration_since(t_rm).as_secs_f64()
                ))
            )
        })
        .collect();

    // and by its own count, from every worker of every upstream
    b[0].reset();
    let before = load.seen();
    thread::sleep(WATCH);
    let after = load.seen();
    let web1 = b[0].stats().requests;
    let s = load.stop();
    let t_end = Instant::now();
    assert_eq!(
        web1, 0,
        "web1 got {web1} requests in {WATCH:?}, {QUIET:?} after it left DNS; seen {:?}",
        s.by_loc
    );
    for l in &pre {
        let n = after.loc_total(l) - before.loc_total(l);
        assert!(n >= 10, "{}: only {n} requests in {WATCH:?}", policy_of(l));
        for name in ["web2", "web3"] {
            assert!(
                after.count(l, name) > before.count(l, name),
                "{}: {name} got nothing in {WATCH:?}: {:?}",
                policy_of(l),
                after.by_loc.get(*l)
            );
        }
    }
    assert_eq!(b[3].stats().requests, 0, "web4 was never in DNS");
    assert_eq!(
        s.bad,
        0,
        "{} of {} requests failed while the servers changed: {:?}\nerror.log:\n{}",
        s.bad,
        s.total,
        s.failures,
        ngx.error_log()
    );
    assert_clean_log(&ngx);
    common::say(&format!(
        "{test}: {} requests over {:.1}s, 0 failed; web3 first reached after: {}; web1 last reached after its removal: {}",
        s.total,
        (t_end - t_start).as_secs_f64(),
        joined.join(", "),
        left.join(", ")
    ));
}

// ---------------------------------------------------------------------------
// 2. A server disabled by max_fails stays disabled when another joins

#[test]
fn state_kept_when_another_server_joins() {
    let test = "state_kept_when_another_server_joins";
    if !ready(test) {
        return;
    }
    let _serial = common::serial();
    let mut b = Backend::start_many("web", 3);
    let ns = named(&b, &[&b[0], &b[1]]);
    let port = common::free_port();
    let ups = upstream(
        "up",
        "round_robin",
        ns.port(),
        " max_fails=1 fail_timeout=30s",
        "",
    );
    let ngx = Nginx::start(
        &http_block(
            port,
            &ups,
            &[("/", "up")],
            "            proxy_next_upstream error timeout;",
        ),
        WORKERS,
    );
    let seen = poll(port, "/", FOLLOW, |s| has(s, "web1") && has(s, "web2"));
    assert!(
        has(&seen, "web1") && has(&seen, "web2"),
        "{seen:?}\nerror.log:\n{}",
        ngx.error_log()
    );

    // web2 dies: its first failure disables it for 30 s (max_fails=1);
    // clients see no error (the try goes on to web1)
    b[1].kill();
    let t_fail = Instant::now();
    let mut outcomes = Vec::new();
    let (disabled, peers) = api_wait(port, "up", Duration::from_secs(10), |p| {
        outcomes.push(outcome(&get(port, "/f")));
        api_peer(p, &b[1]).is_some_and(|w| w["state"] == "unavail")
    });
    assert!(
        disabled,
        "web2 not unavail after its failure: {}; requests {outcomes:?}",
        brief(&peers)
    );
    assert!(outcomes.iter().all(|o| o == "web1"), "{outcomes:?}");
    let before = api_peer(&peers, &b[1]).unwrap();

    // web2 is back on its port, and web3 joins through DNS
    b[1].restart();
    set_srv(&ns, &[&b[0], &b[1], &b[2]]);
    let seen = poll(port, "/", FOLLOW, |s| has(s, "web3"));
    assert!(
        has(&seen, "web3"),
        "web3 (added) not reached within {FOLLOW:?}: {seen:?}\nerror.log:\n{}",
        ngx.error_log()
    );
    let after_join = requests(port, "/", 40);
    let peers = api_peers(port, "up");
    let elapsed = t_fail.elapsed();
    assert!(
        elapsed < Duration::from_secs(27),
        "inconclusive: the checks took {elapsed:?}, too close to fail_timeout=30s"
    );
    assert_eq!(
        b[1].stats().requests,
        0,
        "web2, disabled by max_fails for 30 s, got requests {elapsed:?} after its failure, once web3 joined: {after_join:?}; {}",
        brief(&peers)
    );
    let web2 =
        api_peer(&peers, &b[1]).unwrap_or_else(|| panic!("web2 not listed: {}", brief(&peers)));
    assert_eq!(web2["state"], "unavail", "web2 after web3 joined: {web2}");
    assert_eq!(
        web2["id"], before["id"],
        "web2 keeps its id: {before} then {web2}"
    );
    assert!(
        web2["unavail"].as_u64() >= Some(1) && web2["fails"].as_u64() >= Some(1),
        "{web2}"
    );
    assert!(
        after_join.iter().all(|o| o == "web1" || o == "web3"),
        "{after_join:?}"
    );
    assert!(
        has(&after_join, "web1") && has(&after_join, "web3"),
        "{after_join:?}"
    );
    assert_clean_log(&ngx);
    common::say(&format!(
        "{test}: web2 still unavail {elapsed:?} after its failure, web3 serving"
    ));
}

// ---------------------------------------------------------------------------
// 3. A retry after the list changed

/// First tries wait this long for a response (`proxy_read_timeout`).
const READ_TIMEOUT: Duration = Duration::from_secs(7);

/// Two slow servers in DNS; a request's first try goes to one of them
/// and times out after [`READ_TIMEOUT`]; meanwhile DNS replaces both by
/// `good1` and `good2` (two: with one, nginx's round robin gives up any
/// retry on a single-server list, `peers->single`, whatever the change).
/// Returns the request's outcome, the backends (slow1, slow2, good1,
/// good2), nginx, and when the module's API listed the good ones (module
/// only).
fn slow_try_then_change(
    test: &str,
    module: bool,
) -> (String, Vec<Backend>, Nginx, Option<Duration>) {
    let mut b = Backend::start_many("slow", 2);
    b.extend(Backend::start_many("good", 2));
    let ns = named(&b, &[&b[0], &b[1]]);
    let port = common::free_port();
    let extra = format!(
        "            proxy_next_upstream error timeout;\n            proxy_read_timeout {}s;",
        READ_TIMEOUT.as_secs()
    );
    let ngx = if module {
        let ups = upstream("up", "round_robin", ns.port(), "", "");
        Nginx::start(&http_block(port, &ups, &[("/", "up")], &extra), WORKERS)
    } else {
        let ups = upstream("up", "round_robin", ns.port(), "", "")
            .replace("        ha_balance round_robin;\n", "");
        Nginx::start_stock(
            &stock_http_block(port, &ups, &[("/", "up")], &extra),
            WORKERS,
        )
    };
    let seen = poll(port, "/", FOLLOW, |s| has(s, "slow1") && has(s, "slow2"));
    assert!(
        has(&seen, "slow1") && has(&seen, "slow2"),
        "{test}: {seen:?}\nerror.log:\n{}",
        ngx.error_log()
    );
    let slow = format!("delay:{}", READ_TIMEOUT.as_millis() * 3);
    b[0].set_mode(&slow);
    b[1].set_mode(&slow);

    let t0 = Instant::now();
    let req = thread::spawn(move || outcome(&get(port, "/retry")));
    let inflight = common::wait_until(Duration::from_secs(3), || {
        b[0].stats().inflight + b[1].stats().inflight >= 1
    });
    assert!(inflight, "{test}: the first try reached no slow server");
    set_srv(&ns, &[&b[2], &b[3]]);
    let listed = module.then(|| {
        let limit = READ_TIMEOUT.saturating_sub(t0.elapsed());
        let (ok, peers) = api_wait(port, "up", limit, |p| {
            b[2..].iter().all(|g| api_peer(p, g).is_some_and(|g| g["state"] == "up"))
        });
        assert!(
            ok,
            "{test}: inconclusive: good1 and good2 (added) not listed by the API before the first try timed out: {}\nerror.log:\n{}",
            brief(&peers),
            ngx.error_log()
        );
        t0.elapsed()
    });
    let o = req.join().expect("request thread");
    (o, b, ngx, listed)
}

#[test]
fn retry_across_a_change() {
    let test = "retry_across_a_change";
    if !ready(test) {
        return;
    }
    let _serial = common::serial();
    let (o, b, ngx, listed) = slow_try_then_change(test, true);
    let entries: Vec<_> = ngx
        .access_entries()
        .into_iter()
        .filter(|e| e.uri == "/retry")
        .collect();
    assert!(
        o == "good1" || o == "good2",
        "the retry after the change failed ({o}); access log {entries:?}\nerror.log:\n{}",
        ngx.error_log()
    );
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert!(
        e.upstream_addr.len() == 2
            && (e.upstream_addr[0] == b[0].addr() || e.upstream_addr[0] == b[1].addr())
            && (e.upstream_addr[1] == b[2].addr() || e.upstream_addr[1] == b[3].addr()),
        "first try on a slow server, the retry on good1 or good2: {e:?}"
    );
    assert_eq!(e.upstream_status, ["504", "200"], "{e:?}");
    assert_clean_log(&ngx);
    common::say(&format!(
        "{test}: good1 and good2 listed {:?} after the request started, retry answered by {o}",
        listed.unwrap_or_default()
    ));
}

/// The reference: stock nginx answers the same request 502 ("no live
/// upstreams"), its round robin refusing a retry once the list changed.
#[test]
fn stock_retry_across_a_change_gets_502() {
    let test = "stock_retry_across_a_change_gets_502";
    if !stock_ready(test) {
        return;
    }
    let _serial = common::serial();
    let (o, _b, ngx, _) = slow_try_then_change(test, false);
    assert_eq!(o, "HTTP 502", "error.log:\n{}", ngx.error_log());
    assert!(
        ngx.error_log().contains("no live upstreams"),
        "{}",
        ngx.error_log()
    );
    assert!(ngx.crashes().is_empty(), "{:?}", ngx.crashes());
}
