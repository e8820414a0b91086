//! End-to-end: the NGINX Plus API under `ha_api` (docs/plus-api-design.md,
//! increment A, §5 and §7) through real nginx with 4 workers and real
//! backends, read by Debian 12's own `prometheus-nginx-exporter`
//! (0.11.0-1+b4, NGINX Plus client v0.10.0) and by a real Prometheus:
//!
//! - every Plus path answers with the JSON types the client decodes, and
//!   the `stream` paths are 404 `PathNotFound` (the code that keeps the
//!   exporter alive);
//! - the exporter starts, asks the versions list once and then, per
//!   scrape, exactly its 17 paths in its order, and scrapes cleanly;
//! - its `nginxplus_upstream_server_*` series equal the module's own
//!   `ha_upstream_server_*` series in one Prometheus scraping both;
//! - what it decodes but does not export (`downtime`, `selected`,
//!   `weight`, `backup`, the queue) equals our own tree's answer;
//! - it survives reloads and sees a drain; started before nginx it waits
//!   with `-nginx.retries`, and without it exits 1.
//!
//! The exporter is the Debian package unpacked (never installed: the
//! package starts a service on :9113) by `make deps` into
//! `target/deps/exporter/` (`HAB_NGINX_EXPORTER` names another binary);
//! `prometheus` comes from Debian's `prometheus` package. When either is
//! missing the tests skip, or fail under `HAB_REQUIRE_NGINX=1` (see
//! `hab_testkit::skip`). `connections` and `http/requests` are nginx's
//! stub_status counters, real only when nginx has that module: only
//! their types are checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::api::api_call;
use hab_testkit::backend::process::Backend;
use hab_testkit::http;
use hab_testkit::load::{load, spawn_load, LoadOpts};
use hab_testkit::nginx::{
    nginx_or_skip, nginx_version, root, scratch_dir, serial, stock_mode, Nginx, WORKERS,
};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;
use hab_testkit::prometheus::{epoch, Job, Prometheus};
use hab_testkit::skip::{installed_or_skip, present_or_skip, say, test_name};
use serde_json::Value;

/// What the exporter asks on each scrape, in its order, below
/// `{scrape-uri}/8/` (design §1.2); `true`: a `stream` path, which
/// answers 404 `PathNotFound`.
const SCRAPE_PATHS: [(&str, bool); 17] = [
    ("nginx", false),
    ("http/caches", false),
    ("processes", false),
    ("slabs", false),
    ("connections", false),
    ("http/requests", false),
    ("ssl", false),
    ("http/server_zones", false),
    ("http/upstreams", false),
    ("stream/server_zones", true),
    ("stream/upstreams", true),
    ("stream/zone_sync", true),
    ("http/location_zones", false),
    ("resolvers", false),
    ("http/limit_reqs", false),
    ("http/limit_conns", false),
    ("stream/limit_conns", true),
];

/// Exporter series (design §3) and the module's equal; `true`: labelled
/// `code` too.
const PAIRS: [(&str, &str, bool); 14] = [
    ("state", "ha_upstream_server_state", false),
    ("active", "ha_upstream_server_active", false),
    ("limit", "ha_upstream_server_limit", false),
    ("requests", "ha_upstream_server_requests_total", false),
    ("responses", "ha_upstream_server_responses_total", true),
    ("sent", "ha_upstream_server_sent_total", false),
    ("received", "ha_upstream_server_received_total", false),
    ("fails", "ha_upstream_server_fails_total", false),
    ("unavail", "ha_upstream_server_unavail_total", false),
    ("header_time", "ha_upstream_server_header_time", false),
    ("response_time", "ha_upstream_server_response_time", false),
    (
        "health_checks_checks",
        "ha_upstream_server_health_checks_checks_total",
        false,
    ),
    (
        "health_checks_fails",
        "ha_upstream_server_health_checks_fails_total",
        false,
    ),
    (
        "health_checks_unhealthy",
        "ha_upstream_server_health_checks_unhealthy_total",
        false,
    ),
];

// ---------------------------------------------------------------------------
// What the tests need

/// The exporter binary: `HAB_NGINX_EXPORTER`, else what `make deps`
/// unpacks.
fn exporter_bin() -> PathBuf {
    match std::env::var_os("HAB_NGINX_EXPORTER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root().join("target/deps/exporter/usr/bin/prometheus-nginx-exporter"),
    }
}

/// `prog` on `PATH`.
fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// nginx with the module built, the exporter unpacked and, with
/// `prometheus`, Prometheus installed; or skip (fail when required).
/// Returns the exporter's and Prometheus's paths.
fn ready_or_skip(prometheus: bool) -> Option<(PathBuf, Option<PathBuf>)> {
    if !nginx_or_skip() {
        return None;
    }
    if stock_mode() {
        say(&format!("SKIP {}: stock nginx has no ha_api", test_name()));
        return None;
    }
    let exporter = exporter_bin();
    let missing: Vec<String> = if exporter.is_file() {
        Vec::new()
    } else {
        vec![exporter.display().to_string()]
    };
    if !present_or_skip(
        "Debian 12's prometheus-nginx-exporter is not unpacked",
        "run `make deps`",
        &missing,
    ) {
        return None;
    }
    let prom = if prometheus {
        let found = which("prometheus");
        let missing: Vec<String> = match found {
            Some(_) => Vec::new(),
            None => vec!["prometheus (Debian package prometheus)".to_owned()],
        };
        if !installed_or_skip(&missing) {
            return None;
        }
        found
    } else {
        None
    };
    Some((exporter, prom))
}

// ---------------------------------------------------------------------------
// The exporter

/// A `prometheus-nginx-exporter -nginx.plus` process, its output in a log
/// file of its own directory under `target/e2e/`. Killed and reaped on
/// drop; the log is kept when the test fails.
struct Exporter {
    child: Option<Child>,
    status: Option<ExitStatus>,
    port: u16,
    dir: PathBuf,
}

