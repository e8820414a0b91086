//! End-to-end: latency histograms and recent percentiles through real
//! nginx with 4 workers and real backends on 127.0.0.1 (issue 24).
//!
//! Three upstreams of one server each: `fast` (answers at once), `slow`
//! (the backend sleeps 50 ms before answering: `?delay=50`) and `late`
//! (the header at once, the body 50 ms later: `?body_delay=50`). A
//! backend cannot answer sooner than it sleeps, so every response of
//! `slow` lands above the 25 ms bound, header and whole; a `late` one's
//! header comes before its body. The histograms' counts equal the
//! requests the backends saw, summed over the workers' rows; a reset
//! empties them; a reload with other bounds starts new buckets; a real
//! Prometheus's `histogram_quantile` over their rates answers within the
//! bucket bounds of the backends' true latency.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hab_testkit::backend::process::Backend;
use hab_testkit::http;
use hab_testkit::load::load;
use hab_testkit::nginx::{nginx_or_skip, serial, stock_mode, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::prometheus::{Job, Prometheus};
use hab_testkit::skip::{say, test_name};

/// Requests per upstream: 4 clients × 25.
const THREADS: usize = 4;
const PER_THREAD: usize = 25;
const N: u64 = (THREADS * PER_THREAD) as u64;

/// The backends' sleep, ms.
const DELAY_MS: u64 = 50;

/// `fast`, `slow` and `late` over one backend each, the API at `/api/`;
/// `slow` with `buckets` when given.
fn block(port: u16, b: &[Backend], buckets: Option<&str>) -> String {
    let slow_buckets = buckets
        .map(|v| format!("        ha_latency_buckets {v};\n"))
        .unwrap_or_default();
    format!(
        "    upstream fast {{
        ha_balance round_robin;
        server {};
    }}
    upstream slow {{
        ha_balance least_conn;
{slow_buckets}        server {};
    }}
    upstream late {{
        ha_balance round_robin;
        server {};
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
        location /fast/ {{ proxy_pass http://fast; }}
        location /slow/ {{ proxy_pass http://slow; }}
        location /late/ {{ proxy_pass http://late; }}
    }}
",
        b[0].addr(),
        b[1].addr(),
        b[2].addr()
    )
}

fn ready_or_skip() -> bool {
    if !nginx_or_skip() {
        return false;
    }
    if stock_mode() {
        say(&format!("SKIP {}: stock nginx has no ha_api", test_name()));
        return false;
    }
    true
}

/// The samples of `/api/metrics` whose name starts with `family` and
/// whose labels include `upstream="u"`, by their full label text.
fn samples(port: u16, family: &str, u: &str) -> BTreeMap<String, f64> {
    let r = http::get(port, "/api/metrics").expect("GET /api/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let want = format!("upstream=\"{u}\"");
    r.text()
        .lines()
        .filter(|l| l.starts_with(family) && l.contains(&want))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The cumulative buckets of histogram `family` of upstream `u`'s one
/// server, by `le`, with its sum and count.
fn histogram(port: u16, family: &str, u: &str) -> (Vec<(String, f64)>, f64, f64) {
    let all = samples(port, family, u);
    let mut buckets: Vec<(String, f64)> = all
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}_bucket{{")))
        .map(|(k, v)| {
            let le = k
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("an le label")
                .to_owned();
            (le, *v)
        })
        .collect();
    let bound = |le: &str| le.parse::<f64>().unwrap_or(f64::INFINITY);
    buckets.sort_by(|a, b| bound(&a.0).total_cmp(&bound(&b.0)));
    let one = |suffix: &str| {
        all.iter()
            .find(|(k, _)| k.starts_with(&format!("{family}{suffix}{{")))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {family}{suffix} for {u}: {all:?}"))
    };
    (buckets, one("_sum"), one("_count"))
}

/// The count of the bucket `le` (exactly as written) of `buckets`.
fn at(buckets: &[(String, f64)], le: &str) -> f64 {
    buckets
        .iter()
        .find(|(l, _)| l == le)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no bucket le={le}: {buckets:?}"))
}

/// The one server of upstream `u` as the JSON API shows it.
fn server_json(port: u16, u: &str) -> serde_json::Value {
    let r = http::get(port, &format!("/api/upstreams/{u}/servers/0")).expect("GET server");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_str(&r.text()).expect("server JSON")
}

/// The three loads, each checked whole.
fn traffic(port: u16) {
    for path in [
        "/fast/".to_owned(),
        format!("/slow/?delay={DELAY_MS}"),
        format!("/late/?body_delay={DELAY_MS}"),
    ] {
        let r = load(port, &path, THREADS, PER_THREAD);
        assert_eq!(r.bad(), 0, "{path}: {:?}", r.failures);
    }
}

#[test]
fn histograms_count_every_response_in_its_bucket_across_workers() {
    let test = test_name();
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("l", 3);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &b, None), WORKERS);
    traffic(port);
    let seen: Vec<u64> = b.iter().map(|b| b.stats().requests).collect();
    assert_eq!(seen, vec![N; 3], "backends' counts");

    let bounds = [
        "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5",
        "7.5", "10", "+Inf",
    ];
    for (u, backend) in ["fast", "slow", "late"].iter().zip(&b) {
        for family in [
            "ha_upstream_server_response_seconds",
            "ha_upstream_server_header_seconds",
        ] {
            let (buckets, sum, count) = histogram(port, family, u);
            let les: Vec<&str> = buckets.iter().map(|(l, _)| l.as_str()).collect();
            assert_eq!(les, bounds, "{u} {family}: NGINX Plus's bounds by default");
            // Exact: every response the backend answered, once.
            let want = backend.stats().requests as f64;
            assert_eq!(count, want, "{u} {family}_count");
            assert_eq!(at(&buckets, "+Inf"), want, "{u} {family} +Inf");
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{u} {family}: not cumulative: {buckets:?}"
            );
            assert!(sum >= 0.0, "{u} {family}_sum {sum}");
        }
    }
    // `slow`: nothing at or under 25 ms, header or whole; the sum at
    // least N times the delay.
    for family in [
        "ha_upstream_server_response_seconds",
        "ha_upstream_server_header_seconds",
    ] {
        let (buckets, sum, _) = histogram(port, family, "slow");
        assert_eq!(at(&buckets, "0.025"), 0.0, "slow {family}: {buckets:?}");
        assert!(
            sum >= N as f64 * DELAY_MS as f64 / 1000.0,
            "slow {family}_sum {sum}"
        );
    }
    // `late`: the whole response above 25 ms; its header on average at
    // least half the delay before the end.
    let (resp, resp_sum, _) = histogram(port, "ha_upstream_server_response_seconds", "late");
    assert_eq!(at(&resp, "0.025"), 0.0, "late response: {resp:?}");
    let (_, head_sum, _) = histogram(port, "ha_upstream_server_header_seconds", "late");
    assert!(
        head_sum <= resp_sum - N as f64 * DELAY_MS as f64 / 2000.0,
        "late: header sum {head_sum} s, response sum {resp_sum} s"
    );

    // The JSON's recent percentiles: all N responses in the window; the
    // slow median within the bucket bounds of 50 ms (25 to 75 ms, or the
    // next bucket on a loaded machine), the fast one below 25 ms.
    let slow = server_json(port, "slow");
    let p = &slow["percentiles"];
    assert_eq!(p["responses"], N, "{slow}");
    let window = p["window"].as_u64().expect("window");
    assert!((30_000..=60_000).contains(&window), "{slow}");
    let (p50, p95, p99) = (
        p["p50"].as_f64().expect("p50"),
        p["p95"].as_f64().expect("p95"),
        p["p99"].as_f64().expect("p99"),
    );
    assert!((25.0..=100.0).contains(&p50), "slow p50 {p50}: {slow}");
    assert!(p50 <= p95 && p95 <= p99, "{slow}");
    let fast = server_json(port, "fast");
    assert_eq!(fast["percentiles"]["responses"], N, "{fast}");
    let fast_p50 = fast["percentiles"]["p50"].as_f64().expect("fast p50");
    assert!(fast_p50 <= 25.0, "fast p50 {fast_p50}: {fast}");
    // The upstream's totals carry the same window.
    let r = http::get(port, "/api/upstreams/slow").expect("GET upstream");
    let u: serde_json::Value = serde_json::from_str(&r.text()).expect("upstream JSON");
    assert_eq!(u["totals"]["percentiles"]["responses"], N, "{u}");

    // A reset empties the histograms, as every other statistic (the
    // window of recent responses is not a statistic since the reset but
    // the last 30 to 60 s: it keeps them).
    let r = http::request(port, "DELETE", "/api/upstreams/slow", b"").expect("DELETE");
    assert!(r.status == 204 || r.status == 200, "{}", r.text());
    let (buckets, sum, count) = histogram(port, "ha_upstream_server_response_seconds", "slow");
    assert_eq!((count, sum), (0.0, 0.0), "after reset: {buckets:?}");
    assert!(buckets.iter().all(|(_, v)| *v == 0.0), "{buckets:?}");
    say(&format!(
        "{test}: {N} requests per upstream counted exactly; slow p50 {p50} p95 {p95} p99 {p99} ms, fast p50 {fast_p50} ms"
    ));

    // A reload with other bounds for `slow`: new `le` labels; +Inf and
    // the count go on from what they were, the new finite buckets start
    // from zero and fill.
    let r = load(port, &format!("/slow/?delay={DELAY_MS}"), 2, 5);
    assert_eq!(r.bad(), 0, "{:?}", r.failures);
    ngx.reload_with(&block(port, &b, Some("20ms 40ms 1s")));
    let reloaded = hab_testkit::proc::wait_until(Duration::from_secs(10), || {
        histogram(port, "ha_upstream_server_response_seconds", "slow")
            .0
            .iter()
            .any(|(l, _)| l == "0.04")
    });
    assert!(reloaded, "the new bounds never showed");
    let (buckets, _, count) = histogram(port, "ha_upstream_server_response_seconds", "slow");
    let les: Vec<&str> = buckets.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(les, ["0.02", "0.04", "1", "+Inf"], "{buckets:?}");
    assert_eq!(count, 10.0, "the count is carried: {buckets:?}");
    assert_eq!(at(&buckets, "1"), 0.0, "new buckets start empty");
    let r = load(port, &format!("/slow/?delay={DELAY_MS}"), 2, 5);
    assert_eq!(r.bad(), 0, "{:?}", r.failures);
    let (buckets, _, count) = histogram(port, "ha_upstream_server_response_seconds", "slow");
    assert_eq!(count, 20.0, "{buckets:?}");
    assert_eq!(at(&buckets, "0.04"), 0.0, "{buckets:?}");
    assert_eq!(at(&buckets, "1"), 10.0, "{buckets:?}");
    // `fast` kept its zone, histograms and all, across the reload.
    let (_, _, count) = histogram(port, "ha_upstream_server_response_seconds", "fast");
    assert_eq!(count, N as f64);
    ngx.stop();
}

/// `prometheus` on `PATH` (Debian package prometheus, which `make deps`
/// installs).
fn prometheus_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

#[test]
fn prometheus_histogram_quantile_is_within_the_true_latency_buckets() {
    let test = test_name();
    if !ready_or_skip() {
        return;
    }
    let bin = prometheus_bin();
    let missing: Vec<String> = if bin.is_none() {
        vec!["prometheus (Debian package prometheus)".to_owned()]
    } else {
        Vec::new()
    };
    if !hab_testkit::skip::installed_or_skip(&missing) {
        return;
    }
    let bin = bin.expect("checked above");
    let _serial = serial();
    let b = Backend::start_many("q", 3);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &b, None), WORKERS);
    let prom = Prometheus::start(
        &bin,
        &[Job {
            name: "hab",
            path: "/api/metrics",
            port,
        }],
    );
    let up = prom.wait_for(r#"up{job="hab"}"#, Duration::from_secs(30), |v| v == 1.0);
    assert_eq!(up, Some(1.0), "target not up; log:\n{}", prom.log());
    // A scrape before the traffic, so that rates span it.
    let q = r#"ha_upstream_server_response_seconds_count{upstream="slow"}"#;
    assert_eq!(
        prom.wait_for(q, Duration::from_secs(30), |v| v == 0.0),
        Some(0.0),
        "{q}"
    );
    traffic(port);
    let q = r#"sum(ha_upstream_server_response_seconds_count)"#;
    assert_eq!(
        prom.wait_for(q, Duration::from_secs(30), |v| v == 3.0 * N as f64),
        Some(3.0 * N as f64),
        "{q}"
    );
    let quantile = |q: f64, u: &str, family: &str| {
        let expr = format!(
            "histogram_quantile({q}, sum by (le) (rate({family}_bucket{{upstream=\"{u}\"}}[1m])))"
        );
        prom.value(&expr)
            .unwrap_or_else(|| panic!("{expr}: no value"))
    };
    // The slow backend's true latency is 50 ms and a little: the buckets
    // (0.025, 0.05] or (0.05, 0.075]; one more on a loaded machine.
    let slow = quantile(0.5, "slow", "ha_upstream_server_response_seconds");
    assert!((0.025..=0.1).contains(&slow), "slow median {slow} s");
    let slow_head = quantile(0.5, "slow", "ha_upstream_server_header_seconds");
    assert!(
        (0.025..=0.1).contains(&slow_head),
        "slow header median {slow_head} s"
    );
    // `late`: its header in the first buckets, its end with the slow ones.
    let late = quantile(0.5, "late", "ha_upstream_server_response_seconds");
    assert!((0.025..=0.1).contains(&late), "late median {late} s");
    let late_head = quantile(0.5, "late", "ha_upstream_server_header_seconds");
    assert!(late_head <= 0.025, "late header median {late_head} s");
    let fast = quantile(0.5, "fast", "ha_upstream_server_response_seconds");
    assert!(fast <= 0.025, "fast median {fast} s");
    say(&format!(
        "{test}: histogram_quantile(0.5): slow {slow} s (header {slow_head}), late {late} s (header {late_head}), fast {fast} s"
    ));
    ngx.stop();
}

#[test]
fn state_since_follows_the_changes_of_state() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    let b = Backend::start_many("t", 3);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &b, None), WORKERS);
    // Nothing changed since the zone was built.
    let s = server_json(port, "fast");
    assert!(s.get("state_since").is_none(), "{s}");
    let patch = |body: &str| {
        let r = http::request(
            port,
            "PATCH",
            "/api/upstreams/fast/servers/0",
            body.as_bytes(),
        )
        .expect("PATCH");
        assert_eq!(r.status, 200, "{}", r.text());
    };
    patch(r#"{"drain":true}"#);
    let s = server_json(port, "fast");
    assert_eq!(s["state"], "draining", "{s}");
    let drained = s["state_since"].as_str().expect("state_since").to_owned();
    // Read again later: the same instant (a date, not a duration).
    std::thread::sleep(Duration::from_millis(1100));
    let s = server_json(port, "fast");
    assert_eq!(s["state_since"].as_str(), Some(drained.as_str()), "{s}");
    // Draining again changes nothing; undraining does.
    patch(r#"{"drain":true}"#);
    assert_eq!(
        server_json(port, "fast")["state_since"].as_str(),
        Some(drained.as_str())
    );
    patch(r#"{"drain":false}"#);
    let s = server_json(port, "fast");
    assert_eq!(s["state"], "up", "{s}");
    let undrained = s["state_since"].as_str().expect("state_since").to_owned();
    // ISO 8601 in UTC with milliseconds: ordered as text.
    assert!(
        undrained.as_str() > drained.as_str(),
        "{drained} then {undrained}"
    );
    ngx.stop();
}
