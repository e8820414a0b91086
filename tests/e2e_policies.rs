//! End-to-end: every `ha_balance` policy through real nginx with 4 workers
//!
//! - each policy (round_robin, least_conn, p2c, random, ewma, hash plain /
//!   consistent / maglev, with and without `balance_factor`) answers every
//!   request with 200 and uses every backend of a 5,1,1 upstream;
//! - `random` follows the weights within ±4 standard deviations;
//! - `hash` variants send one key to one backend whatever worker and
//!   connection carries the request;
//! - `p2c` and `ewma` avoid a slow backend under concurrent load, where
//!   `random` in the same setup does not;
//! - `hash ... consistent balance_factor=125` spreads one hot key over
//!   several backends under concurrent load, where plain consistent hashing
//!   keeps it on one.
//!
//! `random`, `p2c` and `ewma` draw from nginx's `random()`, seeded per
//! worker by nginx: the seed is not ours to fix, so the statistical checks
//! use bands wide enough for any seed (stated at each assertion).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::backend::process::Backend;
use hab_testkit::http::get;
use hab_testkit::load::{load, outcome, tally, LoadResult};
use hab_testkit::nginx::{nginx_or_skip, serial, server_lines, stock_mode, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::skip::say;

/// Every policy line the module accepts, as written in `ha_balance`.
const POLICIES: &[&str] = &[
    "round_robin",
    "least_conn",
    "p2c",
    "random",
    "ewma",
    "ewma decay=2s",
    "hash $arg_k",
    "hash $arg_k consistent",
    "hash $arg_k maglev",
    "hash $arg_k consistent balance_factor=150",
    "hash $arg_k maglev balance_factor=125",
];

/// An http block with one upstream `u{i}` per policy (same backends and
/// server parameters) and one server on `port` with `location /u{i}/`
/// proxying to it.
fn multi_block(port: u16, b: &[Backend], params: &[&str], policies: &[&str]) -> String {
    let servers = server_lines(b, params);
    let mut out = String::new();
    for (i, p) in policies.iter().enumerate() {
        out.push_str(&format!(
            "    upstream u{i} {{\n        ha_balance {p};\n{servers}    }}\n"
        ));
    }
    out.push_str(&format!(
        "    server {{\n        listen 127.0.0.1:{port};\n"
    ));
    for i in 0..policies.len() {
        out.push_str(&format!(
            "        location /u{i}/ {{
            proxy_pass http://u{i};
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
        }}
"
        ));
    }
    out.push_str("    }\n");
    out
}

/// Fetches every path in `paths` with `threads` concurrent clients (fresh
/// connection per request), for at most `max_time`. Returns the outcome of
/// each path (see [`outcome`]) in order; `None` where the time ran
/// out before the request was sent.
fn fetch_all(
    port: u16,
    paths: &[String],
    threads: usize,
    max_time: Duration,
) -> Vec<Option<String>> {
    let paths = Arc::new(paths.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(vec![None; paths.len()]));
    let deadline = Instant::now() + max_time;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (paths, next, out) = (Arc::clone(&paths), Arc::clone(&next), Arc::clone(&out));
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= paths.len() || Instant::now() >= deadline {
                    return;
                }
                let o = outcome(&get(port, &paths[i]));
                out.lock().unwrap()[i] = Some(o);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread panicked");
    }
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

/// Deterministic shuffle (xorshift64*, fixed seed).
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let r = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
}

/// The fewest of `n` requests a backend whose share is `p` may get:
/// `n·p − 5·sqrt(n·p·(1−p))`, five binomial standard deviations below the
/// mean (a false failure has probability below 3e-7 per backend), rounded
/// up. For weights 5,1,1 and n = 210: 118 for the weight-5 backend (mean
/// 150, sd 6.5) and 5 for each weight-1 backend (mean 30, sd 5.1). Every
/// policy gives a backend its weight share at rest (`hash` over distinct
/// keys, each key an independent draw); a policy that starves a
/// backend, as `ewma` did while it counted weight twice (1/42: 5 of 210
/// expected), fails. Under concurrent load only load-independent policies
/// keep weight shares; see the caller.
fn least(n: usize, p: f64) -> usize {
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    (mean - 5.0 * sd).ceil().max(1.0) as usize
}

fn three_5_1_1() -> Vec<Backend> {
    vec![
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ]
}