impl Exporter {
    /// Starts the exporter scraping `scrape_uri`, with `extra` arguments
    /// (`-nginx.retries` ...); returns at once.
    fn spawn(bin: &Path, scrape_uri: &str, extra: &[&str]) -> Exporter {
        let dir = scratch_dir();
        let log = fs::File::create(dir.join("exporter.log")).expect("create exporter log");
        let port = free_port();
        let mut cmd = Command::new(bin);
        // Its flags' defaults come from these variables: none from ours.
        for var in [
            "NGINX_PLUS",
            "SCRAPE_URI",
            "NGINX_RETRIES",
            "NGINX_RETRY_INTERVAL",
            "TIMEOUT",
            "LISTEN_ADDRESS",
            "TELEMETRY_PATH",
            "CONST_LABELS",
            "SSL_VERIFY",
            "SSL_CA_CERT",
            "SSL_CLIENT_CERT",
            "SSL_CLIENT_KEY",
            "SECURED_METRICS",
            "SSL_SERVER_CERT",
            "SSL_SERVER_KEY",
        ] {
            cmd.env_remove(var);
        }
        let child = cmd
            .args(["-nginx.plus", "-nginx.scrape-uri", scrape_uri])
            .arg("-web.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        Exporter {
            child: Some(child),
            status: None,
            port,
            dir,
        }
    }

    /// Starts the exporter and waits (up to `timeout`) until it logs that
    /// it has started and its port answers; panics with its log otherwise.
    fn start(bin: &Path, scrape_uri: &str, extra: &[&str], timeout: Duration) -> Exporter {
        let mut e = Exporter::spawn(bin, scrape_uri, extra);
        e.wait_started(timeout);
        e
    }

    fn wait_started(&mut self, timeout: Duration) {
        let port = self.port;
        let ok = wait_until(timeout, || {
            self.exited().is_some()
                || (self
                    .log()
                    .contains("NGINX Prometheus Exporter has successfully started")
                    && hab_testkit::port::port_open(port))
        });
        assert!(
            ok && self.exited().is_none(),
            "exporter not started within {timeout:?} (exit: {:?}); log:\n{}",
            self.exited(),
            self.log()
        );
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("exporter.log")).unwrap_or_default()
    }

    /// Its exit status once it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// One scrape: `GET /metrics`, parsed.
    fn scrape(&self) -> Exposition {
        let r = http::get(self.port, "/metrics")
            .unwrap_or_else(|e| panic!("GET exporter /metrics: {e}; log:\n{}", self.log()));
        assert_eq!(r.status, 200, "exporter /metrics: {}", r.text());
        Exposition::parse(&r.text())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            say(&format!(
                "exporter log kept in {}:\n{}",
                self.dir.display(),
                self.log()
            ));
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// One sample: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// A Prometheus text exposition: samples by name (label values with `"`
/// or `\` are not needed here).
struct Exposition {
    text: String,
    samples: BTreeMap<String, Vec<Sample>>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut samples: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            samples
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Exposition {
            text: text.to_owned(),
            samples,
        }
    }

    /// The samples of `name`.
    fn get(&self, name: &str) -> &[Sample] {
        self.samples.get(name).map_or(&[], Vec::as_slice)
    }

    /// The one sample of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self
            .get(name)
            .iter()
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, v)| *v)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?}: several samples");
        found.first().copied()
    }
}

// ---------------------------------------------------------------------------
// Prometheus

// ---------------------------------------------------------------------------
// nginx

/// The three upstreams of design §7: `app` (round robin: `a[0]`, `a[1]`
/// that will answer 500s, counted as failures, `max_fails=1
/// fail_timeout=60s`, and `a[2]` a backup) at `/`; `hc` (`ha_check`
/// every 3 s on `/healthz`, one failure or pass turns it) over `h` at
/// `/hc/`; `q` (`max_conns=1`, `ha_queue 10`) over `q` at `/q/`; the API
/// at `/api/` (write).
fn three_upstreams(port: u16, a: &[Backend], h: &[Backend], q: &Backend) -> String {
    format!(
        "    upstream app {{
        ha_balance round_robin;
        server {};
        server {} max_fails=1 fail_timeout=60s;
        server {} backup;
    }}

    upstream hc {{
        ha_balance round_robin;
        ha_check interval=3s timeout=1s fails=1 passes=1 uri=/healthz;
        server {};
        server {};
    }}

    upstream q {{
        ha_balance round_robin;
        server {} max_conns=1;
        ha_queue 10 timeout=10s;
    }}

    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
        location /hc/ {{
            proxy_pass http://hc;
            proxy_connect_timeout 2s;
        }}
        location /q/ {{
            proxy_pass http://q;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
        }}
        location / {{
            proxy_pass http://app;
            proxy_next_upstream error timeout http_500;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
        }}
    }}
",
        a[0].addr(),
        a[1].addr(),
        a[2].addr(),
        h[0].addr(),
        h[1].addr(),
        q.addr()
    )
}

/// The backends of [`three_upstreams`], `h[1]` failing its checks.
struct Three {
    a: Vec<Backend>,
    h: Vec<Backend>,
    q: Backend,
}

impl Three {
    fn start() -> Three {
        let a = Backend::start_many("a", 3);
        let h = Backend::start_many("h", 2);
        let q = Backend::start("q1");
        a[1].set_mode("fail500");
        h[1].set_health("fail");
        Three { a, h, q }
    }

    fn block(&self, port: u16) -> String {
        three_upstreams(port, &self.a, &self.h, &self.q)
    }

