//! End-to-end: the alerting rules and the Grafana dashboard shipped in
//! `contrib/` are built on the series the module really produces.
//!
//! Real nginx (4 workers) with the module and real backends on 127.0.0.1
//! serve a set of upstreams, each in a situation an alert is about: a
//! healthy one, one answering 5xx, a slow one, one losing a server, one
//! whose server fails and comes back three times, one with every server
//! refusing, active checks failing, servers set down and drained through
//! the API, a full request queue, a learn zone too small for its
//! sessions. A real
//! Prometheus scrapes it every second with the shipped rules loaded, each
//! `for` set to 0s in a copy derived from the shipped file. Then:
//!
//! - Prometheus loaded every rule and evaluates each without error;
//! - every series selector of a rule, and of a dashboard query (template
//!   variables substituted: all values, then one of each), has series;
//!   every dashboard query (panels, variables, annotations) evaluates
//!   without error to at least one series;
//! - the alerts that fire are exactly those the situations call for
//!   (alert, severity, upstream, server), none for the healthy upstream:
//!   every alert of the file, each severity, fires somewhere;
//! - nginx stopped, the scrape alerts fire.
//!
//! [`dashboard_is_a_grafana_model`] checks the dashboard's structure with
//! no nginx. `prometheus` comes from Debian's `prometheus` package, which
//! `make deps` installs; when it is missing the end-to-end test skips, or
//! fails under `HAB_REQUIRE_NGINX=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use hab_testkit::backend::process::Backend;
use hab_testkit::http;
use hab_testkit::load::load;
use hab_testkit::nginx::{nginx_or_skip, root, scratch_dir, serial, stock_mode, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;
use hab_testkit::prometheus::{Job, Prometheus};
use hab_testkit::skip::{installed_or_skip, say, test_name};
use serde_json::Value;

/// The shipped rules, relative to the workspace root.
const RULES: &str = "contrib/prometheus/ha-balancer-alerts.yml";
/// The shipped dashboard.
const DASHBOARD: &str = "contrib/grafana/ha-balancer.json";
/// The job name the rules expect (`up{job="ha-balancer"}`).
const JOB: &str = "ha-balancer";
/// The dashboard's template variables, in its order.
const VARIABLES: [&str; 5] = ["datasource", "job", "instance", "upstream", "server"];

// ---------------------------------------------------------------------------
// The shipped files

/// The shipped rule file, parsed (YAML into a JSON value).
fn shipped_rules() -> Value {
    let path = root().join(RULES);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every rule of `doc`, each group's in order.
fn rules_of(doc: &Value) -> Vec<&Value> {
    let groups = doc["groups"].as_array().expect("groups: a list");
    assert!(!groups.is_empty(), "no rule group");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules: a list"))
        .collect()
}

/// `doc` with every `for` set to `0s`: each alert fires at the first
/// evaluation that finds it true.
fn immediate(doc: &Value) -> Value {
    let mut doc = doc.clone();
    for g in doc["groups"].as_array_mut().expect("groups") {
        for r in g["rules"].as_array_mut().expect("rules") {
            if let Some(f) = r.get_mut("for") {
                *f = Value::from("0s");
            }
        }
    }
    doc
}

/// The shipped dashboard, parsed.
fn dashboard() -> Value {
    let path = root().join(DASHBOARD);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, those inside rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels: a list") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every PromQL query of the dashboard, with where it is: panel targets,
/// query variables (`label_values(selector, label)` as `count by (label)
/// (selector)`) and annotations.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a target's expr");
            out.push((format!("panel {:?}", p["title"]), expr.to_owned()));
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] == "query" {
            let q = v["query"].as_str().expect("a variable's query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable {}: not label_values(...): {q}", v["name"]));
            let (sel, label) = inner
                .rsplit_once(',')
                .expect("label_values(selector, label)");
            out.push((
                format!("variable {}", v["name"]),
                format!("count by ({}) ({})", label.trim(), sel.trim()),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().expect("annotations") {
        if let Some(expr) = a["expr"].as_str() {
            out.push((format!("annotation {:?}", a["name"]), expr.to_owned()));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// PromQL, as far as the tests need it

/// `expr` with Grafana's variables (`$name`, `${name}`, `${name:format}`)
/// replaced from `vars`; panics on any other.
fn substitute(expr: &str, vars: &BTreeMap<&str, String>) -> String {
    assert!(
        !expr.contains("[["),
        "{expr}: [[name]] variables are deprecated"
    );
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, len) = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("{expr}: unclosed ${{"));
            let name = braced[..end].split(':').next().unwrap_or("");
            (name, end + 2)
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..len], len)
        };
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("{expr}: unknown variable ${name}"));
        out.push_str(value);
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// A value as Grafana puts it in a regex matcher for Prometheus: regex
/// metacharacters escaped, the backslash doubled for the string literal.
fn regex_value(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\^$*+?.()|{}[]/".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// Every series selector in `expr` of a module metric (`ha_*`), `up` or
/// `ALERTS`: the name and its `{...}` matchers when it has them.
fn selectors(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == b'_') || (i > 0 && ident(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !(name.starts_with("ha_") || name == "up" || name == "ALERTS") {
            continue;
        }
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'{' {
            while j < b.len() && b[j] != b'}' {
                j = if b[j] == b'"' {
                    skip_string(b, j)
                } else {
                    j + 1
                };
            }
            assert!(j < b.len(), "{expr}: unclosed {{ after {name}");
            out.push(format!("{name}{}", &expr[i..=j].trim_start()));
            i = j + 1;
        } else {
            out.push(name.to_owned());
        }
    }
    out
}

/// The index after the string literal starting at `i` (its quote).
fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != quote {
        j += if b[j] == b'\\' && quote != b'`' { 2 } else { 1 };
    }
    j + 1
}

/// The number after the last `>` of `expr`: an alert's threshold.
fn threshold(expr: &str) -> f64 {
    let (_, t) = expr.rsplit_once('>').expect("a threshold after >");
    t.trim()
        .parse()
        .unwrap_or_else(|e| panic!("threshold of {expr}: {e}"))
}

#[test]
fn promql_helpers() {
    let vars: BTreeMap<&str, String> = [
        ("job", "j".to_owned()),
        ("__rate_interval", "1m".to_owned()),
    ]
    .into();
    assert_eq!(
        substitute(
            r#"rate(x{job=~"$job"}[$__rate_interval]) / ${job:regex}"#,
            &vars
        ),
        r#"rate(x{job=~"j"}[1m]) / j"#
    );
    assert_eq!(regex_value("127.0.0.1:80"), r"127\\.0\\.0\\.1:80");
    assert_eq!(
        selectors(
            r#"sum by (le) (rate(ha_a_bucket{code="5xx",u=~"a}b"}[5m])) / ha_b + up{job="x"} > 1"#
        ),
        [
            r#"ha_a_bucket{code="5xx",u=~"a}b"}"#,
            "ha_b",
            r#"up{job="x"}"#
        ]
    );
    assert_eq!(
        selectors(r#"vector(0) or label_replace(x, "ha_y", "", "", "")"#).len(),
        0
    );
    assert_eq!(threshold("histogram_quantile(0.99, x) > 1.5\n"), 1.5);
}

// ---------------------------------------------------------------------------
// The dashboard's structure

#[test]
fn dashboard_is_a_grafana_model() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    for k in ["title", "uid"] {
        assert!(d[k].as_str().is_some_and(|s| !s.is_empty()), "no {k}");
    }
    let ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});

    // The variables: the data source, then job, instance, upstream and
    // server from label_values, each narrowed by those before it.
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let names: Vec<&str> = vars
        .iter()
        .map(|v| v["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, VARIABLES, "template variables");
    assert_eq!(vars[0]["type"], "datasource");
    assert_eq!(vars[0]["query"], "prometheus");
    for (i, v) in vars.iter().enumerate().skip(1) {
        assert_eq!(v["type"], "query", "{}", v["name"]);
        assert_eq!(v["datasource"], ds, "{}", v["name"]);
        let q = v["query"].as_str().unwrap_or("");
        assert!(q.starts_with("label_values("), "{}: {q}", v["name"]);
        for before in &VARIABLES[1..i] {
            assert!(
                q.contains(&format!("=~\"${before}\"")),
                "{}: {q} not narrowed by {before}",
                v["name"]
            );
        }
    }

    // Panels: unique ids, on the 24-column grid without overlap, each
    // querying Prometheus through the variable with its targets.
    let all = panels(&d);
    assert!(all.len() >= 10, "{} panels", all.len());
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "id of {title} repeated"
        );
        let g = &p["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(
            h > 0 && (1..=24).contains(&w) && x + w <= 24,
            "{title}: gridPos {g}"
        );
        for (bx, by, bw, bh, other) in &boxes {
            let apart = x + w <= *bx || *bx + bw <= x || y + h <= *by || *by + bh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((x, y, w, h, title.clone()));
        if p["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat", "state-timeline"].contains(&p["type"].as_str().unwrap_or("")),
            "{title}: type {}",
            p["type"]
        );
        assert_eq!(p["datasource"], ds, "{title}: datasource");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no target");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"], ds, "{title}: a target's datasource");
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId repeated"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: empty expr"
            );
        }
    }

    // Every query uses known variables only, and names module metrics.
    let vars: BTreeMap<&str, String> = VARIABLES[1..]
        .iter()
        .map(|v| (*v, ".*".to_owned()))
        .chain([("__rate_interval", "1m".to_owned())])
        .collect();
    for (at, q) in dashboard_queries(&d) {
        let q = substitute(&q, &vars);
        assert!(!selectors(&q).is_empty(), "{at}: no ha_ metric in {q}");
    }
}

