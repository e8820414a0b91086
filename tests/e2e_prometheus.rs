//! End-to-end: the Prometheus exposition at `{ha_api}/metrics` through real
//! nginx with 4 workers, judged by Prometheus's own tools: `promtool check
//! metrics` accepts it (an upstream name with `"` and `\` included, and
//! the sessions of an `ha_sticky learn` upstream), and a real Prometheus
//! server scraping it every second sees the requests the backends counted
//! and a drain.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package,
//! which `make deps` installs; when they are missing the tests skip, or
//! fail under `HAB_REQUIRE_NGINX=1` (see `hab_testkit::skip`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::backend::process::{backend_counts, Backend};
use hab_testkit::http;
use hab_testkit::load::load;
use hab_testkit::nginx::{nginx_or_skip, serial, server_lines, stock_mode, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;
use hab_testkit::prometheus::{Job, Prometheus};
use hab_testkit::skip::{say, test_name};

/// An upstream name that needs escaping in a label value.
const ODD: &str = r#"odd"name\x"#;

/// `prog` on `PATH`.
fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// nginx built and `progs` installed, or skip (fail when required).
fn ready_or_skip(progs: &[&str]) -> Option<Vec<PathBuf>> {
    if !nginx_or_skip() {
        return None;
    }
    if stock_mode() {
        say(&format!("SKIP {}: stock nginx has no ha_api", test_name()));
        return None;
    }
    let found: Vec<Option<PathBuf>> = progs.iter().map(|p| which(p)).collect();
    let missing: Vec<String> = progs
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(p, _)| format!("{p} (Debian package prometheus)"))
        .collect();
    if !hab_testkit::skip::installed_or_skip(&missing) {
        return None;
    }
    Some(found.into_iter().flatten().collect())
}

/// Upstream `app` over `backends` proxied at `/`, the upstream [`ODD`]
/// (two servers that refuse connections: nginx never takes the only server
/// out) proxied at `/odd/`, upstream `sticky` (sessions learnt in zone
/// `learnt`) over the first backend at `/sticky/`, upstream `queued`
/// (`max_conns=1` and `ha_queue 8` over the second backend) at
/// `/queued/`, and the API at `/api/` with `write=on`.
fn block(port: u16, backends: &[Backend]) -> String {
    let odd = ODD.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "    upstream app {{
        ha_balance round_robin;
{}    }}

    upstream \"{odd}\" {{
        ha_balance round_robin;
        server 127.0.0.1:1 max_fails=1 fail_timeout=30s;
        server 127.0.0.1:2 max_fails=1 fail_timeout=30s;
    }}

    upstream checked {{
        ha_balance round_robin;
        ha_check interval=300ms timeout=200ms fails=1 type=tcp;
        server {};
        server 127.0.0.1:3;
    }}

    upstream sticky {{
        ha_balance round_robin;
        ha_sticky learn create=$upstream_cookie_sid lookup=$cookie_sid zone=learnt:1m;
        server {};
    }}

    upstream queued {{
        ha_balance round_robin;
        server {} max_conns=1;
        ha_queue 8;
    }}

    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
        location /odd/ {{
            proxy_pass \"http://{odd}\";
            proxy_connect_timeout 2s;
        }}
        location /sticky/ {{
            proxy_pass http://sticky;
            proxy_connect_timeout 2s;
        }}
        location /queued/ {{
            proxy_pass http://queued;
            proxy_connect_timeout 2s;
        }}
        location / {{
            proxy_pass http://app;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
        }}
    }}
",
        server_lines(backends, &[]),
        backends[0].addr(),
        backends[0].addr(),
        backends[1].addr()
    )
}

/// `GET /api/metrics`, checked for status and content type.
fn metrics(port: u16) -> String {
    let r = http::get(port, "/api/metrics").expect("GET /api/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain; version=0.0.4"),
        "content type {ct:?}"
    );
    r.text()
}