    /// Traffic through every upstream, once `h[1]` is unhealthy: `app`
    /// (one 500 from `a[1]`, retried on `a[0]`, and `a[1]` unavailable
    /// for 60 s), `hc`, and `q` with 4 clients on its one connection (so
    /// some wait in the queue). Every client gets 200.
    fn traffic(&self, port: u16) {
        let unhealthy = wait_until(Duration::from_secs(15), || {
            let (s, v) = api_call(port, "GET", "/api/upstreams/hc", "");
            s == 200
                && v["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["state"] == "unhealthy"))
        });
        assert!(unhealthy, "hc's failing server not unhealthy within 15 s");
        for (path, threads, per) in [("/", 4, 25), ("/hc/", 2, 10), ("/q/?delay=30", 4, 5)] {
            let r = load(port, path, threads, per);
            assert_eq!(r.bad(), 0, "{path}: {:?}", r.failures);
        }
        assert!(self.a[1].stats().requests >= 1, "a[1] was never tried");
    }
}

/// `GET path` on nginx: status and JSON body (panics on another content
/// type or bad JSON).
fn get_json(port: u16, path: &str) -> (u16, Value) {
    let r = http::get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "GET {path}: {} content type {ct:?}: {}",
        r.status,
        r.text()
    );
    let v = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("GET {path}: bad JSON {e}: {}", r.text()));
    (r.status, v)
}

/// `(status, "$request_uri")` of each line of an access log in the
/// harness's format (`$msec $pid $status "$request_uri" ...`).
fn log_requests(path: &Path) -> Vec<(u16, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let status = l.split(' ').nth(2)?.parse().ok()?;
            let uri = l.split('"').nth(1)?.to_owned();
            Some((status, uri))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// JSON types as Go's encoding/json takes them (design §1.2, §1.3)

/// Where a JSON value does not decode into the Go type `ty` (`u` for
/// uint64, `i` for int/int64, `s` string, `b` bool, `o` object, `a`
/// array), a line saying so.
fn check_type(errs: &mut Vec<String>, at: &str, v: &Value, ty: char) {
    let ok = match ty {
        'u' => v.is_u64(),
        'i' => v.is_i64(),
        's' => v.is_string(),
        'b' => v.is_boolean(),
        'o' => v.is_object(),
        'a' => v.is_array(),
        _ => unreachable!("type {ty}"),
    };
    if !ok {
        errs.push(format!("{at}: {v} is not {ty}"));
    }
}

/// Checks `obj`'s keys: `fields` as `key:type` (`?` after the type: may be
/// absent).
fn check_fields(errs: &mut Vec<String>, at: &str, obj: &Value, fields: &[&str]) {
    if !obj.is_object() {
        errs.push(format!("{at}: {obj} is not an object"));
        return;
    }
    for f in fields {
        let (key, ty) = f.split_once(':').expect("key:type");
        let optional = ty.ends_with('?');
        let ty = ty.chars().next().expect("a type");
        match obj.get(key) {
            None if optional => {}
            None => errs.push(format!("{at}: no {key:?} in {obj}")),
            Some(v) => check_type(errs, &format!("{at}.{key}"), v, ty),
        }
    }
}

/// The `Upstream` and `Peer` types of client v0.10.0 (§1.3) on one
/// upstream of `http/upstreams`.
fn check_upstream(errs: &mut Vec<String>, at: &str, u: &Value) {
    check_fields(
        errs,
        at,
        u,
        &["peers:a", "keepalive:i", "zombies:i", "zone:s", "queue:o?"],
    );
    if let Some(q) = u.get("queue") {
        check_fields(
            errs,
            &format!("{at}.queue"),
            q,
            &["size:i", "max_size:i", "overflows:u"],
        );
    }
    for (i, p) in u["peers"].as_array().into_iter().flatten().enumerate() {
        let at = format!("{at}.peers[{i}]");
        check_fields(
            errs,
            &at,
            p,
            &[
                "id:i",
                "server:s",
                "name:s",
                "backup:b",
                "weight:i",
                "state:s",
                "active:u",
                "max_conns:i",
                "requests:u",
                "responses:o",
                "sent:u",
                "received:u",
                "fails:u",
                "unavail:u",
                "health_checks:o?",
                "downtime:u",
                "downstart:s?",
                "selected:s?",
                "header_time:u?",
                "response_time:u?",
                "service:s?",
                "ssl:o?",
            ],
        );
        let state = p["state"].as_str().unwrap_or("");
        if !["up", "draining", "down", "unavail", "checking", "unhealthy"].contains(&state) {
            errs.push(format!("{at}.state: {state:?} is not a Plus state"));
        }
        check_fields(
            errs,
            &format!("{at}.responses"),
            &p["responses"],
            &[
                "1xx:u", "2xx:u", "3xx:u", "4xx:u", "5xx:u", "total:u", "codes:o",
            ],
        );
        if let Some(h) = p.get("health_checks") {
            check_fields(
                errs,
                &format!("{at}.health_checks"),
                h,
                &["checks:u", "fails:u", "unhealthy:u", "last_passed:b?"],
            );
        }
    }
}

/// `NginxHTTPUpstreamConfServer` as client v0.10.0's `UpstreamServer`
/// reads it (§2.3, §5.4): every key present.
fn check_conf_server(errs: &mut Vec<String>, at: &str, s: &Value) {
    check_fields(
        errs,
        at,
        s,
        &[
            "id:i",
            "server:s",
            "weight:i",
            "max_conns:i",
            "max_fails:i",
            "fail_timeout:s",
            "slow_start:s",
            "route:s",
            "backup:b",
            "down:b",
            "drain:b",
        ],
    );
}

/// A Plus error body (§2): `error.status` = `status`, `error.code` =
/// `code`, `error.text`, a 32-hex-digit `request_id`, `href`.
fn check_error(errs: &mut Vec<String>, at: &str, got: u16, v: &Value, status: u16, code: &str) {
    if got != status || v["error"]["status"] != status || v["error"]["code"] != code {
        errs.push(format!("{at}: want {status} {code}, got {got} {v}"));
    }
    check_fields(errs, at, &v["error"], &["text:s"]);
    check_fields(errs, at, v, &["href:s"]);
    let id = v["request_id"].as_str().unwrap_or("");
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        errs.push(format!("{at}: request_id {id:?} is not 32 hex digits"));
    }
}

// ---------------------------------------------------------------------------
// The tests