// ---------------------------------------------------------------------------
// Live: nginx, backends, Prometheus

/// The backends: `app` (3), `errors`, `slow`, `flaky` (2), `flap` (2).
const BACKENDS: usize = 9;

/// Sessions a learn zone of the smallest size (8 pages) cannot hold.
const SESSIONS: usize = 1200;

/// The upstreams, each set up for a situation an alert is about, and the
/// API at `/api/` with `write=on`. `b` are the [`BACKENDS`] backends.
fn block(port: u16, b: &[Backend], slow_ms: u64) -> String {
    let a = |i: usize| b[i].addr();
    format!(
        "    upstream app {{
        ha_balance round_robin;
        server {b0};
        server {b1};
        server {b2};
    }}
    upstream errors {{
        ha_balance round_robin;
        server {b3};
    }}
    upstream slow {{
        ha_balance round_robin;
        server {b4};
    }}
    upstream flaky {{
        ha_balance round_robin;
        server {b5} max_fails=1 fail_timeout=300s;
        server {b6} max_fails=1 fail_timeout=300s;
    }}
    upstream flap {{
        ha_balance round_robin;
        server {b7} max_fails=1 fail_timeout=1s;
        server {b8};
    }}
    upstream dead {{
        ha_balance round_robin;
        server 127.0.0.1:1 max_fails=1 fail_timeout=300s;
        server 127.0.0.1:2 max_fails=1 fail_timeout=300s;
    }}
    upstream checked {{
        ha_balance round_robin;
        ha_check interval=300ms timeout=200ms fails=1 type=tcp;
        server {b0};
        server 127.0.0.1:3;
    }}
    upstream maint {{
        ha_balance round_robin;
        server {b1};
        server {b2};
    }}
    upstream queued {{
        ha_balance round_robin;
        server {b1} max_conns=1;
        ha_queue 1;
    }}
    upstream sticky {{
        ha_balance round_robin;
        ha_sticky learn create=$upstream_cookie_sid lookup=$cookie_sid zone=learnt:32k;
        server {b0};
    }}

    server {{
        listen 127.0.0.1:{port};
        proxy_connect_timeout 2s;
        proxy_read_timeout {read}s;
        location /api/ {{ ha_api write=on; }}
        location /errors/ {{ proxy_pass http://errors; }}
        location /slow/ {{ proxy_pass http://slow; }}
        location /flaky/ {{ proxy_pass http://flaky; }}
        location /flap/ {{ proxy_pass http://flap; }}
        location /dead/ {{ proxy_pass http://dead; }}
        location /queued/ {{ proxy_pass http://queued; }}
        location /sticky/ {{ proxy_pass http://sticky; }}
        location / {{ proxy_pass http://app; }}
    }}
",
        b0 = a(0),
        b1 = a(1),
        b2 = a(2),
        b3 = a(3),
        b4 = a(4),
        b5 = a(5),
        b6 = a(6),
        b7 = a(7),
        b8 = a(8),
        read = slow_ms / 1000 + 10,
    )
}

/// One alert as the test tells them apart: name, severity, upstream,
/// server (empty when the alert has no such label).
type Key = (String, String, String, String);

fn key(alert: &str, severity: &str, upstream: &str, server: &str) -> Key {
    (
        alert.into(),
        severity.into(),
        upstream.into(),
        server.into(),
    )
}

/// The firing alerts, and all of them as text for messages.
fn firing(prom: &Prometheus) -> (BTreeSet<Key>, String) {
    let all = prom.alerts();
    let l = |a: &Value, k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
    let keys = all
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            (
                l(a, "alertname"),
                l(a, "severity"),
                l(a, "upstream"),
                l(a, "server"),
            )
        })
        .collect();
    let text = all.iter().map(|a| format!("  {a}\n")).collect();
    (keys, text)
}

/// Waits (at most `timeout`) until the alerts of `want` fire, and no
/// other; returns what fired last.
fn wait_firing(
    prom: &Prometheus,
    want: &BTreeSet<Key>,
    timeout: Duration,
) -> (BTreeSet<Key>, String) {
    let mut last = (BTreeSet::new(), String::new());
    wait_until(timeout, || {
        last = firing(prom);
        last.0 == *want
    });
    last
}

/// Server `id` of `upstream`'s unavailable spells (`unavail` in the API).
fn spells(port: u16, upstream: &str, id: usize) -> u64 {
    let path = format!("/api/upstreams/{upstream}/servers/{id}");
    let r = http::get(port, &path).expect("GET server");
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("server JSON");
    v["unavail"]
        .as_u64()
        .unwrap_or_else(|| panic!("{path}: {v}"))
}

/// Checks every query of `queries` (where, PromQL) with `vars`
/// substituted: it evaluates without error, to at least one series when
/// `nonempty`, and each of its selectors has series.
fn check_queries(
    prom: &Prometheus,
    queries: &[(String, String)],
    vars: &BTreeMap<&str, String>,
    nonempty: bool,
) {
    for (at, q) in queries {
        let q = substitute(q, vars);
        // Evaluates without error (query panics on an error status).
        let result = prom.query(&q);
        assert!(!nonempty || !result.is_empty(), "{at}: no series for\n{q}");
        for s in selectors(&q) {
            let n = prom.query(&format!("count({s})"));
            assert!(
                n.first().is_some_and(|(_, v)| *v >= 1.0),
                "{at}: selector {s} has no series (in {q})"
            );
        }
    }
}

#[test]
fn rules_and_dashboard_run_on_live_series() {
    let test = test_name();
    if !nginx_or_skip() {
        return;
    }
    if stock_mode() {
        say(&format!("SKIP {test}: stock nginx has no ha_api"));
        return;
    }
    let Some(prometheus) = which("prometheus") else {
        installed_or_skip(&["prometheus (Debian package prometheus)".to_owned()]);
        return;
    };
    let _serial = serial();

    // The rules, every `for` 0s, beside the shipped file's figures.
    let shipped = shipped_rules();
    let rules = rules_of(&shipped);
    let alert_expr = |name: &str| -> String {
        rules
            .iter()
            .find(|r| r["alert"] == name)
            .and_then(|r| r["expr"].as_str())
            .unwrap_or_else(|| panic!("no alert {name} in {RULES}"))
            .to_owned()
    };
    let slow_ms = (threshold(&alert_expr("HaBalancerUpstreamLatencyHigh")) * 1000.0) as u64 + 500;
    let dir = scratch_dir();
    let rule_file = dir.join("rules.json");
    fs::write(&rule_file, immediate(&shipped).to_string()).expect("write rules.json");

    let mut b = Backend::start_many("d", BACKENDS);
    let port = free_port();
    let mut ngx = Nginx::start(&block(port, &b, slow_ms), WORKERS);
    let prom = Prometheus::start_with_rules(
        &prometheus,
        &[Job {
            name: JOB,
            path: "/api/metrics",
            port,
        }],
        &[rule_file],
    );
    let up = prom.wait_for(
        &format!("up{{job=\"{JOB}\"}}"),
        Duration::from_secs(30),
        |v| v == 1.0,
    );
    assert_eq!(up, Some(1.0), "target not up; log:\n{}", prom.log());
    // The situations. `slow`: its answers above the latency threshold, in
    // the background.
    let slow_path = format!("/slow/?delay={slow_ms}");
    let slow = thread::spawn(move || load(port, &slow_path, 4, 2));
    // `app`: healthy.
    let r = load(port, "/", 4, 25);
    assert_eq!(r.bad(), 0, "app: {:?}", r.failures);
    // `errors`: every answer a 500.
    b[3].set_mode("fail500");
    let r = load(port, "/errors/", 2, 10);
    assert_eq!(r.statuses.get(&500), Some(&20), "errors: {:?}", r.statuses);
    // `flaky`: one server killed; one try fails on it, every request
    // retried on the other (one client: no concurrent try on the dead one).
    b[6].kill();
    let r = load(port, "/flaky/", 1, 40);
    assert_eq!(r.bad(), 0, "flaky: {:?}", r.failures);
    // `flap`: server 0 fails (one try, retried on server 1) and comes back
    // after its 1 s fail_timeout, three times; then enough good tries to
    // keep its error ratio low.
    for spell in 1..=3 {
        b[7].set_mode("close");
        for _ in 0..2 {
            let r = http::get(port, "/flap/").expect("GET /flap/");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(spells(port, "flap", 0), spell, "flap: spells");
        b[7].set_mode("ok");
        thread::sleep(Duration::from_millis(1100));
        let before = b[7].stats().requests;
        let back = wait_until(Duration::from_secs(5), || {
            let r = http::get(port, "/flap/").expect("GET /flap/");
            assert_eq!(r.status, 200, "{}", r.text());
            b[7].stats().requests > before
        });
        assert!(
            back,
            "flap: server 0 not tried again after its fail_timeout"
        );
    }
    let r = load(port, "/flap/", 2, 75);
    assert_eq!(r.bad(), 0, "flap: {:?}", r.failures);
    assert_eq!(spells(port, "flap", 0), 3, "flap: spells");
    // `dead`: both servers refuse.
    for _ in 0..2 {
        let r = http::get(port, "/dead/").expect("GET /dead/");
        assert_eq!(r.status, 502, "{}", r.text());
    }
    // `maint`: server 0 set down, server 1 drained.
    for (id, body) in [(0, r#"{"down":true}"#), (1, r#"{"drain":true}"#)] {
        let path = format!("/api/upstreams/maint/servers/{id}");
        let r = http::request(port, "PATCH", &path, body.as_bytes()).expect("PATCH");
        assert_eq!(r.status, 200, "PATCH {path}: {}", r.text());
    }
    // `queued`: one connection and one place in the queue for 4 clients at
    // once, each held 500 ms: at least one is refused.
    let hs: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || http::get(port, "/queued/?delay=500")))
        .collect();
    let statuses: Vec<u16> = hs
        .into_iter()
        .map(|h| h.join().unwrap().expect("GET /queued/").status)
        .collect();
    assert!(
        statuses.contains(&200) && statuses.contains(&502),
        "queued: {statuses:?}"
    );
    // `sticky`: more sessions learnt than its zone holds.
    let hs: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                (0..SESSIONS / 4)
                    .filter(|i| {
                        let path = format!("/sticky/?setsid=s{t}-{i}");
                        http::get(port, &path).is_ok_and(|r| r.status == 200)
                    })
                    .count()
            })
        })
        .collect();
    let learnt: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(learnt, SESSIONS, "sticky: 200s");
    let r = slow.join().expect("slow load");
    assert_eq!(r.bad(), 0, "slow: {:?}", r.failures);

    // The alerts the situations call for, and no other.
    let killed = b[6].addr();
    let want: BTreeSet<Key> = [
        key("HaBalancerServerUnavailable", "warning", "flaky", &killed),
        key(
            "HaBalancerServerUnavailable",
            "warning",
            "dead",
            "127.0.0.1:1",
        ),
        key(
            "HaBalancerServerUnavailable",
            "warning",
            "dead",
            "127.0.0.1:2",
        ),
        key(
            "HaBalancerServerUnavailable",
            "warning",
            "checked",
            "127.0.0.1:3",
        ),
        key("HaBalancerUpstreamDown", "critical", "dead", ""),
        key("HaBalancerUpstreamErrors", "warning", "errors", ""),
        key("HaBalancerUpstreamErrors", "critical", "errors", ""),
        key("HaBalancerUpstreamErrors", "warning", "dead", ""),
        key("HaBalancerUpstreamErrors", "critical", "dead", ""),
        key(
            "HaBalancerServerOutOfRotation",
            "info",
            "maint",
            &b[1].addr(),
        ),
        key(
            "HaBalancerServerOutOfRotation",
            "info",
            "maint",
            &b[2].addr(),
        ),
        key("HaBalancerQueueRejecting", "warning", "queued", ""),
        key("HaBalancerUpstreamLatencyHigh", "warning", "slow", ""),
        key("HaBalancerServerFlapping", "warning", "flap", &b[7].addr()),
        key("HaBalancerSessionsEvicted", "warning", "sticky", ""),
    ]
    .into();
    let (got, all) = wait_firing(&prom, &want, Duration::from_secs(60));
    assert_eq!(got, want, "firing alerts; all alerts:\n{all}");
    say(&format!("{test}: {} alerts firing, as expected", got.len()));

    // Prometheus loaded every rule and evaluates each without error.
    let loaded = prom.api("/api/v1/rules");
    let evaluated: Vec<&Value> = loaded["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    assert_eq!(evaluated.len(), rules.len(), "rules loaded: {loaded}");
    for r in &evaluated {
        assert_eq!(
            r["health"], "ok",
            "rule {} ({}): {}",
            r["name"], r["query"], r["lastError"]
        );
    }

    // Every rule's and every dashboard query's selectors have series; the
    // dashboard's queries answer, with every value and with one of each.
    let rule_queries: Vec<(String, String)> = rules
        .iter()
        .map(|r| {
            let at = format!("rule {} {}", r["alert"], r["labels"]["severity"]);
            (at, r["expr"].as_str().expect("expr").to_owned())
        })
        .collect();
    let none = BTreeMap::new();
    check_queries(&prom, &rule_queries, &none, false);
    let queries = dashboard_queries(&dashboard());
    let mut vars: BTreeMap<&str, String> = VARIABLES[1..]
        .iter()
        .map(|v| (*v, ".*".to_owned()))
        .chain([("__rate_interval", "1m".to_owned())])
        .collect();
    check_queries(&prom, &queries, &vars, true);
    vars.insert("job", regex_value(JOB));
    vars.insert("instance", regex_value(&format!("127.0.0.1:{port}")));
    vars.insert("upstream", "(app|checked|queued|sticky)".to_owned());
    vars.insert("server", regex_value(&b[0].addr()));
    check_queries(&prom, &queries, &vars, true);
    say(&format!(
        "{test}: {} rule expressions and {} dashboard queries (twice) checked",
        rule_queries.len(),
        queries.len()
    ));

    // nginx gone: its scrapes fail, its series go stale (the alerts on
    // rates keep their last 5 minutes, and fire on).
    ngx.stop();
    let want: BTreeSet<Key> = [
        key("HaBalancerScrapeFailing", "warning", "", ""),
        key("HaBalancerMetricsAbsent", "warning", "", ""),
    ]
    .into();
    let mut last = (BTreeSet::new(), String::new());
    let fired = wait_until(Duration::from_secs(30), || {
        last = firing(&prom);
        want.is_subset(&last.0)
    });
    assert!(fired, "after nginx stopped; all alerts:\n{}", last.1);
    let instance = prom.query(r#"ALERTS{alertname="HaBalancerScrapeFailing",alertstate="firing"}"#);
    assert_eq!(
        instance.first().map(|(m, _)| m["instance"].clone()),
        Some(Value::from(format!("127.0.0.1:{port}"))),
        "{instance:?}"
    );
    drop(prom);
    let _ = fs::remove_dir_all(&dir);
}

/// `prog` on `PATH`.
fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| Path::is_file(p))
}