/// Runs `promtool check metrics` on `text` (its stdin), bounded by 30 s;
/// returns success and what it printed.
fn promtool_check(promtool: &Path, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let text = text.to_owned();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait promtool").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("promtool check metrics did not finish within 30 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("promtool output");
    let _ = writer.join();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

#[test]
fn promtool_accepts_the_live_exposition() {
    let test = test_name();
    let Some(progs) = ready_or_skip(&["promtool"]) else {
        return;
    };
    let _serial = serial();
    let b = Backend::start_many("m", 3);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &b), WORKERS);

    // Traffic for every family: responses, bytes, times; a failure, an
    // unavailable spell and its downtime in the odd upstream.
    let r = load(port, "/", 4, 25);
    assert_eq!(r.bad(), 0, "{:?}", r.failures);
    for _ in 0..2 {
        let r = http::get(port, "/odd/").expect("GET /odd/");
        assert_eq!(r.status, 502, "{}", r.text());
    }
    // A session learnt in upstream `sticky`, and a request it binds.
    let r = http::get(port, "/sticky/?setsid=a").expect("GET /sticky/");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http::get_with(port, "/sticky/", &[("Cookie", "sid=a")]).expect("GET /sticky/");
    assert_eq!(r.status, 200, "{}", r.text());
    // Upstream `queued`: 4 clients at once on its one connection (each
    // held 300 ms), so 3 wait and are served (the wait histogram gets
    // samples).
    let hs: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || http::get(port, "/queued/?delay=300")))
        .collect();
    for h in hs {
        let r = h.join().unwrap().expect("GET /queued/");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The checks of upstream `checked`: the refused port turns unhealthy.
    assert!(
        wait_until(Duration::from_secs(5), || metrics(port).contains(
            "ha_upstream_server_state{upstream=\"checked\",server=\"127.0.0.1:3\"} 6"
        )),
        "{}",
        metrics(port)
    );
    let text = metrics(port);

    let (ok, printed) = promtool_check(&progs[0], &text);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics: ok={ok}\n{printed}\non:\n{text}"
    );

    // The odd name arrives escaped, and every family has its samples.
    let label = r#"upstream="odd\"name\\x""#;
    for family in [
        "ha_upstream_generation",
        "ha_upstream_server_state",
        "ha_upstream_server_fails_total",
        "ha_upstream_server_unavail_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{family}{{{label}"))),
            "no {family} sample with {label}:\n{text}"
        );
    }
    for addr in ["127.0.0.1:1", "127.0.0.1:2"] {
        let sample = format!("ha_upstream_server_state{{{label},server=\"{addr}\"}} 4");
        assert!(
            text.lines().any(|l| l == sample),
            "refusing {addr} is not unavail (4):\n{text}"
        );
    }
    // Active checks: a refused port is unhealthy (6), with its check
    // counters; the listening one up (1) with no failed check.
    let healthy = b[0].addr();
    for (family, addr, value) in [
        ("ha_upstream_server_state", "127.0.0.1:3", Some("6")),
        ("ha_upstream_server_state", healthy.as_str(), Some("1")),
        (
            "ha_upstream_server_health_checks_unhealthy_total",
            "127.0.0.1:3",
            Some("1"),
        ),
        (
            "ha_upstream_server_health_checks_last_passed",
            "127.0.0.1:3",
            Some("0"),
        ),
        (
            "ha_upstream_server_health_checks_fails_total",
            healthy.as_str(),
            Some("0"),
        ),
        (
            "ha_upstream_server_health_checks_checks_total",
            healthy.as_str(),
            None,
        ),
    ] {
        let prefix = format!("{family}{{upstream=\"checked\",server=\"{addr}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix));
        assert!(
            line.is_some_and(|l| value.is_none_or(|v| l == format!("{prefix}{v}"))),
            "{prefix}{value:?}: {line:?} in\n{text}"
        );
    }
    // Sessions: bound requests per server of an upstream that binds them
    // (only there), the learn zone's figures.
    let sticky = format!("{{upstream=\"sticky\",server=\"{}\"}}", b[0].addr());
    let zone = "{upstream=\"sticky\",zone=\"learnt\"}";
    for line in [
        format!("ha_upstream_server_bound_requests_total{sticky} 1"),
        format!("ha_upstream_sessions{zone} 1"),
        format!("ha_upstream_sessions_created_total{zone} 1"),
        format!("ha_upstream_sessions_evicted_total{zone} 0"),
        format!("ha_upstream_sessions_expired_total{zone} 0"),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("ha_upstream_sessions_capacity{zone} "))),
        "{text}"
    );
    assert!(
        !text.contains("ha_upstream_server_bound_requests_total{upstream=\"app\""),
        "{text}"
    );
    // The queue: its gauges and counters, and a histogram whose samples
    // promtool accepted above; only for the upstream that has one.
    let queued = "{upstream=\"queued\"}";
    for line in [
        format!("ha_upstream_queue_size{queued} 0"),
        format!("ha_upstream_queue_max_size{queued} 8"),
        format!("ha_upstream_queue_overflows_total{queued} 0"),
        "ha_upstream_queue_wait_seconds_bucket{upstream=\"queued\",le=\"+Inf\"} 3".to_owned(),
        format!("ha_upstream_queue_wait_seconds_count{queued} 3"),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
    assert!(
        !text.contains("ha_upstream_queue_size{upstream=\"app\"}"),
        "{text}"
    );
    for v in &b {
        assert!(
            text.contains(&format!(
                "ha_upstream_server_responses_total{{upstream=\"app\",server=\"{}\",code=\"2xx\"}}",
                v.addr()
            )),
            "no 2xx sample for {}:\n{text}",
            v.addr()
        );
    }
    say(&format!(
        "{test}: promtool check metrics passed on:\n{text}"
    ));
    ngx.stop();
}