/// Every Plus path of §5.1 for every version 1..=9, by plain GETs: 200
/// with the JSON types client v0.10.0 decodes into (§1.3), the lists and
/// empty maps as §5.1 gives them; `stream` paths, `license`,
/// `http/keyvals` (and `workers` below 9) 404 with code exactly
/// `PathNotFound` and a Plus error body; other versions `UnknownVersion`.
#[test]
fn plus_paths_answer_with_plus_types() {
    let test = test_name();
    if ready_or_skip(false).is_none() {
        return;
    }
    let _serial = serial();
    let three = Three::start();
    let port = free_port();
    let mut ngx = Nginx::start(&three.block(port), WORKERS);
    three.traffic(port);
    let mut errs = Vec::new();

    let (s, v) = get_json(port, "/api/");
    if (s, &v) != (200, &serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8, 9])) {
        errs.push(format!("/api/: {s} {v}"));
    }
    let version = nginx_version().expect("nginx -v");
    let version = format!("{}.{}.{}", version.0, version.1, version.2);
    let workers: BTreeSet<i32> = ngx.worker_pids().into_iter().collect();
    for n in 1..=9 {
        let at = |p: &str| format!("/api/{n}/{p}");
        let (s, v) = get_json(port, &at(""));
        let mut root = vec![
            "nginx",
            "processes",
            "connections",
            "slabs",
            "http",
            "resolvers",
            "ssl",
        ];
        if n == 9 {
            root.push("workers");
        }
        if s != 200 || v != serde_json::json!(root) {
            errs.push(format!("{}: {s} {v}", at("")));
        }
        let (s, v) = get_json(port, &at("http"));
        let http_list = serde_json::json!([
            "requests",
            "server_zones",
            "location_zones",
            "caches",
            "limit_conns",
            "limit_reqs",
            "upstreams"
        ]);
        if s != 200 || v != http_list {
            errs.push(format!("{}: {s} {v}", at("http")));
        }

        let (s, v) = get_json(port, &at("nginx"));
        check_fields(
            &mut errs,
            &at("nginx"),
            &v,
            &[
                "version:s",
                "build:s",
                "address:s",
                "generation:u",
                "load_timestamp:s",
                "timestamp:s",
                "pid:u",
                "ppid:u",
            ],
        );
        let pid = v["pid"].as_i64().unwrap_or(0) as i32;
        if s != 200
            || v["version"] != version.as_str()
            || !workers.contains(&pid)
            || v["ppid"] != ngx.master_pid()
            || v["build"].as_str().is_some_and(|b| b.contains("-r"))
        {
            errs.push(format!(
                "{}: {s} {v} (nginx {version}, workers {workers:?}, master {})",
                at("nginx"),
                ngx.master_pid()
            ));
        }
        for (path, fields) in [
            ("processes", &["respawned:i"][..]),
            (
                "connections",
                &["accepted:u", "dropped:u", "active:u", "idle:u"][..],
            ),
            ("http/requests", &["total:u", "current:u"][..]),
            (
                "ssl",
                &["handshakes:u", "handshakes_failed:u", "session_reuses:u"][..],
            ),
        ] {
            let (s, v) = get_json(port, &at(path));
            if s != 200 {
                errs.push(format!("{}: {s} {v}", at(path)));
            }
            check_fields(&mut errs, &at(path), &v, fields);
        }
        for path in [
            "slabs",
            "resolvers",
            "http/server_zones",
            "http/location_zones",
            "http/caches",
            "http/limit_reqs",
            "http/limit_conns",
        ] {
            let (s, v) = get_json(port, &at(path));
            if s != 200 || v != serde_json::json!({}) {
                errs.push(format!("{}: want 200 {{}}, got {s} {v}", at(path)));
            }
        }

        let (s, v) = get_json(port, &at("http/upstreams"));
        let names: Vec<&String> = v
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        if s != 200 || names != ["app", "hc", "q"] {
            errs.push(format!("{}: {s} upstreams {names:?}", at("http/upstreams")));
        }
        for (name, u) in v.as_object().into_iter().flatten() {
            check_upstream(&mut errs, &format!("{}.{name}", at("http/upstreams")), u);
        }
        let (s, one) = get_json(port, &at("http/upstreams/app"));
        if s != 200 || one["peers"].as_array().map(Vec::len) != Some(3) {
            errs.push(format!("{}: {s} {one}", at("http/upstreams/app")));
        }
        check_upstream(&mut errs, &at("http/upstreams/app"), &one);
        if v["q"]["queue"]["max_size"] != 10 {
            errs.push(format!(
                "{}: q's queue {}",
                at("http/upstreams"),
                v["q"]["queue"]
            ));
        }

        let (s, list) = get_json(port, &at("http/upstreams/app/servers"));
        let servers = list.as_array().cloned().unwrap_or_default();
        let addrs: Vec<String> = three.a.iter().map(Backend::addr).collect();
        if s != 200
            || servers
                .iter()
                .map(|c| c["server"].clone())
                .collect::<Vec<_>>()
                != addrs
        {
            errs.push(format!("{}: {s} {list}", at("http/upstreams/app/servers")));
        }
        for (i, c) in servers.iter().enumerate() {
            check_conf_server(
                &mut errs,
                &format!("{}[{i}]", at("http/upstreams/app/servers")),
                c,
            );
        }
        let (s, c) = get_json(port, &at("http/upstreams/app/servers/2"));
        check_conf_server(&mut errs, &at("http/upstreams/app/servers/2"), &c);
        if s != 200 || c["backup"] != true || c["server"] != addrs[2].as_str() {
            errs.push(format!("{}: {s} {c}", at("http/upstreams/app/servers/2")));
        }
        if c["fail_timeout"] != "10s" || c["slow_start"] != "0s" || c["max_fails"] != 1 {
            errs.push(format!(
                "{}: defaults not as client v0.10.0 defaults them: {c}",
                at("http/upstreams/app/servers/2")
            ));
        }

        let (s, v) = get_json(port, &at("workers"));
        if n == 9 {
            if (s, &v) != (200, &serde_json::json!([])) {
                errs.push(format!("{}: {s} {v}", at("workers")));
            }
        } else {
            check_error(&mut errs, &at("workers"), s, &v, 404, "PathNotFound");
        }
        for path in [
            "stream",
            "stream/",
            "stream/server_zones",
            "stream/upstreams",
            "stream/zone_sync",
            "stream/limit_conns",
            "license",
            "http/keyvals",
        ] {
            let (s, v) = get_json(port, &at(path));
            check_error(&mut errs, &at(path), s, &v, 404, "PathNotFound");
        }
        for (path, status, code) in [
            ("http/upstreams/nope", 404, "UpstreamNotFound"),
            ("http/upstreams/app/servers/x", 400, "UpstreamBadServerId"),
            (
                "http/upstreams/app/servers/99",
                404,
                "UpstreamServerNotFound",
            ),
        ] {
            let (s, v) = get_json(port, &at(path));
            check_error(&mut errs, &at(path), s, &v, status, code);
        }
    }
    for v in ["0", "10", "08"] {
        let path = format!("/api/{v}/nginx");
        let (s, body) = get_json(port, &path);
        check_error(&mut errs, &path, s, &body, 404, "UnknownVersion");
    }
    // Two requests' ids differ.
    let (_, e1) = get_json(port, "/api/8/stream/upstreams");
    let (_, e2) = get_json(port, "/api/8/stream/upstreams");
    if e1["request_id"] == e2["request_id"] {
        errs.push(format!("request_id repeated: {e1} {e2}"));
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    let (_, v) = get_json(port, "/api/8/connections");
    let (_, r) = get_json(port, "/api/8/http/requests");
    say(&format!("{test}: connections {v}, http/requests {r}"));
    ngx.stop();
}

