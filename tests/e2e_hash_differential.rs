//! Differential: `ha_balance hash` against nginx's own `hash`
//!
//! One nginx (module loaded, 4 workers) with stock `hash $arg_k [consistent]`
//! over 5 backends with weights 1,2,3,1,1 records which backend answers each
//! of 2000 distinct keys; the same configuration with `ha_balance hash
//! $arg_k [consistent]` instead must send every key to the same backend.
//! Server lines are `127.0.0.1:PORT` in both, since consistent hashing
//! places servers on the ring by their name.

use std::time::Instant;

use hab_testkit::backend::process::Backend;
use hab_testkit::http;
use hab_testkit::load::{record_keys, tally};
use hab_testkit::nginx::{
    nginx_or_skip, proxy_block, serial, server_lines, stock_mode, Nginx, WORKERS,
};
use hab_testkit::port::free_port;
use hab_testkit::skip::say;

const KEYS: usize = 2000;
const WEIGHTS: [&str; 5] = ["", "weight=2", "weight=3", "", ""];

/// Runs the keys through `directive` over `b`; returns the backend per key.
fn run(b: &[Backend], directive: &str) -> Vec<String> {
    let port = free_port();
    let upstream = format!("        {directive};\n{}", server_lines(b, &WEIGHTS));
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);
    let started = Instant::now();
    let got = record_keys(port, KEYS);
    say(&format!(
        "  {directive}: {KEYS} keys in {:?}, {:?}",
        started.elapsed(),
        tally(&got)
    ));
    let names: Vec<&str> = b.iter().map(|x| x.name.as_str()).collect();
    let bad: Vec<_> = got
        .iter()
        .enumerate()
        .filter(|(_, o)| !names.contains(&o.as_str()))
        .take(5)
        .collect();
    assert!(bad.is_empty(), "{directive}: failed requests: {bad:?}");
    ngx.stop();
    got
}

fn compare(stock: &str, ours: &str) {
    let b = Backend::start_many("d", 5);
    let want = run(&b, stock);
    let got = run(&b, ours);
    // Every backend owns some keys: the comparison covers all of them.
    assert_eq!(tally(&want).len(), 5, "{stock}: {:?}", tally(&want));
    let mismatches: Vec<String> = want
        .iter()
        .zip(&got)
        .enumerate()
        .filter(|(_, (w, g))| w != g)
        .map(|(i, (w, g))| format!("key-{i}: nginx {w}, ha_balance {g}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "`{ours}` differs from `{stock}` on {} of {KEYS} keys; first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
}

#[test]
fn consistent_hash_matches_stock_nginx() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    compare(
        "hash $arg_k consistent",
        "ha_balance hash $arg_k consistent",
    );
}

#[test]
fn plain_hash_matches_stock_nginx() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    compare("hash $arg_k", "ha_balance hash $arg_k");
}

#[test]
fn consistent_hash_after_weight_changes_matches_stock_nginx_configured_so() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("w", 5);
    let want = run(&b, "hash $arg_k consistent");

    // Ours starts with every weight 1 and gets nginx's weights through the
    // API: the ring of each new generation is rebuilt from the previous
    // one, and must end up exactly nginx's ring for those weights.
    let port = free_port();
    let upstream = format!(
        "        ha_balance hash $arg_k consistent;\n{}",
        server_lines(&b, &[])
    );
    let block = proxy_block(port, &upstream, "").replacen(
        "        location / {",
        "        location /api/ { ha_api write=on; }\n        location / {",
        1,
    );
    let mut ngx = Nginx::start(&block, WORKERS);
    for (id, body) in [
        (2, r#"{"weight":5}"#),
        (1, r#"{"weight":2}"#),
        (2, r#"{"weight":3}"#),
        (4, r#"{"weight":4}"#),
        (4, r#"{"weight":null}"#),
    ] {
        let r = http::request(
            port,
            "PATCH",
            &format!("/api/upstreams/up/servers/{id}"),
            body.as_bytes(),
        )
        .expect("PATCH");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let got = record_keys(port, KEYS);
    ngx.stop();
    let mismatches = want.iter().zip(&got).filter(|(w, g)| w != g).count();
    assert_eq!(
        mismatches, 0,
        "after the weight changes, {mismatches} of {KEYS} keys differ from nginx's ring"
    );
}

/// Above nginx's ring size (a total weight of 104,857, 16 Mi points) the
/// ring is scaled down in proportion instead of refused: keys still split
/// by weight (stock nginx would build 640 million points in each worker
/// for these weights, so there is nothing to compare key by key).
#[test]
fn consistent_hash_above_nginx_ring_size_splits_by_weight() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("big", 3);
    let weights = ["weight=1000000", "weight=1000000", "weight=2000000"];
    let port = free_port();
    let upstream = format!(
        "        ha_balance hash $arg_k consistent;\n{}",
        server_lines(&b, &weights)
    );
    let mut ngx = Nginx::start(&proxy_block(port, &upstream, ""), WORKERS);
    let got = record_keys(port, KEYS);
    ngx.stop();
    let t = tally(&got);
    say(&format!("  weights 1,1,2 million: {KEYS} keys: {t:?}"));
    // Binomial margins: 5 standard deviations of a share p of 2000 keys
    // (p = 1/4: 500 +- 97; p = 1/2: 1000 +- 112).
    for (backend, p) in b.iter().zip([0.25, 0.25, 0.5]) {
        let n = t.get(&backend.name).copied().unwrap_or(0) as f64;
        let (mean, sd) = (KEYS as f64 * p, (KEYS as f64 * p * (1.0 - p)).sqrt());
        assert!(
            (n - mean).abs() <= 5.0 * sd,
            "{}: {n} keys, expected {mean} +- {:.0}: {t:?}",
            backend.name,
            5.0 * sd
        );
    }
    assert_eq!(t.values().sum::<usize>(), KEYS, "failed requests: {t:?}");
}