// ---------------------------------------------------------------------------
// A Prometheus server

#[test]
fn prometheus_scrapes_requests_and_a_drain() {
    let test = test_name();
    let Some(progs) = ready_or_skip(&["prometheus"]) else {
        return;
    };
    let _serial = serial();
    let b = Backend::start_many("s", 3);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &b), WORKERS);
    let prom = Prometheus::start(
        &progs[0],
        &[Job {
            name: "hab",
            path: "/api/metrics",
            port,
        }],
    );

    // Scraped, and healthy.
    let up = prom.wait_for(r#"up{job="hab"}"#, Duration::from_secs(30), |v| v == 1.0);
    assert_eq!(up, Some(1.0), "target not up; log:\n{}", prom.log());

    const N: usize = 300;
    let r = load(port, "/", 4, N / 4);
    assert_eq!(r.bad(), 0, "{:?}", r.failures);
    let counted: u64 = backend_counts(&b).values().sum();
    assert_eq!(counted, N as u64, "backends counted");

    let q = r#"sum(ha_upstream_server_requests_total{upstream="app"})"#;
    let seen = prom.wait_for(q, Duration::from_secs(30), |v| v == counted as f64);
    assert_eq!(
        seen,
        Some(counted as f64),
        "{q} after 30 s; backends counted {counted}"
    );
    say(&format!(
        "{test}: {q} = {seen:?}, backends counted {counted}"
    ));

    // Per server too: each series equals its backend's count.
    let per = prom.query(r#"ha_upstream_server_requests_total{upstream="app"}"#);
    assert_eq!(per.len(), b.len(), "{per:?}");
    for v in &b {
        let want = v.stats().requests as f64;
        let got = per
            .iter()
            .find(|(m, _)| m["server"] == v.addr().as_str())
            .map(|(_, x)| *x);
        assert_eq!(got, Some(want), "server {}: {per:?}", v.addr());
    }

    // Drain server 1: draining (2), in flight or idle, until undrained.
    let addr = b[1].addr();
    let r = http::request(
        port,
        "PATCH",
        "/api/upstreams/app/servers/1",
        br#"{"drain":true}"#,
    )
    .expect("PATCH drain");
    assert_eq!(r.status, 200, "{}", r.text());
    let q = format!(r#"ha_upstream_server_state{{upstream="app",server="{addr}"}}"#);
    let state = prom.wait_for(&q, Duration::from_secs(30), |v| v == 2.0);
    assert_eq!(state, Some(2.0), "{q} after 30 s");
    say(&format!("{test}: {q} = {state:?}"));
    // The others stay up.
    let q = r#"ha_upstream_server_state{upstream="app"} == 1"#;
    assert_eq!(prom.query(q).len(), b.len() - 1, "{q}");

    // The odd upstream's name survives escaping, scraping and querying.
    let q = r#"ha_upstream_generation{upstream="odd\"name\\x"}"#;
    assert!(prom.value(q).is_some(), "{q}: no series");
    // The learn zone's series, labelled by upstream and zone.
    let q = r#"ha_upstream_sessions_capacity{upstream="sticky",zone="learnt"}"#;
    assert!(prom.value(q).is_some_and(|v| v > 0.0), "{q}: no series");
    // The queue's series.
    let q = r#"ha_upstream_queue_max_size{upstream="queued"}"#;
    assert_eq!(prom.value(q), Some(8.0), "{q}");

    // Every scrape was taken whole: no error on the target, no sample
    // dropped (duplicate series, bad timestamps) in Prometheus's own count.
    let (health, error) = prom.target();
    assert_eq!((health.as_str(), error.as_str()), ("up", ""), "target");
    let own = http::get(prom.port, "/metrics").expect("GET prometheus /metrics");
    for dropped in [
        "prometheus_target_scrapes_sample_duplicate_timestamp_total",
        "prometheus_target_scrapes_sample_out_of_bounds_total",
        "prometheus_target_scrapes_sample_out_of_order_total",
        "prometheus_target_scrapes_exceeded_sample_limit_total",
    ] {
        let line = own
            .text()
            .lines()
            .find(|l| l.starts_with(&format!("{dropped} ")))
            .map(str::to_owned);
        assert_eq!(line, Some(format!("{dropped} 0")), "prometheus {dropped}");
    }

    drop(prom);
    ngx.stop();
}