/// Design §7 `exporter_starts_and_asks_what_we_know`: with
/// `location /api/` and `-nginx.scrape-uri http://127.0.0.1:P/api/`, and
/// with `location /api` and `.../api`: the exporter starts; nginx's
/// access log shows the versions list once, then per scrape exactly the
/// 17 paths of §1.2 in that order (200, the `stream` ones 404); every
/// scrape has `nginxplus_up 1` and the upstream's series; its log has no
/// "Error getting stats".
#[test]
fn exporter_starts_and_asks_what_we_know() {
    let test = test_name();
    let Some((bin, _)) = ready_or_skip(false) else {
        return;
    };
    let _serial = serial();
    let b = Backend::start_many("e", 2);
    let (p1, p2) = (free_port(), free_port());
    let block = format!(
        "    upstream app {{
        ha_balance round_robin;
        server {};
        server {};
    }}

    server {{
        listen 127.0.0.1:{p1};
        access_log logs/slash.log hab;
        location /api/ {{ ha_api; }}
        location / {{ proxy_pass http://app; }}
    }}

    server {{
        listen 127.0.0.1:{p2};
        access_log logs/bare.log hab;
        location /api {{ ha_api; }}
        location / {{ proxy_pass http://app; }}
    }}
",
        b[0].addr(),
        b[1].addr()
    );
    let mut ngx = Nginx::start(&block, WORKERS);
    let r = load(p1, "/", 2, 10);
    assert_eq!(r.bad(), 0, "{:?}", r.failures);

    for (port, uri, log) in [(p1, "/api/", "slash.log"), (p2, "/api", "bare.log")] {
        let scrape_uri = format!("http://127.0.0.1:{port}{uri}");
        let exporter = Exporter::start(&bin, &scrape_uri, &[], Duration::from_secs(15));
        const SCRAPES: usize = 3;
        for i in 0..SCRAPES {
            let m = exporter.scrape();
            assert_eq!(
                m.value("nginxplus_up", &[]),
                Some(1.0),
                "{scrape_uri}: scrape {i}: nginxplus_up; exporter log:\n{}\n{}",
                exporter.log(),
                m.text
            );
            for addr in [b[0].addr(), b[1].addr()] {
                let labels = [("upstream", "app"), ("server", addr.as_str())];
                assert_eq!(
                    m.value("nginxplus_upstream_server_state", &labels),
                    Some(1.0),
                    "{scrape_uri}: scrape {i}: state of {addr}:\n{}",
                    m.text
                );
                assert!(
                    m.value("nginxplus_upstream_server_requests", &labels)
                        .is_some_and(|v| v > 0.0),
                    "{scrape_uri}: scrape {i}: requests of {addr}:\n{}",
                    m.text
                );
            }
        }
        let exporter_log = exporter.log();
        assert!(
            !exporter_log.contains("Error getting stats"),
            "{scrape_uri}: exporter log:\n{exporter_log}"
        );
        let mut want = vec![(200, uri.to_owned())];
        for _ in 0..SCRAPES {
            for (p, stream) in SCRAPE_PATHS {
                want.push((if stream { 404 } else { 200 }, format!("{uri}/8/{p}")));
            }
        }
        // nginx logs a request after its answer: the last line may still
        // be on its way when the exporter has answered.
        let log_path = ngx.dir().join("logs").join(log);
        let asked = || -> Vec<(u16, String)> {
            log_requests(&log_path)
                .into_iter()
                .filter(|(_, u)| u.starts_with("/api"))
                .collect()
        };
        wait_until(Duration::from_secs(5), || asked().len() >= want.len());
        let got = asked();
        assert_eq!(
            got, want,
            "{scrape_uri}: what the exporter asked (access log {log})"
        );
        say(&format!(
            "{test}: {scrape_uri}: {} requests, as the design says",
            got.len()
        ));
        drop(exporter);
    }
    ngx.stop();
}

/// The pairs of §3 in one Prometheus evaluation at `at`: a line for each
/// difference (empty when they are equal). `hab` and `exporter` are the
/// jobs.
fn compare_series(prom: &Prometheus, at: f64) -> Vec<String> {
    type Key = (String, String, String);
    let key = |m: &Value| -> Key {
        let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
        (s("upstream"), s("server"), s("code"))
    };
    let mut diffs = Vec::new();
    for (exp, ours, _) in PAIRS {
        let e: BTreeMap<Key, f64> = prom
            .query_at(&format!("nginxplus_upstream_server_{exp}"), at)
            .iter()
            .map(|(m, x)| (key(m), *x))
            .collect();
        let o: BTreeMap<Key, f64> = prom
            .query_at(ours, at)
            .iter()
            .map(|(m, x)| (key(m), *x))
            .collect();
        if e.is_empty() && !ours.contains("health_checks") {
            diffs.push(format!("nginxplus_upstream_server_{exp}: no series"));
        }
        for (k, x) in &e {
            match o.get(k) {
                Some(y) if y == x => {}
                Some(y) => diffs.push(format!("{exp}{k:?}: exporter {x}, module {y}")),
                // Before a first response ours is absent, the exporter's 0.
                None if exp.ends_with("_time") && *x == 0.0 => {}
                None => diffs.push(format!("{exp}{k:?}: exporter {x}, module absent")),
            }
        }
        for (k, y) in &o {
            // The exporter leaves out health checks that are all zero.
            if !e.contains_key(k) && (!exp.starts_with("health_checks") || *y != 0.0) {
                diffs.push(format!("{exp}{k:?}: module {y}, exporter absent"));
            }
        }
    }
    // The same pair in PromQL, as one would write it on a dashboard.
    for (exp, ours, code) in PAIRS {
        let on = if code {
            "upstream,server,code"
        } else {
            "upstream,server"
        };
        let q = format!("(nginxplus_upstream_server_{exp} - on({on}) {ours}) != 0");
        for (m, x) in prom.query_at(&q, at) {
            diffs.push(format!("{q}: {m} {x}"));
        }
    }
    diffs
}

/// Design §7 `series_equal_the_modules`: `app`, `hc`, `q` (see
/// [`three_upstreams`]); traffic, then none; one Prometheus scrapes the
/// module's `/api/metrics` and the exporter every second. Two scrapes of
/// each past the stop, every pair of §3 is equal in one evaluation,
/// server by server (and code by code), counted both ways, and in PromQL
/// `(A - on(upstream,server) B) != 0` is empty; the failing and unhealthy
/// servers' counters moved; `responses_codes` all 0, `zombies` 0.
#[test]
fn series_equal_the_modules() {
    let test = test_name();
    let Some((bin, Some(prom_bin))) = ready_or_skip(true) else {
        return;
    };
    let _serial = serial();
    let three = Three::start();
    let port = free_port();
    let mut ngx = Nginx::start(&three.block(port), WORKERS);
    let exporter = Exporter::start(
        &bin,
        &format!("http://127.0.0.1:{port}/api/"),
        &[],
        Duration::from_secs(15),
    );
    let prom = Prometheus::start(
        &prom_bin,
        &[
            Job {
                name: "hab",
                path: "/api/metrics",
                port,
            },
            Job {
                name: "exporter",
                path: "/metrics",
                port: exporter.port,
            },
        ],
    );
    let up = wait_until(Duration::from_secs(30), || {
        prom.query_at("up == 1", epoch()).len() == 2 && min_now(&prom, "nginxplus_up") == Some(1.0)
    });
    assert!(
        up,
        "both targets up and nginxplus_up 1 within 30 s: {:?} {:?}; exporter log:\n{}\nprometheus log:\n{}",
        prom.query_at("up", epoch()),
        prom.query_at("nginxplus_up", epoch()),
        exporter.log(),
        prom.log()
    );

    three.traffic(port);
    let stopped = epoch();
    // Two scrapes of each job after the stop.
    let scraped = wait_until(Duration::from_secs(20), || {
        min_now(&prom, "timestamp(up)").is_some_and(|t| t > stopped + 2.0)
    });
    assert!(scraped, "no two scrapes of both jobs after the traffic");

    // Health checks go on (every 3 s, on whichever scrape of the two
    // targets comes first): an evaluation where both saw the same checks
    // comes within a few tries; everything else does not move.
    let mut diffs = Vec::new();
    for _ in 0..20 {
        diffs = compare_series(&prom, epoch());
        if diffs.is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(700));
    }
    assert!(
        diffs.is_empty(),
        "exporter and module differ:\n{}\nexporter log:\n{}",
        diffs.join("\n"),
        exporter.log()
    );

    let now = epoch();
    let value = |q: &str| -> Vec<(Value, f64)> { prom.query_at(q, now) };
    let one = |q: &str| -> f64 {
        let r = value(q);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r[0].1
    };
    let (a1, h1, q1) = (three.a[1].addr(), three.h[1].addr(), three.q.addr());
    // What moved, and the states, as the design's upstreams make them.
    // a[1] may be tried by several workers at once before the first 500
    // makes it unavailable: at least one of each.
    for q in [
        format!(r#"nginxplus_upstream_server_fails{{server="{a1}"}}"#),
        format!(r#"nginxplus_upstream_server_unavail{{server="{a1}"}}"#),
        format!(r#"nginxplus_upstream_server_responses{{server="{a1}",code="5xx"}}"#),
    ] {
        assert!(one(&q) >= 1.0, "{q}");
    }
    for (q, want) in [
        (
            format!(r#"nginxplus_upstream_server_state{{server="{a1}"}}"#),
            4.0,
        ),
        (
            format!(r#"nginxplus_upstream_server_state{{server="{h1}"}}"#),
            6.0,
        ),
        (
            format!(r#"nginxplus_upstream_server_limit{{server="{q1}"}}"#),
            1.0,
        ),
        (
            format!(r#"nginxplus_upstream_server_requests{{server="{q1}"}}"#),
            20.0,
        ),
    ] {
        assert_eq!(one(&q), want, "{q}");
    }
    let q = format!(r#"nginxplus_upstream_server_health_checks_unhealthy{{server="{h1}"}}"#);
    assert!(one(&q) >= 1.0, "{q}");
    assert!(
        value("nginxplus_upstream_server_active != 0").is_empty(),
        "active after the traffic"
    );
    let sum = |q: &str| value(&format!("sum({q})")).first().map_or(0.0, |r| r.1);
    let served: f64 = three.a.iter().map(|b| b.stats().requests as f64).sum();
    assert_eq!(
        sum(r#"nginxplus_upstream_server_requests{upstream="app"}"#),
        served,
        "app's requests: the backends counted {served}"
    );

    // Not ours to have: per-code counts (§8), zombies (increment B).
    let codes = value("nginxplus_upstream_server_responses_codes");
    assert!(!codes.is_empty(), "no responses_codes series");
    assert!(
        codes.iter().all(|(_, x)| *x == 0.0),
        "responses_codes not all 0: {codes:?}"
    );
    let zombies = value("nginxplus_upstream_zombies");
    assert_eq!(zombies.len(), 3, "zombies: {zombies:?}");
    assert!(zombies.iter().all(|(_, x)| *x == 0.0), "{zombies:?}");

    // Every scrape of the exporter had everything: no failed one since
    // the start (nginxplus_up never 0).
    assert_eq!(
        value("min_over_time(nginxplus_up[5m])")
            .first()
            .map(|r| r.1),
        Some(1.0),
        "nginxplus_up was 0 at some scrape; exporter log:\n{}",
        exporter.log()
    );
    assert!(
        !exporter.log().contains("Error getting stats"),
        "exporter log:\n{}",
        exporter.log()
    );
    say(&format!(
        "{test}: {} pairs equal on {} servers",
        PAIRS.len(),
        value("nginxplus_upstream_server_state").len()
    ));
    drop(prom);
    drop(exporter);
    ngx.stop();
}

/// Design §7 `json_fields_the_exporter_does_not_export`: at idle,
/// `/api/8/http/upstreams` and our `/api/upstreams` agree, server by
/// server, on `downtime` (which a server unavailable now accumulates, so
/// the Plus answer is taken between two of ours and must lie between
/// them), `selected`, `weight`, `backup`, and upstream by upstream on
/// `queue.size`, `max_size`, `overflows`.
#[test]
fn json_fields_the_exporter_does_not_export() {
    if ready_or_skip(false).is_none() {
        return;
    }
    let _serial = serial();
    let three = Three::start();
    let port = free_port();
    let mut ngx = Nginx::start(&three.block(port), WORKERS);
    three.traffic(port);

    let ours_path = "/api/upstreams";
    let (s, before) = get_json(port, ours_path);
    assert_eq!(s, 200, "{before}");
    let (s, plus) = get_json(port, "/api/8/http/upstreams");
    assert_eq!(s, 200, "{plus}");
    let (s, after) = get_json(port, ours_path);
    assert_eq!(s, 200, "{after}");

    let mut errs = Vec::new();
    let mut downtime_seen = false;
    for name in ["app", "hc", "q"] {
        let (b, p, a) = (&before[name], &plus[name], &after[name]);
        for key in ["size", "max_size", "overflows"] {
            let (ob, pp, oa) = (&b["queue"][key], &p["queue"][key], &a["queue"][key]);
            if ob != pp || pp != oa {
                errs.push(format!(
                    "{name}.queue.{key}: ours {ob}, Plus {pp}, ours {oa}"
                ));
            }
        }
        let peers = |u: &Value| u["peers"].as_array().cloned().unwrap_or_default();
        let (pb, pp, pa) = (peers(b), peers(p), peers(a));
        if pb.len() != pp.len() || pp.len() != pa.len() {
            errs.push(format!(
                "{name}: peers {} / {} / {}",
                pb.len(),
                pp.len(),
                pa.len()
            ));
            continue;
        }
        for ((ob, pp), oa) in pb.iter().zip(&pp).zip(&pa) {
            let at = format!("{name} {}", pp["server"]);
            if ob["id"] != pp["id"] || ob["server"] != pp["server"] {
                errs.push(format!("{at}: ours {ob}, Plus {pp}"));
            }
            for key in ["selected", "weight", "backup"] {
                if ob[key] != pp[key] || pp[key] != oa[key] {
                    errs.push(format!(
                        "{at}.{key}: ours {}, Plus {}, ours {}",
                        ob[key], pp[key], oa[key]
                    ));
                }
            }
            let d = |v: &Value| v["downtime"].as_u64();
            match (d(ob), d(pp), d(oa)) {
                (Some(x), Some(y), Some(z)) if x <= y && y <= z => {
                    downtime_seen |= y > 0;
                }
                (x, y, z) => {
                    errs.push(format!("{at}.downtime: ours {x:?}, Plus {y:?}, ours {z:?}"))
                }
            }
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    say(&format!(
        "{}: downtime {}",
        test_name(),
        if downtime_seen {
            "counted"
        } else {
            "0 everywhere"
        }
    ));
    assert_eq!(plus["q"]["queue"]["max_size"], 10, "{plus}");
    assert!(
        plus["app"]["peers"][0]["selected"].is_string(),
        "app's first server has no selected: {plus}"
    );
    ngx.stop();
}

/// The exporter's `nginxplus_up` at every one of its scrapes, scraped
/// every 200 ms by a thread until `stop` (at most 60 s).
fn scrape_until(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<(f64, String)>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match http::get(port, "/metrics") {
                Ok(r) if r.status == 200 => {
                    let m = Exposition::parse(&r.text());
                    let up = m.value("nginxplus_up", &[]).unwrap_or(-1.0);
                    seen.push((up, if up == 1.0 { String::new() } else { m.text }));
                }
                Ok(r) => seen.push((-1.0, format!("status {}", r.status))),
                Err(e) => seen.push((-1.0, e.to_string())),
            }
            thread::sleep(Duration::from_millis(200));
        }
        seen
    })
}

/// Design §7 `exporter_survives_reload_and_drain`: while the exporter is
/// scraped continuously (and the upstream has traffic), `nginx -s reload`
/// with the configuration unchanged, then with the upstream changed:
/// `nginxplus_up` is 1 at every scrape; then a PATCH `{"drain":true}` on
/// the Plus path shows `nginxplus_upstream_server_state` 2 within 2
/// scrapes.
#[test]
fn exporter_survives_reload_and_drain() {
    let test = test_name();
    let Some((bin, _)) = ready_or_skip(false) else {
        return;
    };
    let _serial = serial();
    let b = Backend::start_many("d", 3);
    let port = free_port();
    let block = |weight: u32| {
        format!(
            "    upstream app {{
        ha_balance round_robin;
        server {} weight={weight};
        server {};
        server {};
    }}

    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api write=on; }}
        location / {{
            proxy_pass http://app;
            proxy_connect_timeout 2s;
        }}
    }}
",
            b[0].addr(),
            b[1].addr(),
            b[2].addr()
        )
    };
    let mut ngx = Nginx::start(&block(1), WORKERS);
    let exporter = Exporter::start(
        &bin,
        &format!("http://127.0.0.1:{port}/api/"),
        &[],
        Duration::from_secs(15),
    );
    let traffic = spawn_load(
        port,
        "/",
        LoadOpts {
            pause: Duration::from_millis(20),
            ..LoadOpts::new(2, 100_000)
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = scrape_until(exporter.port, Arc::clone(&stop));

    thread::sleep(Duration::from_millis(600));
    ngx.reload();
    thread::sleep(Duration::from_millis(600));
    ngx.reload_with(&block(3));
    thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::Relaxed);
    let seen = scraper.join().expect("scraper thread");
    let r = traffic.stop();
    assert_eq!(r.bad(), 0, "{:?}", r.failures);
    assert!(seen.len() >= 5, "only {} scrapes", seen.len());
    let bad: Vec<&(f64, String)> = seen.iter().filter(|(up, _)| *up != 1.0).collect();
    assert!(
        bad.is_empty(),
        "{} of {} scrapes during the reloads were not nginxplus_up 1: {bad:?}\nexporter log:\n{}",
        bad.len(),
        seen.len(),
        exporter.log()
    );
    let m = exporter.scrape();
    let a0_addr = b[0].addr();
    let a0 = [("upstream", "app"), ("server", a0_addr.as_str())];
    let (s, c) = api_call(port, "GET", "/api/8/http/upstreams/app/servers/0", "");
    assert_eq!((s, &c["weight"]), (200, &serde_json::json!(3)), "{c}");
    assert_eq!(m.value("nginxplus_upstream_server_state", &a0), Some(1.0));

    // Drain server 1 through the Plus path.
    let addr = b[1].addr();
    let (s, c) = api_call(
        port,
        "PATCH",
        "/api/8/http/upstreams/app/servers/1",
        r#"{"drain":true}"#,
    );
    assert_eq!(s, 200, "PATCH drain: {c}");
    assert_eq!(c["drain"], true, "{c}");
    let labels = [("upstream", "app"), ("server", addr.as_str())];
    let mut states = Vec::new();
    for _ in 0..2 {
        states.push(
            exporter
                .scrape()
                .value("nginxplus_upstream_server_state", &labels),
        );
        if states.last() == Some(&Some(2.0)) {
            break;
        }
    }
    assert_eq!(
        states.last(),
        Some(&Some(2.0)),
        "state of the drained {addr} in 2 scrapes: {states:?}"
    );
    assert!(
        !exporter.log().contains("Error getting stats"),
        "exporter log:\n{}",
        exporter.log()
    );
    say(&format!(
        "{test}: {} scrapes across two reloads all nginxplus_up 1; drained reads 2",
        seen.len()
    ));
    drop(exporter);
    ngx.stop();
}

/// Design §7 `exporter_before_nginx`: started before nginx with
/// `-nginx.retries 5 -nginx.retry-interval 1s`, the exporter starts once
/// nginx answers and scrapes it; without retries it exits 1 at once
/// (design §1.1), saying it could not create its client.
#[test]
fn exporter_before_nginx() {
    let test = test_name();
    let Some((bin, _)) = ready_or_skip(false) else {
        return;
    };
    let _serial = serial();
    let b = Backend::start_many("w", 2);
    let port = free_port();
    let uri = format!("http://127.0.0.1:{port}/api/");

    // Without retries: exit 1.
    let mut early = Exporter::spawn(&bin, &uri, &[]);
    let exited = wait_until(Duration::from_secs(15), || early.exited().is_some());
    assert!(
        exited,
        "exporter without retries still running; log:\n{}",
        early.log()
    );
    assert_eq!(
        early.exited().and_then(|s| s.code()),
        Some(1),
        "{}",
        early.log()
    );
    assert!(
        early.log().contains("Could not create Nginx Plus Client"),
        "{}",
        early.log()
    );
    drop(early);

    // With retries: waits, then starts.
    let mut waiting = Exporter::spawn(
        &bin,
        &uri,
        &["-nginx.retries", "5", "-nginx.retry-interval", "1s"],
    );
    thread::sleep(Duration::from_millis(1200));
    assert!(
        waiting.exited().is_none(),
        "exporter with retries exited before nginx: {:?}; log:\n{}",
        waiting.exited(),
        waiting.log()
    );
    let block = format!(
        "    upstream app {{
        ha_balance round_robin;
        server {};
        server {};
    }}

    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
        location / {{ proxy_pass http://app; }}
    }}
",
        b[0].addr(),
        b[1].addr()
    );
    let started = Instant::now();
    let mut ngx = Nginx::start(&block, WORKERS);
    say(&format!("{test}: nginx up in {:?}", started.elapsed()));
    waiting.wait_started(Duration::from_secs(10));
    let m = waiting.scrape();
    assert_eq!(m.value("nginxplus_up", &[]), Some(1.0), "{}", m.text);
    assert_eq!(
        m.get("nginxplus_upstream_server_state").len(),
        2,
        "{}",
        m.text
    );
    drop(waiting);
    ngx.stop();
}

/// The smallest value of `q` now, `None` while it has no result.
fn min_now(prom: &Prometheus, q: &str) -> Option<f64> {
    prom.query_at(q, epoch())
        .into_iter()
        .map(|(_, x)| x)
        .reduce(f64::min)
}