#[test]
fn every_policy_answers_and_uses_every_backend() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    let b = three_5_1_1();
    let port = free_port();
    let mut ngx = Nginx::start(
        &multi_block(port, &b, &["weight=5", "", ""], POLICIES),
        WORKERS,
    );

    // 210 requests per policy with distinct keys (hash policies need
    // several keys to reach every backend; the others ignore `k`). Each
    // backend must get at least `least(n, w / 7)` of them: see there.
    let n = 210;
    let mut failures = Vec::new();
    for (i, policy) in POLICIES.iter().enumerate() {
        let paths: Vec<String> = (0..n).map(|k| format!("/u{i}/?k=key-{k}")).collect();
        let res = fetch_all(port, &paths, 4, Duration::from_secs(20));
        let done: Vec<&String> = res.iter().flatten().collect();
        let counts = tally(&done);
        let ok = ["a", "b", "c"]
            .iter()
            .map(|k| counts.get(*k).copied().unwrap_or(0))
            .sum::<usize>();
        // Load-aware policies (4 clients keep requests in flight) move
        // traffic from the busier weight-5 backend to the others: only the
        // weight-1 backends' floor applies to them.
        let load_aware = policy.starts_with("least_conn")
            || policy.starts_with("p2c")
            || policy.starts_with("ewma")
            || policy.contains("balance_factor");
        let short: Vec<String> = [("a", 5.0), ("b", 1.0), ("c", 1.0)]
            .iter()
            .filter(|&&(_, w)| !load_aware || w == 1.0)
            .filter_map(|&(k, w)| {
                let (got, min) = (counts.get(k).copied().unwrap_or(0), least(n, w / 7.0));
                (got < min).then(|| format!("{k} got {got} < {min}"))
            })
            .collect();
        say(&format!("  {policy}: {counts:?}"));
        if done.len() != n || ok != n || !short.is_empty() {
            failures.push(format!(
                "{policy}: {} of {n} done, {ok} answered 200 by a/b/c, counts {counts:?}; {}",
                done.len(),
                short.join(", ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "policies failing:\n{}",
        failures.join("\n")
    );
    ngx.stop();
}

#[test]
fn random_follows_weights_5_1_1() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    let b = three_5_1_1();
    let port = free_port();
    let mut ngx = Nginx::start(
        &multi_block(port, &b, &["weight=5", "", ""], &["random"]),
        WORKERS,
    );

    let n = 2100;
    let paths: Vec<String> = (0..n).map(|_| "/u0/".to_owned()).collect();
    let res = fetch_all(port, &paths, 4, Duration::from_secs(30));
    let done: Vec<&String> = res.iter().flatten().collect();
    assert_eq!(done.len(), n, "only {} of {n} requests in 30 s", done.len());
    let counts = tally(&done);
    for (name, w) in [("a", 5.0), ("b", 1.0), ("c", 1.0)] {
        // Binomial(n, w/7): mean n·p, standard deviation sqrt(n·p·(1-p)).
        // n = 2100: a 1500 ± 83, b and c 300 ± 64 (±4 sd; a false failure
        // has probability below 1e-4 per backend).
        let p = w / 7.0;
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        let got = counts.get(name).copied().unwrap_or(0) as f64;
        assert!(
            (got - mean).abs() <= 4.0 * sd,
            "{name}: {got} of {n}, want {mean:.0} ± {:.0} (4 sd); {counts:?}",
            4.0 * sd
        );
    }
    assert_eq!(counts.len(), 3, "non-200 outcomes: {counts:?}");

    // The draws came from several workers.
    let pids: BTreeSet<i32> = ngx.access_entries().iter().map(|e| e.pid).collect();
    assert!(pids.len() >= 2, "one worker served all: {pids:?}");
    ngx.stop();
}

#[test]
fn hash_key_sticks_to_one_backend_across_workers() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    let b = three_5_1_1();
    let port = free_port();
    let variants = [
        "hash $arg_k",
        "hash $arg_k consistent",
        "hash $arg_k maglev",
    ];
    let mut ngx = Nginx::start(
        &multi_block(port, &b, &["weight=5", "", ""], &variants),
        WORKERS,
    );

    // 80 keys × 8 requests each, shuffled (fixed seed), 8 concurrent
    // clients, a fresh connection per request: each key is carried by
    // several connections and, mostly, several workers.
    let (keys, reps) = (80, 8);
    let mut failures = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let mut paths: Vec<String> = (0..keys)
            .flat_map(|k| (0..reps).map(move |_| format!("/u{i}/?k=hot-{k}")))
            .collect();
        shuffle(&mut paths, 0x5eed_0000 + i as u64);
        let res = fetch_all(port, &paths, 8, Duration::from_secs(20));
        let mut by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut undone = 0;
        for (p, o) in paths.iter().zip(&res) {
            match o {
                Some(o) => {
                    by_key.entry(p).or_default().insert(o);
                }
                None => undone += 1,
            }
        }
        assert_eq!(undone, 0, "{v}: {undone} requests not sent in 20 s");
        let split: Vec<_> = by_key.iter().filter(|(_, s)| s.len() != 1).collect();
        let used: BTreeSet<&str> = by_key.values().flatten().copied().collect();
        if !split.is_empty() || used != BTreeSet::from(["a", "b", "c"]) {
            failures.push(format!(
                "{v}: {} keys answered by more than one backend or not 200 \
                 (first: {:?}); backends used over {keys} keys: {used:?}",
                split.len(),
                split.iter().take(5).collect::<Vec<_>>()
            ));
        }
    }

    // The same key really went through several workers.
    let mut workers_per_uri: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for e in ngx.access_entries() {
        workers_per_uri.entry(e.uri).or_default().insert(e.pid);
    }
    let all: BTreeSet<i32> = workers_per_uri.values().flatten().copied().collect();
    let multi = workers_per_uri.values().filter(|s| s.len() >= 2).count();
    say(&format!(
        "  hash stickiness: {} workers served, {multi} of {} keys through >= 2 workers",
        all.len(),
        workers_per_uri.len()
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(all.len() >= 2, "one worker served everything: {all:?}");
    assert!(
        multi * 2 >= workers_per_uri.len(),
        "fewer than half the keys went through 2+ workers ({multi} of {}): \
         the test did not exercise cross-worker stickiness",
        workers_per_uri.len()
    );
    ngx.stop();
}

/// Runs 8 concurrent clients × 40 requests against `policy` over three
/// equal backends, the first delayed by 200 ms.
fn slow_backend_run(policy: &str, per_thread: usize) -> LoadResult {
    let b = Backend::start_many("s", 3);
    b[0].set_mode("delay:200");
    let port = free_port();
    let mut ngx = Nginx::start(&multi_block(port, &b, &[], &[policy]), WORKERS);
    let res = load(port, "/u0/", 8, per_thread);
    say(&format!("  {policy} with s1 slow: {:?}", res.by_body));
    assert_eq!(res.bad(), 0, "{policy}: client errors: {:?}", res.failures);
    assert_eq!(
        b[0].stats().inflight,
        0,
        "{policy}: slow backend still busy"
    );
    ngx.stop();
    res
}

#[test]
fn p2c_and_ewma_avoid_a_slow_backend() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();

    // Control: random ignores load, so the slow backend gets about a third
    // (Binomial(200, 1/3): 67 ± 27 at 4 sd; we only ask for 20%).
    let r = slow_backend_run("random", 25);
    let (slow, total) = (r.count("s1"), r.total);
    assert!(
        slow * 5 >= total,
        "random: slow backend got {slow} of {total} (< 20%): the setup does not \
         show load-awareness; {:?}",
        r.by_body
    );

    for policy in ["p2c", "ewma"] {
        let r = slow_backend_run(policy, 40);
        let (slow, f2, f3) = (r.count("s1"), r.count("s2"), r.count("s3"));
        let fast = f2.min(f3);
        assert!(
            slow * 2 < fast,
            "{policy}: slow backend got {slow}, not under half of the less used fast \
             backend's {fast}: {:?}",
            r.by_body
        );
        assert_eq!(slow + f2 + f3, r.total, "{policy}: {:?}", r.by_body);
    }
}

#[test]
fn consistent_balance_factor_spreads_a_hot_key() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("h", 3);
    for x in &b {
        x.set_mode("delay:100");
    }
    let port = free_port();
    let policies = [
        "hash $arg_k consistent",
        "hash $arg_k consistent balance_factor=125",
    ];
    let mut ngx = Nginx::start(&multi_block(port, &b, &[], &policies), WORKERS);

    // 9 concurrent clients on one key, each request held 100 ms. Without
    // bound, all of it goes to the key's backend.
    let plain = load(port, "/u0/?k=hot", 9, 6);
    assert_eq!(plain.bad(), 0, "{:?}", plain.failures);
    assert_eq!(
        plain.by_body.len(),
        1,
        "consistent hash without balance_factor split a key: {:?}",
        plain.by_body
    );
    let home = plain.by_body.keys().next().unwrap().clone();

    // With balance_factor=125 a peer holding ceil(1.25 × (in flight + 1)
    // / 3) requests is skipped: at most 4 of up to 9 in flight stay home.
    for x in &b {
        x.reset();
    }
    let bounded = load(port, "/u1/?k=hot", 9, 6);
    assert_eq!(bounded.bad(), 0, "{:?}", bounded.failures);
    let stats: Vec<_> = b.iter().map(|x| (x.name.clone(), x.stats())).collect();
    say(&format!(
        "  hot key: unbounded {:?}; balance_factor=125 {:?}; stats {stats:?}",
        plain.by_body, bounded.by_body
    ));
    let total = bounded.total;
    let at_home = bounded.count(&home);
    let elsewhere = total - at_home;
    assert!(
        bounded.by_body.len() >= 2 && elsewhere * 5 >= total,
        "balance_factor=125: hot key still on {home} ({at_home} of {total}, want at least \
         20% elsewhere): {:?}",
        bounded.by_body
    );
    assert!(
        at_home * 5 >= total,
        "balance_factor=125: home {home} got only {at_home} of {total}: {:?}",
        bounded.by_body
    );
    ngx.stop();
}
